package testkit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStartAt(t *testing.T) {
	// 23:59 in UTC+2 is 21:59 UTC: the clocks start on the UTC date.
	now := time.Date(2031, 2, 28, 23, 59, 0, 0, time.FixedZone("EET", 2*3600))
	for _, c := range []struct {
		shift string
		want  time.Time
	}{
		{"", time.Date(2031, 2, 28, 9, 0, 0, 0, time.UTC)},
		{"8760h", time.Date(2032, 2, 28, 9, 0, 0, 0, time.UTC)},
		{"-8760h", time.Date(2030, 2, 28, 9, 0, 0, 0, time.UTC)},
		{"24h", time.Date(2031, 3, 1, 9, 0, 0, 0, time.UTC)},
		{"14h30m", time.Date(2031, 2, 28, 23, 30, 0, 0, time.UTC)},
	} {
		got, err := startAt(now, c.shift)
		if err != nil || !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("startAt(%s, %q) = %v, %v; want %v", now, c.shift, got, err, c.want)
		}
	}
	if _, err := startAt(now, "a year"); err == nil || !strings.Contains(err.Error(), ClockShiftVar+`="a year" is not a Go duration`) {
		t.Errorf("a bad shift: %v", err)
	}
}

func TestStartAndDay(t *testing.T) {
	s, d := Start(t), Day(t)
	if !s.Equal(Start(t)) {
		t.Error("Start moved within a run")
	}
	if !d.Equal(s.Truncate(24*time.Hour)) || d.Hour() != 0 || d.Minute() != 0 || s.Sub(d) >= 24*time.Hour {
		t.Errorf("Day %v is not the midnight before Start %v", d, s)
	}
}

func TestClock(t *testing.T) {
	c := NewClock(t)
	if !c.Now().Equal(Start(t)) {
		t.Errorf("a new clock says %v, want Start %v", c.Now(), Start(t))
	}
	c.Advance(90 * time.Minute)
	if got := c.Now().Sub(Start(t)); got != 90*time.Minute {
		t.Errorf("advanced by 90m: %v after Start", got)
	}
	at := Day(t).Add(23*time.Hour + 30*time.Minute)
	c.Set(at)
	if !c.Now().Equal(at) {
		t.Errorf("Set(%v): Now %v", at, c.Now())
	}
	// Read and moved from several goroutines (go test -race checks it).
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Second)
				c.Now()
			}
		})
	}
	wg.Wait()
	if got := c.Now().Sub(at); got != 400*time.Second {
		t.Errorf("400 concurrent advances of 1s moved the clock %v", got)
	}
}
