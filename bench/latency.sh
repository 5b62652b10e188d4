#!/usr/bin/env bash
# Delivery at internet latency (issue 16): Sesame delivering through its MX
# path to many domains whose servers answer a round trip away, the way the
# internet is, next to the same run with the servers on plain loopback.
#
#   20 clients submit 3,000 messages of 10 KiB (STARTTLS + AUTH PLAIN,
#   RSA-2048 signing, durable queue) to 1,000 recipient domains
#   (d0.example.net ... d999.example.net, `sesame-bench send --domains`),
#   each with its own MX host name; the MX hosts are on 100 loopback
#   addresses, ten domains each, as on shared hosting (`sesame-bench dns
#   --mx-count`); the receiving servers offer STARTTLS and hold every reply
#   for the latency on a delay line (`sesame-bench sink --latency --addrs`).
#
#   bench/latency.sh                       latencies 0 (loopback) and 100ms
#   LATENCIES="0 100ms 300ms" bench/latency.sh
#   CONNECTIONS=20 MESSAGES=150 DOMAINS=1000 ADDRS=100 bench/latency.sh
#   RELAY_EXTRA='workers = 32' bench/latency.sh   (lines added to [relay])
#   OUT=DIR bench/latency.sh               keep every run's files in DIR
#   PROFILE=1 bench/latency.sh             a 10 s CPU profile of the server in each run
#                                          (DIR/LATENCY-cpu.pprof, its top entries printed)
#
# For each latency it prints, from one fresh server each:
#   end-to-end msg/s   messages / (last delivery - first submission)
#   accepted msg/s     sesame-bench send's submission rate
#   peak conns         most sessions open at once at the receivers (all
#                      addresses), and at one address
#   CPU ms/msg         the server's CPU (user + system, /proc/PID/stat) per message
#   RSS MiB            the server's peak resident memory (VmHWM)
# and the load average at the start of each run (`uptime`): figures taken on
# a busy machine are not comparable with figures taken on an idle one.
# The exit status is 1 if a run lost messages or failed.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a latencies <<<"${LATENCIES:-0 100ms}"
conns=${CONNECTIONS:-20}
per=${MESSAGES:-150}
domains=${DOMAINS:-1000}
addrs=${ADDRS:-100}
size=${SIZE:-10240}
total=$((conns * per))
first_mx=127.0.0.101

work=$(mktemp -d)
out=${OUT:-$work/out}
mkdir -p "$out"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work/data"
	[[ -n ${OUT:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/sesame" ./cmd/sesame
go build -o "$work/sesame-bench" ./cmd/sesame-bench

# run_one LATENCY: one fresh server, store and sink; writes $out/LATENCY.json.
run_one() {
	local lat=$1 tag=$1 pid sink t0 status=0
	rm -rf "$work/data"
	cat >"$work/sesame.toml" <<TOML
hostname = "sesame.test"
data_dir = "$work/data"
log_level = "warn"
[submission]
starttls_listen = ["127.0.0.1:25587"]
tls_listen = ["127.0.0.1:25465"]
[relay]
dns_servers = ["127.0.0.1:25353"]
mx_port = 25525
allow_private_destinations = true
${RELAY_EXTRA:-}
[http]
listen = "127.0.0.1:28025"
pprof = $([[ ${PROFILE:-0} == 1 ]] && echo true || echo false)
[policy]
sandbox_new_users = false
daily_quota = 100000000
max_send_rate = 100000
TOML
	"$work/sesame" domain add example.com --config "$work/sesame.toml" --json >"$work/domain.json"
	"$work/sesame-bench" dns --listen 127.0.0.1:25353 --mx "$first_mx" --mx-count "$addrs" \
		--records "$work/domain.json" 2>"$out/$tag-dns.log" &
	pids+=($!)
	local dns=$!
	sleep 0.3
	"$work/sesame" domain verify example.com --config "$work/sesame.toml" >/dev/null
	local creds user pass
	creds=$("$work/sesame" user create bench --config "$work/sesame.toml" --json)
	user=$(sed -E 's/.*"username":"([^"]+)".*/\1/' <<<"$creds")
	pass=$(sed -E 's/.*"password":"([^"]+)".*/\1/' <<<"$creds")

	"$work/sesame-bench" sink --listen "$first_mx:25525" --addrs "$addrs" --latency "$lat" --self-signed \
		--expect "$total" --timeout 900s >"$out/$tag-sink.json" 2>"$out/$tag-sink.log" &
	sink=$!
	pids+=("$sink")
	"$work/sesame" serve --config "$work/sesame.toml" 2>"$out/$tag-serve.log" &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		curl -fs http://127.0.0.1:28025/healthz >/dev/null && break
		sleep 0.1
	done
	uptime >"$out/$tag-uptime.txt"
	local profiler=
	if [[ ${PROFILE:-0} == 1 ]]; then
		(sleep 1 && curl -fs "http://127.0.0.1:28025/debug/pprof/profile?seconds=10" >"$out/$tag-cpu.pprof") &
		profiler=$!
	fi
	t0=$(date +%s.%N)
	"$work/sesame-bench" send --addr 127.0.0.1:25587 --tls starttls --auth plain --json-only \
		--user "$user" --password "$pass" --connections "$conns" --messages "$per" --size "$size" \
		--from shop@example.com --to-domain example.net --domains "$domains" >"$out/$tag-send.json"
	wait "$sink" || status=$?
	if [[ -n $profiler ]]; then
		wait "$profiler" || true
		echo "== latency $lat: CPU profile of sesame serve (10 s), top entries" >&2
		go tool pprof -top -nodecount=25 "$work/sesame" "$out/$tag-cpu.pprof" 2>/dev/null | sed -n '1,32p' >&2
	fi
	awk '{print $14 + $15}' "/proc/$pid/stat" >"$out/$tag-cpu-ticks.txt"
	awk '/VmHWM/ {print $2}' "/proc/$pid/status" >"$out/$tag-rss-kib.txt"
	echo "$t0" >"$out/$tag-start.txt"
	kill -TERM "$pid" "$dns" 2>/dev/null || true
	wait "$pid" "$dns" 2>/dev/null || true
	if ((status != 0)); then
		echo "bench/latency.sh: latency $lat: the sink exited $status; the end of its log:" >&2
		tail -n 5 "$out/$tag-sink.log" >&2
	fi
	return "$status"
}

failed=0
for lat in "${latencies[@]}"; do
	echo "== latency $lat: $conns clients x $per messages of $size bytes to $domains domains on $addrs addresses" >&2
	run_one "$lat" || failed=1
done

python3 - "$out" "$total" "$(getconf CLK_TCK)" "${latencies[@]}" <<'PY'
import json, sys
out, total, hz, lats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def read(name):
    with open("%s/%s" % (out, name)) as f:
        return f.read().strip()
print("| latency | end-to-end msg/s | accepted msg/s | delivered | peak conns (one address) | CPU ms/msg | RSS MiB | load (1, 5, 15 min) |")
print("|---|---|---|---|---|---|---|---|")
for lat in lats:
    try:
        sink = json.loads(read(lat + "-sink.json").splitlines()[-1])
        send = json.loads(read(lat + "-send.json").splitlines()[-1])
        t0 = float(read(lat + "-start.txt"))
        ticks = float(read(lat + "-cpu-ticks.txt"))
        rss = float(read(lat + "-rss-kib.txt")) / 1024
        load = read(lat + "-uptime.txt").split("load average:")[1].strip()
    except (OSError, ValueError, IndexError) as e:
        print("| %s | failed: %s | | | | | | |" % (lat, e))
        continue
    got = sink["received"]
    e2e = got / (sink["last_unix"] - t0) if sink["last_unix"] > t0 else 0
    print("| %s | %.1f | %.1f | %d of %d | %d (%d) | %.2f | %.0f | %s |" % (
        lat, e2e, send["msgs_per_sec"], got, total, sink["peak_sessions"], sink["peak_sessions_per_addr"],
        1000 * ticks / hz / max(got, 1), rss, load))
PY
echo "files in $out" >&2
exit "$failed"
