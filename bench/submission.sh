#!/usr/bin/env bash
# Measures submission throughput on this machine: Sesame with a fresh store
# relaying to a counting sink on 127.0.0.2, driven by sesame-bench send.
# Everything stays on loopback.
#
#   bench/submission.sh [CONNECTIONS] [MESSAGES_PER_CONNECTION] [SIZE]
#   ROUTE=mx bench/submission.sh ...
#   PROFILE=true bench/submission.sh ...   (adds the server's CPU and allocation profiles)
#   NEW_CONNECTION=1 bench/submission.sh ...  (TLS handshake + AUTH for every message, as WordPress)
#   DKIM_VERIFY=1 bench/submission.sh ...  (the sink verifies every DKIM signature, ~0.1 ms a message)
#   SERVE_LOG=FILE bench/submission.sh ...  (keeps the server's log)
#
# Defaults are the submission issue's scenario: 20 clients x 1,000 messages
# of 10 KiB over STARTTLS + AUTH PLAIN, RSA-2048 signing, durable queue.
# With ROUTE=mx, Sesame delivers through its MX path instead of a smarthost:
# `sesame-bench dns` answers every domain's MX with the sink's address.
# The output ends with two JSON lines, sesame-bench send's and the sink's
# (bench/run.sh reads them). The exit status is the sink's: 1 if not every
# message arrived in time or, with DKIM_VERIFY=1, if a signature failed.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-20}
per=${2:-1000}
size=${3:-10240}

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/sesame" ./cmd/sesame
go build -o "$work/sesame-bench" ./cmd/sesame-bench

# sesame-bench dns answers MX lookups (ROUTE=mx) and serves the domain's
# DKIM record, so "sesame domain verify" passes as it would in production.
if [[ ${ROUTE:-smarthost} == mx ]]; then
	relay='mx_port = 25525
allow_private_destinations = true'
else
	relay='smarthost = "127.0.0.2:25525"'
fi
cat > "$work/sesame.toml" <<TOML
hostname = "sesame.test"
data_dir = "$work/data"
log_level = "warn"
[submission]
starttls_listen = ["127.0.0.1:25587"]
tls_listen = ["127.0.0.1:25465"]
[relay]
dns_servers = ["127.0.0.1:25353"]
$relay
[http]
listen = "127.0.0.1:28025"
pprof = ${PROFILE:-false}
[api]
listen = ""
[policy]
sandbox_new_users = false
daily_quota = 100000000
max_send_rate = 100000
TOML

"$work/sesame" domain add example.com --config "$work/sesame.toml" --json >"$work/domain.json"
"$work/sesame-bench" dns --listen 127.0.0.1:25353 --mx 127.0.0.2 --records "$work/domain.json" 2>"$work/dns.log" &
sleep 0.3
"$work/sesame" domain verify example.com --config "$work/sesame.toml" >/dev/null
creds=$("$work/sesame" user create bench --config "$work/sesame.toml" --json)
user=$(sed -E 's/.*"username":"([^"]+)".*/\1/' <<<"$creds")
pass=$(sed -E 's/.*"password":"([^"]+)".*/\1/' <<<"$creds")

total=$((conns * per))
sink_dkim=()
if [[ ${DKIM_VERIFY:-0} == 1 ]]; then
	sink_dkim=(--dkim-records "$work/domain.json")
fi
"$work/sesame-bench" sink --listen 127.0.0.2:25525 --expect "$total" --timeout 600s "${sink_dkim[@]}" \
	>"$work/sink.json" 2>"$work/sink.log" &
sink=$!
"$work/sesame" serve --config "$work/sesame.toml" 2>"${SERVE_LOG:-$work/serve.log}" &
for _ in $(seq 100); do
	curl -fs http://127.0.0.1:28025/healthz >/dev/null && break
	sleep 0.1
done

if [[ ${PROFILE:-false} == true ]]; then
	# A CPU profile of the server over 15 s of the run (started after the
	# sessions are up), printed at the end.
	(sleep 2 && curl -fs "http://127.0.0.1:28025/debug/pprof/profile?seconds=15" >"$work/cpu.pprof") &
	profiler=$!
fi
echo "== submission: $conns connections x $per messages of $size bytes"
"$work/sesame-bench" send --addr 127.0.0.1:25587 --tls starttls --auth plain \
	--user "$user" --password "$pass" --connections "$conns" --messages "$per" --size "$size" \
	--from shop@example.com --to-domain example.net ${NEW_CONNECTION:+--new-connection}
echo "== delivery to the sink (end to end)"
sink_status=0
wait "$sink" || sink_status=$?
cat "$work/sink.json"
if ((sink_status != 0)); then
	echo "== the sink exited $sink_status; the end of its log:" >&2
	tail -n 20 "$work/sink.log" >&2
fi
if [[ ${PROFILE:-false} == true ]]; then
	wait "$profiler" || true
	echo "== CPU profile of sesame serve (15 s under load), top entries"
	go tool pprof -top -nodecount=25 "$work/sesame" "$work/cpu.pprof" 2>/dev/null | sed -n '1,35p'
	cp "$work/cpu.pprof" "${PROFILE_OUT:-/tmp/sesame-cpu.pprof}"
	# Allocations since the start (the whole run), by bytes allocated.
	if curl -fs "http://127.0.0.1:28025/debug/pprof/allocs" >"$work/allocs.pprof"; then
		echo "== allocation profile of sesame serve (the whole run), top entries by bytes"
		go tool pprof -sample_index=alloc_space -top -nodecount=15 "$work/sesame" "$work/allocs.pprof" 2>/dev/null | sed -n '1,25p'
		cp "$work/allocs.pprof" "${PROFILE_OUT:-/tmp/sesame-cpu.pprof}.allocs"
	fi
fi
exit "$sink_status"
