package warmup

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

func TestDefaultSchedule(t *testing.T) {
	d := DefaultDaily
	if len(d) < 28 || len(d) > 42 {
		t.Errorf("the default schedule lasts %d days, want 4 to 6 weeks", len(d))
	}
	if d[0] < 10 || d[0] > 99 {
		t.Errorf("day 1 cap %d, want tens of messages", d[0])
	}
	for i := 1; i < len(d); i++ {
		if f := float64(d[i]) / float64(d[i-1]); f < 1.1 || f > 2.05 {
			t.Errorf("day %d → %d grows by %.2f, want 1.1 to 2", i, i+1, f)
		}
	}
	s := Schedule{Daily: d, SpreadHours: DefaultSpreadHours}
	if daily, hourly, limited := s.Caps(1); !limited || daily != 50 || hourly != 5 {
		t.Errorf("day 1 caps %d/%d %v, want 50 a day, 5 an hour", daily, hourly, limited)
	}
	if _, _, limited := s.Caps(len(d) + 1); limited {
		t.Errorf("day %d still limited, want warm", len(d)+1)
	}
	if daily, _, limited := s.Caps(-1); !limited || daily != 0 {
		t.Errorf("before the start: %d %v, want a cap of 0", daily, limited)
	}
}

func TestDay(t *testing.T) {
	// The warm-up counts in UTC days: the tests start from a midnight.
	day1 := testkit.Day(t)
	ip := IP{Start: day1}
	for _, c := range []struct {
		at   time.Time
		want int
	}{
		{day1.Add(time.Minute), 1},
		{day1.Add(23*time.Hour + 59*time.Minute), 1},
		{day1.Add(24 * time.Hour), 2},
		{day1.Add(29*24*time.Hour + time.Hour), 30},
		{day1.Add(-time.Hour), -1},
	} {
		if got := ip.Day(c.at); got != c.want {
			t.Errorf("Day(%s) = %d, want %d", c.at, got, c.want)
		}
	}
	if (IP{}).Day(day1) != 0 {
		t.Error("a warm IP has a warm-up day")
	}
}

func TestClassify(t *testing.T) {
	p := DefaultProviders()
	for _, c := range []struct {
		hosts []string
		want  string
	}{
		{[]string{"gmail-smtp-in.l.google.com."}, "google"},
		{[]string{"ASPMX.L.GOOGLE.COM"}, "google"},
		{[]string{"example-com.mail.protection.outlook.com"}, "microsoft"},
		{[]string{"mx-aol.mail.gm0.yahoodns.net"}, "yahoo"},
		{[]string{"mx01.mail.icloud.com"}, "apple"},
		{[]string{"mx.example.net", "alt1.aspmx.l.google.com"}, "google"},
		{[]string{"mx.notgoogle.com"}, OtherProvider},
		{nil, OtherProvider},
	} {
		if got := Classify(p, c.hosts); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.hosts, got, c.want)
		}
	}
}

func TestIsThrottle(t *testing.T) {
	for _, c := range []struct {
		code         int
		status, text string
		want         bool
	}{
		{421, "4.7.0", "Try again later, closing connection", true},
		{451, "4.7.28", "unusual rate of unsolicited mail", true},
		{451, "4.7.650", "The mail server has been temporarily rate limited", true},
		{421, "4.7.0", "[TSS04] Messages temporarily deferred due to unexpected volume", true},
		{450, "4.2.1", "The user you are trying to contact is receiving mail too quickly", false},
		{450, "4.2.1", "receiving mail at a rate that prevents additional messages; please try again later", true},
		{452, "4.2.2", "mailbox full", false},
		{550, "5.7.1", "rate limited", false},
	} {
		if got := IsThrottle(c.code, c.status, c.text); got != c.want {
			t.Errorf("IsThrottle(%d %s %q) = %v, want %v", c.code, c.status, c.text, got, c.want)
		}
	}
}

func TestAcquireOpensAndBackoff(t *testing.T) {
	day1 := testkit.Day(t)
	a := IP{Addr: netip.MustParseAddr("192.0.2.1"), Pool: DefaultPool, Start: day1}
	l := NewLimiter(Config{IPs: []IP{a}, Schedule: Schedule{Daily: []int{6, 12}, SpreadHours: 2},
		Providers: []Provider{{Name: "google", MX: []string{"google.com"}, WarmupHourly: 2}},
		Backoff:   10 * time.Minute, BackoffMax: 30 * time.Minute})
	now := day1.Add(9*time.Hour + 30*time.Minute)
	g, _ := l.Acquire(DefaultPool, "google", 5, nil, now)
	if g.Count != 2 {
		t.Fatalf("granted %d to google, want its warm-up cap of 2", g.Count)
	}
	if g, w := l.Acquire(DefaultPool, "google", 1, nil, now); g.Count != 0 || !w.Until.Equal(day1.Add(10*time.Hour)) {
		t.Errorf("google again: %d, wait until %s; want none until 10:00", g.Count, w.Until)
	}
	if g, _ := l.Acquire(DefaultPool, OtherProvider, 5, nil, now); g.Count != 1 {
		t.Errorf("other: %d, want the hour's last 1 (3 an hour)", g.Count)
	}
	if got := l.Opens(DefaultPool, OtherProvider, now); !got.Equal(day1.Add(10 * time.Hour)) {
		t.Errorf("other opens at %s, want 10:00", got)
	}
	l.Refund(g, 2)
	if n := l.Available(DefaultPool, OtherProvider, now); n != 2 {
		t.Errorf("after a refund of 2: %d available, want 2", n)
	}
	// The day's 6 used: the next window is tomorrow.
	l.Acquire(DefaultPool, OtherProvider, 2, nil, now)
	l.Acquire(DefaultPool, OtherProvider, 3, nil, day1.Add(10*time.Hour))
	if got := l.Opens(DefaultPool, OtherProvider, day1.Add(10*time.Hour)); !got.Equal(day1.Add(24 * time.Hour)) {
		t.Errorf("after the day's cap: opens at %s, want midnight", got)
	}
	// No IPv6 address in the pool: waiting cannot help.
	if _, w := l.Acquire(DefaultPool, OtherProvider, 1, netip.Addr.Is6, now); !w.NoIP {
		t.Errorf("IPv6 destination: %+v, want NoIP", w)
	}

	// Throttling: 10m, 20m, 30m (the cap), and back to 10m after a delivery.
	at := day1.Add(30 * 24 * time.Hour)
	for i, want := range []time.Duration{10, 20, 30, 30} {
		x := l.Throttled(a, "google", "421 4.7.0 slow down", at)
		if x.Until.Sub(at) != want*time.Minute || x.Level != i+1 {
			t.Errorf("throttle %d: %s (level %d), want %dm", i+1, x.Until.Sub(at), x.Level, want)
		}
		if again := l.Throttled(a, "google", "421", at.Add(time.Second)); again != x {
			t.Error("a second reply during the suspension extended it")
		}
		if g, _ := l.Acquire(DefaultPool, "google", 1, nil, at); g.Count != 0 {
			t.Error("granted during a suspension")
		}
		at = x.Until
	}
	if !l.Delivered(a, "google", at) {
		t.Error("a delivery after the suspension did not end the streak")
	}
	if x := l.Throttled(a, "google", "421", at); x.Level != 1 {
		t.Errorf("after a delivery: level %d, want 1", x.Level)
	}
}

func TestLoadCountsOnlyToday(t *testing.T) {
	day1 := testkit.Day(t)
	a := IP{Addr: netip.MustParseAddr("192.0.2.1"), Pool: DefaultPool, Start: day1}
	l := NewLimiter(Config{IPs: []IP{a}, Schedule: Schedule{Daily: []int{100, 100}, SpreadHours: 10}})
	now := day1.Add(24*time.Hour + 5*time.Hour + 10*time.Minute)
	l.Load(now, []store.IPSend{
		{IP: "192.0.2.1", Provider: "other", Hour: day1.Add(23 * time.Hour), Count: 50}, // yesterday
		{IP: "192.0.2.1", Provider: "other", Hour: now.Truncate(time.Hour).Add(-time.Hour), Count: 7},
		{IP: "192.0.2.1", Provider: "google", Hour: now.Truncate(time.Hour), Count: 3},
		{IP: "192.0.2.9", Provider: "other", Hour: now.Truncate(time.Hour), Count: 99}, // not configured
	}, nil, []store.IPPause{{IP: "192.0.2.1", At: now}})
	st := l.Status(now)[0]
	if st.SentToday != 10 || st.SentHour != 3 || !st.Paused || st.Day != 2 {
		t.Errorf("status %+v, want 10 today, 3 this hour, paused, day 2", st)
	}
	if g, w := l.Acquire(DefaultPool, OtherProvider, 1, nil, now); g.Count != 0 || !w.Until.IsZero() {
		t.Errorf("paused IP: granted %d, wait %+v; want nothing until resumed", g.Count, w)
	}
	l.SetPauses(nil)
	if g, _ := l.Acquire(DefaultPool, OtherProvider, 20, nil, now); g.Count != 7 {
		t.Errorf("granted %d, want the hour's remaining 7 of 10", g.Count)
	}
}
