package relay

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/sesame-mail/sesame/store"
)

// replyError makes the reply code and text read from a server into an
// *smtp.SMTPError, splitting off an enhanced status code (RFC 3463).
func replyError(code int, text string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: text}
	first, rest, ok := strings.Cut(text, " ")
	if !ok {
		return e
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return e
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return e
		}
		ec[i] = n
	}
	e.EnhancedCode = ec
	// Continuation lines repeat the enhanced code.
	e.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return e
}

// formatReply renders a server reply on one line, as operators read it in
// logs and in the queue: "451 4.3.0 text".
func formatReply(e *smtp.SMTPError) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Code))
	if ec := e.EnhancedCode; ec != smtp.EnhancedCodeNotSet && ec != smtp.NoEnhancedCode {
		b.WriteString(" " + strconv.Itoa(ec[0]) + "." + strconv.Itoa(ec[1]) + "." + strconv.Itoa(ec[2]))
	}
	if msg := strings.Join(strings.Fields(e.Message), " "); msg != "" {
		b.WriteString(" " + msg)
	}
	return b.String()
}

// describe is the reply recorded for an error: the server's reply when
// there was one, else our own reason.
func describe(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return formatReply(se)
	}
	return err.Error()
}

// verdict is what a server's answer to MAIL, RCPT or DATA means for the
// recipients it applies to: 5xx fails them, anything else (4xx, timeouts, a
// dropped connection, a reply we did not expect) defers them.
func verdict(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 && se.Code < 600 {
		return store.StateFailed
	}
	return store.StateDeferred
}

// connectionLost reports whether err leaves the connection unusable for the
// next transaction: anything but an ordinary reply, and 421, with which the
// server announces it is closing.
func connectionLost(err error) bool {
	var se *smtp.SMTPError
	return !errors.As(err, &se) || se.Code == 421
}

// backoff is the wait before the next attempt after attempts earlier ones:
// first, doubling each attempt, capped at limit.
func backoff(attempts int, first, limit time.Duration) time.Duration {
	d := first
	for range attempts {
		if d >= limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}
