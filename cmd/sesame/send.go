package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sesame-mail/sesame/api"
	"github.com/sesame-mail/sesame/store"
)

// sendCmd sends a message as a credential through the running server's
// SES API: the console's "send test email" from the shell. It signs a
// SendEmail request with the credential's key (read from the store), so
// the message takes the path an application's does, policy and all.
func sendCmd(e *env, _ []string) error {
	name, from, subject := e.values["user"], e.values["from"], e.values["subject"]
	to := e.lists["to"]
	if name == "" || from == "" || len(to) == 0 {
		return errors.New("--user, --from and --to are required; e.g. sesame send --user shop --from shop@example.com --to you@example.net --subject Hi --text Hello")
	}
	if e.values["text"] == "" && e.values["html"] == "" {
		return errors.New("--text or --html is required: the message's body")
	}
	if e.cfg.API.Listen == "" {
		return errors.New("sesame send goes through the SES API, which is off: set [api] listen (e.g. \"127.0.0.1:8443\") and restart serve")
	}
	var id, secret string
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		k, err := st.CredentialAPIKey(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			if _, cerr := st.Credential(ctx, name); cerr != nil {
				return fmt.Errorf("no credentials named %q; see \"sesame user list\"", name)
			}
			return fmt.Errorf("credentials %q have no SES API key yet; make one with \"sesame user keys %s --rotate\"", name, name)
		}
		if err != nil {
			return err
		}
		sealer, err := e.loadSealer()
		if err != nil {
			return err
		}
		id = k.ID
		secret, err = sealer.Open(k.ID, k.SealedSecret)
		return err
	})
	if err != nil {
		return err
	}

	type content struct{ Data string }
	body := struct{ Text, Html *content }{}
	if t := e.values["text"]; t != "" {
		body.Text = &content{t}
	}
	if h := e.values["html"]; h != "" {
		body.Html = &content{h}
	}
	req := map[string]any{
		"FromEmailAddress": from,
		"Destination":      map[string]any{"ToAddresses": to},
		"Content":          map[string]any{"Simple": map[string]any{"Subject": content{subject}, "Body": body}},
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	client, base, err := e.apiClient()
	if err != nil {
		return err
	}
	r, err := http.NewRequest("POST", base+"/v2/email/outbound-emails", bytes.NewReader(payload))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	api.Sign(r, payload, id, secret, "sesame", time.Now())
	resp, err := client.Do(r)
	if err != nil {
		return fmt.Errorf("the SES API at %s did not answer: %w (is sesame serve running?)", base, err)
	}
	defer resp.Body.Close()
	var out struct {
		MessageId string
		Message   string `json:"message"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("refused: %s: %s", resp.Header.Get("x-amzn-ErrorType"), out.Message)
	}
	if e.json {
		return e.printJSON(struct {
			MessageID string `json:"message_id"`
		}{out.MessageId})
	}
	fmt.Fprintf(e.stdout, "Queued as %s (sesame queue show %s).\n", out.MessageId, out.MessageId)
	return nil
}

// apiClient returns an HTTP client for the local server's API and its
// base URL. With TLS it trusts the system's roots and the certificate
// the server uses (its own file or the self-signed one in data_dir), for
// the configured hostname.
func (e *env) apiClient() (*http.Client, string, error) {
	host, port, err := net.SplitHostPort(e.cfg.API.Listen)
	if err != nil {
		return nil, "", fmt.Errorf("[api] listen %q: %w", e.cfg.API.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, port)
	if !e.cfg.API.TLS {
		return &http.Client{Timeout: 2 * time.Minute}, "http://" + addr, nil
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	for _, f := range []string{e.cfg.API.TLSCertFile, e.cfg.Submission.TLSCertFile, filepath.Join(e.cfg.DataDir, "selfsigned-cert.pem")} {
		if f == "" {
			continue
		}
		if pem, err := os.ReadFile(f); err == nil {
			roots.AppendCertsFromPEM(pem)
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: e.cfg.Hostname}}
	return &http.Client{Timeout: 2 * time.Minute, Transport: tr}, "https://" + addr, nil
}
