package test

import (
	"strings"
	"testing"
)

// TestIdentityDMARCProtectedAddress: once the domain of a verified sender
// address publishes DMARC p=reject, re-adding the address records that
// policy and is refused, and the running server refuses mail from it with a
// reply that says why and what to do; `address add --force` lets it send
// again, and the message is delivered. A new address of such a domain is not
// added without --force.
func TestIdentityDMARCProtectedAddress(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, map[string]any{"dkim.fallback_domain": senderDomain})
	e.inst.addDomain(t, senderDomain)
	app := e.inst.createUser(t, "app")
	e.start(t)

	addr := "me@" + personalDomain
	e.verifyAddress(t, e.mx2, addr) // personal.example publishes no DMARC yet
	wantAccepted(t, "as "+addr+" while its domain has no DMARC policy",
		e.submit(t, outgoing{user: app, envFrom: addr, from: addr, to: []string{recipient}}))

	e.zone.SetTXT("_dmarc."+personalDomain, "v=DMARC1; p=reject")
	code, out, errOut := e.inst.adminStatus(t, "address", "add", addr)
	if code != 1 || !strings.Contains(errOut, addr+" (verified) may not send: "+personalDomain+" publishes DMARC p=reject") {
		t.Fatalf("address add %s after its domain published p=reject: exit %d, want 1 saying why\n%s%s", addr, code, out, errOut)
	}
	wantRefused(t, "as "+addr+" after its domain published p=reject",
		e.submit(t, outgoing{user: app, envFrom: addr, from: addr, to: []string{recipient}}), "MAIL", 554,
		"5.7.1 Message rejected: "+personalDomain+" publishes DMARC p=reject, so receivers refuse mail from "+addr+
			" that "+personalDomain+"'s own servers did not send; send from an address in a domain verified on this server, "+
			`or ask the operator to allow this address ("sesame address add `+addr+` --force")`)

	if out := string(e.inst.mustAdmin(t, "address", "add", addr, "--force")); !strings.Contains(out, "Warning: "+personalDomain+" publishes DMARC p=reject") {
		t.Errorf("address add --force does not warn:\n%s", out)
	}
	tok := newToken()
	wantAccepted(t, "as "+addr+" once allowed",
		e.submit(t, outgoing{user: app, envFrom: addr, from: addr, to: []string{recipient}, token: tok}))
	mustWait(t, e.mx1, "the message from the allowed address", carrying(tok))

	other := "you@" + personalDomain
	code, out, errOut = e.inst.adminStatus(t, "address", "add", other)
	if code != 1 || !strings.Contains(errOut, other+" was not added: "+personalDomain+" publishes DMARC p=reject") {
		t.Errorf("address add %s: exit %d, want 1 (not added)\n%s%s", other, code, out, errOut)
	}
}
