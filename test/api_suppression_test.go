package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
)

// TestAPISuppression drives the suppression operations with the AWS SDK:
// an entry a credential puts is on Sesame's list (the CLI shows it, the
// shared list stops every credential's mail to it), another credential's
// own entries stay invisible to it, and Delete lifts the entry.
func TestAPISuppression(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	app := inst.createAPIUser(t, "app")
	other := inst.createAPIUser(t, "other")
	inst.start()
	ses, ses2 := inst.sesClient(t, app, nil), inst.sesClient(t, other, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := ses.PutSuppressedDestination(ctx, &sesv2.PutSuppressedDestinationInput{
		EmailAddress: aws.String("Gone@Example.net"), Reason: types.SuppressionListReasonComplaint}); err != nil {
		t.Fatalf("PutSuppressedDestination: %v", err)
	}
	if _, err := ses.PutSuppressedDestination(ctx, &sesv2.PutSuppressedDestinationInput{
		EmailAddress: aws.String("not an address"), Reason: types.SuppressionListReasonBounce}); !isAPIError[*types.BadRequestException](err) {
		t.Errorf("PutSuppressedDestination of no address: %v; want *types.BadRequestException", err)
	}
	if out := string(inst.mustAdmin(t, "suppression", "show", "gone@example.net")); !strings.Contains(out, "complaint") {
		t.Errorf("sesame suppression show after PutSuppressedDestination:\n%s", out)
	}
	// The operator's own entry for the other credential: not app's business.
	inst.mustAdmin(t, "suppression", "add", "theirs@example.net", "--user", "other")

	for name, c := range map[string]*sesv2.Client{"app": ses, "other": ses2} { // the shared list stops both
		got, err := c.GetSuppressedDestination(ctx, &sesv2.GetSuppressedDestinationInput{EmailAddress: aws.String("gone@example.net")})
		if err != nil || aws.ToString(got.SuppressedDestination.EmailAddress) != "gone@example.net" ||
			got.SuppressedDestination.Reason != types.SuppressionListReasonComplaint ||
			got.SuppressedDestination.LastUpdateTime == nil || time.Since(*got.SuppressedDestination.LastUpdateTime) > time.Hour {
			t.Errorf("GetSuppressedDestination by %s: %+v, %v", name, got, err)
		}
	}
	_, err := ses.GetSuppressedDestination(ctx, &sesv2.GetSuppressedDestinationInput{EmailAddress: aws.String("theirs@example.net")})
	if !isAPIError[*types.NotFoundException](err) {
		t.Errorf("GetSuppressedDestination of another credential's entry: %v; want *types.NotFoundException", err)
	}
	if got, err := ses2.GetSuppressedDestination(ctx, &sesv2.GetSuppressedDestinationInput{EmailAddress: aws.String("theirs@example.net")}); err != nil ||
		got.SuppressedDestination.Reason != types.SuppressionListReasonBounce {
		t.Errorf("GetSuppressedDestination of the credential's own manual entry: %+v, %v; want BOUNCE", got, err)
	}

	list := func(c *sesv2.Client, in *sesv2.ListSuppressedDestinationsInput) []string {
		t.Helper()
		out, err := c.ListSuppressedDestinations(ctx, in)
		if err != nil {
			t.Fatalf("ListSuppressedDestinations: %v", err)
		}
		var addrs []string
		for _, s := range out.SuppressedDestinationSummaries {
			addrs = append(addrs, aws.ToString(s.EmailAddress)+"/"+string(s.Reason))
		}
		return addrs
	}
	if got := list(ses, &sesv2.ListSuppressedDestinationsInput{}); strings.Join(got, " ") != "gone@example.net/COMPLAINT" {
		t.Errorf("app's ListSuppressedDestinations: %v; want the shared entry only", got)
	}
	if got := list(ses2, &sesv2.ListSuppressedDestinationsInput{}); len(got) != 2 {
		t.Errorf("other's ListSuppressedDestinations: %v; want the shared entry and its own", got)
	}
	if got := list(ses2, &sesv2.ListSuppressedDestinationsInput{Reasons: []types.SuppressionListReason{types.SuppressionListReasonBounce}}); strings.Join(got, " ") != "theirs@example.net/BOUNCE" {
		t.Errorf("ListSuppressedDestinations of BOUNCE: %v", got)
	}
	if got := list(ses2, &sesv2.ListSuppressedDestinationsInput{StartDate: aws.Time(time.Now().Add(time.Hour))}); len(got) != 0 {
		t.Errorf("ListSuppressedDestinations from an hour ahead: %v; want none", got)
	}
	page, err := ses2.ListSuppressedDestinations(ctx, &sesv2.ListSuppressedDestinationsInput{PageSize: aws.Int32(1)})
	if err != nil || len(page.SuppressedDestinationSummaries) != 1 || page.NextToken == nil {
		t.Fatalf("ListSuppressedDestinations of 1: %+v, %v", page, err)
	}
	if page2, err := ses2.ListSuppressedDestinations(ctx, &sesv2.ListSuppressedDestinationsInput{PageSize: aws.Int32(1), NextToken: page.NextToken}); err != nil ||
		len(page2.SuppressedDestinationSummaries) != 1 || page2.NextToken != nil ||
		*page2.SuppressedDestinationSummaries[0].EmailAddress == *page.SuppressedDestinationSummaries[0].EmailAddress {
		t.Errorf("the second page: %+v, %v", page2, err)
	}

	_, err = ses.DeleteSuppressedDestination(ctx, &sesv2.DeleteSuppressedDestinationInput{EmailAddress: aws.String("theirs@example.net")})
	if !isAPIError[*types.NotFoundException](err) {
		t.Errorf("DeleteSuppressedDestination of another credential's entry: %v; want *types.NotFoundException", err)
	}
	if _, err := ses.DeleteSuppressedDestination(ctx, &sesv2.DeleteSuppressedDestinationInput{EmailAddress: aws.String("gone@example.net")}); err != nil {
		t.Fatalf("DeleteSuppressedDestination: %v", err)
	}
	if _, err := ses2.GetSuppressedDestination(ctx, &sesv2.GetSuppressedDestinationInput{EmailAddress: aws.String("gone@example.net")}); !isAPIError[*types.NotFoundException](err) {
		t.Errorf("GetSuppressedDestination after the delete: %v; want *types.NotFoundException", err)
	}
	if _, err := inst.admin("suppression", "show", "theirs@example.net"); err != nil {
		t.Errorf("the other credential's entry is gone: %v", err)
	}
}

// isAPIError says whether err is the SDK's typed exception T.
func isAPIError[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}
