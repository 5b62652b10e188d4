package netguard

import (
	"log/slog"
	"net/http"
	"time"
)

// HTTPConfig is the limits of an HTTP server. Go's http.Server has none by
// default: a client could hold a connection open forever by sending nothing,
// or a body one byte a minute.
type HTTPConfig struct {
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request's headers
	// to the end of the response.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection.
	IdleTimeout time.Duration
	// MaxBodyBytes bounds a request body: a larger declared length is
	// answered 413 at once, and reading past it fails.
	MaxBodyBytes int64
	// TooLarge answers a request whose declared body is over MaxBodyBytes
	// (the connection is closed after it); nil: a plain-text 413.
	TooLarge http.HandlerFunc
	Logger   *slog.Logger
}

const (
	// maxHeaderBytes bounds a request's headers (Go's default is 1 MiB).
	maxHeaderBytes = 64 << 10
	// maxHeaderTime bounds the time to send a request's headers, within
	// ReadTimeout.
	maxHeaderTime = 10 * time.Second
)

// HTTPServer returns a server for h with c's limits. Serve it on a listener
// wrapped by a Guard (for the connection caps); the Guard's read timeouts
// stay zero, since the server sets its own deadlines.
func HTTPServer(h http.Handler, c HTTPConfig) *http.Server {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &http.Server{
		Handler:           limitBody(h, c.MaxBodyBytes, c.TooLarge),
		ReadHeaderTimeout: min(maxHeaderTime, c.ReadTimeout),
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(c.Logger.Handler(), slog.LevelWarn),
	}
}

// limitBody refuses a body declared larger than n with 413 (and closes the
// connection rather than read it), and cuts off one that turns out larger.
func limitBody(h http.Handler, n int64, tooLarge http.HandlerFunc) http.Handler {
	if n <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > n {
			w.Header().Set("Connection", "close")
			if tooLarge != nil {
				tooLarge(w, r)
				return
			}
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h.ServeHTTP(w, r)
	})
}
