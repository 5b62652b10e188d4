package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// "user create --allow" restricts the credential from its first moment, with
// the identities given as "user allow" takes them: repeated, or as a comma
// list. Without it the output says the credential may send as every verified
// identity.
func TestUserCreateAllow(t *testing.T) {
	cfgPath, _ := writeConfig(t, t.TempDir(), "")
	show := func(name string) userShowOutput {
		t.Helper()
		out, errOut, code := sesame(t, "user", "show", name, "--config", cfgPath, "--json")
		var u userShowOutput
		if err := json.Unmarshal([]byte(out), &u); code != 0 || err != nil {
			t.Fatalf("user show %s: exit %d %v\n%s%s", name, code, err, out, errOut)
		}
		return u
	}

	out, errOut, code := sesame(t, "user", "create", "shop", "--allow", "Shop.Example", "--allow", "news@other.example,billing.example",
		"--config", cfgPath, "--json")
	var created credentialsOutput
	if err := json.Unmarshal([]byte(out), &created); code != 0 || err != nil || created.Allowed == nil {
		t.Fatalf("user create --allow: exit %d %v\n%s%s", code, err, out, errOut)
	}
	want := []string{"billing.example", "news@other.example", "shop.example"}
	if got := slices.Sorted(slices.Values(*created.Allowed)); !slices.Equal(got, want) {
		t.Errorf("create --json: allowed_identities %q, want %q", *created.Allowed, want)
	}
	if got := show("shop").Allowed; !slices.Equal(got, want) {
		t.Errorf("after create --allow: allowed_identities %q, want %q", got, want)
	}

	out, _, code = sesame(t, "user", "create", "app", "--allow", "app.example", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "It may send only as app.example (each must also be verified).") {
		t.Errorf("create --allow says:\n%s", out)
	}
	out, _, code = sesame(t, "user", "create", "open", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "It may send as every verified domain and address.") ||
		!strings.Contains(out, `sesame user allow open example.com`) {
		t.Errorf("create without --allow does not say the credential is unrestricted:\n%s", out)
	}
	if got := show("open").Allowed; len(got) != 0 {
		t.Errorf("created without --allow: allowed_identities %q, want none", got)
	}

	// A bad identity creates nothing.
	if _, errOut, code := sesame(t, "user", "create", "bad", "--allow", "not a domain", "--config", cfgPath); code != 1 ||
		!strings.Contains(errOut, `--allow: "not a domain" is not a domain name`) {
		t.Errorf("create --allow with a bad identity: exit %d: %s", code, errOut)
	}
	if _, errOut, code := sesame(t, "user", "show", "bad", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "no credentials") {
		t.Errorf("a refused create left a credential: exit %d: %s", code, errOut)
	}

	// user allow takes comma lists too.
	if _, errOut, code := sesame(t, "user", "allow", "open", "a.example,b.example", "c@d.example", "--config", cfgPath); code != 0 {
		t.Fatalf("user allow: %s", errOut)
	}
	if got := show("open").Allowed; !slices.Equal(got, []string{"a.example", "b.example", "c@d.example"}) {
		t.Errorf("after user allow with a comma list: %q", got)
	}
}

// "user show" names the credential's SES API key id, never its secret.
func TestUserShowAPIKey(t *testing.T) {
	cfgPath, _ := writeConfig(t, t.TempDir(), "")
	out, errOut, code := sesame(t, "user", "create", "shop", "--config", cfgPath, "--json")
	var created credentialsOutput
	if err := json.Unmarshal([]byte(out), &created); code != 0 || err != nil || len(created.AccessKeyID) != 20 {
		t.Fatalf("user create: exit %d %v\n%s%s", code, err, out, errOut)
	}
	out, errOut, code = sesame(t, "user", "show", "shop", "--config", cfgPath, "--json")
	var shown userShowOutput
	if err := json.Unmarshal([]byte(out), &shown); code != 0 || err != nil {
		t.Fatalf("user show --json: exit %d %v\n%s%s", code, err, out, errOut)
	}
	if shown.AccessKeyID != created.AccessKeyID {
		t.Errorf("user show access_key_id %q, want %q", shown.AccessKeyID, created.AccessKeyID)
	}
	out, _, _ = sesame(t, "user", "show", "shop", "--config", cfgPath)
	if !strings.Contains(out, "API key id:     "+created.AccessKeyID+"\n") || strings.Contains(out, created.SecretAccessKey) {
		t.Errorf("user show:\n%s", out)
	}
}
