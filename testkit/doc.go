// Package testkit holds the helpers the tests of every Sesame package share:
// one test clock (Clock, Start, Day), a DNS zone server (Zone), an SMTP
// sink (Sink) and Debian's pebble ACME test CA (StartPebble), all real
// servers on loopback addresses, so that a fix to a
// test double reaches every test at once.
//
// Only tests import it; production code never does.
package testkit
