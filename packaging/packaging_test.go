// Package packaging holds what installs and runs Sesame for real: the
// systemd unit, its sysusers file and production configuration, the certbot
// deploy hook, and the build script the Dockerfile runs. These tests check
// them against the code: the unit passes systemd-analyze (and, with
// SESAME_E2E=1 as root, boots under a real systemd in a throw-away
// container), the build script makes a static binary from exactly the Docker
// build context, the example configuration loads and documents every key,
// and the Dockerfile's HEALTHCHECK and CMD work with the binary.
package packaging

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/config"
)

const testVersion = "test"

// root is the repository, one level up from this package.
var root = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Dir(wd)
}()

func e2e() bool { return os.Getenv("SESAME_E2E") == "1" }

// need finds a tool the test cannot do without: missing, it fails the test
// in an end-to-end run (SESAME_E2E=1, as CI runs), else it skips it.
func need(t *testing.T, tool, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (Debian package %s; scripts/install-test-deps.sh installs it)", tool, debianPackage)
	if e2e() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

var built struct {
	once    sync.Once
	dir     string // the build context copy
	bin     string
	err     error
	cleanup func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.cleanup != nil {
		built.cleanup()
	}
	os.Exit(code)
}

// sesameBinary builds Sesame once, as the Dockerfile does: packaging/build.sh
// run in a copy of the Docker build context (the repository less what
// .dockerignore excludes), with VERSION=test.
func sesameBinary(t *testing.T) (bin, context string) {
	t.Helper()
	built.once.Do(func() {
		tmp, err := os.MkdirTemp("", "sesame-packaging-")
		if err != nil {
			built.err = err
			return
		}
		built.cleanup = func() { os.RemoveAll(tmp) }
		built.dir = filepath.Join(tmp, "context")
		if built.err = copyContext(root, built.dir); built.err != nil {
			return
		}
		out := filepath.Join(tmp, "out")
		cmd := exec.Command("sh", "packaging/build.sh")
		cmd.Dir = built.dir
		cmd.Env = append(os.Environ(), "VERSION="+testVersion, "OUT="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("VERSION=%s OUT=%s sh packaging/build.sh: %v\n%s", testVersion, out, err, b)
			return
		}
		built.bin = filepath.Join(out, "sesame")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin, built.dir
}

// --- .dockerignore ---------------------------------------------------------

// ignoreRules reads .dockerignore as Docker does: one pattern a line, from
// the context's root, "**" for any number of directories. A path is left out
// when it or a directory above it matches.
func ignoreRules(dir string) ([]*regexp.Regexp, error) {
	data, err := os.ReadFile(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	var rules []*regexp.Regexp
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			return nil, fmt.Errorf(".dockerignore: %q: exceptions are not understood by this test; extend ignoreRules", line)
		}
		p := strings.TrimPrefix(filepath.Clean(line), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(?:.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		rules = append(rules, regexp.MustCompile(re.String()))
	}
	return rules, nil
}

func ignored(rules []*regexp.Regexp, rel string) bool {
	for p := rel; p != "." && p != "/" && p != ""; p = filepath.Dir(p) {
		for _, r := range rules {
			if r.MatchString(filepath.ToSlash(p)) {
				return true
			}
		}
	}
	return false
}

// copyContext copies the repository at src to dst, less what .dockerignore
// leaves out of a Docker build context.
func copyContext(src, dst string) error {
	rules, err := ignoreRules(src)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel != "." && ignored(rules, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		}
		return nil // sockets and the like are not part of a build
	})
}

func TestDockerignore(t *testing.T) {
	rules, err := ignoreRules(root)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		".git/config":                               true,
		"sesame-data/sesame.db":                     true,
		"test/clients/node/node_modules/x/index.js": true,
		"cmd/sesame/sesame.test":                    true,
		"sesame":                                    true,
		"sesame-bench":                              true,
		"go.mod":                                    false,
		"go.sum":                                    false,
		"cmd/sesame/main.go":                        false,
		"packaging/build.sh":                        false,
		"packaging/sesame.toml":                     false,
		"cmd/sesame-bench/main.go":                  false,
		"test/clients/node/package.json":            false,
		"docs/configuration.md":                     false,
		"store/testdata/anything":                   false,
	} {
		if got := ignored(rules, path); got != want {
			t.Errorf("%s: left out of the build context: %v, want %v", path, got, want)
		}
	}
}

// --- the build script and the binary ---------------------------------------

func TestBuildScriptMakesAStaticBinary(t *testing.T) {
	bin, ctxDir := sesameBinary(t)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a PT_INTERP program header: it needs a dynamic loader, so it is not static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil {
		t.Error(err)
	} else if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries (DT_NEEDED): %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: -ldflags -s was not applied")
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("CGO_ENABLED = %q, want 0", settings["CGO_ENABLED"])
	}
	if settings["-trimpath"] != "true" {
		t.Errorf("-trimpath = %q, want true", settings["-trimpath"])
	}
	// Go leaves -ldflags out of the build information under -trimpath; the
	// missing symbol table (-s) and DWARF (-w) above and below, and
	// --version (-X main.version), show they were applied.
	if f.Section(".debug_info") != nil {
		t.Error("the binary has DWARF debug information: -ldflags -w was not applied")
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(ctxDir)) {
		t.Errorf("the binary contains the build directory %s: -trimpath was not applied", ctxDir)
	}

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("sesame --version: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "sesame "+testVersion; got != want {
		t.Errorf("sesame --version printed %q, want %q", got, want)
	}
}

// --- the Dockerfile --------------------------------------------------------

type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY...
	args string
	line int
}

type stage struct {
	image, name  string
	instructions []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions, joining
// continuation lines and dropping comments, as Docker does.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			continue
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			var s stage
			var words []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			s.image = words[0]
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				s.name = words[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", path, in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instructions {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm parses the JSON array of CMD, ENTRYPOINT or HEALTHCHECK CMD.
func execForm(t *testing.T, in instruction, text string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(text), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s: want the exec form, a JSON array (distroless has no shell)", in.line, in.cmd, text)
	}
	return argv
}

// goMinor is "1.26" for "go 1.26.8" in go.mod.
func goMinor(t *testing.T) string {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (build, final)", len(stages))
	}
	build, final := stages[0], stages[1]

	if want := "golang:" + goMinor(t) + "-bookworm"; build.image != want {
		t.Errorf("build stage FROM %s, want %s (the Go of go.mod)", build.image, want)
	}
	var buildRun bool
	for _, in := range build.all("RUN") {
		if strings.Contains(in.args, "sh packaging/build.sh") {
			buildRun = true
			for _, want := range []string{"VERSION=$VERSION", "OUT=/out", "GOOS=$TARGETOS", "GOARCH=$TARGETARCH"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("Dockerfile:%d: the build RUN lacks %s", in.line, want)
				}
			}
		}
	}
	if !buildRun {
		t.Error("the build stage does not RUN sh packaging/build.sh, the build this test checks")
	}

	if !strings.HasPrefix(final.image, "gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot", final.image)
	}
	copies := map[string]bool{}
	for _, in := range final.all("COPY") {
		copies[strings.Join(strings.Fields(in.args), " ")] = true
	}
	for _, want := range []string{
		"--from=" + build.name + " /out/sesame /usr/local/bin/sesame",
		"packaging/sesame.toml " + config.DefaultPath,
		"--from=" + build.name + " --chown=65532:65532 /out/data /var/lib/sesame",
	} {
		if !copies[want] {
			t.Errorf("final stage lacks COPY %s (has %v)", want, copies)
		}
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Error("final stage has no USER: it would run as root")
	} else if u := users[len(users)-1].args; u == "root" || u == "0" || strings.HasPrefix(u, "root:") || strings.HasPrefix(u, "0:") {
		t.Errorf("USER %s: want a non-root user", u)
	}
	if v := final.all("VOLUME"); len(v) != 1 || v[0].args != "/var/lib/sesame" {
		t.Errorf("VOLUME: %v, want /var/lib/sesame", v)
	}
	var ports []string
	for _, in := range final.all("EXPOSE") {
		ports = append(ports, strings.Fields(in.args)...)
	}
	for _, p := range []string{"587", "465", "8025", "8443"} {
		if !slices.Contains(ports, p) {
			t.Errorf("EXPOSE lacks %s (has %v)", p, ports)
		}
	}

	// Every file the build copies from the context is in the context.
	rules, err := ignoreRules(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stages {
		for _, in := range s.all("COPY") {
			if strings.Contains(in.args, "--from=") {
				continue
			}
			var words []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			for _, src := range words[:len(words)-1] {
				if src == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("Dockerfile:%d: COPY %s: %v", in.line, src, err)
				} else if ignored(rules, src) {
					t.Errorf("Dockerfile:%d: COPY %s, which .dockerignore leaves out of the context", in.line, src)
				}
			}
		}
	}
}

// TestDockerfileCommands runs what the image runs, with the built binary:
// ENTRYPOINT + CMD start the service, and the HEALTHCHECK command exits 0
// while it runs and 1 (Docker's "unhealthy") once it has stopped.
func TestDockerfileCommands(t *testing.T) {
	bin, _ := sesameBinary(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	final := stages[len(stages)-1]
	one := func(cmd string) instruction {
		ins := final.all(cmd)
		if len(ins) != 1 {
			t.Fatalf("final stage: %d %s instructions, want 1", len(ins), cmd)
		}
		return ins[0]
	}
	hc := one("HEALTHCHECK")
	_, hcText, ok := strings.Cut(hc.args, " CMD ")
	if !ok {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK without CMD", hc.line)
	}
	ep, cmd := one("ENTRYPOINT"), one("CMD")
	health := execForm(t, hc, strings.TrimSpace(hcText))
	argv := append(execForm(t, ep, ep.args), execForm(t, cmd, cmd.args)...)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sesame.toml")
	httpAddr := freePort(t)
	writeFile(t, cfgPath, fmt.Sprintf(`hostname = "relay.example.com"
data_dir = %q
[submission]
starttls_listen = ["127.0.0.1:0"]
tls_listen = ["127.0.0.1:0"]
[relay]
dns_servers = ["127.0.0.1:53"]
[http]
listen = %q
[api]
listen = "127.0.0.1:0"
`, filepath.Join(dir, "data"), httpAddr), 0o644)
	image := func(args []string) []string {
		out := slices.Clone(args)
		for i, a := range out {
			switch a {
			case "/usr/local/bin/sesame":
				out[i] = bin
			case config.DefaultPath:
				out[i] = cfgPath
			}
		}
		return out
	}
	health, argv = image(health), image(argv)
	if argv[0] != bin || health[0] != bin {
		t.Fatalf("ENTRYPOINT %v and HEALTHCHECK %v do not run /usr/local/bin/sesame", argv, health)
	}
	check := func() (int, string) {
		out, err := exec.Command(health[0], health[1:]...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}

	var logs bytes.Buffer
	srv := exec.Command(argv[0], argv[1:]...)
	srv.Dir = dir
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Kill()
		<-exited
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out := check()
		if code == 0 {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%v exited (%v) before it was healthy:\n%s", argv, err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: HEALTHCHECK %v still exits %d after 15 s: %s\nserver log:\n%s", argv, health, code, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	srv.Process.Signal(syscall.SIGTERM) // docker stop
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("after SIGTERM (docker stop) the server exited with %v, want 0:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not stop within 30 s of SIGTERM:\n%s", logs.String())
	}
	if code, out := check(); code != 1 {
		t.Errorf("HEALTHCHECK with the server stopped: exit %d (%s), want 1 (Docker: unhealthy)", code, out)
	}
}

// --- the example configuration ---------------------------------------------

var settingRE = regexp.MustCompile(`^(#?)([a-z_0-9]+) = `)

// configKeys lists the keys set (active) and shown (commented, "#key =") in
// an example file, as "section.key" or "key" at the top level.
func configKeys(t *testing.T, path string) (active, commented []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		// "#[[webhook]]" opens an example array table, all commented out.
		if strings.HasPrefix(line, "[") || strings.HasPrefix(line, "#[[") {
			section = strings.Trim(strings.TrimSpace(line), "#[]") + "."
			continue
		}
		m := settingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[1] == "" {
			active = append(active, section+m[2])
		} else {
			commented = append(commented, section+m[2])
		}
	}
	return active, commented
}

// documentedKeys lists the keys in the tables of docs/configuration.md.
func documentedKeys(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_0-9.]+)` \\|").FindAllStringSubmatch(string(data), -1) {
		keys = append(keys, m[1])
	}
	if len(keys) < 10 {
		t.Fatalf("found only %d keys in docs/configuration.md; has its table format changed?", len(keys))
	}
	return keys
}

func TestExampleConfig(t *testing.T) {
	path := filepath.Join(root, "packaging", "sesame.toml")
	cfg, err := config.Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/sesame" {
		t.Errorf("data_dir = %q, want /var/lib/sesame (sesame.service: StateDirectory=sesame)", cfg.DataDir)
	}
	if !reflect.DeepEqual(cfg.Submission.StartTLSListen, []string{"0.0.0.0:587"}) || !reflect.DeepEqual(cfg.Submission.TLSListen, []string{"0.0.0.0:465"}) {
		t.Errorf("listeners %v and %v, want 0.0.0.0:587 and 0.0.0.0:465", cfg.Submission.StartTLSListen, cfg.Submission.TLSListen)
	}
	if cfg.HTTP.Listen != "127.0.0.1:8025" {
		t.Errorf("http.listen = %q, want 127.0.0.1:8025", cfg.HTTP.Listen)
	}
	// Where the certbot deploy hook puts the certificate by default.
	if cfg.Submission.TLSCertFile != "/etc/sesame/tls/fullchain.pem" || cfg.Submission.TLSKeyFile != "/etc/sesame/tls/privkey.pem" {
		t.Errorf("tls files %q, %q: want those packaging/certbot-deploy-hook installs, /etc/sesame/tls/{fullchain,privkey}.pem",
			cfg.Submission.TLSCertFile, cfg.Submission.TLSKeyFile)
	}

	// "#key = value" lines show the value in effect: with all of them
	// uncommented, the configuration is the same.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Keys of a commented-out array table ("#[[webhook]]") stay commented:
	// uncommented, they would add an entry rather than show a default.
	text := string(data)
	if i := strings.Index(text, "\n#[["); i >= 0 {
		text = text[:i+1]
	}
	uncommented := regexp.MustCompile(`(?m)^#([a-z_0-9]+ = )`).ReplaceAllString(text, "$1")
	all, err := config.Parse(uncommented)
	if err != nil {
		t.Fatalf("with every \"#key = value\" line uncommented: %v", err)
	}
	cfg.Path = ""
	emptySlicesToNil(reflect.ValueOf(cfg).Elem())
	emptySlicesToNil(reflect.ValueOf(all).Elem())
	if d := config.Diff(cfg, all); len(d) > 0 {
		t.Errorf("these \"#key = value\" lines do not show the built-in default (or repeat a set key): %v", d)
	}

	// Every documented key is in the example, and only those.
	active, commented := configKeys(t, path)
	inExample := append(active, commented...)
	documented := documentedKeys(t)
	for _, k := range documented {
		if !slices.Contains(inExample, k) {
			t.Errorf("%s (docs/configuration.md) is missing from packaging/sesame.toml: add it, commented out with its default if production does not need it", k)
		}
	}
	for _, k := range inExample {
		if !slices.Contains(documented, k) {
			t.Errorf("packaging/sesame.toml sets %s, which docs/configuration.md does not document", k)
		}
	}
}

// emptySlicesToNil makes "#dns_servers = []" (an empty list) compare equal
// to the default (no list).
func emptySlicesToNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				emptySlicesToNil(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 && v.CanSet() {
			v.Set(reflect.Zero(v.Type()))
		}
	}
}

// --- the systemd unit ------------------------------------------------------

// unitFile reads a systemd unit into section → key → values (a key may
// repeat).
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s: cannot read %q", path, line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

func TestUnitFile(t *testing.T) {
	u := unitFile(t, filepath.Join(root, "packaging", "sesame.service"))
	svc := u["Service"]
	for k, want := range map[string]string{
		"Type":                    "notify",
		"NotifyAccess":            "main",
		"WatchdogSec":             "30s",
		"ExecStart":               "/usr/local/bin/sesame serve --config " + config.DefaultPath,
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Restart":                 "on-failure",
		"TimeoutStopSec":          "60",
		"User":                    "sesame",
		"Group":                   "sesame",
		"StateDirectory":          "sesame",
		"StateDirectoryMode":      "0700",
		"ConfigurationDirectory":  "sesame",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"ProtectClock":            "yes",
		"ProtectHostname":         "yes",
		"RestrictNamespaces":      "yes",
		"RestrictRealtime":        "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"UMask":                   "0077",
		"LimitNOFILE":             "65536",
	} {
		if got := svc[k]; len(got) != 1 || got[0] != want {
			t.Errorf("[Service] %s = %v, want %s", k, got, want)
		}
	}
	if got := svc["SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("[Service] SystemCallFilter = %v, want @system-service first", got)
	}
	families := strings.Fields(strings.Join(svc["RestrictAddressFamilies"], " "))
	for _, f := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
		if !slices.Contains(families, f) {
			t.Errorf("[Service] RestrictAddressFamilies = %v lacks %s", families, f)
		}
	}
	if got := u["Install"]["WantedBy"]; !reflect.DeepEqual(got, []string{"multi-user.target"}) {
		t.Errorf("[Install] WantedBy = %v, want multi-user.target", got)
	}

	// The state directory is the example's data_dir, and the sysusers file
	// makes the unit's user with that home.
	cfg, err := config.Load(filepath.Join(root, "packaging", "sesame.toml"), true)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/var/lib/" + svc["StateDirectory"][0]; cfg.DataDir != want {
		t.Errorf("packaging/sesame.toml data_dir %q, but the unit's StateDirectory is %s", cfg.DataDir, want)
	}
	sysusers, err := os.ReadFile(filepath.Join(root, "packaging", "sesame.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`u %s - "Sesame mail relay" %s`, svc["User"][0], cfg.DataDir)
	if !slices.Contains(strings.Split(string(sysusers), "\n"), want) {
		t.Errorf("packaging/sesame.sysusers lacks the line %s", want)
	}
}

// unitCopy writes the unit to a temporary directory with ExecStart pointing
// at bin, so that systemd-analyze finds the executable.
func unitCopy(t *testing.T, bin string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "packaging", "sesame.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "ExecStart=/usr/local/bin/sesame ", "ExecStart="+bin+" ", 1)
	if text == string(data) {
		t.Fatal("sesame.service: no ExecStart=/usr/local/bin/sesame line to point at the test binary")
	}
	path := filepath.Join(t.TempDir(), "sesame.service")
	writeFile(t, path, text, 0o644)
	return path
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	bin, _ := sesameBinary(t)
	unit := unitCopy(t, bin)
	cmd := exec.Command(analyze, "verify", "--man=no", unit)
	cmd.Dir = filepath.Dir(unit)
	out, err := cmd.CombinedOutput()
	t.Logf("systemd-analyze verify --man=no sesame.service: %v\n%s", err, out)
	if err != nil {
		t.Errorf("systemd-analyze verify failed: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "sesame.service") || strings.Contains(line, unit) {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// TestSystemdAnalyzeSecurity keeps the unit's exposure score (0 = fully
// confined, 10 = not at all) at 2.0 or below.
func TestSystemdAnalyzeSecurity(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	bin, _ := sesameBinary(t)
	unit := unitCopy(t, bin)
	out, err := exec.Command(analyze, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if bytes.Contains(out, []byte("unrecognized option")) {
		t.Skipf("this systemd-analyze has no --offline (systemd 250 or later has): %s", out)
	}
	m := regexp.MustCompile(`Overall exposure level for sesame\.service: (\d+\.\d)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security --offline=true: %v, no exposure level in:\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure level %.1f, want 2.0 or less:\n%s", score, out)
	}
}

func TestSysusers(t *testing.T) {
	sysusers := need(t, "systemd-sysusers", "systemd")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sysusers, "--root="+dir, filepath.Join(root, "packaging", "sesame.sysusers")).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(dir, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] != "sesame" {
			continue
		}
		found = true
		uid, _ := strconv.Atoi(f[2])
		if uid == 0 || uid >= 1000 {
			t.Errorf("uid %d: want a system user (1-999)", uid)
		}
		if f[4] != "Sesame mail relay" || f[5] != "/var/lib/sesame" || !strings.HasSuffix(f[6], "nologin") {
			t.Errorf("passwd line %q: want gecos \"Sesame mail relay\", home /var/lib/sesame, no login shell", line)
		}
	}
	if !found {
		t.Fatalf("systemd-sysusers made no user sesame:\n%s", passwd)
	}
	group, err := os.ReadFile(filepath.Join(dir, "etc", "group"))
	if err != nil || !regexp.MustCompile(`(?m)^sesame:`).Match(group) {
		t.Errorf("no group sesame (%v):\n%s", err, group)
	}
}

// --- the certbot deploy hook -----------------------------------------------

func TestCertbotDeployHook(t *testing.T) {
	hook := filepath.Join(root, "packaging", "certbot-deploy-hook")
	dir := t.TempDir()
	lineage := filepath.Join(dir, "live", "relay.example.com")
	tlsDir := filepath.Join(dir, "etc-sesame", "tls")
	reloaded := filepath.Join(dir, "reloaded")
	env := append(os.Environ(),
		"RENEWED_LINEAGE="+lineage,
		"SESAME_TLS_DIR="+tlsDir,
		"SESAME_GROUP="+strconv.Itoa(os.Getgid()),
		"SESAME_RELOAD=echo reload >> '"+reloaded+"'",
	)
	run := func(env []string) ([]byte, error) {
		cmd := exec.Command("sh", hook)
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	if out, err := run(slices.DeleteFunc(slices.Clone(env), func(s string) bool { return strings.HasPrefix(s, "RENEWED_LINEAGE=") })); err == nil {
		t.Errorf("without RENEWED_LINEAGE the hook succeeded: %s", out)
	}

	for i, serial := range []string{"first issue", "renewal"} {
		writeFile(t, filepath.Join(lineage, "fullchain.pem"), "chain "+serial+"\n", 0o644)
		writeFile(t, filepath.Join(lineage, "privkey.pem"), "key "+serial+"\n", 0o600)
		if out, err := run(env); err != nil {
			t.Fatalf("%s: %v\n%s", serial, err, out)
		}
		for name, mode := range map[string]fs.FileMode{"fullchain.pem": 0o644, "privkey.pem": 0o640, ".": 0o750 | fs.ModeDir} {
			p := filepath.Join(tlsDir, name)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != mode {
				t.Errorf("%s: %s: mode %v, want %v", serial, p, fi.Mode(), mode)
			}
			if gid := fi.Sys().(*syscall.Stat_t).Gid; int(gid) != os.Getgid() {
				t.Errorf("%s: %s: group %d, want SESAME_GROUP %d", serial, p, gid, os.Getgid())
			}
		}
		for name, want := range map[string]string{"fullchain.pem": "chain " + serial, "privkey.pem": "key " + serial} {
			if got, _ := os.ReadFile(filepath.Join(tlsDir, name)); strings.TrimSpace(string(got)) != want {
				t.Errorf("%s: %s holds %q, want %q", serial, name, got, want)
			}
		}
		if got, _ := os.ReadFile(reloaded); strings.Count(string(got), "reload") != i+1 {
			t.Errorf("%s: SESAME_RELOAD ran %d times, want %d", serial, strings.Count(string(got), "reload"), i+1)
		}
		if left, _ := filepath.Glob(filepath.Join(tlsDir, ".*.new")); len(left) > 0 {
			t.Errorf("%s: temporary files left behind: %v", serial, left)
		}
	}
}

// --- booting the unit under a real systemd ---------------------------------

// The probe runs in the container after sesame.service has started (for
// Type=notify: after READY=1, or after it failed), writes key=value results
// and the journal to /results, and powers the container off.
const probe = `#!/bin/sh
exec >/results/probe.log 2>&1
set -x
trap 'journalctl -u sesame.service --no-pager -o short-monotonic >/results/journal.txt; systemctl poweroff' EXIT
r=/results/result
show() { systemctl show sesame.service -p "$1" --value; }
as_sesame() { setpriv --reuid=sesame --regid=sesame --init-groups "$@"; }
echo "state=$(show ActiveState)/$(show SubState)" >>$r
pid=$(show MainPID)
echo "user=$(stat -c %U /proc/$pid)" >>$r
echo "capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/$pid/status)" >>$r
echo "seccomp=$(sed -n 's/^Seccomp:[[:space:]]*//p' /proc/$pid/status)" >>$r
echo "nonewprivs=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/$pid/status)" >>$r
as_sesame /opt/sesame/sesame healthcheck; echo "healthcheck=$?" >>$r
as_sesame /opt/sesame/sesame user create probe --json; echo "usercreate=$?" >>$r
echo "datadir=$(stat -c '%U %a' /var/lib/sesame)" >>$r
echo "db=$(stat -c '%U %a' /var/lib/sesame/sesame.db)" >>$r
sleep 5
echo "watchdog=$(show WatchdogTimestampMonotonic)" >>$r
systemctl reload sesame.service; echo "reload=$?" >>$r
sleep 1
echo "after_reload=$(show ActiveState) pid=$(show MainPID) restarts=$(show NRestarts)" >>$r
echo "pid_before=$pid" >>$r
systemctl stop sesame.service
echo "stopped=$(show Result) status=$(show ExecMainStatus)" >>$r
echo "done=1" >>$r
`

// TestSystemdBoot boots this machine's systemd in a throw-away container
// (systemd-nspawn: the host's /usr, an empty volatile root, no network but
// loopback) with the unit, the sysusers file and the example configuration
// installed, and checks that the service starts (READY=1) as user sesame
// with nothing but CAP_NET_BIND_SERVICE under its seccomp filter, answers
// its health check, pings the watchdog, survives a reload, and stops
// cleanly; and that the admin commands work as user sesame.
func TestSystemdBoot(t *testing.T) {
	if !e2e() {
		t.Skip("boots a container; runs with SESAME_E2E=1")
	}
	if os.Geteuid() != 0 {
		t.Skip("systemd-nspawn needs root")
	}
	nspawn := need(t, "systemd-nspawn", "systemd-container")
	need(t, "setpriv", "util-linux")
	bin, _ := sesameBinary(t)

	dir := t.TempDir()
	mkdir := func(p string) string {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	binDir := mkdir(filepath.Join(dir, "bin"))
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(binDir, "sesame"), string(data), 0o755)
	unitText, err := os.ReadFile(filepath.Join(root, "packaging", "sesame.service"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sesame.service"),
		strings.Replace(string(unitText), "ExecStart=/usr/local/bin/sesame ", "ExecStart=/opt/sesame/sesame ", 1), 0o644)
	// A short watchdog, so that a few seconds show whether pings arrive.
	writeFile(t, filepath.Join(mkdir(filepath.Join(dir, "sesame.service.d")), "watchdog.conf"), "[Service]\nWatchdogSec=2s\n", 0o644)
	writeFile(t, filepath.Join(dir, "probe.service"), `[Unit]
After=sesame.service
[Service]
Type=oneshot
ExecStart=/bin/sh /opt/probe.sh
`, 0o644)
	writeFile(t, filepath.Join(dir, "probe.sh"), probe, 0o755)
	etc := mkdir(filepath.Join(dir, "etc-sesame"))
	cfg, err := os.ReadFile(filepath.Join(root, "packaging", "sesame.toml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(etc, "sesame.toml"), string(cfg), 0o644)
	certPEM, keyPEM := selfSigned(t, "relay.example.com")
	writeFile(t, filepath.Join(mkdir(filepath.Join(etc, "tls")), "fullchain.pem"), certPEM, 0o644)
	writeFile(t, filepath.Join(etc, "tls", "privkey.pem"), keyPEM, 0o644) // sesame's gid is made at boot
	writeFile(t, filepath.Join(dir, "resolv.conf"), "nameserver 127.0.0.1\n", 0o644)
	results := mkdir(filepath.Join(dir, "results"))

	args := []string{
		"--directory=/", "--volatile=yes", "--private-network", "--register=no", "--keep-unit",
		"--console=passive", fmt.Sprintf("--machine=sesame-test-%d", os.Getpid()),
		"--bind-ro=" + binDir + ":/opt/sesame",
		"--bind-ro=" + filepath.Join(dir, "probe.sh") + ":/opt/probe.sh",
		"--bind-ro=" + filepath.Join(dir, "sesame.service") + ":/etc/systemd/system/sesame.service",
		"--bind-ro=" + filepath.Join(dir, "sesame.service.d") + ":/etc/systemd/system/sesame.service.d",
		"--bind-ro=" + filepath.Join(dir, "probe.service") + ":/etc/systemd/system/probe.service",
		"--bind-ro=" + filepath.Join(root, "packaging", "sesame.sysusers") + ":/etc/sysusers.d/sesame.conf",
		"--bind-ro=" + etc + ":/etc/sesame",
		"--bind-ro=" + filepath.Join(dir, "resolv.conf") + ":/etc/resolv.conf",
		// No network to wait for: network-online.target would wait 2 minutes.
		"--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service",
		"--bind=" + results + ":/results",
		"--boot", "systemd.firstboot=off", "systemd.show_status=false",
		"systemd.wants=sesame.service", "systemd.wants=probe.service",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nspawn, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // nspawn halts the container
	cmd.WaitDelay = 20 * time.Second
	out, err := cmd.CombinedOutput()
	probeLog, _ := os.ReadFile(filepath.Join(results, "probe.log"))
	journal, _ := os.ReadFile(filepath.Join(results, "journal.txt"))
	resultText, _ := os.ReadFile(filepath.Join(results, "result"))
	defer func() {
		if t.Failed() {
			t.Logf("systemd-nspawn %s: %v\n%s\n--- probe:\n%s\n--- journal of sesame.service:\n%s", strings.Join(args, " "), err, out, probeLog, journal)
		}
	}()
	if err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	res := map[string]string{}
	for _, line := range strings.Split(string(resultText), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			res[k] = v
		}
	}
	const capNetBindService = "0000000000000400" // bit 10
	for _, kv := range [][2]string{
		{"state", "active/running"},
		{"user", "sesame"},
		{"capeff", capNetBindService},
		{"seccomp", "2"}, // filter mode
		{"nonewprivs", "1"},
		{"healthcheck", "0"},
		{"usercreate", "0"},
		{"datadir", "sesame 700"},
		{"db", "sesame 600"},
		{"reload", "0"},
		{"stopped", "success status=0"},
		{"done", "1"},
	} {
		if k, want := kv[0], kv[1]; res[k] != want {
			t.Errorf("%s = %q, want %q", k, res[k], want)
		}
	}
	if w := res["watchdog"]; w == "" || w == "0" {
		t.Errorf("no watchdog ping recorded (WatchdogTimestampMonotonic = %q)", w)
	}
	if want := "active pid=" + res["pid_before"] + " restarts=0"; res["after_reload"] != want {
		t.Errorf("after systemctl reload: %q, want %q (same process, no restart)", res["after_reload"], want)
	}
	if !bytes.Contains(journal, []byte("reloading (SIGHUP)")) {
		t.Error("the journal does not show the reload reaching sesame")
	}
}

// --- helpers ---------------------------------------------------------------

func writeFile(t *testing.T, path, text string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not narrowed by the umask
		t.Fatal(err)
	}
}

// freePort returns a loopback address with a port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func selfSigned(t *testing.T, host string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}
