#!/usr/bin/env bash
# Installs what the end-to-end tests in test/ drive: swaks, msmtp, curl,
# php-cli with PHPMailer, Python 3 with python3-dkim (the independent DKIM
# verifier), Node.js with nodemailer and the AWS SDK for JavaScript's SES v2
# client, and the pebble ACME test CA. Debian/Ubuntu only. Idempotent:
# runs apt-get only when something is missing, and `npm ci` only when
# nodemailer or @aws-sdk/client-sesv2 is not installed yet.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_dir="$root/test/clients/node"

if [[ $(id -u) -eq 0 ]]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo)
else
	as_root=()
fi

# have_pkg PACKAGE: installed according to dpkg.
have_pkg() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for cmd in swaks msmtp curl php; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
# swaks only Recommends the library it needs for STARTTLS/TLS.
have_pkg libnet-ssleay-perl || missing+=(libnet-ssleay-perl)
have_pkg ca-certificates || missing+=(ca-certificates)
# The tests run /usr/bin/python3, not a pyenv/venv python earlier in PATH.
/usr/bin/python3 -c 'import dkim' >/dev/null 2>&1 || missing+=(python3 python3-dkim)
[[ -f /usr/share/php/libphp-phpmailer/autoload.php ]] || missing+=(libphp-phpmailer)
# packaging/packaging_test.go: systemd-analyze and systemd-sysusers check the unit,
# systemd-nspawn boots it under a real systemd (util-linux's setpriv is always present).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
# test/fsync_test.go traces the fsync before the 250 with strace.
command -v strace >/dev/null 2>&1 || missing+=(strace)
# acmecert's tests and test/acme_test.go get certificates from Let's Encrypt's
# pebble test CA (Debian's package, 2.4.0), run on loopback by the tests.
command -v pebble >/dev/null 2>&1 || missing+=(pebble)

packages=(swaks libnet-ssleay-perl msmtp curl ca-certificates python3 python3-dkim php-cli libphp-phpmailer systemd systemd-container strace pebble)
# Some machines carry Node.js from elsewhere (its own npm included); Debian's
# npm package would conflict with that, so install Node only when absent.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	missing+=(nodejs/npm)
	packages+=(nodejs npm)
fi

if ((${#missing[@]} > 0)); then
	if [[ $(id -u) -ne 0 && ${#as_root[@]} -eq 0 ]]; then
		echo "install-test-deps: missing ${missing[*]}; run this script as root (or install sudo)" >&2
		exit 1
	fi
	echo "install-test-deps: missing ${missing[*]}; installing with apt-get" >&2
	"${as_root[@]}" apt-get update
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
fi

if [[ ! -d "$node_dir/node_modules/nodemailer" || ! -d "$node_dir/node_modules/@aws-sdk/client-sesv2" ]]; then
	echo "install-test-deps: installing nodemailer and @aws-sdk/client-sesv2 in $node_dir" >&2
	(cd "$node_dir" && npm ci --no-audit --no-fund)
fi

# Fail here, not halfway through the tests, if something is still missing.
fail() {
	echo "install-test-deps: $*" >&2
	exit 1
}
for cmd in swaks msmtp curl php node systemd-analyze systemd-sysusers systemd-nspawn strace pebble; do
	command -v "$cmd" >/dev/null || fail "$cmd is still missing"
done
/usr/bin/python3 -c 'import dkim' || fail "/usr/bin/python3 cannot import dkim"
swaks --support 2>/dev/null | grep -q 'TLS supported' || fail "swaks has no TLS support"
echo "install-test-deps: all end-to-end test tools are installed" >&2
