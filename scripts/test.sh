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
echo "== fuzzing (a few seconds per target; found inputs go to testdata/fuzz)"
for target in config:FuzzParse smtpd:FuzzParseHeader smtpd:FuzzNormalizeAddress dkim:FuzzHeaderKeys \
	identity:FuzzSPF identity:FuzzTXT identity:FuzzAddress smtpd:FuzzSession verp:FuzzParse report:FuzzParse; do
	# -fuzzminimizetime bounds the shrinking of each new input, which
	# otherwise eats most of the 4 s of a slow target (a whole SMTP session).
	if ! out=$(go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime 4s -fuzzminimizetime 100x "./${target%%:*}" 2>&1); then
		echo "$out"
		echo "fuzzing $target found a failure; its input is saved under ${target%%:*}/testdata/fuzz" >&2
		exit 1
	fi
done
echo "== benchmarks (one short run each, to prove they work)"
go test -run '^$' -bench . -benchtime 3x ./... >/dev/null
echo "all tests passed"
