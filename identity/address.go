package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sesame-mail/sesame/store"
	"golang.org/x/net/idna"
)

// Errors of Lookup and Confirm, for errors.Is.
var (
	// ErrUnknownToken: no address has this verification token, or its link
	// was already used.
	ErrUnknownToken = errors.New("identity: unknown or already used verification link")
	// ErrTokenExpired: the link is older than AddressLinkTTL.
	ErrTokenExpired = errors.New("identity: verification link expired")
	// ErrAlreadyVerified: Add was asked for an address that is verified.
	ErrAlreadyVerified = errors.New("identity: address already verified")
)

// tokenBytes is the entropy of a verification token: 256 bits, far beyond
// guessing, so the token alone may authorize the confirmation.
const tokenBytes = 32

// AddressStore is what the AddressVerifier reads and writes.
type AddressStore interface {
	CreateAddress(ctx context.Context, a store.Address) error
	Address(ctx context.Context, address string) (store.Address, error)
	AddressByToken(ctx context.Context, tokenHash string) (store.Address, error)
	DeleteAddress(ctx context.Context, address string) error
	SetAddressToken(ctx context.Context, address, tokenHash string, expires time.Time) error
	VerifyAddress(ctx context.Context, address string, at time.Time) error
	SetAddressDMARC(ctx context.Context, address, policy string, checked time.Time) error
	SetAddressForced(ctx context.Context, address string, forced bool) error
}

// Enqueuer queues a message durably for delivery.
type Enqueuer interface {
	Enqueue(ctx context.Context, m *store.Message) error
}

// AddressVerifier proves addresses by mail: it sends a link to the address,
// and whoever can read that mail confirms on the page the link opens.
//
// Only the SHA-256 of a token is stored, so a copy of the database does not
// let anyone confirm a pending address.
type AddressVerifier struct {
	cfg   Config
	addrs AddressStore
	queue Enqueuer
	log   *slog.Logger
}

// NewAddressVerifier returns an AddressVerifier that keeps addresses in
// addrs and queues the verification messages on queue.
func NewAddressVerifier(cfg Config, addrs AddressStore, queue Enqueuer) *AddressVerifier {
	cfg = cfg.withDefaults()
	return &AddressVerifier{cfg: cfg, addrs: addrs, queue: queue, log: cfg.Logger}
}

// Add creates a pending address identity, or gives an unverified one a new
// link (the old one stops working), and queues the verification message to
// it. An address that is verified already is an ErrAlreadyVerified error.
// Add returns the stored address and the link; the link is for tests, since
// showing it to anyone but the address's reader defeats the proof.
func (a *AddressVerifier) Add(ctx context.Context, address string) (store.Address, string, error) {
	addr, err := normalizeAddress(address)
	if err != nil {
		return store.Address{}, "", err
	}
	token, hash, err := newToken()
	if err != nil {
		return store.Address{}, "", err
	}
	now := a.cfg.Now()
	expires := now.Add(a.cfg.AddressLinkTTL)
	stored, err := a.setToken(ctx, addr, hash, now, expires)
	if err != nil {
		return store.Address{}, "", err
	}
	link := a.cfg.PublicURL + "/verify/" + token
	m := a.message(addr, link, now, expires)
	if a.cfg.SystemSigner != nil {
		m.Data = a.cfg.SystemSigner.Sign(ctx, m.Data)
	}
	if err := a.queue.Enqueue(ctx, m); err != nil {
		return store.Address{}, "", fmt.Errorf("identity: queue the verification message to %s: %w; run sesame address add %s again", addr, err, addr)
	}
	a.log.Info("verification link sent", "address", addr, "queue_id", m.ID, "expires", expires)
	return stored, link, nil
}

// setToken stores the token hash on a new or existing unverified address.
func (a *AddressVerifier) setToken(ctx context.Context, addr, hash string, now, expires time.Time) (store.Address, error) {
	// Twice at most: an address created by someone else between our
	// lookup and our insert is then found.
	for range 2 {
		cur, err := a.addrs.Address(ctx, addr)
		switch {
		case err == nil && cur.Status == store.IdentityVerified:
			return store.Address{}, fmt.Errorf("identity: %s is verified already and may be used as a sender; nothing to do: %w", addr, ErrAlreadyVerified)
		case err == nil:
			if err := a.addrs.SetAddressToken(ctx, addr, hash, expires); err != nil {
				return store.Address{}, fmt.Errorf("identity: new link for %s: %w", addr, err)
			}
			cur.Status, cur.TokenHash, cur.TokenExpires = store.IdentityPending, hash, expires
			return cur, nil
		case !errors.Is(err, store.ErrNotFound):
			return store.Address{}, fmt.Errorf("identity: add %s: %w", addr, err)
		}
		n := store.Address{Address: addr, Status: store.IdentityPending, TokenHash: hash, TokenExpires: expires, CreatedAt: now}
		err = a.addrs.CreateAddress(ctx, n)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return store.Address{}, fmt.Errorf("identity: add %s: %w", addr, err)
		}
	}
	return store.Address{}, fmt.Errorf("identity: add %s: it is being added by someone else at the same time; try again", addr)
}

// message is the verification mail: from the null sender, so that a bounce
// of it does not loop back (RFC 5321 §4.5.5), and marked auto-generated
// (RFC 3834 §5) so that vacation responders keep quiet.
func (a *AddressVerifier) message(addr, link string, now, expires time.Time) *store.Message {
	id := store.NewQueueID()
	msgID := "<" + id + "@" + a.cfg.Hostname + ">"
	body := fmt.Sprintf(`Someone asked Sesame, the mail relay at %s, to let its users send mail
as %s. If that was you or your mail administrator, open this link
and press the button on the page to confirm:

  %s

The link works once, until %s.

If you did not expect this message, ignore it: nothing happens unless
the link is confirmed, and Sesame will not send as %s.
`, a.cfg.Hostname, addr, link, expires.UTC().Format("Mon, 2 Jan 2006 15:04 MST"), addr)
	cte := "7bit"
	if !isASCII(addr) {
		cte = "8bit"
	}
	var b strings.Builder
	header := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	header("Date", now.Format(time.RFC1123Z))
	header("From", "Sesame <no-reply@"+a.cfg.Hostname+">")
	header("To", "<"+addr+">")
	header("Subject", mime.QEncoding.Encode("utf-8", "Confirm that Sesame may send as "+addr))
	header("Message-ID", msgID)
	header("Auto-Submitted", "auto-generated")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", cte)
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	return &store.Message{
		ID:         id,
		Sender:     "",
		Recipients: []string{addr},
		MessageID:  msgID,
		ReceivedAt: now,
		Data:       []byte(b.String()),
	}
}

// Lookup returns the pending address whose link token is: ErrUnknownToken
// when no address has it (or it was used), ErrTokenExpired (with the
// address) when it is too old. It changes nothing, so a mail filter that
// fetches links does not verify by accident.
func (a *AddressVerifier) Lookup(ctx context.Context, token string) (store.Address, error) {
	hash, ok := hashToken(token)
	if !ok {
		return store.Address{}, ErrUnknownToken
	}
	addr, err := a.addrs.AddressByToken(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return store.Address{}, ErrUnknownToken
	}
	if err != nil {
		return store.Address{}, fmt.Errorf("identity: look up verification link: %w", err)
	}
	if addr.Status == store.IdentityVerified {
		return store.Address{}, ErrUnknownToken
	}
	if !a.cfg.Now().Before(addr.TokenExpires) {
		return addr, fmt.Errorf("identity: the verification link for %s expired at %s; send a new one with sesame address add %s: %w",
			addr.Address, addr.TokenExpires.UTC().Format(time.RFC3339), addr.Address, ErrTokenExpired)
	}
	return addr, nil
}

// Confirm marks the address of token verified. The token is forgotten, so
// a link works once.
func (a *AddressVerifier) Confirm(ctx context.Context, token string) (store.Address, error) {
	addr, err := a.Lookup(ctx, token)
	if err != nil {
		return addr, err
	}
	now := a.cfg.Now()
	err = a.addrs.VerifyAddress(ctx, addr.Address, now)
	if errors.Is(err, store.ErrNotFound) {
		return store.Address{}, ErrUnknownToken // deleted meanwhile
	}
	if err != nil {
		return store.Address{}, fmt.Errorf("identity: verify %s: %w", addr.Address, err)
	}
	addr.Status, addr.VerifiedAt, addr.TokenHash, addr.TokenExpires = store.IdentityVerified, now, "", time.Time{}
	return addr, nil
}

// newToken returns a new verification token (base64url, no padding, so it
// sits in a URL path as is) and the hash to store.
func newToken() (token, hash string, err error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("identity: make a verification token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	hash, _ = hashToken(token)
	return token, hash, nil
}

// hashToken returns the hex SHA-256 of token; false if token is not one
// newToken could have made, which spares the store the lookup.
func hashToken(token string) (string, bool) {
	if b, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(b) != tokenBytes {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]), true
}

// normalizeAddress checks an address an operator typed and returns it as
// stored: lower case, the domain as an A-label. Local parts are compared
// case-insensitively everywhere in Sesame, as nearly every mail system
// treats them.
func normalizeAddress(s string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("identity: %q is not an email address: %s; expected user@example.com", s, why)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return bad("it has no @")
	}
	local, domain := s[:at], s[at+1:]
	if local == "" || len(local) > 64 {
		return bad("the part before the @ must be 1 to 64 bytes") // RFC 5321 §4.5.3.1.1
	}
	if !utf8.ValidString(local) || strings.ContainsFunc(local, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`"\@<>()[],;:`, r)
	}) {
		return bad("the part before the @ has spaces, control characters or special characters")
	}
	ascii, ok := normalizeDomain(domain)
	if !ok || !strings.Contains(ascii, ".") {
		return bad("the part after the @ is not a domain name")
	}
	return strings.ToLower(local) + "@" + ascii, nil
}

// normalizeDomain returns the lower-case A-label form of domain, which must
// be a host name: labels of letters, digits and inner hyphens (RFC 1123
// §2.1).
func normalizeDomain(domain string) (string, bool) {
	d, err := idna.Lookup.ToASCII(strings.TrimSuffix(domain, "."))
	if err != nil || d == "" || len(d) > 253 {
		return "", false
	}
	// The A-label must decode again: idna maps some invalid input (bad
	// UTF-8, U+FFFD) to labels that do not.
	if _, err := idna.Lookup.ToUnicode(d); err != nil {
		return "", false
	}
	d = strings.ToLower(d)
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.ContainsFunc(label, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') }) {
			return "", false
		}
	}
	return d, true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
