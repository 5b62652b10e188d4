package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// dkimOutcome is what the sink found when it checked one message's DKIM
// signatures.
type dkimOutcome int

const (
	dkimNotChecked dkimOutcome = iota // verification was not asked for
	dkimVerified                      // signed, and every signature verifies
	dkimFailed                        // at least one signature does not verify
	dkimUnsigned                      // no DKIM-Signature field
)

// dkimChecker verifies the DKIM signatures of received messages. Keys come
// from the TXT records of "sesame domain add --json" (--dkim-records) and,
// for names not there, from a DNS server on loopback (--dns). DNS answers
// are kept for the whole run, so a benchmark asks once per selector.
//
// check is safe for concurrent use: each sink session calls it in its own
// goroutine, and nothing is locked while a signature is verified or a
// server is asked.
type dkimChecker struct {
	records map[string]string // lower-case FQDN → TXT value
	server  string            // host:port of the DNS server; "" for none
	client  *dns.Client
	opts    *dkim.VerifyOptions

	mu    sync.Mutex
	cache map[string]txtAnswer // by lower-case FQDN: definite answers only
}

type txtAnswer struct {
	txts []string
	err  error
}

// newDKIMChecker loads the records file (if any) and returns a checker, or
// nil when neither a file nor a server is given.
func newDKIMChecker(recordsFile, server string) (*dkimChecker, error) {
	if recordsFile == "" && server == "" {
		return nil, nil
	}
	records, err := loadRecords(recordsFile)
	if err != nil {
		return nil, fmt.Errorf("--dkim-records: %w", err)
	}
	c := &dkimChecker{
		records: records,
		server:  server,
		client:  &dns.Client{Timeout: 2 * time.Second},
		cache:   map[string]txtAnswer{},
	}
	// Sesame signs once per domain, twice with a fallback domain; more than
	// a few signatures is not worth the CPU of a benchmark sink.
	c.opts = &dkim.VerifyOptions{LookupTXT: c.lookupTXT, MaxVerifications: 4}
	return c, nil
}

// check verifies msg, the whole message as received. The error says why a
// failed message failed.
func (c *dkimChecker) check(msg []byte) (dkimOutcome, error) {
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), c.opts)
	if err != nil {
		return dkimFailed, err
	}
	if len(verifs) == 0 {
		return dkimUnsigned, nil
	}
	for _, v := range verifs {
		if v.Err != nil {
			return dkimFailed, fmt.Errorf("d=%s: %w", v.Domain, v.Err)
		}
	}
	return dkimVerified, nil
}

// lookupTXT is the verifier's key lookup: the records file first, then the
// DNS server. A missing name is a not-found DNS error, which go-msgauth
// reports as a permanent failure ("no key for signature").
func (c *dkimChecker) lookupTXT(name string) ([]string, error) {
	fqdn := strings.ToLower(dns.Fqdn(name))
	if v, ok := c.records[fqdn]; ok {
		return []string{v}, nil
	}
	if c.server == "" {
		return nil, &net.DNSError{Err: "not in --dkim-records", Name: name, IsNotFound: true}
	}
	c.mu.Lock()
	a, ok := c.cache[fqdn]
	c.mu.Unlock()
	if ok {
		return a.txts, a.err
	}
	// Sessions asking for a new name at once may each ask the server; they
	// get the same answer, and only the first few messages of a run pay.
	txts, err := c.query(fqdn)
	var de *net.DNSError
	if err == nil || (errors.As(err, &de) && de.IsNotFound) {
		c.mu.Lock()
		c.cache[fqdn] = txtAnswer{txts, err}
		c.mu.Unlock()
	}
	return txts, err
}

// query asks the server for fqdn's TXT records over UDP, and again over TCP
// if the answer was truncated. Each record's strings are joined, as
// net.LookupTXT does.
func (c *dkimChecker) query(fqdn string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeTXT)
	// An RSA-2048 key's record alone is over 400 bytes: offer a buffer
	// bigger than DNS's 512-byte default (RFC 6891).
	m.SetEdns0(4096, false)
	r, _, err := c.client.Exchange(m, c.server)
	if err == nil && r.Truncated {
		tcp := *c.client
		tcp.Net = "tcp"
		r, _, err = tcp.Exchange(m, c.server)
	}
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: fqdn, Server: c.server, IsTemporary: true}
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &net.DNSError{Err: "no such host", Name: fqdn, Server: c.server, IsNotFound: true}
	default:
		return nil, &net.DNSError{Err: dns.RcodeToString[r.Rcode], Name: fqdn, Server: c.server, IsTemporary: true}
	}
	var txts []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			txts = append(txts, strings.Join(t.Txt, ""))
		}
	}
	if len(txts) == 0 {
		return nil, &net.DNSError{Err: "no TXT record", Name: fqdn, Server: c.server, IsNotFound: true}
	}
	return txts, nil
}
