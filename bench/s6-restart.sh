#!/bin/bash
# S6 restart (issue 11): how long after a restart that follows `kill -9` the daemon serves the
# first message of a large backlog. docs/BENCHMARKS.md, "S6 restart".
#
#   bench/s6-restart.sh make    BIN DIR QUEUES N   # N persistent 1 KiB messages split over QUEUES
#                                                  # durable queues q0.., then kill -9; DIR keeps the store
#   bench/s6-restart.sh restart BIN DIR [RUNS]     # start on DIR, time until `warren get q0` returns
#                                                  # a message (retried every 20 ms), kill -9; RUNS times
#
# EXTRA="--store-quick-repair" passes serve flags (to both). Listens on 127.0.0.1:25811 only.
# The store is used in place: every run ends with kill -9, so every start repairs (or not) the
# same way, and each run takes one message.
set -u
mode=$1; BIN=$2; DIR=$3
SRV=127.0.0.1:25811
start() {
  # shellcheck disable=SC2086
  "$BIN" serve ${EXTRA:-} --listen $SRV --amqp-listen none --data-dir "$DIR" > "$DIR.log" 2>&1 &
  pid=$!
}
stop9() { kill -9 "$pid"; wait "$pid" 2>/dev/null; }
if [ "$mode" = make ]; then
  Q=$4; N=$5
  body=$(head -c 1023 < /dev/zero | tr '\0' x)
  rm -rf "$DIR"; mkdir -p "$DIR"
  start
  for _ in $(seq 1 1000); do "$BIN" --server $SRV queue list >/dev/null 2>&1 && break; sleep 0.02; done
  for q in $(seq 0 $((Q - 1))); do
    "$BIN" --server $SRV queue declare -q "q$q" --durable
    yes "$body" | head -n $((N / Q)) | "$BIN" --server $SRV publish -q '' "q$q" --persistent --lines
  done
  "$BIN" --server $SRV queue list
  stop9
  du -sh "$DIR"
  exit 0
fi
for r in $(seq 1 "${4:-3}"); do
  sync
  t0=$(date +%s%N)
  start
  n=0
  until "$BIN" --server $SRV get q0 >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -gt 3000 ] && { echo "gave up"; break; }
    sleep 0.02
  done
  t1=$(date +%s%N)
  echo "run $r: first message after $(( (t1 - t0) / 1000000 )) ms (load $(cut -d' ' -f1 /proc/loadavg))"
  grep -E "store opened|repairing|recovered durable state" "$DIR.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200
  stop9
done
