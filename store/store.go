// Package store keeps Sesame's durable state: SMTP credentials and the
// recipients each submitted per hour (for the quotas), sending domains with
// their DKIM keys, sender addresses, the mail queue (one message, one row
// per recipient), the event log, the suppression list, the outbound IPs'
// sends, suspensions and pauses with the mail parked for want of their
// capacity, the bounces and complaints that came back (inbound), and each
// webhook endpoint's cursor into the event log.
//
// The promises every implementation keeps:
//   - Enqueue returns nil only once the message and all its recipients are on
//     stable storage (fsync). Concurrent Enqueue calls share commits (group
//     commit), so durability does not cost one fsync per message.
//   - A recipient handed out by Claim is leased to the caller and is not handed
//     out again until Complete records its outcome or the lease runs out, so a
//     crashed process's mail is picked up again.
//   - Message bytes come back from MessageData exactly as they were enqueued
//     (Claim leaves them out).
//   - Complete and RecordInbound write everything an outcome or a report
//     leaves behind (states, events, suppressions, a DSN) in one transaction.
//
// The store persists what it is handed; the rules are its callers'. One
// exception remains: Complete itself puts the address of a hard bounce
// (Outcome.BounceType BounceHard, not Simulated) on the suppression list.
//
// SQLite (sqlite.go) is the only implementation. cmd/sesame opens a
// *SQLite and hands it to every package, each of which declares the small
// interface it uses (smtpd.Queue, relay.Queue, events.Store, …); the Store
// interface below groups most of the methods but not all: the queue's
// administration (QueueMessages, RetryNow, DeleteMessage, ReleaseLeases),
// the webhook cursors, the disk-space checks (CheckStorage) and the
// suppression scope (SetSuppressionPerCredential) are *SQLite's alone, and
// the operator commands call them on *SQLite directly. A second
// implementation (PostgreSQL, for several nodes) would therefore need every
// method those interfaces and commands use, the same tests run against it
// (today they are SQLite's), and cmd/sesame changed to choose between the
// two; it is not a drop-in type satisfying Store yet.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when the named credential, domain or message does
// not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating something whose name is taken.
var ErrExists = errors.New("already exists")

// ErrCorrupt is returned (wrapped) by MessageData when a queued message's
// stored bytes are there but unusable: reading them again cannot help.
var ErrCorrupt = errors.New("stored message is corrupt")

// Store is everything Sesame persists.
type Store interface {
	Credentials
	Domains
	Addresses
	Queue
	Events
	Suppressions
	IPs
	Inbound
	Ping(ctx context.Context) error
	Close() error
}

// Credential is one set of SMTP credentials. The password itself is never
// stored, only its hash.
type Credential struct {
	Name         string // the operator's label, e.g. "shop-wordpress"
	Username     string // generated, what the client sends in AUTH
	PasswordHash string // PHC string, see package account
	CreatedAt    time.Time
	UpdatedAt    time.Time // last rotation
	LastUsedAt   time.Time // zero if never used
	Sandbox      bool      // may send only to verified identities, with the sandbox quotas
	DailyQuota   int       // recipients per rolling 24 hours; 0: the configured default
	MaxSendRate  float64   // recipients per second; 0: the configured default
	// Allowed lists the identities (domains or addresses) the credential
	// may send as; empty means every verified identity.
	Allowed []string
	// PausedReason, when not empty, says why sending is paused (the
	// reputation guard); PausedAt is when it was paused, or resumed.
	PausedReason string
	PausedAt     time.Time
	// Pool is the IP pool the credential's mail leaves from; "" is the
	// default pool.
	Pool string
}

// Credentials stores SMTP credentials.
type Credentials interface {
	CreateCredential(ctx context.Context, c Credential) error // ErrExists if the name or username is taken
	Credential(ctx context.Context, name string) (Credential, error)
	CredentialByUsername(ctx context.Context, username string) (Credential, error)
	ListCredentials(ctx context.Context) ([]Credential, error)
	// SetPassword replaces the hash; the old password stops working at once.
	SetPassword(ctx context.Context, name, passwordHash string, now time.Time) error
	TouchCredential(ctx context.Context, name string, usedAt time.Time) error
	DeleteCredential(ctx context.Context, name string) error
	SetSandbox(ctx context.Context, name string, sandbox bool) error
	SetQuota(ctx context.Context, name string, daily int, rate float64) error
	SetAllowed(ctx context.Context, name string, identities []string) error
	SetPaused(ctx context.Context, name, reason string, at time.Time) error
	SetPool(ctx context.Context, name, pool string) error
	// Sent counts the recipients the credential submitted since since
	// (hour buckets: since is rounded down to the hour).
	Sent(ctx context.Context, name string, since time.Time) (int, error)
	// SentByHour is Sent per hour bucket, keyed by the hour's start.
	SentByHour(ctx context.Context, name string, since time.Time) (map[time.Time]int, error)
	// RecordLoginFailures replaces the summary of failed logins of the
	// credential whose Username is username; it does nothing when no
	// credential has it.
	RecordLoginFailures(ctx context.Context, username string, f LoginFailures) error
	// LoginFailures returns the credential's summary of failed logins: the
	// zero LoginFailures when there is none.
	LoginFailures(ctx context.Context, name string) (LoginFailures, error)
}

// LoginFailures summarizes a run of failed logins as a credential's
// username, as the submission service saw it (smtpd decides what a run is
// and what is blocked; the store keeps its last summary for "sesame user
// show").
type LoginFailures struct {
	First, Last     time.Time // the run's first and last failure
	Failures        int       // failures in the run
	Networks        int       // distinct client networks they came from
	LastNetwork     string    // the network of the last one
	BlockedNetworks int       // networks refused as the username when written
	BlockedUntil    time.Time // when the last of those blocks ends
	UpdatedAt       time.Time // when the summary was written
}

// Identity verification states, of domains and of addresses.
const (
	IdentityPending  = "pending"  // added, not yet proven
	IdentityVerified = "verified" // proven: may send
	IdentityFailed   = "failed"   // not proven in time, or no longer proven
)

// Key algorithms of DKIMKey.Algorithm.
const (
	AlgRSA     = "rsa"
	AlgEd25519 = "ed25519"
)

// States of a DKIMKey in a rotation (package identity decides them).
const (
	KeyActive   = "active"   // signs; its record must be published
	KeyPending  = "pending"  // made by a rotation: waits for its record to be published
	KeyRetiring = "retiring" // replaced: signs no more, its record stays published until RetireAt
)

// DKIMKey is one DKIM key of a domain.
type DKIMKey struct {
	Selector   string
	Algorithm  string // AlgRSA or AlgEd25519
	PrivateKey []byte // PKCS #8, PEM encoded
	CreatedAt  time.Time

	State       string    // KeyActive ("" is stored as KeyActive), KeyPending or KeyRetiring
	ActiveSince time.Time // when it began to sign (CreatedAt when stored active); zero while pending
	RetireAt    time.Time // retiring: when its record may be removed
}

// Domain is a sending domain and its DKIM keys.
type Domain struct {
	Name      string // lower case A-label form
	CreatedAt time.Time
	Keys      []DKIMKey

	Status       string    // IdentityPending, IdentityVerified or IdentityFailed
	StatusSince  time.Time // when Status last changed
	LastChecked  time.Time // last DNS check; zero if never
	FailedChecks int       // consecutive failed checks while verified
}

// DomainStatus is the verification state of a domain, as a check leaves it.
type DomainStatus struct {
	Status       string
	StatusSince  time.Time
	LastChecked  time.Time
	FailedChecks int
}

// Domains stores sending domains.
type Domains interface {
	CreateDomain(ctx context.Context, d Domain) error // ErrExists if present
	Domain(ctx context.Context, name string) (Domain, error)
	// DomainStatusOf is Domain without the keys.
	DomainStatusOf(ctx context.Context, name string) (Domain, error)
	ListDomains(ctx context.Context) ([]Domain, error)
	DeleteDomain(ctx context.Context, name string) error
	SetDomainStatus(ctx context.Context, name string, st DomainStatus) error
}

// Address is an email address identity, proven by a link sent to it.
type Address struct {
	Address      string // local part as given, domain lower-case A-label
	Status       string // IdentityPending, IdentityVerified or IdentityFailed
	TokenHash    string // hex SHA-256 of the verification token; "" once used
	TokenExpires time.Time
	CreatedAt    time.Time
	VerifiedAt   time.Time // zero until verified
	// DMARCPolicy is the DMARC policy its domain published when last
	// looked up ("none", "quarantine", "reject"; "" for none or not yet
	// known), and DMARCCheckedAt when that was (zero: never).
	DMARCPolicy    string
	DMARCCheckedAt time.Time
	// Forced records the operator's choice to let it send whatever that
	// policy (sesame address add --force).
	Forced bool
}

// Addresses stores address identities.
type Addresses interface {
	CreateAddress(ctx context.Context, a Address) error // ErrExists if present
	Address(ctx context.Context, address string) (Address, error)
	AddressByToken(ctx context.Context, tokenHash string) (Address, error)
	ListAddresses(ctx context.Context) ([]Address, error)
	DeleteAddress(ctx context.Context, address string) error
	// SetAddressToken gives a pending address a new token (a new link).
	SetAddressToken(ctx context.Context, address, tokenHash string, expires time.Time) error
	// VerifyAddress marks the address verified and forgets its token.
	VerifyAddress(ctx context.Context, address string, at time.Time) error
	// SetAddressDMARC records the DMARC policy of the address's domain, as
	// looked up at checked.
	SetAddressDMARC(ctx context.Context, address, policy string, checked time.Time) error
	// SetAddressForced records whether the operator lets the address send
	// whatever its domain's DMARC policy.
	SetAddressForced(ctx context.Context, address string, forced bool) error
}

// Recipient states. Queued and deferred recipients wait for an attempt;
// quarantined ones wait for the operator; the others are final.
const (
	StateQueued    = "queued"    // waiting for its first attempt
	StateDeferred  = "deferred"  // failed temporarily, waiting for NextAttempt
	StateDelivered = "delivered" // accepted by the next hop
	StateBounced   = "bounced"   // failed permanently; the sender was sent a DSN (unless null)
	StateExpired   = "expired"   // still failing when its lifetime ran out; bounced as well
	// StateSuppressed: the address is on the suppression list; accepted
	// but never attempted, as SES does.
	StateSuppressed = "suppressed"
	// StateQuarantined: the message's stored bytes are unusable
	// (ErrCorrupt). Neither delivered nor bounced, never retried by itself:
	// the message stays queued for the operator to inspect, and RetryNow
	// makes its quarantined recipients deferred and due again. Not final.
	StateQuarantined = "quarantined"
)

// Final reports whether state is one a recipient never leaves.
func Final(state string) bool {
	return state == StateDelivered || state == StateBounced || state == StateExpired || state == StateSuppressed
}

// Message is a message handed to Enqueue.
type Message struct {
	ID         string // queue id; Enqueue sets it when empty
	Credential string // name of the credential that submitted it
	Sender     string // envelope sender; "" is the null sender
	Recipients []string
	MessageID  string // the Message-ID header, for operators
	ReceivedAt time.Time
	Data       []byte // signed bytes, exactly as they will leave
	// Uncounted recipients (the mailbox simulator's) do not count against
	// the credential's sending quota.
	Uncounted int
}

// Delivery is a claimed message with those of its recipients that are due.
type Delivery struct {
	QueueID     string
	Sender      string
	ReceivedAt  time.Time
	Recipients  []DueRecipient
	Data        []byte // empty from Claim; see Queue.MessageData
	DelayWarned bool   // the sender has had the delay warning for this message
	Credential  string // the credential that submitted the message; "" for Sesame's own
	Pool        string // the IP pool of the message's credential; "" for the default
	Size        int    // bytes of the message, known before its Data is read
	// Parked names the waiting line the recipients were released from
	// (ClaimParked); "" when they were due by time (Claim).
	Parked string
}

// DueRecipient is a recipient handed out by Claim.
type DueRecipient struct {
	Address  string
	Attempts int // attempts made before this one
}

// Outcome is the result of one delivery attempt to one recipient.
type Outcome struct {
	Recipient   string
	State       string    // StateDelivered, StateDeferred, StateBounced, StateExpired, StateSuppressed or StateQuarantined
	Reply       string    // the remote's reply or our own reason, for operators
	NextAttempt time.Time // for StateDeferred
	RemoteMTA   string    // the server that answered, "" if none
	// BounceType classifies a bounce: BounceHard, BounceSoft, BouncePolicy
	// or BounceUndetermined. A hard bounce also suppresses the address.
	BounceType string
	// Park, with StateDeferred, puts the recipient in a waiting line (an IP
	// pool × provider with no capacity left) instead of scheduling it by
	// time: it waits until ClaimParked releases it. NotAttempted says no
	// server was tried, so the attempt is not counted and no event written.
	Park         string
	NotAttempted bool
	// Simulated marks an outcome of the mailbox simulator: a hard bounce
	// does not suppress the address.
	Simulated bool
}

// Bounce types (on bounce events): is the address bad, or the moment?
const (
	BounceHard         = "hard"         // the address does not exist or is disabled
	BounceSoft         = "soft"         // the mailbox is full, or the message expired
	BouncePolicy       = "policy"       // refused by the receiver's policy (X.7.x)
	BounceUndetermined = "undetermined" // anything else
)

// Report is what one delivery attempt of one message leaves behind. The
// store records all of it in one transaction, so a crash can neither lose a
// bounce nor send it twice.
type Report struct {
	QueueID  string
	Outcomes []Outcome
	// Notice is a DSN to the sender (a bounce or a delay warning), queued
	// with the outcomes; nil if there is none.
	Notice *Message
	// DelayWarned records that Notice is the message's delay warning, which
	// is sent once.
	DelayWarned bool
	// Sends are the messages this attempt counted against outbound IPs'
	// warm-up and provider caps.
	Sends []IPSend
	// Replies are further messages to queue with the outcomes (the
	// mailbox simulator's out-of-office reply).
	Replies []*Message
	// Events are further events (the simulator's complaints); the store
	// fills in the time, credential, queue id and Message-ID.
	Events []Event
}

// Queue is the durable mail queue.
type Queue interface {
	// Enqueue assigns m.ID if empty and returns once m is durable.
	Enqueue(ctx context.Context, m *Message) error
	// Claim leases up to max messages whose recipients are due at now
	// (queued, or deferred with NextAttempt <= now) for lease. Delivery.Data
	// is left empty: MessageData reads it when the delivery starts, so a
	// large window of claimed mail costs little memory.
	Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]Delivery, error)
	// MessageData returns the bytes of a queued message; ErrNotFound if it
	// left the queue (deleted by the operator); ErrCorrupt if its stored
	// bytes are unusable (unreadable, empty, or not the size enqueued), which
	// no retry repairs. Any other error is the store's trouble and may pass.
	MessageData(ctx context.Context, id string) ([]byte, error)
	// Complete records a report: its outcomes end their recipients' leases.
	// A message whose recipients are all final leaves the queue.
	Complete(ctx context.Context, r Report) error
	// NextDue is the earliest time a waiting recipient becomes due (a
	// leased one when its lease ends); ok is false when nothing is waiting.
	NextDue(ctx context.Context) (t time.Time, ok bool, err error)
	// Ready receives a value (coalesced) when new work may be due: after an
	// Enqueue commits, or when another process changed the queue.
	Ready() <-chan struct{}
}

// Event types: what happened to a recipient (or, for a reject, to a
// submission). The queue records send, delivery, deferral, bounce, expired
// and suppressed events in the same transaction as the state they describe;
// RecordInbound records the bounces and complaints that come back.
const (
	EventSend       = "send"       // accepted for delivery
	EventDelivery   = "delivery"   // accepted by the recipient's server
	EventDeferral   = "deferral"   // failed temporarily; will be retried
	EventBounce     = "bounce"     // failed permanently
	EventExpired    = "expired"    // still failing at the end of its lifetime
	EventReject     = "reject"     // refused at submission
	EventSuppressed = "suppressed" // not attempted: on the suppression list
	EventComplaint  = "complaint"  // the recipient reported the message as spam (a feedback loop's ARF report)
	// EventDKIMRotation is a step of a domain's DKIM key rotation (package
	// identity): Reply says which, for which domain and what to do.
	EventDKIMRotation = "dkim_rotation"
)

// EventTypes lists every event type, for validating queries.
var EventTypes = []string{EventSend, EventDelivery, EventDeferral, EventBounce, EventExpired, EventReject, EventSuppressed,
	EventComplaint, EventDKIMRotation}

// Event is one thing that happened, for operators, statistics, the
// reputation guard and webhooks.
type Event struct {
	ID         int64 // increasing: a cursor for consumers
	At         time.Time
	Type       string
	Credential string // "" for Sesame's own mail (DSNs, verification links)
	QueueID    string
	MessageID  string // the Message-ID header
	Recipient  string // "" for a reject before any recipient
	RemoteMTA  string
	Reply      string
	BounceType string // for bounce events
	// Count is how many refusals a reject event stands for: repeats on one
	// connection, or over the credential's cap, are summed into one event
	// (package smtpd decides which). 1 for every other event; 0 is stored
	// as 1.
	Count int
}

// EventQuery selects events; zero fields match everything.
type EventQuery struct {
	Since      time.Time
	Credential string
	Type       string
	Recipient  string
	Limit      int // 0: no limit
	// ExcludeDomain leaves out the events of recipients in this domain
	// (the mailbox simulator's, from the reputation rates).
	ExcludeDomain string
}

// Events stores events.
type Events interface {
	// RecordEvent stores an event that no queue write carries (a reject).
	RecordEvent(ctx context.Context, e Event) error
	// QueryEvents returns matching events, oldest first.
	QueryEvents(ctx context.Context, q EventQuery) ([]Event, error)
	// CountEvents counts matching events by type (q.Type and q.Limit
	// ignored); bounces are also counted by bounce type as "bounce:hard" etc.
	CountEvents(ctx context.Context, q EventQuery) (map[string]int, error)
	// PruneEvents deletes events older than before and returns how many.
	PruneEvents(ctx context.Context, before time.Time) (int, error)
}

// Suppression reasons.
const (
	SuppressBounce    = "bounce"    // a hard bounce
	SuppressComplaint = "complaint" // the recipient complained
	SuppressManual    = "manual"    // added by the operator
)

// Suppression is an address Sesame no longer sends to.
type Suppression struct {
	Address string
	// Credential is the credential whose mail it stops; "" stops
	// everyone's (the shared list). Automatic suppressions name the
	// message's credential only with SetSuppressionPerCredential.
	Credential string
	Reason     string // SuppressBounce, SuppressComplaint or SuppressManual
	Detail     string // the bounce's reply, or the operator's note
	CreatedAt  time.Time
}

// Suppressions stores the suppression list: shared by every credential, or
// per credential (SetSuppressionPerCredential).
type Suppressions interface {
	// Suppress adds (or replaces) an entry.
	Suppress(ctx context.Context, s Suppression) error
	// Unsuppress removes the entry of address for credential ("" the
	// shared one); ErrNotFound if absent.
	Unsuppress(ctx context.Context, address, credential string) error
	// Suppression returns every entry of address (shared and per
	// credential); ErrNotFound if there is none.
	Suppression(ctx context.Context, address string) ([]Suppression, error)
	ListSuppressions(ctx context.Context) ([]Suppression, error)
	// Suppressed returns which of addresses mail of credential may not go
	// to: on the shared list, or on credential's own.
	Suppressed(ctx context.Context, credential string, addresses []string) (map[string]bool, error)
}
