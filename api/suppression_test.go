package api

import (
	"testing"
	"time"
)

func TestSuppressionOperations(t *testing.T) {
	now := time.Now()
	base, _, _ := startAPI(t, now, 1<<20)
	do := func(method, path, body string) (int, string, map[string]any) {
		resp, out := call(t, method, base+path, []byte(body), testSecret, now, nil)
		return resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), out
	}
	for _, body := range []string{`{"EmailAddress":"a@example.net","Reason":"SPAM"}`, `{"EmailAddress":"A <a@example.net>","Reason":"BOUNCE"}`, `{"Reason":"BOUNCE"}`} {
		if code, typ, _ := do("PUT", "/v2/email/suppression/addresses", body); code != 400 || typ != "BadRequestException" {
			t.Errorf("PutSuppressedDestination %s: %d %s; want 400 BadRequestException", body, code, typ)
		}
	}
	if code, typ, out := do("PUT", "/v2/email/suppression/addresses", `{"EmailAddress":"A@Example.NET","Reason":"BOUNCE"}`); code != 200 {
		t.Fatalf("PutSuppressedDestination: %d %s %v", code, typ, out)
	}
	code, _, out := do("GET", "/v2/email/suppression/addresses/a%40example.net", "")
	d, _ := out["SuppressedDestination"].(map[string]any)
	if code != 200 || d["EmailAddress"] != "a@example.net" || d["Reason"] != "BOUNCE" || d["LastUpdateTime"] != float64(now.UnixMilli())/1000 {
		t.Errorf("GetSuppressedDestination: %d %v", code, out)
	}
	if code, typ, _ := do("GET", "/v2/email/suppression/addresses?Reason=SPAM", ""); code != 400 || typ != "BadRequestException" {
		t.Errorf("ListSuppressedDestinations with an unknown reason: %d %s", code, typ)
	}
	if code, typ, _ := do("GET", "/v2/email/suppression/addresses?NextToken=x", ""); code != 400 || typ != "InvalidNextTokenException" {
		t.Errorf("ListSuppressedDestinations with a bad token: %d %s", code, typ)
	}
	code, _, out = do("GET", "/v2/email/suppression/addresses?Reason=COMPLAINT", "")
	if l, ok := out["SuppressedDestinationSummaries"].([]any); code != 200 || !ok || len(l) != 0 {
		t.Errorf("ListSuppressedDestinations of complaints: %d %v; want an empty list", code, out)
	}
	if code, _, _ := do("DELETE", "/v2/email/suppression/addresses/a@example.net", ""); code != 200 {
		t.Errorf("DeleteSuppressedDestination: %d", code)
	}
	if code, typ, _ := do("DELETE", "/v2/email/suppression/addresses/a@example.net", ""); code != 404 || typ != "NotFoundException" {
		t.Errorf("DeleteSuppressedDestination again: %d %s; want 404 NotFoundException", code, typ)
	}
}
