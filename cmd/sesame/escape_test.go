package main

import (
	"encoding/json"
	"testing"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"bounce@example.net":                        "bounce@example.net",
		"héllo wörld 日本 ✉":                          "héllo wörld 日本 ✉",
		"\x1b[2J\x1b]0;pwned\x07victim@example.net": `\x1b[2J\x1b]0;pwned\x07victim@example.net`,
		"a\tb\nc\rd":                                `a\tb\nc\rd`,
		"del\x7f nul\x00":                           `del\x7f nul\x00`,
		"c1 \u009b31m csi":                          `c1 \u009b31m csi`,
		"bad \xff\xfe utf-8":                        `bad \xff\xfe utf-8`,
		"evil\u202egnp.exe \u2066x\u2069 \u200f":    `evil\u202egnp.exe \u2066x\u2069 \u200f`,
		"":                                          "",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"Subject: hi\r\n\r\nbody\tcol\r\n": "Subject: hi\n\nbody\tcol\n",
		"line\rover\n":                     `line\rover` + "\n",
		"\x1b[31mred\x1b[0m\n":             `\x1b[31mred\x1b[0m` + "\n",
		"end\r":                            `end\r`,
		"\u202e\xc3":                       `\u202e\xc3`,
	} {
		if got := cleanText(in); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJSONSafe(t *testing.T) {
	in := []byte(`{"a":"x` + "\x7f\u009b\u202e" + `y é"}`)
	want := `{"a":"x\u007f\u009b\u202ey é"}`
	if got := string(jsonSafe(in)); got != want {
		t.Errorf("jsonSafe(%q) = %q, want %q", in, got, want)
	}
	var v map[string]string
	if err := json.Unmarshal(jsonSafe(in), &v); err != nil || v["a"] != "x\x7f\u009b\u202ey é" {
		t.Errorf("escaped JSON decodes to %q, %v", v["a"], err)
	}
	plain := []byte(`{"a":"b"}`)
	if got := jsonSafe(plain); &got[0] != &plain[0] {
		t.Errorf("jsonSafe copied JSON that needs no escape")
	}
}
