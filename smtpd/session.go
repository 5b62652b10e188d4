package smtpd

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
)

// Replies of the submission service. go-smtp's own defaults differ: a
// plain error from Session.Data becomes 554 5.0.0 (permanent, so a failed
// store must answer 451 itself), a plain error from the AUTH PLAIN callback
// 454 4.7.0 (temporary, for wrong credentials too), ErrAuthRequired is
// 502 5.7.0, and AUTH before TLS gets 523 5.7.10. These are the codes
// RFC 4954 and SES clients expect.
var (
	errTLSFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Must issue a STARTTLS command first"}
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required"}
	errAuthInvalid = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: "Authentication credentials invalid"}
	errAuthTemporary = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Temporary authentication failure; try again later"}
	errTooManyFailures = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed login attempts; closing the connection"}
	errShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2},
		Message: "Service shutting down; try again later"}
	errNullSender = &smtp.SMTPError{Code: 553, EnhancedCode: badSenderCode,
		Message: "A sender address is required: MAIL FROM:<you@your-verified-domain>"}
	errStoreFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Temporary failure: the message could not be stored; try again later"}
	errPolicyFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Temporary failure: the sender could not be checked; try again later"}
	// The quota refusals are worded as SES words them.
	errDailyQuota = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Throttling failure: Daily message quota exceeded."}
	errSendRate = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Throttling failure: Maximum sending rate exceeded."}
)

// notVerified is SES's refusal of a sender identity the credential may not use.
func notVerified(identity string) error {
	return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Message rejected: Email address is not verified. The following identities failed the check: " + identity}
}

// dmarcProtected is the reply to a sender address whose domain's DMARC
// policy makes receivers refuse or junk the mail Sesame would send.
func dmarcProtected(e *identity.DMARCError) error {
	return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: fmt.Sprintf(
		"Message rejected: %s publishes DMARC p=%s, so receivers refuse mail from %s that %s's own servers did not send; "+
			"send from an address in a domain verified on this server, or ask the operator to allow this address "+
			"(\"sesame address add %s --force\")", e.Domain, e.Policy, e.Address, e.Domain, e.Address)}
}

// session is one client connection's SMTP transaction state. go-smtp drives
// the protocol; the session applies Sesame's rules at each step.
type session struct {
	srv      *Server
	conn     *smtp.Conn
	remoteIP string
	log      *slog.Logger

	cred store.Credential // the authenticated credential; zero before AUTH

	sender     string
	smtputf8   bool
	recipients []string

	rejects rejectLog // the connection's refusals, for reject events (rejects.go)
	refused string    // the reason of the last refusal, for Submit

	// For a submission by another door (Submit), conn is nil and these
	// stand in for it: the Received field's protocol, and the TLS state.
	door    string
	doorTLS *tls.ConnectionState
}

var _ smtp.AuthSession = (*session)(nil)

func (s *session) tlsState() (tls.ConnectionState, bool) {
	if s.conn == nil {
		if s.doorTLS == nil {
			return tls.ConnectionState{}, false
		}
		return *s.doorTLS, true
	}
	return s.conn.TLSConnectionState()
}

// AuthMechanisms hides AUTH until the connection is encrypted: passwords
// never cross the network in the clear.
func (s *session) AuthMechanisms() []string {
	if _, ok := s.tlsState(); !ok {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts a SASL exchange.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if _, ok := s.tlsState(); !ok {
		return nil, errTLSFirst
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return errAuthInvalid // no acting on behalf of another credential
			}
			return s.authenticate(username, password)
		}), nil
	case sasl.Login:
		return newLoginServer(s.authenticate), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) authenticate(username, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cred store.Credential
	err := account.ErrInvalidCredentials
	// A network that failed as a username under attack is refused as it
	// without a check: the same reply, after the same kind of wait. Other
	// networks, the owner's among them, are checked as usual.
	blocked := s.srv.guard.blocked(s.remoteIP, username)
	if !blocked {
		cred, err = s.srv.deps.Auth.Authenticate(ctx, username, password)
	}
	switch {
	case errors.Is(err, account.ErrInvalidCredentials):
		s.srv.deps.Metrics.AuthFailure()
		kind := unknownUsername
		switch {
		case blocked:
			kind = unchecked
		case errors.Is(err, account.ErrWrongPassword):
			kind = wrongPassword
		}
		delay, attack := s.srv.guard.failed(s.remoteIP, username, kind)
		user := usernameAttr(username, err)
		if attack {
			s.log.Warn("login attack: more failed logins as this username than auth_failures_per_username; "+
				"the networks failing as it are refused as it", user)
		}
		s.log.Warn("auth failed", user, "delay", delay, "unchecked", blocked)
		time.Sleep(delay) // slows guessing; a wrong password and an unknown user wait alike
		if lc := s.limitedConn(); lc != nil && int(lc.authFailures.Add(1)) >= s.srv.cfg.AuthLimits.PerConnection {
			lc.hangUp.Store(true)
			return errTooManyFailures
		}
		return errAuthInvalid
	case err != nil:
		s.log.Error("auth error", usernameAttr(username, err), "err", err)
		return errAuthTemporary
	}
	s.srv.guard.succeeded(s.remoteIP, username)
	s.cred = cred
	if lc := s.limitedConn(); lc != nil {
		lc.authenticated() // out of the unauthenticated caps, onto read_timeout
	}
	s.log = s.log.With("credential", cred.Name)
	s.log.Debug("auth ok")
	return nil
}

// usernameAttr names a failed login's username in a log line: as it is when
// a credential has it, or only as "username_hash", the first 12 hex digits
// of its SHA-256, when it is unknown or unchecked (blocked). An unknown
// username is often a password typed in the username field, and logs must
// never hold a password; the hash still lets an operator match repeated
// attempts, or check a name they suspect:
// printf %s NAME | sha256sum | cut -c1-12.
func usernameAttr(username string, err error) slog.Attr {
	if errors.Is(err, account.ErrWrongPassword) {
		return slog.String("username", printable(username))
	}
	sum := sha256.Sum256([]byte(username))
	return slog.String("username_hash", hex.EncodeToString(sum[:6]))
}

// Mail starts a transaction.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.cred.Name == "" {
		return s.refuse(reasonAuthRequired, errAuthRequired)
	}
	if from == "" {
		return s.refuse(reasonBadAddress, errNullSender)
	}
	addr, err := normalizeAddress(from, opts.UTF8, badSenderCode)
	if err != nil {
		return s.refuse(reasonBadAddress, err)
	}
	if err := s.checkStorage(); err != nil {
		return err
	}
	if err := s.checkStanding(); err != nil {
		return err
	}
	if err := s.checkSender(addr); err != nil {
		return err
	}
	if !s.beginTransaction() {
		return errShuttingDown
	}
	s.sender, s.smtputf8 = addr, opts.UTF8
	return nil
}

// limitedConn is the session's connection as the listener accepted it,
// under any TLS.
func (s *session) limitedConn() *limitedConn {
	if s.conn == nil {
		return nil // another door's submission (Submit)
	}
	c := s.conn.Conn()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, _ := c.(*limitedConn)
	return lc
}

// beginTransaction marks the connection busy with a mail transaction, so a
// shutdown waits for it rather than cutting it. It fails when a shutdown is
// already closing the connection.
func (s *session) beginTransaction() bool {
	lc := s.limitedConn()
	return lc == nil || lc.state.CompareAndSwap(connIdle, connInTransaction) || lc.state.Load() == connInTransaction
}

// endTransaction marks the connection idle again (a shutdown may close it).
func (s *session) endTransaction() {
	if lc := s.limitedConn(); lc != nil {
		lc.state.CompareAndSwap(connInTransaction, connIdle)
	}
}

// checkStanding refuses every transaction of a paused credential. It reads
// the store each time: the guard (or an operator) may pause it while a
// session is open.
func (s *session) checkStanding() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reason, err := s.srv.deps.Standing.PausedReason(ctx, s.cred.Name)
	if err != nil {
		s.log.Error("checking the credential's standing failed", "err", err)
		return s.refuse(reasonTemporary, errPolicyFailed)
	}
	if reason != "" {
		return s.refuse(reasonPaused, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Sending paused for this credential: %s; see \"sesame user show %s\"", reason, s.cred.Name)})
	}
	return nil
}

// checkSender refuses an identity the credential may not send as.
func (s *session) checkSender(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := s.srv.deps.Policy.MaySendAs(ctx, s.cred, addr)
	if dm := (*identity.DMARCError)(nil); errors.As(err, &dm) {
		return s.refuse(reasonDMARCProtected, dmarcProtected(dm))
	}
	if err != nil {
		s.log.Error("checking a sender failed", "sender", addr, "err", err)
		return s.refuse(reasonTemporary, errPolicyFailed)
	}
	if !ok {
		return s.refuse(reasonNotVerified, notVerified(addr))
	}
	return nil
}

// refuse counts a refused submission, records a reject event for an
// authenticated one (per recipient when they are known; repeats summed,
// see rejects.go), and returns err.
func (s *session) refuse(reason string, err error) error {
	return s.refuseFor(s.recipients, reason, err)
}

// refuseFor is refuse for the given recipients.
func (s *session) refuseFor(rcpts []string, reason string, err error) error {
	s.refused = reason
	s.srv.deps.Metrics.Submission(false, reason)
	if s.cred.Name != "" && s.srv.deps.Events != nil {
		s.rejectEvent(rcpts, reason, err)
	}
	return err
}

// Rcpt adds a recipient. go-smtp enforces max_recipients (452 4.5.3).
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	addr, err := normalizeAddress(to, s.smtputf8, badRecipientCode)
	if err != nil {
		return err
	}
	if s.cred.Sandbox && !s.srv.simulated(addr) { // the mailbox simulator is open to the sandbox, as on SES
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ok, err := s.srv.deps.Policy.VerifiedRecipient(ctx, addr)
		cancel()
		if err != nil {
			s.log.Error("checking a recipient failed", "rcpt", addr, "err", err)
			return s.refuse(reasonTemporary, errPolicyFailed)
		}
		if !ok {
			return s.refuseFor([]string{addr}, reasonSandbox, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: fmt.Sprintf(
				"Message rejected: Email address is not verified. The following identities failed the check: %s "+
					"(credential %s is in the sandbox and may send only to verified addresses and domains; "+
					"verify the recipient with \"sesame address add\", or ask the operator to run \"sesame user promote %s\")",
				addr, s.cred.Name, s.cred.Name)})
		}
	}
	for _, r := range s.recipients {
		if r == addr {
			return nil // the same recipient twice gets one copy
		}
	}
	s.recipients = append(s.recipients, addr)
	return nil
}

// Reset ends the transaction (go-smtp calls it after DATA too).
func (s *session) Reset() {
	s.sender, s.smtputf8, s.recipients = "", false, nil
	s.endTransaction()
}

// Logout ends the session (the connection, or its part before STARTTLS).
func (s *session) Logout() error {
	s.flushRejects()
	return nil
}

// Data receives the message, signs it and queues it durably: the 250 reply
// is written only after the message is on disk. After DATA the message is
// read from the client's bytes by a dotReader, not by go-smtp's reader r,
// which changes some of them (dotreader.go); BDAT chunks come raw. The
// message is in memory once, and a large one only from the end of its
// data, within the server's memory budget (msgbuf.go, inflight.go).
func (s *session) Data(r io.Reader) error {
	buf := newMsgBuf(s.srv.inflight, networkOf(s.remoteIP), s.srv.cfg.SpoolDir, s.log)
	defer buf.free()
	var dr *dotReader
	if !isBDAT(r) {
		br, ok := dataSource(r)
		if !ok {
			s.log.Error("the message of DATA cannot be read: go-smtp's reader of it is not the one this build of Sesame knows (smtpd/dotreader.go); build Sesame with the go-smtp version in its go.mod",
				"reader", fmt.Sprintf("%T", r))
			return s.refuse(reasonTemporary, errReader)
		}
		dr = newDotReader(br, s.srv.cfg.MaxMessageBytes)
		r = dr
	}
	err := readMessage(r, buf, s.srv.maxLineLength())
	if err != nil {
		buf.free() // not held while the rest of a refused message is read
	}
	if dr != nil {
		dr.drain() // up to the end line, where go-smtp's own reader stops
	}
	if lc := s.limitedConn(); err == nil && lc != nil && lc.ended.Load() {
		err = errIncomplete // a BDAT chunk cut short: go-smtp ends it as if whole
	}
	id, err := s.queue(buf, err)
	if err != nil {
		return err
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// queue ends the transaction of the message in buf, read with err (nil:
// whole and well formed): the message is loaded into memory when it was
// spooled, checked, signed and queued (accept), and its queue id returned;
// or the refusal, counted. Every door ends here (Submit for the API).
func (s *session) queue(buf *msgBuf, err error) (string, error) {
	if err == nil {
		err = s.load(buf)
	}
	if err != nil {
		s.log.Warn("message refused", "sender", s.sender, "reason", err)
		reason := reasonBadMessage
		switch {
		case err == errNoStorage:
			s.noteSpoolFull(buf.full)
			return "", s.refuseNoStorage()
		case err == errStoreFailed:
			reason = reasonTemporary
		case errors.Is(err, smtp.ErrDataTooLarge):
			reason = reasonTooBig
		case err == errInflight:
			reason = reasonInflight
		}
		return "", s.refuse(reason, err)
	}
	id, reason, err := s.accept(buf)
	if err != nil {
		s.log.Warn("message refused", "sender", s.sender, "reason", err)
		if reason != "" { // refusals in accept are counted there
			return "", s.refuse(reason, err)
		}
		return "", err
	}
	s.srv.deps.Metrics.Submission(true, "")
	return id, nil
}

// load reads a spooled message into memory, waiting for room in the
// budget at most inflightWait, or until a shutdown starts cutting
// connections.
func (s *session) load(buf *msgBuf) error {
	if buf.spool == nil {
		return nil // in memory already
	}
	ctx, cancel := context.WithTimeout(s.srv.cutting, inflightWait)
	defer cancel()
	err := buf.load(ctx)
	if err == errInflight {
		s.log.Warn("message refused with 452 4.3.1: no room in the memory budget for messages in time; raise [submission] max_inflight_bytes if this is regular load",
			"size", buf.spooled, "inflight_bytes", s.srv.inflight.bytes(), "waited", inflightWait)
	}
	return err
}

// accept turns a received message into a queued one: complete the header
// (Message-ID, Date, Feedback-ID; X-SES-CONFIGURATION-SET removed), sign, put Received above the signature, store. A
// refusal comes with its reason for the metrics ("" when already counted).
// What it adds goes into the room buf keeps in front of the message, so
// the signer and the store get the message's own bytes, never a copy.
func (s *session) accept(buf *msgBuf) (id, reason string, err error) {
	h, err := parseHeader(buf.bytes())
	if err != nil {
		return "", reasonBadMessage, err
	}
	from, err := h.fromAddress()
	if err != nil {
		return "", reasonBadMessage, err
	}
	domain := from[strings.LastIndexByte(from, '@')+1:]
	if err := s.checkSender(from); err != nil {
		return "", "", err // counted by checkSender
	}
	others, err := h.otherSenders(from) // Sender, Resent-From, Resent-Sender
	if err != nil {
		return "", reasonBadMessage, err
	}
	for _, addr := range others {
		if err := s.checkSender(addr); err != nil {
			return "", "", err
		}
	}

	id = store.NewQueueID()
	now := s.srv.now()
	messageID := h.messageID
	var added []byte // fields a submission server completes (RFC 6409 §8), signed with the rest
	if messageID == "" {
		messageID = "<" + id + "@" + s.srv.cfg.Hostname + ">"
		added = append(added, "Message-ID: "+messageID+"\r\n"...)
	}
	if !h.hasDate {
		added = append(added, "Date: "+now.Format(time.RFC1123Z)+"\r\n"...)
	}
	for i := len(h.configSetAt) - 1; i >= 0; i-- { // an instruction to Sesame, not for the recipient
		buf.remove(h.configSetAt[i][0], h.configSetAt[i][1])
	}
	if !h.hasFeedbackID { // feedbackid.go
		added = append(added, feedbackID(h.configSet, s.cred.Name, domain)...)
	}
	if err := buf.prepend(added); err != nil {
		return "", reasonInflight, err
	}
	signed := buf.bytes()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The mailbox simulator's recipients do not count against the quota.
	uncounted := 0
	for _, r := range s.recipients {
		if s.srv.simulated(r) {
			uncounted++
		}
	}
	done, err := s.srv.deps.Quotas.Reserve(ctx, s.cred, len(s.recipients)-uncounted)
	switch {
	case errors.Is(err, account.ErrDailyQuota):
		return "", reasonQuotaDaily, errDailyQuota
	case errors.Is(err, account.ErrSendRate):
		return "", reasonQuotaRate, errSendRate
	case err != nil:
		s.log.Error("checking the quota failed", "err", err)
		return "", reasonTemporary, errPolicyFailed
	}
	queued := false
	defer func() { done(queued) }()

	signature, err := s.srv.deps.Signer.Sign(ctx, domain, signed)
	if errors.Is(err, store.ErrNotFound) && s.srv.cfg.FallbackSigningDomain != "" {
		// A verified address in a domain without keys: signed for the
		// operator's domain, as SES signs for amazonses.com.
		signature, err = s.srv.deps.Signer.Sign(ctx, s.srv.cfg.FallbackSigningDomain, signed)
	}
	if errors.Is(err, store.ErrNotFound) {
		return "", reasonNoKeys, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Message rejected: sending domain %s is not set up; run \"sesame domain add %s\"", domain, domain)}
	}
	if err != nil {
		s.log.Error("dkim signing failed", "domain", domain, "err", err)
		return "", reasonTemporary, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
			Message: "Temporary failure: the message could not be signed; try again later"}
	}

	if err := buf.prepend([]byte(s.received(id, now)), signature); err != nil {
		return "", reasonInflight, err
	}
	data := buf.bytes()
	m := &store.Message{
		ID:         id,
		Credential: s.cred.Name,
		Sender:     s.sender,
		Recipients: append([]string(nil), s.recipients...),
		MessageID:  messageID,
		ReceivedAt: now,
		Data:       data,
		Uncounted:  uncounted,
	}
	if err := s.srv.deps.Queue.Enqueue(ctx, m); err != nil {
		if store.IsStorageFull(err) {
			// The disk is full (storage.go): 452 4.3.1, and MAIL FROM
			// refuses the next transactions until there is room again.
			s.log.Error("queueing failed: the disk is full; free space in the data directory (mail is refused with 452 4.3.1 until then)", "err", err)
			return "", "", s.refuseNoStorage()
		}
		s.log.Error("queueing failed", "err", err)
		return "", reasonTemporary, errStoreFailed
	}
	queued = true
	s.log.Info("queued", "queue_id", id, "sender", s.sender, "recipients", len(m.Recipients),
		"size", len(data), "message_id", printable(messageID))
	return id, "", nil
}

// received is the trace field (RFC 5321 §4.4) Sesame puts on top of every
// message, above the DKIM signature and not signed by it.
func (s *session) received(id string, now time.Time) string {
	var b strings.Builder
	helo, with := "api", s.door
	if s.conn != nil {
		helo, with = heloName(s.conn.Hostname()), "ESMTPSA"
	}
	b.WriteString("Received: from ")
	b.WriteString(helo)
	b.WriteString(" ([")
	b.WriteString(s.remoteIP)
	b.WriteString("])\r\n\tby ")
	b.WriteString(s.srv.cfg.Hostname)
	b.WriteString(" (Sesame) with " + with + " id ")
	b.WriteString(id)
	if st, ok := s.tlsState(); ok {
		fmt.Fprintf(&b, "\r\n\t(using %s with cipher %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	if len(s.recipients) == 1 {
		b.WriteString("\r\n\tfor <" + s.recipients[0] + ">")
	}
	b.WriteString(";\r\n\t" + now.Format(time.RFC1123Z) + "\r\n")
	return b.String()
}

// heloName keeps what is safe of the client's EHLO argument for a header.
func heloName(h string) string {
	var b strings.Builder
	for i := 0; i < len(h) && b.Len() < 64; i++ {
		c := h[i]
		if c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '\\' && c != ';' {
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

func remoteIP(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
