package smtpd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/account"
	sesamedkim "github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
)

// BenchmarkTransaction is one mail transaction through the submission
// server on loopback, with what production has behind it: the SQLite store
// (the reply waits for the fsync of the WAL; see store/bench_test.go),
// DKIM signing, sender policy, quotas. An op is MAIL FROM, RCPT TO, DATA
// with a 10 KiB message, up to the 250 reply.
//
//   - persistent: one connection set up beforehand (EHLO, STARTTLS, AUTH);
//     each op is one transaction on it.
//   - new-connection: each op also dials, does STARTTLS and AUTH, and QUITs,
//     as clients that connect per message do. The login is the cached one
//     (account.Authenticator), as for such a client after its first message.
//
// dkim= is the domain's keys: rsa (the default) or rsa+ed25519 (with
// [dkim] ed25519 = true, two signatures per message). Client and server run
// in this process, so allocs/op counts both.
func BenchmarkTransaction(b *testing.B) {
	for _, mode := range []string{"persistent", "new-connection"} {
		b.Run(mode, func(b *testing.B) {
			for _, keys := range []string{"rsa", "rsa+ed25519"} {
				b.Run("dkim="+keys, func(b *testing.B) {
					te := newBenchEnv(b, strings.Split(keys, "+"))
					if mode == "persistent" {
						benchmarkPersistent(b, te)
					} else {
						benchmarkNewConnection(b, te)
					}
				})
			}
		})
	}
}

// benchMessage is a message from the benchmark's verified domain, about 10 KiB.
func benchMessage() string {
	var body strings.Builder
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
	for body.Len() < 10<<10-200 {
		body.WriteString(line)
	}
	return message("shop@example.com", "a@example.net", "Your order", body.String())
}

func benchmarkPersistent(b *testing.B, te *benchEnv) {
	c := te.login(b)
	b.Cleanup(func() { c.Close() })
	msg := benchMessage()
	// One message first, outside the timer, checked end to end: it also
	// fills the caches (parsed DKIM keys, the quota's count) that the first
	// of three timed ops would otherwise pay for.
	te.sendChecked(b, c, msg, true)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		te.sendChecked(b, c, msg, false)
	}
}

func benchmarkNewConnection(b *testing.B, te *benchEnv) {
	msg := benchMessage()
	once := func(verify bool) {
		c := te.login(b)
		defer c.Close()
		te.sendChecked(b, c, msg, verify)
		if err := c.Quit(); err != nil {
			b.Fatalf("QUIT: %v", err)
		}
	}
	once(true) // as in benchmarkPersistent; this one also fills the login cache
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		once(false)
	}
}

// benchEnv is newTestEnv's server for a benchmark: newTestEnv needs a
// *testing.T. The quotas are out of reach, and the domain's keys are chosen.
type benchEnv struct {
	st                 *store.SQLite
	addr               string // STARTTLS listener
	username, password string
	txt                map[string]string // DKIM records by name
}

// benchKeys are made once per process: an RSA key takes a while to make.
var benchKeys = sync.OnceValues(func() (map[string]store.DKIMKey, error) {
	keys := map[string]store.DKIMKey{}
	for _, alg := range []string{store.AlgRSA, store.AlgEd25519} {
		k, err := sesamedkim.NewKey(alg, time.Now())
		if err != nil {
			return nil, err
		}
		keys[alg] = k
	}
	return keys, nil
})

func newBenchEnv(b *testing.B, algs []string) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "sesame.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	te := &benchEnv{st: st, username: account.NewUsername(), password: account.NewPassword(), txt: map[string]string{}}
	hash, err := account.HashPassword(te.password)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	if err := st.CreateCredential(ctx, store.Credential{Name: "app", Username: te.username, PasswordHash: hash,
		CreatedAt: now, UpdatedAt: now}); err != nil {
		b.Fatal(err)
	}
	all, err := benchKeys()
	if err != nil {
		b.Fatal(err)
	}
	d := store.Domain{Name: "example.com", CreatedAt: now, Status: store.IdentityVerified}
	for _, alg := range algs {
		k, ok := all[alg]
		if !ok {
			b.Fatalf("no key algorithm %q", alg)
		}
		d.Keys = append(d.Keys, k)
		rec, err := sesamedkim.DNSRecord(d.Name, k)
		if err != nil {
			b.Fatal(err)
		}
		te.txt[rec.Name] = rec.Value
	}
	if err := st.CreateDomain(ctx, d); err != nil {
		b.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cert, err := LoadCertificate("", "", dir, "sesame.test", log)
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Config{
		Hostname:        "sesame.test",
		StartTLSListen:  []string{"127.0.0.1:0"},
		TLS:             cert.TLSConfig(),
		MaxMessageBytes: 64 << 10,
		MaxRecipients:   50,
		MaxConnections:  1000,
		ReadTimeout:     10 * time.Second,
		WriteTimeout:    10 * time.Second,
		Logger:          log,
	}, Deps{
		Auth:   account.NewAuthenticator(st, time.Now, 5*time.Minute), // the default auth_cache_ttl
		Signer: sesamedkim.NewDomainSigner(st),
		Queue:  st,
		Policy: identity.NewAuthorizer(st),
		Quotas: account.NewQuotas(st, account.QuotaDefaults{Daily: 1 << 30, Rate: 1e9, SandboxDaily: 1, SandboxRate: 1},
			time.Now),
		Standing: st,
		Events:   st,
	})
	te.addr = serveUntilCleanup(b, srv)[0]
	return te
}

// login connects with STARTTLS and logs in.
func (te *benchEnv) login(b *testing.B) *smtp.Client {
	c, err := smtp.DialStartTLS(te.addr, clientTLS)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", te.username, te.password)); err != nil {
		c.Close()
		b.Fatalf("auth: %v", err)
	}
	return c
}

// sendChecked sends msg and fails unless it is queued; with verify, it also
// checks the queued message's DKIM signatures.
func (te *benchEnv) sendChecked(b *testing.B, c *smtp.Client, msg string, verify bool) {
	resp, err := send(c, "shop@example.com", []string{"a@example.net"}, msg)
	if err != nil {
		b.Fatal(err)
	}
	_, id, ok := strings.Cut(resp.StatusText, "Ok: queued as ")
	if !ok {
		b.Fatalf("reply %q", resp.StatusText)
	}
	if !verify {
		return
	}
	raw, err := te.st.MessageData(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	vs, err := dkim.VerifyWithOptions(strings.NewReader(string(raw)), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := te.txt[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no record %s", name)
		},
	})
	if err != nil || len(vs) != len(te.txt) {
		b.Fatalf("dkim: %d signatures for %d keys, %v", len(vs), len(te.txt), err)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.com" {
			b.Fatalf("dkim: %+v", v)
		}
	}
}
