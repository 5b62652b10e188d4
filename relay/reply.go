package relay

import (
	"errors"
	"fmt"
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

// isReply reports whether err is a server's reply rather than our own reason.
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// verdict is what an error means for the recipients it applies to: a 5xx
// reply or a permanent failure of ours bounces them; anything else (4xx,
// timeouts, a dropped connection, a reply we did not expect) defers them.
func verdict(err error) string {
	var f *failure
	if errors.As(err, &f) {
		if f.permanent {
			return store.StateBounced
		}
		return store.StateDeferred
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 && se.Code < 600 {
		return store.StateBounced
	}
	return store.StateDeferred
}

// statusOf is the RFC 3463 status an error reports in a DSN: the enhanced
// code of a failure or reply, else one derived from the reply code, else
// 4.4.1 (no answer from the host) for a network error.
func statusOf(err error) string {
	code := func(c smtp.EnhancedCode) string {
		return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
	}
	var f *failure
	if errors.As(err, &f) {
		return code(f.status)
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if ec := se.EnhancedCode; ec != smtp.EnhancedCodeNotSet && ec != smtp.NoEnhancedCode && ec[0] == se.Code/100 {
			return code(ec)
		}
		if se.Code >= 500 {
			return "5.0.0"
		}
		return "4.0.0"
	}
	return "4.4.1"
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

// failure is a delivery failure that is not a remote server's reply: a DNS
// answer, a policy of ours, an expired message. It carries what a DSN and
// the queue need: whether retrying can help, and an RFC 3463 status.
type failure struct {
	permanent bool
	status    smtp.EnhancedCode
	text      string
}

func (f *failure) Error() string {
	return strconv.Itoa(f.status[0]) + "." + strconv.Itoa(f.status[1]) + "." + strconv.Itoa(f.status[2]) + " " + f.text
}

func permanentFailure(status smtp.EnhancedCode, format string, args ...any) *failure {
	return &failure{permanent: true, status: status, text: fmt.Sprintf(format, args...)}
}

func temporaryFailure(status smtp.EnhancedCode, format string, args ...any) *failure {
	return &failure{status: status, text: fmt.Sprintf(format, args...)}
}
