//go:build unix

package smtpd

import "syscall"

// allocLarge returns n zeroed bytes for a whole large message: mapped from
// the operating system, outside the Go heap, so that freeLarge gives them
// straight back. On the Go heap a freed buffer stays until a collection,
// and a collection that runs while others are being allocated counts
// those as live: with messages of 40 MB coming and going, the heap grew to
// six times the budget that was meant to bound it (1.6 GB for 256 MiB in
// test.TestLargeUploadsMemory), and the budget is only a bound if the
// memory it counts is the memory the process holds. mapped is false when
// the mapping failed and the bytes are from the heap after all.
func allocLarge(n int) (b []byte, mapped bool) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n), false
	}
	return b, true
}

// freeLarge unmaps b, from allocLarge. Nothing may use b afterwards: that
// is a crash, not a stale read.
func freeLarge(b []byte) { syscall.Munmap(b) }
