package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthcheck asks the running server's /healthz, for container HEALTHCHECKs
// and monitoring scripts that have no curl: exit 0 when it answers 200.
func healthcheck(e *env, _ []string) error {
	if e.cfg.HTTP.Listen == "" {
		return errors.New("the HTTP listener is off ([http] listen = \"\"); there is nothing to ask")
	}
	host, port, _ := net.SplitHostPort(e.cfg.HTTP.Listen) // validated by config
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("%s: %w (is sesame serve running?)", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if !e.json {
		fmt.Fprint(e.stdout, string(body))
	}
	return nil
}
