package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/smtpd"
	"github.com/sesame-mail/sesame/store"
)

const (
	testKeyID  = "SESAEXAMPLEKEY000001"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

type fakeKeys struct{}

func (fakeKeys) Lookup(_ context.Context, id string) (store.Credential, string, error) {
	if id != testKeyID {
		return store.Credential{}, "", account.ErrUnknownUsername
	}
	return store.Credential{Name: "app"}, testSecret, nil
}

// guard counts failures, standing in for smtpd's login guard.
type guard struct {
	mu       sync.Mutex
	failures int
}

func (g *guard) LoginBlocked(string, string) bool { return false }
func (g *guard) LoginFailed(string, string, bool) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failures++
	return 0
}
func (g *guard) LoginRefused(string, string) time.Duration { return 0 }
func (g *guard) LoginSucceeded(string, string)             {}

// submitter records what reaches the submission path, or refuses with
// refusal.
type submitter struct {
	mu      sync.Mutex
	got     []smtpd.Submission
	refusal *smtpd.Refusal
}

func (s *submitter) Submit(_ context.Context, sub smtpd.Submission) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusal != nil {
		return "", s.refusal
	}
	s.got = append(s.got, sub)
	return "QUEUEID0000000001", nil
}

type usage struct{}

func (usage) Sent(context.Context, string, time.Time) (int, error) { return 3, nil }

// startAPI serves the API on loopback behind netguard, as serve does, with
// a body limit of maxBody.
func startAPI(t *testing.T, now time.Time, maxBody int64) (string, *submitter, *guard) {
	t.Helper()
	sub, g := &submitter{}, &guard{}
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateCredential(context.Background(), store.Credential{Name: "app", Username: "u", PasswordHash: "h", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	h := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }},
		Deps{Submitter: sub, Keys: fakeKeys{}, Guard: g, Usage: usage{}, Templates: st, Suppressions: st, Quotas: account.QuotaDefaults{Daily: 100, Rate: 2}})
	srv := netguard.HTTPServer(h, netguard.HTTPConfig{ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 30 * time.Second, MaxBodyBytes: maxBody, TooLarge: TooLarge})
	srv.ConnContext = ConnContext
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(netguard.New(netguard.Config{Name: "api"}).Wrap(l, nil))
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String(), sub, g
}

// call sends a request signed by the AWS SDK's SigV4 signer at signedAt,
// with edit applied after signing.
func call(t *testing.T, method, url string, body []byte, secret string, signedAt time.Time, edit func(*http.Request)) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: secret},
		req, hex.EncodeToString(sum[:]), "ses", "ap-south-1", signedAt); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

func TestSignature(t *testing.T) {
	now := time.Now()
	base, sub, g := startAPI(t, now, 1<<20)
	body := []byte(`{"FromEmailAddress":"a@example.com","Destination":{"ToAddresses":["b@example.net"]},` +
		`"Content":{"Simple":{"Subject":{"Data":"hi"},"Body":{"Text":{"Data":"hello"}}}}}`)
	send := base + "/v2/email/outbound-emails"
	for _, tc := range []struct {
		name     string
		secret   string
		signedAt time.Time
		edit     func(*http.Request)
		status   int
		code     string
	}{
		{"valid", testSecret, now, nil, 200, ""},
		{"valid, 14 minutes old", testSecret, now.Add(-14 * time.Minute), nil, 200, ""},
		{"wrong secret", strings.Repeat("x", 40), now, nil, 403, "SignatureDoesNotMatch"},
		{"16 minutes old", testSecret, now.Add(-16 * time.Minute), nil, 403, "RequestExpired"},
		{"16 minutes ahead", testSecret, now.Add(16 * time.Minute), nil, 403, "RequestExpired"},
		{"tampered body", testSecret, now, func(r *http.Request) {
			r.Body = io.NopCloser(bytes.NewReader(bytes.Replace(body, []byte("hello"), []byte("HELLO"), 1)))
		}, 403, "SignatureDoesNotMatch"},
		{"tampered path", testSecret, now, func(r *http.Request) { r.URL.Path = "/v2/email/account" }, 403, "SignatureDoesNotMatch"},
		{"unknown key", testSecret, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), testKeyID, "SESAUNKNOWNKEY000001", 1))
		}, 403, "InvalidClientTokenId"},
		{"other service", testSecret, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/ses/", "/s3/", 1))
		}, 403, "SignatureDoesNotMatch"},
		{"unsigned", testSecret, now, func(r *http.Request) { r.Header.Del("Authorization") }, 403, "MissingAuthenticationTokenException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(sub.got)
			resp, out := call(t, "POST", send, body, tc.secret, tc.signedAt, tc.edit)
			if resp.StatusCode != tc.status || resp.Header.Get("x-amzn-ErrorType") != tc.code {
				t.Fatalf("HTTP %d %s %v; want %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), out, tc.status, tc.code)
			}
			if queued := len(sub.got) - before; (tc.status == 200) != (queued == 1) {
				t.Errorf("%d submissions after HTTP %d", queued, resp.StatusCode)
			}
			if tc.status == 200 && out["MessageId"] != "QUEUEID0000000001" {
				t.Errorf("answer %v; want the queue id as MessageId", out)
			}
		})
	}
	if g.failures != 7 { // every 403 but the unsigned request
		t.Errorf("the guard counted %d failures, want 7", g.failures)
	}
}

func TestErrorsAndOperations(t *testing.T) {
	now := time.Now()
	base, sub, _ := startAPI(t, now, 4096)
	post := func(path string, body string) (*http.Response, map[string]any) {
		return call(t, "POST", base+path, []byte(body), testSecret, now, nil)
	}
	simple := func(extra string) string {
		return `{"FromEmailAddress":"a@example.com","Destination":{"ToAddresses":["b@example.net"]}` + extra +
			`,"Content":{"Simple":{"Subject":{"Data":"hi"},"Body":{"Text":{"Data":"hello"}}}}}`
	}
	check := func(resp *http.Response, out map[string]any, status int, code, says string) {
		t.Helper()
		msg, _ := out["message"].(string)
		if resp.StatusCode != status || resp.Header.Get("x-amzn-ErrorType") != code || !strings.Contains(msg, says) {
			t.Errorf("HTTP %d %s %q; want %d %s saying %q", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), msg, status, code, says)
		}
	}
	resp, out := post("/v2/email/configuration-sets", `{}`)
	check(resp, out, 400, "BadRequestException", "CreateConfigurationSet")
	resp, out = post("/nowhere", `{}`)
	check(resp, out, 400, "BadRequestException", "Unknown operation")
	resp, out = post("/v2/email/outbound-emails", `{"FromEmailAddress":"a@example.com","Destination":{"ToAddresses":["not an address"]},"Content":{"Raw":{"Data":"RnJvbTogYUBleGFtcGxlLmNvbQ0KDQpoaQ0K"}}}`)
	check(resp, out, 400, "BadRequestException", "Destination.ToAddresses")
	resp, out = post("/v2/email/outbound-emails", simple(`,"ConfigurationSetName":"marketing"`))
	check(resp, out, 404, "NotFoundException", "marketing")
	resp, out = post("/v2/email/outbound-emails", `{"Content":`)
	check(resp, out, 400, "BadRequestException", "invalid JSON")
	resp, out = post("/v2/email/outbound-emails", simple("")+strings.Repeat(" ", 5000))
	check(resp, out, 413, "RequestEntityTooLargeException", "max_message_bytes")

	for _, tc := range []struct {
		reason string
		reply  *smtp.SMTPError
		status int
		code   string
		says   string
	}{
		{smtpd.ReasonNotVerified, &smtp.SMTPError{Code: 554, Message: "Message rejected: Email address is not verified. The following identities failed the check: a@example.com"},
			400, "MessageRejected", "Email address is not verified. The following identities failed the check: a@example.com"},
		{smtpd.ReasonSandbox, &smtp.SMTPError{Code: 554, Message: "Message rejected: Email address is not verified. x"}, 400, "MessageRejected", "not verified"},
		{smtpd.ReasonPaused, &smtp.SMTPError{Code: 554, Message: "Sending paused for this credential: x"}, 400, "SendingPausedException", "Sending paused"},
		{smtpd.ReasonQuotaDaily, &smtp.SMTPError{Code: 454}, 400, "LimitExceededException", "Daily message quota exceeded."},
		{smtpd.ReasonQuotaRate, &smtp.SMTPError{Code: 454}, 429, "TooManyRequestsException", "Maximum sending rate exceeded."},
		{smtpd.ReasonTemporary, &smtp.SMTPError{Code: 451, Message: "Temporary failure: try again later"}, 503, "ServiceUnavailable", "try again later"},
	} {
		sub.mu.Lock()
		sub.refusal = &smtpd.Refusal{Reason: tc.reason, Reply: tc.reply}
		sub.mu.Unlock()
		resp, out := post("/v2/email/outbound-emails", simple(""))
		check(resp, out, tc.status, tc.code, tc.says)
	}

	resp, out = call(t, "GET", base+"/v2/email/account", nil, testSecret, now, nil)
	q, _ := out["SendQuota"].(map[string]any)
	if resp.StatusCode != 200 || out["ProductionAccessEnabled"] != true || out["SendingEnabled"] != true ||
		q["Max24HourSend"] != 100.0 || q["MaxSendRate"] != 2.0 || q["SentLast24Hours"] != 3.0 {
		t.Errorf("GetAccount: HTTP %d %v", resp.StatusCode, out)
	}
}

func TestBuildSimple(t *testing.T) {
	from, _ := mail.ParseAddress("Shop <shop@example.com>")
	m := &simpleMessage{Subject: &content{Data: "Grüße"}, Body: &struct{ Text, Html *content }{Text: &content{Data: "line 1\nline 2 é"}}}
	msg, e := buildSimple(from, []string{"b@example.net"}, nil, nil, m)
	if e != nil {
		t.Fatal(e)
	}
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("a bare LF in\n%s", msg)
	}
	parsed, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header.Get("Subject") != "=?UTF-8?q?Gr=C3=BC=C3=9Fe?=" || parsed.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Errorf("header:\n%s", msg)
	}
	m.Headers = []struct{ Name, Value string }{{"X-Evil", "a\r\nBcc: x@example.net"}}
	if _, e := buildSimple(from, []string{"b@example.net"}, nil, nil, m); e == nil || !strings.Contains(e.message, "Headers[0]") {
		t.Errorf("a header value with a line break: %v", e)
	}
	m.Headers = []struct{ Name, Value string }{{"from", "x@example.net"}}
	if _, e := buildSimple(from, []string{"b@example.net"}, nil, nil, m); e == nil {
		t.Error("a From field in Headers was taken")
	}
}

func TestPrepareRaw(t *testing.T) {
	raw := "From: a@example.com\nTo: b@example.net\nBcc: c@example.net,\n d@example.net\nSubject: s\n\nBcc: body line\n"
	msg, h, e := prepareRaw([]byte(raw))
	if e != nil {
		t.Fatal(e)
	}
	want := "From: a@example.com\r\nTo: b@example.net\r\nSubject: s\r\n\r\nBcc: body line\r\n"
	if string(msg) != want || h.from != "a@example.com" || strings.Join(h.recipients, " ") != "b@example.net c@example.net d@example.net" {
		t.Errorf("prepareRaw = %q, %+v", msg, h)
	}
}

func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	if !b.take(ctx, 60) || !b.take(ctx, 40) {
		t.Fatal("room refused")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if b.take(short, 1) {
		t.Fatal("took more than the budget")
	}
	got := make(chan bool)
	go func() { got <- b.take(ctx, 50) }()
	b.give(60)
	if !<-got {
		t.Fatal("a waiting request did not get the room given back")
	}
	b.give(40)
	b.give(50)
	if !b.take(ctx, 500) { // larger than the budget: alone, it goes
		t.Fatal("a request larger than the budget never goes")
	}
}

// A stranger's request is refused on its headers, before its body is read:
// an unknown key cannot make the server hold (or wait for) a large body.
func TestStrangerBodyNotRead(t *testing.T) {
	base, _, _ := startAPI(t, time.Now(), 100<<20)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST /v2/email/outbound-emails HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n" +
		"X-Amz-Date: 20260101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=SESAUNKNOWNKEY000001/20260101/us-east-1/ses/aws4_request, " +
		"SignedHeaders=host;x-amz-date, Signature=00\r\n\r\n{\"Content\":"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the server's read timeout is 30 s
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 403") {
		t.Fatalf("answer %q, %v; want 403 before the body is sent", line, err)
	}
}

func TestRender(t *testing.T) {
	values := map[string]any{"name": "Ann <&>", "order": map[string]any{"id": 42.0, "paid": true}, "none": nil}
	for _, tc := range []struct {
		in, want string
		html     bool
		err      string
	}{
		{in: "Hi {{name}}, order {{ order.id }} paid: {{order.paid}}{{none}}", want: "Hi Ann <&>, order 42 paid: true"},
		{in: "<p>{{name}}</p>{{{name}}}", html: true, want: "<p>Ann &lt;&amp;&gt;</p>Ann <&>"},
		{in: "{{missing}}", err: "no value for {{missing}}"},
		{in: "{{order}}", err: "no value for {{order}}"},
		{in: "{{#if name}}x{{/if}}", err: "no #if"},
		{in: "{{name", err: "without its }}"},
	} {
		got, err := render(tc.in, values, tc.html, true)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("render(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("render(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestTemplateOperations(t *testing.T) {
	now := time.Now()
	base, sub, _ := startAPI(t, now, 1<<20)
	do := func(method, path, body string) (*http.Response, map[string]any) {
		return call(t, method, base+path, []byte(body), testSecret, now, nil)
	}
	resp, out := do("POST", "/v2/email/templates", `{"TemplateName":"welcome","TemplateContent":{"Subject":"Hi {{name}}","Html":"<b>{{name}}</b>"}}`)
	if resp.StatusCode != 200 {
		t.Fatalf("CreateEmailTemplate: %d %v", resp.StatusCode, out)
	}
	resp, _ = do("POST", "/v2/email/templates", `{"TemplateName":"welcome","TemplateContent":{"Subject":"x","Text":"y"}}`)
	if resp.Header.Get("x-amzn-ErrorType") != "AlreadyExistsException" {
		t.Errorf("a second template of the name: %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"))
	}
	resp, _ = do("POST", "/v2/email/templates", `{"TemplateName":"bad","TemplateContent":{"Subject":"{{#each x}}","Text":"y"}}`)
	if resp.Header.Get("x-amzn-ErrorType") != "BadRequestException" {
		t.Errorf("a template with a block helper: %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"))
	}
	resp, out = do("POST", "/v2/email/templates/welcome/render", `{"TemplateData":"{\"name\":\"<Ann>\"}"}`)
	if r, _ := out["RenderedTemplate"].(string); resp.StatusCode != 200 || !strings.Contains(r, "Subject: Hi <Ann>") || !strings.Contains(r, "&lt;Ann&gt;") {
		t.Errorf("TestRenderEmailTemplate: %d %v", resp.StatusCode, out)
	}
	resp, out = do("POST", "/v2/email/outbound-emails", `{"FromEmailAddress":"a@example.com","Destination":{"ToAddresses":["b@example.net"]},`+
		`"Content":{"Template":{"TemplateName":"welcome","TemplateData":"{\"name\":\"Bo\"}"}}}`)
	if resp.StatusCode != 200 || len(sub.got) != 1 || !strings.Contains(string(sub.got[0].Message), "Subject: Hi Bo") {
		t.Fatalf("SendEmail with a template: %d %v", resp.StatusCode, out)
	}
	resp, out = do("POST", "/v2/email/outbound-emails", `{"FromEmailAddress":"a@example.com","Destination":{"ToAddresses":["b@example.net"]},`+
		`"Content":{"Template":{"TemplateName":"welcome","TemplateData":"{}"}}}`)
	if m, _ := out["message"].(string); resp.StatusCode != 400 || !strings.Contains(m, "{{name}}") {
		t.Errorf("SendEmail without the template's data: %d %v", resp.StatusCode, out)
	}
	resp, out = do("GET", "/v2/email/templates?PageSize=1", "")
	if list, _ := out["TemplatesMetadata"].([]any); resp.StatusCode != 200 || len(list) != 1 {
		t.Errorf("ListEmailTemplates: %d %v", resp.StatusCode, out)
	}
	resp, _ = do("DELETE", "/v2/email/templates/welcome", "")
	if resp.StatusCode != 200 {
		t.Errorf("DeleteEmailTemplate: %d", resp.StatusCode)
	}
	resp, _ = do("GET", "/v2/email/templates/welcome", "")
	if resp.StatusCode != 404 || resp.Header.Get("x-amzn-ErrorType") != "NotFoundException" {
		t.Errorf("GetEmailTemplate after delete: %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"))
	}
}

func TestSendBulkEmail(t *testing.T) {
	now := time.Now()
	base, sub, _ := startAPI(t, now, 1<<20)
	body := `{"FromEmailAddress":"a@example.com","DefaultContent":{"Template":{"TemplateContent":{"Subject":"Hi {{n}}","Text":"x"},"TemplateData":"{\"n\":\"all\"}"}},` +
		`"BulkEmailEntries":[{"Destination":{"ToAddresses":["b@example.net"]},"ReplacementEmailContent":{"ReplacementTemplate":{"ReplacementTemplateData":"{\"n\":\"Bo\"}"}}},` +
		`{"Destination":{"ToAddresses":["c@example.net"]}}]}`
	resp, out := call(t, "POST", base+"/v2/email/outbound-bulk-emails", []byte(body), testSecret, now, nil)
	if resp.StatusCode != 200 || len(sub.got) != 2 || !strings.Contains(string(sub.got[0].Message), "Subject: Hi Bo") ||
		!strings.Contains(string(sub.got[1].Message), "Subject: Hi all") {
		t.Fatalf("SendBulkEmail: %d %v", resp.StatusCode, out)
	}
	sub.refusal = &smtpd.Refusal{Reason: smtpd.ReasonQuotaRate, Reply: &smtp.SMTPError{Code: 454}}
	_, out = call(t, "POST", base+"/v2/email/outbound-bulk-emails", []byte(body), testSecret, now, nil)
	results, _ := out["BulkEmailEntryResults"].([]any)
	if len(results) != 2 || results[0].(map[string]any)["Status"] != "ACCOUNT_THROTTLED" {
		t.Errorf("SendBulkEmail over the rate: %v", out)
	}
}
