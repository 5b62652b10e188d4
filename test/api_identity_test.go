package test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"

	"github.com/sesame-mail/sesame/testkit"
)

// TestAPIIdentities drives the identity operations with the AWS SDK: a
// domain made through the API has the DKIM keys `sesame domain show`
// lists (its selectors are SES's Tokens), is PENDING and refused as a
// sender until its records are published, then SUCCESS and sends signed;
// a verified identity is the operator's to delete; an address gets its
// verification link by mail and may be deleted while pending. A credential
// limited to some identities sees and creates only those, and creating
// one never lets it send as another.
func TestAPIIdentities(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	app := inst.createAPIUser(t, "app")
	narrow := inst.createAPIUser(t, "narrow")
	inst.mustAdmin(t, "user", "allow", "narrow", "narrow.test")
	inst.start()
	ses, sesN := inst.sesClient(t, app, nil), inst.sesClient(t, narrow, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	send := func(c *sesv2.Client, from, tok string) error {
		_, err := c.SendEmail(ctx, &sesv2.SendEmailInput{FromEmailAddress: aws.String(from),
			Destination: &types.Destination{ToAddresses: []string{"ann@example.net"}},
			Content: &types.EmailContent{Simple: &types.Message{Subject: &types.Content{Data: aws.String("Hi")},
				Body: &types.Body{Text: &types.Content{Data: aws.String(tok)}}}}})
		return err
	}

	created, err := ses.CreateEmailIdentity(ctx, &sesv2.CreateEmailIdentityInput{EmailIdentity: aws.String("New.Test")})
	if err != nil {
		t.Fatalf("CreateEmailIdentity of a domain: %v", err)
	}
	var shown domainInfo
	inst.adminJSON(t, &shown, "domain", "show", "new.test")
	var selectors []string
	for _, r := range shown.dkimRecords() {
		selectors = append(selectors, strings.SplitN(r.Name, ".", 2)[0])
	}
	if created.IdentityType != types.IdentityTypeDomain || created.VerifiedForSendingStatus || created.DkimAttributes == nil ||
		created.DkimAttributes.Status != types.DkimStatusPending || len(selectors) == 0 || !slices.Equal(created.DkimAttributes.Tokens, selectors) {
		t.Fatalf("CreateEmailIdentity: %+v (DKIM %+v); want a pending DOMAIN whose tokens are the selectors %v", created, created.DkimAttributes, selectors)
	}
	if _, err := ses.CreateEmailIdentity(ctx, &sesv2.CreateEmailIdentityInput{EmailIdentity: aws.String("new.test")}); !isAPIError[*types.AlreadyExistsException](err) {
		t.Errorf("CreateEmailIdentity again: %v; want *types.AlreadyExistsException", err)
	}
	if err := send(ses, "shop@new.test", newToken()); !isAPIError[*types.MessageRejected](err) {
		t.Errorf("SendEmail from the pending domain: %v; want *types.MessageRejected", err)
	}
	inst.mu.Lock()
	inst.records = append(inst.records, shown.Records...)
	inst.mu.Unlock()
	inst.publishDKIM(shown)
	inst.verifyDomain(t, "new.test")
	got, err := ses.GetEmailIdentity(ctx, &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String("new.test")})
	if err != nil || !got.VerifiedForSendingStatus || got.VerificationStatus != types.VerificationStatusSuccess ||
		got.DkimAttributes.Status != types.DkimStatusSuccess || !slices.Equal(got.DkimAttributes.Tokens, selectors) {
		t.Fatalf("GetEmailIdentity of the verified domain: %+v, %v", got, err)
	}
	tok := newToken()
	if err := send(ses, "shop@new.test", tok); err != nil {
		t.Fatalf("SendEmail from the verified domain: %v", err)
	}
	inst.expectDelivered(t, tok, "new.test")
	if _, err := ses.DeleteEmailIdentity(ctx, &sesv2.DeleteEmailIdentityInput{EmailIdentity: aws.String("new.test")}); !isAPIError[*types.BadRequestException](err) {
		t.Errorf("DeleteEmailIdentity of a verified domain: %v; want *types.BadRequestException (the operator's)", err)
	}

	// An address: its verification link goes out by mail.
	created, err = ses.CreateEmailIdentity(ctx, &sesv2.CreateEmailIdentityInput{EmailIdentity: aws.String("Desk@example.org")})
	if err != nil || created.IdentityType != types.IdentityTypeEmailAddress || created.VerifiedForSendingStatus {
		t.Fatalf("CreateEmailIdentity of an address: %+v, %v", created, err)
	}
	if _, ok := inst.sink.Wait(func(m *testkit.Message) bool {
		return slices.Contains(m.To, "desk@example.org") && bytes.Contains(m.Data, []byte("/verify/"))
	}, 30*time.Second); !ok {
		t.Errorf("no verification link reached desk@example.org")
	}
	if got, err := ses.GetEmailIdentity(ctx, &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String("desk@example.org")}); err != nil ||
		got.IdentityType != types.IdentityTypeEmailAddress || got.VerificationStatus != types.VerificationStatusPending || got.VerifiedForSendingStatus {
		t.Errorf("GetEmailIdentity of the pending address: %+v, %v", got, err)
	}
	list, err := ses.ListEmailIdentities(ctx, &sesv2.ListEmailIdentitiesInput{PageSize: aws.Int32(1)})
	if err != nil || len(list.EmailIdentities) != 1 || aws.ToString(list.EmailIdentities[0].IdentityName) != "desk@example.org" || list.NextToken == nil {
		t.Fatalf("ListEmailIdentities of 1: %+v, %v", list, err)
	}
	list, err = ses.ListEmailIdentities(ctx, &sesv2.ListEmailIdentitiesInput{PageSize: aws.Int32(1), NextToken: list.NextToken})
	if err != nil || len(list.EmailIdentities) != 1 || aws.ToString(list.EmailIdentities[0].IdentityName) != "new.test" ||
		!list.EmailIdentities[0].SendingEnabled || list.EmailIdentities[0].IdentityType != types.IdentityTypeDomain {
		t.Errorf("ListEmailIdentities, the second page: %+v, %v", list, err)
	}
	if _, err := ses.DeleteEmailIdentity(ctx, &sesv2.DeleteEmailIdentityInput{EmailIdentity: aws.String("desk@example.org")}); err != nil {
		t.Errorf("DeleteEmailIdentity of the pending address: %v", err)
	}
	if _, err := ses.GetEmailIdentity(ctx, &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String("desk@example.org")}); !isAPIError[*types.NotFoundException](err) {
		t.Errorf("GetEmailIdentity after the delete: %v; want *types.NotFoundException", err)
	}

	// A credential allowed only narrow.test.
	if _, err := sesN.CreateEmailIdentity(ctx, &sesv2.CreateEmailIdentityInput{EmailIdentity: aws.String("elsewhere.test")}); !isAPIError[*types.BadRequestException](err) {
		t.Errorf("CreateEmailIdentity outside the credential's allowed identities: %v; want *types.BadRequestException", err)
	}
	if _, err := sesN.CreateEmailIdentity(ctx, &sesv2.CreateEmailIdentityInput{EmailIdentity: aws.String("narrow.test")}); err != nil {
		t.Errorf("CreateEmailIdentity of its allowed domain: %v", err)
	}
	if _, err := sesN.GetEmailIdentity(ctx, &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String("new.test")}); !isAPIError[*types.NotFoundException](err) {
		t.Errorf("GetEmailIdentity of an identity the credential may not use: %v; want *types.NotFoundException", err)
	}
	if list, err := sesN.ListEmailIdentities(ctx, &sesv2.ListEmailIdentitiesInput{}); err != nil || len(list.EmailIdentities) != 1 ||
		aws.ToString(list.EmailIdentities[0].IdentityName) != "narrow.test" {
		t.Errorf("ListEmailIdentities of the narrow credential: %+v, %v; want narrow.test only", list, err)
	}
	if err := send(sesN, "shop@new.test", newToken()); !isAPIError[*types.MessageRejected](err) {
		t.Errorf("SendEmail by the narrow credential from the verified new.test: %v; want *types.MessageRejected", err)
	}
	if _, err := sesN.DeleteEmailIdentity(ctx, &sesv2.DeleteEmailIdentityInput{EmailIdentity: aws.String("narrow.test")}); err != nil {
		t.Errorf("DeleteEmailIdentity of its pending domain: %v", err)
	}
	if status := inst.domainStatus(t, "narrow.test"); status != "" {
		t.Errorf("narrow.test is still listed by sesame domain list (%s) after DeleteEmailIdentity", status)
	}
}
