#!/usr/bin/env bash
# Installs the Debian packages Tandem needs to build, test, demo and benchmark.
# Idempotent and quiet when everything is present; `make deps` calls it.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
list=${1:-$here/debian-packages.txt}
mapfile -t pkgs < <(grep -v '^\s*#' "$list" | awk 'NF{print $1}')
missing=()
for p in "${pkgs[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [[ $st == ii* ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if ((EUID != 0)); then
    echo "deps: missing packages: ${missing[*]}; run 'make deps' as root" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
