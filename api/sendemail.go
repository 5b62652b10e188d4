package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"strings"

	"github.com/sesame-mail/sesame/smtpd"
)

// sendEmailInput is SendEmail's request (SES v2 model, SendEmailRequest).
// Members Sesame does not use yet are listed, so that what it cannot
// honour is refused by name rather than ignored.
type sendEmailInput struct {
	FromEmailAddress            string
	FromEmailAddressIdentityArn string
	Destination                 *struct {
		ToAddresses, CcAddresses, BccAddresses []string
	}
	ReplyToAddresses                          []string
	FeedbackForwardingEmailAddress            string
	FeedbackForwardingEmailAddressIdentityArn string
	Content                                   *struct {
		Simple   *simpleMessage
		Raw      *struct{ Data []byte }
		Template *sendTemplate
	}
	EmailTags []struct{ Name, Value string }
	// ConfigurationSetName: none exist yet, so any name is unknown.
	ConfigurationSetName  string
	ListManagementOptions json.RawMessage
}

// sendEmail answers SendEmail (POST /v2/email/outbound-emails): the
// message built from Simple content, or taken as it is from Raw, goes
// through the submission path, and its queue id is the MessageId.
func (s *Server) sendEmail(w http.ResponseWriter, r *request) {
	var in sendEmailInput
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not a SendEmail request: "+jsonProblem(err)))
		return
	}
	id, e := s.send(r, &in)
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, struct{ MessageId string }{id})
}

// send runs a SendEmail request (v2, or v1 translated) through the
// submission path and returns the queue id, or the refusal in SES's terms.
func (s *Server) send(r *request, in *sendEmailInput) (string, *apiError) {
	sub, e := s.submission(in, r)
	if e != nil {
		return "", e
	}
	id, err := s.deps.Submitter.Submit(r.Context(), sub)
	if ref := (*smtpd.Refusal)(nil); errors.As(err, &ref) {
		return "", refusalError(ref)
	}
	if err != nil {
		s.log.Error("SendEmail failed", "credential", r.cred.Name, "err", err)
		return "", errInternal
	}
	return id, nil
}

// submission turns a SendEmail request into the submission path's input,
// or refuses it with the field at fault named.
func (s *Server) submission(in *sendEmailInput, r *request) (smtpd.Submission, *apiError) {
	sub := smtpd.Submission{Cred: r.cred, RemoteIP: r.ip, Protocol: "HTTP", TLS: tlsState(r.Request)}
	if sub.TLS != nil {
		sub.Protocol = "HTTPS"
	}
	switch {
	case in.ConfigurationSetName != "":
		return sub, &apiError{http.StatusNotFound, "NotFoundException", "Configuration set <" + in.ConfigurationSetName + "> does not exist."}
	case in.FromEmailAddressIdentityArn != "" || in.FeedbackForwardingEmailAddressIdentityArn != "":
		return sub, badRequest("FromEmailAddressIdentityArn and FeedbackForwardingEmailAddressIdentityArn are not supported by Sesame: give FromEmailAddress")
	case len(in.ListManagementOptions) > 0 && string(in.ListManagementOptions) != "null":
		return sub, badRequest("ListManagementOptions is not supported by Sesame yet")
	case in.Content == nil:
		return sub, badRequest("Content is required: Simple, Raw or Template")
	}
	var dest []string
	if d := in.Destination; d != nil {
		for _, list := range []struct {
			field string
			addrs []string
		}{{"Destination.ToAddresses", d.ToAddresses}, {"Destination.CcAddresses", d.CcAddresses}, {"Destination.BccAddresses", d.BccAddresses}} {
			for _, a := range list.addrs {
				addr, err := mail.ParseAddress(a)
				if err != nil {
					return sub, badRequest(list.field + ": " + quote(a) + " is not an email address")
				}
				dest = append(dest, addr.Address)
			}
		}
	}
	for _, a := range in.ReplyToAddresses {
		if _, err := mail.ParseAddress(a); err != nil {
			return sub, badRequest("ReplyToAddresses: " + quote(a) + " is not an email address")
		}
	}
	c := in.Content
	if n := btoi(c.Simple != nil) + btoi(c.Raw != nil) + btoi(c.Template != nil); n > 1 {
		return sub, badRequest("Content: give one of Simple, Raw and Template")
	}
	if c.Template != nil {
		m, e := s.templateMessage(r, c.Template)
		if e != nil {
			return sub, e
		}
		c.Simple = m
	}
	switch {
	case c.Simple != nil:
		if in.FromEmailAddress == "" {
			return sub, badRequest("FromEmailAddress is required with Simple or Template content")
		}
		from, err := mail.ParseAddress(in.FromEmailAddress)
		if err != nil {
			return sub, badRequest("FromEmailAddress: " + quote(in.FromEmailAddress) + " is not an email address")
		}
		if len(dest) == 0 {
			return sub, badRequest("Destination: at least one of ToAddresses, CcAddresses and BccAddresses is required")
		}
		msg, e := buildSimple(from, in.Destination.ToAddresses, in.Destination.CcAddresses, in.ReplyToAddresses, c.Simple)
		if e != nil {
			return sub, e
		}
		sub.Sender, sub.Recipients, sub.Message = from.Address, dest, msg
	case c.Raw != nil:
		if len(c.Raw.Data) == 0 {
			return sub, badRequest("Content.Raw.Data is required: the whole message, base64-encoded")
		}
		msg, hdr, e := prepareRaw(c.Raw.Data)
		if e != nil {
			return sub, e
		}
		sub.Message, sub.Recipients = msg, dest
		if len(dest) == 0 {
			sub.Recipients = hdr.recipients
		}
		sub.Sender = hdr.from
		if in.FromEmailAddress != "" {
			from, err := mail.ParseAddress(in.FromEmailAddress)
			if err != nil {
				return sub, badRequest("FromEmailAddress: " + quote(in.FromEmailAddress) + " is not an email address")
			}
			sub.Sender = from.Address
		}
		if sub.Sender == "" {
			return sub, badRequest("Content.Raw.Data: the message has no From field and no FromEmailAddress was given")
		}
		if len(sub.Recipients) == 0 {
			return sub, badRequest("Destination: no recipients given, and the raw message has no To, Cc or Bcc field")
		}
	default:
		return sub, badRequest("Content: Simple, Raw or Template is required")
	}
	return sub, nil
}

func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// jsonProblem says what is wrong with a request body, without echoing it.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field + " has the wrong type (" + te.Value + ")"
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "invalid JSON"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
