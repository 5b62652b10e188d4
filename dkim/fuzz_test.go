package dkim

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strings"
	"testing"
)

// referenceHeaderKeys counts fields the way go-msgauth reads them
// (textproto lines, strings.Cut at the colon, strings.TrimSpace,
// strings.EqualFold), as an independent check of headerKeys.
func referenceHeaderKeys(msg []byte) (string, bool) {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(msg)))
	counts := make([]int, len(signedFields))
	seen := false
	for {
		l, err := r.ReadLine()
		if err != nil {
			return "", false
		}
		if l == "" {
			break
		}
		if seen && (l[0] == ' ' || l[0] == '\t') {
			continue
		}
		seen = true
		k, _, _ := strings.Cut(l, ":")
		for i, f := range signedFields {
			if strings.EqualFold(strings.TrimSpace(k), f.name) {
				counts[i]++
				break
			}
		}
	}
	for i, f := range signedFields {
		if f.overSign {
			counts[i]++
		}
	}
	var names []string
	for i, n := range counts {
		for range n {
			names = append(names, signedFields[i].name)
		}
	}
	return strings.Join(names, ":"), true
}

func FuzzHeaderKeys(f *testing.F) {
	f.Add([]byte(testMessage))
	f.Add([]byte("From: a\r\n\r\n"))
	f.Add([]byte(" From: a\r\nFROM : b\r\n\r\n"))
	f.Add([]byte("ſubject: x\r\nFrom\v: y\r\n\r\n"))
	f.Add([]byte("To: a\r\r\n\tTo: b\n\n"))
	f.Add([]byte(bulkMessage()))
	f.Fuzz(func(t *testing.T, msg []byte) {
		names, terminated, err := headerKeys(msg)
		want, ok := referenceHeaderKeys(msg)
		if !ok {
			// go-msgauth cannot read this header; headerKeys must refuse it
			// too or report it unterminated (Sign then adds the empty line).
			if err == nil && terminated {
				t.Fatalf("headerKeys accepted a header go-msgauth cannot read: %q", msg)
			}
			return
		}
		if err != nil {
			if strings.Contains(err.Error(), "too many header fields") {
				return
			}
			t.Fatalf("headerKeys: %v for a header go-msgauth reads: %q", err, msg)
		}
		if got := strings.Join(names, ":"); got != want {
			t.Fatalf("headerKeys = %s, go-msgauth would see %s in %q", got, want, msg)
		}
	})
}
