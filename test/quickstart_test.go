package test

// The README's quick start, run end to end as an operator runs it: serve
// first, then the admin commands in the README's order, the DKIM record
// published from what `domain add` printed as text, and the message sent
// with the swaks command the README shows, taken from README.md itself so
// that the test follows the README. Only the server, port, username and
// password of that command are replaced (the test's listener, the generated
// credentials). The built-in defaults deliver by MX, so the message goes to
// the mail exchanger of the recipient's domain (mx_test.go's sinks, through
// the instance's DNS server), where its DKIM signature must verify.

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/testkit"
)

// qsReadme is the README's "Quick start" section, parsed.
type qsReadme struct {
	// commands are the `./sesame ...` command lines of its code blocks,
	// without "$ ", "./sesame " and "sudo ", in order.
	commands []string
	// output maps a command to the lines the README shows it printing.
	output map[string][]string
	// swaks is the swaks command's arguments, without "swaks".
	swaks []string
}

func qsParseReadme(t *testing.T) qsReadme {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n## Quick start")
	if start < 0 {
		t.Fatalf("README.md has no \"## Quick start\" section")
	}
	section := text[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}

	q := qsReadme{output: map[string][]string{}}
	inBlock, current, swaksLine := false, "", ""
	sc := bufio.NewScanner(strings.NewReader(section))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inBlock, current = !inBlock, ""
			continue
		}
		if !inBlock {
			continue
		}
		if swaksLine != "" { // a continuation of the swaks command
			swaksLine += " " + strings.TrimSpace(strings.TrimSuffix(line, `\`))
			if !strings.HasSuffix(line, `\`) {
				q.swaks = qsShellWords(t, swaksLine)[1:]
				swaksLine = ""
			}
			continue
		}
		cmd := strings.TrimPrefix(line, "$ ")
		cmd = strings.TrimPrefix(cmd, "sudo ")
		switch {
		case strings.HasPrefix(cmd, "./sesame "):
			current = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(cmd, "./sesame "), "&"))
			q.commands = append(q.commands, current)
		case strings.HasPrefix(cmd, "swaks "):
			swaksLine = strings.TrimSpace(strings.TrimSuffix(cmd, `\`))
			if !strings.HasSuffix(cmd, `\`) {
				q.swaks = qsShellWords(t, swaksLine)[1:]
				swaksLine = ""
			}
		case current != "" && strings.HasPrefix(line, "$ "):
			current = "" // another program's command line
		case current != "":
			q.output[current] = append(q.output[current], line)
		}
	}
	if len(q.swaks) == 0 {
		t.Fatalf("README.md's quick start has no swaks command in a code block")
	}
	return q
}

// qsShellWords splits a command line as sh would for the simple forms the
// README uses: words separated by blanks, '...' and "..." quoting.
func qsShellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var b strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				t.Fatalf("unbalanced %c in %q", c, s)
			}
			b.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words
}

// qsFlag returns the value following flag in args ("" if absent).
func qsFlag(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// qsWithFlag returns args with the value following flag replaced.
func qsWithFlag(t *testing.T, args []string, flag, value string) []string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("the README's swaks command has no %s VALUE: %q", flag, args)
	}
	out := slices.Clone(args)
	out[i+1] = value
	return out
}

// qsDKIMTextRE matches a required DKIM record as `domain add` prints it; the
// value is on the next line.
var qsDKIMTextRE = regexp.MustCompile(`^  TXT  (\S+\._domainkey\.\S+)  \(required: `)

// qsDKIMFromText returns the required DKIM TXT records of `domain add`'s text
// output, as an operator copies them into the zone.
func qsDKIMFromText(t *testing.T, out string) []dnsRecord {
	t.Helper()
	lines := strings.Split(out, "\n")
	var recs []dnsRecord
	for i, l := range lines {
		if m := qsDKIMTextRE.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			recs = append(recs, dnsRecord{Type: "TXT", Name: m[1], Value: strings.TrimSpace(lines[i+1]), Required: true})
		}
	}
	if len(recs) == 0 {
		t.Fatalf("no required DKIM TXT record in the output of domain add:\n%s", out)
	}
	return recs
}

// qsFirstLine is the first line of s.
func qsFirstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func TestQuickstart(t *testing.T) {
	e := newMXEnvNoDomain(t, mxOptions{})
	q := qsParseReadme(t)
	swaks := requireTool(t, "swaks")

	// The commands this test runs must be the README's, in its order.
	const (
		createCmd  = "user create shop"
		addCmd     = "domain add example.com"
		verifyCmd  = "domain verify example.com"
		promoteCmd = "user promote shop"
	)
	want := []string{"serve", createCmd, addCmd, verifyCmd, promoteCmd}
	var got []string
	for _, c := range q.commands {
		if slices.Contains(want, c) {
			got = append(got, c)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("README.md's quick start runs %q; this test runs %q in that order: update one or the other", q.commands, want)
	}
	from, to := qsFlag(q.swaks, "--from"), qsFlag(q.swaks, "--to")
	if from != "shop@example.com" || to != "you@example.net" {
		t.Fatalf("the README's swaks sends from %q to %q; this test publishes example.com and receives at example.net's MX", from, to)
	}

	// "sudo ./sesame serve &" on the built-in defaults: the sandbox is on
	// for new credentials (the harness turns it off), delivery is by MX.
	e.inst.configure(map[string]any{"policy.sandbox_new_users": nil})
	e.start(t)

	// ./sesame user create shop (--json, to read the password).
	user := e.inst.createUser(t, "shop")

	// ./sesame domain add example.com, as text.
	status, out, errOut := e.inst.adminStatus(t, strings.Fields(addCmd)...)
	if status != 0 {
		t.Fatalf("sesame %s exited %d:\n%s%s", addCmd, status, out, errOut)
	}
	if shown := q.output[addCmd]; len(shown) > 0 && qsFirstLine(out) != shown[0] {
		t.Errorf("sesame %s printed %q first; the README shows %q", addCmd, qsFirstLine(out), shown[0])
	}
	records := qsDKIMFromText(t, out)

	// Publish the DKIM record, then ./sesame domain verify example.com.
	for _, r := range records {
		e.zone.SetTXT(r.Name, r.Value)
	}
	status, out, errOut = e.inst.adminStatus(t, strings.Fields(verifyCmd)...)
	if status != 0 {
		t.Fatalf("sesame %s exited %d after the DKIM record was published:\n%s%s", verifyCmd, status, out, errOut)
	}
	if shown := q.output[verifyCmd]; len(shown) == 0 || qsFirstLine(out) != shown[0] {
		t.Errorf("sesame %s printed %q first; the README shows %q", verifyCmd, qsFirstLine(out), shown)
	}

	// The README's swaks command, on the test's listener and credentials.
	host, port, _ := net.SplitHostPort(e.inst.smtpAddr)
	args := qsWithFlag(t, q.swaks, "--server", host)
	args = qsWithFlag(t, args, "--port", port)
	args = qsWithFlag(t, args, "--auth-user", user.Username)
	args = qsWithFlag(t, args, "--auth-password", user.Password)

	// Still in the sandbox, as the README says: refused at RCPT.
	out, err := run(t, nil, "", swaks, args...)
	sandboxed := "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: " +
		to + " (credential shop is in the sandbox"
	if err == nil || !strings.Contains(out, sandboxed) {
		t.Fatalf("before %q, swaks to %s: want a refusal %q...; got (%v):\n%s", promoteCmd, to, sandboxed, err, out)
	}

	// ./sesame user promote shop, then the same swaks command.
	e.inst.mustAdmin(t, strings.Fields(promoteCmd)...)
	out, err = run(t, nil, "", swaks, args...)
	if err != nil {
		t.Fatalf("swaks %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	m := queuedIDRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("swaks output has no \"250 2.0.0 Ok: queued as ID\":\n%s", out)
	}
	id := m[1]

	// Delivered to example.net's best MX, signed for example.com.
	msg := mustWait(t, e.mx1, "message "+id, func(s *testkit.Message) bool {
		return strings.Contains(string(s.Data), "(Sesame) with ESMTPSA id "+id)
	})
	if !strings.EqualFold(msg.From, from) || len(msg.To) != 1 || !strings.EqualFold(msg.To[0], to) {
		t.Errorf("mx1 got MAIL FROM %q RCPT %q; want %s and [%s]", msg.From, msg.To, from, to)
	}
	verifyDKIM(t, msg, "example.com", records)
}
