package dkim

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// newTestKey returns a fresh key for alg with the given selector.
func newTestKey(t testing.TB, alg, selector string) store.DKIMKey {
	t.Helper()
	k, err := NewKey(alg, testkit.Start(t))
	if err != nil {
		t.Fatalf("NewKey(%s): %v", alg, err)
	}
	k.Selector = selector
	return k
}

func TestGenerateKey(t *testing.T) {
	for _, alg := range []string{store.AlgRSA, store.AlgEd25519} {
		t.Run(alg, func(t *testing.T) {
			p, err := GenerateKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode(p)
			if block == nil || block.Type != "PRIVATE KEY" || len(rest) != 0 {
				t.Fatalf("not one PKCS #8 PEM block:\n%s", p)
			}
			priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			switch k := priv.(type) {
			case *rsa.PrivateKey:
				if alg != store.AlgRSA || k.N.BitLen() != 2048 {
					t.Errorf("got RSA-%d for %s", k.N.BitLen(), alg)
				}
			case ed25519.PrivateKey:
				if alg != store.AlgEd25519 {
					t.Errorf("got Ed25519 for %s", alg)
				}
			default:
				t.Errorf("got %T for %s", priv, alg)
			}
		})
	}
	if _, err := GenerateKey("dsa"); err == nil {
		t.Error("GenerateKey(dsa) succeeded")
	}
}

func TestSelector(t *testing.T) {
	// 23:30 in UTC-5 is the next day in UTC: the selector uses the UTC date.
	day := testkit.Day(t)
	now := day.Add(4*time.Hour + 30*time.Minute).In(time.FixedZone("EST", -5*3600))
	if now.Hour() != 23 || now.Minute() != 30 || now.Day() == day.Day() {
		t.Fatalf("%v is not 23:30 on the day before %v", now, day)
	}
	date := day.Format("20060102")
	for alg, want := range map[string]string{
		store.AlgRSA:     "sesame-rsa-" + date,
		store.AlgEd25519: "sesame-ed25519-" + date,
	} {
		if got := Selector(alg, now); got != want {
			t.Errorf("Selector(%s) = %q, want %q", alg, got, want)
		}
	}
}

func TestNewKey(t *testing.T) {
	now := testkit.Start(t)
	k, err := NewKey(store.AlgEd25519, now)
	if err != nil {
		t.Fatal(err)
	}
	if k.Selector != "sesame-ed25519-"+now.Format("20060102") || k.Algorithm != store.AlgEd25519 || !k.CreatedAt.Equal(now) {
		t.Errorf("NewKey = %+v", k)
	}
	if _, err := parseKey(k); err != nil {
		t.Errorf("NewKey made a key that does not parse: %v", err)
	}
	if _, err := NewKey("dsa", now); err == nil {
		t.Error("NewKey(dsa) succeeded")
	}
}

func TestDNSRecord(t *testing.T) {
	rsaKey := newTestKey(t, store.AlgRSA, "sesame-rsa-20261127")
	edKey := newTestKey(t, store.AlgEd25519, "sesame-ed25519-20261127")

	r, err := DNSRecord("example.com", rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != "TXT" || r.Name != "sesame-rsa-20261127._domainkey.example.com" {
		t.Errorf("RSA record = %+v", r)
	}
	p, ok := strings.CutPrefix(r.Value, "v=DKIM1; k=rsa; p=")
	if !ok {
		t.Fatalf("RSA value = %q", r.Value)
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("p= is not a SubjectPublicKeyInfo: %v", err)
	}
	priv, _ := parseKey(rsaKey)
	if !priv.Public().(*rsa.PublicKey).Equal(pub) {
		t.Error("p= is not the key's public half")
	}

	r, err = DNSRecord("example.com", edKey)
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != "TXT" || r.Name != "sesame-ed25519-20261127._domainkey.example.com" {
		t.Errorf("Ed25519 record = %+v", r)
	}
	p, ok = strings.CutPrefix(r.Value, "v=DKIM1; k=ed25519; p=")
	if !ok {
		t.Fatalf("Ed25519 value = %q", r.Value)
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ = parseKey(edKey)
	if len(raw) != ed25519.PublicKeySize || !priv.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(raw)) {
		t.Errorf("p= is not the raw 32-byte public key: %x", raw)
	}
}

func TestDNSRecordErrors(t *testing.T) {
	good := newTestKey(t, store.AlgEd25519, "sel")
	wrongAlg := good
	wrongAlg.Algorithm = store.AlgRSA
	badPEM := good
	badPEM.PrivateKey = []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
	badSel := good
	badSel.Selector = "sel; x=1"
	for name, tc := range map[string]struct {
		domain string
		key    store.DKIMKey
	}{
		"algorithm mismatch": {"example.com", wrongAlg},
		"not PKCS8 PEM":      {"example.com", badPEM},
		"bad selector":       {"example.com", badSel},
		"bad domain":         {"example.com; s=evil", good},
		"empty domain":       {"", good},
	} {
		if r, err := DNSRecord(tc.domain, tc.key); err == nil {
			t.Errorf("%s: DNSRecord = %+v, want error", name, r)
		}
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"example.com":           true,
		"sesame-rsa-20261127":   true,
		"a.b-c.D9":              true,
		"":                      false,
		".example.com":          false,
		"example.com.":          false,
		"example..com":          false,
		"-a.com":                false,
		"a-.com":                false,
		"a b":                   false,
		"a;b":                   false,
		"a_b":                   false,
		"bücher.example":        false,
		strings.Repeat("a", 64): false,
		strings.Repeat("a", 63): true,
	} {
		if got := validName(s); got != want {
			t.Errorf("validName(%q) = %v, want %v", s, got, want)
		}
	}
}
