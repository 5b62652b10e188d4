package relay

import (
	"net"

	"github.com/sesame-mail/sesame/store"
)

// hop is an SMTP server mail is handed to.
type hop struct {
	host string // DNS name or IP literal; also the TLS server name
	port string
}

func (h hop) String() string { return net.JoinHostPort(h.host, h.port) }

// leg is the part of a delivery that goes through one hop, in one SMTP
// transaction.
type leg struct {
	hop   hop
	rcpts []store.DueRecipient
}

// route splits d's recipients by next hop. With a smarthost every recipient
// takes the same hop. MX delivery replaces this with a grouping by recipient
// domain and a list of MX hosts per group, tried in preference order.
func (r *Relay) route(d store.Delivery) []leg {
	return []leg{{hop: r.smarthost, rcpts: d.Recipients}}
}
