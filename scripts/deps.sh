#!/usr/bin/env bash
# Installs the system packages that building, running and testing Hypervisor need.
# Idempotent: prints nothing and touches nothing when every package is present.
# Runs apt-get only for what is missing (as root, or through sudo).
set -euo pipefail

packages=(
    # build: C libraries reached through the system-library targets
    libfcgi-dev libpq-dev libhiredis-dev libssl-dev
    # the embedded stack: PostgreSQL 15 (server + psql), Redis, nginx
    postgresql-15 postgresql-client-15 redis-server redis-tools nginx-light
    # tools the scripts, tests and benchmarks use
    curl wrk gettext-base procps util-linux python3 ca-certificates
)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == installed ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "deps.sh: missing packages (${missing[*]}); run as root or install sudo" >&2; exit 1; }
    sudo=(sudo)
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
# Without systemd, Debian's maintainer scripts would start the packaged PostgreSQL, Redis and
# nginx through init.d; we run private instances instead, so forbid that while installing.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -d /run/systemd/system && ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
fi
status=0
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
((added_policy)) && "${sudo[@]}" rm -f "$policy"
exit "$status"
