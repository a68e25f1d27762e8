#!/usr/bin/env bash
# Kubernetes against Docker on this host (`make bench-k8s`, which runs this inside
# `tests/k8s/cluster.sh run`, so RUNNER_TEST_KUBECONFIG and RUNNER_TEST_GATEWAY_HOST are set):
#  9. wall time of `runner run jobs/hello.yaml` (a trivial job, start to exit), RUNS times on each
#     backend, alternating; and of `runner run jobs/agent-demo.yaml` (real Aider, replayed
#     answers), AGENT_RUNS times on each. Prints the medians and their ratio (Kubernetes over
#     Docker). Jobs run in the cluster's `default` namespace; the cluster is torn down afterwards
#     by cluster.sh, the Docker containers by the runner itself.
set -euo pipefail

ROOT=$PWD
RUNNER=${RUNNER:-$ROOT/target/release/runner}
RUNS=${RUNS:-6}
AGENT_RUNS=${AGENT_RUNS:-3}
: "${RUNNER_TEST_KUBECONFIG:?run this through make bench-k8s (tests/k8s/cluster.sh run)}"
: "${RUNNER_TEST_GATEWAY_HOST:?run this through make bench-k8s (tests/k8s/cluster.sh run)}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("'"$RUNNER_TEST_GATEWAY_HOST"'", 0)); print(s.getsockname()[1])')

# One timed `runner run` of a job file on a backend; prints seconds, fails the bench if the job did.
timed() { # backend job-file
    local backend=$1 job=$2 start end
    local -a extra=()
    if [ "$backend" = kubernetes ]; then
        extra=(--kubeconfig "$RUNNER_TEST_KUBECONFIG" --namespace default
            --network-policy unenforced --gateway-listen "$RUNNER_TEST_GATEWAY_HOST:$PORT")
    fi
    start=$(date +%s.%N)
    if ! "$RUNNER" --state-dir "$TMP/$backend" run "$job" --backend "$backend" "${extra[@]}" \
        >"$TMP/out" 2>&1; then
        echo "bench: $job failed on $backend:" >&2
        cat "$TMP/out" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

echo "bench: part 9: Kubernetes against Docker: $RUNS trivial jobs and $AGENT_RUNS agent demos on each" >&2
for job in jobs/hello.yaml jobs/agent-demo.yaml; do
    n=$RUNS
    [ "$job" = jobs/agent-demo.yaml ] && n=$AGENT_RUNS
    : >"$TMP/docker.times"
    : >"$TMP/kubernetes.times"
    for _ in $(seq "$n"); do
        timed docker "$job" >>"$TMP/docker.times"
        timed kubernetes "$job" >>"$TMP/kubernetes.times"
    done
    d=$(median <"$TMP/docker.times")
    k=$(median <"$TMP/kubernetes.times")
    echo "bench: part 9: $job: Kubernetes median ${k} s, Docker median ${d} s (runs: $n each), ratio $(echo "scale=2; $k / $d" | bc)"
done
