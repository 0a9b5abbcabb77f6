#!/usr/bin/env bash
# Install the named Debian packages if any is missing. Tests and benchmarks call
# this so that a fresh machine (or CI) gets what they need without a manual step.
# Without root or apt-get it only warns: the tests that need the tools then skip.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: missing Debian packages ${missing[*]} (need root and apt-get to install); tests that use them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
