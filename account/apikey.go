package account

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sesame-mail/sesame/store"
)

// Access keys of the SES-compatible API. AWS Signature Version 4 proves
// that the client holds the secret by an HMAC keyed with the secret itself,
// so the server needs the secret, not a hash of it: the store keeps it
// sealed with AES-256-GCM under a key kept in a file of its own in the data
// directory (mode 0600), so that a copy of the database alone (a backup, a
// dump) gives nobody the secrets.

const (
	// AccessKeyPrefix starts every access key id, as AWS's start with
	// "AKIA": an id is recognisable as Sesame's at a glance (in a leaked
	// config, say) and cannot be mistaken for an AWS one.
	AccessKeyPrefix = "SESA"
	accessKeyIDLen  = 20 // as AWS's
	secretBytes     = 30 // 40 characters of base64, as AWS's secrets
	sealKeySize     = 32 // AES-256
)

var keyIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewAccessKey returns a new access key id (20 characters: the prefix and
// 16 of base32) and secret (40 characters of base64).
func NewAccessKey() (id, secret string) {
	var b [10]byte
	rand.Read(b[:]) // never returns an error since Go 1.24
	id = AccessKeyPrefix + keyIDEncoding.EncodeToString(b[:])[:accessKeyIDLen-len(AccessKeyPrefix)]
	s := make([]byte, secretBytes)
	rand.Read(s)
	return id, base64.StdEncoding.EncodeToString(s)
}

// Sealer seals access key secrets for the store and opens them again.
type Sealer struct{ aead cipher.AEAD }

// LoadSealer reads the sealing key from path, making it (mode 0600) when
// the file does not exist yet.
func LoadSealer(path string) (*Sealer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = makeKeyFile(path); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("account: read the API key sealing key: %w (run the command as the user that runs sesame serve)", err)
	}
	if len(key) != sealKeySize {
		return nil, fmt.Errorf("account: the API key sealing key %s has %d bytes, want %d; restore it from a backup "+
			"(deleting it makes every API secret unreadable: each credential then needs \"sesame user keys NAME --rotate\")",
			path, len(key), sealKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// makeKeyFile writes a new key to path atomically: a temporary file,
// synced, then linked to path, which fails if another process made it
// meanwhile (then that one is read).
func makeKeyFile(path string) ([]byte, error) {
	key := make([]byte, sealKeySize)
	rand.Read(key)
	f, err := os.CreateTemp(filepath.Dir(path), ".sealkey-*")
	if err != nil {
		return nil, fmt.Errorf("account: make the API key sealing key: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("account: write the API key sealing key: %w", err)
	}
	if err := os.Link(f.Name(), path); errors.Is(err, os.ErrExist) {
		return os.ReadFile(path)
	} else if err != nil {
		return nil, fmt.Errorf("account: write the API key sealing key: %w", err)
	}
	return key, nil
}

// Seal returns secret sealed, bound to its access key id (a sealed secret
// moved to another id does not open).
func (s *Sealer) Seal(id, secret string) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, []byte(secret), []byte(id))
}

// Open returns the secret sealed for id.
func (s *Sealer) Open(id string, sealed []byte) (string, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("account: sealed API secret too short")
	}
	secret, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
	if err != nil {
		return "", fmt.Errorf("account: the API secret of %s does not open with this sealing key (was the key file replaced?): %w", id, err)
	}
	return string(secret), nil
}

// KeyLookup is what Keys needs from the store.
type KeyLookup interface {
	APIKey(ctx context.Context, id string) (store.APIKey, error)
	Credential(ctx context.Context, name string) (store.Credential, error)
}

// Keys finds the credential and secret of an access key, for the API's
// signature check.
type Keys struct {
	store  KeyLookup
	sealer *Sealer
}

// NewKeys returns Keys reading st and opening secrets with sealer.
func NewKeys(st KeyLookup, sealer *Sealer) *Keys { return &Keys{store: st, sealer: sealer} }

// Lookup returns the credential whose access key id is id and the secret,
// or ErrUnknownUsername when no credential has that id.
func (k *Keys) Lookup(ctx context.Context, id string) (store.Credential, string, error) {
	key, err := k.store.APIKey(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Credential{}, "", ErrUnknownUsername
	}
	if err != nil {
		return store.Credential{}, "", fmt.Errorf("account: look up access key: %w", err)
	}
	cred, err := k.store.Credential(ctx, key.Credential)
	if errors.Is(err, store.ErrNotFound) {
		return store.Credential{}, "", ErrUnknownUsername
	}
	if err != nil {
		return store.Credential{}, "", fmt.Errorf("account: look up credential of access key: %w", err)
	}
	secret, err := k.sealer.Open(id, key.SealedSecret)
	if err != nil {
		return store.Credential{}, "", err
	}
	return cred, secret, nil
}
