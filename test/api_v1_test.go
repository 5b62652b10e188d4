package test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ses"
	sestypes "github.com/aws/aws-sdk-go-v2/service/ses/types"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
)

// sesV1Client is the AWS SDK's SES v1 (Query API) client for the
// instance's API, built with the v2 client's options (certificate, no
// retries).
func (i *instance) sesV1Client(t *testing.T, k apiKeys) *ses.Client {
	t.Helper()
	var o2 sesv2.Options
	i.sesClient(t, k, func(o *sesv2.Options) { o2 = *o })
	return ses.New(ses.Options{Region: "us-west-2", BaseEndpoint: o2.BaseEndpoint, RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, ""),
		HTTPClient:  o2.HTTPClient.(*http.Client)})
}

// TestAPIQueryV1 sends with the AWS SDK for Go's SES v1 client, as
// Laravel's default driver and older plugins do: SendRawEmail and
// SendEmail delivered DKIM-verified, an unverified sender the typed
// MessageRejected, GetSendQuota, a wrong secret 403 in the Query API's
// XML shape, and an action not implemented named.
func TestAPIQueryV1(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	inst.addDomain(t, "api.test")
	keys := inst.createAPIUser(t, "app")
	inst.start()
	v1 := inst.sesV1Client(t, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	tok := newToken()
	raw := "From: app@api.test\r\nTo: raw@example.net\r\nSubject: v1 raw\r\n\r\n" + tok + "\r\n"
	out, err := v1.SendRawEmail(ctx, &ses.SendRawEmailInput{RawMessage: &sestypes.RawMessage{Data: []byte(raw)}})
	if err != nil {
		t.Fatalf("SendRawEmail: %v", err)
	}
	msg := inst.expectDelivered(t, tok, "api.test")
	if !bytes.Contains(msg.Data, []byte("id "+aws.ToString(out.MessageId))) {
		t.Errorf("MessageId %q is not the queue id:\n%s", aws.ToString(out.MessageId), head(msg.Data))
	}

	tok2 := newToken()
	if _, err := v1.SendEmail(ctx, &ses.SendEmailInput{Source: aws.String("App <app@api.test>"),
		Destination: &sestypes.Destination{ToAddresses: []string{"to@example.net"}, BccAddresses: []string{"hidden@example.net"}},
		Message: &sestypes.Message{Subject: &sestypes.Content{Data: aws.String("v1 simple")},
			Body: &sestypes.Body{Text: &sestypes.Content{Data: aws.String("Hello " + tok2)}}}}); err != nil {
		t.Fatalf("SendEmail: %v", err)
	}
	msg2 := inst.expectDelivered(t, tok2, "api.test")
	if got := strings.Join(msg2.To, ","); got != "to@example.net,hidden@example.net" || bytes.Contains(msg2.Data, []byte("hidden@")) {
		t.Errorf("delivered to %s; the Bcc address must be in the envelope only:\n%s", got, head(msg2.Data))
	}

	_, err = v1.SendEmail(ctx, &ses.SendEmailInput{Source: aws.String("x@unverified.test"),
		Destination: &sestypes.Destination{ToAddresses: []string{"to@example.net"}},
		Message:     &sestypes.Message{Subject: &sestypes.Content{Data: aws.String("s")}, Body: &sestypes.Body{Text: &sestypes.Content{Data: aws.String("b")}}}})
	var rejected *sestypes.MessageRejected
	if !errors.As(err, &rejected) || !strings.Contains(rejected.ErrorMessage(), "Email address is not verified") {
		t.Errorf("SendEmail from an unverified address: %v; want *types.MessageRejected", err)
	}

	q, err := v1.GetSendQuota(ctx, &ses.GetSendQuotaInput{})
	if err != nil || q.Max24HourSend != 1e9 || q.SentLast24Hours != 3 || q.MaxSendRate != 1e6 {
		t.Errorf("GetSendQuota: %+v, %v; want 1e9 a day, 1e6 a second, 3 sent", q, err)
	}

	wrong := keys
	wrong.SecretAccessKey = strings.Repeat("y", 40)
	_, err = inst.sesV1Client(t, wrong).GetSendQuota(ctx, &ses.GetSendQuotaInput{})
	wantAPIError(t, "a wrong secret (v1)", err, 403, "SignatureDoesNotMatch")

	_, err = v1.ListIdentities(ctx, &ses.ListIdentitiesInput{})
	wantAPIError(t, "ListIdentities (v1, not implemented)", err, 400, "InvalidParameterValue")
}
