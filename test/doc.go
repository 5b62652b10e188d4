// Package test holds Sesame's end-to-end scenarios. They build the real
// sesame binary, run `sesame serve` against a sink SMTP server on loopback
// that stands in for the smarthost (or against MX sinks found through the
// DNS server each instance runs in the test process), submit mail with the
// clients people use (swaks, msmtp, curl, Python smtplib, nodemailer,
// PHPMailer, go-smtp), and check every accepted message arrives DKIM-signed,
// as verified by an independent implementation (python3-dkim). Sending
// domains are verified as an operator does it: their DKIM records are
// published in that DNS server and `sesame domain verify` is run.
//
// The scenarios run only with SESAME_E2E=1; see README.md.
package test
