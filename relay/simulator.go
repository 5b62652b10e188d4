package relay

import (
	"bytes"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// The mailbox simulator, as SES has one: mail to these names at
// Config.SimulatorDomain is never sent anywhere; each gets the outcome its
// name promises, through the same records, DSNs, events and webhooks as
// real mail, so an application's handling of them can be tested end to end.
// Its outcomes never suppress an address, and the reputation guard leaves
// them out.
const (
	simSuccess     = "success"         // delivered
	simBounce      = "bounce"          // a hard bounce, with a DSN to the sender
	simOOTO        = "ooto"            // delivered, and an out-of-office reply to the sender
	simComplaint   = "complaint"       // delivered, and a complaint event
	simSuppression = "suppressionlist" // bounced as an address on the suppression list
)

// simulatorRemote names the simulator where a server's name would go.
const simulatorRemote = "mailbox-simulator"

// isSimulated reports whether addr is at the simulator's domain.
func (r *Relay) isSimulated(addr string) bool {
	return r.cfg.SimulatorDomain != "" && strings.EqualFold(store.AddressDomain(addr), r.cfg.SimulatorDomain)
}

// simulate gives each of rcpts (all at the simulator's domain) its outcome,
// and adds what goes with it (a reply, an event) to w's extras.
func (w *worker) simulate(d store.Delivery, rcpts []store.DueRecipient) []result {
	var out []result
	for _, rc := range rcpts {
		res := result{rcpt: rc, remote: simulatorRemote, relay: simulatorRemote, simulated: true,
			state: store.StateDelivered, status: "2.0.0", reply: "250 2.0.0 Ok: accepted by the mailbox simulator"}
		local, _, _ := strings.Cut(rc.Address, "@")
		switch strings.ToLower(local) {
		case simSuccess:
		case simBounce:
			res.state, res.status, res.code = store.StateBounced, "5.1.1", 550
			res.reply = "550 5.1.1 <" + rc.Address + ">: user unknown (a hard bounce from the mailbox simulator)"
		case simSuppression:
			res.state, res.status, res.code = store.StateBounced, "5.1.1", 550
			res.reply = "550 5.1.1 <" + rc.Address + ">: the address is on the suppression list (a bounce from the mailbox simulator)"
		case simOOTO:
			if d.Sender != "" {
				w.extras.replies = append(w.extras.replies, w.r.outOfOffice(d, rc.Address))
			}
		case simComplaint:
			w.extras.events = append(w.extras.events, store.Event{Type: store.EventComplaint, Recipient: rc.Address,
				RemoteMTA: simulatorRemote, Reply: "complaint: abuse (from the mailbox simulator)"})
		default:
			res.state, res.status, res.code = store.StateBounced, "5.1.1", 550
			res.reply = fmt.Sprintf("550 5.1.1 <%s>: not a mailbox simulator address; use %s@, %s@, %s@, %s@ or %s@%s",
				rc.Address, simSuccess, simBounce, simOOTO, simComplaint, simSuppression, w.r.cfg.SimulatorDomain)
		}
		out = append(out, res)
	}
	return out
}

// outOfOffice is the automatic reply of the simulator's ooto address to the
// sender of d: from the null sender, as RFC 3834 asks of auto-replies.
func (r *Relay) outOfOffice(d store.Delivery, from string) *store.Message {
	subject := "your message"
	if m, err := mail.ReadMessage(bytes.NewReader(d.Data)); err == nil {
		if s := m.Header.Get("Subject"); s != "" {
			subject = s
		}
	}
	now := r.now()
	id := store.NewQueueID()
	msgID := "<" + id + "@" + r.cfg.Hostname + ">"
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: Out of office: %s\r\nDate: %s\r\nMessage-ID: %s\r\n"+
		"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"I am out of the office and will read your message when I return.\r\n\r\n"+
		"(An automatic reply from Sesame's mailbox simulator.)\r\n",
		from, d.Sender, strings.Join(strings.Fields(subject), " "), now.Format(time.RFC1123Z), msgID)
	return &store.Message{ID: id, Sender: "", Recipients: []string{d.Sender}, MessageID: msgID, ReceivedAt: now,
		Data: []byte(body)}
}
