package dkim

import (
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/store"
)

// benchMessage is testMessage with its body grown to about 10 KiB.
func benchMessage() []byte {
	var b strings.Builder
	b.WriteString(testMessage)
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit — Grüße.\r\n"
	for b.Len() < 10*1024 {
		b.WriteString(line)
	}
	return []byte(b.String())
}

func benchmarkSign(b *testing.B, alg string) {
	s, _ := signerFor(b, alg)
	msg := benchMessage()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignRSA2048(b *testing.B) { benchmarkSign(b, store.AlgRSA) }

func BenchmarkSignEd25519(b *testing.B) { benchmarkSign(b, store.AlgEd25519) }

func BenchmarkHeaderKeys(b *testing.B) {
	msg := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := headerKeys(msg); err != nil {
			b.Fatal(err)
		}
	}
}
