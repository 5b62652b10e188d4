package config

import (
	"strings"
	"testing"
)

// [tls]: ACME is on with acme_domains, which needs a challenge listener and
// excludes the certificate files; the other keys need it.
func TestACMEConfig(t *testing.T) {
	cfg, err := Parse("[tls]\nacme_domains = [\"mail.example.com\"]\nacme_email = \"ops@example.com\"\nacme_http_listen = \"0.0.0.0:80\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.ACMEDirectory != LetsEncryptDirectory {
		t.Errorf("acme_directory defaults to %q, want Let's Encrypt's production directory", cfg.TLS.ACMEDirectory)
	}
	if Default().TLS.ACMEDomains != nil {
		t.Error("ACME is on by default")
	}

	tests := []struct {
		name, text string
		want       []string
	}{
		{"keys without acme_domains", "[tls]\nacme_email = \"ops@example.com\"\nacme_tls_listen = \":443\"\n", []string{
			"tls.acme_email: set without tls.acme_domains",
			"tls.acme_tls_listen: set without tls.acme_domains",
		}},
		{"broken values", `
[submission]
tls_cert_file = "/c.pem"
tls_key_file = "/k.pem"
[tls]
acme_domains = ["*.example.com", "localhost"]
acme_email = "ops"
acme_directory = "http://acme.example/dir"
acme_http_listen = "80"
`, []string{
			`tls.acme_domains[0]: "*.example.com"`,
			`tls.acme_domains[1]: "localhost"`,
			"tls.acme_domains: set together with submission.tls_cert_file",
			`tls.acme_email: "ops" is not an email address`,
			`tls.acme_directory: "http://acme.example/dir"`,
			`tls.acme_http_listen: "80"`,
		}},
		{"no challenge listener", "[tls]\nacme_domains = [\"mail.example.com\"]\n", []string{
			"tls.acme_domains: needs a listener the CA can reach",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
