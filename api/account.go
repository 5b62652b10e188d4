package api

import (
	"net/http"
	"time"
)

// getAccount answers GetAccount (GET /v2/email/account) for the
// credential that signed the request: its quotas, what it sent in the last
// 24 hours, whether it is out of the sandbox and may send.
func (s *Server) getAccount(w http.ResponseWriter, r *request) {
	limits := s.deps.Quotas.Limits(r.cred)
	sent, err := s.deps.Usage.Sent(r.Context(), r.cred.Name, s.cfg.Now().Add(-24*time.Hour))
	if err != nil {
		s.log.Error("GetAccount: counting what the credential sent failed", "credential", r.cred.Name, "err", err)
		writeError(w, errInternal)
		return
	}
	status := "HEALTHY"
	if r.cred.PausedReason != "" {
		status = "SHUTDOWN"
	}
	type sendQuota struct {
		Max24HourSend   float64
		MaxSendRate     float64
		SentLast24Hours float64
	}
	writeJSON(w, struct {
		DedicatedIpAutoWarmupEnabled bool
		EnforcementStatus            string
		ProductionAccessEnabled      bool
		SendQuota                    sendQuota
		SendingEnabled               bool
		SuppressionAttributes        struct{ SuppressedReasons []string }
	}{
		DedicatedIpAutoWarmupEnabled: true, // Sesame warms every outbound IP up (docs/warmup.md)
		EnforcementStatus:            status,
		ProductionAccessEnabled:      !r.cred.Sandbox,
		SendQuota:                    sendQuota{float64(limits.Daily), limits.Rate, float64(sent)},
		SendingEnabled:               r.cred.PausedReason == "",
		SuppressionAttributes:        struct{ SuppressedReasons []string }{[]string{"BOUNCE", "COMPLAINT"}},
	})
}
