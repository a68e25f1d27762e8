#!/usr/bin/env bash
# Builds the root file system of runner/base:bookworm with debootstrap and writes it as a tar
# stream to the file named by $1. The runner imports that tar into the engine (no registry needed).
#
# Environment:
#   RUNNER_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   RUNNER_CA_BUNDLE      a PEM file added to the image's trust store (TLS-inspecting proxies)
#   RUNNER_BASE_SUITE     Debian suite (default bookworm)
set -euo pipefail

out=${1:?usage: build.sh OUTPUT.tar}
mirror=${RUNNER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${RUNNER_BASE_SUITE:-bookworm}

if [ "$(id -u)" -ne 0 ]; then
  echo "images/base: debootstrap needs root; run 'sudo runner images build base'" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "images/base: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null; }
  fi
  command -v debootstrap >/dev/null 2>&1 ||
    { echo "images/base: debootstrap is missing: install it (apt-get install debootstrap)" >&2; exit 1; }
fi

root=$(mktemp -d /tmp/runner-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase \
  --include=python3,python3-venv,git,ca-certificates \
  "$suite" "$root" "$mirror" >&2

if [ -n "${RUNNER_CA_BUNDLE:-}" ]; then
  [ -r "$RUNNER_CA_BUNDLE" ] || { echo "images/base: RUNNER_CA_BUNDLE=$RUNNER_CA_BUNDLE is not readable" >&2; exit 1; }
  cp "$RUNNER_CA_BUNDLE" "$root/usr/local/share/ca-certificates/runner-host-ca.crt"
  chroot "$root" update-ca-certificates >/dev/null
fi

# An unprivileged user (uid 1000) that owns /workspace; the runner starts containers as this uid.
chroot "$root" groupadd --gid 1000 runner
chroot "$root" useradd --uid 1000 --gid 1000 --create-home --shell /bin/sh runner
mkdir -p "$root/workspace"
chown 1000:1000 "$root/workspace"
chroot "$root" git config --system --add safe.directory '*'

# Keep the image small: package lists and caches are not needed at run time.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*

tar --numeric-owner --xattrs -C "$root" -cf "$out" .
