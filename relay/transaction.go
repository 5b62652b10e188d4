package relay

import (
	"fmt"
	"log/slog"

	"github.com/emersion/go-smtp"
	"github.com/sesame-mail/sesame/store"
)

// result is what one attempt did for one recipient.
type result struct {
	rcpt  store.DueRecipient
	state string // store.StateDelivered, StateDeferred or StateFailed
	reply string
	relay string // the hop, for the mail log
	tls   string // TLS version of the connection, "none", or "" if there was no connection
}

// send runs one mail transaction on s for rcpts and returns one result per
// recipient, in order, and whether the connection can carry the next
// transaction.
func (s *session) send(log *slog.Logger, d store.Delivery, rcpts []store.DueRecipient) ([]result, bool) {
	c := s.client
	res := make([]result, len(rcpts))
	all := make([]int, len(rcpts))
	for i, rc := range rcpts {
		res[i] = result{rcpt: rc, relay: s.hop.String(), tls: s.tlsName()}
		all[i] = i
	}
	settle := func(which []int, err error) {
		for _, i := range which {
			res[i].state, res[i].reply = verdict(err), describe(err)
		}
	}

	opts := &smtp.MailOptions{}
	if has8bit(d.Data) {
		// go-smtp declares BODY=8BITMIME on every MAIL to a server offering
		// it, whatever Body says; set it anyway for the day it honours it.
		opts.Body = smtp.Body8BitMIME
		if ok, _ := c.Extension("8BITMIME"); !ok {
			// Sent unconverted: a conversion would break the DKIM signature.
			// MX delivery decides between converting before signing and
			// bouncing; most servers accept 8-bit data regardless.
			log.Warn("relay: 8-bit message to a server without 8BITMIME, sent as is",
				"queue_id", d.QueueID, "relay", s.hop.String())
		}
	}
	if needsSMTPUTF8(d.Sender, rcpts) {
		// Without the extension the addresses go out as they are and the
		// server's reply decides.
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			opts.UTF8 = true
		}
	}

	if err := c.Mail(d.Sender, opts); err != nil {
		settle(all, fmt.Errorf("MAIL FROM: %w", err))
		return res, !connectionLost(err)
	}
	var accepted []int
	for i, rc := range rcpts {
		err := c.Rcpt(rc.Address, nil)
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		if connectionLost(err) {
			settle(append(accepted, all[i:]...), fmt.Errorf("RCPT TO: %w", err))
			return res, false
		}
		settle([]int{i}, err)
	}
	if len(accepted) == 0 {
		return res, true
	}

	w, err := c.Data()
	if err != nil {
		settle(accepted, fmt.Errorf("DATA: %w", err))
		return res, !connectionLost(err)
	}
	// The stored bytes have CRLF line ends only; the writer dot-stuffs them.
	if _, err := w.Write(d.Data); err != nil {
		settle(accepted, fmt.Errorf("sending the message: %w", err))
		return res, false
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		settle(accepted, fmt.Errorf("end of data: %w", err))
		return res, !connectionLost(err)
	}
	reply := formatReply(replyError(250, resp.StatusText))
	for _, i := range accepted {
		res[i].state, res[i].reply = store.StateDelivered, reply
	}
	return res, true
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
