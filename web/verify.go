package web

import (
	"bytes"
	"context"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
)

// AddressConfirmer is what the verification pages need;
// identity.AddressVerifier satisfies it. Both methods return
// identity.ErrUnknownToken for a token that is unknown or used, and
// identity.ErrTokenExpired, with the address, for one that is too old.
type AddressConfirmer interface {
	Lookup(ctx context.Context, token string) (store.Address, error)
	Confirm(ctx context.Context, token string) (store.Address, error)
}

var _ AddressConfirmer = (*identity.AddressVerifier)(nil)

// verifyPage is every page of the address verification: small, with no
// asset from anywhere, so the Content-Security-Policy can forbid them all.
const verifyPage = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 36em; margin: 4em auto; padding: 0 1em; line-height: 1.5; color: #222; }
h1 { font-size: 1.4em; }
button { font-size: 1em; padding: .5em 1.2em; cursor: pointer; }
code { background: #f3f3f3; padding: 0 .2em; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{range .Lines}}<p>{{.}}</p>
{{end}}{{if .Command}}<p><code>{{.Command}}</code></p>
{{end}}{{if .Form}}<form method="post"><button type="submit">Confirm {{.Address}}</button></form>
{{end}}</body>
</html>
`

// pageData fills verifyPage; html/template escapes every field.
type pageData struct {
	Title   string
	Lines   []string
	Command string // a command for the operator, shown as code
	Address string
	Form    bool // the confirmation button
}

// VerifyHandler serves the pages behind address verification links, at
// /verify/TOKEN: GET shows the address and a button, POST (the button)
// confirms it. GET changes nothing, because mail filters fetch the links in
// the mail they scan; only a person presses the button.
func VerifyHandler(c AddressConfirmer, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	page := template.Must(template.New("verify").Parse(verifyPage))
	render := func(w http.ResponseWriter, code int, d pageData) {
		var b bytes.Buffer
		if err := page.Execute(&b, d); err != nil {
			log.Error("verification page failed", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		w.Write(b.Bytes())
	}
	// A link that is unknown and one that was used look the same, so a
	// guess learns nothing.
	unknownPage := pageData{
		Title: "This link is unknown or was already used",
		Lines: []string{
			"If you have confirmed the address already, there is nothing more to do.",
			"Otherwise, ask the operator of this Sesame relay for a new link.",
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The token in the URL is a secret: not cached, not sent on as a
		// Referer, the page not framed by another site (clickjacking the
		// button), and nothing loaded or submitted anywhere else.
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")

		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			h.Set("Allow", "GET, POST")
			render(w, http.StatusMethodNotAllowed, pageData{
				Title: "Method not allowed",
				Lines: []string{"Open the link from the message in a web browser."},
			})
			return
		}
		token, ok := strings.CutPrefix(r.URL.Path, "/verify/")
		if !ok || token == "" || strings.Contains(token, "/") || c == nil {
			render(w, http.StatusNotFound, unknownPage)
			return
		}

		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var a store.Address
		var err error
		if r.Method == http.MethodGet {
			a, err = c.Lookup(ctx, token)
		} else {
			a, err = c.Confirm(ctx, token)
		}
		switch {
		case errors.Is(err, identity.ErrUnknownToken):
			render(w, http.StatusNotFound, unknownPage)
		case errors.Is(err, identity.ErrTokenExpired):
			render(w, http.StatusGone, pageData{
				Title: "This link has expired",
				Lines: []string{
					"The link to confirm " + a.Address + " is too old to be used.",
					"Ask the operator of this Sesame relay for a new one; this command sends a fresh link:",
				},
				Command: "sesame address add " + a.Address,
			})
		case err != nil:
			log.Error("address verification page failed", "method", r.Method, "err", err)
			render(w, http.StatusInternalServerError, pageData{
				Title: "Something went wrong",
				Lines: []string{"Sesame could not look the link up just now. Try again in a few minutes; the link still works."},
			})
		case r.Method == http.MethodGet:
			render(w, http.StatusOK, pageData{
				Title: "Confirm " + a.Address,
				Lines: []string{
					"Sesame, the mail relay, was asked to send mail as " + a.Address + ".",
					"If you expected this, confirm below. If not, close this page: nothing happens unless you confirm.",
				},
				Address: a.Address,
				Form:    true,
			})
		default:
			log.Info("address verified through its link", "address", a.Address)
			render(w, http.StatusOK, pageData{
				Title: a.Address + " is verified",
				Lines: []string{a.Address + " is verified; it may now be used as a sender. You can close this page."},
			})
		}
	})
}
