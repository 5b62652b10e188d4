package identity

import (
	"context"
	"errors"
	"testing"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

func TestAuthorizer(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := testkit.Start(t)
	for name, status := range map[string]string{
		"example.com":           store.IdentityVerified,
		"pending.example":       store.IdentityPending,
		"failed.example":        store.IdentityFailed,
		"xn--bcher-kva.example": store.IdentityVerified,
	} {
		if err := st.CreateDomain(ctx, store.Domain{Name: name, CreatedAt: now, Status: status}); err != nil {
			t.Fatal(err)
		}
	}
	for addr, status := range map[string]string{
		"bob@other.example":    store.IdentityVerified,
		"carol@other.example":  store.IdentityPending,
		"dan@failed.example":   store.IdentityVerified, // the address, not its failed domain
		"erin@pending.example": store.IdentityFailed,
	} {
		if err := st.CreateAddress(ctx, store.Address{Address: addr, Status: status, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	az := NewAuthorizer(st)
	tests := []struct {
		allowed  []string
		address  string
		may      bool
		verified bool // VerifiedRecipient
	}{
		{nil, "anyone@example.com", true, true},
		{nil, "Anyone@EXAMPLE.com", true, true},
		{nil, "anyone@example.com.", true, true},
		{nil, "x@sub.example.com", false, false}, // a subdomain is another identity
		{nil, "bob@other.example", true, true},
		{nil, "BOB@Other.Example", true, true},
		{nil, "carol@other.example", false, false},
		{nil, "nobody@other.example", false, false},
		{nil, "x@pending.example", false, false},
		{nil, "erin@pending.example", false, false},
		{nil, "x@failed.example", false, false},
		{nil, "dan@failed.example", true, true},
		{nil, "x@unknown.example", false, false},
		{nil, "x@bücher.example", true, true},
		{nil, "no-domain", false, false},
		{nil, "", false, false},
		{[]string{"example.com"}, "shop@example.com", true, true},
		{[]string{"Example.COM"}, "shop@example.com", true, true},
		{[]string{"example.com"}, "bob@other.example", false, true},
		{[]string{"shop@example.com"}, "shop@example.com", true, true},
		{[]string{"shop@example.com"}, "SHOP@example.com", true, true},
		{[]string{"shop@example.com"}, "news@example.com", false, true},
		{[]string{"shop@example.com", "BOB@other.example"}, "bob@other.example", true, true},
		{[]string{"other.example"}, "carol@other.example", false, false}, // allowed, but not verified
		{[]string{"bücher.example"}, "x@xn--bcher-kva.example", true, true},
	}
	for _, tc := range tests {
		cred := store.Credential{Name: "shop", Allowed: tc.allowed}
		may, err := az.MaySendAs(ctx, cred, tc.address)
		if err != nil || may != tc.may {
			t.Errorf("MaySendAs(allowed %q, %q) = %v, %v; want %v", tc.allowed, tc.address, may, err, tc.may)
		}
		ok, err := az.VerifiedRecipient(ctx, tc.address)
		if err != nil || ok != tc.verified {
			t.Errorf("VerifiedRecipient(%q) = %v, %v; want %v", tc.address, ok, err, tc.verified)
		}
	}

	// Store trouble is an error, not a no.
	st.Close()
	if may, err := az.MaySendAs(ctx, store.Credential{}, "x@example.com"); err == nil || may {
		t.Errorf("MaySendAs with a closed store = %v, %v; want an error", may, err)
	}
	if _, err := az.VerifiedRecipient(ctx, "x@example.com"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("VerifiedRecipient with a closed store: %v", err)
	}
}

func TestMayUse(t *testing.T) {
	for _, c := range []struct {
		allowed []string
		id      string
		want    bool
	}{
		{nil, "anything.example", true},
		{[]string{"shop.example"}, "shop.example", true},
		{[]string{"shop.example"}, "Shop.Example.", true},
		{[]string{"shop.example"}, "news@shop.example", true},
		{[]string{"shop.example"}, "other.example", false},
		{[]string{"news@shop.example"}, "shop.example", false},
		{[]string{"news@shop.example"}, "News@shop.example", true},
		{[]string{"news@shop.example"}, "sales@shop.example", false},
	} {
		if got := MayUse(store.Credential{Allowed: c.allowed}, c.id); got != c.want {
			t.Errorf("MayUse(%v, %q) = %v; want %v", c.allowed, c.id, got, c.want)
		}
	}
}
