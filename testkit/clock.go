package testkit

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// ClockShiftVar names the environment variable that moves the start of
// every test clock by a Go duration ("8760h" a year on, "-8760h" a year
// back). A test that mixes the test clock with the wall clock (a component
// that reads time.Now while the test's clock says another time) then fails
// instead of passing until the calendar catches up with it; scripts/test.sh
// runs the packages that use the clock once more with a shift of a year.
const ClockShiftVar = "SESAME_TEST_CLOCK_SHIFT"

// startHour is the test clocks' time of day, UTC: hours from either end of
// the day, so an hour or two of advancing stays on the same date.
const startHour = 9

var (
	startOnce sync.Once
	start     time.Time
	startErr  error
)

// Start is when every test clock starts: 09:00 UTC on the day the test
// binary first asked (from the wall clock), moved by SESAME_TEST_CLOCK_SHIFT.
// It is the same for the whole run, so a run that crosses midnight does not
// see two dates. A shift that is not whole days also moves the time of day;
// a test that needs a particular time of day starts from Day instead.
func Start(tb testing.TB) time.Time {
	tb.Helper()
	startOnce.Do(func() {
		start, startErr = startAt(time.Now(), os.Getenv(ClockShiftVar))
	})
	if startErr != nil {
		tb.Fatal(startErr)
	}
	return start
}

// startAt is Start for the wall-clock time now and the variable's value.
func startAt(now time.Time, shift string) (time.Time, error) {
	var d time.Duration
	if shift != "" {
		var err error
		if d, err = time.ParseDuration(shift); err != nil {
			return time.Time{}, fmt.Errorf("testkit: %s=%q is not a Go duration; set it to one such as 8760h or -8760h, or unset it: %w", ClockShiftVar, shift, err)
		}
	}
	return now.UTC().Truncate(24 * time.Hour).Add(startHour*time.Hour + d), nil
}

// Day is midnight UTC at the start of Start's date, for a test that needs a
// particular time of day or calendar date: Day(t).Add(23*time.Hour +
// 30*time.Minute) is half past eleven at night on the test clocks' date.
func Day(tb testing.TB) time.Time {
	tb.Helper()
	return Start(tb).Truncate(24 * time.Hour)
}

// Clock is a clock that moves only when the test moves it. It is safe for
// concurrent use: the component under test reads it from its goroutines
// while the test advances it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at Start. Hand its Now method to the component
// under test, and use the same clock for every time the test makes up
// (a message's received time, a domain's creation), never time.Now.
func NewClock(tb testing.TB) *Clock {
	tb.Helper()
	c := &Clock{t: Start(tb)}
	if s := os.Getenv(ClockShiftVar); s != "" {
		tb.Logf("the test clock starts at %s (%s=%s)", c.t.Format(time.RFC3339), ClockShiftVar, s)
	}
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d (back, if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
