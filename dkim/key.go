package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	"github.com/sesame-mail/sesame/store"
)

const (
	rsaBits    = 2048
	minRSABits = 1024 // RFC 8301 section 3.2: verifiers reject smaller keys
	pemType    = "PRIVATE KEY"
)

// RSASizes are the RSA key sizes a new key may have: 2048 is what most
// senders use and every verifier takes; larger keys make longer DNS
// records (a 4096-bit one needs several strings in its TXT record).
var RSASizes = []int{2048, 3072, 4096}

// GenerateKey makes a new private key for alg (store.AlgRSA gives RSA-2048,
// store.AlgEd25519 gives Ed25519) and returns it PKCS #8 PEM encoded.
func GenerateKey(alg string) ([]byte, error) { return GenerateKeySize(alg, rsaBits) }

// GenerateKeySize is GenerateKey with the size of an RSA key (one of
// RSASizes; ignored for Ed25519).
func GenerateKeySize(alg string, bits int) ([]byte, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case store.AlgRSA:
		if !slices.Contains(RSASizes, bits) {
			return nil, fmt.Errorf("dkim: generate key: %d bits: expected one of %v", bits, RSASizes)
		}
		key, err = rsa.GenerateKey(rand.Reader, bits)
	case store.AlgEd25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("dkim: generate key: unknown algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode %s key: %w", alg, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// NewKey generates a key for alg and returns it as a complete store.DKIMKey
// with selector Selector(alg, now) and CreatedAt now.
func NewKey(alg string, now time.Time) (store.DKIMKey, error) {
	priv, err := GenerateKey(alg)
	if err != nil {
		return store.DKIMKey{}, err
	}
	return store.DKIMKey{
		Selector:   Selector(alg, now),
		Algorithm:  alg,
		PrivateKey: priv,
		CreatedAt:  now,
	}, nil
}

// KeySize is the size in bits of an RSA key (0 for another algorithm or a
// key that cannot be read), for a rotation to make its successor alike.
func KeySize(key store.DKIMKey) int {
	priv, err := parseKey(key)
	if err != nil {
		return 0
	}
	if p, ok := priv.(*rsa.PrivateKey); ok {
		return p.N.BitLen()
	}
	return 0
}

// Signing returns the keys that sign: the active ones (a rotation's
// pending key waits for its record; a retiring one has been replaced).
func Signing(keys []store.DKIMKey) []store.DKIMKey {
	var out []store.DKIMKey
	for _, k := range keys {
		if k.State == "" || k.State == store.KeyActive {
			out = append(out, k)
		}
	}
	return out
}

// NewSelector names a new key of domain whose keys have the selectors in
// taken: Selector(alg, now), or with "-2", "-3"... appended when that is
// taken (a second key made the same day, as a rotation right after adding
// the domain).
func NewSelector(alg string, now time.Time, taken []string) string {
	base := Selector(alg, now)
	sel := base
	for n := 2; slices.Contains(taken, sel); n++ {
		sel = fmt.Sprintf("%s-%d", base, n)
	}
	return sel
}

// Selector names a new key's selector from its algorithm and the UTC date it
// was made: "sesame-rsa-20261127", "sesame-ed25519-20261127". Two keys of one
// algorithm made on the same day get the same name.
func Selector(alg string, now time.Time) string {
	return "sesame-" + alg + "-" + now.UTC().Format("20060102")
}

// Record is a DNS record an operator must publish.
type Record struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// DNSRecord returns the TXT record that publishes key's public half for
// domain: name "<selector>._domainkey.<domain>", value
// "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>" or, per RFC 8463,
// "v=DKIM1; k=ed25519; p=<base64 raw 32-byte key>".
//
// Value is the logical text. An RSA-2048 value is longer than the 255 bytes
// one DNS character-string holds, so in a zone file it is written as several
// quoted strings, which resolvers join; most DNS providers' forms do this.
func DNSRecord(domain string, key store.DKIMKey) (Record, error) {
	if !validName(domain) {
		return Record{}, fmt.Errorf("dkim: record for %q: invalid domain name", domain)
	}
	priv, err := parseKey(key)
	if err != nil {
		return Record{}, fmt.Errorf("dkim: record for %s: %w", domain, err)
	}
	var k string
	var pub []byte
	switch p := priv.Public().(type) {
	case *rsa.PublicKey:
		k = "rsa"
		if pub, err = x509.MarshalPKIXPublicKey(p); err != nil {
			return Record{}, fmt.Errorf("dkim: record for %s selector %s: %w", domain, key.Selector, err)
		}
	case ed25519.PublicKey:
		k, pub = "ed25519", p
	}
	return Record{
		Type:  "TXT",
		Name:  key.Selector + "._domainkey." + domain,
		Value: "v=DKIM1; k=" + k + "; p=" + base64.StdEncoding.EncodeToString(pub),
	}, nil
}

// parseKey decodes key's PEM and checks that it matches key.Algorithm and
// that its selector can go into a signature and a DNS name.
func parseKey(key store.DKIMKey) (crypto.Signer, error) {
	if !validName(key.Selector) {
		return nil, fmt.Errorf("selector %q: invalid name", key.Selector)
	}
	block, _ := pem.Decode(key.PrivateKey)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("selector %s: private key is not a PEM %q block", key.Selector, pemType)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("selector %s: %w", key.Selector, err)
	}
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		if key.Algorithm != store.AlgRSA {
			return nil, fmt.Errorf("selector %s: RSA key stored as algorithm %q", key.Selector, key.Algorithm)
		}
		if n := p.N.BitLen(); n < minRSABits {
			return nil, fmt.Errorf("selector %s: RSA key has %d bits, fewer than %d", key.Selector, n, minRSABits)
		}
		return p, nil
	case ed25519.PrivateKey:
		if key.Algorithm != store.AlgEd25519 {
			return nil, fmt.Errorf("selector %s: Ed25519 key stored as algorithm %q", key.Selector, key.Algorithm)
		}
		return p, nil
	default:
		return nil, fmt.Errorf("selector %s: unsupported key type %T", key.Selector, priv)
	}
}

// validName reports whether s is a dot-separated sequence of LDH labels. It
// guards the d= and s= tags, which go into the signature verbatim: a ';' or
// whitespace there would change what the signature says.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 || s[i-1] == '-' {
				return false
			}
			label = 0
			continue
		case c == '-':
			if label == 0 {
				return false
			}
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0 && s[len(s)-1] != '-'
}
