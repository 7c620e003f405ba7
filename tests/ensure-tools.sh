#!/usr/bin/env bash
# Makes sure the Debian tools that the tests run as real servers and tools are installed, before
# any test starts (`make tools`; `make test`, `make integration` and `make e2e` run it first):
#
#   alertmanager     package prometheus-alertmanager  a real Alertmanager for the alert sinks
#   promtool         package prometheus               the alerting rules and the /metrics page
#   systemd-analyze  package systemd                  the unit's verify and security score
#
# Nothing missing: silent, exit 0. Something missing: as root, or with passwordless sudo, it runs
# `apt-get update` once and `apt-get install --no-install-recommends` with exactly the missing
# packages, then prints one line saying what it installed and why. Otherwise it prints the
# command to run and exits 2 at once, so nobody waits for a test run that cannot pass.
set -euo pipefail

# "<names the binary may have, Debian's first>:<package>"
tools=(
  "prometheus-alertmanager alertmanager:prometheus-alertmanager"
  "promtool:prometheus"
  "systemd-analyze:systemd"
)

# Fills missing_tools and missing_packages from what is on PATH now.
look() {
  missing_tools=()
  missing_packages=()
  local entry name found
  for entry in "${tools[@]}"; do
    found=""
    for name in ${entry%%:*}; do
      if command -v "$name" >/dev/null 2>&1; then
        found="$name"
        break
      fi
    done
    if [ -z "$found" ]; then
      name="${entry%%:*}"
      missing_tools+=("${name##* }")
      missing_packages+=("${entry##*:}")
    fi
  done
}

look
[ "${#missing_tools[@]}" -eq 0 ] && exit 0

packages=("${missing_packages[@]}")
list="$(printf '%s, ' "${missing_tools[@]}")"
why="${list%, } missing; the tests run them as real servers and tools"

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  {
    echo "ensure-tools: $why. Not root and no passwordless sudo: install them, then run the tests again:"
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${packages[*]}"
  } >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: $why; no apt-get here: install the Debian packages ${packages[*]} or their equivalents" >&2
  exit 2
fi

# apt's chatter is shown only when it fails: stdout carries one line about what happened.
apt() {
  local output
  if ! output="$("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" 2>&1)"; then
    printf '%s\n' "$output" >&2
    echo "ensure-tools: apt-get $1 failed (output above)" >&2
    exit 1
  fi
}

SECONDS=0
apt update -qq
apt install -y -qq --no-install-recommends "${packages[@]}"

look
if [ "${#missing_tools[@]}" -ne 0 ]; then
  echo "ensure-tools: installed ${packages[*]}, but ${missing_tools[*]} still not on PATH ($PATH)" >&2
  exit 1
fi
echo "ensure-tools: installed ${packages[*]} in ${SECONDS} s ($why)"
