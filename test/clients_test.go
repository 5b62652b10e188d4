package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	senderDomain = "example.com"
	sender       = "app@" + senderDomain
	recipient    = "someone@example.net"
)

// queuedRE is Sesame's final reply to an accepted message.
var queuedRE = regexp.MustCompile(`250[ -]2\.0\.0 Ok: queued as \S+`)

// submission is what a client needs to send one message.
type submission struct {
	host      string
	starttls  string // port of the STARTTLS listener
	tls       string // port of the implicit-TLS listener
	user      creds
	from, to  string
	token     string
	scratch   string // a directory for config and message files
	clientDir string
}

// message returns an RFC 5322 message with CRLF line ends, for clients that
// send a file as it is (curl, msmtp).
func (s *submission) message(client string) []byte {
	lines := []string{
		"From: " + s.from,
		"To: " + s.to,
		"Subject: " + s.token,
		"Date: " + time.Now().Format(time.RFC1123Z),
		fmt.Sprintf("Message-ID: <%s@%s>", s.token, senderDomain),
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Sent by " + client + ".",
		"Token: " + s.token,
		"",
	}
	return []byte(strings.Join(lines, "\r\n"))
}

func (s *submission) writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(s.scratch, name)
	// 0600: msmtp refuses a config with a password that others can read.
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A clientCase sends one message with a real client and returns what the
// client printed.
type clientCase struct {
	name string
	// wantReply: the output shows the server's replies, so it must contain
	// the final "250 2.0.0 Ok: queued as" line.
	wantReply bool
	send      func(t *testing.T, s *submission) (string, error)
}

func swaksCase(name, mech string, implicitTLS bool) clientCase {
	return clientCase{name: name, wantReply: true, send: func(t *testing.T, s *submission) (string, error) {
		swaks := requireTool(t, "swaks")
		args := []string{"--server", s.host, "--helo", "swaks.client.test",
			"--auth", mech, "--auth-user", s.user.Username, "--auth-password", s.user.Password,
			"--from", s.from, "--to", s.to,
			"--header", "Subject: " + s.token,
			"--body", "Sent by swaks.\nToken: " + s.token,
			"--timeout", "30"}
		if implicitTLS {
			args = append(args, "--port", s.tls, "--tls-on-connect")
		} else {
			args = append(args, "--port", s.starttls, "--tls")
		}
		return run(t, nil, "", swaks, args...)
	}}
}

var clientCases = []clientCase{
	swaksCase("swaks/starttls-plain", "PLAIN", false),
	swaksCase("swaks/starttls-login", "LOGIN", false),
	swaksCase("swaks/tls-on-connect", "PLAIN", true),
	{name: "msmtp/starttls", wantReply: true, send: func(t *testing.T, s *submission) (string, error) {
		msmtp := requireTool(t, "msmtp")
		cfg := s.writeFile(t, "msmtprc", []byte(strings.Join([]string{
			"account sesame",
			"host " + s.host,
			"port " + s.starttls,
			"domain msmtp.client.test",
			"from " + s.from,
			"auth on",
			"user " + s.user.Username,
			"password " + s.user.Password,
			"tls on",
			"tls_starttls on",
			"tls_certcheck off",
			"timeout 30",
			"account default : sesame",
			"",
		}, "\n")))
		// -t takes the recipients from the To header; -v prints the dialogue.
		return run(t, s.message("msmtp"), "", msmtp, "-v", "-C", cfg, "-t")
	}},
	curlCase("curl/smtp-starttls", false),
	curlCase("curl/smtps", true),
	smtplibCase("smtplib/starttls", "starttls"),
	smtplibCase("smtplib/tls", "tls"),
	nodemailerCase("nodemailer/starttls", "starttls"),
	nodemailerCase("nodemailer/tls", "tls"),
	{name: "phpmailer/starttls", wantReply: true, send: func(t *testing.T, s *submission) (string, error) {
		php := requireTool(t, "php")
		return run(t, nil, "", php, filepath.Join(s.clientDir, "phpmailer_send.php"),
			s.host, s.starttls, s.user.Username, s.user.Password, s.from, s.to, s.token)
	}},
}

func curlCase(name string, implicitTLS bool) clientCase {
	return clientCase{name: name, wantReply: true, send: func(t *testing.T, s *submission) (string, error) {
		curl := requireTool(t, "curl")
		// The URL path is the EHLO name. --ssl-reqd makes curl refuse to go
		// on without STARTTLS; --insecure accepts the self-signed certificate.
		url := "smtp://" + net.JoinHostPort(s.host, s.starttls) + "/curl.client.test"
		if implicitTLS {
			url = "smtps://" + net.JoinHostPort(s.host, s.tls) + "/curl.client.test"
		}
		msg := s.writeFile(t, "message.eml", s.message("curl"))
		return run(t, nil, "", curl, "--verbose", "--silent", "--show-error", "--max-time", "30",
			"--url", url, "--ssl-reqd", "--insecure",
			"--user", s.user.Username+":"+s.user.Password,
			"--mail-from", s.from, "--mail-rcpt", s.to, "--upload-file", msg)
	}}
}

func smtplibCase(name, mode string) clientCase {
	return clientCase{name: name, wantReply: true, send: func(t *testing.T, s *submission) (string, error) {
		requirePythonDKIM(t) // the same system interpreter; a clear hint if it is missing
		port := s.starttls
		if mode == "tls" {
			port = s.tls
		}
		return run(t, nil, "", systemPython, filepath.Join(s.clientDir, "smtplib_send.py"),
			mode, s.host, port, s.user.Username, s.user.Password, s.from, s.to, s.token)
	}}
}

func nodemailerCase(name, mode string) clientCase {
	return clientCase{name: name, wantReply: true, send: func(t *testing.T, s *submission) (string, error) {
		node := requireTool(t, "node")
		dir := filepath.Join(s.clientDir, "node")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "nodemailer")); err != nil {
			t.Fatalf("nodemailer is not installed in %s: %s", dir, installHint)
		}
		port := s.starttls
		if mode == "tls" {
			port = s.tls
		}
		return run(t, nil, dir, node, "send.js",
			mode, s.host, port, s.user.Username, s.user.Password, s.from, s.to, s.token)
	}}
}

// TestClients sends one message with each real client through one running
// Sesame and checks that it reaches the smarthost with a DKIM signature that
// python3-dkim verifies.
func TestClients(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled() // the clients send at once, in parallel
	user := inst.standard(senderDomain, "clients")
	_, starttlsPort, _ := net.SplitHostPort(inst.smtpAddr)
	_, tlsPort, _ := net.SplitHostPort(inst.tlsAddr)

	for _, tc := range clientCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &submission{
				host:      "127.0.0.1",
				starttls:  starttlsPort,
				tls:       tlsPort,
				user:      user,
				from:      sender,
				to:        recipient,
				token:     newToken(),
				scratch:   t.TempDir(),
				clientDir: clientsDir(),
			}
			out, err := tc.send(t, s)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if tc.wantReply && !queuedRE.MatchString(out) {
				t.Errorf("client output lacks %q:\n%s", queuedRE, out)
			}
			msg := inst.expectDelivered(t, s.token, senderDomain)
			if len(msg.To) != 1 || !strings.EqualFold(msg.To[0], recipient) {
				t.Errorf("smarthost got RCPT %q, want [%s]", msg.To, recipient)
			}
			if t.Failed() {
				t.Logf("client output:\n%s", out)
			}
		})
	}
}
