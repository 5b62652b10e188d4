package config

import "testing"

// The complaint thresholds are the mailbox providers' (Gmail and Yahoo,
// 2024): under 0.1% is healthy, 0.3% gets mail refused or junked.
func TestReputationDefaultsMatchProviders(t *testing.T) {
	r := Default().Reputation
	if r.ComplaintWarning != 0.001 || r.ComplaintPause != 0.003 {
		t.Errorf("complaint thresholds: warning %g, pause %g; want 0.001 and 0.003", r.ComplaintWarning, r.ComplaintPause)
	}
	if r.BounceWarning != 0.05 || r.BouncePause != 0.10 {
		t.Errorf("bounce thresholds: warning %g, pause %g; want SES's 0.05 and 0.10", r.BounceWarning, r.BouncePause)
	}
}
