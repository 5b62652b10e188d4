package dkim

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/sesame-mail/sesame/store"
)

// testMessage has folded fields, two To and two Received fields, mixed-case
// names, whitespace that relaxed canonicalization folds, and an 8-bit UTF-8
// body.
const testMessage = "Received: from app.example.net (app.example.net [192.0.2.7])\r\n" +
	"\tby mx.example.com with ESMTPSA; Fri, 27 Nov 2026 10:00:01 +0000\r\n" +
	"Received: from localhost by app.example.net; Fri, 27 Nov 2026 10:00:00 +0000\r\n" +
	"From: \"Shop\" <shop@example.com>\r\n" +
	"To: Alice <alice@example.org>,\r\n" +
	"  Bob <bob@example.org>\r\n" +
	"to: carol@example.net\r\n" +
	"Subject:   Your order   #1234 has\r\n" +
	" \tshipped =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n" +
	"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <order-1234@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"X-Mailer: shop 2.1\r\n" +
	"\r\n" +
	"Grüße aus Köln — 日本語のテキスト.\r\n" +
	"Line with trailing blanks   \t\r\n" +
	"  indented\tline with  inner   spaces\r\n" +
	"From: this body line is not a header\r\n" +
	"\r\n" +
	"\r\n"

// wantH is the h= list for testMessage.
const wantH = "From:From:To:To:Subject:Date:Message-ID:MIME-Version:Content-Type:Content-Transfer-Encoding" + absentOverSigned

// absentOverSigned ends the h= list of a message without the one-click
// unsubscribe fields: their absence is signed.
const absentOverSigned = ":List-Unsubscribe:List-Unsubscribe-Post"

// signerFor returns a signer for example.com with keys of the given
// algorithms and the TXT records that publish them.
func signerFor(t testing.TB, algs ...string) (*Signer, map[string]string) {
	t.Helper()
	var keys []store.DKIMKey
	records := make(map[string]string)
	for _, alg := range algs {
		k := newTestKey(t, alg, "sesame-"+alg+"-20261127")
		r, err := DNSRecord("example.com", k)
		if err != nil {
			t.Fatal(err)
		}
		records[r.Name] = r.Value
		keys = append(keys, k)
	}
	s, err := NewSigner("example.com", keys)
	if err != nil {
		t.Fatal(err)
	}
	return s, records
}

// verify checks msg with go-msgauth, looking keys up in records only.
func verify(t *testing.T, msg []byte, records map[string]string) []*msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := records[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no TXT record for %s", name)
		},
	})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return vs
}

// signTest signs msg with s, checks msg was not touched, and returns the
// signature fields and the signed message.
func signTest(t *testing.T, s *Signer, msg string) (sigs, signed []byte) {
	t.Helper()
	in := []byte(msg)
	sigs, err := s.Sign(in)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if string(in) != msg {
		t.Fatal("Sign modified the message")
	}
	return sigs, append(append([]byte(nil), sigs...), msg...)
}

// sigTags splits DKIM-Signature fields into their tags.
func sigTags(t *testing.T, sigs []byte) []map[string]string {
	t.Helper()
	var out []map[string]string
	s := string(sigs)
	if !strings.HasSuffix(s, "\r\n") {
		t.Fatalf("signatures do not end in CRLF: %q", s)
	}
	unfolded := strings.NewReplacer("\r\n ", " ", "\r\n\t", "\t").Replace(s)
	for _, line := range strings.Split(strings.TrimSuffix(unfolded, "\r\n"), "\r\n") {
		v, ok := strings.CutPrefix(line, "DKIM-Signature:")
		if !ok {
			t.Fatalf("not a DKIM-Signature field: %q", line)
		}
		tags := make(map[string]string)
		for _, kv := range strings.Split(v, ";") {
			k, v, _ := strings.Cut(kv, "=")
			if k = strings.TrimSpace(k); k != "" {
				tags[k] = strings.Join(strings.Fields(v), "")
			}
		}
		out = append(out, tags)
	}
	return out
}

func TestSignVerify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		algs  []string
		wantA []string
	}{
		{"rsa", []string{store.AlgRSA}, []string{"rsa-sha256"}},
		{"ed25519", []string{store.AlgEd25519}, []string{"ed25519-sha256"}},
		{"dual", []string{store.AlgRSA, store.AlgEd25519}, []string{"rsa-sha256", "ed25519-sha256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, records := signerFor(t, tc.algs...)
			sigs, signed := signTest(t, s, testMessage)

			tags := sigTags(t, sigs)
			if len(tags) != len(tc.algs) {
				t.Fatalf("got %d signatures, want %d:\n%s", len(tags), len(tc.algs), sigs)
			}
			for i, tg := range tags {
				want := map[string]string{
					"v": "1", "a": tc.wantA[i], "c": "relaxed/relaxed", "d": "example.com",
					"s": "sesame-" + tc.algs[i] + "-20261127", "h": wantH,
				}
				for k, v := range want {
					if tg[k] != v {
						t.Errorf("signature %d: %s=%q, want %q", i, k, tg[k], v)
					}
				}
				for _, k := range []string{"i", "l", "x"} {
					if _, ok := tg[k]; ok {
						t.Errorf("signature %d has %s=", i, k)
					}
				}
				if tg["t"] == "" || tg["b"] == "" || tg["bh"] == "" {
					t.Errorf("signature %d lacks t=, b= or bh=: %v", i, tg)
				}
			}

			vs := verify(t, signed, records)
			if len(vs) != len(tc.algs) {
				t.Fatalf("verifier found %d signatures, want %d", len(vs), len(tc.algs))
			}
			for i, v := range vs {
				if v.Err != nil || v.Domain != "example.com" {
					t.Errorf("signature %d: domain %q, err %v", i, v.Domain, v.Err)
				}
			}
		})
	}
}

// TestDualIndependent checks that each signature of a dual-signed message
// verifies on its own, with the other one removed or its key unpublished.
func TestDualIndependent(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	sigs, _ := signTest(t, s, testMessage)
	i := bytes.Index(sigs, []byte("\r\nDKIM-Signature:"))
	if i < 0 {
		t.Fatalf("want two signatures:\n%s", sigs)
	}
	fields := [][]byte{sigs[:i+2], sigs[i+2:]}
	for n, f := range fields {
		msg := append(append([]byte(nil), f...), testMessage...)
		vs := verify(t, msg, records)
		if len(vs) != 1 || vs[0].Err != nil {
			t.Errorf("signature %d alone: %+v", n, vs[0])
		}
	}
	for name := range records {
		only := map[string]string{name: records[name]}
		vs := verify(t, append(append([]byte(nil), sigs...), testMessage...), only)
		ok := 0
		for _, v := range vs {
			if v.Err == nil {
				ok++
			}
		}
		if ok != 1 {
			t.Errorf("with only %s published, %d signatures verify, want 1", name, ok)
		}
	}
}

func TestOverSignedFrom(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	_, signed := signTest(t, s, testMessage)

	// Control: a field Sesame does not sign may be added above the
	// signature (as relays add Received) without breaking it.
	ok := append([]byte("Received: from relay.example by mx.example.org\r\n"), signed...)
	for i, v := range verify(t, ok, records) {
		if v.Err != nil {
			t.Errorf("unsigned field added: signature %d: %v", i, v.Err)
		}
	}

	for name, forged := range map[string][]byte{
		"From prepended": append([]byte("From: ceo@example.com\r\n"), signed...),
		"from after signature": bytes.Replace(signed, []byte("From: \"Shop\""),
			[]byte("from: ceo@example.com\r\nFrom: \"Shop\""), 1),
	} {
		for i, v := range verify(t, forged, records) {
			if v.Err == nil {
				t.Errorf("%s: signature %d still verifies", name, i)
			}
		}
	}
}

func TestModifiedFails(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	_, signed := signTest(t, s, testMessage)
	for name, bad := range map[string][]byte{
		"body":      bytes.Replace(signed, []byte("Köln"), []byte("Koln"), 1),
		"body tail": append(bytes.Clone(signed), "P.S. added\r\n"...),
		"subject":   bytes.Replace(signed, []byte("#1234"), []byte("#1235"), 1),
		"second To": bytes.Replace(signed, []byte("carol@"), []byte("mallory@"), 1),
	} {
		for i, v := range verify(t, bad, records) {
			if v.Err == nil {
				t.Errorf("%s modified: signature %d still verifies", name, i)
			}
		}
	}
	// Relaxed canonicalization: whitespace changes are not modifications.
	relaxed := bytes.Replace(signed, []byte("Subject:   Your order"), []byte("SUBJECT: Your  order"), 1)
	relaxed = bytes.Replace(relaxed, []byte("trailing blanks   \t\r\n"), []byte("trailing blanks\r\n"), 1)
	for i, v := range verify(t, relaxed, records) {
		if v.Err != nil {
			t.Errorf("whitespace changed: signature %d: %v", i, v.Err)
		}
	}
}

func TestSignHeaderOnly(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA)
	msg := "From: a@example.com\r\nTo: b@example.org\r\nSubject: no body\r\n"
	sigs, _ := signTest(t, s, msg)
	if h := sigTags(t, sigs)[0]["h"]; h != "From:From:To:Subject"+absentOverSigned {
		t.Errorf("h=%s", h)
	}
	// go-msgauth's verifier needs the empty line too; the body is empty
	// either way. The dkimpy test checks the message as it is.
	signed := string(sigs) + msg + "\r\n"
	if v := verify(t, []byte(signed), records); v[0].Err != nil {
		t.Errorf("verify: %v", v[0].Err)
	}
}

func TestSignErrors(t *testing.T) {
	s, _ := signerFor(t, store.AlgEd25519)
	for name, msg := range map[string]string{
		"empty":                 "",
		"header without EOL":    "From: a@example.com\r\nSubject: x",
		"too many fields":       strings.Repeat("To: x@example.org\r\n", 400) + "\r\nbody\r\n",
		"just an unfinished to": "To",
	} {
		sig, err := s.Sign([]byte(msg))
		if err == nil {
			t.Errorf("%s: Sign = %q, want error", name, sig)
		} else if !strings.HasPrefix(err.Error(), "dkim: sign example.com: ") {
			t.Errorf("%s: error lacks context: %v", name, err)
		}
	}
}

func TestNewSignerErrors(t *testing.T) {
	ed := newTestKey(t, store.AlgEd25519, "a")
	ed2 := newTestKey(t, store.AlgEd25519, "A")
	mislabelled := ed
	mislabelled.Algorithm = store.AlgRSA
	if _, err := NewSigner("example.com", nil); !errors.Is(err, ErrNoKeys) {
		t.Errorf("no keys: %v, want ErrNoKeys", err)
	}
	for name, tc := range map[string]struct {
		domain string
		keys   []store.DKIMKey
	}{
		"bad domain":     {"example.com;", []store.DKIMKey{ed}},
		"mislabelled":    {"example.com", []store.DKIMKey{mislabelled}},
		"same selector":  {"example.com", []store.DKIMKey{ed, ed2}},
		"garbage key":    {"example.com", []store.DKIMKey{{Selector: "a", Algorithm: store.AlgRSA, PrivateKey: []byte("x")}}},
		"empty selector": {"example.com", []store.DKIMKey{{Algorithm: ed.Algorithm, PrivateKey: ed.PrivateKey}}},
	} {
		if _, err := NewSigner(tc.domain, tc.keys); err == nil {
			t.Errorf("%s: NewSigner succeeded", name)
		}
	}
}

func TestHeaderKeys(t *testing.T) {
	for _, tc := range []struct {
		name, msg, want string
		terminated      bool
	}{
		{"minimal", "From: a\r\n\r\nbody\r\n", "From:From" + absentOverSigned, true},
		{"no From", "Subject: x\r\n\r\n", "From:Subject" + absentOverSigned, true},
		{"empty header", "\r\nbody\r\n", "From" + absentOverSigned, true},
		{"case and obsolete space", "FROM : a\r\nreply-to: b\r\ncc:c\r\nCC: d\r\n\r\n", "From:From:Cc:Cc:Reply-To" + absentOverSigned, true},
		{"folded, continuation not a field", "To: a,\r\n From: b\r\n\tTo: c\r\n\r\n", "From:To" + absentOverSigned, true},
		{"body fields ignored", "From: a\r\n\r\nTo: b\r\nFrom: c\r\n", "From:From" + absentOverSigned, true},
		{"bare LF", "From: a\nDate: d\n\nbody\n", "From:From:Date" + absentOverSigned, true},
		{"unsigned fields", "X-From: a\r\nResent-From: b\r\nFrom-X: c\r\nReceived: d\r\n\r\n", "From" + absentOverSigned, true},
		{"no colon counts like go-msgauth", "From\r\nTo: x\r\n\r\n", "From:From:To" + absentOverSigned, true},
		{"header only", "From: a\r\nTo: b\r\n", "From:From:To" + absentOverSigned, false},
		{"all fields", "content-transfer-encoding: a\r\ncontent-type: b\r\nmime-version: c\r\nmessage-id: d\r\ndate: e\r\n" +
			"subject: f\r\nreply-to: g\r\ncc: h\r\nto: i\r\nfrom: j\r\n\r\n",
			"From:From:To:Cc:Reply-To:Subject:Date:Message-ID:MIME-Version:Content-Type:Content-Transfer-Encoding" + absentOverSigned, true},
		{"list and thread fields", "feedback-id: a\r\nlist-unsubscribe-post: b\r\nlist-unsubscribe: c\r\nlist-id: d\r\n" +
			"references: e\r\nin-reply-to: f\r\nsender: g\r\nList-Unsubscribe: h\r\n\r\n",
			"From:Sender:In-Reply-To:References:List-Id:List-Unsubscribe:List-Unsubscribe:List-Unsubscribe:List-Unsubscribe-Post:List-Unsubscribe-Post:Feedback-ID", true},
	} {
		names, terminated, err := headerKeys([]byte(tc.msg))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := strings.Join(names, ":"); got != tc.want || terminated != tc.terminated {
			t.Errorf("%s: got %s (terminated %v), want %s (%v)", tc.name, got, terminated, tc.want, tc.terminated)
		}
	}
}

func TestSignConcurrent(t *testing.T) {
	s, records := signerFor(t, store.AlgEd25519)
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	for i := range results {
		wg.Go(func() {
			sig, err := s.Sign([]byte(testMessage))
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = append(sig, testMessage...)
		})
	}
	wg.Wait()
	for i, m := range results {
		if m == nil {
			continue
		}
		if v := verify(t, m, records); v[0].Err != nil {
			t.Errorf("goroutine %d: %v", i, v[0].Err)
		}
	}
}
