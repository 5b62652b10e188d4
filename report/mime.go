package report

// The MIME structure: finding the multipart/report (RFC 6522) and its
// machine-readable and original parts.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"strings"
)

// maxOriginal caps what is read of the original message's part: only its
// header is wanted.
const maxOriginal = 1 << 20

// maxBoundary is the longest multipart boundary accepted. RFC 2046 §5.1.1
// allows 70 characters; some leeway is given to senders that exceed it.
const maxBoundary = 200

// parser holds the state of one Parse.
type parser struct {
	parts int // MIME parts read so far, at every level
}

// message parses a whole message.
func (p *parser) message(raw []byte) (*Report, error) {
	fields, body := scanFields(raw, maxFields)
	ct := get(fields, "content-type")
	mt, params := contentType(ct)
	if !strings.HasPrefix(mt, "multipart/") {
		if ct == "" {
			return nil, notReport("the message has no Content-Type (so it is text/plain)")
		}
		return nil, notReport("the message is %s, not multipart/report", excerpt(mt))
	}
	rep, err := p.find(mt, params, decoded(bytes.NewReader(body), get(fields, "content-transfer-encoding")), 0)
	if err != nil {
		return nil, err
	}
	if rep == nil {
		return nil, notReport("no multipart/report in the %s message", excerpt(mt))
	}
	return rep, nil
}

// find looks for a report in a multipart entity of media type mt at the
// given depth (0 for the message itself), and returns nil, nil if there is
// none. It reads the parts of a multipart/mixed or another container in
// turn, and stops at the first multipart/report.
func (p *parser) find(mt string, params map[string]string, body io.Reader, depth int) (*Report, error) {
	if depth >= MaxDepth {
		return nil, limitErr("multiparts nested more than %d deep", MaxDepth)
	}
	if mt == "multipart/report" {
		switch rt := strings.ToLower(strings.TrimSpace(params["report-type"])); rt {
		case "delivery-status", "global-delivery-status": // RFC 3464 §2, RFC 6533 §6
			return p.report(KindDSN, rt, params, body)
		case "feedback-report": // RFC 5965 §3
			return p.report(KindARF, rt, params, body)
		case "":
			return nil, errorf("multipart/report without a report-type parameter")
		default:
			return nil, notReport("report-type is %s", excerpt(rt))
		}
	}
	mr, err := multipartReader(mt, params, body)
	if err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		part, err := p.next(mr, mt, params["boundary"], i)
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		pmt, pparams := contentType(part.Header.Get("Content-Type"))
		if !strings.HasPrefix(pmt, "multipart/") {
			continue
		}
		body := decoded(part, part.Header.Get("Content-Transfer-Encoding"))
		if rep, err := p.find(pmt, pparams, body, depth+1); rep != nil || err != nil {
			return rep, err
		}
	}
}

// report reads a multipart/report of the given kind: its machine-readable
// part, which must be there, and the original message's part, if any, in
// whatever order they come. Once the machine-readable part is read, a
// problem further on (a truncated original, a missing closing boundary)
// only ends the reading: the report itself is whole.
func (p *parser) report(kind Kind, reportType string, params map[string]string, body io.Reader) (*Report, error) {
	const mt = "multipart/report"
	mr, err := multipartReader(mt, params, body)
	if err != nil {
		return nil, err
	}
	rep := &Report{Kind: kind}
	machine, original := false, false
	for i := 0; !machine || !original; i++ {
		part, err := p.next(mr, mt, params["boundary"], i)
		if err != nil {
			if machine {
				break
			}
			if err == io.EOF {
				return nil, errorf("multipart/report; report-type=%s has no %s part", reportType, machineTypes(kind))
			}
			return nil, err
		}
		pmt, _ := contentType(part.Header.Get("Content-Type"))
		body := decoded(part, part.Header.Get("Content-Transfer-Encoding"))
		switch {
		case !machine && isMachineType(kind, pmt):
			data, err := io.ReadAll(body)
			if err != nil {
				return nil, readErr(pmt, err)
			}
			if kind == KindDSN {
				rep.DSN, err = parseDSN(pmt, data)
			} else {
				rep.Feedback, err = parseFeedback(pmt, data)
			}
			if err != nil {
				return nil, err
			}
			machine = true
		case !original && isOriginalType(pmt):
			// Whatever was read is used, however the part ended: the
			// header comes first.
			data, _ := io.ReadAll(io.LimitReader(body, maxOriginal))
			rep.Original = parseHeaders(data)
			original = true
		}
	}
	return rep, nil
}

// isMachineType reports whether mt is the machine-readable part of a report
// of the given kind. A DSN's may be either type whatever the report-type,
// as senders mix them up.
func isMachineType(kind Kind, mt string) bool {
	if kind == KindDSN {
		return mt == "message/delivery-status" || mt == "message/global-delivery-status"
	}
	return mt == "message/feedback-report"
}

func machineTypes(kind Kind) string {
	if kind == KindDSN {
		return "message/delivery-status (or message/global-delivery-status)"
	}
	return "message/feedback-report"
}

// isOriginalType reports whether mt is a returned original message (RFC
// 6522 §3: the whole message or its header; RFC 6533 §3.5–3.6 for the
// internationalized forms).
func isOriginalType(mt string) bool {
	switch mt {
	case "message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers":
		return true
	}
	return false
}

// multipartReader returns a reader of the parts of body, a multipart entity
// of media type mt.
func multipartReader(mt string, params map[string]string, body io.Reader) (*multipart.Reader, error) {
	b := params["boundary"]
	if b == "" {
		return nil, errorf("%s without a boundary parameter", mt)
	}
	if len(b) > maxBoundary {
		return nil, errorf("%s boundary is %d characters, more than %d", mt, len(b), maxBoundary)
	}
	return multipart.NewReader(skipPreamble(body, b), b), nil
}

// skipPreamble returns r from the first line that starts with the
// delimiter "--boundary" on. multipart.Reader reads the preamble itself,
// but fails on a line longer than its 4 KiB buffer; here such a line is
// read in pieces, as what it is: not a delimiter. If there is no delimiter,
// the reader returned is at the end.
func skipPreamble(r io.Reader, boundary string) io.Reader {
	br := bufio.NewReader(r)
	delim := "--" + boundary
	lineStart := true
	for {
		if lineStart {
			if p, _ := br.Peek(len(delim)); string(p) == delim {
				return br
			}
		}
		_, err := br.ReadSlice('\n')
		switch err {
		case nil:
			lineStart = true
		case bufio.ErrBufferFull:
			lineStart = false
		default:
			return br
		}
	}
}

// next returns the next part of mr (the i-th, from 0), counting it against
// MaxParts, or io.EOF after the last part.
func (p *parser) next(mr *multipart.Reader, mt, boundary string, i int) (*multipart.Part, error) {
	part, err := mr.NextRawPart()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if i == 0 {
				return nil, errorf("%s has no parts: its boundary %s is not in the body", mt, excerpt(boundary))
			}
			return nil, errorf("%s is truncated: it ends in part %d, before the closing boundary", mt, i)
		}
		return nil, errorf("%s part %d: %s", mt, i+1, errText(err))
	}
	p.parts++
	if p.parts > MaxParts {
		return nil, limitErr("more than %d MIME parts", MaxParts)
	}
	return part, nil
}

// readErr describes an error reading the body of a part of media type mt.
func readErr(mt string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errorf("the %s part is truncated: the message ends before its closing boundary", mt)
	}
	return errorf("the %s part: %s", mt, errText(err))
}

// decoded returns r's content decoded according to its
// Content-Transfer-Encoding (RFC 2045 §6). RFC 6522 wants no encoding on
// message/delivery-status, but some senders use one, and RFC 6533 allows it
// on message/global-delivery-status.
func decoded(r io.Reader, cte string) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// contentType reads a Content-Type field: the media type, lower case, and
// the parameters, names lower case. A field mime.ParseMediaType refuses, as
// it does an unquoted boundary with "=" in it or a repeated parameter, is
// read leniently: the type, then one name=value per ";", the first of each
// name kept. With no field, or one whose type is not type/subtype, it is
// text/plain (RFC 2045 §5.2).
func contentType(v string) (string, map[string]string) {
	if mt, params, err := mime.ParseMediaType(v); err == nil && validMediaType(mt) {
		return mt, params
	}
	segs := strings.Split(v, ";")
	mt := strings.ToLower(strings.TrimSpace(segs[0]))
	if !validMediaType(mt) {
		return "text/plain", nil
	}
	params := make(map[string]string)
	for _, s := range segs[1:] {
		k, val, ok := strings.Cut(s, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		if _, dup := params[k]; !dup {
			params[k] = val
		}
	}
	return mt, params
}

// validMediaType reports whether mt is type/subtype, each a name of at most
// 127 characters (RFC 6838 §4.2), so that it can be quoted in an error.
func validMediaType(mt string) bool {
	t, sub, ok := strings.Cut(mt, "/")
	return ok && isRestrictedName(t) && isRestrictedName(sub)
}

// isRestrictedName reports whether s is a restricted-name (RFC 6838 §4.2).
func isRestrictedName(s string) bool {
	if s == "" || len(s) > 127 || !isLetter(s[0]) && !isDigit(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !isDigit(c) && !strings.ContainsRune("!#$&-^_.+", rune(c)) {
			return false
		}
	}
	return true
}

// get returns the value of the first field named name (lower case), or "".
func get(fields []field, name string) string {
	for _, f := range fields {
		if f.name == name {
			return f.value
		}
	}
	return ""
}
