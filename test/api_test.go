package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// apiKeys is the key pair `sesame user create --json` prints.
type apiKeys struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// createAPIUser makes a credential and returns its API key pair.
func (i *instance) createAPIUser(t *testing.T, name string) apiKeys {
	t.Helper()
	out := i.mustAdmin(t, "user", "create", name, "--json")
	var k apiKeys
	if err := json.Unmarshal(out, &k); err != nil || len(k.AccessKeyID) != 20 || len(k.SecretAccessKey) != 40 {
		t.Fatalf("sesame user create %s --json printed %q (%v); want a 20-character access_key_id and a 40-character secret_access_key", name, out, err)
	}
	return k
}

// sesClient is the AWS SDK's SES v2 client pointed at the instance's API,
// trusting its self-signed certificate (for sesame.test) and nothing else.
// It does not retry, so each call is one request. mod may change the
// options (the signer, the HTTP client) before the client is made.
func (i *instance) sesClient(t *testing.T, k apiKeys, mod func(*sesv2.Options)) *sesv2.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(i.dataDir, "selfsigned-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in selfsigned-cert.pem")
	}
	o := sesv2.Options{
		Region:           "eu-central-1", // any region: Sesame takes the one signed for
		BaseEndpoint:     aws.String("https://" + i.apiAddr),
		Credentials:      credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, ""),
		RetryMaxAttempts: 1,
		HTTPClient: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "sesame.test"}}},
	}
	if mod != nil {
		mod(&o)
	}
	return sesv2.New(o)
}

// skewedSigner signs as a client whose clock is behind.
type skewedSigner struct{ by time.Duration }

func (s skewedSigner) SignHTTP(ctx context.Context, c aws.Credentials, r *http.Request, payloadHash, service, region string,
	t time.Time, opts ...func(*v4.SignerOptions)) error {
	return v4.NewSigner().SignHTTP(ctx, c, r, payloadHash, service, region, t.Add(-s.by), opts...)
}

// tamperingClient changes one byte of the body after it was signed, as a
// man in the middle would.
type tamperingClient struct{ next sesv2.HTTPClient }

func (c tamperingClient) Do(r *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	body = bytes.Replace(body, []byte("victim"), []byte("attack"), 1)
	r.Body = io.NopCloser(bytes.NewReader(body))
	return c.next.Do(r)
}

// wantAPIError checks that err is the API's answer status with code.
func wantAPIError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var re *smithyhttp.ResponseError
	var ae smithy.APIError
	if !errors.As(err, &re) || !errors.As(err, &ae) {
		t.Fatalf("%s: %v; want HTTP %d %s", what, err, status, code)
	}
	if re.HTTPStatusCode() != status || ae.ErrorCode() != code {
		t.Fatalf("%s: HTTP %d %s (%s); want HTTP %d %s", what, re.HTTPStatusCode(), ae.ErrorCode(), ae.ErrorMessage(), status, code)
	}
}

// TestAPISendEmail sends through the SES v2 API with the real AWS SDK for
// Go: Simple content (text, HTML, an attachment, a custom header, Bcc)
// and Raw content arrive DKIM-signed with what was sent, an unverified
// sender is the SDK's typed MessageRejected, bad signatures are 403 with
// nothing queued, and GetAccount reports the credential.
func TestAPISendEmail(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	inst.configure(map[string]any{"submission.auth_failure_delay": "10ms"})
	inst.addDomain(t, "api.test")
	keys := inst.createAPIUser(t, "app")
	inst.start()
	ses := inst.sesClient(t, keys, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Simple.
	tok := newToken()
	att := make([]byte, 5000)
	rand.Read(att)
	out, err := ses.SendEmail(ctx, &sesv2.SendEmailInput{
		FromEmailAddress: aws.String("Die App <app@api.test>"),
		Destination: &types.Destination{ToAddresses: []string{"to@example.net"}, CcAddresses: []string{"cc@example.net"},
			BccAddresses: []string{"hidden@example.net"}},
		ReplyToAddresses: []string{"help@api.test"},
		Content: &types.EmailContent{Simple: &types.Message{
			Subject: &types.Content{Data: aws.String("Grüße aus Sesame")},
			Body: &types.Body{Text: &types.Content{Data: aws.String("Hello " + tok + "\nsecond line")},
				Html: &types.Content{Data: aws.String("<p>Hello " + tok + "</p>")}},
			Attachments: []types.Attachment{{FileName: aws.String("data.bin"), RawContent: att}},
			Headers:     []types.MessageHeader{{Name: aws.String("X-Campaign"), Value: aws.String("spring")}},
		}},
	})
	if err != nil {
		t.Fatalf("SendEmail (Simple): %v", err)
	}
	msg := inst.expectDelivered(t, tok, "api.test")
	if want := "id " + *out.MessageId; !bytes.Contains(msg.Data, []byte(want)) {
		t.Errorf("MessageId %s is not the queue id in the Received field:\n%s", *out.MessageId, head(msg.Data))
	}
	if got := strings.Join(msg.To, ","); got != "to@example.net,cc@example.net,hidden@example.net" {
		t.Errorf("delivered to %s; want to, cc and the Bcc recipient", got)
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg.Data))
	if err != nil {
		t.Fatal(err)
	}
	hdr := string(msg.Data[:bytes.Index(msg.Data, []byte("\r\n\r\n"))])
	if m.Header.Get("Bcc") != "" || strings.Contains(hdr, "hidden@example.net") {
		t.Errorf("the Bcc recipient is in the delivered header:\n%s", hdr)
	}
	dec := new(mime.WordDecoder)
	if subj, _ := dec.DecodeHeader(m.Header.Get("Subject")); subj != "Grüße aus Sesame" {
		t.Errorf("Subject %q", subj)
	}
	if m.Header.Get("X-Campaign") != "spring" || m.Header.Get("Reply-To") != "<help@api.test>" {
		t.Errorf("X-Campaign %q, Reply-To %q", m.Header.Get("X-Campaign"), m.Header.Get("Reply-To"))
	}
	if got := attachment(t, m, "data.bin"); !bytes.Equal(got, att) {
		t.Errorf("the attachment arrived as %d bytes, not the %d sent", len(got), len(att))
	}

	// Raw, with LF line ends, recipients from its header, Bcc removed.
	tok2 := newToken()
	raw := "From: app@api.test\nTo: raw@example.net\nBcc: secret@example.net\nSubject: raw " + tok2 +
		"\nMIME-Version: 1.0\nContent-Type: text/plain\n\nRaw body " + tok2 + "\n"
	if _, err := ses.SendEmail(ctx, &sesv2.SendEmailInput{Content: &types.EmailContent{Raw: &types.RawMessage{Data: []byte(raw)}}}); err != nil {
		t.Fatalf("SendEmail (Raw): %v", err)
	}
	msg2 := inst.expectDelivered(t, tok2, "api.test")
	if got := strings.Join(msg2.To, ","); got != "raw@example.net,secret@example.net" {
		t.Errorf("raw message delivered to %s", got)
	}
	if bytes.Contains(msg2.Data, []byte("secret@example.net")) {
		t.Errorf("the raw message's Bcc field was delivered:\n%s", head(msg2.Data))
	}

	// Refusals: none of these may be queued.
	var refused []string
	send := func(c *sesv2.Client, from string) error {
		tok := newToken()
		refused = append(refused, tok)
		_, err := c.SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String(from),
			Destination: &types.Destination{ToAddresses: []string{"to@example.net"}},
			Content: &types.EmailContent{Simple: &types.Message{Subject: &types.Content{Data: aws.String("victim " + tok)},
				Body: &types.Body{Text: &types.Content{Data: aws.String(tok)}}}}})
		return err
	}
	err = send(ses, "someone@unverified.test")
	var rejected *types.MessageRejected
	if !errors.As(err, &rejected) || !strings.Contains(rejected.ErrorMessage(), "Email address is not verified") {
		t.Errorf("an unverified sender: %v; want *types.MessageRejected saying the address is not verified", err)
	}
	wrong := keys
	wrong.SecretAccessKey = strings.Repeat("x", 40)
	wantAPIError(t, "a wrong secret", send(inst.sesClient(t, wrong, nil), "app@api.test"), 403, "SignatureDoesNotMatch")
	unknown := keys
	unknown.AccessKeyID = "SESAAAAAAAAAAAAAAAAA"
	wantAPIError(t, "an unknown key", send(inst.sesClient(t, unknown, nil), "app@api.test"), 403, "InvalidClientTokenId")
	old := inst.sesClient(t, keys, func(o *sesv2.Options) { o.HTTPSignerV4 = skewedSigner{20 * time.Minute} })
	wantAPIError(t, "a request signed 20 minutes ago", send(old, "app@api.test"), 403, "RequestExpired")
	tampered := inst.sesClient(t, keys, func(o *sesv2.Options) { o.HTTPClient = tamperingClient{o.HTTPClient} })
	wantAPIError(t, "a tampered body", send(tampered, "app@api.test"), 403, "SignatureDoesNotMatch")

	// An operation not implemented is named, never a 404 page.
	_, err = ses.ListConfigurationSets(ctx, &sesv2.ListConfigurationSetsInput{})
	var bad *types.BadRequestException
	if !errors.As(err, &bad) || !strings.Contains(bad.ErrorMessage(), "ListConfigurationSets") {
		t.Errorf("ListConfigurationSets: %v; want *types.BadRequestException naming it", err)
	}

	acct, err := ses.GetAccount(ctx, &sesv2.GetAccountInput{})
	if err != nil {
		t.Fatalf("GetAccount: %v", err)
	}
	if !acct.ProductionAccessEnabled || !acct.SendingEnabled || acct.SendQuota == nil ||
		acct.SendQuota.Max24HourSend != 1e9 || acct.SendQuota.SentLast24Hours != 5 || aws.ToString(acct.EnforcementStatus) != "HEALTHY" {
		q, _ := json.Marshal(acct.SendQuota)
		t.Errorf("GetAccount: production %v, sending %v, status %q, quota %s; want true, true, HEALTHY, 1e9 a day with 5 sent",
			acct.ProductionAccessEnabled, acct.SendingEnabled, aws.ToString(acct.EnforcementStatus), q)
	}

	// A last message, delivered after the refused ones would have been.
	tok3 := newToken()
	if _, err := ses.SendEmail(ctx, &sesv2.SendEmailInput{Content: &types.EmailContent{Raw: &types.RawMessage{
		Data: []byte("From: app@api.test\r\nTo: last@example.net\r\nSubject: last\r\n\r\n" + tok3 + "\r\n")}}}); err != nil {
		t.Fatalf("SendEmail after the refusals: %v", err)
	}
	inst.expectDelivered(t, tok3, "api.test")
	for _, m := range inst.sink.Messages() {
		for _, tok := range refused {
			if bytes.Contains(m.Data, []byte(tok)) {
				t.Errorf("a refused request was delivered:\n%s", head(m.Data))
			}
		}
	}

	// A rotated key pair works at once, and the old one no longer.
	var rotated apiKeys
	inst.adminJSON(t, &rotated, "user", "keys", "app", "--rotate")
	if len(rotated.AccessKeyID) != 20 || rotated.AccessKeyID == keys.AccessKeyID || len(rotated.SecretAccessKey) != 40 {
		t.Fatalf("user keys --rotate printed %+v", rotated)
	}
	if _, err := inst.sesClient(t, rotated, nil).GetAccount(ctx, &sesv2.GetAccountInput{}); err != nil {
		t.Errorf("GetAccount with the rotated keys: %v", err)
	}
	_, err = ses.GetAccount(ctx, &sesv2.GetAccountInput{})
	wantAPIError(t, "the key replaced by rotation", err, 403, "InvalidClientTokenId")

	// sesame send: the same door, from the shell, with the current key.
	tok4 := newToken()
	var sent struct {
		MessageID string `json:"message_id"`
	}
	inst.adminJSON(t, &sent, "send", "--user", "app", "--from", "app@api.test", "--to", "shell@example.net",
		"--subject", "from the shell", "--text", "sent by sesame send "+tok4)
	msg4 := inst.expectDelivered(t, tok4, "api.test")
	if sent.MessageID == "" || !bytes.Contains(msg4.Data, []byte("with HTTPS id "+sent.MessageID)) {
		t.Errorf("sesame send printed message_id %q; the delivered message says:\n%s", sent.MessageID, head(msg4.Data))
	}
	status, _, stderr := inst.adminStatus(t, "send", "--user", "app", "--from", "app@unverified.test", "--to", "shell@example.net",
		"--subject", "s", "--text", "t")
	if status == 0 || !strings.Contains(stderr, "MessageRejected: Email address is not verified") {
		t.Errorf("sesame send from an unverified address: exit %d, %q; want a failure saying MessageRejected", status, stderr)
	}
}

// attachment returns the decoded body of the part whose filename is name.
func attachment(t *testing.T, m *mail.Message, name string) []byte {
	t.Helper()
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		t.Fatalf("Content-Type %q: want multipart", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart() // decodes quoted-printable, not base64
		if err != nil {
			t.Fatalf("no part named %s: %v", name, err)
		}
		if p.FileName() == name {
			if p.Header.Get("Content-Transfer-Encoding") != "base64" {
				t.Fatalf("attachment encoded %q", p.Header.Get("Content-Transfer-Encoding"))
			}
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			out, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
}

func head(b []byte) string {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i > 0 {
		return string(b[:i])
	}
	return string(b)
}

// TestAPIConcurrency: 50 AWS SDK clients send at once, each on its own
// connection; every accepted message is delivered exactly once. The same
// load over SMTP (50 go-smtp clients) gives the figures to compare: the
// rate and serve's CPU per message of each door (logged, not asserted).
func TestAPIConcurrency(t *testing.T) {
	const clients, per = 50, 4
	inst := newInstance(t)
	inst.unthrottled()
	inst.addDomain(t, senderDomain)
	out := inst.mustAdmin(t, "user", "create", "app", "--json")
	var user struct {
		creds
		apiKeys
	}
	if err := json.Unmarshal(out, &user); err != nil {
		t.Fatal(err)
	}
	inst.start()
	text := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 160) // 10 KiB
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sesClients := make([]*sesv2.Client, clients)
	for n := range sesClients {
		sesClients[n] = inst.sesClient(t, user.apiKeys, nil)
	}
	run := func(send func(n int, tok string) error) (accepted []string, elapsed, cpu time.Duration) {
		var mu sync.Mutex
		var firstErr error
		cpu0, start := processCPU(t, inst), time.Now()
		var wg sync.WaitGroup
		for n := range clients {
			wg.Go(func() {
				for range per {
					tok := newToken()
					err := send(n, tok)
					mu.Lock()
					if err == nil {
						accepted = append(accepted, tok)
					} else if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		elapsed, cpu = time.Since(start), processCPU(t, inst)-cpu0
		if firstErr != nil || len(accepted) != clients*per {
			t.Fatalf("%d of %d accepted; first error: %v", len(accepted), clients*per, firstErr)
		}
		waitArrived(t, inst.sink, accepted, 2*time.Minute)
		for _, tok := range accepted {
			if n := len(inst.sink.Keyed(tok)); n != 1 {
				t.Errorf("message %s delivered %d times", tok, n)
			}
		}
		return accepted, elapsed, cpu
	}

	apiTokens, apiTime, apiCPU := run(func(n int, tok string) error {
		_, err := sesClients[n].SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String(sender),
			Destination: &types.Destination{ToAddresses: []string{recipient}},
			Content: &types.EmailContent{Simple: &types.Message{Subject: &types.Content{Data: aws.String(tok)},
				Body: &types.Body{Text: &types.Content{Data: aws.String(tok + "\n" + text)}}}}})
		return err
	})

	conns := make([]*smtp.Client, clients)
	for n := range conns {
		c, err := smtp.DialStartTLS(inst.smtpAddr, insecureTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", user.Username, user.Password)); err != nil {
			t.Fatal(err)
		}
		conns[n] = c
	}
	_, smtpTime, smtpCPU := run(func(n int, tok string) error {
		s := &submission{from: sender, to: recipient, token: tok}
		return sendOne(conns[n], append(s.message("TestAPIConcurrency"), text...))
	})

	total := float64(len(apiTokens))
	t.Logf("%d messages of 10 KiB from %d clients at once: API %.0f msg/s, %v of serve's CPU per message; SMTP %.0f msg/s, %v per message",
		len(apiTokens), clients, total/apiTime.Seconds(), apiCPU/time.Duration(total), total/smtpTime.Seconds(), smtpCPU/time.Duration(total))
}

// TestAPITemplates: templates made, read, listed, rendered, updated and
// deleted with the AWS SDK for Go, and SendEmail with Template content
// (stored and inline) delivered DKIM-verified with the data substituted,
// HTML-escaped in the HTML part; missing data and an unknown template are
// refused with nothing queued.
func TestAPITemplates(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	inst.addDomain(t, "api.test")
	keys := inst.createAPIUser(t, "app")
	inst.start()
	ses := inst.sesClient(t, keys, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	_, err := ses.CreateEmailTemplate(ctx, &sesv2.CreateEmailTemplateInput{TemplateName: aws.String("welcome"),
		TemplateContent: &types.EmailTemplateContent{Subject: aws.String("Welcome, {{name}}"),
			Text: aws.String("Hello {{name}}, your code is {{code}}."), Html: aws.String("<p>Hello {{name}}, code {{code}}</p>")}})
	if err != nil {
		t.Fatalf("CreateEmailTemplate: %v", err)
	}
	_, err = ses.CreateEmailTemplate(ctx, &sesv2.CreateEmailTemplateInput{TemplateName: aws.String("welcome"),
		TemplateContent: &types.EmailTemplateContent{Subject: aws.String("x"), Text: aws.String("y")}})
	var exists *types.AlreadyExistsException
	if !errors.As(err, &exists) {
		t.Errorf("CreateEmailTemplate of a taken name: %v; want *types.AlreadyExistsException", err)
	}
	got, err := ses.GetEmailTemplate(ctx, &sesv2.GetEmailTemplateInput{TemplateName: aws.String("welcome")})
	if err != nil || aws.ToString(got.TemplateContent.Subject) != "Welcome, {{name}}" {
		t.Fatalf("GetEmailTemplate: %+v, %v", got, err)
	}
	list, err := ses.ListEmailTemplates(ctx, &sesv2.ListEmailTemplatesInput{})
	if err != nil || len(list.TemplatesMetadata) != 1 || aws.ToString(list.TemplatesMetadata[0].TemplateName) != "welcome" ||
		list.TemplatesMetadata[0].CreatedTimestamp == nil || time.Since(*list.TemplatesMetadata[0].CreatedTimestamp) > time.Hour {
		t.Errorf("ListEmailTemplates: %+v, %v", list, err)
	}
	rendered, err := ses.TestRenderEmailTemplate(ctx, &sesv2.TestRenderEmailTemplateInput{TemplateName: aws.String("welcome"),
		TemplateData: aws.String(`{"name":"Ann","code":"<42>"}`)})
	if err != nil || !strings.Contains(aws.ToString(rendered.RenderedTemplate), "Subject: Welcome, Ann") {
		t.Errorf("TestRenderEmailTemplate: %+v, %v", rendered, err)
	}

	tok := newToken()
	out, err := ses.SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String("app@api.test"),
		Destination: &types.Destination{ToAddresses: []string{"ann@example.net"}},
		Content: &types.EmailContent{Template: &types.Template{TemplateName: aws.String("welcome"),
			TemplateData: aws.String(`{"name":"Ann","code":"<` + tok + `>"}`)}}})
	if err != nil {
		t.Fatalf("SendEmail (Template): %v", err)
	}
	msg := inst.expectDelivered(t, tok, "api.test")
	if !bytes.Contains(msg.Data, []byte("id "+*out.MessageId)) || !bytes.Contains(msg.Data, []byte("Subject: Welcome, Ann")) ||
		!bytes.Contains(msg.Data, []byte("code is <"+tok+">")) || !bytes.Contains(msg.Data, []byte("code &lt;"+tok+"&gt;")) {
		t.Errorf("the delivered message does not hold the rendered template (text as is, HTML escaped):\n%s", msg.Data)
	}

	tok2 := newToken()
	if _, err := ses.SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String("app@api.test"),
		Destination: &types.Destination{ToAddresses: []string{"bo@example.net"}},
		Content: &types.EmailContent{Template: &types.Template{
			TemplateContent: &types.EmailTemplateContent{Subject: aws.String("Inline {{x}}"), Text: aws.String("{{x}}")},
			TemplateData:    aws.String(`{"x":"` + tok2 + `"}`)}}}); err != nil {
		t.Fatalf("SendEmail (inline template): %v", err)
	}
	inst.expectDelivered(t, tok2, "api.test")

	tok3 := newToken()
	_, err = ses.SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String("app@api.test"),
		Destination: &types.Destination{ToAddresses: []string{"cy@example.net"}},
		Content: &types.EmailContent{Template: &types.Template{TemplateName: aws.String("welcome"),
			TemplateData: aws.String(`{"name":"` + tok3 + `"}`)}}})
	var bad *types.BadRequestException
	if !errors.As(err, &bad) || !strings.Contains(bad.ErrorMessage(), "{{code}}") {
		t.Errorf("SendEmail without the data for {{code}}: %v; want *types.BadRequestException naming it", err)
	}
	_, err = ses.SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String("app@api.test"),
		Destination: &types.Destination{ToAddresses: []string{"cy@example.net"}},
		Content:     &types.EmailContent{Template: &types.Template{TemplateName: aws.String("nope"), TemplateData: aws.String(`{}`)}}})
	var notFound *types.NotFoundException
	if !errors.As(err, &notFound) {
		t.Errorf("SendEmail with an unknown template: %v; want *types.NotFoundException", err)
	}

	// SendBulkEmail: the default data under each entry's own, one result per entry.
	tokA, tokB := newToken(), newToken()
	entry := func(to, data string) types.BulkEmailEntry {
		return types.BulkEmailEntry{Destination: &types.Destination{ToAddresses: []string{to}},
			ReplacementEmailContent: &types.ReplacementEmailContent{ReplacementTemplate: &types.ReplacementTemplate{ReplacementTemplateData: aws.String(data)}}}
	}
	bulk, err := ses.SendBulkEmail(ctx, &sesv2.SendBulkEmailInput{FromEmailAddress: aws.String("app@api.test"),
		DefaultContent: &types.BulkEmailContent{Template: &types.Template{TemplateName: aws.String("welcome"),
			TemplateData: aws.String(`{"name":"friend","code":"none"}`)}},
		BulkEmailEntries: []types.BulkEmailEntry{
			entry("a@example.net", `{"code":"`+tokA+`"}`),
			entry("not an address", `{}`),
			entry("b@example.net", `{"name":"Bea","code":"`+tokB+`"}`),
		}})
	if err != nil {
		t.Fatalf("SendBulkEmail: %v", err)
	}
	if r := bulk.BulkEmailEntryResults; len(r) != 3 || r[0].Status != types.BulkEmailStatusSuccess || r[1].Status != types.BulkEmailStatusInvalidParameter ||
		r[2].Status != types.BulkEmailStatusSuccess || aws.ToString(r[0].MessageId) == "" {
		t.Errorf("SendBulkEmail results: %+v", r)
	}
	if m := inst.expectDelivered(t, tokA, "api.test"); !bytes.Contains(m.Data, []byte("Subject: Welcome, friend")) {
		t.Errorf("the first bulk message lacks the default data:\n%s", head(m.Data))
	}
	if m := inst.expectDelivered(t, tokB, "api.test"); !bytes.Contains(m.Data, []byte("Subject: Welcome, Bea")) {
		t.Errorf("the last bulk message lacks its own data:\n%s", head(m.Data))
	}

	if _, err := ses.UpdateEmailTemplate(ctx, &sesv2.UpdateEmailTemplateInput{TemplateName: aws.String("welcome"),
		TemplateContent: &types.EmailTemplateContent{Subject: aws.String("Hi {{name}}"), Text: aws.String("{{name}}")}}); err != nil {
		t.Errorf("UpdateEmailTemplate: %v", err)
	}
	if got, err := ses.GetEmailTemplate(ctx, &sesv2.GetEmailTemplateInput{TemplateName: aws.String("welcome")}); err != nil ||
		aws.ToString(got.TemplateContent.Subject) != "Hi {{name}}" || got.TemplateContent.Html != nil {
		t.Errorf("GetEmailTemplate after the update: %+v, %v", got, err)
	}
	if _, err := ses.DeleteEmailTemplate(ctx, &sesv2.DeleteEmailTemplateInput{TemplateName: aws.String("welcome")}); err != nil {
		t.Errorf("DeleteEmailTemplate: %v", err)
	}
	if _, err := ses.GetEmailTemplate(ctx, &sesv2.GetEmailTemplateInput{TemplateName: aws.String("welcome")}); !errors.As(err, &notFound) {
		t.Errorf("GetEmailTemplate after the delete: %v; want *types.NotFoundException", err)
	}
	for _, m := range inst.sink.Messages() {
		if bytes.Contains(m.Data, []byte(tok3)) {
			t.Error("the refused template send was delivered")
		}
	}
}
