package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/smtpd"
)

// apiError is an error in SES's REST-JSON shape: the HTTP status, the
// error's type (the x-amzn-ErrorType header, which the SDKs turn into
// their typed exceptions, e.g. *types.MessageRejected in Go) and a message
// for people. The message never holds internals (paths, SQL, keys).
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "BadRequestException", msg}
}

var (
	errTooLarge = &apiError{http.StatusRequestEntityTooLarge, "RequestEntityTooLargeException",
		"The request body is larger than this server takes; see [submission] max_message_bytes"}
	errInternal = &apiError{http.StatusInternalServerError, "InternalFailure",
		"The request could not be processed; try again later"}
)

// writeError answers with e in SES's shape.
func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	h.Set("x-amzn-ErrorType", e.code)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(struct {
		Message string `json:"message"`
	}{e.message})
}

// writeJSON answers 200 with v.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// refusalError is SES's answer to a refusal of the submission path: the
// types and words SES uses for the same refusal, with Sesame's reason
// (the SMTP reply's text, which says what to do) as the message.
func refusalError(r *smtpd.Refusal) *apiError {
	msg := strings.TrimPrefix(r.Reply.Message, "Message rejected: ")
	switch r.Reason {
	case smtpd.ReasonNotVerified, smtpd.ReasonSandbox, smtpd.ReasonDMARCProtected, smtpd.ReasonNoKeys,
		smtpd.ReasonBadMessage, smtpd.ReasonTooBig:
		return &apiError{http.StatusBadRequest, "MessageRejected", msg}
	case smtpd.ReasonPaused:
		return &apiError{http.StatusBadRequest, "SendingPausedException", msg}
	case smtpd.ReasonQuotaDaily:
		return &apiError{http.StatusBadRequest, "LimitExceededException", "Daily message quota exceeded."}
	case smtpd.ReasonQuotaRate:
		return &apiError{http.StatusTooManyRequests, "TooManyRequestsException", "Maximum sending rate exceeded."}
	case smtpd.ReasonBadAddress:
		return badRequest(msg)
	}
	if r.Reply.Code >= 500 {
		return &apiError{http.StatusBadRequest, "MessageRejected", msg}
	}
	// A temporary refusal (storage, the memory budget, a failed check):
	// the SDKs retry a 503 by themselves.
	return &apiError{http.StatusServiceUnavailable, "ServiceUnavailable", tempText(r.Reply)}
}

func tempText(e *smtp.SMTPError) string {
	if e.Message == "" {
		return "Service unavailable; try again later"
	}
	return e.Message
}
