//go:build !unix

package smtpd

// allocLarge returns n bytes for a whole large message; bigbuf_unix.go
// says why it maps them from the operating system where it can.
func allocLarge(n int) (b []byte, mapped bool) { return make([]byte, n), false }

func freeLarge([]byte) {}
