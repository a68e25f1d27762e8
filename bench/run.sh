#!/usr/bin/env bash
# Benchmark for `runner` (run from the repo root; `make bench` builds the binary and base image first).
#  1. wall time of 40 trivial jobs at --parallel 8 through `runner run`, against plain
#     `docker run --rm` driven by xargs -P 8 (best of two alternating rounds each);
#  2. per-call latency of 200 `runner submit`s from 8 concurrent processes on one state dir,
#     against the process start cost (`runner --version`); checks that exactly 200 jobs are stored;
#  3. bytes sent to the manager LLM per turn over a scripted 30-turn session (benches/manager_bytes.rs,
#     deterministic, no Docker), against re-sending the whole output every turn (the old tool);
#     run first, because `cargo bench` also builds (and so replaces) target/release/runner;
#  4. time from container start to Aider's first prompt in the offline agent demo
#     (jobs/agent-demo.yaml, 3 runs, read from the state dir's database), against a bare
#     `docker run -i` of the Aider image; and the demo's whole wall time;
#  5. 8 concurrent agent jobs on one ~23 MB repository (manager script `finish`, empty cassette, no
#     LLM): wall time and disk under the state dir's cache (final and peak, work trees included),
#     against one `git clone` of the same repository and 8 of them.
#  6. the price of the LLM gateway relay: 10 `network: llm` jobs (each starts its relay first)
#     against the same jobs with `network: none`, one at a time, alternating rounds; a relay's memory.
#  7. 16 agent jobs whose upstream (bench/slow_llm.py) takes 2 s an answer, at --parallel 16 with
#     default resources, against one such job alone; the runner's CPU time and peak memory a turn;
#  8. mission control (benches/serve.rs, a real `runner serve`, no Docker): time from an event
#     being stored to its arrival at SSE clients, 50 clients against 1; the jobs page with 10,000
#     jobs in the store against 100; run with part 3 (it is a cargo bench too);
# Each part prints one summary line at the end. Temp dirs, and any leftover containers created
# during the bench (runner containers by their state id, baseline containers by a bench label)
# and the LLM networks of the bench's state dirs,
# are removed on exit.
set -euo pipefail

ROOT=$PWD
CARGO=${CARGO:-cargo}
DEFAULT_RUNNER=$ROOT/target/release/runner
RUNNER=${RUNNER:-$DEFAULT_RUNNER}
IMAGE=runner/base:bookworm
AIDER_IMAGE=runner/aider:0.86.2
JOBS=40 PAR=8               # part 1
PROCS=8 PER_PROC=25         # part 2: PROCS x PER_PROC submits
VERSION_CALLS=50
DEMO_RUNS=3                 # part 4
FAN=8                       # part 5: concurrent agent jobs on one repository
REPO_FILES=300 REPO_COMMITS=300 REPO_CHANGES=6   # part 5: ~23 MB of packed history

[ -x "$RUNNER" ] || { echo "bench: $RUNNER missing; run 'cargo build --release' (or 'make bench')" >&2; exit 3; }
for img in "$IMAGE" "$AIDER_IMAGE"; do
    docker image inspect "$img" >/dev/null 2>&1 || { echo "bench: image $img missing; run 'make images'" >&2; exit 3; }
done

BENCH_START=$(date +%s.%N)
WORK=$(mktemp -d -t runner-bench.XXXXXX)
# Label of the baseline containers this bench starts (part 4), for the cleanup.
BENCH_LABEL="runner.bench=$(basename "$WORK")"
SAMPLER_PID=""
SLOW_LLM_PID=""   # part 7's upstream
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
    if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
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
    # Baseline containers of part 4 (normally removed by `docker run --rm`).
    ids+=$'\n'$(docker ps -aq --no-trunc --filter "label=$BENCH_LABEL" || true)
    ids=$(printf '%s' "$ids" | grep . | sort -u || true)
    if [ -n "$ids" ]; then
        echo "bench: removing $(echo "$ids" | wc -l) leftover container(s):" >&2
        for id in $ids; do docker inspect -f '  {{.Name}} {{.State.Status}} {{.Config.Labels}}' "$id" >&2 || true; done
        echo "$ids" | xargs docker rm -f >/dev/null 2>&1 || true
    fi
    # The LLM networks of the bench's state dirs (made by runner versions before the relays).
    for sid in $sids; do
        docker network ls -q --filter "label=runner.state=$sid" | xargs -r docker network rm >/dev/null 2>&1 || true
    done
    [ -z "$SLOW_LLM_PID" ] || kill "$SLOW_LLM_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
# Percentile (nearest rank) of the numbers in file $1; $2 in 0..100.
pct() { sort -g "$1" | awk -v p="$2" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'; }

# Median (nearest rank) of the numbers in file $1.
median() { pct "$1" 50; }
ratio() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (b > 0) printf f, a / b; else printf "n/a" }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }   # KiB -> MiB

# ---------------------------------------------------------------- part 3: manager bytes (first)
# Deterministic, so it runs once. `cargo bench` also builds the binary targets with the bench
# profile's features into target/release; the release build is put back afterwards, so that the
# parts below measure what `make build` made.
echo "bench: part 3: manager request bytes over a scripted 30-turn session (cargo bench --bench manager_bytes)" >&2
"$CARGO" bench --locked --quiet --bench manager_bytes >"$WORK/manager-bytes.out" 2>"$WORK/manager-bytes.err" \
    || { echo "bench: cargo bench --bench manager_bytes failed:" >&2; tail -30 "$WORK/manager-bytes.err" >&2; exit 1; }
grep -v '^bench: ' "$WORK/manager-bytes.out" | sed 's/^/  /' >&2
MANAGER_LINE=$(grep '^bench: manager' "$WORK/manager-bytes.out") \
    || { echo "bench: manager_bytes printed no summary line" >&2; exit 1; }
echo "bench: part 8: mission control: SSE latency with 50 clients, jobs page with 10,000 jobs (cargo bench --bench serve)" >&2
"$CARGO" bench --locked --quiet --bench serve >"$WORK/serve.out" 2>"$WORK/serve.err" \
    || { echo "bench: cargo bench --bench serve failed:" >&2; tail -30 "$WORK/serve.err" >&2; exit 1; }
grep '^  ' "$WORK/serve.err" >&2 || true
SERVE_LINE=$(grep '^bench: serve' "$WORK/serve.out") \
    || { echo "bench: serve printed no summary line" >&2; exit 1; }
if [ "$RUNNER" = "$DEFAULT_RUNNER" ]; then
    "$CARGO" build --release --locked --quiet >&2 \
        || { echo "bench: cargo build --release failed after cargo bench" >&2; exit 1; }
fi

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

# ---------------------------------------------------------------- part 4: first prompt
# The demo replays its cassette (offline). Runner: from the attempt's 'running' event (container
# started) to the transcript entry that completes Aider's first prompt. Baseline: from just before
# `docker run -i` of the Aider image to its first prompt. Alternating rounds, after one untimed
# baseline run to warm the image's files.
echo "bench: part 4: time to Aider's first prompt, $DEMO_RUNS demo runs and $DEMO_RUNS bare docker runs" >&2
python3 "$ROOT/bench/first_prompt.py" baseline "$AIDER_IMAGE" "$BENCH_LABEL" >/dev/null
for i in $(seq "$DEMO_RUNS"); do
    b=$(python3 "$ROOT/bench/first_prompt.py" baseline "$AIDER_IMAGE" "$BENCH_LABEL") \
        || { echo "bench: baseline Aider start failed" >&2; exit 1; }
    echo "$b" >>"$WORK/prompt-baseline"
    state="$WORK/state-demo-$i" rc=0
    t0=$(now)
    "$RUNNER" --state-dir "$state" run "$ROOT/jobs/agent-demo.yaml" >"$WORK/demo-$i.out" 2>"$WORK/demo-$i.err" || rc=$?
    wall=$(sub "$(now)" "$t0")
    if [ "$rc" -ne 0 ]; then
        echo "bench: the agent demo failed (exit $rc); stderr tail:" >&2; tail -20 "$WORK/demo-$i.err" >&2; exit 1
    fi
    read -r run_prompt start_prompt attempt_s < <(python3 "$ROOT/bench/first_prompt.py" db "$state/runner.db") \
        || { echo "bench: cannot read the demo's first prompt from $state/runner.db" >&2; exit 1; }
    echo "$run_prompt" >>"$WORK/prompt-runner"
    echo "$start_prompt" >>"$WORK/prompt-runner-starting"
    echo "$wall" >>"$WORK/demo-wall"
    echo "  round $i: docker run -i to prompt ${b}s; runner: running->prompt ${run_prompt}s, starting->prompt ${start_prompt}s, attempt ${attempt_s}s, demo wall ${wall}s" >&2
done
PROMPT_R=$(median "$WORK/prompt-runner"); PROMPT_RS=$(median "$WORK/prompt-runner-starting")
PROMPT_B=$(median "$WORK/prompt-baseline"); DEMO_WALL=$(median "$WORK/demo-wall")

# ---------------------------------------------------------------- part 5: 8 agent jobs, one repo
echo "bench: part 5: $FAN concurrent agent jobs on one repository, against git clone" >&2
REPO="$WORK/repo.git"
git init -q --bare -b main "$REPO"
python3 "$ROOT/bench/gen_repo.py" "$REPO_FILES" "$REPO_COMMITS" "$REPO_CHANGES" | git -C "$REPO" fast-import --quiet
REPO_URL="file://$REPO"   # as a remote: neither the runner's mirror nor the clones hardlink objects
REPO_KB=$(du -sk "$REPO" | cut -f1)

# Baseline: one clone, then FAN clones at once.
t0=$(now); git clone -q "$REPO_URL" "$WORK/clone-one"; CLONE1_T=$(sub "$(now)" "$t0")
CLONE1_KB=$(du -sk "$WORK/clone-one" | cut -f1)
TREE_KB=$(du -sk --exclude=.git "$WORK/clone-one" | cut -f1)
rm -rf "$WORK/clone-one"
mkdir -p "$WORK/clones"
t0=$(now)
seq "$FAN" | xargs -P "$FAN" -I{} git clone -q "$REPO_URL" "$WORK/clones/c{}"
CLONEN_T=$(sub "$(now)" "$t0")
CLONEN_KB=$(du -sck "$WORK/clones" | tail -1 | cut -f1)
rm -rf "$WORK/clones"
echo "  repository: $(mb "$REPO_KB") MiB packed, $(mb "$TREE_KB") MiB work tree; one git clone ${CLONE1_T}s $(mb "$CLONE1_KB") MiB; $FAN clones at once ${CLONEN_T}s $(mb "$CLONEN_KB") MiB" >&2

# Runner: FAN agent jobs that finish at once (Aider starts, reaches its prompt, the empty result is
# exported). No manager LLM, and Aider is never asked anything: the empty cassette is never read.
mkdir -p "$WORK/fan-jobs"
: >"$WORK/fan-jobs/empty.cassette.jsonl"   # beside the job files: local paths must stay in their folder
for i in $(seq "$FAN"); do
    cat >"$WORK/fan-jobs/fan-$i.yaml" <<EOF
name: fan-$i
task: Read the repository, then finish.
repo: $REPO_URL
manager: { mode: script, steps: [ { action: finish, argument: done } ] }
llm: { replay: empty.cassette.jsonl }
timeout: 5m
EOF
done
FAN_STATE="$WORK/state-fan"
# Disk under the state dir's cache/ and work/ (work trees live there until uploaded), sampled; one
# du for both, so that objects a work tree hardlinks from the mirror count once.
( while [ ! -e "$WORK/fan-done" ]; do
      du -sck "$FAN_STATE/cache" "$FAN_STATE/work" 2>/dev/null | tail -1 | cut -f1 >>"$WORK/fan-disk" || true
      sleep 0.1
  done ) &
SAMPLER_PID=$!
rc=0; t0=$(now)
"$RUNNER" --state-dir "$FAN_STATE" run "$WORK/fan-jobs" --parallel "$FAN" --host-cpus 64 --host-memory 64g \
    --json >"$WORK/fan.json" 2>"$WORK/fan.err" || rc=$?
FAN_T=$(sub "$(now)" "$t0")
touch "$WORK/fan-done"; wait "$SAMPLER_PID" || true; SAMPLER_PID=""
if [ "$rc" -ne 0 ]; then
    echo "bench: runner run of $FAN agent jobs failed (exit $rc); stderr tail:" >&2; tail -20 "$WORK/fan.err" >&2; exit 1
fi
python3 - "$WORK/fan.json" "$FAN" <<'EOF' >&2
import json, sys
jobs = json.load(open(sys.argv[1])); n = int(sys.argv[2])
ok = sum(j["state"] == "succeeded" for j in jobs)
if len(jobs) != n or ok != n:
    sys.exit(f"bench: expected {n} succeeded agent jobs, got {ok} of {len(jobs)}")
EOF
CACHE_KB=$(du -sk "$FAN_STATE/cache" | cut -f1)
PEAK_KB=$(sort -g "$WORK/fan-disk" | tail -1); PEAK_KB=$(( PEAK_KB > CACHE_KB ? PEAK_KB : CACHE_KB ))
LEFT_WORK=$(find "$FAN_STATE/work" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
echo "  runner: ${FAN_T}s; cache $(mb "$CACHE_KB") MiB after, peak cache+work $(mb "$PEAK_KB") MiB ($(wc -l <"$WORK/fan-disk") samples); $LEFT_WORK work tree(s) left" >&2
read -r ph_s ph_smax ph_p ph_pmax ph_e ph_emax < <(python3 "$ROOT/bench/first_prompt.py" phases "$FAN_STATE/runner.db") \
    || { echo "bench: cannot read the agent jobs' phases from $FAN_STATE/runner.db" >&2; exit 1; }
echo "  per job (median / max): starting->running ${ph_s}s / ${ph_smax}s (mirror, checkout, launch); running->Aider's prompt ${ph_p}s / ${ph_pmax}s; prompt->done ${ph_e}s / ${ph_emax}s (finish, export, removal)" >&2

# ---------------------------------------------------------------- part 6: the gateway relay
# The llm jobs never call the gateway (their upstream is a closed loopback port): what is measured
# is what isolation costs every `network: llm` attempt, a relay container started before the job.
RELAY_JOBS=10
for net in none llm; do
    mkdir -p "$WORK/relay-$net"
    for i in $(seq "$RELAY_JOBS"); do
        cat >"$WORK/relay-$net/r-$i.yaml" <<EOF
name: r-$i
image: $IMAGE
network: $net
command: ["sh", "-c", "sleep 0.2"]
timeout: 1m
resources: { cpus: 0.2, memory: 64m, pids: 32 }
EOF
    done
done
relay_once() {   # $1: none|llm, $2: round
    local t0; t0=$(now)
    OPENAI_BASE_URL=http://127.0.0.1:9/v1 "$RUNNER" --state-dir "$WORK/state-relay-$1-$2" \
        run "$WORK/relay-$1" --parallel 1 >/dev/null 2>"$WORK/relay-$1-$2.err" \
        || { echo "bench: relay part: runner run failed" >&2; tail -20 "$WORK/relay-$1-$2.err" >&2; exit 1; }
    sub "$(now)" "$t0"
}
echo "bench: part 6: $RELAY_JOBS jobs one at a time, network none vs llm (two rounds each)" >&2
N1=$(relay_once none 1); L1=$(relay_once llm 1); N2=$(relay_once none 2); L2=$(relay_once llm 2)
echo "  none: ${N1}s ${N2}s; llm: ${L1}s ${L2}s" >&2
RELAY_N=$(awk -v a="$N1" -v b="$N2" 'BEGIN { print (a < b ? a : b) }')
RELAY_L=$(awk -v a="$L1" -v b="$L2" 'BEGIN { print (a < b ? a : b) }')
# A relay's memory at rest, read while one llm job sleeps.
cat >"$WORK/relay-mem.yaml" <<EOF
name: relay-mem
image: $IMAGE
network: llm
command: ["sleep", "6"]
timeout: 1m
EOF
OPENAI_BASE_URL=http://127.0.0.1:9/v1 "$RUNNER" --state-dir "$WORK/state-relay-mem" \
    run "$WORK/relay-mem.yaml" >/dev/null 2>&1 &
RELAY_MEM_PID=$!
RELAY_MEM=n/a
for _ in $(seq 50); do
    relay=$(docker ps --format '{{.Names}}' --filter label=runner.role=relay | head -1)
    if [ -n "$relay" ]; then
        sleep 1
        RELAY_MEM=$(docker stats --no-stream --format '{{.MemUsage}}' "$relay" | awk '{ print $1 }')
        break
    fi
    sleep 0.1
done
wait "$RELAY_MEM_PID" || true

# ---------------------------------------------------------------- part 7: 16 LLM-bound agents
# Agent jobs whose upstream takes LLM_DELAY seconds per answer (bench/slow_llm.py): one alone,
# then AGENTS at --parallel AGENTS with default resources. Each job's manager script has Aider
# answer one instruction (one upstream call) and then finishes. The runner's own CPU time and
# peak memory come from /usr/bin/time around the parallel run.
AGENTS=16 LLM_DELAY=2
python3 "$ROOT/bench/slow_llm.py" "$LLM_DELAY" "$WORK/slow-llm.port" &
SLOW_LLM_PID=$!
for _ in $(seq 50); do [ -s "$WORK/slow-llm.port" ] && break; sleep 0.1; done
[ -s "$WORK/slow-llm.port" ] || { echo "bench: the slow upstream did not start" >&2; exit 1; }
SLOW_URL="http://127.0.0.1:$(cat "$WORK/slow-llm.port")/v1"
for dir in agents-one agents-many; do
    mkdir -p "$WORK/$dir/repo"
    printf 'def greet(name):\n    return name\n' >"$WORK/$dir/repo/greet.py"
    n=$([ "$dir" = agents-one ] && echo 1 || echo "$AGENTS")
    for i in $(seq "$n"); do
        cat >"$WORK/$dir/a-$i.yaml" <<EOF
name: a-$i
task: Look at greet.py and say whether it needs a change.
repo: repo
agent: { model: openai/mock }
manager: { mode: script, steps: [ { action: instruct, argument: "Does greet.py need a change? Answer briefly." }, { action: finish, argument: done } ] }
llm: { base_url: $SLOW_URL }
timeout: 5m
EOF
    done
done
agents_run() {   # $1: agents-one|agents-many; prints wall seconds; /usr/bin/time output in $WORK/$1.time
    local t0 rc=0; t0=$(now)
    /usr/bin/time -f '%U %S %M' -o "$WORK/$1.time" "$RUNNER" --state-dir "$WORK/state-$1" \
        run "$WORK/$1" --parallel "$AGENTS" >"$WORK/$1.out" 2>"$WORK/$1.err" || rc=$?
    local t; t=$(sub "$(now)" "$t0")
    [ "$rc" -eq 0 ] || { echo "bench: part 7: $1 failed (exit $rc)" >&2; tail -20 "$WORK/$1.err" >&2; exit 1; }
    echo "$t"
}
echo "bench: part 7: agent jobs whose upstream takes ${LLM_DELAY}s an answer: one alone, then $AGENTS at --parallel $AGENTS" >&2
ONE_T=$(agents_run agents-one); echo "  one job: ${ONE_T}s" >&2
MANY_T=$(agents_run agents-many); echo "  $AGENTS jobs: ${MANY_T}s" >&2
kill "$SLOW_LLM_PID" 2>/dev/null || true
# Turns the manager ran (each job: an instruct turn, then finish), from the transcript rows.
TURNS=$(python3 -c '
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", ("succeeded",)).fetchone()[0] * 2)
' "$WORK/state-agents-many/runner.db")
read -r MANY_USER MANY_SYS MANY_RSS <"$WORK/agents-many.time"

# ---------------------------------------------------------------- summary
awk -v r="$BEST_R" -v b="$BEST_B" -v x="$RATIO_RUN" -v n="$JOBS" -v p="$PAR" 'BEGIN {
    printf "bench: %d jobs at --parallel %d: runner %.1fs, docker run %.1fs, ratio %s (target <= 1.0)\n", n, p, r, b, x }'
awk -v n="$((PROCS * PER_PROC))" -v k="$PROCS" -v a="$P50" -v b="$P95" -v c="$MAX" -v w="$WALL_SUB" \
    -v s="$START_P50" -v x="$RATIO_SUB" 'BEGIN {
    printf "bench: %d submits from %d processes: p50 %.0fms p95 %.0fms max %.0fms (wall %.1fs); process start p50 %.1fms (submit/start %sx)\n", n, k, a, b, c, w, s, x }'
echo "$MANAGER_LINE"
awk -v r="$PROMPT_R" -v rs="$PROMPT_RS" -v b="$PROMPT_B" -v w="$DEMO_WALL" -v n="$DEMO_RUNS" \
    -v x="$(ratio "$PROMPT_R" "$PROMPT_B")" -v xs="$(ratio "$PROMPT_RS" "$PROMPT_B")" 'BEGIN {
    printf "bench: Aider first prompt (median of %d): runner %.2fs from container start (%.2fs from job start), docker run -i %.2fs, ratio %s (%s from job start); demo wall %.1fs\n", n, r, rs, b, x, xs, w }'
awk -v n="$FAN" -v t="$FAN_T" -v c="$(mb "$CACHE_KB")" -v p="$(mb "$PEAK_KB")" -v rk="$(mb "$REPO_KB")" \
    -v t1="$CLONE1_T" -v c1="$(mb "$CLONE1_KB")" -v tn="$CLONEN_T" -v cn="$(mb "$CLONEN_KB")" \
    -v xd="$(ratio "$CACHE_KB" "$CLONE1_KB")" -v xp="$(ratio "$PEAK_KB" "$CLONEN_KB")" \
    -v xt="$(ratio "$FAN_T" "$CLONE1_T" %.1f)" -v xtn="$(ratio "$FAN_T" "$CLONEN_T" %.1f)" -v cpus="$(nproc)" 'BEGIN {
    printf "bench: %d agent jobs on one repo (%.1f MiB packed, %d host CPUs): runner %.1fs, cache %.1f MiB (peak with work trees %.1f MiB); one git clone %.2fs %.1f MiB, %d clones %.2fs %.1f MiB; disk cache/clone %s, peak/%d clones %s; time vs one clone %sx, vs %d clones %sx\n", n, rk, cpus, t, c, p, t1, c1, n, tn, cn, xd, n, xp, xt, n, xtn }'
awk -v n="$RELAY_JOBS" -v a="$RELAY_N" -v b="$RELAY_L" -v m="$RELAY_MEM" -v x="$(ratio "$RELAY_L" "$RELAY_N")" 'BEGIN {
    printf "bench: %d jobs one at a time: network llm %.1fs, network none %.1fs, ratio %s (+%.0f ms a job for its gateway relay); a relay uses %s\n", n, b, a, x, (b - a) * 1000 / n, m }'
awk -v n="$AGENTS" -v d="$LLM_DELAY" -v m="$MANY_T" -v o="$ONE_T" -v x="$(ratio "$MANY_T" "$ONE_T")" \
    -v cpu="$(awk -v u="$MANY_USER" -v s="$MANY_SYS" 'BEGIN { print u + s }')" -v t="$TURNS" -v r="$(mb "$MANY_RSS")" 'BEGIN {
    printf "bench: %d agent jobs, upstream %ss an answer, --parallel %d, default resources: %.1fs; one alone %.1fs; ratio %s (goal <= 2); runner CPU %.2fs for %d turns (%.0f ms a turn), peak RSS %s MiB\n", n, d, n, m, o, x, cpu, t, (t > 0 ? cpu * 1000 / t : 0), r }'
echo "$SERVE_LINE"
echo "bench: done in $(sub "$(now)" "$BENCH_START")s" >&2
