package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"

	"github.com/sesame-mail/sesame/config"
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

// TestTuneGC checks the collector's settings: GOGC=400 and a soft memory
// limit with room for a message per relay worker, each unless the operator
// set it in the environment.
func TestTuneGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	defer func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	}()
	cfg := config.Default()

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	tuneGC(cfg)
	want := int64(256<<20 + 256<<20) // relay.memory_budget
	if got := debug.SetGCPercent(100); got != 400 {
		t.Errorf("GOGC = %d after tuneGC, want 400", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != want {
		t.Errorf("memory limit %d after tuneGC, want %d", got, want)
	}

	// relay.workers caps the relay's share when it allows fewer messages
	// of the largest size than relay.memory_budget holds.
	capped := config.Default()
	capped.Relay.Workers = 2
	tuneGC(capped)
	if got, want := debug.SetMemoryLimit(math.MaxInt64), int64(256<<20+2*40<<20); got != want {
		t.Errorf("memory limit %d after tuneGC with 2 workers, want %d", got, want)
	}
	debug.SetGCPercent(100)

	t.Setenv("GOGC", "100")
	t.Setenv("GOMEMLIMIT", "1GiB")
	tuneGC(cfg)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC = %d with GOGC set in the environment, want it left at 100", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d with GOMEMLIMIT set in the environment, want it left alone", got)
	}
}
