package relay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

// hop is the smarthost: an SMTP server named in the configuration.
type hop struct {
	host string // DNS name or IP literal; also the TLS server name
	port string
}

func (h hop) String() string { return net.JoinHostPort(h.host, h.port) }

// target is one server a leg may be handed to, with its addresses in the
// order to try.
type target struct {
	name  string // MX host name (the TLS server name, and Remote-MTA in DSNs)
	port  string
	addrs []netip.Addr
}

// leg is the part of a delivery that goes to one destination in one SMTP
// transaction: the recipients of one domain, or all of them for the
// smarthost.
type leg struct {
	domain     string // "" for the smarthost
	rcpts      []store.DueRecipient
	returnPath string // MAIL FROM
}

// route splits d's recipients by destination domain, in the order they come.
// With per-recipient return paths (Config.ReturnPath), each recipient is a
// leg of its own: the return path names it.
func (r *Relay) route(d store.Delivery) []leg {
	// Whether the sender gets return paths depends on its domain only, so
	// the first recipient's answer holds for all.
	if r.cfg.ReturnPath != nil && d.Sender != "" && len(d.Recipients) > 0 &&
		r.cfg.ReturnPath(d.Sender, d.QueueID, d.Recipients[0].Address) != "" {
		var legs []leg
		for _, rc := range d.Recipients {
			l := leg{rcpts: []store.DueRecipient{rc}, returnPath: r.cfg.ReturnPath(d.Sender, d.QueueID, rc.Address)}
			if r.smarthost == nil {
				l.domain = store.AddressDomain(rc.Address)
			}
			legs = append(legs, l)
		}
		return legs
	}
	if r.smarthost != nil {
		return []leg{{rcpts: d.Recipients, returnPath: d.Sender}}
	}
	var legs []leg
	index := map[string]int{}
	for _, rc := range d.Recipients {
		dom := store.AddressDomain(rc.Address)
		i, ok := index[dom]
		if !ok {
			i = len(legs)
			index[dom] = i
			legs = append(legs, leg{domain: dom, returnPath: d.Sender})
		}
		legs[i].rcpts = append(legs[i].rcpts, rc)
	}
	return legs
}

// resolved is what resolveAll found for one leg.
type resolved struct {
	targets []target
	err     error
}

// maxLookupsPerMessage bounds the destinations of one message resolved at
// once.
const maxLookupsPerMessage = 32

// resolveAll finds the targets of every leg at once, all within one
// ConnectTimeout: a message to fifty domains whose DNS never answers waits
// one timeout, not fifty in a row, and a domain that is slower than that is
// deferred. Legs to the same domain share one answer. A panic resolving a
// destination fails that destination only.
func (r *Relay) resolveAll(ctx context.Context, credential string, legs []leg) []resolved {
	ctx, cancel := context.WithTimeout(withLane(ctx, credential), r.cfg.ConnectTimeout)
	defer cancel()
	out := make([]resolved, len(legs))
	byDomain := map[string][]int{}
	for i, l := range legs {
		byDomain[l.domain] = append(byDomain[l.domain], i)
	}
	sem := make(chan struct{}, maxLookupsPerMessage)
	var wg sync.WaitGroup
	for _, idx := range byDomain {
		wg.Go(func() {
			var res resolved
			defer func() {
				if p := recover(); p != nil {
					r.log.Error("relay: resolving a destination panicked", "domain", legs[idx[0]].domain,
						"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					res = resolved{err: temporaryFailure(smtp.EnhancedCode{4, 3, 0}, "%s", replyInternal)}
				}
				for _, i := range idx {
					out[i] = res
				}
			}()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
			}
			res.targets, res.err = r.targets(ctx, legs[idx[0]])
		})
	}
	wg.Wait()
	return out
}

// targets are the servers to try for l, best first: the smarthost, or the
// mail exchangers of l's domain (RFC 5321 §5.1) that may be connected to.
// ctx bounds the lookups.
func (r *Relay) targets(ctx context.Context, l leg) ([]target, error) {
	if r.smarthost != nil {
		addrs, err := r.dns.lookupHost(ctx, r.smarthost.host)
		if err != nil {
			// The operator's own setting: never the recipients' fault.
			return nil, temporaryFailure(smtp.EnhancedCode{4, 4, 3}, "smarthost %s: %v", r.smarthost.host, err)
		}
		return []target{{name: r.smarthost.host, port: r.smarthost.port, addrs: addrs}}, nil
	}
	exs, err := r.dns.exchangers(ctx, l.domain)
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(r.cfg.MXPort)
	var out []target
	var refused []string
	for _, ex := range exs {
		t := target{name: ex.host, port: port}
		for _, a := range ex.addrs {
			if r.allowed(a) {
				t.addrs = append(t.addrs, a)
			} else {
				refused = append(refused, ex.host+"["+a.String()+"]")
			}
		}
		if len(t.addrs) > 0 {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, permanentFailure(smtp.EnhancedCode{5, 4, 4},
			"mail exchangers of %s resolve only to loopback, private or this host's addresses %v; not delivering there (relay.allow_private_destinations)",
			l.domain, refused)
	}
	return out, nil
}

// allowed reports whether MX delivery may connect to a: a globally
// reachable address (destinations.go) that is not this host's own, unless
// the operator allows private destinations. Otherwise a domain's DNS could
// aim Sesame at the internal network, or at itself in a loop.
func (r *Relay) allowed(a netip.Addr) bool {
	if r.cfg.AllowPrivateDestinations {
		return true
	}
	return globallyReachable(a) && !r.own[a]
}
