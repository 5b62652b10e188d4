package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, header form, as the AWS SDKs send it
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
//
//	Authorization: AWS4-HMAC-SHA256 Credential=KEYID/20261207/eu-west-1/ses/aws4_request,
//	    SignedHeaders=host;x-amz-date, Signature=<hex>
//
// The server rebuilds the canonical request from what it received, with
// the payload hash it computes itself, derives the signing key from the
// secret, and compares signatures in constant time. Any region is taken
// (and the scope's region is the one the client signed for); the service
// must be "ses".

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDateFmt   = "20060102T150405Z"
	// maxSkew is how far X-Amz-Date may be from the server's clock, either
	// way, as AWS allows: a captured request cannot be replayed later.
	maxSkew = 15 * time.Minute
)

// authHeader is a parsed Authorization header.
type authHeader struct {
	keyID, date, region, service string
	signedHeaders                []string
	signature                    string
}

// parseAuth parses the Authorization header; ok is false when it is not
// SigV4's header form.
func parseAuth(v string) (a authHeader, ok bool) {
	rest, found := strings.CutPrefix(v, sigAlgorithm+" ")
	if !found {
		return a, false
	}
	var cred, signed string
	for _, part := range strings.Split(rest, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = val
		case "SignedHeaders":
			signed = val
		case "Signature":
			a.signature = val
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || signed == "" || a.signature == "" {
		return a, false
	}
	a.keyID, a.date, a.region, a.service = scope[0], scope[1], scope[2], scope[3]
	a.signedHeaders = strings.Split(signed, ";")
	return a, true
}

// signature computes the signature of r, whose body hashes to payloadHash,
// with secret, as the client should have.
func signature(r *http.Request, a authHeader, amzDate, payloadHash, secret string) string {
	canonical := strings.Join([]string{
		r.Method,
		canonicalURI(r.URL),
		canonicalQuery(r.URL.Query()),
		canonicalHeaders(r, a.signedHeaders),
		strings.Join(a.signedHeaders, ";"),
		payloadHash,
	}, "\n")
	scope := a.date + "/" + a.region + "/" + a.service + "/aws4_request"
	sum := sha256.Sum256([]byte(canonical))
	toSign := sigAlgorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := hmacSHA256([]byte("AWS4"+secret), a.date)
	key = hmacSHA256(key, a.region)
	key = hmacSHA256(key, a.service)
	key = hmacSHA256(key, "aws4_request")
	return hex.EncodeToString(hmacSHA256(key, toSign))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// canonicalURI is the path as the client sent it, escaped once more
// (every service but S3 signs it so): unreserved characters and '/' stay.
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '/' || unreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// canonicalQuery is the query, pairs sorted by key then value, each
// component escaped per RFC 3986.
func canonicalQuery(q url.Values) string {
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, escape(k)+"="+escape(v))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; unreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

// canonicalHeaders lists the signed headers, lower-cased, each with its
// values trimmed, inner runs of spaces made one, and joined by commas.
// Go moves Host and Content-Length out of r.Header: they are read from
// the request itself.
func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, name := range names {
		var values []string
		switch name {
		case "host":
			values = []string{r.Host}
		case "content-length":
			values = []string{strconv.FormatInt(r.ContentLength, 10)}
		default:
			values = r.Header.Values(name)
		}
		b.WriteString(name + ":")
		for i, v := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Sign signs r, whose body is body, with SigV4 for service ses in region
// at t, as the AWS SDKs do: sesame send's requests to the API.
func Sign(r *http.Request, body []byte, keyID, secret, region string, t time.Time) {
	t = t.UTC()
	amzDate := t.Format(amzDateFmt)
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	r.Header.Set("X-Amz-Date", amzDate)
	r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	if r.Host == "" {
		r.Host = r.URL.Host
	}
	a := authHeader{keyID: keyID, date: t.Format("20060102"), region: region, service: "ses",
		signedHeaders: []string{"host", "x-amz-content-sha256", "x-amz-date"}}
	sig := signature(r, a, amzDate, payloadHash, secret)
	r.Header.Set("Authorization", sigAlgorithm+" Credential="+keyID+"/"+a.date+"/"+region+"/ses/aws4_request, SignedHeaders="+
		strings.Join(a.signedHeaders, ";")+", Signature="+sig)
}
