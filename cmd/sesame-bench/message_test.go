package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBuildMessage(t *testing.T) {
	now := time.Unix(1700000000, 123456789)
	rcpts := []string{"rcpt000@example.net", "rcpt001@example.net", "rcpt002@example.net"}
	sizes := []int{1, 200, 10240, 100000}
	for s := 560; s < 800; s++ { // every way the last line can fall
		sizes = append(sizes, s)
	}
	for _, size := range sizes {
		b := newMessageBuilder("run42", "sender@example.com", rcpts, size)
		msg := b.build(3, 17, now)
		headerEnd := bytes.Index(msg, []byte("\r\n\r\n"))
		if headerEnd < 0 {
			t.Fatalf("size %d: no header/body separator", size)
		}
		if size > headerEnd+4+1 && len(msg) != size {
			t.Errorf("size %d: message is %d bytes", size, len(msg))
		}
		if !bytes.HasSuffix(msg, []byte("\r\n")) {
			t.Errorf("size %d: message does not end with CRLF", size)
		}
		for i, line := range bytes.Split(bytes.TrimSuffix(msg, []byte("\r\n")), []byte("\r\n")) {
			if bytes.ContainsAny(line, "\r\n") {
				t.Fatalf("size %d line %d: bare CR or LF in %q", size, i, line)
			}
			if len(line) > maxBodyLine {
				t.Errorf("size %d line %d: %d chars", size, i, len(line))
			}
			for _, c := range line {
				if c < ' ' && c != '\t' || c > '~' {
					t.Fatalf("size %d line %d: non-printable byte %#x", size, i, c)
				}
			}
			if i > 0 && bytes.HasPrefix(line, []byte(".")) {
				t.Errorf("size %d line %d starts with a dot", size, i)
			}
		}
		head := string(msg[:headerEnd])
		for _, want := range []string{
			"From: Sesame Bench <sender@example.com>\r\n",
			"To: rcpt000@example.net,\r\n rcpt001@example.net,\r\n rcpt002@example.net\r\n",
			"Subject: sesame-bench run42 3-17\r\n",
			"Date: " + now.Format(time.RFC1123Z) + "\r\n",
			"Message-ID: <run42.3.17@example.com>\r\n",
			"MIME-Version: 1.0\r\n",
			"Content-Type: text/plain",
			"X-Bench-Sent: 1700000000123456789",
		} {
			if !strings.Contains(head+"\r\n", want) {
				t.Errorf("size %d: headers lack %q:\n%s", size, want, head)
			}
		}
		sent, ok, err := readSentHeader(bufio.NewReader(bytes.NewReader(msg)))
		if err != nil || !ok || !sent.Equal(now) {
			t.Errorf("size %d: readSentHeader = %v, %v, %v; want %v", size, sent, ok, err, now)
		}
	}
}

func TestReadSentHeader(t *testing.T) {
	long := strings.Repeat("x", 10000)
	tests := []struct {
		name   string
		in     string
		want   int64
		wantOK bool
	}{
		{"crlf", "Subject: a\r\nX-Bench-Sent: 42\r\n\r\nbody\r\n", 42, true},
		{"bare lf", "Subject: a\nx-bench-sent:43\n\nbody\n", 43, true},
		{"missing", "Subject: a\r\n\r\nX-Bench-Sent: 44\r\n", 0, false},
		{"garbage value", "X-Bench-Sent: soon\r\n\r\n", 0, false},
		{"no body", "X-Bench-Sent: 45", 45, true},
		{"empty", "", 0, false},
		{"after long line", "Subject: " + long + "\r\nX-Bench-Sent: 46\r\n\r\n", 46, true},
		// The tail of an over-long line is not a new header line.
		{"inside long line", "Subject: " + long[:4096-len("Subject: ")] + "X-Bench-Sent: 47\r\n\r\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := readSentHeader(bufio.NewReaderSize(strings.NewReader(tt.in), 4096))
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || (ok && got.UnixNano() != tt.want) {
				t.Errorf("got %d, %v; want %d, %v", got.UnixNano(), ok, tt.want, tt.wantOK)
			}
		})
	}
}
