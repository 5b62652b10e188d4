package identity

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

const testHost = "relay.example.net"

// testConfig points at z, with a fake clock and a log the test can read.
func testConfig(z *testkit.Zone, c *testkit.Clock, log *testkit.Buffer) Config {
	cfg := Config{
		Hostname:   testHost,
		SourceIPs:  []string{"203.0.113.5", "2001:db8::5", "10.0.0.7"},
		DNSServers: []string{z.Addr},
		DNSTimeout: time.Second,
		PublicURL:  "https://relay.example.net",
		Now:        c.Now,
	}
	if log != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

func openStore(t *testing.T) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newDomain makes a domain with one new key per algorithm.
func newDomain(t *testing.T, name string, now time.Time, algs ...string) store.Domain {
	t.Helper()
	d := store.Domain{Name: name, CreatedAt: now, Status: store.IdentityPending, StatusSince: now}
	for _, alg := range algs {
		k, err := dkim.NewKey(alg, now)
		if err != nil {
			t.Fatal(err)
		}
		d.Keys = append(d.Keys, k)
	}
	return d
}

// publishAll publishes every record of d as Records says.
func publishAll(t *testing.T, z *testkit.Zone, cfg Config, d store.Domain) []Record {
	t.Helper()
	recs, err := cfg.Records(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		switch r.Type {
		case "TXT":
			z.SetTXT(r.Name, r.Value)
		case "MX":
			z.Set(t, r.Name, dns.TypeMX, r.Name+". 300 IN MX "+r.Value+".")
		}
	}
	return recs
}

func dkimRecord(t *testing.T, d store.Domain, i int) dkim.Record {
	t.Helper()
	r, err := dkim.DNSRecord(d.Name, d.Keys[i])
	if err != nil {
		t.Fatal(err)
	}
	return r
}
