package api

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SES v1, the Query API that older clients use (Laravel's default "ses"
// driver, many WordPress plugins): a form-encoded POST to "/" naming its
// Action, answered in XML. Only its sending operations are here: SendEmail,
// SendRawEmail and GetSendQuota. They are translated into the v2
// requests above, so that both versions take the same path.

const queryNS = "http://ses.amazonaws.com/doc/2010-12-01/"

// isQuery reports whether r is a v1 (Query API) request.
func isQuery(r *http.Request) bool { return r.URL.Path == "/" || r.URL.Path == "" }

// writeQueryError answers with e in the Query API's XML shape.
func writeQueryError(w http.ResponseWriter, e *apiError) {
	code, status := e.code, e.status
	switch code { // the v1 names of the v2 errors
	case "BadRequestException":
		code = "InvalidParameterValue"
	case "SendingPausedException":
		code = "AccountSendingPausedException"
	case "TooManyRequestsException", "LimitExceededException":
		code, status = "Throttling", http.StatusBadRequest
	case "NotFoundException":
		code, status = "ConfigurationSetDoesNotExist", http.StatusBadRequest
	}
	kind := "Sender"
	if status >= 500 {
		kind = "Receiver"
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	xml.NewEncoder(w).Encode(struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		NS        string   `xml:"xmlns,attr"`
		Type      string   `xml:"Error>Type"`
		Code      string   `xml:"Error>Code"`
		Message   string   `xml:"Error>Message"`
		RequestID string   `xml:"RequestId"`
	}{NS: queryNS, Type: kind, Code: code, Message: e.message, RequestID: w.Header().Get("x-amzn-RequestId")})
}

// writeQuery answers an action with its result.
func writeQuery(w http.ResponseWriter, action string, result any) {
	w.Header().Set("Content-Type", "text/xml")
	b, _ := xml.Marshal(result)
	id := w.Header().Get("x-amzn-RequestId")
	w.Write([]byte(`<` + action + `Response xmlns="` + queryNS + `"><` + action + `Result>`))
	w.Write(b)
	w.Write([]byte(`</` + action + `Result><ResponseMetadata><RequestId>` + id + `</RequestId></ResponseMetadata></` + action + `Response>`))
}

// serveQuery runs a v1 action.
func (s *Server) serveQuery(w http.ResponseWriter, r *request) {
	form := r.URL.Query()
	if r.Method == http.MethodPost {
		body, err := url.ParseQuery(string(r.body))
		if err != nil {
			writeQueryError(w, badRequest("The request body is not a form (application/x-www-form-urlencoded)"))
			return
		}
		for k, v := range body {
			form[k] = v
		}
	}
	switch action := form.Get("Action"); action {
	case "SendEmail", "SendRawEmail":
		in, e := v2Input(action, form)
		if e != nil {
			writeQueryError(w, e)
			return
		}
		id, e := s.send(r, in)
		if e != nil {
			writeQueryError(w, e)
			return
		}
		writeQuery(w, action, struct {
			XMLName   xml.Name `xml:"MessageId"`
			MessageID string   `xml:",chardata"`
		}{MessageID: id})
	case "GetSendQuota":
		limits := s.deps.Quotas.Limits(r.cred)
		sent, err := s.deps.Usage.Sent(r.Context(), r.cred.Name, s.cfg.Now().Add(-24*time.Hour))
		if err != nil {
			s.log.Error("GetSendQuota: counting what the credential sent failed", "credential", r.cred.Name, "err", err)
			writeQueryError(w, errInternal)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		id := w.Header().Get("x-amzn-RequestId")
		w.Write([]byte(`<GetSendQuotaResponse xmlns="` + queryNS + `"><GetSendQuotaResult>` +
			`<Max24HourSend>` + strconv.Itoa(limits.Daily) + `</Max24HourSend>` +
			`<MaxSendRate>` + strconv.FormatFloat(limits.Rate, 'f', -1, 64) + `</MaxSendRate>` +
			`<SentLast24Hours>` + strconv.Itoa(sent) + `</SentLast24Hours>` +
			`</GetSendQuotaResult><ResponseMetadata><RequestId>` + id + `</RequestId></ResponseMetadata></GetSendQuotaResponse>`))
	case "":
		writeQueryError(w, badRequest("Action is required"))
	default:
		writeQueryError(w, badRequest("Action "+printableAction(action)+" of the SES v1 API is not implemented by this Sesame server; "+
			"it has SendEmail, SendRawEmail and GetSendQuota (and the v2 API: see docs/api.md)"))
	}
}

// v2Input translates a v1 SendEmail or SendRawEmail into SendEmail v2.
func v2Input(action string, f url.Values) (*sendEmailInput, *apiError) {
	in := &sendEmailInput{FromEmailAddress: f.Get("Source"), ConfigurationSetName: f.Get("ConfigurationSetName")}
	in.Content = &struct {
		Simple   *simpleMessage
		Raw      *struct{ Data []byte }
		Template *sendTemplate
	}{}
	if action == "SendRawEmail" {
		data, err := base64.StdEncoding.DecodeString(f.Get("RawMessage.Data"))
		if err != nil {
			return nil, badRequest("RawMessage.Data is not base64")
		}
		in.Content.Raw = &struct{ Data []byte }{data}
		if to := members(f, "Destinations"); len(to) > 0 {
			in.Destination = &struct{ ToAddresses, CcAddresses, BccAddresses []string }{ToAddresses: to}
		}
		return in, nil
	}
	in.Destination = &struct{ ToAddresses, CcAddresses, BccAddresses []string }{
		members(f, "Destination.ToAddresses"), members(f, "Destination.CcAddresses"), members(f, "Destination.BccAddresses")}
	in.ReplyToAddresses = members(f, "ReplyToAddresses")
	text := func(prefix string) *content {
		if !f.Has(prefix + ".Data") {
			return nil
		}
		return &content{Data: f.Get(prefix + ".Data"), Charset: f.Get(prefix + ".Charset")}
	}
	in.Content.Simple = &simpleMessage{Subject: text("Message.Subject"),
		Body: &struct{ Text, Html *content }{text("Message.Body.Text"), text("Message.Body.Html")}}
	return in, nil
}

// members lists the values of a Query API list: NAME.member.1, .2, ...
func members(f url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := f[name+".member."+strconv.Itoa(i)]
		if !ok || len(v) == 0 {
			return out
		}
		out = append(out, v[0])
	}
}

func printableAction(a string) string {
	if len(a) > 64 || strings.ContainsFunc(a, func(r rune) bool { return r < 'A' || r > 'z' }) {
		return "(unknown)"
	}
	return a
}
