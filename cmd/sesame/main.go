// Command sesame is a self-hosted replacement for Amazon SES: an SMTP
// submission relay with generated credentials, DKIM signing and a durable
// queue. `sesame serve` runs the service; the other commands administer it
// and work while it runs (they open the same store).
//
// This package parses flags, translates the configuration into each
// package's own Config, builds the concrete types and wires them together
// (serve.go), and runs what belongs to the process rather than to mail:
// signals and reload, systemd's readiness and watchdog, the Go runtime's
// tuning, and the hourly pruning of events past their retention. The
// operator commands format what the packages return. The rules of mail (who
// may send as whom, signing, queueing, delivery, retries, bounces, return
// paths, warm-up) live in the packages it assembles.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sesame-mail/sesame/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitConfig is the exit status for a configuration that cannot be used.
const exitConfig = 78

// command is one command line verb, such as "user create".
type command struct {
	words   string // "user create"
	args    string // "NAME", for the usage text
	help    string
	minArgs int
	maxArgs int // -1: no limit
	run     func(e *env, args []string) error
	bools   map[string]string // extra boolean flags: name → help
	values  map[string]string // extra flags with a value: name → help
	lists   map[string]string // extra flags that may repeat, each a value or a comma list: name → help
}

func commands() []command {
	one := func(words, args, help string, run func(*env, []string) error) command {
		return command{words: words, args: args, help: help, minArgs: 1, maxArgs: 1, run: run}
	}
	none := func(words, help string, run func(*env, []string) error) command {
		return command{words: words, help: help, run: run}
	}
	return []command{
		none("serve", "run the submission service, the relay and the HTTP listener", runServe),
		none("healthcheck", "ask the running server's /healthz; exit 0 when it is healthy", healthcheck),
		{words: "user create", args: "NAME [--allow IDENTITY,...]", minArgs: 1, maxArgs: 1, run: userCreate,
			help: "generate SMTP credentials named NAME; the password is printed once",
			lists: map[string]string{"allow": "restrict NAME to sending as `IDENTITY`, a domain or address (repeat it, or give a comma list); " +
				"without it NAME may send as every verified identity"}},
		none("user list", "list SMTP credentials", userList),
		one("user show", "NAME", "show a credential: sandbox, quotas and usage, allowed identities", userShow),
		one("user rotate", "NAME", "give NAME a new password; the old one stops working at once", userRotate),
		{words: "user keys", args: "NAME [--rotate]", minArgs: 1, maxArgs: 1, run: userKeys,
			help:  "show NAME's SES API access key id; --rotate makes a new key pair (printed once; the old one stops working at once)",
			bools: map[string]string{"rotate": "make a new key pair"}},
		{words: "send", run: sendCmd,
			help: "send a message as a credential through the running server's SES API (the path an application's mail takes)",
			values: map[string]string{"user": "the credential to send as", "from": "the sender address", "subject": "the subject",
				"text": "the text body", "html": "the HTML body"},
			lists: map[string]string{"to": "a recipient (repeat it, or give a comma list)"}},
		one("user delete", "NAME", "delete the credentials named NAME", userDelete),
		one("user promote", "NAME", "take NAME out of the sandbox (production access)", userPromote),
		one("user sandbox", "NAME", "put NAME back in the sandbox", userSandbox),
		one("user resume", "NAME", "let NAME send again after the reputation guard paused it", userResume),
		{words: "user allow", args: "NAME [IDENTITY...]", minArgs: 1, maxArgs: -1, run: userAllow,
			help: "restrict NAME to sending as these domains or addresses (or comma lists of them); none: every verified identity"},
		{words: "user quota", args: "NAME", minArgs: 1, maxArgs: 1, run: userQuota,
			help:   "set NAME's own quotas (0: the configured default)",
			values: map[string]string{"daily": "recipients per 24 hours", "rate": "recipients per second"}},
		{words: "user pool", args: "NAME POOL", minArgs: 2, maxArgs: 2, run: userPool,
			help: "send NAME's mail from the IPs of POOL ([[ip]] pool); \"default\" for the default pool"},
		none("ip list", "list outbound IPs: pool, warm-up day, today's and this hour's caps and use, suspensions", ipList),
		one("ip show", "IP", "show one outbound IP with its standing per provider and its upcoming warm-up schedule", ipShow),
		{words: "ip pause", args: "IP", minArgs: 1, maxArgs: 1, run: ipPause,
			help: "stop sending from IP until resumed (its mail waits or leaves from the pool's other IPs)", values: map[string]string{"note": "why"}},
		one("ip resume", "IP", "send from a paused IP again", ipResume),
		{words: "ip check", args: "[IP]", maxArgs: 1, run: ipCheck,
			help: "look up each outbound IP's reverse DNS (PTR) and say whether it resolves back (FCrDNS) and matches hostname, and how to fix it"},
		one("domain add", "DOMAIN", "add a sending domain: make its DKIM keys and print the DNS records to publish", domainAdd),
		none("domain list", "list sending domains and their verification status", domainList),
		one("domain show", "DOMAIN", "print every DNS record to publish and whether each is in place", domainShow),
		one("domain verify", "DOMAIN", "check the domain's DKIM records now and update its status", domainVerify),
		{words: "domain check", args: "[DOMAIN]", maxArgs: 1, run: domainCheck,
			help: "look up every record and say what is missing or wrong, and how to fix it; " +
				"without DOMAIN, the system domain that signs Sesame's own mail ([dkim] system_domain)"},
		{words: "domain rotate", args: "DOMAIN", minArgs: 1, maxArgs: 1, run: domainRotate,
			help: "make a new DKIM key with a new selector and print its record; Sesame signs with it once the record is published, " +
				"and keeps the old key's record valid for dkim.rotation_grace",
			values: map[string]string{"alg": "the algorithm of the key to replace: rsa (default) or ed25519",
				"bits": "the size of a new RSA key: 2048, 3072 or 4096 (default: that of the key replaced)"}},
		one("domain delete", "DOMAIN", "delete a domain and its keys; mail from it is refused from then on", domainDelete),
		{words: "address add", args: "ADDRESS [--force]", minArgs: 1, maxArgs: 1, run: addressAdd,
			help: "add a sender address: a verification link is mailed to it",
			bools: map[string]string{"force": "add it although its domain publishes DMARC p=quarantine or p=reject, " +
				"which makes receivers refuse or junk its mail sent through Sesame (or let such a verified address send again)"}},
		none("address list", "list sender addresses and their status", addressList),
		one("address delete", "ADDRESS", "delete a sender address", addressDelete),
		{words: "events", run: eventsList, maxArgs: 0,
			help: "list recorded events: sends, deliveries, deferrals, bounces, expired, rejects",
			values: map[string]string{"since": "how far back: 24h, 7d, or an RFC 3339 time (default 24h)",
				"user": "only this credential", "type": "only this type", "recipient": "only this recipient",
				"limit": "at most this many, the newest (default 1000)"}},
		{words: "stats", run: stats, maxArgs: 0,
			help:   "sending statistics: sends, deliveries, bounces, complaints, rejects, and the rates",
			values: map[string]string{"since": "how far back: 24h, 7d, or an RFC 3339 time (default 24h)", "user": "only this credential"}},
		none("suppression list", "list the addresses Sesame no longer sends to", suppressionList),
		one("suppression show", "ADDRESS", "why an address is suppressed", suppressionShow),
		{words: "suppression add", args: "ADDRESS", minArgs: 1, maxArgs: 1, run: suppressionAdd,
			help:   "stop sending to an address (mail to it is accepted but not sent)",
			values: map[string]string{"note": "why", "user": "only for this credential's mail (default: everyone's)"}},
		{words: "suppression remove", args: "ADDRESS", minArgs: 1, maxArgs: 1, run: suppressionRemove,
			help: "send to a suppressed address again", values: map[string]string{"user": "the entry of this credential (default: the shared one)"}},
		{words: "inbound list", run: inboundList, maxArgs: 0,
			help:   "list the bounces and feedback reports received, with what was made of each",
			values: map[string]string{"status": "only processed, unmatched, ignored, unparsed or unverified"}},
		{words: "inbound show", args: "ID", minArgs: 1, maxArgs: 1, run: inboundShow,
			help:  "print one received message (control characters escaped) with what was made of it",
			bools: map[string]string{"raw": "print only the message's stored bytes, exactly as kept"}},
		one("inbound delete", "ID", "delete one received message", inboundDelete),
		{words: "inbound purge", run: inboundPurge, maxArgs: 0,
			help: "delete received messages matching every filter given (at least one, or --all)",
			values: map[string]string{"before": "received before: an age such as 24h or 7d, or an RFC 3339 time",
				"status": "only processed, unmatched, ignored, unparsed or unverified", "client": "only from this client IP address"},
			bools: map[string]string{"unparsed": "only unparsed messages (--status unparsed)", "all": "every received message"}},
		none("queue list", "list the messages in the queue with each recipient's state", queueList),
		one("queue show", "ID", "show one queued message: envelope, recipients, header", queueShow),
		{words: "queue retry", args: "ID|--all", maxArgs: 1, run: queueRetry,
			help:  "attempt delivery of a message (or of all) now",
			bools: map[string]string{"all": "retry every queued message"}},
		{words: "queue delete", args: "ID", minArgs: 1, maxArgs: 1, run: queueDelete,
			help:  "remove a message from the queue",
			bools: map[string]string{"bounce": "send the sender a bounce (DSN) for its waiting recipients"}},
	}
}

// env is what every command gets: its configuration and output.
type env struct {
	cfg    *config.Config
	json   bool
	flags  map[string]bool     // the command's extra boolean flags
	values map[string]string   // the command's extra flags with a value, when given
	lists  map[string][]string // the command's repeatable flags' values, commas split
	stdout io.Writer
	stderr io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" || args[0] == "version" {
		fmt.Fprintln(stdout, "sesame", version)
		return 0
	}
	cmd, rest, ok := findCommand(args)
	if !ok {
		fmt.Fprintf(stderr, "sesame: unknown command %q\n\n", strings.Join(args, " "))
		usage(stderr)
		return 2
	}

	fs := flag.NewFlagSet("sesame "+cmd.words, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", config.DefaultPath, "configuration `file`")
	jsonOut := fs.Bool("json", false, "print data as JSON")
	extra := map[string]*bool{}
	for name, help := range cmd.bools {
		extra[name] = fs.Bool(name, false, help)
	}
	extraValues := map[string]*string{}
	for name, help := range cmd.values {
		extraValues[name] = fs.String(name, "", help)
	}
	extraLists := map[string]*listFlag{}
	for name, help := range cmd.lists {
		extraLists[name] = &listFlag{}
		fs.Var(extraLists[name], name, help)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sesame %s %s [--config FILE] [--json]\n\n%s\n\nflags:\n", cmd.words, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	positional, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if len(positional) < cmd.minArgs || (cmd.maxArgs >= 0 && len(positional) > cmd.maxArgs) {
		fmt.Fprintf(stderr, "sesame %s: expected %s\n", cmd.words, describeArgs(cmd))
		fs.Usage()
		return 2
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(*configPath, explicit)
	if err != nil {
		fmt.Fprintln(stderr, "sesame:", err)
		// EX_CONFIG (sysexits.h): the unit file's RestartPreventExitStatus
		// stops systemd from restarting a broken configuration forever.
		return exitConfig
	}
	e := &env{cfg: cfg, json: *jsonOut, flags: map[string]bool{}, values: map[string]string{}, lists: map[string][]string{},
		stdout: stdout, stderr: stderr}
	for name, v := range extraLists {
		e.lists[name] = *v
	}
	for name, v := range extra {
		e.flags[name] = *v
	}
	fs.Visit(func(f *flag.Flag) {
		if v, ok := extraValues[f.Name]; ok {
			e.values[f.Name] = *v
		}
	})
	if err := cmd.run(e, positional); err != nil {
		fmt.Fprintln(stderr, "sesame:", err)
		return 1
	}
	return 0
}

// listFlag is a flag that may be given several times, each time with one
// value or a comma-separated list: --allow a.example --allow b.example and
// --allow a.example,b.example alike.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

func describeArgs(c command) string {
	switch {
	case c.maxArgs == 0:
		return "no arguments"
	case c.minArgs == 0:
		return "at most one argument: " + c.args
	}
	return c.args
}

// findCommand matches the longest run of leading words naming a command.
func findCommand(args []string) (command, []string, bool) {
	for _, c := range commands() {
		words := strings.Fields(c.words)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.words {
			return c, args[len(words):], true
		}
	}
	return command{}, nil, false
}

// parseInterspersed parses flags found anywhere among args ("user create
// shop --json" and "user create --json shop" alike) and returns the rest.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `sesame %s: a self-hosted replacement for Amazon SES

usage: sesame COMMAND [ARGS] [--config FILE] [--json]

commands:
`, version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-22s %s\n", strings.TrimSpace(c.words+" "+c.args), c.help)
	}
	fmt.Fprintf(w, `
flags (after the command):
  --config FILE   configuration file (default %s; without it, built-in
                  defaults: data in ./sesame-data, listeners on loopback)
  --json          print data as JSON
  --help          help for the command
  --version       print the version

docs: README.md and docs/ in the source tree
`, config.DefaultPath)
}

// printJSON writes v as one line of JSON. <, > and & stay as they are (a
// Message-ID reads <1@example.com>, as in a webhook body): the output is
// for terminals and programs, not for HTML; what a terminal would act on
// is escaped (jsonSafe).
func (e *env) printJSON(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := e.stdout.Write(jsonSafe(buf.Bytes()))
	return err
}
