// Package web is Sesame's operator HTTP listener: /metrics, /healthz and
// /readyz, the address verification pages under /verify/, and with
// [http] pprof Go's profiler under /debug/pprof/.
package web

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// Pinger reports whether the store answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// StorageChecker is an ability Deps.Store may have. CheckStorage returns nil
// while the store can write, and an error after a write failed for lack of
// space and until there is room again (store.SQLite.CheckStorage).
type StorageChecker interface {
	CheckStorage(ctx context.Context) error
}

// Deps are what the HTTP side serves from.
type Deps struct {
	Store Pinger
	// Ready reports whether the service takes mail: nil once every
	// listener is up, an error while starting or stopping.
	Ready     func() error
	Addresses AddressConfirmer
	Metrics   http.Handler // serves /metrics; nil: no metrics
	// Pprof serves Go's profiles at /debug/pprof/ (http.pprof): for
	// measuring, on a listener that only the operator reaches.
	Pprof bool
	Log   *slog.Logger
}

// Handler returns the HTTP routes:
//   - /metrics: Prometheus metrics.
//   - /healthz: 200 while the process and its store answer (liveness).
//   - /readyz: 200 while it takes mail: listeners up, store answering and
//     able to write (not on a full disk), not stopping (readiness, for load
//     balancers and orchestrators).
//
// A full disk fails /readyz but not /healthz: a restart frees no space, and
// the process recovers by itself once space is freed.
func Handler(d Deps) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/verify/", VerifyHandler(d.Addresses, d.Log))
	if d.Metrics != nil {
		mux.Handle("GET /metrics", d.Metrics)
	}
	if d.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := ping(r.Context(), d.Store); err != nil {
			d.Log.Error("health check failed", "err", err)
			plain(w, http.StatusServiceUnavailable, "store unavailable\n")
			return
		}
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ping(r.Context(), d.Store); err != nil {
			plain(w, http.StatusServiceUnavailable, "store unavailable\n")
			return
		}
		if sc, ok := d.Store.(StorageChecker); ok {
			if err := checkStorage(r.Context(), sc); err != nil {
				// The details (paths, SQLite's words) go to the log only:
				// this listener also serves the public verification pages.
				d.Log.Warn("not ready: the store cannot write", "err", err)
				plain(w, http.StatusServiceUnavailable,
					"disk full: the queue cannot be written, so mail is refused with 452 4.3.1; free space in the data directory (details in the log)\n")
				return
			}
		}
		if d.Ready != nil {
			if err := d.Ready(); err != nil {
				plain(w, http.StatusServiceUnavailable, err.Error()+"\n")
				return
			}
		}
		plain(w, http.StatusOK, "ready\n")
	})
	return mux
}

func ping(ctx context.Context, store Pinger) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return store.Ping(ctx)
}

func checkStorage(ctx context.Context, sc StorageChecker) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return sc.CheckStorage(ctx)
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(body))
}
