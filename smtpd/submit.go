package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

// Submission is a message handed in through another door than SMTP (the
// SES-compatible HTTP API): the credential that door authenticated, and the
// envelope and message it built.
type Submission struct {
	Cred       store.Credential
	RemoteIP   string
	Protocol   string               // the Received field's "with", e.g. "HTTPS"
	TLS        *tls.ConnectionState // nil over plain HTTP (loopback only)
	Sender     string               // the envelope sender
	Recipients []string
	Message    []byte // the whole message; every line ends in CRLF
}

// Refusal is a submission Submit refused: the reply an SMTP client would
// have got, and why, for the door to translate into its own protocol.
type Refusal struct {
	Reason string // one of the Reason constants
	Reply  *smtp.SMTPError
}

func (r *Refusal) Error() string { return r.Reply.Error() }

// Reasons of a Refusal. They are the metrics' reason labels.
const (
	ReasonNotVerified    = reasonNotVerified
	ReasonSandbox        = reasonSandbox
	ReasonQuotaDaily     = reasonQuotaDaily
	ReasonQuotaRate      = reasonQuotaRate
	ReasonBadAddress     = reasonBadAddress
	ReasonBadMessage     = reasonBadMessage
	ReasonTooBig         = reasonTooBig
	ReasonNoKeys         = reasonNoKeys
	ReasonPaused         = reasonPaused
	ReasonTemporary      = reasonTemporary
	ReasonDMARCProtected = reasonDMARCProtected
	ReasonInflight       = reasonInflight
)

// Submit runs a message from another door through the submission path an
// SMTP transaction takes, step for step: the storage check, the
// credential's standing and sender identity at MAIL FROM, the sandbox at
// each RCPT TO, and for the message the line-end checks and the memory
// budget (readMessage), the header senders, the quotas, DKIM signing and
// the durable queue (queue, accept). So the API is a second door into the
// same policy, never a copy of it. It returns the queue id once the
// message is on disk, or a *Refusal; nothing is queued then.
func (s *Server) Submit(ctx context.Context, sub Submission) (string, error) {
	ss := &session{srv: s, remoteIP: sub.RemoteIP, cred: sub.Cred, door: sub.Protocol, doorTLS: sub.TLS,
		log: s.log.With("client", sub.RemoteIP, "door", sub.Protocol, "credential", sub.Cred.Name)}
	defer ss.flushRejects()
	refusal := func(err error, otherwise string) error {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			se = errPolicyFailed
		}
		reason := ss.refused
		if reason == "" {
			reason = otherwise
		}
		return &Refusal{Reason: reason, Reply: se}
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := ss.Mail(sub.Sender, &smtp.MailOptions{UTF8: true}); err != nil {
		return "", refusal(err, reasonBadAddress)
	}
	defer ss.Reset()
	if max := s.cfg.MaxRecipients; max > 0 && len(sub.Recipients) > max {
		return "", refusal(ss.refuse(reasonBadAddress, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
			Message: fmt.Sprintf("Too many recipients: at most %d a message", max)}), reasonBadAddress)
	}
	for _, r := range sub.Recipients {
		ss.refused = ""
		if err := ss.Rcpt(r, &smtp.RcptOptions{}); err != nil {
			return "", refusal(err, reasonBadAddress)
		}
	}
	if len(ss.recipients) == 0 {
		return "", refusal(ss.refuse(reasonBadAddress, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
			Message: "No valid recipients"}), reasonBadAddress)
	}
	if s.cfg.MaxMessageBytes > 0 && int64(len(sub.Message)) > s.cfg.MaxMessageBytes {
		return "", refusal(ss.refuse(reasonTooBig, smtp.ErrDataTooLarge), reasonTooBig)
	}
	buf := newMsgBuf(s.inflight, networkOf(sub.RemoteIP), s.cfg.SpoolDir, ss.log)
	defer buf.free()
	err := readMessage(bytes.NewReader(sub.Message), buf, s.maxLineLength())
	ss.refused = ""
	id, err := ss.queue(buf, err)
	if err != nil {
		return "", refusal(err, reasonTemporary)
	}
	return id, nil
}

// The failed-login guard, for another door's logins (the API's SigV4
// signatures): its failures count with SMTP AUTH's, per network and per
// username (there, the access key id), and are slowed and blocked alike.

// LoginBlocked reports whether a login as username from ip is to be
// refused without a check.
func (s *Server) LoginBlocked(ip, username string) bool {
	return s.guard.networkBlocked(ip) || s.guard.blocked(ip, username)
}

// LoginFailed records a failed login (known: username exists) and returns
// how long to wait before answering.
func (s *Server) LoginFailed(ip, username string, known bool) time.Duration {
	s.deps.Metrics.AuthFailure()
	kind := unknownUsername
	if known {
		kind = wrongPassword
	}
	delay, attack := s.guard.failed(ip, username, kind)
	if attack {
		s.log.Warn("login attack: more failed logins as this username than auth_failures_per_username; "+
			"the networks failing as it are refused as it", "username", username, "door", "api")
	}
	return delay
}

// LoginRefused records a login refused without a check (LoginBlocked):
// it counts for the network only, as SMTP AUTH's do, and returns how long
// to wait before answering.
func (s *Server) LoginRefused(ip, username string) time.Duration {
	s.deps.Metrics.AuthFailure()
	delay, _ := s.guard.failed(ip, username, unchecked)
	return delay
}

// LoginSucceeded forgets the network's failures as username.
func (s *Server) LoginSucceeded(ip, username string) { s.guard.succeeded(ip, username) }
