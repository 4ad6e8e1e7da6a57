#!/usr/bin/env bash
# Installs the system libraries Refract needs when they are missing (Debian/Ubuntu), then checks
# for a Swift 6 toolchain. Safe to run repeatedly; used by scripts/example.sh and scripts/test.sh.
set -euo pipefail

packages=(libopenblas0-pthread libjpeg62-turbo-dev libpng-dev zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$d/swift" ] && export PATH="$d:$PATH"
  done
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "setup: no Swift toolchain found. Install Swift 6.0 or later from swift.org and put it on PATH." >&2
  exit 1
fi
