// Package testkit holds helpers for the tests of Sesame's packages: one
// test clock, one DNS zone server, one SMTP sink, so that a fix to a fake
// reaches every test that uses it. It is never imported by production
// code.
package testkit
