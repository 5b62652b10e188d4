// Package test holds Sesame's end-to-end scenarios. They build the real
// sesame binary, run `sesame serve` against a sink SMTP server on loopback
// that stands in for the smarthost, submit mail with the clients people use
// (swaks, msmtp, curl, Python smtplib, nodemailer, PHPMailer, go-smtp), and
// check every accepted message arrives DKIM-signed, as verified by an
// independent implementation (python3-dkim).
//
// The scenarios run only with SESAME_E2E=1; see README.md.
package test
