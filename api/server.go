package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/smtpd"
	"github.com/sesame-mail/sesame/store"
)

// Submitter is the submission path (smtpd.Server.Submit).
type Submitter interface {
	// Submit queues the message and returns its queue id, or refuses it
	// with a *smtpd.Refusal (nothing queued); any other error is a
	// failure to decide.
	Submit(ctx context.Context, s smtpd.Submission) (string, error)
}

// Keys finds access keys (account.Keys).
type Keys interface {
	// Lookup returns the credential and secret of access key id, or an
	// error wrapping account.ErrInvalidCredentials when there is none.
	Lookup(ctx context.Context, id string) (store.Credential, string, error)
}

// LoginGuard counts failed signatures with failed SMTP logins
// (smtpd.Server's guard): the access key id stands for the username.
type LoginGuard interface {
	LoginBlocked(ip, username string) bool
	LoginFailed(ip, username string, known bool) time.Duration
	LoginRefused(ip, username string) time.Duration // refused without a check (blocked)
	LoginSucceeded(ip, username string)
}

// Usage counts what a credential sent, for GetAccount.
type Usage interface {
	// Sent counts the recipients the credential submitted since since.
	Sent(ctx context.Context, name string, since time.Time) (int, error)
}

// Templates keeps each credential's email templates (store.SQLite).
type Templates interface {
	CreateTemplate(ctx context.Context, t store.Template) error // store.ErrExists when the name is taken
	Template(ctx context.Context, credential, name string) (store.Template, error)
	ListTemplates(ctx context.Context, credential string) ([]store.Template, error) // by name
	UpdateTemplate(ctx context.Context, t store.Template) error                     // store.ErrNotFound when there is none
	DeleteTemplate(ctx context.Context, credential, name string) error              // store.ErrNotFound when there is none
}

// Deps are the parts of Sesame the API works with.
type Deps struct {
	Submitter    Submitter
	Keys         Keys
	Guard        LoginGuard
	Usage        Usage
	Templates    Templates
	Suppressions Suppressions
	Identities   Identities
	Quotas       account.QuotaDefaults
}

// Config is what the API needs from the configuration.
type Config struct {
	// MaxMessageBytes is the submission service's limit; a request body
	// may be the message base64-encoded with JSON around it.
	MaxMessageBytes int64
	// MaxInflightBytes bounds the memory large requests hold at once
	// (budget.go); 0: 512 MiB.
	MaxInflightBytes int64
	Logger           *slog.Logger
	Now              func() time.Time // default time.Now
}

// MaxBodyBytes is the largest request body for a message of maxMessage
// bytes: its base64 form (4/3) and 64 KiB for the JSON around it.
func MaxBodyBytes(maxMessage int64) int64 { return maxMessage/3*4 + 4 + 64<<10 }

// Server answers API requests.
type Server struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	budget *budget
}

// New returns the API's handler; Serve it with netguard.HTTPServer (with
// its ConnContext set by ConnContext, so that a signed request marks its
// connection authenticated for the connection caps).
func New(cfg Config, deps Deps) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = 512 << 20
	}
	return &Server{cfg: cfg, deps: deps, log: cfg.Logger, budget: newBudget(cfg.MaxInflightBytes)}
}

type connKey struct{}

// ConnContext is http.Server's ConnContext for the API: it keeps the
// connection in the request's context.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// TooLarge answers a request body over the limit, in SES's shape.
func TooLarge(w http.ResponseWriter, r *http.Request) {
	if isQuery(r) {
		writeQueryError(w, errTooLarge)
		return
	}
	writeError(w, errTooLarge)
}

// request is one authenticated request.
type request struct {
	*http.Request
	cred   store.Credential
	body   []byte
	region string
	ip     string
}

// ServeHTTP authenticates the request and runs its operation: the
// headers are checked first (a known key, a fresh date), the body is read
// (within the memory budget) only then, and the signature over both.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var id [16]byte
	rand.Read(id[:])
	w.Header().Set("x-amzn-RequestId", hex.EncodeToString(id[:]))
	writeError := writeError
	if isQuery(r) {
		writeError = writeQueryError // SES v1 answers in XML
	}
	req := &request{Request: r, ip: clientIP(r)}
	sg, e := s.authenticate(req)
	if e != nil {
		w.Header().Set("Connection", "close") // rather than read a stranger's body
		writeError(w, e)
		return
	}
	if size := r.ContentLength; size < 0 || size > smallBody {
		if size < 0 { // chunked: as large as it may be
			size = MaxBodyBytes(s.cfg.MaxMessageBytes)
		}
		n := size * bodyCopies
		ctx, cancel := context.WithTimeout(r.Context(), budgetWait)
		ok := s.budget.take(ctx, n)
		cancel()
		if !ok {
			s.log.Warn("api request refused with 503: no room in the memory budget for large requests in time",
				"client", clientIP(r), "size", size, "waited", budgetWait)
			w.Header().Set("Connection", "close")
			writeError(w, &apiError{http.StatusServiceUnavailable, "ServiceUnavailable",
				"The server is busy with other large messages; try again later"})
			return
		}
		defer s.budget.give(n)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			w.Header().Set("Connection", "close")
			writeError(w, errTooLarge)
		}
		return // the client went away or timed out: nobody to answer
	}
	req.body = body
	if e := s.verify(req, sg); e != nil {
		writeError(w, e)
		return
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		if gc := netguard.ConnOf(c); gc != nil {
			gc.Authenticated()
		}
	}
	if isQuery(r) {
		s.serveQuery(w, req)
		return
	}
	op, known := route(r.Method, r.URL.Path)
	switch op {
	case "SendEmail":
		s.sendEmail(w, req)
	case "SendBulkEmail":
		s.sendBulk(w, req)
	case "GetAccount":
		s.getAccount(w, req)
	case "CreateEmailTemplate":
		s.createTemplate(w, req)
	case "GetEmailTemplate":
		s.getTemplate(w, req)
	case "ListEmailTemplates":
		s.listTemplates(w, req)
	case "UpdateEmailTemplate":
		s.updateTemplate(w, req)
	case "DeleteEmailTemplate":
		s.deleteTemplate(w, req)
	case "TestRenderEmailTemplate":
		s.testRender(w, req)
	case "CreateEmailIdentity":
		s.createIdentity(w, req)
	case "GetEmailIdentity":
		s.getIdentity(w, req)
	case "ListEmailIdentities":
		s.listIdentities(w, req)
	case "DeleteEmailIdentity":
		s.deleteIdentity(w, req)
	case "PutSuppressedDestination":
		s.putSuppressed(w, req)
	case "GetSuppressedDestination":
		s.getSuppressed(w, req)
	case "ListSuppressedDestinations":
		s.listSuppressed(w, req)
	case "DeleteSuppressedDestination":
		s.deleteSuppressed(w, req)
	default:
		if !known {
			writeError(w, badRequest("Unknown operation: "+r.Method+" "+r.URL.Path+" is not an operation of the SES v2 API"))
			return
		}
		writeError(w, badRequest("Operation "+op+" is not implemented by this Sesame server yet; see docs/api.md for the operations it has"))
	}
}

// signer is what authenticate learns from the headers alone: the
// signature to check once the body is read, and whose key it is.
type signer struct {
	auth    authHeader
	amzDate string
	secret  string
	cred    store.Credential
}

// authenticate checks what the headers say, before the body is read: a
// stranger (no known key, a stale date) cannot make the server hold a
// large body. Every failure is answered 403 after the guard's delay, and
// counted.
func (s *Server) authenticate(r *request) (*signer, *apiError) {
	a, ok := parseAuth(r.Header.Get("Authorization"))
	if !ok {
		return nil, &apiError{http.StatusForbidden, "MissingAuthenticationTokenException",
			"Request is missing a valid AWS Signature Version 4 Authorization header; sign it with your Sesame access key (an AWS SDK does)"}
	}
	if s.deps.Guard.LoginBlocked(r.ip, a.keyID) {
		return nil, s.fail(r, a.keyID, false, errBlocked)
	}
	cred, secret, err := s.deps.Keys.Lookup(r.Context(), a.keyID)
	if errors.Is(err, account.ErrInvalidCredentials) {
		return nil, s.fail(r, a.keyID, false, &apiError{http.StatusForbidden, "InvalidClientTokenId",
			"The security token included in the request is invalid."})
	}
	if err != nil {
		s.log.Error("looking up an access key failed", "access_key_id", printableID(a.keyID), "err", err)
		return nil, errInternal
	}
	if a.service != "ses" {
		return nil, s.fail(r, a.keyID, true, &apiError{http.StatusForbidden, "SignatureDoesNotMatch",
			"Credential should be scoped to correct service: 'ses'."})
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFmt, amzDate)
	if err != nil || !strings.HasPrefix(amzDate, a.date) {
		return nil, s.fail(r, a.keyID, true, &apiError{http.StatusForbidden, "SignatureDoesNotMatch",
			"X-Amz-Date is missing, malformed, or not the date of the credential scope."})
	}
	if now := s.cfg.Now(); t.Before(now.Add(-maxSkew)) || t.After(now.Add(maxSkew)) {
		return nil, s.fail(r, a.keyID, true, &apiError{http.StatusForbidden, "RequestExpired",
			"Signature expired: " + amzDate + " is more than 15 minutes from the server's time " + now.UTC().Format(amzDateFmt) + "; check the client's clock."})
	}
	return &signer{auth: a, amzDate: amzDate, secret: secret, cred: cred}, nil
}

// verify checks the signature over the request with its body.
func (s *Server) verify(r *request, sg *signer) *apiError {
	a := sg.auth
	sum := sha256.Sum256(r.body)
	payloadHash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payloadHash {
		return s.fail(r, a.keyID, true, &apiError{http.StatusForbidden, "SignatureDoesNotMatch",
			"The request body does not match its x-amz-content-sha256."})
	}
	signedHost := false
	for _, h := range a.signedHeaders {
		signedHost = signedHost || h == "host"
	}
	want := signature(r.Request, a, sg.amzDate, payloadHash, sg.secret)
	if !signedHost || !hmac.Equal([]byte(want), []byte(a.signature)) {
		return s.fail(r, a.keyID, true, &apiError{http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."})
	}
	s.deps.Guard.LoginSucceeded(r.ip, a.keyID)
	r.cred, r.region = sg.cred, a.region
	return nil
}

// fail counts a failed signature (known: the key exists), logs it, and
// waits the guard's delay before e is answered.
func (s *Server) fail(r *request, keyID string, known bool, e *apiError) *apiError {
	var delay time.Duration
	if e == errBlocked {
		delay = s.deps.Guard.LoginRefused(r.ip, keyID)
	} else {
		delay = s.deps.Guard.LoginFailed(r.ip, keyID, known)
	}
	s.log.Warn("api signature refused", "client", r.ip, "access_key_id", printableID(keyID), "error", e.code, "delay", delay)
	select {
	case <-time.After(delay): // slows guessing, as a failed SMTP AUTH
	case <-r.Context().Done():
	}
	return e
}

// errBlocked answers a network blocked for failing too often: the answer
// of an unknown key, as SMTP answers such a network as a wrong password.
var errBlocked = &apiError{http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid."}

// printableID keeps an access key id fit for a log line: what a client
// sends there may be anything, a secret pasted in the wrong field too, so
// only the shape of an id is logged whole.
func printableID(id string) string {
	if len(id) == 20 && strings.HasPrefix(id, account.AccessKeyPrefix) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// tlsState is the request's TLS state, for the Received field.
func tlsState(r *http.Request) *tls.ConnectionState { return r.TLS }

// operation is one operation of the SES v2 model.
type operation struct{ name, method, path string }

// route names the operation of method and path; known is false when no
// operation of the model has them.
func route(method, path string) (name string, known bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	best, bestWild := "", -1
	for _, op := range operations {
		if op.method != method {
			continue
		}
		pat := strings.Split(strings.Trim(op.path, "/"), "/")
		if len(pat) != len(segs) {
			continue
		}
		wild := 0
		match := true
		for i, p := range pat {
			if strings.HasPrefix(p, "{") {
				wild++
				continue
			}
			if p != segs[i] {
				match = false
				break
			}
		}
		if match && (bestWild < 0 || wild < bestWild) {
			best, bestWild = op.name, wild
		}
	}
	return best, best != ""
}
