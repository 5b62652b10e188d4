package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/store"
)

func TestExposition(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	msg := &store.Message{Sender: "a@example.com", Recipients: []string{"x@example.net", "y@example.net", "z@example.net"},
		ReceivedAt: time.Now().Add(-90 * time.Second), Data: []byte("x\r\n")}
	if err := st.Enqueue(ctx, msg); err != nil {
		t.Fatal(err)
	}
	st.Claim(ctx, time.Now(), 1, time.Minute)
	st.Complete(ctx, store.Report{QueueID: msg.ID, Outcomes: []store.Outcome{
		{Recipient: "x@example.net", State: store.StateDeferred, NextAttempt: time.Now().Add(time.Hour)},
		{Recipient: "y@example.net", State: store.StateDeferred, NextAttempt: time.Now().Add(time.Hour)},
	}})
	m := New(st)
	m.Connection()
	m.TLSHandshake("TLS 1.3")
	m.AuthFailure()
	m.Submission(true, "")
	m.Submission(false, "quota_rate")
	m.Delivery("delivered", "alt1.aspmx.l.google.com.", "192.0.2.10", 2*time.Second)
	m.Delivery("deferred", "mx.example.net", "192.0.2.10", 0)
	m.Delivery("deferred", "", "", 0)
	m.OutboundConnection("")
	m.ConnRefused("submission", "unauthenticated_per_ip")
	m.ConnShed("http")
	m.AcceptError("inbound")
	m.Listeners(func() []netguard.Stats {
		return []netguard.Stats{{Listener: "submission", Authenticated: 3, Unauthenticated: 4}}
	})
	m.LoginGuard(func() LoginGuardStats {
		return LoginGuardStats{UsernameAttacks: 1, BlockedNetworks: 2, BlockedUsernameNetworks: 5}
	})
	m.SubmissionInflight(func() int64 { return 3 << 20 }, 512<<20)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		"sesame_smtp_connections_total 1",
		`sesame_smtp_tls_handshakes_total{tls_version="1.3"} 1`,
		"sesame_auth_failures_total 1",
		"sesame_smtp_inflight_bytes 3.145728e+06",
		"sesame_smtp_inflight_limit_bytes 5.36870912e+08",
		`sesame_submissions_total{reason="",result="accepted"} 1`,
		`sesame_submissions_total{reason="quota_rate",result="rejected"} 1`,
		`sesame_recipients_total{provider="google",source_ip="192.0.2.10",state="delivered"} 1`,
		`sesame_recipients_total{provider="other",source_ip="192.0.2.10",state="deferred"} 1`,
		`sesame_recipients_total{provider="none",source_ip="",state="deferred"} 1`,
		"sesame_delivery_latency_seconds_count 1",
		`sesame_outbound_connections_total{tls_version="none"} 1`,
		`sesame_queue_recipients{state="queued"} 1`,
		`sesame_queue_recipients{state="deferred"} 2`,
		"sesame_queue_oldest_message_age_seconds 9",
		`sesame_listener_refused_connections_total{listener="submission",reason="unauthenticated_per_ip"} 1`,
		`sesame_listener_shed_connections_total{listener="http"} 1`,
		`sesame_listener_accept_errors_total{listener="inbound"} 1`,
		`sesame_listener_open_connections{listener="submission",state="authenticated"} 3`,
		`sesame_listener_open_connections{listener="submission",state="unauthenticated"} 4`,
		"sesame_auth_username_attacks 1",
		`sesame_auth_blocked_networks{scope="all"} 2`,
		`sesame_auth_blocked_networks{scope="username"} 5`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestProviderGroup(t *testing.T) {
	for host, want := range map[string]string{
		"aspmx.l.google.com.":                     "google",
		"example-com.mail.protection.outlook.com": "microsoft",
		"mta5.am0.yahoodns.net":                   "yahoo",
		"mx01.mail.icloud.com":                    "apple",
		"mx.example.net":                          "other",
		"notgoogle.com":                           "other",
		"":                                        "none",
	} {
		if got := ProviderGroup(host); got != want {
			t.Errorf("ProviderGroup(%q) = %q, want %q", host, got, want)
		}
	}
}
