#!/usr/bin/env bash
# Installs the system libraries Refract needs when they are missing (Debian/Ubuntu), then checks
# for a Swift 6 toolchain. Safe to run repeatedly; used by scripts/example.sh and scripts/test.sh.
# A caller may name more Debian packages in the array extra_packages (empty by default).
set -euo pipefail

packages=(libopenblas0-pthread libjpeg62-turbo-dev libpng-dev zlib1g-dev)
# What a caller needs beyond the build: scripts/test.sh sets extra_packages (a headless browser, its
# WebDriver and an HTTP load generator, for the explorer's tests) before sourcing this file. They are
# installed the same way when the distribution has them; one it lacks, or that fails to install, is
# reported and left out (the tests that need it skip), so that the build and the other tests still run.
extras=(${extra_packages[@]+"${extra_packages[@]}"})
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
missing_extras=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
for p in ${extras[@]+"${extras[@]}"}; do installed "$p" || missing_extras+=("$p"); done
if [ $((${#missing[@]} + ${#missing_extras[@]})) -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # apt-get install -qq still says "debconf: delaying package configuration" and the like on
  # stderr: its output is shown only when it fails.
  apt_install() {
    local log
    log=$($sudo apt-get install -y -qq --no-install-recommends "$@" 2>&1 >/dev/null) || { echo "$log" >&2; return 1; }
  }
  $sudo apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt_install "${missing[@]}"
  fi
  available=()
  for p in ${missing_extras[@]+"${missing_extras[@]}"}; do
    if apt-cache show "$p" >/dev/null 2>&1; then available+=("$p")
    else echo "setup: no package $p here; the tests that need it will be skipped" >&2; fi
  done
  if [ ${#available[@]} -gt 0 ]; then
    echo "setup: installing ${available[*]} (for the tests)" >&2
    apt_install "${available[@]}" || echo "setup: could not install ${available[*]}; the tests that need them will be skipped" >&2
  fi
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
