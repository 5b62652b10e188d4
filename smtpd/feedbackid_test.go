package smtpd

import (
	"context"
	"regexp"
	"strings"
	"testing"
)

func TestFeedbackPart(t *testing.T) {
	for in, want := range map[string]string{
		"app":                    "app",
		" promo-2026_Q4 ":        "promo-2026_Q4",
		"a:b":                    "a-b",
		"x\r\nBcc: evil@x.org":   "x--Bcc--evil@x.org",
		"caf\u00e9":              "caf-",
		"":                       "",
		strings.Repeat("a", 100): strings.Repeat("a", maxFeedbackPart),
	} {
		if got := feedbackPart(in); got != want {
			t.Errorf("feedbackPart(%q) = %q, want %q", in, got, want)
		}
	}
}

// queuedData sends msg as shop@example.com and returns the message as queued.
func queuedData(t *testing.T, te *testEnv, msg string) string {
	t.Helper()
	c := te.dial(t, te.username, te.password)
	resp, err := send(c, "shop@example.com", []string{"a@example.net"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	_, id, _ := strings.Cut(resp.StatusText, "Ok: queued as ")
	raw, err := te.st.MessageData(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, te, raw)
	return string(raw)
}

var signedFields = regexp.MustCompile(`(?s)DKIM-Signature:.*?\bh=([^;]*);`)

// signs reports whether the DKIM signature of data lists field in h=.
func signs(data, field string) bool {
	m := signedFields.FindStringSubmatch(data)
	if m == nil {
		return false
	}
	for _, f := range strings.Split(strings.Join(strings.Fields(m[1]), ""), ":") {
		if strings.EqualFold(f, field) {
			return true
		}
	}
	return false
}

func TestFeedbackID(t *testing.T) {
	te := newTestEnv(t, nil)

	data := queuedData(t, te, message("shop@example.com", "a@example.net", "Hi", "Hello\r\n"))
	if !strings.Contains(data, "\r\nFeedback-ID: default:app:example.com:sesame\r\n") {
		t.Fatalf("no Feedback-ID:\n%s", data)
	}
	if !signs(data, "Feedback-ID") {
		t.Fatalf("Feedback-ID not signed:\n%s", data)
	}

	// The configuration set names the stream, sanitized, and its header
	// (folded, repeated) leaves the message.
	msg := "X-SES-CONFIGURATION-SET: spring:sale\r\n\t\u00e9t\u00e9\r\n" +
		message("shop@example.com", "a@example.net", "Hi", "Hello\r\n")
	msg = strings.Replace(msg, "Subject: Hi\r\n", "Subject: Hi\r\nx-ses-configuration-set: other\r\n", 1)
	data = queuedData(t, te, msg)
	if !strings.Contains(data, "\r\nFeedback-ID: spring-sale--t-:app:example.com:sesame\r\n") {
		t.Fatalf("Feedback-ID without the configuration set:\n%s", data)
	}
	if strings.Contains(strings.ToLower(data), "x-ses-configuration-set") || strings.Contains(data, "\u00e9") {
		t.Fatalf("configuration set header left in:\n%s", data)
	}
	if !strings.HasSuffix(data, "From: Shop <shop@example.com>\r\nTo: a@example.net\r\nSubject: Hi\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n") {
		t.Fatalf("message changed:\n%s", data)
	}

	// The client's own Feedback-ID is kept, and no second one added.
	data = queuedData(t, te, "Feedback-ID: c1:list7:acme:shopapp\r\n"+message("shop@example.com", "a@example.net", "Hi", "Hello\r\n"))
	if strings.Count(data, "Feedback-ID:") != 1 || !strings.Contains(data, "Feedback-ID: c1:list7:acme:shopapp\r\n") ||
		!signs(data, "Feedback-ID") {
		t.Fatalf("client's Feedback-ID not kept alone:\n%s", data)
	}
}
