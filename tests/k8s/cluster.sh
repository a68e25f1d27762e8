#!/usr/bin/env bash
# A real single-node Kubernetes 1.20 cluster on this machine, for runner's Kubernetes backend tests.
#
#   tests/k8s/cluster.sh build   build (once) the kube binaries and the pause image into the cache
#   tests/k8s/cluster.sh up      start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a
#                                kubelet (dockershim, so pods are plain containers of the local Docker engine)
#   tests/k8s/cluster.sh env     print the export lines the tests need (KUBECONFIG, ...)
#   tests/k8s/cluster.sh down    tear everything down, even after a partial or failed up
#   tests/k8s/cluster.sh run CMD...  up, CMD with RUNNER_TEST_KUBECONFIG set, then down whatever CMD did
#                                (make test-k8s)
#
# Why it is built this way:
# - No image registry is reachable, so nothing can come from an image (no kind, no k3s images, no
#   registry.k8s.io/pause). Debian bookworm carries the Kubernetes 1.20 *source* package, and 1.20 is the
#   last line whose kubelet runs pods on a plain Docker engine through the built-in dockershim, so we
#   build kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from it, take etcd from the
#   etcd-server package, and build the pod sandbox ("pause") binary from its C source and `docker import`
#   it as a local image. Pods use images already in the local Docker engine (imagePullPolicy: Never).
# - Everything runs as plain background processes of root (no systemd units), with logs and pid files
#   in the state dir, so `down` can find and remove all of it.
#
# Settings (environment):
#   RUNNER_K8S_CACHE     build cache: sources, Go cache, binaries   (default ~/.cache/runner/k8s)
#   RUNNER_K8S_DIR       cluster state: certs, etcd data, logs, kubelet root   (default /tmp/runner-k8s)
#   RUNNER_K8S_API_PORT  kube-apiserver secure port on 127.0.0.1   (default 16443)
#   RUNNER_K8S_UP_TIMEOUT seconds `up` waits for each stage        (default 180)
#   Other ports: RUNNER_K8S_ETCD_PORT (16379), RUNNER_K8S_ETCD_PEER_PORT (16380), RUNNER_K8S_KUBELET_PORT
#   (16250), RUNNER_K8S_KUBELET_HEALTHZ_PORT (16248), RUNNER_K8S_KCM_PORT (16257), RUNNER_K8S_SCHED_PORT
#   (16259). All ports sit in the 16xxx range so they do not collide with a real Kubernetes install.
set -euo pipefail

CACHE="${RUNNER_K8S_CACHE:-$HOME/.cache/runner/k8s}"
DIR="${RUNNER_K8S_DIR:-/tmp/runner-k8s}"
SRC="$CACHE/src/k"          # the extracted Debian source tree
BIN="$CACHE/bin"            # the binaries `up` runs
PKI="$DIR/pki"
LOGS="$DIR/logs"
PIDS="$DIR/pids"
KUBELET_ROOT="$DIR/kubelet" # kubelet --root-dir: pod volumes (secret/emptyDir tmpfs mounts) live here

NODE_NAME="runner-k8s-node" # fixed, so tests can look the node up
API_PORT="${RUNNER_K8S_API_PORT:-16443}"
ETCD_PORT="${RUNNER_K8S_ETCD_PORT:-16379}"
ETCD_PEER_PORT="${RUNNER_K8S_ETCD_PEER_PORT:-16380}"
KUBELET_PORT="${RUNNER_K8S_KUBELET_PORT:-16250}"
KUBELET_HEALTHZ_PORT="${RUNNER_K8S_KUBELET_HEALTHZ_PORT:-16248}"
KCM_PORT="${RUNNER_K8S_KCM_PORT:-16257}"
SCHED_PORT="${RUNNER_K8S_SCHED_PORT:-16259}"
UP_TIMEOUT="${RUNNER_K8S_UP_TIMEOUT:-180}"
API_URL="https://127.0.0.1:$API_PORT"

# The service range only feeds the ClusterIP allocator and the API server's certificate (there is no
# kube-proxy, so ClusterIPs are not routable); its first address is the `kubernetes` service's.
SERVICE_CIDR="10.96.0.0/12"
SERVICE_FIRST_IP="10.96.0.1"
SA_ISSUER="https://kubernetes.default.svc.cluster.local"

PAUSE_IMAGE="runner/k8s-pause:3.4"
# Host dirs the 1.20 kubelet writes to whatever its --root-dir: pod logs (/var/log/pods, symlinks in
# /var/log/containers) and the device-plugin socket dir (/var/lib/kubelet/device-plugins, a constant of
# the device plugin API). up records their contents, down removes what was added.
HOST_DIRS=(/var/log/pods /var/log/containers /var/lib/kubelet)
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2 # from golang-github-modern-go-reflect2-dev
# Written to $BIN/.stamp by a successful build; change it when the source patches below change, so cached
# binaries built without them are rebuilt.
BUILD_STAMP="kubernetes-1.20 debian-source reflect2-1.0.2 oom-score-adj-clamp pause-3.4"
# TTLAfterFinished (alpha in 1.20, off by default): our Jobs set ttlSecondsAfterFinished; the API server
# keeps the field, the controller-manager runs the controller that deletes finished Jobs.
# SizeMemoryBackedVolumes (alpha in 1.20, on by default from 1.22): an emptyDir with medium: Memory gets
# a tmpfs of size=sizeLimit (writes past it fail with ENOSPC) instead of a tmpfs of half the host's RAM
# that is only policed by the eviction manager. It only affects the kubelet; set everywhere for symmetry.
FEATURE_GATES="TTLAfterFinished=true,SizeMemoryBackedVolumes=true"

log() { printf '[k8s] %s\n' "$*" >&2; }
die() { printf '[k8s] error: %s\n' "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (the kubelet mounts volumes and creates cgroups): sudo $0 $*"
}

# Install the Debian packages that provide missing things. Arguments: probe:package pairs, where the
# probe is a command name, or an absolute path (glob) for packages without a command.
ensure_pkgs() {
    local missing=() pair probe
    for pair in "$@"; do
        probe="${pair%%:*}"
        if [ "${probe#/}" != "$probe" ]; then
            compgen -G "$probe" >/dev/null || missing+=("${pair#*:}")
        else
            command -v "$probe" >/dev/null 2>&1 || missing+=("${pair#*:}")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand (this script expects Debian bookworm)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed; fix the apt sources (deb.debian.org must be reachable)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
}

need_docker() {
    command -v docker >/dev/null || die "docker not found; install Docker (apt-get install docker.io) and start it"
    docker info >/dev/null 2>&1 || die "the Docker daemon does not answer; start it (service docker start / dockerd &)"
}

# ---------------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------------

have_binaries() {
    local b
    for b in "${COMPONENTS[@]}" pause; do [ -x "$BIN/$b" ] || return 1; done
    [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$BUILD_STAMP" ]
}

# The pod sandbox image: the kubelet starts one "pause" container per pod to hold its namespaces. The
# upstream image lives on registry.k8s.io, which is unreachable, so we import our own build of the same
# C program (build/pause/linux/pause.c of this source tree). The kubelet only pulls the sandbox image when
# it is missing, so a local image with this name is enough.
ensure_pause_image() {
    need_docker
    docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
    [ -x "$BIN/pause" ] || die "$BIN/pause is missing; run: $0 build"
    log "importing $PAUSE_IMAGE from $BIN/pause"
    local t
    t="$(mktemp -d)"
    cp "$BIN/pause" "$t/pause"
    tar -C "$t" --owner=0 --group=0 -cf - pause \
        | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
    rm -rf "$t"
}

cmd_build() {
    need_root build
    mkdir -p "$CACHE"
    # One build at a time (parallel test processes may all call up, which calls build).
    exec 9>"$CACHE/.build.lock"
    flock 9
    if have_binaries; then
        ensure_pause_image
        exec 9>&-
        return 0
    fi
    local t0=$SECONDS
    log "building Kubernetes 1.20 from the Debian source package into $BIN (a fresh build takes about 7 min on 2 cores)"

    # apt-get source needs a deb-src entry. The kubernetes 1.20 source package is in bookworm, and
    # bookworm's golang-go (Go 1.19) is the toolchain Debian built it with.
    if [ ! -f /etc/apt/sources.list.d/runner-src.sources ]; then
        log "adding deb-src for bookworm in /etc/apt/sources.list.d/runner-src.sources"
        cat >/etc/apt/sources.list.d/runner-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            || die "apt-get update failed after adding the deb-src entry"
    fi
    # gcc + libc6-dev (static libc.a) for pause; golang-github-modern-go-reflect2-dev, see below.
    ensure_pkgs go:golang-go etcd:etcd-server dpkg-source:dpkg-dev rsync:rsync jq:jq openssl:openssl \
        curl:curl gcc:gcc '/usr/lib/*/libc.a:libc6-dev' make:make \
        "$REFLECT2/reflect2.go:golang-github-modern-go-reflect2-dev"

    # Download and extract the source once; the extracted tree is reused by later builds.
    if [ ! -f "$SRC/debian/changelog" ]; then
        mkdir -p "$CACHE/src"
        (cd "$CACHE/src" && apt-get source --download-only kubernetes) \
            || die "apt-get source kubernetes failed; check the deb-src entry and that deb.debian.org is reachable"
        local dsc
        dsc="$(ls -t "$CACHE"/src/kubernetes_*.dsc | head -n1)"
        rm -rf "$SRC"
        (cd "$CACHE/src" && dpkg-source -x --no-check "$dsc" k) || die "dpkg-source -x $dsc failed"
    fi
    head -n1 "$SRC/debian/changelog" | grep -q '^kubernetes (.*1\.20\.' \
        || die "$SRC is not a Kubernetes 1.20 source tree; remove $CACHE/src and rerun $0 build"

    # The GOPATH layout debian/rules uses: the tree is k8s.io/kubernetes inside .go.
    mkdir -p "$SRC/.go/src/k8s.io"
    [ -L "$SRC/.go/src/k8s.io/kubernetes" ] || ln -s ../../.. "$SRC/.go/src/k8s.io/kubernetes"

    # Debian builds only kubectl from this source, with bookworm's Go 1.19. The server binaries built that
    # way crash as soon as they JSON-encode a map ("fatal error: fault ... aeshashbody ...
    # reflect2.(*UnsafeMapType).UnsafeIterate", kube-apiserver within seconds of starting): the vendored
    # github.com/modern-go/reflect2 v1.0.1 reads Go's map internals, which changed in Go 1.18. v1.0.2 fixed
    # it with the same API, and Debian ships it: swap its sources into vendor/ (modules.txt can stay, the
    # go command does not hash vendored sources).
    local v2="$SRC/vendor/github.com/modern-go/reflect2"
    if ! cmp -s "$REFLECT2/reflect2.go" "$v2/reflect2.go"; then
        log "replacing the vendored reflect2 v1.0.1 with Debian's v1.0.2 (Go 1.18+ fix)"
        rm -f "$v2"/*.go
        cp "$REFLECT2"/*.go "$v2/"
    fi

    # The kubelet (dockershim) gives every pod sandbox container oom_score_adj -998 and Guaranteed-QoS
    # containers -997. Lowering oom_score_adj needs CAP_SYS_RESOURCE, which the sandboxes these tests run
    # in drop (even for root), and then runc fails every pod: "OCI runtime create failed: ... can't get
    # final child's PID from pipe: EOF". Patch the dockershim to clamp the value to the kubelet's own
    # oom_score_adj: on a normal host the kubelet sets itself to -999 at start and nothing changes; where it
    # cannot, it stays at 0 and so do pod sandboxes and Guaranteed containers (BestEffort/Burstable
    # containers are positive anyway).
    local ds="$SRC/pkg/kubelet/dockershim"
    if [ ! -f "$ds/runner_oom_clamp.go" ]; then
        log "patching the dockershim: clamp containers' oom_score_adj to the kubelet's own"
        cat >"$ds/runner_oom_clamp.go" <<'EOF'
// +build !dockerless

package dockershim

// Added by runner's tests/k8s/cluster.sh: see the comment there.

import (
	"io/ioutil"
	"strconv"
	"strings"
)

// clampOOMScoreAdj returns adj, or the kubelet's own oom_score_adj when adj is lower: a container cannot
// be set below what the kubelet could set for itself (without CAP_SYS_RESOURCE, runc fails otherwise).
func clampOOMScoreAdj(adj int) int {
	b, err := ioutil.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return adj
	}
	own, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || adj >= own {
		return adj
	}
	return own
}
EOF
        sed -i 's/^\(\s*\)hc\.OomScoreAdj = defaultSandboxOOMAdj$/\1hc.OomScoreAdj = clampOOMScoreAdj(defaultSandboxOOMAdj)/' \
            "$ds/docker_sandbox.go"
        sed -i 's/^\(\s*\)createConfig\.HostConfig\.OomScoreAdj = int(rOpts\.OomScoreAdj)$/\1createConfig.HostConfig.OomScoreAdj = clampOOMScoreAdj(int(rOpts.OomScoreAdj))/' \
            "$ds/helpers_linux.go"
    fi
    grep -q 'clampOOMScoreAdj(defaultSandboxOOMAdj)' "$ds/docker_sandbox.go" \
        && grep -q 'clampOOMScoreAdj(int(rOpts.OomScoreAdj))' "$ds/helpers_linux.go" \
        || die "patching $ds failed (source changed?); remove $CACHE/src and rerun $0 build"

    # CGO_ENABLED=0: static binaries, no C toolchain surprises. (hack/lib/golang.sh overrides GOCACHE with
    # _output/local/go/cache inside the tree, which is under $CACHE anyway, so a rebuild after a change is
    # incremental.) Output goes to $CACHE/build.log.
    log "make WHAT=\"${COMPONENTS[*]/#/cmd/}\" (log: $CACHE/build.log)"
    (cd "$SRC" && GOPATH="$SRC/.go" GOCACHE="$CACHE/gocache" CGO_ENABLED=0 HOME="$HOME" \
        make WHAT="${COMPONENTS[*]/#/cmd/}") >"$CACHE/build.log" 2>&1 \
        || { tail -n 30 "$CACHE/build.log" >&2; die "the Kubernetes build failed; full log: $CACHE/build.log"; }
    local b
    mkdir -p "$BIN"
    for b in "${COMPONENTS[@]}"; do install -m 0755 "$SRC/_output/bin/$b" "$BIN/$b"; done

    # pause: static so it runs in an image that holds nothing else. VERSION is only what `pause -v` prints.
    gcc -Os -Wall -Werror -static -DVERSION=v3.4-runner -o "$BIN/pause.tmp" "$SRC/build/pause/linux/pause.c" \
        || die "building pause failed (needs gcc and libc6-dev)"
    mv "$BIN/pause.tmp" "$BIN/pause"
    echo "$BUILD_STAMP" >"$BIN/.stamp"
    ensure_pause_image
    exec 9>&-
    log "build took $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------------
# helpers for up/down
# ---------------------------------------------------------------------------------------------------

# The address pods use to reach the host: the gateway of Docker's default bridge (docker0). It is also
# the node's InternalIP, see start_kubelet.
gateway_ip() {
    local ip="" dev
    ip="$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)"
    if [ -z "$ip" ]; then
        # Docker often leaves Gateway out of the default bridge's IPAM config; then read the address
        # of the bridge interface itself.
        dev="$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null || true)"
        ip="$(ip -4 -o addr show dev "${dev:-docker0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1 || true)"
    fi
    printf '%s' "$ip"
}

pid_alive() { # name -> 0 if the pid in its pid file is alive and still that program
    local f="$PIDS/$1.pid" pid exe
    [ -f "$f" ] || return 1
    pid="$(cat "$f")"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    [ "$(basename "${exe% (deleted)}")" = "$1" ]
}

api() { # path -> body; fails on HTTP errors. Uses the admin client certificate (no kubectl needed).
    curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API_URL$1"
}

cluster_healthy() {
    local c
    for c in etcd "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
    [ -f "$PKI/admin.crt" ] && api /readyz >/dev/null 2>&1
}

# Start a program in the background, in its own session (a Ctrl-C or the exit of the caller does not
# reach it), with stdin from /dev/null and output to its log (a caller reading our output through a
# pipe must not wait for the daemons), and without the lock fd 9 (else the lock would live on).
start() { # name command...
    local name=$1
    shift
    setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 9>&- &
    echo $! >"$PIDS/$name.pid"
}

fail_with_log() { # name message
    log "last lines of $LOGS/$1.log:"
    tail -n 40 "$LOGS/$1.log" >&2 || true
    die "$2 (logs: $LOGS; clean up with: $0 down)"
}

# Wait until a command succeeds, failing early when the named program dies.
wait_for() { # what program-to-watch command...
    local what=$1 prog=$2 deadline=$((SECONDS + UP_TIMEOUT))
    shift 2
    until "$@" >/dev/null 2>&1; do
        local c
        for c in etcd "${COMPONENTS[@]}"; do
            [ -f "$PIDS/$c.pid" ] && ! pid_alive "$c" && fail_with_log "$c" "$c exited while waiting for $what"
        done
        [ "$SECONDS" -lt "$deadline" ] || fail_with_log "$prog" "timed out after ${UP_TIMEOUT}s waiting for $what"
        sleep 0.5
    done
}

node_ready() {
    api "/api/v1/nodes/$NODE_NAME" | jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"' >/dev/null
}

# The ServiceAccount admission plugin refuses pods until the namespace's `default` ServiceAccount exists
# and (1.20, secret-based tokens) has its token secret.
default_sa_ready() {
    api /api/v1/namespaces/default/serviceaccounts/default | jq -e '(.secrets // []) | length > 0' >/dev/null
}

host_dir_key() { printf '%s' "${1//\//_}"; } # /var/log/pods -> _var_log_pods

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------------------------------

# EC P-256 keys: fast to generate, accepted by Go (the kube components) and rustls (runner's kube client).
gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# issue name CN O extendedKeyUsage [subjectAltName]: a leaf certificate signed by the cluster CA.
# Kubernetes maps CN to the user name and O to groups.
issue() {
    local name=$1 cn=$2 org=$3 eku=$4 san=${5:-} subj
    gen_key "$PKI/$name.key"
    subj="/CN=$cn"
    [ -n "$org" ] && subj="/O=$org$subj"
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        if [ -n "$san" ]; then echo "subjectAltName = $san"; fi
    } >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 -extfile "$PKI/$name.ext" \
        -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

gen_certs() { # node-ip
    local node_ip=$1
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    # The CA, from a self-contained config so the host's openssl.cnf defaults do not matter.
    gen_key "$PKI/ca.key"
    cat >"$PKI/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = runner-k8s-ca
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
EOF
    openssl req -x509 -new -config "$PKI/ca.cnf" -extensions v3_ca -key "$PKI/ca.key" -days 3650 -sha256 \
        -out "$PKI/ca.crt" 2>/dev/null
    # API server serving certificate: reached as 127.0.0.1/localhost from the host, and by the in-cluster
    # names/ClusterIP should anything ever route there.
    issue apiserver kube-apiserver "" serverAuth \
        "DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:127.0.0.1, IP:$SERVICE_FIRST_IP, IP:$node_ip"
    # The API server's client certificate towards the kubelet (logs/exec/attach/port-forward). In
    # system:masters so the kubelet's webhook authorization (a SubjectAccessReview) allows it.
    issue apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
    issue admin admin system:masters clientAuth
    # The control plane components' own identities; the RBAC bootstrap policy has roles for these names.
    issue controller-manager system:kube-controller-manager "" clientAuth
    issue scheduler system:kube-scheduler "" clientAuth
    # The kubelet's client identity, as the Node authorizer and NodeRestriction expect it.
    issue kubelet-client "system:node:$NODE_NAME" system:nodes clientAuth
    # The kubelet's serving certificate, checked by the API server (--kubelet-certificate-authority).
    issue kubelet-server "system:node:$NODE_NAME" system:nodes serverAuth \
        "DNS:$NODE_NAME, DNS:localhost, IP:127.0.0.1, IP:$node_ip"
    # Service-account token signing key pair (RSA: RS256 is what every client expects).
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

write_kubeconfig() { # file user cert-name
    local file=$1 user=$2 cert=$3
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: runner-k8s
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI/$cert.key")
contexts:
- name: runner-k8s
  context:
    cluster: runner-k8s
    user: $user
    namespace: default
current-context: runner-k8s
EOF
    chmod 600 "$file"
}

# ---------------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------------

# Host settings the kubelet changes at start (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables:
# vm.overcommit_memory=1, vm.panic_on_oom=0, kernel.panic=10, kernel.panic_on_oops=1, and the root keyring
# quotas). Acceptable on a throwaway test machine; we still save the old values and `down` restores them.
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys
    kernel/keys/root_maxbytes)

start_kubelet() { # node-ip
    local node_ip=$1 docker_endpoint="${DOCKER_HOST:-unix:///var/run/docker.sock}"
    mkdir -p "$KUBELET_ROOT" "$DIR/dockershim"
    # The kubelet refuses a loopback --node-ip ("nodeIP can't be loopback address",
    # pkg/kubelet/kubelet_node_status.go), and the API server dials the kubelet at the node's InternalIP
    # for logs/exec/attach. So the node IP is docker0's gateway address: a host-local address that needs
    # no routable interface, and the one pods use to reach the host anyway. The kubelet API listens there
    # (not on 0.0.0.0), so only the host and containers on the default bridge can reach it, and it requires
    # a client certificate from the cluster CA or a token (anonymous access off, webhook authorization).
    cat >"$KUBELET_ROOT/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
featureGates:
  TTLAfterFinished: true
  SizeMemoryBackedVolumes: true
# Do not touch the host's iptables (KUBE-MARK-DROP etc. chains): nothing here needs them, and down would
# have to remove them again.
makeIPTablesUtilChains: false
hairpinMode: none
# Images cannot be pulled on this machine, so the kubelet must never garbage-collect images (the default
# starts deleting unused images at 85% disk use, which would eat the locally built test images).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The default hard eviction (nodefs/imagefs below 10%/15%) would taint the node and evict test pods on a
# fairly full dev disk; keep only near-exhaustion thresholds.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
# Keep flexvolume's plugin dir inside the state dir (default /usr/libexec/kubernetes/...).
volumePluginDir: $KUBELET_ROOT/volume-plugins
serializeImagePulls: false
# The first status the kubelet posts says NotReady (runtime checks not done yet); by default it looks
# again after 10 s, which is most of up's wait. Look every 2 s, but still only re-post an unchanged
# status every minute (an explicit update frequency would otherwise make it the post frequency too).
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 1m
clusterDomain: cluster.local
EOF
    # Flags rather than config for the dockershim ones (they only exist as flags) and for those the
    # design names explicitly:
    # --container-runtime=docker: the built-in dockershim; pods are containers of the local engine.
    # --container-runtime-endpoint / --experimental-dockershim-root-directory: the dockershim's socket and
    #   checkpoints in the state dir instead of /var/run/dockershim.sock and /var/lib/dockershim.
    # --pod-infra-container-image: our locally imported pause image (never pulled since it exists).
    # --cgroup-driver=cgroupfs: must match Docker's driver.
    # --fail-swap-on=false: test machines may have swap.
    # --root-dir: pod volumes in the state dir. The kubelet bind-mounts this dir onto itself and makes it
    #   rshared at start; down unmounts it.
    # No --network-plugin: the no-op plugin, so pods get Docker's default bridge network (no CNI). It
    #   enables net.bridge.bridge-nf-call-iptables if br_netfilter is loaded.
    # --hostname-override: a fixed node name.
    start kubelet "$BIN/kubelet" \
        --config="$KUBELET_ROOT/config.yaml" \
        --kubeconfig="$DIR/kubelet.kubeconfig" \
        --root-dir="$KUBELET_ROOT" \
        --cert-dir="$KUBELET_ROOT/pki" \
        --hostname-override="$NODE_NAME" \
        --node-ip="$node_ip" \
        --container-runtime=docker \
        --docker-endpoint="$docker_endpoint" \
        --container-runtime-endpoint="unix://$DIR/dockershim.sock" \
        --experimental-dockershim-root-directory="$DIR/dockershim" \
        --pod-infra-container-image="$PAUSE_IMAGE" \
        --cgroup-driver=cgroupfs \
        --fail-swap-on=false \
        --v=1
}

cmd_up() {
    need_root up
    local t0=$SECONDS
    cmd_build
    ensure_pkgs etcd:etcd-server openssl:openssl curl:curl jq:jq
    need_docker

    # Serialize up/down on this state dir (parallel test processes may all call up).
    exec 9>"$DIR.lock"
    flock 9
    if cluster_healthy; then
        log "cluster already up: $API_URL (state: $DIR)"
        exec 9>&-
        return 0
    fi
    if [ -e "$DIR" ]; then
        log "found leftovers of an earlier cluster in $DIR; tearing them down first"
        do_down
    fi

    # Preconditions, each failing with its fix.
    [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] \
        || die "cgroup v2 only: the 1.20 kubelet needs cgroup v1; boot with systemd.unified_cgroup_hierarchy=0"
    [ "$(docker info -f '{{.CgroupDriver}}')" = cgroupfs ] \
        || die "Docker uses the $(docker info -f '{{.CgroupDriver}}') cgroup driver; set \"exec-opts\": [\"native.cgroupdriver=cgroupfs\"] in /etc/docker/daemon.json and restart Docker"
    local node_ip
    node_ip="$(gateway_ip)"
    [ -n "$node_ip" ] || die "no gateway on Docker's default bridge network; Docker must run with its default bridge (docker0)"
    local p
    for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$KCM_PORT" "$SCHED_PORT" "$KUBELET_HEALTHZ_PORT"; do
        port_free 127.0.0.1 "$p" || die "port 127.0.0.1:$p is in use; stop its owner or pick other ports (RUNNER_K8S_*_PORT)"
    done
    port_free "$node_ip" "$KUBELET_PORT" || die "port $node_ip:$KUBELET_PORT is in use; set RUNNER_K8S_KUBELET_PORT"

    mkdir -p "$DIR" "$LOGS" "$PIDS" "$DIR/host-dirs"
    # Remember what the host dirs the kubelet writes to regardless of --root-dir held, so down removes
    # only what this kubelet adds there.
    local hd
    for hd in "${HOST_DIRS[@]}"; do
        if [ -d "$hd" ]; then ls -A "$hd" >"$DIR/host-dirs/$(host_dir_key "$hd").before"; fi
    done
    touch "$DIR/host-dirs/recorded"

    gen_certs "$node_ip"
    write_kubeconfig "$DIR/kubeconfig" admin admin
    write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
    write_kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
    write_kubeconfig "$DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client

    # etcd from Debian's etcd-server (3.4), plain HTTP on loopback only: a single local member.
    start etcd etcd --name runner-k8s --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "runner-k8s=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new
    wait_for "etcd health" etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

    # kube-apiserver on 127.0.0.1 only. (1.20 has no insecure port any more.)
    # --advertise-address: the address put in the `kubernetes` Endpoints; it must not be loopback, and
    #   without it the server picks the default-route interface, which a sandbox may not have.
    # --authorization-mode=Node,RBAC + NodeRestriction: as a real cluster, so RBAC manifests mean something.
    # --service-account-*: 1.20 requires an issuer and a signing key for (bound) service-account tokens.
    # --kubelet-*: client certificate towards the kubelet, verify its serving cert, dial its InternalIP.
    start kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --secure-port="$API_PORT" \
        --advertise-address="$node_ip" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer="$SA_ISSUER" \
        --service-account-signing-key-file="$PKI/sa.key" \
        --service-account-key-file="$PKI/sa.pub" \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$PKI/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --feature-gates="$FEATURE_GATES" \
        --profiling=false
    wait_for "kube-apiserver /readyz" kube-apiserver api /readyz

    # Controller-manager and scheduler: secure port on loopback, insecure port off (--port=0; 1.20 still
    # opens 10252/10251 on all interfaces by default), no leader election (one instance).
    # --use-service-account-credentials: each controller acts as its own service account, as in kubeadm.
    # --service-account-private-key-file/--root-ca-file: the token controller creates the SA token secrets.
    # No --authentication-/--authorization-kubeconfig: with them both components keep logging "missing
    # content for CA bundle ...requestheader-client-ca-file" (this API server has no front proxy); without
    # them their secure ports serve /healthz only, which is all a test needs.
    # --flex-volume-plugin-dir: else the controller-manager creates /usr/libexec/kubernetes/....
    start kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig="$DIR/controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 --cert-dir="$PKI/kcm-serving" \
        --flex-volume-plugin-dir="$DIR/kcm-volume-plugins" \
        --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$PKI/sa.key" \
        --root-ca-file="$PKI/ca.crt" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --feature-gates="$FEATURE_GATES" \
        --profiling=false
    start kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig="$DIR/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 --cert-dir="$PKI/scheduler-serving" \
        --leader-elect=false \
        --feature-gates="$FEATURE_GATES" \
        --profiling=false

    local s
    for s in "${SYSCTLS[@]}"; do
        [ -r "/proc/sys/$s" ] && printf '%s %s\n' "$s" "$(cat "/proc/sys/$s")"
    done >"$DIR/sysctl.saved" || true
    start_kubelet "$node_ip"

    wait_for "node $NODE_NAME Ready" kubelet node_ready
    wait_for "the default ServiceAccount and its token" kube-controller-manager default_sa_ready
    exec 9>&-
    log "cluster up at $API_URL, node $NODE_NAME ($node_ip); KUBECONFIG=$DIR/kubeconfig"
    log "up took $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------------

running() { # pid -> 0 if it exists and is not a zombie waiting for its parent to reap it
    [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

stop_proc() { # name: TERM, wait up to 10 s, then KILL
    local name=$1 pid
    pid_alive "$name" || { rm -f "$PIDS/$name.pid"; return 0; }
    pid="$(cat "$PIDS/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        running "$pid" || break
        sleep 0.25
    done
    if running "$pid"; then
        log "$name ($pid) ignored TERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do running "$pid" || break; sleep 0.1; done
    fi
    rm -f "$PIDS/$name.pid"
}

# Our daemons whose pid file is gone (e.g. the state dir was deleted under a running cluster): any etcd or
# kube binary whose command line names this state dir.
stray_pids() {
    local p exe
    for p in /proc/[0-9]*; do
        exe="$(readlink "$p/exe" 2>/dev/null || true)"
        case "$(basename "${exe% (deleted)}")" in
        etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet) ;;
        *) continue ;;
        esac
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$DIR/" && echo "${p#/proc/}"
    done
    return 0
}

mounts_under() { # mount points at or below a dir, deepest first
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

remove_pod_containers() {
    if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
        log "Docker does not answer; cannot remove pod containers (rerun $0 down once Docker is up)"
        return 0
    fi
    # Containers the dockershim made: named k8s_<container>_<pod>_... and labelled with the pod name.
    # The Docker engine is shared, so this removes every kubelet-made container on it (there is only
    # ever this one kubelet on a test machine).
    local ids
    ids="$(docker ps -a --filter label=io.kubernetes.pod.name --format '{{.ID}} {{.Names}}' |
        awk '$2 ~ /^k8s_/ { print $1 }')"
    if [ -n "$ids" ]; then
        log "removing $(echo "$ids" | wc -l) pod container(s)"
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null || true
    fi
}

remove_kubepods_cgroups() {
    # cgroup v1: the kubelet creates kubepods (and kubepods/{burstable,besteffort}/pod<uid>) under every
    # controller's hierarchy. rmdir leaf-first; a cgroup can take a moment to empty after its last
    # process exits, so retry a few times.
    local d left
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=0
        for d in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods*; do
            [ -d "$d" ] || continue
            find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [ -d "$d" ] && left=1
        done
        [ "$left" -eq 0 ] && return 0
        sleep 0.5
    done
    log "warning: could not remove: $(ls -d /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods* 2>/dev/null | tr '\n' ' ')"
}

clean_host_dirs() { # remove what the kubelet added to HOST_DIRS (as recorded by up)
    local hd before e
    [ -f "$DIR/host-dirs/recorded" ] || return 0 # up never got that far: nothing of ours there
    for hd in "${HOST_DIRS[@]}"; do
        [ -d "$hd" ] || continue
        before="$DIR/host-dirs/$(host_dir_key "$hd").before"
        if [ ! -f "$before" ]; then
            rm -rf --one-file-system -- "$hd" # did not exist before up
            continue
        fi
        while IFS= read -r e; do
            grep -qxF -- "$e" "$before" || rm -rf --one-file-system -- "${hd:?}/$e"
        done < <(ls -A "$hd")
    done
}

do_down() {
    # 1. The kubelet first, so it stops restarting containers.
    stop_proc kubelet
    # 2. The pods' containers.
    remove_pod_containers
    # 3. The control plane, top down.
    local c p
    for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_proc "$c"; done
    for p in $(stray_pids); do
        log "stopping stray $(readlink /proc/"$p"/exe 2>/dev/null) ($p)"
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.5
    for p in $(stray_pids); do kill -KILL "$p" 2>/dev/null || true; done
    # 4. Mounts (secret/emptyDir tmpfs, the kubelet root's own rshared bind mount), deepest first; repeat
    #    for stacked mounts.
    local m
    for _ in 1 2 3 4 5; do
        [ -n "$(mounts_under "$DIR")" ] || break
        for m in $(mounts_under "$DIR"); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    done
    [ -z "$(mounts_under "$DIR")" ] || die "still mounted under $DIR: $(mounts_under "$DIR" | tr '\n' ' ')"
    # 5. cgroups, host sysctls, pod logs.
    remove_kubepods_cgroups
    if [ -f "$DIR/sysctl.saved" ]; then
        local s v
        while read -r s v; do echo "$v" >"/proc/sys/$s" 2>/dev/null || true; done <"$DIR/sysctl.saved"
    fi
    clean_host_dirs
    # 6. The state dir (--one-file-system: never follow a mount we failed to see).
    rm -rf --one-file-system "$DIR"
}

cmd_down() {
    need_root down
    exec 9>"$DIR.lock"
    flock 9
    local had_state=0
    [ -e "$DIR" ] && had_state=1
    do_down
    exec 9>&-
    rm -f "$DIR.lock"
    if [ "$had_state" -eq 1 ]; then log "down: cluster in $DIR removed"; else log "down: nothing was up in $DIR"; fi
}

# ---------------------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------------------

cmd_env() {
    local gw
    gw="$(gateway_ip)"
    if [ ! -f "$DIR/kubeconfig" ]; then log "warning: no cluster in $DIR yet; run: $0 up"; fi
    printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
    printf 'export RUNNER_K8S_API_SERVER=%q\n' "$API_URL"
    printf 'export RUNNER_K8S_NODE_NAME=%q\n' "$NODE_NAME"
    # Address pods use to reach services on the host (Docker's default bridge gateway).
    printf 'export RUNNER_K8S_GATEWAY_HOST=%q\n' "$gw"
}

# ---------------------------------------------------------------------------------------------------
# run: up, the command with RUNNER_TEST_KUBECONFIG and RUNNER_TEST_GATEWAY_HOST (where pods reach the
# host) set, down (whatever the command's outcome)
# ---------------------------------------------------------------------------------------------------

cmd_run() {
    [ "$#" -gt 0 ] || die "usage: $0 run COMMAND [ARG...]"
    local started status
    started=$(date +%s)
    trap 'cmd_down' EXIT
    cmd_up
    log "cluster ready after $(($(date +%s) - started)) s"
    status=0
    RUNNER_TEST_KUBECONFIG="$DIR/kubeconfig" RUNNER_TEST_GATEWAY_HOST="$(gateway_ip)" "$@" || status=$?
    log "run: the command exited $status after $(($(date +%s) - started)) s"
    return "$status"
}

case "${1:-}" in
build) cmd_build ;;
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
run)
    shift
    cmd_run "$@"
    ;;
*)
    echo "usage: $0 build|up|down|env|run COMMAND..." >&2
    exit 2
    ;;
esac
