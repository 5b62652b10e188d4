#!/usr/bin/env bash
# The performance issue's standard measurement, in one command. It runs the
# two standard scenarios RUNS times each, alternating them so drift on the
# machine spreads over both, and prints a table per run and a summary: the
# median, min and max of each figure.
#
#   persistent      bench/submission.sh 50 300: 50 persistent connections,
#                   10 KiB, 1 recipient, RSA-2048, STARTTLS + AUTH PLAIN
#   new-connection  NEW_CONNECTION=1 bench/submission.sh 50 100: the same,
#                   with a new TCP + TLS + AUTH session for every message
#
#   bench/run.sh                    3 runs of each (about 5 minutes)
#   RUNS=5 bench/run.sh
#   PERSISTENT="20 50" NEW_CONNECTION_LOAD="20 20" RUNS=1 bench/run.sh   (a quick try)
#   DKIM_VERIFY=1 bench/run.sh      the sink verifies every DKIM signature too
#   OUT=DIR bench/run.sh            keep every run's output in DIR
#   bench/run.sh --summarize DIR    only print the tables for the outputs in DIR
#
# It ends with the machine's speed, before and after: the time of one
# RSA-2048 signature, the largest part of Sesame's work per message.
#
# With DKIM_VERIFY=1 the sink verifies every message's DKIM signature (about
# 0.1 ms of CPU a message, taken from Sesame on this one box), so a run also
# proves the messages were signed right. The figures are read from the JSON lines that
# sesame-bench send and sink print. The exit status is 1 if any run failed,
# had a refused message, lost a message, or had a DKIM failure.
set -euo pipefail
cd "$(dirname "$0")/.."

summarize() {
	python3 - "$1" <<'PY'
import json, os, re, statistics, sys

out = sys.argv[1]
if not os.path.isdir(out):
    sys.exit("bench/run.sh: %s is not a directory" % out)
runs = {}  # scenario -> [(n, figures or None, problems)]
for name in sorted(os.listdir(out)):
    m = re.fullmatch(r"(.+)-(\d+)\.txt", name)
    if not m:
        continue
    scenario, n = m.group(1), int(m.group(2))
    send = sink = None
    with open(os.path.join(out, name), errors="replace") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if "scenario" in v and "accepted" in v:
                send = v
            elif "received" in v:
                sink = v
    problems = []
    if send is None or sink is None:
        problems.append("no %s JSON line" % ("send" if send is None else "sink"))
        runs.setdefault(scenario, []).append((n, None, problems))
        continue
    errors = sum(send.get("errors", {}).values())
    if errors:
        problems.append("%d refused (%s)" % (errors, " ".join("%s=%d" % kv for kv in sorted(send["errors"].items()))))
    if sink["received"] < send["accepted"]:
        problems.append("%d accepted, %d delivered" % (send["accepted"], sink["received"]))
    if sink.get("dkim_checked"):
        if sink.get("dkim_failed") or sink.get("dkim_unsigned"):
            problems.append("dkim failed=%d unsigned=%d" % (sink["dkim_failed"], sink["dkim_unsigned"]))
        dkim = "%d verified" % sink["dkim_verified"]
    else:
        dkim = "not checked"
    fig = {
        "accepted msg/s": send["msgs_per_sec"],
        "p99 ms": send["p99_ms"],
        "delivered msg/s": sink["msgs_per_sec"],
        "msgs/connection": sink["msgs_per_conn"],
        "load": "%d x %d" % (send["connections"], send["messages_per_connection"]),
        "dkim": dkim,
    }
    runs.setdefault(scenario, []).append((n, fig, problems))

if not runs:
    sys.exit("no run outputs (SCENARIO-N.txt) in " + out)

cols = ["accepted msg/s", "p99 ms", "delivered msg/s", "msgs/connection"]
order = {"persistent": 0, "new-connection": 1}
runs = dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], 2), kv[0])))

print("| scenario | run | load | " + " | ".join(cols) + " | dkim | problems |")
print("|---|---|---|" + "---|" * len(cols) + "---|---|")
for scenario, rs in runs.items():
    for n, fig, problems in sorted(rs, key=lambda r: r[0]):
        if fig is None:
            print("| %s | %d | - | %s | - | %s |" % (scenario, n, " | ".join("-" for _ in cols), "; ".join(problems)))
        else:
            print("| %s | %d | %s | %s | %s | %s |" % (scenario, n, fig["load"], " | ".join("%.1f" % fig[c] for c in cols),
                                                    fig["dkim"], "; ".join(problems) or "none"))

print()
print("summary: median (min-max) over the runs that produced figures")
print()
print("| scenario | runs | " + " | ".join(cols) + " | problems |")
print("|---|---|" + "---|" * len(cols) + "---|")
bad = False
for scenario, rs in runs.items():
    figs = [fig for _, fig, _ in rs if fig is not None]
    nproblems = sum(1 for _, _, p in rs if p)
    bad = bad or nproblems > 0
    cells = []
    for c in cols:
        vals = [f[c] for f in figs]
        cells.append("%.1f (%.1f-%.1f)" % (statistics.median(vals), min(vals), max(vals)) if vals else "-")
    print("| %s | %d | %s | %s |" % (scenario, len(rs), " | ".join(cells),
                                    "%d run(s) with problems" % nproblems if nproblems else "none"))
sys.exit(1 if bad else 0)
PY
}

if [[ ${1:-} == --summarize ]]; then
	summarize "${2:?usage: bench/run.sh --summarize DIR}"
	exit
fi

runs=${RUNS:-3}
read -r -a persistent <<<"${PERSISTENT:-50 300}"
read -r -a newconn <<<"${NEW_CONNECTION_LOAD:-50 100}"
out=${OUT:-$(mktemp -d /tmp/sesame-bench-run.XXXXXX)}
mkdir -p "$out"
export DKIM_VERIFY=${DKIM_VERIFY:-0}

# This machine's speed at the time, since a shared VM's can vary by a third
# within minutes: the time of one RSA-2048 DKIM signature (Go's, as
# Sesame signs), before and after the runs. Compare figures taken at
# different times only together with it.
machine_speed() {
	go test -run '^$' -bench 'SignRSA2048$' -benchtime 300x ./dkim 2>/dev/null |
		awk '/^BenchmarkSignRSA2048/ {printf "%.2f ms", $3 / 1e6}'
}
speed_before=$(machine_speed)

failed=0
for n in $(seq "$runs"); do
	echo "== run $n of $runs: persistent (bench/submission.sh ${persistent[*]})" >&2
	if ! env -u NEW_CONNECTION bench/submission.sh "${persistent[@]}" >"$out/persistent-$n.txt" 2>&1; then
		echo "   failed; see $out/persistent-$n.txt" >&2
		failed=1
	fi
	echo "== run $n of $runs: new-connection (NEW_CONNECTION=1 bench/submission.sh ${newconn[*]})" >&2
	if ! NEW_CONNECTION=1 bench/submission.sh "${newconn[@]}" >"$out/new-connection-$n.txt" 2>&1; then
		echo "   failed; see $out/new-connection-$n.txt" >&2
		failed=1
	fi
done
echo "== outputs in $out" >&2
echo
summarize "$out" || failed=1
echo
echo "machine speed: one RSA-2048 DKIM signature took $speed_before before the runs, $(machine_speed) after" \
	"(go test -bench SignRSA2048 ./dkim)"
exit "$failed"
