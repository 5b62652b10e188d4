package dkim

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/sesame-mail/sesame/store"
)

// signedFields are the header fields Sesame signs, in h= order: the ones
// receivers show or act on (author, recipients, subject, threading), the
// MIME structure, and the list and feedback fields bulk-mail rules rest on
// (RFC 2369, RFC 2919, RFC 8058 section 4, Gmail's Feedback-ID). Read only.
//
// An over-signed field is listed in h= once more than it occurs (RFC 6376
// section 8.15), so one added after signing, above or below the signed ones,
// breaks the signature: From, whose forgery is what DKIM is for, and the
// one-click unsubscribe pair, which RFC 8058 section 4 requires to be signed
// and which receivers act on with an automatic POST.
var signedFields = [...]struct {
	name     string
	overSign bool
}{
	{"From", true}, {"To", false}, {"Cc", false}, {"Reply-To", false}, {"Sender", false},
	{"Subject", false}, {"Date", false}, {"Message-ID", false},
	{"In-Reply-To", false}, {"References", false},
	{"MIME-Version", false}, {"Content-Type", false}, {"Content-Transfer-Encoding", false},
	{"List-Id", false}, {"List-Unsubscribe", true}, {"List-Unsubscribe-Post", true},
	{"Feedback-ID", false},
}

// maxHeaderList bounds the h= tag: go-msgauth puts it on one line, and
// RFC 5322 section 2.1.1 caps a line at 998 characters. Only a message with
// dozens of copies of the same field comes near it.
const maxHeaderList = 980

// Signer signs messages for one domain with every key of that domain. It is
// immutable and safe for concurrent use.
type Signer struct {
	domain string
	keys   []signingKey
}

type signingKey struct {
	selector string
	key      crypto.Signer
}

// NewSigner parses keys and returns a Signer for domain that signs with all
// of them, in order. It fails if there are no keys (ErrNoKeys), if a key
// does not parse or does not match its Algorithm, or if two keys share a
// selector.
func NewSigner(domain string, keys []store.DKIMKey) (*Signer, error) {
	if !validName(domain) {
		return nil, fmt.Errorf("dkim: signer for %q: invalid domain name", domain)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("dkim: signer for %s: %w", domain, ErrNoKeys)
	}
	s := &Signer{domain: domain, keys: make([]signingKey, 0, len(keys))}
	for _, k := range keys {
		for _, prev := range s.keys {
			if strings.EqualFold(prev.selector, k.Selector) {
				return nil, fmt.Errorf("dkim: signer for %s: selector %s used twice", domain, k.Selector)
			}
		}
		priv, err := parseKey(k)
		if err != nil {
			return nil, fmt.Errorf("dkim: signer for %s: %w", domain, err)
		}
		s.keys = append(s.keys, signingKey{selector: k.Selector, key: priv})
	}
	return s, nil
}

// Domain returns the domain s signs for (the d= tag).
func (s *Signer) Domain() string { return s.domain }

// Sign returns the DKIM-Signature header fields for msg, one per key, each
// ending in CRLF. The caller prepends them to msg, which Sign does not
// modify. msg must be a complete message with CRLF line endings.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	names, terminated, err := headerKeys(msg)
	if err != nil {
		return nil, fmt.Errorf("dkim: sign %s: %w", s.domain, err)
	}
	out := make([]byte, 0, 512*len(s.keys))
	for _, k := range s.keys {
		sig, err := s.signOne(k, names, msg, terminated)
		if err != nil {
			return nil, fmt.Errorf("dkim: sign %s selector %s: %w", s.domain, k.selector, err)
		}
		out = append(out, sig...)
	}
	return out, nil
}

// signOne streams msg once through go-msgauth's signer for one key.
func (s *Signer) signOne(k signingKey, names []string, msg []byte, terminated bool) (string, error) {
	ds, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain:                 s.domain,
		Selector:               k.selector,
		Signer:                 k.key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             names,
	})
	if err != nil {
		return "", err
	}
	_, werr := ds.Write(msg)
	if werr == nil && !terminated {
		// A message that is all header and no body has no empty line, which
		// go-msgauth insists on; the body is empty either way, so supply it.
		_, werr = ds.Write([]byte("\r\n"))
	}
	// Close reports the signer's own error, which is the cause of any
	// write error, so it is checked first.
	if err := ds.Close(); err != nil {
		return "", err
	}
	if werr != nil {
		return "", werr
	}
	return ds.Signature(), nil
}

// headerKeys scans msg's header (up to the first empty line) and returns the
// h= list: each signed field as often as it occurs, the overSigned ones once
// more.
// terminated reports whether the header ends in an empty line; a header
// that runs to the end of msg without one is accepted only if msg ends in a
// line break.
//
// Field names are found the way go-msgauth finds them (lines split at LF
// with an optional CR before it; a line starting with SP or HTAB continues
// the previous field; the name is the text before the first colon, trimmed;
// names compared with strings.EqualFold), so the counts here match what
// go-msgauth picks when it hashes the fields.
func headerKeys(msg []byte) (names []string, terminated bool, err error) {
	if len(msg) == 0 {
		return nil, false, errors.New("empty message")
	}
	var counts [len(signedFields)]int
	seenField := false
	rest := msg
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return nil, false, errors.New("header does not end in a line break")
		}
		line := rest[:i]
		rest = rest[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			terminated = true
			break
		}
		if seenField && (line[0] == ' ' || line[0] == '\t') {
			continue // folded continuation of the previous field
		}
		seenField = true
		name := line
		if c := bytes.IndexByte(line, ':'); c >= 0 {
			name = line[:c]
		}
		if f := fieldIndex(bytes.TrimSpace(name)); f >= 0 {
			counts[f]++
		}
	}
	for f := range signedFields {
		if signedFields[f].overSign {
			counts[f]++
		}
	}
	size, total := 0, 0
	for f, n := range counts {
		size += n * (len(signedFields[f].name) + 1)
		total += n
	}
	if size > maxHeaderList {
		return nil, false, fmt.Errorf("too many header fields to sign (h= would be %d bytes, limit %d)", size, maxHeaderList)
	}
	names = make([]string, 0, total)
	for f, n := range counts {
		for range n {
			names = append(names, signedFields[f].name)
		}
	}
	return names, terminated, nil
}

// fieldIndex returns the index in signedFields of the field called name, or
// -1. Header names are ASCII in practice, so that case is compared without
// Unicode folding; anything else gets the strings.EqualFold go-msgauth uses.
func fieldIndex(name []byte) int {
	ascii := true
	for _, c := range name {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	for i := range signedFields {
		f := signedFields[i].name
		if ascii {
			if asciiEqualFold(name, f) {
				return i
			}
		} else if strings.EqualFold(string(name), f) {
			return i
		}
	}
	return -1
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
