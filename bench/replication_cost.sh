#!/bin/bash
# What replication costs a write: a 3-node keycafe cluster with --replicas 0,
# then with --replicas 1, under `redis-benchmark --cluster -t set` (-c 50, at
# -P 1 and -P 16). Needs redis-benchmark (Debian's redis-tools). Uses client
# ports 7100-7102 and 7200-7202 (cluster ports +10000) on 127.0.0.1.
#
#     bash bench/replication_cost.sh
set -u
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
for reps in 0 1; do
  base=$((7100 + reps * 100))
  pids=()
  $py -m keycafe --bind 127.0.0.1 --port $base --replicas $reps --log-level warning 2>/dev/null &
  pids+=($!)
  for i in $(seq 100); do redis-cli -p $base ping >/dev/null 2>&1 && break; sleep 0.1; done
  for i in 1 2; do
    $py -m keycafe --bind 127.0.0.1 --port $((base + i)) --replicas $reps \
      --seed 127.0.0.1:$((base + 10000)) --log-level warning 2>/dev/null &
    pids+=($!)
  done
  for t in $(seq 150); do
    ci=$(redis-cli -p $base cluster info 2>/dev/null | tr -d '\r')
    grep -q "keycafe_ring_members:3" <<<"$ci" && grep -q "keycafe_ring_pending:0" <<<"$ci" && break
    sleep 0.2
  done
  for P in 1 16; do
    r=$(redis-benchmark -p $base --cluster -t set -n 200000 -r 100000 -c 50 -P $P -q 2>/dev/null \
      | tr '\r' '\n' | grep "requests per second" | tail -1)
    echo "--replicas $reps  -P $P  $r"
  done
  kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
done
