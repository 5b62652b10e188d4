package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// The suppression operations of SES v2 on Sesame's suppression list:
// PutSuppressedDestination, GetSuppressedDestination,
// ListSuppressedDestinations and DeleteSuppressedDestination.
//
// SES's list belongs to the account; Sesame's shared list belongs to the
// server, and each credential may also have its own entries
// (policy.suppression_scope). A credential sees what stops its own mail:
// the shared entries and its own. It may add entries: one is stored as the
// credential's own bounce or complaint would be (on the shared list, or its
// own with per-credential suppression), since adding one has the effect its
// own bounce would have. It may delete what it sees, shared entries
// included: an application that learns an address works again (the
// customer fixed their mailbox) is the one to say so, as on SES. Entries
// of other credentials stay invisible and untouched.

// Suppressions is the suppression list (store.SQLite).
type Suppressions interface {
	Suppress(ctx context.Context, s store.Suppression) error
	// Unsuppress removes the entry of address for credential ("" the
	// shared one); store.ErrNotFound when there is none.
	Unsuppress(ctx context.Context, address, credential string) error
	// Suppression returns every entry of address; store.ErrNotFound when
	// there is none.
	Suppression(ctx context.Context, address string) ([]store.Suppression, error)
	ListSuppressions(ctx context.Context) ([]store.Suppression, error) // newest first
}

// sesReason is SES's SuppressionListReason for a Sesame reason: SES knows
// only BOUNCE and COMPLAINT, and an operator's manual entry stops mail as
// a bounce's does.
func sesReason(reason string) string {
	if reason == store.SuppressComplaint {
		return "COMPLAINT"
	}
	return "BOUNCE"
}

// suppressionAddress is the {EmailAddress} of a path or a request,
// checked and in the form the list keeps (lower case, as `sesame
// suppression add` writes it).
func suppressionAddress(s string) (string, *apiError) {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", badRequest("EmailAddress: " + quote(s) + " is not an email address")
	}
	return strings.ToLower(a.Address), nil
}

// visible is the entries of list that apply to the credential.
func visible(list []store.Suppression, cred string) []store.Suppression {
	var out []store.Suppression
	for _, s := range list {
		if s.Credential == "" || s.Credential == cred {
			out = append(out, s)
		}
	}
	return out
}

func errNotSuppressed(addr string) *apiError {
	return &apiError{http.StatusNotFound, "NotFoundException", addr + " is not on the suppression list."}
}

func (s *Server) putSuppressed(w http.ResponseWriter, r *request) {
	var in struct{ EmailAddress, Reason string }
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not a PutSuppressedDestination request: "+jsonProblem(err)))
		return
	}
	addr, e := suppressionAddress(in.EmailAddress)
	if e != nil {
		writeError(w, e)
		return
	}
	reason := store.SuppressBounce
	switch in.Reason {
	case "BOUNCE":
	case "COMPLAINT":
		reason = store.SuppressComplaint
	default:
		writeError(w, badRequest("Reason: "+quote(in.Reason)+": expected BOUNCE or COMPLAINT"))
		return
	}
	err := s.deps.Suppressions.Suppress(r.Context(), store.Suppression{Address: addr, Credential: r.cred.Name,
		Reason: reason, Detail: "added through the API by " + r.cred.Name, CreatedAt: s.cfg.Now()})
	if err != nil {
		s.internal(w, "PutSuppressedDestination", err)
		return
	}
	s.log.Info("suppression added through the API", "credential", r.cred.Name, "address", addr, "reason", reason)
	writeJSON(w, struct{}{})
}

// pathAddress is the {EmailAddress} at the end of the path.
func pathAddress(r *request) (string, *apiError) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	return suppressionAddress(segs[len(segs)-1])
}

func (s *Server) getSuppressed(w http.ResponseWriter, r *request) {
	addr, e := pathAddress(r)
	if e != nil {
		writeError(w, e)
		return
	}
	list, err := s.deps.Suppressions.Suppression(r.Context(), addr)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.internal(w, "GetSuppressedDestination", err)
		return
	}
	list = visible(list, r.cred.Name)
	if len(list) == 0 {
		writeError(w, errNotSuppressed(addr))
		return
	}
	sup := list[0] // the newest
	type destination struct {
		EmailAddress   string
		Reason         string
		LastUpdateTime float64
		Attributes     struct{}
	}
	writeJSON(w, struct{ SuppressedDestination destination }{destination{sup.Address, sesReason(sup.Reason),
		epoch(sup.CreatedAt), struct{}{}}})
}

func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// parseEpoch reads a timestamp of a query string: the SDKs send ISO 8601
// (RFC 3339); epoch seconds are taken too.
func parseEpoch(v string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, true
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.UnixMilli(int64(f * 1000)), true
	}
	return time.Time{}, false
}

func (s *Server) listSuppressed(w http.ResponseWriter, r *request) {
	q := r.URL.Query()
	size := 1000 // SES's default page
	if v := q.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, badRequest("PageSize: "+quote(v)+": expected 1 to 1000"))
			return
		}
		size = n
	}
	reasons := map[string]bool{}
	for _, v := range q["Reason"] {
		if v != "BOUNCE" && v != "COMPLAINT" {
			writeError(w, badRequest("Reason: "+quote(v)+": expected BOUNCE or COMPLAINT"))
			return
		}
		reasons[v] = true
	}
	var from, to time.Time
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"StartDate", &from}, {"EndDate", &to}} {
		if v := q.Get(p.name); v != "" {
			t, ok := parseEpoch(v)
			if !ok {
				writeError(w, badRequest(p.name+": "+quote(v)+" is not a timestamp"))
				return
			}
			*p.t = t
		}
	}
	start := 0 // NextToken: how many entries the previous pages held
	if v := q.Get("NextToken"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, &apiError{http.StatusBadRequest, "InvalidNextTokenException", "NextToken " + quote(v) + " is not one this server gave"})
			return
		}
		start = n
	}
	all, err := s.deps.Suppressions.ListSuppressions(r.Context())
	if err != nil {
		s.internal(w, "ListSuppressedDestinations", err)
		return
	}
	type summary struct {
		EmailAddress   string
		Reason         string
		LastUpdateTime float64
	}
	var match []summary
	for _, sup := range visible(all, r.cred.Name) {
		reason := sesReason(sup.Reason)
		if (len(reasons) > 0 && !reasons[reason]) || (!from.IsZero() && sup.CreatedAt.Before(from)) ||
			(!to.IsZero() && sup.CreatedAt.After(to)) {
			continue
		}
		match = append(match, summary{sup.Address, reason, epoch(sup.CreatedAt)})
	}
	out := struct {
		SuppressedDestinationSummaries []summary
		NextToken                      string `json:",omitempty"`
	}{SuppressedDestinationSummaries: []summary{}}
	if start < len(match) {
		out.SuppressedDestinationSummaries = match[start:min(len(match), start+size)]
	}
	if start+size < len(match) {
		out.NextToken = strconv.Itoa(start + size)
	}
	writeJSON(w, out)
}

func (s *Server) deleteSuppressed(w http.ResponseWriter, r *request) {
	addr, e := pathAddress(r)
	if e != nil {
		writeError(w, e)
		return
	}
	list, err := s.deps.Suppressions.Suppression(r.Context(), addr)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.internal(w, "DeleteSuppressedDestination", err)
		return
	}
	list = visible(list, r.cred.Name)
	if len(list) == 0 {
		writeError(w, errNotSuppressed(addr))
		return
	}
	for _, sup := range list {
		err := s.deps.Suppressions.Unsuppress(r.Context(), sup.Address, sup.Credential)
		if err != nil && !errors.Is(err, store.ErrNotFound) { // gone meanwhile: as wanted
			s.internal(w, "DeleteSuppressedDestination", err)
			return
		}
		s.log.Info("suppression removed through the API", "credential", r.cred.Name, "address", sup.Address,
			"entry_of", scope(sup.Credential), "reason", sup.Reason)
	}
	writeJSON(w, struct{}{})
}

func scope(cred string) string {
	if cred == "" {
		return "shared list"
	}
	return cred
}
