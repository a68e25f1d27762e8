#!/usr/bin/env bash
# Benchmark for `runner` (run from the repo root; `make bench` builds the binary and base image first).
#  1. wall time of 40 trivial jobs at --parallel 8 through `runner run`, against plain
#     `docker run --rm` driven by xargs -P 8 (best of two alternating rounds each);
#  2. per-call latency of 200 `runner submit`s from 8 concurrent processes on one state dir,
#     against the process start cost (`runner --version`); checks that exactly 200 jobs are stored.
# Temp dirs and any leftover runner containers created during the bench are removed on exit.
set -euo pipefail

RUNNER=${RUNNER:-$PWD/target/release/runner}
IMAGE=runner/base:bookworm
JOBS=40 PAR=8               # part 1
PROCS=8 PER_PROC=25         # part 2: PROCS x PER_PROC submits
VERSION_CALLS=50

[ -x "$RUNNER" ] || { echo "bench: $RUNNER missing; run 'cargo build --release' (or 'make bench')" >&2; exit 3; }
docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "bench: image $IMAGE missing; run 'make images'" >&2; exit 3; }

WORK=$(mktemp -d -t runner-bench.XXXXXX)
# Runner containers that existed before the bench (used only by the fallback in cleanup).
PRE_EXISTING=$(docker ps -aq --no-trunc --filter label=runner.state | sort)

# State ids of the bench's own state dirs, read from their runner.db (nothing if unreadable).
bench_state_ids() {
    python3 -c '
import sqlite3, sys
for db in sys.argv[1:]:
    try: print(sqlite3.connect(f"file:{db}?mode=ro", uri=True)
               .execute("SELECT value FROM meta WHERE key = ?", ("state_id",)).fetchone()[0])
    except Exception: pass
' "$WORK"/state-*/runner.db 2>/dev/null || true
}

cleanup() {
    local ids="" sids sid
    # Safety net (the runner removes its own containers). Target this bench's state ids exactly,
    # so that containers of tests running concurrently on the same engine are never touched.
    sids=$(bench_state_ids)
    for sid in $sids; do
        ids+=$(docker ps -aq --no-trunc --filter "label=runner.state=$sid" || true)$'\n'
    done
    # Fallback if no id could be read: runner-* containers carrying the label that appeared
    # during the bench.
    if [ -z "$sids" ]; then
        ids=$(docker ps -aq --no-trunc --filter label=runner.state --filter name=^runner- | sort \
              | comm -13 <(printf '%s\n' "$PRE_EXISTING") - || true)
    fi
    ids=$(printf '%s' "$ids" | grep . | sort -u || true)
    if [ -n "$ids" ]; then
        echo "bench: removing $(echo "$ids" | wc -l) leftover container(s):" >&2
        for id in $ids; do docker inspect -f '  {{.Name}} {{.State.Status}} {{.Config.Labels}}' "$id" >&2 || true; done
        echo "$ids" | xargs docker rm -f >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
# Percentile (nearest rank) of the numbers in file $1; $2 in 0..100.
pct() { sort -g "$1" | awk -v p="$2" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'; }

# ---------------------------------------------------------------- part 1: 40 jobs
mkdir -p "$WORK/jobs"
for i in $(seq "$JOBS"); do
    cat >"$WORK/jobs/bench-$i.yaml" <<EOF
name: bench-$i
image: $IMAGE
command: ["true"]
timeout: 1m
resources: { cpus: 0.1, memory: 64m, pids: 32 }
EOF
done

baseline_once() {
    local t0; t0=$(now)
    seq "$JOBS" | xargs -P "$PAR" -I{} docker run --rm --network none "$IMAGE" true
    sub "$(now)" "$t0"
}
runner_once() {   # $1: round number (fresh state dir each round)
    local state="$WORK/state-run-$1" t0 rc=0
    t0=$(now)
    "$RUNNER" --state-dir "$state" run "$WORK/jobs" --parallel "$PAR" \
        --host-cpus 64 --host-memory 64g --json >"$WORK/run-$1.json" 2>"$WORK/run-$1.err" || rc=$?
    local t; t=$(sub "$(now)" "$t0")
    if [ "$rc" -ne 0 ]; then
        echo "bench: runner run failed (exit $rc); stderr tail:" >&2; tail -20 "$WORK/run-$1.err" >&2; exit 1
    fi
    # Every job must have succeeded.
    python3 - "$WORK/run-$1.json" "$JOBS" <<'EOF' >&2
import json, sys
jobs = json.load(open(sys.argv[1])); n = int(sys.argv[2])
ok = sum(j["state"] == "succeeded" for j in jobs)
if len(jobs) != n or ok != n:
    sys.exit(f"bench: expected {n} succeeded jobs, got {ok} of {len(jobs)}")
EOF
    echo "$t"
}

echo "bench: part 1: $JOBS trivial jobs at --parallel $PAR (baseline, runner, baseline, runner)" >&2
B1=$(baseline_once); echo "  docker run round 1: ${B1}s" >&2
R1=$(runner_once 1); echo "  runner run round 1: ${R1}s" >&2
B2=$(baseline_once); echo "  docker run round 2: ${B2}s" >&2
R2=$(runner_once 2); echo "  runner run round 2: ${R2}s" >&2
BEST_B=$(awk -v a="$B1" -v b="$B2" 'BEGIN { print (a < b ? a : b) }')
BEST_R=$(awk -v a="$R1" -v b="$R2" 'BEGIN { print (a < b ? a : b) }')
RATIO_RUN=$(awk -v r="$BEST_R" -v b="$BEST_B" 'BEGIN { printf "%.2f", r / b }')

# ---------------------------------------------------------------- part 2: 200 submits
SUB_STATE="$WORK/state-submit"
JOB="$WORK/jobs/bench-1.yaml"
# The state dir is fresh: the racers also exercise concurrent first-time set-up of the database.

submitter() {   # $1: process index; writes one latency (ms) per line to lat-$1
    local i t0 out="$WORK/lat-$1"
    for i in $(seq "$PER_PROC"); do
        t0=$(now)
        "$RUNNER" --state-dir "$SUB_STATE" submit "$JOB" >/dev/null 2>>"$WORK/submit-$1.err" \
            || { echo "bench: submit failed (process $1, call $i):" >&2; cat "$WORK/submit-$1.err" >&2; return 1; }
        awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.1f\n", (a - b) * 1000 }' >>"$out"
    done
}

echo "bench: part 2: $((PROCS * PER_PROC)) submits from $PROCS processes" >&2
T0=$(now); pids=()
for p in $(seq "$PROCS"); do submitter "$p" & pids+=("$!"); done
fail=0; for pid in "${pids[@]}"; do wait "$pid" || fail=1; done
WALL_SUB=$(sub "$(now)" "$T0")
[ "$fail" -eq 0 ] || { echo "bench: some submits failed" >&2; exit 1; }
cat "$WORK"/lat-* >"$WORK/lat-all"
N_LAT=$(wc -l <"$WORK/lat-all")
[ "$N_LAT" -eq $((PROCS * PER_PROC)) ] || { echo "bench: got $N_LAT latencies" >&2; exit 1; }
P50=$(pct "$WORK/lat-all" 50); P95=$(pct "$WORK/lat-all" 95); MAX=$(pct "$WORK/lat-all" 100)

# Exactly PROCS*PER_PROC jobs must be stored (none lost, none duplicated).
"$RUNNER" --state-dir "$SUB_STATE" ps --all --json | python3 -c '
import json, sys
jobs = json.load(sys.stdin); want = int(sys.argv[1])
ids = {j["id"] for j in jobs}
if len(jobs) != want or len(ids) != want:
    sys.exit(f"bench: expected {want} stored jobs, found {len(jobs)} ({len(ids)} distinct ids)")
' "$((PROCS * PER_PROC))"

# Baseline: process start cost, p50 of `runner --version`.
for i in $(seq "$VERSION_CALLS"); do
    t0=$(now); "$RUNNER" --version >/dev/null
    awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.1f\n", (a - b) * 1000 }' >>"$WORK/lat-version"
done
START_P50=$(pct "$WORK/lat-version" 50)
RATIO_SUB=$(awk -v a="$P50" -v b="$START_P50" 'BEGIN { printf "%.1f", a / b }')

# ---------------------------------------------------------------- summary
awk -v r="$BEST_R" -v b="$BEST_B" -v x="$RATIO_RUN" -v n="$JOBS" -v p="$PAR" 'BEGIN {
    printf "bench: %d jobs at --parallel %d: runner %.1fs, docker run %.1fs, ratio %s (target <= 1.0)\n", n, p, r, b, x }'
awk -v n="$((PROCS * PER_PROC))" -v k="$PROCS" -v a="$P50" -v b="$P95" -v c="$MAX" -v w="$WALL_SUB" \
    -v s="$START_P50" -v x="$RATIO_SUB" 'BEGIN {
    printf "bench: %d submits from %d processes: p50 %.0fms p95 %.0fms max %.0fms (wall %.1fs); process start p50 %.1fms (submit/start %sx)\n", n, k, a, b, c, w, s, x }'
