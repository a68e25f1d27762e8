#!/bin/sh
# Prepares a Debian-based image for Aider; runs as root in both build stages.
# - adds /tmp/runner/ca-bundle.crt (when not empty) to the system trust store;
# - installs git and python3-venv with apt when the base lacks them (runner/base has both);
# - makes sure uid 1000 exists and owns /workspace and /home/runner;
# - sets a system-wide git identity (else Aider writes a placeholder into each repo's config)
#   and safe.directory '*'.
set -eu

missing=""
command -v git >/dev/null 2>&1 || missing="$missing git"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
command -v update-ca-certificates >/dev/null 2>&1 || missing="$missing ca-certificates"
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null 2>&1 ||
    { echo "images/aider: the base image lacks$missing and has no apt-get: use a Debian-based BASE" >&2; exit 1; }
  echo "images/aider: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  rm -rf /var/lib/apt/lists/*
fi

if [ -s /tmp/runner/ca-bundle.crt ]; then
  # Adds the bundle's certificates that the system store lacks (a host bundle repeats most of
  # them), one per file, so update-ca-certificates links each by its hash.
  dir=/usr/local/share/ca-certificates/runner
  trusted=/etc/ssl/certs/ca-certificates.crt
  [ -f "$trusted" ] || trusted=/dev/null
  mkdir -p "$dir"
  set -- $(awk -v dir="$dir" '
    { sub(/\r$/, "") }
    /-----BEGIN CERTIFICATE-----/ { pem = ""; inside = 1 }
    inside { pem = pem $0 "\n" }
    /-----END CERTIFICATE-----/ && inside {
      inside = 0
      if (FILENAME == ARGV[1]) { known[pem] = 1; next }
      total++
      if (pem in known) next
      known[pem] = 1; added++
      file = sprintf("%s/build-ca-%04d.crt", dir, added)
      printf "%s", pem > file; close(file)
    }
    END { print total + 0, added + 0 }
  ' "$trusted" /tmp/runner/ca-bundle.crt)
  [ "$1" -gt 0 ] ||
    { echo "images/aider: the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)" >&2; exit 1; }
  echo "images/aider: the CA bundle holds $1 certificates, $2 of them new to the system trust store"
  [ "$2" -eq 0 ] || update-ca-certificates >/dev/null
fi

if ! getent passwd 1000 >/dev/null; then
  getent group 1000 >/dev/null || groupadd --gid 1000 runner
  useradd --uid 1000 --gid 1000 --no-create-home --home-dir /home/runner --shell /bin/sh runner
fi
mkdir -p /home/runner /workspace
chown 1000:1000 /home/runner /workspace

git config --system user.name runner
git config --system user.email runner@localhost
git config --system --get-all safe.directory 2>/dev/null | grep -qx '\*' ||
  git config --system --add safe.directory '*'
