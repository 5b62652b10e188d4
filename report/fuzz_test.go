package report

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, returns quickly, keeps the
// promises of its types, and returns errors fit for an operator's screen.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no samples: %v", err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	oneRcpt := "Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
	f.Add(nested(MaxDepth + 1))
	f.Add(build(dsnType, textPart, statusPart(perMessage+recipients(3))))
	f.Add(build(arfType, textPart, feedbackPart("Feedback-Type: abuse\r\nOriginal-Rcpt-To: <a@b>\r\n")))
	f.Add(build(`multipart/mixed; boundary="b"`, "Content-Type: "+strings.ReplaceAll(dsnType, `"b"`, "c")+"\r\n\r\n--c\r\n"+statusPart(oneRcpt)+"\r\n--c--"))
	f.Add(build(dsnType, "Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\nRmluYWwtUmVjaXBpZW50OiB1dGYtODsgYUBiCkFjdGlvbjogZmFpbGVkClN0YXR1czogNS4xLjEK"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		start := time.Now()
		r, err := Parse(raw)
		if d := time.Since(start); d > time.Second {
			t.Errorf("Parse took %v for %d bytes", d, len(raw))
		}
		if err != nil {
			if r != nil {
				t.Errorf("Parse returned a report with its error %v", err)
			}
			checkErrorText(t, err)
			return
		}
		checkReport(t, r)
	})
}

// checkReport checks what the types promise of a parsed report.
func checkReport(t testing.TB, r *Report) {
	t.Helper()
	switch r.Kind {
	case KindDSN:
		if r.DSN == nil || r.Feedback != nil {
			t.Fatalf("Kind dsn with DSN %v, Feedback %v", r.DSN, r.Feedback)
		}
		if n := len(r.DSN.Recipients); n == 0 || n > MaxRecipients {
			t.Errorf("%d recipients", n)
		}
		for _, rc := range r.DSN.Recipients {
			if rc.FinalRecipient == "" || rc.Action != "" && !actions[rc.Action] {
				t.Errorf("recipient %+v", rc)
			}
			if _, ok := status(rc.Status); !ok || rc.Status == "" {
				t.Errorf("recipient %+v: bad status", rc)
			}
		}
	case KindARF:
		if r.Feedback == nil || r.DSN != nil || r.Feedback.Type == "" {
			t.Fatalf("Kind arf with DSN %v, Feedback %+v", r.DSN, r.Feedback)
		}
	default:
		t.Fatalf("Kind %q", r.Kind)
	}
	o := r.Original
	if n := len(o.Raw); n > maxFields {
		t.Errorf("Original has %d fields", n)
	}
	if o.Raw == nil && (o.MessageID != "" || o.From != "" || o.To != "" || o.Subject != "" || o.Received != nil) {
		t.Errorf("Original without Raw: %+v", o)
	}
}

// TestBoundedWork gives Parse inputs of MaxSize bytes shaped to make it
// slow or greedy, and checks its time and memory stay proportionate.
func TestBoundedWork(t *testing.T) {
	fill := func(prefix, unit, suffix string) []byte {
		n := (MaxSize - len(prefix) - len(suffix)) / len(unit)
		return []byte(prefix + strings.Repeat(unit, n) + suffix)
	}
	dsnHead := "Content-Type: " + dsnType + "\r\n\r\n--b\r\n" + textPart + "\r\n--b\r\n"
	status := dsnHead + "Content-Type: message/delivery-status\r\n\r\n"
	end := "\r\n--b--\r\n"
	rcpt := "Final-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.0.0\r\n"
	deep := string(nested(MaxDepth - 1))
	deep = deep[:strings.Index(deep, "hello")]
	tests := []struct {
		name string
		raw  []byte
	}{
		{"one field folded a million times", fill("Subject: x\r\n", " y\r\n", "\r\n")},
		{"a million header fields", fill("", "a: b\r\n", "\r\n")},
		{"a million continuation lines of nothing", fill("Subject: x\r\n", " \t\r\n", "\r\n")},
		{"one line of 10 MiB", fill("", "x", "")},
		{"a preamble line of 10 MiB", fill("Content-Type: "+dsnType+"\r\n\r\n", "x", "\r\n--b\r\n"+statusPart(rcpt)+end)},
		{"a delivery-status part of fields", fill(status+rcpt, "X-A: b\r\n", end)},
		{"a delivery-status part of folded lines", fill(status+rcpt+"X-A: b\r\n", " c\r\n", end)},
		{"a delivery-status part of groups", fill(status, "X-A: b\r\n\r\n", end)},
		{"a delivery-status part of recipients", fill(status, rcpt+"\r\n", end)},
		{"a delivery-status part of junk groups", fill(status, "junk\r\n\r\n", rcpt+end)},
		{"a delivery-status part of blank lines", fill(status, "\r\n", rcpt+end)},
		{"a delivery-status part in base64", fill(dsnHead+"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n", "WC1BOiBiY2QNCg0K\r\n", end)},
		{"comments nested a million deep", fill(status+"Final-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.0.0 ", "(", end)},
		{"a huge original", fill(status+rcpt+"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n", "a: b\r\n", end)},
		{"many empty parts", fill("Content-Type: "+dsnType+"\r\n\r\n", "--b\r\n\r\n", "")},
		{"nested multiparts, the last one long", fill(deep, "x\r\n", "")},
		{"almost-boundaries", fill(status, "\r\n--", end)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.raw) > MaxSize {
				t.Fatalf("input is %d bytes", len(tt.raw))
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := Parse(tt.raw)
			d := time.Since(start)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%v, %d MiB allocated, err %v", d, alloc>>20, err)
			// The real bound is the allocation check below; the time is
			// only a guard against a runaway (quadratic work takes minutes),
			// generous enough for the race detector on a loaded machine.
			if d > time.Minute {
				t.Errorf("Parse took %v", d)
			}
			if alloc > 8*MaxSize {
				t.Errorf("Parse allocated %d MiB for %d MiB of input", alloc>>20, len(tt.raw)>>20)
			}
		})
	}
}
