#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with Go: installs the
# real clients the end-to-end tests drive (swaks, msmtp, curl, python3-dkim,
# php-cli with PHPMailer, node with nodemailer), then vet, staticcheck, and
# every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== go vet"
go vet ./...
echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
echo "== go test -race"
SESAME_E2E=1 go test -race -count=1 -timeout 15m ./...
echo "== the packages on testkit's clock, a year on and a year back"
# A test that mixes testkit's clock with the wall clock (test data at the
# clock's time, a component reading time.Now) passes until the calendar
# catches up with it. SESAME_TEST_CLOCK_SHIFT moves every test clock, so it
# fails now: a year back, test data looks expired to the wall clock; a year
# on, it is not due yet. No -race here: the run above had it.
clocked=$(grep -rlE --include='*_test.go' 'testkit\.(NewClock|Start|Day)\(' . | xargs -n1 dirname | sort -u)
for shift in -8760h 8760h; do
	SESAME_TEST_CLOCK_SHIFT=$shift go test -count=1 -timeout 10m $clocked
done
echo "== fuzzing (a few seconds per target; found inputs go to testdata/fuzz)"
# Each target runs for a fixed number of executions (about 3 s on the
# reference machine), not a fixed time: with a time budget, Go 1.26's fuzzing
# coordinator can fail a target with a bare "context deadline exceeded" when
# the time runs out mid-execution (go.dev/issue/75804, fixed in Go 1.27).
for target in config:FuzzParse:50000 smtpd:FuzzParseHeader:10000 smtpd:FuzzNormalizeAddress:15000 \
	dkim:FuzzHeaderKeys:20000 identity:FuzzSPF:10000 identity:FuzzTXT:15000 identity:FuzzAddress:8000 \
	smtpd:FuzzSession:1200 verp:FuzzParse:150000 report:FuzzParse:100000; do
	IFS=: read -r pkg name execs <<<"$target"
	# -fuzzminimizetime bounds the shrinking of each new input, which
	# otherwise eats most of the budget of a slow target (a whole SMTP session).
	if ! out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "${execs}x" -fuzzminimizetime 100x "./$pkg" 2>&1); then
		echo "$out"
		echo "fuzzing $pkg $name found a failure; its input is saved under $pkg/testdata/fuzz" >&2
		exit 1
	fi
done
echo "== benchmarks (one short run each, to prove they work)"
go test -run '^$' -bench . -benchtime 3x ./... >/dev/null
echo "all tests passed"
