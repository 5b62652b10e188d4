// Package verp makes and checks the return paths of outbound mail: one per
// message and recipient (a variable envelope return path), such as
//
//	b+7gfc3cthmrjqdudb.k5qx2m4a.3jd7y0c2ab1ex4kq@bounce.example.com
//
// A bounce that arrives later at that address names the message (its queue
// id) and the recipient (a short hash of the address) it is about, and the
// HMAC in it tells Sesame's own return paths from forged or altered ones.
// Tokens are lower case, because some servers change the case of local
// parts.
//
// Which mail gets one is decided here too (ForVerifiedDomains): mail from a
// verified domain, whose bounce subdomain the operator points at Sesame.
package verp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the length of the HMAC key.
const KeySize = 32

var enc = base32.StdEncoding.WithPadding(base32.NoPadding)

// Signer makes and checks return paths under one DNS label of the sender's
// domain ("bounce": bounce.example.com).
type Signer struct {
	key       []byte
	subdomain string
}

// New returns a Signer with key (KeySize random bytes, see LoadKey) for
// return paths under subdomain.
func New(key []byte, subdomain string) *Signer {
	return &Signer{key: key, subdomain: strings.ToLower(subdomain)}
}

// LoadKey reads the key at path, creating it (mode 0600) when it does not
// exist yet. Losing it only makes the return paths of mail already sent
// unrecognisable.
func LoadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("verp: make key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadKey(path) // made by another process meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("verp: create key %s: %w", path, err)
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			return nil, fmt.Errorf("verp: write key %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("verp: write key %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("verp: read key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("verp: key %s has %d bytes, want %d; delete it to make a new one", path, len(key), KeySize)
	}
	return key, nil
}

// RecipientHash is the short hash of rcpt a token carries.
func RecipientHash(rcpt string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(rcpt)))
	return strings.ToLower(enc.EncodeToString(sum[:5]))
}

func (s *Signer) mac(queueID, rcptHash, domain string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("sesame-verp-1\x00" + strings.ToLower(queueID) + "\x00" + rcptHash + "\x00" + strings.ToLower(domain)))
	return strings.ToLower(enc.EncodeToString(m.Sum(nil)[:10]))
}

// ReturnPath returns the return path for rcpt of message queueID sent from
// a domain: b+TOKEN@SUBDOMAIN.domain.
func (s *Signer) ReturnPath(domain, queueID, rcpt string) string {
	domain = strings.ToLower(domain)
	qid, h := strings.ToLower(queueID), RecipientHash(rcpt)
	return "b+" + qid + "." + h + "." + s.mac(qid, h, domain) + "@" + s.subdomain + "." + domain
}

// Token is what a genuine return path says.
type Token struct {
	QueueID  string // upper case, as the store has it
	RcptHash string
	Domain   string // the sending domain (without the subdomain)
}

// Matches reports whether rcpt is the recipient the token is about.
func (t Token) Matches(rcpt string) bool { return RecipientHash(rcpt) == t.RcptHash }

// Errors of Parse.
var (
	ErrNotOurs = errors.New("not a return path of this form")
	ErrForged  = errors.New("the return path's signature does not match")
)

// Parse checks addr. ErrNotOurs means it does not look like a return path
// under the Signer's subdomain; ErrForged that it does but was not made
// with this key (forged, altered, or made before the key changed).
func (s *Signer) Parse(addr string) (Token, error) {
	local, domain, ok := strings.Cut(strings.ToLower(addr), "@")
	if !ok || !strings.HasPrefix(local, "b+") || !strings.HasPrefix(domain, s.subdomain+".") {
		return Token{}, ErrNotOurs
	}
	parts := strings.Split(strings.TrimPrefix(local, "b+"), ".")
	if len(parts) != 3 || len(parts[0]) != 16 || len(parts[1]) != 8 || len(parts[2]) != 16 {
		return Token{}, ErrNotOurs
	}
	sending := strings.TrimPrefix(domain, s.subdomain+".")
	if !hmac.Equal([]byte(parts[2]), []byte(s.mac(parts[0], parts[1], sending))) {
		return Token{}, ErrForged
	}
	return Token{QueueID: strings.ToUpper(parts[0]), RcptHash: parts[1], Domain: sending}, nil
}
