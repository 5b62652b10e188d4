package relay

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/testkit"
)

// newSink starts a sink listening on addr ("127.0.0.2:0" for any port),
// keeping the protocol exchange for the tests' assertions. A non-nil
// tlsConfig makes it offer STARTTLS.
func newSink(t *testing.T, addr string, tlsConfig *tls.Config) *testkit.Sink {
	t.Helper()
	return testkit.StartSink(t, testkit.SinkOptions{Addr: addr, TLS: tlsConfig, Trace: true})
}

// sinkOn is newSink on a listener the test already holds. wrap, when not
// nil, wraps the sink as the server's backend.
func sinkOn(t *testing.T, ln net.Listener, wrap func(smtp.Backend) smtp.Backend) *testkit.Sink {
	t.Helper()
	return testkit.StartSink(t, testkit.SinkOptions{Listener: ln, Trace: true, Wrap: wrap})
}
