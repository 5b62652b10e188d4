package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

type response struct {
	code   int
	header http.Header
	body   string
}

func do(t *testing.T, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(body)}
}

func (r response) check(t *testing.T, what string, code int, wants ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: status %d, want %d\n%s", what, r.code, code, r.body)
	}
	for _, w := range wants {
		if !strings.Contains(r.body, w) {
			t.Errorf("%s: page lacks %q:\n%s", what, w, r.body)
		}
	}
	for name, want := range map[string]string{
		"Cache-Control":           "no-store",
		"X-Frame-Options":         "DENY",
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s: %s %q, want %q", what, name, got, want)
		}
	}
	if ct := r.header.Get("Content-Type"); r.code != http.StatusMethodNotAllowed || r.body != "" {
		if ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", what, ct)
		}
	}
	if strings.Contains(r.body, "http://") || strings.Contains(r.body, "https://") || strings.Contains(r.body, "src=") {
		t.Errorf("%s: the page refers to something outside itself:\n%s", what, r.body)
	}
}

func TestVerifyPages(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := testkit.NewClock(t)
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))

	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	av := identity.NewAddressVerifier(identity.Config{
		Hostname: "relay.example.net", PublicURL: srv.URL, Now: clock.Now, Logger: log,
	}, st, st)
	mux.Handle("/verify/", VerifyHandler(av, log))

	// The link, as the recipient reads it in the queued message.
	linkRE := regexp.MustCompile(regexp.QuoteMeta(srv.URL) + `/verify/[A-Za-z0-9_-]+`)
	linkTo := func(addr string) string {
		t.Helper()
		if _, _, err := av.Add(ctx, addr); err != nil {
			t.Fatal(err)
		}
		entries, err := st.QueueMessages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var link string
		for _, e := range entries {
			if e.Recipients[0].Address != strings.ToLower(addr) {
				continue
			}
			data, err := st.MessageData(ctx, e.ID)
			if err != nil {
				t.Fatal(err)
			}
			link = linkRE.FindString(string(data))
		}
		if link == "" {
			t.Fatalf("no link in the message queued to %s", addr)
		}
		return link
	}
	status := func(addr string) string {
		t.Helper()
		a, err := st.Address(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		return a.Status
	}

	link := linkTo("Alice@Example.com")
	// A link scanner's GET verifies nothing.
	for range 2 {
		do(t, "GET", link).check(t, "GET", http.StatusOK, "alice@example.com", `<form method="post">`)
	}
	if s := status("alice@example.com"); s != store.IdentityPending {
		t.Errorf("after GET the address is %s", s)
	}
	for _, method := range []string{"HEAD", "PUT", "DELETE"} {
		r := do(t, method, link)
		r.check(t, method, http.StatusMethodNotAllowed)
		if r.header.Get("Allow") != "GET, POST" {
			t.Errorf("%s: Allow %q", method, r.header.Get("Allow"))
		}
	}
	if s := status("alice@example.com"); s != store.IdentityPending {
		t.Errorf("after other methods the address is %s", s)
	}

	do(t, "POST", link).check(t, "POST", http.StatusOK, "alice@example.com is verified; it may now be used as a sender")
	if s := status("alice@example.com"); s != store.IdentityVerified {
		t.Errorf("after POST the address is %s", s)
	}
	do(t, "POST", link).check(t, "second POST", http.StatusNotFound, "This link is unknown or was already used")
	do(t, "GET", link).check(t, "GET after use", http.StatusNotFound, "This link is unknown or was already used")

	for _, path := range []string{
		"/verify/" + strings.Repeat("A", 43), // well-formed, made up
		"/verify/nonsense",
		"/verify/",
		"/verify/a/b",
	} {
		do(t, "GET", srv.URL+path).check(t, "GET "+path, http.StatusNotFound, "This link is unknown or was already used")
		do(t, "POST", srv.URL+path).check(t, "POST "+path, http.StatusNotFound, "This link is unknown or was already used")
	}

	expired := linkTo("bob@example.com")
	clock.Advance(24 * time.Hour)
	do(t, "GET", expired).check(t, "GET expired", http.StatusGone, "expired", "sesame address add bob@example.com")
	do(t, "POST", expired).check(t, "POST expired", http.StatusGone, "sesame address add bob@example.com")
	if s := status("bob@example.com"); s != store.IdentityPending {
		t.Errorf("after an expired POST the address is %s", s)
	}

	l := logs.String()
	if !strings.Contains(l, "level=INFO") || !strings.Contains(l, "address=alice@example.com") {
		t.Errorf("the verification was not logged at Info with the address:\n%s", l)
	}
	for _, token := range []string{link[strings.LastIndexByte(link, '/')+1:], expired[strings.LastIndexByte(expired, '/')+1:]} {
		if strings.Contains(l, token) {
			t.Errorf("a token was logged:\n%s", l)
		}
	}
}

// fakeConfirmer answers with fixed results, for what the store cannot
// easily produce.
type fakeConfirmer struct {
	addr store.Address
	err  error
}

func (f fakeConfirmer) Lookup(context.Context, string) (store.Address, error)  { return f.addr, f.err }
func (f fakeConfirmer) Confirm(context.Context, string) (store.Address, error) { return f.addr, f.err }

func TestVerifyPageEscapesAndFails(t *testing.T) {
	logs := &testkit.Buffer{}
	tricky := store.Address{Address: `<script>alert(1)</script>@example.com`, Status: store.IdentityPending}
	srv := httptest.NewServer(VerifyHandler(fakeConfirmer{addr: tricky}, slog.New(slog.NewTextHandler(logs, nil))))
	defer srv.Close()
	r := do(t, "GET", srv.URL+"/verify/token")
	r.check(t, "GET", http.StatusOK, "&lt;script&gt;alert(1)&lt;/script&gt;@example.com")
	if strings.Contains(r.body, "<script>") {
		t.Errorf("the address is not escaped:\n%s", r.body)
	}

	srv2 := httptest.NewServer(VerifyHandler(fakeConfirmer{err: errors.New("database is locked")}, slog.New(slog.NewTextHandler(logs, nil))))
	defer srv2.Close()
	r = do(t, "POST", srv2.URL+"/verify/token")
	r.check(t, "POST with a failing store", http.StatusInternalServerError, "Try again")
	if strings.Contains(r.body, "database") {
		t.Errorf("the page shows the internal error:\n%s", r.body)
	}
	if !strings.Contains(logs.String(), "database is locked") {
		t.Errorf("the internal error was not logged:\n%s", logs)
	}
}
