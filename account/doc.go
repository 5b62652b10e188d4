// Package account manages SMTP credentials: it generates usernames and
// passwords, hashes passwords, and verifies SMTP logins.
//
// Passwords are hashed with argon2id and kept as PHC strings:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// where salt and key are unpadded standard base64 (16 and 32 bytes). The
// parameters are OWASP's minimum for argon2id. CheckPassword reads the
// parameters from the string, so hashes made with other parameters keep
// working if the defaults are raised later.
//
// The Authenticator promises that a password change or a credential deletion,
// made by any process against the shared store, takes effect on the next login
// attempt: every login reads the credential from the store, and its
// short-lived cache of verified logins only spares the argon2 computation, it
// never answers on its own.
package account
