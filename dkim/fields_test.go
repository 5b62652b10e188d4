package dkim

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/store"
)

// bulkFields is one instance of every field the signature must cover (issue
// 19 item 1), as a bulk sender's message carries them, each with a value
// unique in the message so a test can alter exactly that field.
var bulkFields = []struct{ name, value string }{
	{"From", `"Shop" <news@example.com>`},
	{"To", "alice@example.org"},
	{"Cc", "bob@example.org"},
	{"Reply-To", "help@example.com"},
	{"Sender", "bulk@example.com"},
	{"Subject", "Our autumn sale"},
	{"Date", "Fri, 27 Nov 2026 10:00:00 +0000"},
	{"Message-ID", "<sale-2026@example.com>"},
	{"In-Reply-To", "<previous-1@example.com>"},
	{"References", "<thread-0@example.com> <previous-1@example.com>"},
	{"MIME-Version", "1.0"},
	{"Content-Type", "text/plain; charset=utf-8"},
	{"Content-Transfer-Encoding", "8bit"},
	{"List-Id", "Shop news <news.example.com>"},
	{"List-Unsubscribe", "<https://mail.example.com/unsubscribe/T0KEN>, <mailto:unsub-T0KEN@example.com>"},
	{"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"},
	{"Feedback-ID", "autumn:shop:example.com:sesame"},
}

// bulkMessage returns a message with every bulkFields field except those
// named in omit, an unsigned X-Mailer, and a short body.
func bulkMessage(omit ...string) string {
	var b strings.Builder
	b.WriteString("X-Mailer: shop 2.1\r\n")
	for _, f := range bulkFields {
		skip := false
		for _, o := range omit {
			skip = skip || o == f.name
		}
		if !skip {
			b.WriteString(f.name + ": " + f.value + "\r\n")
		}
	}
	b.WriteString("\r\nGrüße — our autumn sale starts today.\r\n")
	return b.String()
}

// goMsgauthVerdicts returns go-msgauth's verdict per signature of msg, in
// the words dkimpyVerifyAll uses.
func goMsgauthVerdicts(t *testing.T, msg []byte, records map[string]string) string {
	t.Helper()
	var out []string
	for _, v := range verify(t, msg, records) {
		out = append(out, map[bool]string{true: "True", false: "False"}[v.Err == nil])
	}
	return strings.Join(out, " ")
}

// TestSignedFieldsCovered signs a message carrying every field a receiver
// relies on, checks h= names each, and checks with dkimpy and go-msgauth
// that it verifies and that changing any one field's value breaks it.
func TestSignedFieldsCovered(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	msg := bulkMessage()
	sigs, signed := signTest(t, s, msg)

	var want []string
	for _, f := range bulkFields {
		want = append(want, f.name)
		if f.name == "From" || strings.HasPrefix(f.name, "List-Unsubscribe") {
			want = append(want, f.name) // over-signed
		}
	}
	for i, tg := range sigTags(t, sigs) {
		if got := strings.Split(tg["h"], ":"); !sameFields(got, want) {
			t.Errorf("signature %d: h=%s, want each of %s (From and List-Unsubscribe* twice)", i, tg["h"], strings.Join(want, ":"))
		}
	}

	// Message 0 is the signed message; message i+1 has bulkFields[i]'s
	// value changed.
	cases := [][]byte{signed}
	wantVerdicts := []string{"True True"}
	names := []string{"unchanged"}
	for _, f := range bulkFields {
		field := []byte(f.name + ": " + f.value + "\r\n")
		changed := []byte(f.name + ": " + f.value + "x\r\n")
		if bytes.Count(signed, field) != 1 {
			t.Fatalf("field %q occurs %d times", field, bytes.Count(signed, field))
		}
		cases = append(cases, bytes.Replace(signed, field, changed, 1))
		wantVerdicts = append(wantVerdicts, "False False")
		names = append(names, f.name+" changed")
	}
	checkVerdicts(t, cases, names, wantVerdicts, records)
}

// TestOverSignedAdded checks that a From, List-Unsubscribe or
// List-Unsubscribe-Post added after signing, above the signature or inside
// the signed header, breaks both signatures for dkimpy and go-msgauth,
// whether the message had that field or not; and, as a control, that an
// added field Sesame signs but does not over-sign (Cc) does not.
func TestOverSignedAdded(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	var cases [][]byte
	var names, want []string
	add := func(name string, msg []byte, verdict string) {
		cases = append(cases, msg)
		names = append(names, name)
		want = append(want, verdict)
	}
	for _, variant := range []struct {
		name string
		omit []string
	}{
		{"with the fields", nil},
		{"without them", []string{"Cc", "List-Unsubscribe", "List-Unsubscribe-Post"}},
	} {
		sigs, signed := signTest(t, s, bulkMessage(variant.omit...))
		for _, added := range []string{
			"From: ceo@example.com",
			"List-Unsubscribe: <https://evil.example/u>",
			"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
		} {
			field := []byte(added + "\r\n")
			add(variant.name+": "+added+" prepended", append(bytes.Clone(field), signed...), "False False")
			below := append(bytes.Clone(sigs), field...)
			add(variant.name+": "+added+" below the signature", append(below, bulkMessage(variant.omit...)...), "False False")
		}
	}
	// Control: Cc is signed where present but not over-signed, so a Cc
	// added to a message without one is not covered.
	_, signed := signTest(t, s, bulkMessage("Cc", "List-Unsubscribe", "List-Unsubscribe-Post"))
	add("control: Cc prepended", append([]byte("Cc: eve@example.net\r\n"), signed...), "True True")
	checkVerdicts(t, cases, names, want, records)
}

// checkVerdicts verifies each message with dkimpy (in one run) and with
// go-msgauth and compares both with want.
func checkVerdicts(t *testing.T, msgs [][]byte, names, want []string, records map[string]string) {
	t.Helper()
	for i, m := range msgs {
		if got := goMsgauthVerdicts(t, m, records); got != want[i] {
			t.Errorf("%s: go-msgauth verdicts %q, want %q", names[i], got, want[i])
		}
	}
	for i, got := range dkimpyVerifyAll(t, msgs, records) {
		if got != want[i] {
			t.Errorf("%s: dkimpy verdicts %q, want %q", names[i], got, want[i])
		}
	}
}

// sameFields reports whether got and want hold the same names the same
// number of times, in any order, compared without case.
func sameFields(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	count := make(map[string]int)
	for _, g := range got {
		count[strings.ToLower(g)]++
	}
	for _, w := range want {
		count[strings.ToLower(w)]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}
