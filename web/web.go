// Package web is Sesame's HTTP side: GET /healthz, and the address
// verification pages under /verify/. Metrics and the management API will
// live here too.
package web

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// Pinger reports whether the store answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Handler returns the HTTP routes.
func Handler(store Pinger, addresses AddressConfirmer, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/verify/", VerifyHandler(addresses, log))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := store.Ping(ctx); err != nil {
			log.Error("health check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("store unavailable\n"))
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
