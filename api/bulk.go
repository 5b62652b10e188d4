package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/sesame-mail/sesame/smtpd"
)

// maxBulkEntries is SES's limit of destinations in one SendBulkEmail.
const maxBulkEntries = 50

// sendBulkInput is SendBulkEmail's request (SES v2 model).
type sendBulkInput struct {
	FromEmailAddress            string
	FromEmailAddressIdentityArn string
	ReplyToAddresses            []string
	DefaultContent              *struct{ Template *sendTemplate }
	BulkEmailEntries            []struct {
		Destination *struct {
			ToAddresses, CcAddresses, BccAddresses []string
		}
		ReplacementEmailContent *struct {
			ReplacementTemplate *struct{ ReplacementTemplateData string }
		}
		ReplacementHeaders []struct{ Name, Value string }
	}
	ConfigurationSetName string
}

// sendBulk answers SendBulkEmail (POST /v2/email/outbound-bulk-emails):
// one message per entry, from the default template with the entry's data
// over the default data, each through the submission path on its own, so
// that each entry has its own result as on SES.
func (s *Server) sendBulk(w http.ResponseWriter, r *request) {
	var in sendBulkInput
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not a SendBulkEmail request: "+jsonProblem(err)))
		return
	}
	switch {
	case in.DefaultContent == nil || in.DefaultContent.Template == nil:
		writeError(w, badRequest("DefaultContent.Template is required"))
		return
	case len(in.BulkEmailEntries) == 0:
		writeError(w, badRequest("BulkEmailEntries: at least one entry is required"))
		return
	case len(in.BulkEmailEntries) > maxBulkEntries:
		writeError(w, badRequest("BulkEmailEntries: at most "+strconv.Itoa(maxBulkEntries)+" entries in one request"))
		return
	}
	var defaults map[string]json.RawMessage
	if d := in.DefaultContent.Template.TemplateData; d != "" {
		if err := json.Unmarshal([]byte(d), &defaults); err != nil {
			writeError(w, badRequest("DefaultContent.Template.TemplateData is not a JSON object: "+jsonProblem(err)))
			return
		}
	}
	type result struct {
		Status    string
		Error     string `json:",omitempty"`
		MessageId string `json:",omitempty"`
	}
	results := make([]result, 0, len(in.BulkEmailEntries))
	for i, entry := range in.BulkEmailEntries {
		data := map[string]json.RawMessage{}
		for k, v := range defaults {
			data[k] = v
		}
		if rc := entry.ReplacementEmailContent; rc != nil && rc.ReplacementTemplate != nil && rc.ReplacementTemplate.ReplacementTemplateData != "" {
			var repl map[string]json.RawMessage
			if err := json.Unmarshal([]byte(rc.ReplacementTemplate.ReplacementTemplateData), &repl); err != nil {
				results = append(results, result{Status: "INVALID_PARAMETER",
					Error: "BulkEmailEntries[" + strconv.Itoa(i) + "].ReplacementTemplateData is not a JSON object"})
				continue
			}
			for k, v := range repl {
				data[k] = v
			}
		}
		merged, _ := json.Marshal(data)
		tpl := *in.DefaultContent.Template
		tpl.TemplateData = string(merged)
		tpl.Headers = append(append([]struct{ Name, Value string }(nil), tpl.Headers...), entry.ReplacementHeaders...)
		one := &sendEmailInput{FromEmailAddress: in.FromEmailAddress, FromEmailAddressIdentityArn: in.FromEmailAddressIdentityArn,
			Destination: entry.Destination, ReplyToAddresses: in.ReplyToAddresses, ConfigurationSetName: in.ConfigurationSetName}
		one.Content = &struct {
			Simple   *simpleMessage
			Raw      *struct{ Data []byte }
			Template *sendTemplate
		}{Template: &tpl}
		if entry.Destination == nil {
			results = append(results, result{Status: "INVALID_PARAMETER", Error: "BulkEmailEntries[" + strconv.Itoa(i) + "].Destination is required"})
			continue
		}
		sub, e := s.submission(one, r)
		if e == nil {
			var id string
			id, err := s.deps.Submitter.Submit(r.Context(), sub)
			if ref := (*smtpd.Refusal)(nil); errors.As(err, &ref) {
				e = refusalError(ref)
			} else if err != nil {
				s.log.Error("SendBulkEmail failed", "credential", r.cred.Name, "err", err)
				e = errInternal
			} else {
				results = append(results, result{Status: "SUCCESS", MessageId: id})
				continue
			}
		}
		results = append(results, result{Status: bulkStatus(e), Error: e.message})
	}
	writeJSON(w, struct{ BulkEmailEntryResults []result }{results})
}

// bulkStatus is SES's BulkEmailStatus for an entry refused with e.
func bulkStatus(e *apiError) string {
	switch e.code {
	case "MessageRejected":
		return "MESSAGE_REJECTED"
	case "SendingPausedException":
		return "ACCOUNT_SENDING_PAUSED"
	case "LimitExceededException":
		return "ACCOUNT_DAILY_QUOTA_EXCEEDED"
	case "TooManyRequestsException":
		return "ACCOUNT_THROTTLED"
	case "NotFoundException":
		if strings.HasPrefix(e.message, "Configuration set") {
			return "CONFIGURATION_SET_NOT_FOUND"
		}
		return "TEMPLATE_NOT_FOUND"
	case "BadRequestException":
		return "INVALID_PARAMETER"
	case "ServiceUnavailable":
		return "TRANSIENT_FAILURE"
	}
	return "FAILED"
}
