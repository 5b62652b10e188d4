package main

import (
	"runtime"
	"strconv"
	"testing"
)

// TestTuneProcs checks that serve runs four Go processors per CPU unless
// the operator set GOMAXPROCS.
func TestTuneProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)

	t.Setenv("GOMAXPROCS", "")
	tuneProcs()
	if got := runtime.GOMAXPROCS(0); got != procsPerCPU*before {
		t.Errorf("GOMAXPROCS = %d after tuneProcs, want %d", got, procsPerCPU*before)
	}

	runtime.GOMAXPROCS(before)
	t.Setenv("GOMAXPROCS", strconv.Itoa(before))
	tuneProcs()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS = %d with GOMAXPROCS set in the environment, want it left at %d", got, before)
	}
}
