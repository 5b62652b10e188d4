// Package dkim generates DKIM keys, renders the DNS TXT records an operator
// publishes for them, and signs outgoing messages (RFC 6376, RFC 8463) with
// github.com/emersion/go-msgauth/dkim.
//
// # Keys and selectors
//
// A domain has RSA-2048 keys, Ed25519 keys, or both; private keys are kept as
// PKCS #8 PEM. A new key's selector is "sesame-<alg>-<YYYYMMDD>" (UTC date of
// creation), e.g. "sesame-rsa-20261127" (NewSelector appends "-2", "-3"...
// when that name is taken), so an operator can tell keys apart in DNS and
// rotate by publishing a new selector next to the old one. Only active keys
// sign (Signing): a rotation's new key waits for its record, and the key it
// replaced stays published but signs no more (package identity runs
// rotations). RSA keys are 2048 bits unless a rotation asks for 3072 or
// 4096 (GenerateKeySize). When a
// domain has keys of both kinds, every message gets one signature per key:
// receivers that do not understand Ed25519 ignore that signature and use the
// RSA one (RFC 8463 section 5).
//
// # What is signed
//
// Canonicalization is relaxed/relaxed, asked for explicitly because
// go-msgauth defaults to simple/simple: relaxed survives the harmless
// rewrapping and whitespace changes relays make, and simple breaks on them.
// The hash is SHA-256; no l= (the whole body is signed), no i= and no x=.
//
// The signed header fields are those receivers show or act on: From, To,
// Cc, Reply-To, Sender, Subject, Date, Message-ID, In-Reply-To, References,
// MIME-Version, Content-Type, Content-Transfer-Encoding, List-Id,
// List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID, each listed in h=
// as often as it occurs in the message. From, List-Unsubscribe and
// List-Unsubscribe-Post are listed once more than they occur (over-signing,
// RFC 6376 section 8.15), present or not: the extra entry signs the absence
// of a further instance, so one prepended later by anyone makes the
// signature fail instead of letting a forged author, or a forged one-click
// unsubscribe URL that receivers POST to (RFC 8058 section 4), ride on it.
//
// Signing never changes the message: Signer.Sign returns only the
// DKIM-Signature header fields, which the caller prepends to the bytes it
// passed in. SystemSigner, for the mail Sesame writes itself (verification
// links, DSNs), returns the message with them prepended, or unsigned when
// the system domain has no keys.
package dkim

import "errors"

// ErrNoKeys is returned by NewSigner (and Cache.Signer) for a domain that has
// no DKIM keys.
var ErrNoKeys = errors.New("dkim: domain has no keys")
