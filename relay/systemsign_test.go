package relay

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	sesamedkim "github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
)

// TestDSNSigned: a bounce leaves signed for the system domain when it has
// keys, and unsigned, as before, when it has none.
func TestDSNSigned(t *testing.T) {
	for _, withKeys := range []bool{true, false} {
		t.Run(fmt.Sprint("keys=", withKeys), func(t *testing.T) {
			q := newQueue(t)
			txt := map[string]string{}
			if withKeys {
				key, err := sesamedkim.NewKey(store.AlgRSA, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if err := q.CreateDomain(context.Background(), store.Domain{Name: "relay.test", CreatedAt: time.Now(),
					Keys: []store.DKIMKey{key}, Status: store.IdentityVerified}); err != nil {
					t.Fatal(err)
				}
				rec, err := sesamedkim.DNSRecord("relay.test", key)
				if err != nil {
					t.Fatal(err)
				}
				txt[rec.Name] = rec.Value
			}
			s := newSink(t, "127.0.0.2:0", nil)
			s.ReplyTo("b@example.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
			enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "b@example.test")
			cfg := testConfig(t, s.Addr, nil)
			cfg.SystemSigner = sesamedkim.NewSystemSigner(sesamedkim.NewDomainSigner(q.SQLite), "relay.test", cfg.Logger)
			start(t, cfg, q)

			n := nextNotice(t, q)
			signed := strings.HasPrefix(string(n.Data), "DKIM-Signature:")
			if signed != withKeys {
				t.Fatalf("DSN signed = %v, want %v:\n%s", signed, withKeys, n.Data)
			}
			if !withKeys {
				return
			}
			vs, err := dkim.VerifyWithOptions(strings.NewReader(string(n.Data)), &dkim.VerifyOptions{
				LookupTXT: func(name string) ([]string, error) {
					if v, ok := txt[name]; ok {
						return []string{v}, nil
					}
					return nil, fmt.Errorf("no record %s", name)
				},
			})
			if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "relay.test" {
				t.Fatalf("dkim: %+v %v\n%s", vs, err, n.Data)
			}
		})
	}
}
