#!/usr/bin/env bash
# Measures Sesame holding a large queue behind warm-up caps: RECIPIENTS
# messages are submitted for an IP on warm-up day 1 (240 a day, 10 an hour),
# so all but a few wait in the queue. It reports the server's resident
# memory and its CPU use over a minute of waiting, and, with WAIT_WINDOW=1,
# waits for the next UTC hour and reports how long after the window opened
# the first waiting message was delivered. Everything stays on loopback.
#
#   bench/warmup.sh [RECIPIENTS]          (default 100000)
#   WAIT_WINDOW=1 bench/warmup.sh 100000
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-100000}
conns=20
per=$(((total + conns - 1) / conns))
total=$((per * conns))

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/sesame" ./cmd/sesame
go build -o "$work/sesame-bench" ./cmd/sesame-bench

today=$(date -u +%F)
cat > "$work/sesame.toml" <<TOML
hostname = "sesame.test"
data_dir = "$work/data"
log_level = "info"
[submission]
starttls_listen = ["127.0.0.1:25587"]
tls_listen = ["127.0.0.1:25465"]
[relay]
dns_servers = ["127.0.0.1:25353"]
mx_port = 25525
allow_private_destinations = true
[http]
listen = "127.0.0.1:28025"
[api]
listen = ""
[policy]
sandbox_new_users = false
daily_quota = 100000000
max_send_rate = 100000
[warmup]
schedule = [240]
spread_hours = 24

[[ip]]
address = "127.0.0.1"
warmup_start = "$today"
TOML

"$work/sesame" domain add example.com --config "$work/sesame.toml" --json >"$work/domain.json"
"$work/sesame-bench" dns --listen 127.0.0.1:25353 --mx 127.0.0.2 --records "$work/domain.json" 2>"$work/dns.log" &
sleep 0.3
"$work/sesame" domain verify example.com --config "$work/sesame.toml" >/dev/null
creds=$("$work/sesame" user create bench --config "$work/sesame.toml" --json)
user=$(sed -E 's/.*"username":"([^"]+)".*/\1/' <<<"$creds")
pass=$(sed -E 's/.*"password":"([^"]+)".*/\1/' <<<"$creds")

"$work/sesame-bench" sink --listen 127.0.0.2:25525 --expect "$total" --timeout 7200s \
	>"$work/sink.json" 2>"$work/sink.log" &
"$work/sesame" serve --config "$work/sesame.toml" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do
	curl -fs http://127.0.0.1:28025/healthz >/dev/null && break
	sleep 0.1
done

echo "== submitting $total messages ($conns connections x $per)"
"$work/sesame-bench" send --addr 127.0.0.1:25587 --tls starttls --auth plain --json-only \
	--user "$user" --password "$pass" --connections "$conns" --messages "$per" --size 10240 \
	--from shop@example.com --to-domain example.net

waiting() {
	"$work/sesame" ip list --config "$work/sesame.toml" --json |
		sed -E 's/.*"default\/other":([0-9]+).*/\1/;t;s/.*/0/'
}
echo "== waiting for every recipient to be parked"
start=$(date +%s)
while :; do
	n=$(waiting)
	sent=$(curl -fs http://127.0.0.1:28025/metrics | awk '/^sesame_ip_sent_messages.*window="day"/ {print $2}')
	if ((n + ${sent:-0} >= total)); then break; fi
	sleep 1
done
echo "parked $n recipients, $sent sent, in $(($(date +%s) - start)) s after the last submission"

rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
sleep 5
t0=$(ticks)
sleep 60
t1=$(ticks)
hz=$(getconf CLK_TCK)
echo "== while $n recipients wait"
echo "resident memory: $(($(rss) / 1024)) MiB"
awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "CPU over 60 s: %.2f s (%.3f%% of one core)\n", d / hz, 100 * d / hz / 60 }'

if [[ ${WAIT_WINDOW:-0} == 1 ]]; then
	next=$(date -u -d "$(date -u +%FT%H:00:00Z) + 1 hour" +%s)
	echo "== waiting for the next window ($(date -u -d "@$next" +%T) UTC)"
	sleep $((next - $(date +%s) + 5))
	first=$(awk -v w="$(date -u -d "@$next" +%FT%T)" '/msg="relay: delivery"/ && /state=delivered/ {
		sub(/^time=/, "", $1); if ($1 >= w) { print $1; exit } }' "$work/serve.log")
	echo "window opened at $(date -u -d "@$next" +%FT%TZ); first delivery at $first"
	python3 -c "import datetime as d; a=d.datetime.fromisoformat('$first'.replace('Z','+00:00')); b=d.datetime.fromtimestamp($next, d.timezone.utc); print(f'first delivery {(a-b).total_seconds()*1000:.0f} ms after the window opened')"
	grep 'released mail' "$work/serve.log" | tail -2
fi
