package testkit

import (
	"crypto/tls"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestSink(t *testing.T) {
	s := StartSink(t, SinkOptions{TLS: SelfSigned(t, "sink.test"), Trace: true, Index: regexp.MustCompile(`tok-\d+`)})
	s.ReplyTo("b@example.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, nil)
	c, err := smtp.DialStartTLS(s.Addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(rcpts ...string) error {
		return c.SendMail("app@example.test", rcpts, strings.NewReader("Subject: tok-1\r\n\r\nbody\r\n"))
	}
	// b is refused once, then accepted.
	if err := send("a@example.test", "b@example.test"); err == nil || !strings.Contains(err.Error(), "try later") {
		t.Fatalf("first send: %v, want b's 451", err)
	}
	if err := send("a@example.test", "b@example.test"); err != nil {
		t.Fatal(err)
	}
	m := s.Next(t)
	if m.From != "app@example.test" || strings.Join(m.To, ",") != "a@example.test,b@example.test" || !m.TLS ||
		string(m.Data) != "Subject: tok-1\r\n\r\nbody\r\n" {
		t.Errorf("message %+v", m)
	}
	if _, ok := s.NextWithin(0); ok {
		t.Error("a second message")
	}
	if len(s.Keyed("tok-1")) != 1 || s.RcptCount("B@example.test") != 2 || s.Accepted() != 1 || s.TraceCount("MAIL FROM") != 2 {
		t.Errorf("keyed %d, RCPT b %d, connections %d, MAIL %d; want 1, 2, 1, 2",
			len(s.Keyed("tok-1")), s.RcptCount("b@example.test"), s.Accepted(), s.TraceCount("MAIL FROM"))
	}
}

func TestSinkHoldAndDataReply(t *testing.T) {
	s := StartSink(t, SinkOptions{})
	release := s.HoldData()
	errc := make(chan error, 1)
	go func() {
		c, err := smtp.Dial(s.Addr)
		if err == nil {
			defer c.Close()
			err = c.SendMail("app@example.test", []string{"a@example.test"}, strings.NewReader("x\r\n"))
		}
		errc <- err
	}()
	select {
	case <-s.InData():
	case <-time.After(NextTimeout):
		t.Fatal("no data arrived")
	}
	if _, ok := s.NextWithin(100 * time.Millisecond); ok {
		t.Fatal("a held message was recorded before its reply")
	}
	s.SetDataReply(&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"})
	close(release)
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "content rejected") {
		t.Fatalf("send: %v, want the 554", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("%d messages kept, want none after a 554", n)
	}
}
