package api

import (
	"bytes"
	"encoding/base64"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"path"
	"strings"
)

// simpleMessage is SES v2's Message: the parts Sesame assembles into MIME.
type simpleMessage struct {
	Subject     *content
	Body        *struct{ Text, Html *content }
	Attachments []attachment
	Headers     []struct{ Name, Value string }
}

// content is a text with its charset. Sesame writes every text in UTF-8
// (what JSON carries), so Charset only has to be one UTF-8 can stand for.
type content struct{ Data, Charset string }

type attachment struct {
	FileName, ContentDescription, ContentDisposition, ContentId, ContentTransferEncoding, ContentType string
	RawContent                                                                                        []byte
}

// reservedHeaders are the fields Sesame writes for Simple content; a
// Headers entry may not set them.
var reservedHeaders = map[string]bool{
	"From": true, "To": true, "Cc": true, "Bcc": true, "Reply-To": true, "Subject": true,
	"Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true, "Content-Disposition": true,
	"Return-Path": true, "Received": true, "Dkim-Signature": true,
}

// buildSimple assembles a message from Simple content: the header, then
// the text and HTML bodies (multipart/alternative when both), with the
// attachments around them (multipart/mixed). Lines end in CRLF; texts are
// quoted-printable, attachments base64. Bcc addresses are not written.
func buildSimple(from *mail.Address, to, cc, replyTo []string, m *simpleMessage) ([]byte, *apiError) {
	if m.Subject == nil {
		return nil, badRequest("Content.Simple.Subject is required")
	}
	if m.Body == nil || (m.Body.Text == nil && m.Body.Html == nil) {
		return nil, badRequest("Content.Simple.Body is required: Text, Html or both")
	}
	for _, c := range []struct {
		field string
		c     *content
	}{{"Content.Simple.Subject", m.Subject}, {"Content.Simple.Body.Text", m.Body.Text}, {"Content.Simple.Body.Html", m.Body.Html}} {
		if c.c != nil && c.c.Charset != "" && !strings.EqualFold(c.c.Charset, "UTF-8") && !strings.EqualFold(c.c.Charset, "US-ASCII") {
			return nil, badRequest(c.field + ".Charset: " + quote(c.c.Charset) + " is not supported; Sesame sends text as UTF-8 (give UTF-8 or leave it out)")
		}
	}
	var b bytes.Buffer
	field := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	if from != nil { // nil for TestRenderEmailTemplate: no envelope
		field("From", from.String())
	}
	if list, e := addressList("Destination.ToAddresses", to); e != nil {
		return nil, e
	} else if list != "" {
		field("To", list)
	}
	if list, e := addressList("Destination.CcAddresses", cc); e != nil {
		return nil, e
	} else if list != "" {
		field("Cc", list)
	}
	if list, e := addressList("ReplyToAddresses", replyTo); e != nil {
		return nil, e
	} else if list != "" {
		field("Reply-To", list)
	}
	if strings.ContainsAny(m.Subject.Data, "\r\n") {
		return nil, badRequest("Content.Simple.Subject.Data must be one line")
	}
	field("Subject", encodeText(m.Subject.Data))
	for i, h := range m.Headers {
		name := textproto.CanonicalMIMEHeaderKey(h.Name)
		if !validFieldName(h.Name) || strings.ContainsAny(h.Value, "\r\n\x00") {
			return nil, badRequest("Content.Simple.Headers[" + itoa(i) + "]: " + quote(h.Name) + " is not a valid header field")
		}
		if reservedHeaders[name] {
			return nil, badRequest("Content.Simple.Headers[" + itoa(i) + "]: " + h.Name + " is set from the request's other members, not in Headers")
		}
		field(h.Name, encodeText(h.Value))
	}
	field("MIME-Version", "1.0")

	body := func(w *bytes.Buffer, ctype string, c *content) partFunc {
		return func(mw *multipart.Writer) error {
			hdr := textHeader(ctype)
			if mw == nil {
				writeHeader(w, hdr)
				return writeQP(w, c.Data)
			}
			pw, err := mw.CreatePart(hdr)
			if err != nil {
				return err
			}
			return writeQP(pw, c.Data)
		}
	}
	var texts []partFunc
	if m.Body.Text != nil {
		texts = append(texts, body(&b, "text/plain", m.Body.Text))
	}
	if m.Body.Html != nil {
		texts = append(texts, body(&b, "text/html", m.Body.Html))
	}
	if len(m.Attachments) == 0 {
		if len(texts) == 1 {
			if err := texts[0](nil); err != nil {
				return nil, badRequest(err.Error())
			}
			return b.Bytes(), nil
		}
		if err := writeMultipart(&b, "alternative", texts); err != nil {
			return nil, badRequest(err.Error())
		}
		return b.Bytes(), nil
	}
	parts := []partFunc{func(mw *multipart.Writer) error {
		if len(texts) == 1 {
			return texts[0](mw)
		}
		var inner bytes.Buffer
		iw := multipart.NewWriter(&inner)
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"multipart/alternative; boundary=" + iw.Boundary()}})
		if err != nil {
			return err
		}
		for _, t := range texts {
			if err := t(iw); err != nil {
				return err
			}
		}
		iw.Close()
		_, err = pw.Write(inner.Bytes())
		return err
	}}
	for i := range m.Attachments {
		a := &m.Attachments[i]
		if e := checkAttachment(i, a); e != nil {
			return nil, e
		}
		parts = append(parts, func(mw *multipart.Writer) error { return writeAttachment(mw, a) })
	}
	if err := writeMultipart(&b, "mixed", parts); err != nil {
		return nil, badRequest(err.Error())
	}
	return b.Bytes(), nil
}

// A partFunc writes one body part: into mw, or as the whole body (the
// header fields, then the body) when mw is nil.
type partFunc func(mw *multipart.Writer) error

// writeMultipart writes a multipart body of parts into b, whose header
// fields are written up to the Content-Type this writes.
func writeMultipart(b *bytes.Buffer, subtype string, parts []partFunc) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	b.WriteString("Content-Type: multipart/" + subtype + "; boundary=\"" + mw.Boundary() + "\"\r\n\r\n")
	for _, p := range parts {
		if err := p(mw); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	b.Write(body.Bytes())
	return nil
}

func textHeader(ctype string) textproto.MIMEHeader {
	return textproto.MIMEHeader{
		"Content-Type":              {ctype + "; charset=UTF-8"},
		"Content-Transfer-Encoding": {"quoted-printable"},
	}
}

func writeHeader(b *bytes.Buffer, h textproto.MIMEHeader) {
	for _, k := range []string{"Content-Type", "Content-Transfer-Encoding"} {
		b.WriteString(k + ": " + h.Get(k) + "\r\n")
	}
	b.WriteString("\r\n")
}

// writeQP writes text quoted-printable, its line ends as CRLF.
func writeQP(w interface{ Write([]byte) (int, error) }, text string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(text)); err != nil {
		return err
	}
	if err := qp.Close(); err != nil {
		return err
	}
	_, err := w.Write([]byte("\r\n"))
	return err
}

func checkAttachment(i int, a *attachment) *apiError {
	field := "Content.Simple.Attachments[" + itoa(i) + "]"
	switch {
	case a.FileName == "":
		return badRequest(field + ".FileName is required")
	case strings.ContainsAny(a.FileName+a.ContentDescription+a.ContentId+a.ContentType, "\r\n\x00"):
		return badRequest(field + ": a member holds a line break")
	case a.ContentDisposition != "" && a.ContentDisposition != "ATTACHMENT" && a.ContentDisposition != "INLINE":
		return badRequest(field + ".ContentDisposition: " + quote(a.ContentDisposition) + ": expected ATTACHMENT or INLINE")
	case a.ContentTransferEncoding != "" && a.ContentTransferEncoding != "BASE64" &&
		a.ContentTransferEncoding != "QUOTED_PRINTABLE" && a.ContentTransferEncoding != "SEVEN_BIT":
		return badRequest(field + ".ContentTransferEncoding: " + quote(a.ContentTransferEncoding) + ": expected BASE64, QUOTED_PRINTABLE or SEVEN_BIT")
	}
	if a.ContentType != "" {
		if _, _, err := mime.ParseMediaType(a.ContentType); err != nil {
			return badRequest(field + ".ContentType: " + quote(a.ContentType) + " is not a media type")
		}
	}
	return nil
}

// writeAttachment writes one attachment, base64-encoded whatever
// ContentTransferEncoding asks: base64 carries any bytes intact.
func writeAttachment(mw *multipart.Writer, a *attachment) error {
	ctype := a.ContentType
	if ctype == "" {
		ctype = mime.TypeByExtension(path.Ext(a.FileName))
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	mt, params, _ := mime.ParseMediaType(ctype)
	if params == nil {
		params = map[string]string{}
	}
	params["name"] = a.FileName
	disp := "attachment"
	if a.ContentDisposition == "INLINE" {
		disp = "inline"
	}
	h := textproto.MIMEHeader{
		"Content-Type":              {mime.FormatMediaType(mt, params)},
		"Content-Disposition":       {mime.FormatMediaType(disp, map[string]string{"filename": a.FileName})},
		"Content-Transfer-Encoding": {"base64"},
	}
	if a.ContentId != "" {
		h.Set("Content-Id", "<"+strings.Trim(a.ContentId, "<>")+">")
	}
	if a.ContentDescription != "" {
		h.Set("Content-Description", encodeText(a.ContentDescription))
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	enc := base64.StdEncoding.EncodeToString(a.RawContent)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	_, err = pw.Write([]byte(b.String()))
	return err
}

// addressList formats addresses for a header field, names encoded.
func addressList(field string, addrs []string) (string, *apiError) {
	var out []string
	for _, a := range addrs {
		addr, err := mail.ParseAddress(a)
		if err != nil {
			return "", badRequest(field + ": " + quote(a) + " is not an email address")
		}
		out = append(out, addr.String())
	}
	return strings.Join(out, ",\r\n "), nil
}

// encodeText makes a header field's text fit for the header: non-ASCII
// and long texts as RFC 2047 encoded words, one per folded line.
func encodeText(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] < ' ' && s[i] != '\t' {
			ascii = false
			break
		}
	}
	if ascii && len(s) < 900 {
		return s
	}
	return strings.ReplaceAll(mime.QEncoding.Encode("UTF-8", s), "?= =?", "?=\r\n =?")
}

func validFieldName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// rawHeader is what a raw message's header says of its envelope.
type rawHeader struct {
	from       string
	recipients []string
}

// prepareRaw readies a raw message for the submission path: its line ends
// made CRLF (messages built in code often end lines in LF alone), its From
// and recipients read from the header (for a request without Destination),
// and its Bcc field removed: every recipient would see it otherwise.
func prepareRaw(data []byte) ([]byte, rawHeader, *apiError) {
	data = crlf(data)
	var h rawHeader
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, h, badRequest("Content.Raw.Data is not a message: " + err.Error())
	}
	if list, err := m.Header.AddressList("From"); err == nil && len(list) > 0 {
		h.from = list[0].Address
	}
	for _, f := range []string{"To", "Cc", "Bcc"} {
		list, err := m.Header.AddressList(f)
		if err != nil && err != mail.ErrHeaderNotPresent {
			return nil, h, badRequest("Content.Raw.Data: the " + f + " field is not a list of addresses")
		}
		for _, a := range list {
			h.recipients = append(h.recipients, a.Address)
		}
	}
	return removeField(data, "bcc"), h, nil
}

// crlf makes every bare LF a CRLF.
func crlf(b []byte) []byte {
	n := bytes.Count(b, []byte("\n")) - bytes.Count(b, []byte("\r\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// removeField removes every field called name (lower case) from the
// header of msg, with its continuation lines.
func removeField(msg []byte, name string) []byte {
	var out []byte
	skipping := false
	rest := msg
	for len(rest) > 0 {
		i := bytes.Index(rest, []byte("\r\n"))
		if i < 0 {
			i = len(rest) - 2
		}
		line := rest[:i+2]
		if i == 0 { // the end of the header
			out = append(out, rest...)
			return out
		}
		if line[0] != ' ' && line[0] != '\t' {
			k, _, _ := bytes.Cut(line, []byte(":"))
			skipping = strings.EqualFold(strings.TrimSpace(string(k)), name)
		}
		if !skipping {
			out = append(out, line...)
		}
		rest = rest[i+2:]
	}
	return out
}
