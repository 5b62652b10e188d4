package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/net/idna"

	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
)

// The identity operations of SES v2: CreateEmailIdentity, GetEmailIdentity,
// ListEmailIdentities and DeleteEmailIdentity, on Sesame's domains and
// sender addresses.
//
// SES's identities belong to the account; Sesame's belong to the server
// (the operator's `sesame domain` and `sesame address`), and a credential's
// allowed identities (sesame user allow) say which of them it may send as.
// Through the API a credential works only on the identities it may use
// (identity.MayUse: all of them when its list is empty): it may create
// one, which still has to be proven (DNS records for a domain, a link
// opened for an address) before anyone sends as it; it sees only those; and
// it may delete one only while it is not verified, since a verified
// identity may be what other credentials send as: removing it is the
// operator's (`sesame domain delete`, `sesame address delete`). Sending
// still asks identity.Authorizer.MaySendAs, whatever happens here.

// Identities is what the identity operations work on (cmd/sesame adapts
// the store and package identity).
type Identities interface {
	// CreateDomain adds a pending domain with new DKIM keys;
	// store.ErrExists if it is there.
	CreateDomain(ctx context.Context, name string) (store.Domain, error)
	Domain(ctx context.Context, name string) (store.Domain, error) // store.ErrNotFound
	ListDomains(ctx context.Context) ([]store.Domain, error)
	DeleteDomain(ctx context.Context, name string) error
	// Records are the DNS records d needs (identity.Config.Records).
	Records(d store.Domain) ([]identity.Record, error)
	// AddAddress adds a pending address and queues its verification link
	// (identity.AddressVerifier.AddSender, refusing a DMARC-protected
	// one with a *identity.DMARCError).
	AddAddress(ctx context.Context, address string) (store.Address, error)
	Address(ctx context.Context, address string) (store.Address, error) // store.ErrNotFound
	ListAddresses(ctx context.Context) ([]store.Address, error)
	DeleteAddress(ctx context.Context, address string) error
}

// identityName is an identity as Sesame keeps it: an address (lower case,
// domain an A-label) or a domain (lower-case A-label); isAddress says
// which.
func identityName(s string) (name string, isAddress bool, e *apiError) {
	bad := badRequest("EmailIdentity: " + quote(s) + " is neither an email address nor a domain name")
	local, domain := "", s
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		local, domain = s[:at], s[at+1:]
		if local == "" || strings.ContainsAny(local, " \t\r\n<>\"(),;:\\[]") {
			return "", false, bad
		}
	}
	d, err := idna.Registration.ToASCII(strings.TrimSuffix(strings.ToLower(domain), "."))
	if err != nil || !strings.Contains(d, ".") {
		return "", false, bad
	}
	if local == "" {
		return d, false, nil
	}
	return strings.ToLower(local) + "@" + d, true, nil
}

// sesStatus is SES's VerificationStatus (and DkimAttributes.Status) of a
// Sesame identity status.
func sesStatus(status string) string {
	switch status {
	case store.IdentityVerified:
		return "SUCCESS"
	case store.IdentityFailed:
		return "FAILED"
	}
	return "PENDING"
}

// dkimAttributes is SES's DkimAttributes. Sesame made the keys (SES's
// Easy DKIM), so the origin is AWS_SES; the tokens are the selectors,
// whose TXT records (SesameRecords) are to be published: not SES's CNAMEs.
type dkimAttributes struct {
	SigningEnabled          bool
	Status                  string
	Tokens                  []string `json:",omitempty"`
	SigningAttributesOrigin string   `json:",omitempty"`
	CurrentSigningKeyLength string   `json:",omitempty"`
}

func domainDKIM(d store.Domain) dkimAttributes {
	a := dkimAttributes{SigningEnabled: true, Status: sesStatus(d.Status), SigningAttributesOrigin: "AWS_SES", Tokens: []string{}}
	for _, k := range d.Keys {
		a.Tokens = append(a.Tokens, k.Selector)
		if k.Algorithm == store.AlgRSA && (k.State == "" || k.State == store.KeyActive) {
			a.CurrentSigningKeyLength = "RSA_2048_BIT"
		}
	}
	return a
}

// sesameRecord is one DNS record to publish, in the responses beside
// SES's fields (the SDKs skip what their models do not know; a program
// reading the JSON gets every record Sesame asks for).
type sesameRecord struct {
	Type, Name, Value, Purpose string
	Required                   bool
}

func (s *Server) refuseIdentity(r *request, name string) *apiError {
	return badRequest("Credential " + r.cred.Name + " may not use the identity " + name +
		" (it is not among the credential's allowed identities); ask the operator (sesame user allow)")
}

func identityNotFound(name string) *apiError {
	return &apiError{http.StatusNotFound, "NotFoundException", "Email identity " + name + " does not exist."}
}

func (s *Server) createIdentity(w http.ResponseWriter, r *request) {
	var in struct {
		EmailIdentity         string
		DkimSigningAttributes *struct{}
	}
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not a CreateEmailIdentity request: "+jsonProblem(err)))
		return
	}
	if in.DkimSigningAttributes != nil {
		writeError(w, badRequest("DkimSigningAttributes: Sesame makes the DKIM keys of a domain itself (bring-your-own-key DKIM is not supported); leave it out"))
		return
	}
	name, isAddr, e := identityName(in.EmailIdentity)
	if e != nil {
		writeError(w, e)
		return
	}
	if !identity.MayUse(r.cred, name) {
		writeError(w, s.refuseIdentity(r, name))
		return
	}
	exists := &apiError{http.StatusBadRequest, "AlreadyExistsException", "Email identity " + name + " already exists."}
	if !isAddr {
		d, err := s.deps.Identities.CreateDomain(r.Context(), name)
		if errors.Is(err, store.ErrExists) {
			writeError(w, exists)
			return
		}
		if err != nil {
			s.internal(w, "CreateEmailIdentity", err)
			return
		}
		s.log.Info("domain added through the API", "credential", r.cred.Name, "domain", name)
		writeJSON(w, struct {
			IdentityType             string
			VerifiedForSendingStatus bool
			DkimAttributes           dkimAttributes
		}{"DOMAIN", false, domainDKIM(d)})
		return
	}
	_, err := s.deps.Identities.Address(r.Context(), name)
	if err == nil {
		writeError(w, exists)
		return
	}
	if !errors.Is(err, store.ErrNotFound) {
		s.internal(w, "CreateEmailIdentity", err)
		return
	}
	_, err = s.deps.Identities.AddAddress(r.Context(), name)
	var dm *identity.DMARCError
	switch {
	case errors.As(err, &dm):
		writeError(w, badRequest(dm.Error()))
		return
	case errors.Is(err, identity.ErrAlreadyVerified):
		writeError(w, exists)
		return
	case err != nil:
		s.internal(w, "CreateEmailIdentity", err)
		return
	}
	s.log.Info("sender address added through the API; verification link sent", "credential", r.cred.Name, "address", name)
	writeJSON(w, struct {
		IdentityType             string
		VerifiedForSendingStatus bool
		DkimAttributes           dkimAttributes
	}{"EMAIL_ADDRESS", false, s.addressDKIM(r, name)})
}

// addressDKIM is the DKIM of an address: its domain's, when Sesame has
// the domain.
func (s *Server) addressDKIM(r *request, addr string) dkimAttributes {
	d, err := s.deps.Identities.Domain(r.Context(), store.AddressDomain(addr))
	if err != nil {
		return dkimAttributes{Status: "NOT_STARTED"}
	}
	return domainDKIM(d)
}

// pathIdentity is the {EmailIdentity} of the path.
func pathIdentity(r *request) (string, bool, *apiError) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	return identityName(segs[len(segs)-1])
}

func (s *Server) getIdentity(w http.ResponseWriter, r *request) {
	name, isAddr, e := pathIdentity(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if !identity.MayUse(r.cred, name) {
		writeError(w, identityNotFound(name))
		return
	}
	type output struct {
		IdentityType             string
		FeedbackForwardingStatus bool
		VerifiedForSendingStatus bool
		VerificationStatus       string
		DkimAttributes           dkimAttributes
		Policies                 struct{}
		Tags                     []struct{}
		SesameRecords            []sesameRecord `json:",omitempty"`
	}
	var status string
	var out output
	if isAddr {
		a, err := s.deps.Identities.Address(r.Context(), name)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, identityNotFound(name))
			return
		}
		if err != nil {
			s.internal(w, "GetEmailIdentity", err)
			return
		}
		status = a.Status
		out = output{IdentityType: "EMAIL_ADDRESS", DkimAttributes: s.addressDKIM(r, name)}
	} else {
		d, err := s.deps.Identities.Domain(r.Context(), name)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, identityNotFound(name))
			return
		}
		if err != nil {
			s.internal(w, "GetEmailIdentity", err)
			return
		}
		recs, err := s.deps.Identities.Records(d)
		if err != nil {
			s.internal(w, "GetEmailIdentity", err)
			return
		}
		status = d.Status
		out = output{IdentityType: "DOMAIN", DkimAttributes: domainDKIM(d), SesameRecords: []sesameRecord{}}
		for _, rec := range recs {
			out.SesameRecords = append(out.SesameRecords, sesameRecord{rec.Type, rec.Name, rec.Value, rec.Purpose, rec.Required})
		}
	}
	out.FeedbackForwardingStatus = true // bounces and complaints come back as events, and to the sender
	out.VerifiedForSendingStatus = status == store.IdentityVerified
	out.VerificationStatus = sesStatus(status)
	out.Tags = []struct{}{}
	writeJSON(w, out)
}

func (s *Server) listIdentities(w http.ResponseWriter, r *request) {
	var in struct {
		NextToken string
		PageSize  *int
	}
	if len(r.body) > 0 {
		if err := json.Unmarshal(r.body, &in); err != nil {
			writeError(w, badRequest("The request body is not a ListEmailIdentities request: "+jsonProblem(err)))
			return
		}
	}
	size := 1000 // SES's default page
	if in.PageSize != nil {
		if *in.PageSize < 1 || *in.PageSize > 1000 {
			writeError(w, badRequest("PageSize: "+strconv.Itoa(*in.PageSize)+": expected 1 to 1000"))
			return
		}
		size = *in.PageSize
	}
	type entry struct {
		IdentityType       string
		IdentityName       string
		SendingEnabled     bool
		VerificationStatus string
	}
	domains, err := s.deps.Identities.ListDomains(r.Context())
	if err != nil {
		s.internal(w, "ListEmailIdentities", err)
		return
	}
	addrs, err := s.deps.Identities.ListAddresses(r.Context())
	if err != nil {
		s.internal(w, "ListEmailIdentities", err)
		return
	}
	var all []entry
	for _, d := range domains {
		if identity.MayUse(r.cred, d.Name) {
			all = append(all, entry{"DOMAIN", d.Name, d.Status == store.IdentityVerified, sesStatus(d.Status)})
		}
	}
	for _, a := range addrs {
		if identity.MayUse(r.cred, a.Address) {
			all = append(all, entry{"EMAIL_ADDRESS", a.Address, a.Status == store.IdentityVerified, sesStatus(a.Status)})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].IdentityName < all[j].IdentityName })
	// NextToken: the last name of the previous page (escaped: JSON carries
	// it, the SDKs pass it back as it is).
	after, _ := url.QueryUnescape(in.NextToken)
	start := sort.Search(len(all), func(i int) bool { return all[i].IdentityName > after })
	out := struct {
		EmailIdentities []entry
		NextToken       string `json:",omitempty"`
	}{EmailIdentities: all[start:min(len(all), start+size)]}
	if out.EmailIdentities == nil {
		out.EmailIdentities = []entry{}
	}
	if start+size < len(all) {
		out.NextToken = url.QueryEscape(all[start+size-1].IdentityName)
	}
	writeJSON(w, out)
}

func (s *Server) deleteIdentity(w http.ResponseWriter, r *request) {
	name, isAddr, e := pathIdentity(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if !identity.MayUse(r.cred, name) {
		writeError(w, identityNotFound(name))
		return
	}
	var status string
	var err error
	if isAddr {
		var a store.Address
		a, err = s.deps.Identities.Address(r.Context(), name)
		status = a.Status
	} else {
		var d store.Domain
		d, err = s.deps.Identities.Domain(r.Context(), name)
		status = d.Status
	}
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, identityNotFound(name))
		return
	}
	if err != nil {
		s.internal(w, "DeleteEmailIdentity", err)
		return
	}
	if status == store.IdentityVerified {
		cmd := "sesame domain delete "
		if isAddr {
			cmd = "sesame address delete "
		}
		writeError(w, badRequest("Email identity "+name+" is verified, and every credential allowed to may be sending as it; "+
			"only the operator removes a verified identity: "+cmd+name))
		return
	}
	if isAddr {
		err = s.deps.Identities.DeleteAddress(r.Context(), name)
	} else {
		err = s.deps.Identities.DeleteDomain(r.Context(), name)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.internal(w, "DeleteEmailIdentity", err)
		return
	}
	s.log.Info("identity deleted through the API", "credential", r.cred.Name, "identity", name, "status", status)
	writeJSON(w, struct{}{})
}
