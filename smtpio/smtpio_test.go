package smtpio

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
)

func TestWriteData(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"", ".\r\n"},
		{"a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{".first\r\nmiddle\r\n..two\r\n.\r\nlast", "..first\r\nmiddle\r\n...two\r\n..\r\nlast\r\n.\r\n"},
		{"no final line end", "no final line end\r\n.\r\n"},
	} {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		WriteData(w, []byte(tc.msg))
		w.Flush()
		if out.String() != tc.want {
			t.Errorf("WriteData(%q) wrote %q, want %q", tc.msg, out.String(), tc.want)
		}
	}
}

func TestGreetedConn(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		server.Write([]byte("250 after\r\n"))
		server.Close()
	}()
	c := &GreetedConn{Conn: client, Pending: []byte("220 before\r\n")}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "220 before\r\n250 after\r\n" {
		t.Errorf("read %q, want the pending greeting, then the connection's bytes", got)
	}
}
