package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// The webhook request: POST, one event per request, the JSON object Payload
// as the body, and these headers:
//
//	Content-Type: application/json
//	User-Agent: Sesame/<version>
//	X-Sesame-Event-Id: <the event's id; the same on every retry>
//	X-Sesame-Timestamp: <unix seconds when this attempt was sent>
//	X-Sesame-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// A receiver recomputes the signature over the raw body it received,
// compares it in constant time, and refuses timestamps more than five minutes
// away from its clock, so a captured request cannot be replayed later. Each
// attempt is signed afresh (a new timestamp).
const (
	HeaderEventID   = "X-Sesame-Event-Id"
	HeaderTimestamp = "X-Sesame-Timestamp"
	HeaderSignature = "X-Sesame-Signature"
)

// Payload is an event as Sesame shows it outside: the body of a webhook
// request, and each element of `sesame events --json`, so that a consumer
// reads one shape wherever the event comes from. Its keys are documented in
// docs/operations.md; renaming one breaks every consumer.
type Payload struct {
	ID         int64     `json:"id"`
	Type       string    `json:"type"` // store.EventTypes
	Time       time.Time `json:"time"` // RFC 3339 with fractional seconds, UTC
	Credential string    `json:"credential"`
	QueueID    string    `json:"queue_id"`
	MessageID  string    `json:"message_id"`
	Recipient  string    `json:"recipient"`
	RemoteMTA  string    `json:"remote_mta"`
	Reply      string    `json:"reply"`
	BounceType string    `json:"bounce_type,omitempty"` // bounces only: hard, soft, policy, undetermined
	Count      int       `json:"count"`                 // refusals a reject stands for; 1 for every other event
}

// maxRedirects caps the redirects a request follows.
const maxRedirects = 3

// maxResponse is how much of an answer is read (and then discarded).
const maxResponse = 4 << 10

// newClient returns the HTTP client of the webhooks. It follows at most three
// redirects, only 307 and 308 (which keep the POST and its body: after a 301,
// 302 or 303 Go would send a GET without the event, and its 2xx would count
// as delivered), and only to the same host, never from https to http.
func newClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			first := via[0].URL
			switch {
			case req.Method != http.MethodPost:
				return http.ErrUseLastResponse // reported as a failing 30x
			case len(via) > maxRedirects:
				return fmt.Errorf("more than %d redirects", maxRedirects)
			case req.URL.Host != first.Host || first.Scheme == "https" && req.URL.Scheme != "https":
				return fmt.Errorf("redirect to %s://%s not followed: webhooks follow redirects only on the same host",
					req.URL.Scheme, req.URL.Host)
			}
			return nil
		},
	}
}

// NewPayload returns the outside shape of e.
func NewPayload(e store.Event) Payload {
	return Payload{ID: e.ID, Type: e.Type, Time: e.At.UTC(), Credential: e.Credential, QueueID: e.QueueID,
		MessageID: e.MessageID, Recipient: e.Recipient, RemoteMTA: e.RemoteMTA, Reply: e.Reply, BounceType: e.BounceType,
		Count: max(1, e.Count)}
}

// payload encodes e as a request body.
func payload(e store.Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Message-IDs keep their <>
	err := enc.Encode(NewPayload(e))
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}

// sign returns the X-Sesame-Signature value of body sent at timestamp.
func sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// post makes one attempt to deliver e to ep: nil when it answered 2xx.
func (d *Dispatcher) post(ctx context.Context, ep endpoint, e store.Event) error {
	body, err := payload(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("bad webhook URL: %w", err)
	}
	ts := strconv.FormatInt(d.opts.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Sesame/"+d.opts.Version)
	req.Header.Set(HeaderEventID, strconv.FormatInt(e.ID, 10))
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sign(ep.Secret, ts, body))
	resp, err := d.client.Do(req)
	if err != nil {
		// Not the *url.Error text: it names the URL, whose query may hold a
		// token.
		var ue *url.Error
		if errors.As(err, &ue) {
			if ue.Timeout() {
				return fmt.Errorf("no answer within %s: %w", d.opts.Timeout, ue.Err)
			}
			return ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	msg := fmt.Sprintf("HTTP %s", resp.Status)
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		msg += " (redirects are followed only with 307 or 308, on the same host: set the webhook url to the final one)"
	}
	if len(head) > 0 {
		msg += fmt.Sprintf(": %q", truncate(string(head), 200))
	}
	return errors.New(msg)
}
