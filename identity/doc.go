// Package identity decides who Sesame may send as, and keeps the proof of it
// current.
//
// An identity is a domain or an email address. A domain is proven through
// DNS: the operator publishes the DKIM public keys Sesame made for it (RFC
// 6376 §3.6.2), and a Verifier checks them periodically; a domain whose keys
// disappear from DNS loses its verified status after several checks in a
// row, so a typo in a zone edit does not stop mail at once. An address is
// proven by a link: an AddressVerifier queues a message to it, and whoever
// reads that mail confirms on the web page the link leads to (package web).
//
// Besides the DKIM keys, Records lists the SPF (RFC 7208), MAIL FROM and
// DMARC (RFC 7489) records that make receivers trust the mail; Checker
// reports each as ok, missing, wrong, unknown or warning, with advice. Only
// the DKIM keys decide verification: the others are guidance. The checks
// judge what receivers judge: SPF is evaluated as a receiver evaluates it
// (includes, a, mx, ptr, exists and redirect looked up, within the limits
// of 10 lookups and 2 void ones); Audit adds how the DKIM d= and the return
// path align with the From domain under the DMARC record's adkim= and
// aspf=; CheckIPs looks at the reverse DNS of Sesame's outbound addresses.
//
// An Authorizer answers the two questions the submission service asks: may
// this credential use this sender address, and (for sandboxed credentials)
// is this recipient a verified identity. A verified address in a domain that
// publishes DMARC p=quarantine or p=reject may send only when the operator
// allowed it: receivers refuse its mail sent through Sesame. Its policy is
// recorded when it is added (AddressVerifier.AddSender) and looked up again
// by the Verifier, so sending asks no DNS.
//
// Statuses are the store's: store.IdentityPending, IdentityVerified and
// IdentityFailed. Everything that reads the clock or asks DNS gets its clock
// and servers from Config, so tests run against a DNS server on loopback and
// a clock they move.
package identity
