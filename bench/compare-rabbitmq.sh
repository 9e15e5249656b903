#!/usr/bin/env bash
# Warren and RabbitMQ side by side (issue 11): the same workloads, one broker at a time, on
# 127.0.0.1 only, medians of three runs, one table with the ratio Warren / RabbitMQ.
# See bench/README.md.
#
#   bench/compare-rabbitmq.sh [--quick] [--runs N] [--scenarios "s1 s2 s3 s4 s5"]
#                             [--skip-build] [--out DIR] [--only warren|rabbitmq] [--amqp]
#
# --amqp also measures Warren through its AMQP 0-9-1 listener with the client that measures
# RabbitMQ (amqp-bench, lapin), so one table holds Warren native, Warren over AMQP and
# RabbitMQ, each with the same workload (issue 13's "through RabbitMQ's own protocol").
#
# Installs rabbitmq-server with apt-get if it is missing (needs root), starts it itself with
# its data in a temporary directory and its own epmd, and stops only the processes it started,
# by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
SCENARIOS="s1 s2 s3 s4 s5"
QUICK=0
BUILD=1
OUT=""
ONLY=""
AMQP=0

# The workloads, in one place. Both benches define each scenario the same way (warren:
# src/bench/options.rs `Scenario::preset`; RabbitMQ: bench/amqp-bench `Workload::of`), the
# count is passed to both explicitly, and after every run the script checks that the two
# reports' options agree (size, queues, consumers, exchange type, persistence, confirms,
# confirm window, prefetch, auto-ack, rate, count) before it uses a number.
#   s1  durable 256 B, confirms (1,000 in flight), acks, prefetch 1,000
#   s2  durable 4 KiB, otherwise as s1
#   s3  transient 256 B, no confirms, auto-ack
#   s4  durable 256 B at 10,000 msgs/s (latency)
#   s5  topic exchange, 4 durable queues bound with bench.#, bench.*.*, *.*.*, #; 4 consumers
#   s6  1 KiB durable, published with no consumer, then drained (optional: long)
declare -A COUNT=([s1]=200000 [s2]=50000 [s3]=500000 [s4]=100000 [s5]=100000 [s6]=1000000)
declare -A QUICK_COUNT=([s1]=50000 [s2]=20000 [s3]=200000 [s4]=30000 [s5]=25000 [s6]=100000)

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --skip-build) BUILD=0 ;;
    --out) OUT=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --amqp) AMQP=1 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

count_of() {
    if [ "$QUICK" = 1 ]; then echo "${QUICK_COUNT[$1]}"; else echo "${COUNT[$1]}"; fi
}

for s in $SCENARIOS; do
    [ -n "${COUNT[$s]:-}" ] || { echo "unknown scenario $s" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/warren-compare.XXXXXX)
[ -n "$OUT" ] || OUT=$WORK/results
mkdir -p "$OUT"
WARREN_PID=""
RABBIT_PID=""   # the rabbitmq-server wrapper script
BEAM_PID=""     # the Erlang VM it runs
EPMD_PID=""
POLICY_RC_CREATED=0

log() { echo "compare: $*" >&2; }

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Waits up to $2 seconds for PID $1 to exit.
wait_gone() {
    local i
    for i in $(seq 1 $(($2 * 10))); do
        alive "$1" || return 0
        sleep 0.1
    done
    return 1
}

stop_warren() {
    if alive "$WARREN_PID"; then
        kill -TERM "$WARREN_PID"
        wait_gone "$WARREN_PID" 30 || kill -KILL "$WARREN_PID"
        wait "$WARREN_PID" 2>/dev/null || true
    fi
    WARREN_PID=""
}

stop_rabbit() {
    # SIGTERM to the wrapper: it stops the VM with SIGTERM (a clean shutdown) and waits.
    if alive "$RABBIT_PID"; then
        kill -TERM "$RABBIT_PID"
        wait_gone "$RABBIT_PID" 60 || kill -KILL "$RABBIT_PID"
        wait "$RABBIT_PID" 2>/dev/null || true
    fi
    if alive "$BEAM_PID"; then
        kill -TERM "$BEAM_PID"
        wait_gone "$BEAM_PID" 30 || kill -KILL "$BEAM_PID"
    fi
    if alive "$EPMD_PID"; then
        kill -TERM "$EPMD_PID"
        wait_gone "$EPMD_PID" 10 || kill -KILL "$EPMD_PID"
        wait "$EPMD_PID" 2>/dev/null || true
    fi
    RABBIT_PID="" BEAM_PID="" EPMD_PID=""
}

cleanup() {
    stop_warren
    stop_rabbit
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    rm -rf "$WORK/warren-data" "$WORK/rabbit"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# User + system CPU seconds of PID $1, from /proc.
cpu_of() {
    awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$1/stat"
}

# --- RabbitMQ: install if missing ---------------------------------------------------------
RABBIT_BIN=/usr/lib/rabbitmq/bin/rabbitmq-server
if [ ! -x "$RABBIT_BIN" ]; then
    log "rabbitmq-server is not installed: installing it with apt-get"
    if [ "$(id -u)" != 0 ]; then
        log "installing needs root: run 'apt-get install rabbitmq-server' first"; exit 1
    fi
    # Keep the package from starting a system-wide broker (on all interfaces) as it installs.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server >&2
fi

# --- builds --------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building warren and amqp-bench (release)"
    (cd "$ROOT" && cargo build --release --bin warren) >&2
    (cd "$ROOT/bench/amqp-bench" && cargo build --release) >&2
fi
WARREN=$ROOT/target/release/warren
AMQP_BENCH=$ROOT/bench/amqp-bench/target/release/amqp-bench

# --- the machine and the versions ------------------------------------------------------------
{
    echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "machine:   $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the start"
    echo "warren:    $(git -C "$ROOT" rev-parse --short HEAD) ($(git -C "$ROOT" status --porcelain | grep -q . && echo 'with local changes' || echo clean)), cargo build --release"
    echo "rabbitmq:  $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?') on Erlang/OTP $(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo '?'), lapin 4 (bench/amqp-bench)"
    echo "runs:      $RUNS per scenario and broker$([ "$QUICK" = 1 ] && echo ', --quick counts')"
} | tee "$OUT/machine.txt" >&2

# Runs one measurement: broker $1, scenario $2, run $3, server PID $4, then the command.
# Writes $OUT/<broker>-<scenario>-<run>.json and .cpu (the broker's CPU seconds before and
# after). A run that fails (a lost connection, a stall, a failed verification) is retried
# twice and written to $OUT/retries.txt, so the table says so.
measure() {
    local broker=$1 s=$2 r=$3 pid=$4 try c0 c1
    shift 4
    for try in 1 2 3; do
        c0=$(cpu_of "$pid")
        if "$@" >"$OUT/$broker-$s-$r.json"; then
            c1=$(cpu_of "$pid")
            echo "$c0 $c1" >"$OUT/$broker-$s-$r.cpu"
            log "$broker $s run $r done"
            return 0
        fi
        log "$broker $s run $r failed (attempt $try)"
        echo "$broker $s run $r: attempt $try failed" >>"$OUT/retries.txt"
        alive "$pid" || { log "the $broker broker is gone"; exit 1; }
    done
    log "$broker $s run $r failed three times"
    exit 1
}

# --- Warren ----------------------------------------------------------------------------------
run_warren() {
    mkdir -p "$WORK/warren-data"
    local amqp_port
    amqp_port=$(free_port)
    "$WARREN" serve --listen 127.0.0.1:0 --amqp-listen "127.0.0.1:$amqp_port" \
        --data-dir "$WORK/warren-data" >"$WORK/warren.log" 2>&1 &
    WARREN_PID=$!
    local addr="" i
    for i in $(seq 1 300); do
        if [ -s "$WORK/warren-data/runtime.json" ]; then
            addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("listen",""))' \
                "$WORK/warren-data/runtime.json" 2>/dev/null || true)
            [ -n "$addr" ] && break
        fi
        alive "$WARREN_PID" || { cat "$WORK/warren.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$addr" ] || { log "warren did not start"; exit 1; }
    log "warren serving on $addr (pid $WARREN_PID)"
    local s r n
    for s in $SCENARIOS; do
        n=$(count_of "$s")
        for r in $(seq 1 "$RUNS"); do
            measure warren "$s" "$r" "$WARREN_PID" \
                "$WARREN" bench --server "$addr" --scenario "$s" --count "$n" --json
            if [ "$AMQP" = 1 ]; then
                measure warren-amqp "$s" "$r" "$WARREN_PID" "$AMQP_BENCH" \
                    --uri "amqp://guest:guest@127.0.0.1:$amqp_port/%2f" --scenario "$s" \
                    --count "$n" --json
            fi
        done
    done
    stop_warren
}

# --- RabbitMQ --------------------------------------------------------------------------------
run_rabbit() {
    local R=$WORK/rabbit port dist epmd_port node i
    mkdir -p "$R/mnesia" "$R/log" "$R/home"
    port=$(free_port) dist=$(free_port) epmd_port=$(free_port)
    node="warren-compare-$$@localhost"
    # No plugins (the management plugin would listen on 15672 on every interface).
    echo '[].' >"$R/enabled_plugins"
    cat >"$R/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$port
log.console = false
log.file.level = warning
EOF
    : >"$R/rabbitmq-env.conf"
    export HOME=$R/home                 # the Erlang cookie lands here, not in ~
    export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$epmd_port
    export RABBITMQ_NODENAME=$node RABBITMQ_USE_LONGNAME=false
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist
    export RABBITMQ_MNESIA_BASE=$R/mnesia RABBITMQ_LOG_BASE=$R/log
    export RABBITMQ_CONFIG_FILE=$R/rabbitmq.conf RABBITMQ_ADVANCED_CONFIG_FILE=$R/advanced.config
    export RABBITMQ_CONF_ENV_FILE=$R/rabbitmq-env.conf RABBITMQ_ENABLED_PLUGINS_FILE=$R/enabled_plugins
    export RABBITMQ_PID_FILE=$R/rabbit.pid
    # Erlang distribution on loopback only.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # Our own epmd, on loopback and a free port, so the script knows its PID and stops it.
    epmd -port "$epmd_port" >"$R/epmd.log" 2>&1 &
    EPMD_PID=$!
    "$RABBIT_BIN" >"$R/server.out" 2>&1 </dev/null &
    RABBIT_PID=$!
    for i in $(seq 1 600); do
        if [ -s "$R/rabbit.pid" ] && [ -z "$BEAM_PID" ]; then BEAM_PID=$(cat "$R/rabbit.pid"); fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        alive "$RABBIT_PID" || { cat "$R/server.out" "$R/log/"* >&2 || true; exit 1; }
        sleep 0.1
    done
    [ -n "$BEAM_PID" ] || BEAM_PID=$(cat "$R/rabbit.pid")
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { log "rabbitmq did not start"; exit 1; }
    log "rabbitmq serving on 127.0.0.1:$port (node $node, pid $BEAM_PID, epmd pid $EPMD_PID)"
    local s r n
    for s in $SCENARIOS; do
        n=$(count_of "$s")
        for r in $(seq 1 "$RUNS"); do
            measure rabbitmq "$s" "$r" "$BEAM_PID" "$AMQP_BENCH" \
                --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --scenario "$s" --count "$n" --json
        done
    done
    stop_rabbit
}

log "results in $OUT"
[ "$ONLY" = rabbitmq ] || run_warren
[ "$ONLY" = warren ] || run_rabbit
if [ -n "$ONLY" ]; then
    if [ "$OUT" != "$WORK/results" ]; then rm -rf "$WORK"; fi
    exit 0
fi

# --- the table -------------------------------------------------------------------------------
python3 - "$OUT" "$RUNS" $SCENARIOS <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys
out, runs, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def load(broker, s, r):
    with open(f"{out}/{broker}-{s}-{r}.json") as f:
        j = json.load(f)
    with open(f"{out}/{broker}-{s}-{r}.cpu") as f:
        c0, c1 = map(float, f.read().split())
    o = j["options"]
    count = o["volume"]["count"] if "volume" in o else o["count"]
    workload = (o["size"], o["queues"], o["consumers"], o["exchange_type"], o["persistent"],
                o["no_confirm"], o["confirm_window"], o["prefetch"], o["auto_ack"], o["rate"], count)
    v = j["verification"]
    if v["missing"] or v["misrouted"] or v["unexpected_duplicates"] or v["malformed"]:
        sys.exit(f"{broker} {s} run {r}: verification failed: {v}")
    return workload, {
        "e2e": j["published"] / j["elapsed_secs"],
        "deliveries": j["delivery"]["msgs_per_sec"],
        "p50": j["latency"]["p50_us"] / 1000, "p99": j["latency"]["p99_us"] / 1000,
        "p999": j["latency"]["p999_us"] / 1000,
        "per_cpu": j["delivered"] / max(c1 - c0, 0.01),
        "cpu": c1 - c0,
    }

rows = {
    "s1": [("e2e", "end to end, msgs/s"), ("per_cpu", "deliveries per broker CPU-second")],
    "s2": [("e2e", "end to end, msgs/s")],
    "s3": [("e2e", "end to end, msgs/s")],
    "s4": [("p50", "latency p50, ms"), ("p99", "latency p99, ms"), ("p999", "latency p99.9, ms")],
    "s5": [("deliveries", "deliveries/s"), ("e2e", "end to end, msgs/s")],
    "s6": [("e2e", "end to end (publish, then drain), msgs/s"), ("deliveries", "drain, msgs/s")],
}
names = {"s1": "S1 durable 256 B, confirms, acks", "s2": "S2 durable 4 KiB",
         "s3": "S3 transient 256 B, no confirms, auto-ack", "s4": "S4 durable at 10,000 msgs/s",
         "s5": "S5 topic fan-out to 4 durable queues", "s6": "S6 1 KiB backlog, then drain"}
import os
amqp = os.path.exists(f"{out}/warren-amqp-{scenarios[0]}-1.json")
if amqp:
    print("| scenario | measure | Warren native (median of %d) | Warren over AMQP, lapin (median of %d) | RabbitMQ (median of %d) | Warren / RabbitMQ | Warren over AMQP / RabbitMQ |" % (runs, runs, runs))
    print("|---|---|---|---|---|---|---|")
else:
    print("| scenario | measure | Warren (median of %d) | RabbitMQ (median of %d) | Warren / RabbitMQ |" % (runs, runs))
    print("|---|---|---|---|---|")
for s in scenarios:
    w = [load("warren", s, r) for r in range(1, runs + 1)]
    q = [load("rabbitmq", s, r) for r in range(1, runs + 1)]
    a = [load("warren-amqp", s, r) for r in range(1, runs + 1)] if amqp else []
    ws = {x[0] for x in w} | {x[0] for x in q} | {x[0] for x in a}
    if len(ws) != 1:
        sys.exit(f"{s}: the two benches ran different workloads: {ws}")
    count = next(iter(ws))[-1]
    for key, label in rows[s]:
        wm = statistics.median(x[1][key] for x in w)
        qm = statistics.median(x[1][key] for x in q)
        fmt = (lambda v: f"{v:,.2f}") if key in ("p50", "p99", "p999") else (lambda v: f"{v:,.0f}")
        all_w = " · ".join(fmt(x[1][key]) for x in w)
        all_q = " · ".join(fmt(x[1][key]) for x in q)
        ratio = wm / qm if qm else float("nan")
        if amqp:
            am = statistics.median(x[1][key] for x in a)
            all_a = " · ".join(fmt(x[1][key]) for x in a)
            aratio = am / qm if qm else float("nan")
            print(f"| {names[s]} ({count:,} msgs) | {label} | {fmt(wm)} ({all_w}) | {fmt(am)} ({all_a}) | {fmt(qm)} ({all_q}) | {ratio:.2f} | {aratio:.2f} |")
        else:
            print(f"| {names[s]} ({count:,} msgs) | {label} | {fmt(wm)} ({all_w}) | {fmt(qm)} ({all_q}) | {ratio:.2f} |")
print()
print("Latency ratios below 1 mean Warren is faster; every other ratio above 1 does.")
EOF
if [ -s "$OUT/retries.txt" ]; then
    echo
    echo "Runs retried (their failed attempts are not in the table):"
    cat "$OUT/retries.txt"
fi | tee -a "$OUT/table.md"
cat "$OUT/machine.txt"
log "end load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The logs are kept only while something may need reading.
if [ "$OUT" != "$WORK/results" ]; then rm -rf "$WORK"; fi
