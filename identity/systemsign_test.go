package identity

import (
	"context"
	"fmt"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
)

// TestAddressMessageSigned: the verification mail, from no-reply@HOSTNAME,
// is signed for the system domain when it has keys, and goes unsigned, as
// before, when it has none.
func TestAddressMessageSigned(t *testing.T) {
	const system = "example.net" // the domain of testHost
	for _, withKeys := range []bool{true, false} {
		t.Run(fmt.Sprint("keys=", withKeys), func(t *testing.T) {
			s := newAddressSetup(t)
			ctx := context.Background()
			txt := map[string]string{}
			if withKeys {
				key, err := dkim.NewKey(store.AlgRSA, s.clock.Now())
				if err != nil {
					t.Fatal(err)
				}
				if err := s.st.CreateDomain(ctx, store.Domain{Name: system, CreatedAt: s.clock.Now(),
					Keys: []store.DKIMKey{key}, Status: store.IdentityVerified}); err != nil {
					t.Fatal(err)
				}
				rec, err := dkim.DNSRecord(system, key)
				if err != nil {
					t.Fatal(err)
				}
				txt[rec.Name] = rec.Value
			}
			cfg := s.av.cfg
			cfg.SystemSigner = dkim.NewSystemSigner(dkim.NewDomainSigner(s.st), system, cfg.Logger)
			av := NewAddressVerifier(cfg, s.st, s.st)
			if _, _, err := av.Add(ctx, "alice@example.com"); err != nil {
				t.Fatal(err)
			}
			_, data := s.queued(t, "alice@example.com")
			if len(data) != 1 {
				t.Fatalf("%d messages queued, want 1", len(data))
			}
			raw := string(data[0])
			if signed := strings.HasPrefix(raw, "DKIM-Signature:"); signed != withKeys {
				t.Fatalf("signed = %v, want %v:\n%s", signed, withKeys, raw)
			}
			if !withKeys {
				return
			}
			vs, err := msgauth.VerifyWithOptions(strings.NewReader(raw), &msgauth.VerifyOptions{
				LookupTXT: func(name string) ([]string, error) {
					if v, ok := txt[name]; ok {
						return []string{v}, nil
					}
					return nil, fmt.Errorf("no record %s", name)
				},
			})
			if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != system {
				t.Fatalf("dkim: %+v %v\n%s", vs, err, raw)
			}
		})
	}
}
