package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func seq(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", durations(7), 50, 7 * time.Millisecond},
		{"single p99", durations(7), 99, 7 * time.Millisecond},
		{"four p50 is the 2nd", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"four p90 is the 4th", durations(1, 2, 3, 4), 90, 4 * time.Millisecond},
		{"ten p90 is the 9th", seq(10), 90, 9 * time.Millisecond},
		{"ten p99 is the 10th", seq(10), 99, 10 * time.Millisecond},
		{"hundred p50", seq(100), 50, 50 * time.Millisecond},
		{"hundred p99", seq(100), 99, 99 * time.Millisecond},
		{"hundred p100", seq(100), 100, 100 * time.Millisecond},
		{"thousand p99", seq(1000), 99, 990 * time.Millisecond},
		{"thousand p99.9", seq(1000), 99.9, 999 * time.Millisecond},
		{"tiny p rounds up to the first", seq(10), 0.001, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(%d samples, %v) = %v, want %v", len(tt.samples), tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeSortsAndFindsMax(t *testing.T) {
	s := summarize(durations(9, 1, 5, 3, 7, 2, 8, 4, 6, 10))
	want := latencySummary{Count: 10, P50: 5 * time.Millisecond, P90: 9 * time.Millisecond,
		P99: 10 * time.Millisecond, Max: 10 * time.Millisecond}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
}

func TestMsAndRate(t *testing.T) {
	if got := ms(1234567 * time.Nanosecond); got != 1.235 {
		t.Errorf("ms(1.234567ms) = %v, want 1.235", got)
	}
	if got := perSecond(300, 2*time.Second); got != 150 {
		t.Errorf("perSecond(300, 2s) = %v, want 150", got)
	}
	if got := perSecond(5, 0); got != 0 {
		t.Errorf("perSecond(5, 0) = %v, want 0", got)
	}
}

func TestReportOutput(t *testing.T) {
	rep := sendReport{Scenario: "persistent-starttls-plain", RunID: "abc", Connections: 2,
		MessagesPerConnection: 3, Size: 100, Recipients: 1, Accepted: 5,
		Errors: map[string]int{"451": 1}, ErrorSamples: map[string]string{"451": "MAIL: busy"}}
	var buf bytes.Buffer
	if err := rep.writeTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"persistent-starttls-plain", "451=1", "MAIL: busy"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	if err := writeJSON(&buf, rep); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if !strings.HasPrefix(line, "{") || strings.Count(line, "\n") != 1 {
		t.Fatalf("JSON output is not one line starting with '{': %q", line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["ErrorSamples"]; ok {
		t.Error("error samples leaked into the JSON line")
	}
}
