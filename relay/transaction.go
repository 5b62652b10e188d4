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

// result is what one attempt did for one recipient.
type result struct {
	rcpt   store.DueRecipient
	state  string // store.StateDelivered, StateDeferred or StateBounced (StateExpired is decided in record)
	reply  string // the remote's reply or our own reason, one line
	status string // RFC 3463 status for a DSN, e.g. "5.1.1"
	own    bool   // reply is Sesame's own reason, not a server's reply
	remote string // the server's host name, "" if none answered (Remote-MTA)
	relay  string // name[ip]:port, for the mail log
	source string // local IP address of the connection, "" if there was none
	tls    string // TLS version of the connection, "none", or "" if there was no connection
	code   int    // the server's reply code, 0 if none

	// park, with state deferred, puts the recipient in that waiting line
	// (see shaping.go) until parkUntil or later; notAttempted says no
	// server was tried.
	park         string
	parkUntil    time.Time
	notAttempted bool
	simulated    bool // an outcome of the mailbox simulator
}

// replyCode is the reply code of a server's reply in err, or 0.
func replyCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// send runs one mail transaction on s from the return path from for rcpts
// and returns one result per recipient, in order, and whether the
// connection can carry the next transaction. On a connection reused from
// the pool the transaction starts with RSET; when that is not answered 250
// (the server closed the connection while it was idle), stale is true and
// nothing was said about the recipients: the caller tries another
// connection.
func (s *session) send(d store.Delivery, from string, rcpts []store.DueRecipient) (res []result, keep, stale bool) {
	res = make([]result, len(rcpts))
	all := make([]int, len(rcpts))
	for i, rc := range rcpts {
		res[i] = result{rcpt: rc, remote: s.name, relay: s.relayName(), source: s.localIP(), tls: s.tlsName()}
		all[i] = i
	}
	settle := func(which []int, err error) {
		for _, i := range which {
			res[i].state, res[i].reply, res[i].status, res[i].own = verdict(err), describe(err), statusOf(err), !isReply(err)
			res[i].code = replyCode(err)
		}
	}

	// The signed bytes cannot be converted (to quoted-printable, or to
	// ASCII addresses) without breaking the DKIM signature or the
	// addresses, so a server lacking what the message needs gets nothing.
	utf8 := needsSMTPUTF8(from, rcpts)
	if utf8 {
		if !s.ext.smtputf8 {
			settle(all, permanentFailure(smtp.EnhancedCode{5, 6, 7},
				"%s does not support SMTPUTF8, which the message's non-ASCII addresses need", s.name))
			return res, true, false
		}
	}
	if has8bit(d.Data) {
		if !s.ext.eightBitMIME {
			settle(all, permanentFailure(smtp.EnhancedCode{5, 6, 3},
				"%s does not support 8BITMIME, which the message's 8-bit content needs; converting it would break its DKIM signature", s.name))
			return res, true, false
		}
	}

	cmds := make([]string, 0, len(rcpts)+3)
	if s.reused {
		cmds = append(cmds, "RSET")
	}
	cmds = append(cmds, s.mailCommand(from, len(d.Data), utf8))
	for _, rc := range rcpts {
		cmds = append(cmds, "RCPT TO:<"+rc.Address+">")
	}
	cmds = append(cmds, "DATA")
	w := s.wire
	if err := w.begin(cmds...); err != nil {
		settle(all, permanentFailure(smtp.EnhancedCode{5, 1, 3}, "%v", err))
		return res, true, false
	}

	if s.reused {
		if rep, err := w.reply(); err != nil || rep.Code != 250 {
			return nil, false, true
		}
	}
	rep, err := w.reply()
	if err != nil {
		settle(all, fmt.Errorf("MAIL FROM: %w", err))
		return res, false, false
	}
	if rep.Code/100 != 2 {
		settle(all, fmt.Errorf("MAIL FROM: %w", rep))
		return res, rep.Code != 421 && w.finish(), false
	}
	var accepted []int
	for i := range rcpts {
		rep, err := w.reply()
		if err == nil && rep.Code/100 == 2 {
			accepted = append(accepted, i)
			continue
		}
		if err == nil && rep.Code != 421 {
			settle([]int{i}, rep)
			continue
		}
		if err == nil {
			err = rep
		}
		settle(append(accepted, all[i:]...), fmt.Errorf("RCPT TO: %w", err))
		return res, false, false
	}
	if len(accepted) == 0 {
		return res, w.finish(), false
	}

	rep, err = w.reply()
	if err != nil {
		settle(accepted, fmt.Errorf("DATA: %w", err))
		return res, false, false
	}
	if rep.Code != 354 {
		settle(accepted, fmt.Errorf("DATA: %w", rep))
		return res, rep.Code != 421, false
	}
	if err := w.data(d.Data); err != nil {
		settle(accepted, fmt.Errorf("sending the message: %w", err))
		return res, false, false
	}
	rep, err = w.readReply()
	if err != nil {
		settle(accepted, fmt.Errorf("end of data: %w", err))
		return res, false, false
	}
	if rep.Code/100 != 2 {
		settle(accepted, fmt.Errorf("end of data: %w", rep))
		return res, rep.Code != 421, false
	}
	reply := formatReply(rep)
	for _, i := range accepted {
		res[i].state, res[i].reply, res[i].status = store.StateDelivered, reply, "2.0.0"
	}
	return res, true, false
}

// mailCommand is the MAIL command for a message of size bytes, with the
// parameters the server supports: BODY=8BITMIME whenever it is offered (as
// go-smtp's client did), SIZE, and SMTPUTF8 when the addresses need it (send
// checked that it is offered).
func (s *session) mailCommand(from string, size int, utf8 bool) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<" + from + ">")
	if s.ext.eightBitMIME {
		b.WriteString(" BODY=8BITMIME")
	}
	if s.ext.size && size > 0 {
		b.WriteString(" SIZE=" + strconv.Itoa(size))
	}
	if utf8 {
		b.WriteString(" SMTPUTF8")
	}
	return b.String()
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func needsSMTPUTF8(sender string, rcpts []store.DueRecipient) bool {
	if has8bit([]byte(sender)) {
		return true
	}
	for _, rc := range rcpts {
		if has8bit([]byte(rc.Address)) {
			return true
		}
	}
	return false
}
