package account

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for new hashes: OWASP's minimum (19 MiB, 2 passes, 1
// lane), which costs tens of milliseconds per login on one core.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	saltLen      = 16
	keyLen       = 32
)

// Bounds on parameters read from a stored hash, so that a corrupt or hostile
// row cannot make a login allocate gigabytes or spin for minutes.
const (
	maxMemory  = 1 << 20 // KiB, 1 GiB
	maxTime    = 64
	minSaltLen = 8 // PHC minimum; the reference test vectors use 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

const (
	phcArgon2id      = "argon2id"
	usernamePrefix   = "SM"
	usernameLen      = 20
	usernameAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	passwordBytes    = 32
)

// errMalformedHash is wrapped by CheckPassword for any hash it cannot parse.
var errMalformedHash = errors.New("malformed password hash")

// NewUsername returns a new random SMTP username like SES's: 20 characters,
// upper-case letters and digits, starting with "SM".
func NewUsername() string {
	b := make([]byte, 0, usernameLen)
	b = append(b, usernamePrefix...)
	// Rejection sampling keeps every character uniform: 252 is the largest
	// multiple of 36 that fits in a byte.
	const limit = 256 - 256%len(usernameAlphabet)
	var buf [32]byte
	for len(b) < usernameLen {
		rand.Read(buf[:]) // never returns an error since Go 1.24
		for _, c := range buf {
			if int(c) >= limit {
				continue
			}
			b = append(b, usernameAlphabet[int(c)%len(usernameAlphabet)])
			if len(b) == usernameLen {
				break
			}
		}
	}
	return string(b)
}

// NewPassword returns a new random password: 32 bytes from crypto/rand in
// unpadded URL-safe base64 (43 characters).
func NewPassword() string {
	for {
		var b [passwordBytes]byte
		rand.Read(b[:]) // never returns an error since Go 1.24
		p := base64.RawURLEncoding.EncodeToString(b[:])
		// A leading '-' makes command-line clients (swaks) take the
		// password for an option; one draw in 64 needs another.
		if p[0] != '-' {
			return p
		}
	}
}

// HashPassword returns an argon2id PHC string for password with a new random
// salt.
func HashPassword(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("account: read salt: %w", err)
	}
	return hashWith(password, salt, argonParams{memory: argonMemory, time: argonTime, threads: argonThreads, keyLen: keyLen}), nil
}

// CheckPassword reports whether password matches hash, a PHC string made by
// HashPassword (or any argon2id v=19 PHC string within sane bounds). It
// returns an error only when hash is malformed.
func CheckPassword(hash, password string) (bool, error) {
	p, salt, key, err := parsePHC(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, p.keyLen)
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

type argonParams struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	keyLen  uint32
}

func hashWith(password string, salt []byte, p argonParams) string {
	key := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, p.keyLen)
	return fmt.Sprintf("$%s$v=%d$m=%d,t=%d,p=%d$%s$%s",
		phcArgon2id, argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt),
		base64.RawStdEncoding.EncodeToString(key))
}

// parsePHC parses "$argon2id$v=19$m=M,t=T,p=P$salt$key". The error never
// quotes the hash, which is secret-adjacent and may end up in a log.
func parsePHC(s string) (argonParams, []byte, []byte, error) {
	var p argonParams
	fail := func(why string) (argonParams, []byte, []byte, error) {
		return argonParams{}, nil, nil, fmt.Errorf("account: %w: %s", errMalformedHash, why)
	}
	fields := strings.Split(s, "$")
	if len(fields) != 6 || fields[0] != "" {
		return fail("want 5 $-separated fields")
	}
	if fields[1] != phcArgon2id {
		return fail("algorithm is not argon2id")
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return fail("unsupported argon2 version")
	}
	params := strings.Split(fields[3], ",")
	if len(params) != 3 {
		return fail("want parameters m, t and p")
	}
	m, err1 := parseParam(params[0], "m=", 32)
	t, err2 := parseParam(params[1], "t=", 32)
	th, err3 := parseParam(params[2], "p=", 8)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fail(err.Error())
	}
	p = argonParams{memory: uint32(m), time: uint32(t), threads: uint8(th)}
	switch {
	case p.time < 1 || p.time > maxTime:
		return fail("t out of range")
	case p.threads < 1:
		return fail("p out of range")
	case p.memory < 8*uint32(p.threads) || p.memory > maxMemory:
		return fail("m out of range")
	}
	salt, err := base64.RawStdEncoding.DecodeString(fields[4])
	if err != nil {
		return fail("salt is not base64")
	}
	if len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return fail("salt length out of range")
	}
	key, err := base64.RawStdEncoding.DecodeString(fields[5])
	if err != nil {
		return fail("key is not base64")
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return fail("key length out of range")
	}
	p.keyLen = uint32(len(key))
	return p, salt, key, nil
}

// parseParam parses one "name=decimal" parameter.
func parseParam(s, prefix string, bits int) (uint64, error) {
	v, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0, fmt.Errorf("want parameter %q", strings.TrimSuffix(prefix, "="))
	}
	// PHC forbids leading zeros; refusing them keeps one encoding per hash.
	if len(v) > 1 && v[0] == '0' {
		return 0, fmt.Errorf("leading zero in %q", strings.TrimSuffix(prefix, "="))
	}
	n, err := strconv.ParseUint(v, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("bad %q value", strings.TrimSuffix(prefix, "="))
	}
	return n, nil
}
