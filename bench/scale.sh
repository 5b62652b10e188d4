#!/usr/bin/env bash
# The scale scenario of the performance issue: Sesame with RECIPIENTS
# recipients queued and waiting (deferred for two hours, as after a
# destination's 451). It measures submission throughput on an empty queue,
# then fills the store (sesame-bench fill, with Sesame stopped), and
# reports: the time from start to ready with the big queue, resident memory
# and CPU while it waits, submission throughput with it, and a second
# restart. Everything stays on loopback.
#
#   bench/scale.sh [RECIPIENTS]     (default 1000000; about 2 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-1000000}
conns=20
per=500

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/sesame" ./cmd/sesame
go build -o "$work/sesame-bench" ./cmd/sesame-bench
cat > "$work/sesame.toml" <<TOML
hostname = "sesame.test"
data_dir = "$work/data"
log_level = "warn"
[submission]
starttls_listen = ["127.0.0.1:25587"]
tls_listen = ["127.0.0.1:25465"]
[relay]
dns_servers = ["127.0.0.1:25353"]
smarthost = "127.0.0.2:25525"
[http]
listen = "127.0.0.1:28025"
[api]
listen = ""
[policy]
sandbox_new_users = false
daily_quota = 100000000
max_send_rate = 100000
TOML
"$work/sesame" domain add example.com --config "$work/sesame.toml" --json >"$work/domain.json"
"$work/sesame-bench" dns --listen 127.0.0.1:25353 --mx 127.0.0.2 --records "$work/domain.json" 2>/dev/null &
sleep 0.3
"$work/sesame" domain verify example.com --config "$work/sesame.toml" >/dev/null
creds=$("$work/sesame" user create bench --config "$work/sesame.toml" --json)
user=$(sed -E 's/.*"username":"([^"]+)".*/\1/' <<<"$creds")
pass=$(sed -E 's/.*"password":"([^"]+)".*/\1/' <<<"$creds")
"$work/sesame-bench" sink --listen 127.0.0.2:25525 --expect 100000000 --timeout 7200s >/dev/null 2>&1 &

pid=
ready=
serve() { # starts serve; $ready is the seconds until /readyz answered 200
	local t0
	t0=$(date +%s.%N)
	"$work/sesame" serve --config "$work/sesame.toml" >/dev/null 2>>"$work/serve.log" &
	pid=$!
	until curl -fs http://127.0.0.1:28025/readyz >/dev/null 2>&1; do sleep 0.05; done
	ready=$(echo "$(date +%s.%N) - $t0" | bc)
}
stop() { kill -TERM "$pid"; wait "$pid" || true; }
send() {
	"$work/sesame-bench" send --addr 127.0.0.1:25587 --tls starttls --auth plain --json-only \
		--user "$user" --password "$pass" --connections "$conns" --messages "$per" --size 10240 \
		--from shop@example.com --to-domain example.net
}

serve
echo "== empty queue: ready in $ready s"
echo "submission: $(send)"
stop
echo "== filling the store with $total recipients (deferred 2 h)"
"$work/sesame-bench" fill --db "$work/data/sesame.db" --count "$total" --defer 2h
du -sh "$work/data" | sed 's/^/store size: /'
serve
echo "== restart with the big queue: ready in $ready s"
sleep 10
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks)
sleep 60
t1=$(ticks)
echo "resident memory while waiting: $(($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) MiB"
awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "CPU over 60 s idle: %.2f s (%.2f%% of one core)\n", d / hz, 100 * d / hz / 60 }'
echo "submission with the big queue: $(send)"
echo "resident memory after: $(($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) MiB"
stop
serve
echo "== second restart: ready in $ready s"
stop
