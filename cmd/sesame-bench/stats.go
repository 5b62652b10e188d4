package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// samples, which must be sorted ascending: the smallest sample with at least
// p% of all samples at or below it. No interpolation, so every reported
// figure is a latency that was really observed. Zero for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// p*n before the division keeps whole ranks exact (99*100/100 = 99).
	rank := int(math.Ceil(p * float64(n) / 100))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// latencySummary is the exact distribution of a set of latency samples.
type latencySummary struct {
	Count              int
	P50, P90, P99, Max time.Duration
}

// summarize sorts samples in place and reads the percentiles off them.
func summarize(samples []time.Duration) latencySummary {
	slices.Sort(samples)
	s := latencySummary{
		Count: len(samples),
		P50:   percentile(samples, 50),
		P90:   percentile(samples, 90),
		P99:   percentile(samples, 99),
	}
	if len(samples) > 0 {
		s.Max = samples[len(samples)-1]
	}
	return s
}

// ms converts to milliseconds with microsecond resolution, the unit of every
// latency in the JSON reports.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// perSecond is count/elapsed rounded to 0.1, zero when nothing elapsed.
func perSecond(count int, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return math.Round(float64(count)/elapsed.Seconds()*10) / 10
}

// sendReport is the result of one send run. The JSON field names are a
// contract with the scripts that collect benchmark figures.
type sendReport struct {
	Scenario              string         `json:"scenario"`
	RunID                 string         `json:"run_id"`
	Connections           int            `json:"connections"`
	MessagesPerConnection int            `json:"messages_per_connection"`
	Size                  int            `json:"size"`
	Recipients            int            `json:"recipients"`
	Accepted              int            `json:"accepted"`
	Errors                map[string]int `json:"errors"`
	Seconds               float64        `json:"seconds"`
	MsgsPerSec            float64        `json:"msgs_per_sec"`
	P50ms                 float64        `json:"p50_ms"`
	P90ms                 float64        `json:"p90_ms"`
	P99ms                 float64        `json:"p99_ms"`
	MaxMs                 float64        `json:"max_ms"`
	// Sessions is how many SMTP sessions (TCP+TLS+AUTH) were set up, with
	// the setup latency: the cost --new-connection pays per message.
	Sessions     int               `json:"sessions"`
	SessionP50ms float64           `json:"session_p50_ms"`
	SessionP99ms float64           `json:"session_p99_ms"`
	ErrorSamples map[string]string `json:"-"`
}

// writeJSON writes the report as one line that starts with '{'.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// writeTable writes the report for a person to read.
func (r *sendReport) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\t%s (run %s)\n", r.Scenario, r.RunID)
	fmt.Fprintf(tw, "load\t%d connections x %d messages, %d bytes, %d recipient(s)\n",
		r.Connections, r.MessagesPerConnection, r.Size, r.Recipients)
	fmt.Fprintf(tw, "accepted\t%d\n", r.Accepted)
	fmt.Fprintf(tw, "errors\t%s\n", formatErrors(r.Errors))
	for _, k := range sortedKeys(r.ErrorSamples) {
		fmt.Fprintf(tw, "  %s\te.g. %s\n", k, r.ErrorSamples[k])
	}
	fmt.Fprintf(tw, "elapsed\t%.3f s\n", r.Seconds)
	fmt.Fprintf(tw, "throughput\t%.1f msg/s\n", r.MsgsPerSec)
	fmt.Fprintf(tw, "latency ms (MAIL..DATA)\tp50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
		r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	fmt.Fprintf(tw, "session setup ms\tp50 %.3f  p99 %.3f  (%d sessions)\n",
		r.SessionP50ms, r.SessionP99ms, r.Sessions)
	return tw.Flush()
}

func formatErrors(errs map[string]int) string {
	if len(errs) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range sortedKeys(errs) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, errs[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
