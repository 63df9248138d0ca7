#!/usr/bin/env bash
# scripts/setup.sh: install the Debian/Ubuntu packages the build needs, if missing.
#
#   build-essential         gcc, make, libc headers
#   libopenblas-openmp-dev  the OpenMP build of OpenBLAS: the Makefile links
#                           /usr/lib/x86_64-linux-gnu/openblas-openmp, and the OpenMP
#                           build shares threads with our own OpenMP loops instead of
#                           oversubscribing the cores as the pthread build would
#   zlib1g-dev              reading enwik8.gz
#   libpng-dev              writing plots
#   libjansson-dev          reading JSON (settings, configs, safetensors headers): strict
#                           parsing, and JSON_REJECT_DUPLICATES refuses repeated keys
#   libopenmpi-dev          data parallel training (mpirun -np N ./train): the Makefile
#   openmpi-bin             builds MPI in when it finds mpicc; mpirun starts the ranks
#
# Does nothing (not even apt-get update) when everything is already installed, so it is
# safe to run before every build.
set -euo pipefail

packages=(build-essential libopenblas-openmp-dev zlib1g-dev libpng-dev libjansson-dev libopenmpi-dev openmpi-bin)

die() { echo "setup: error: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 ||
    die "dpkg-query not found: this script supports Debian/Ubuntu only; install by hand: ${packages[*]}"

missing=()
for p in "${packages[@]}"; do
    # Exactly "install ok installed" means present; a removed-but-configured package
    # ("deinstall ok config-files") or an unknown one (dpkg-query fails) is missing.
    # shellcheck disable=SC2016  # ${Status} is dpkg-query's field, not a shell variable
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup: all dependencies present"
    exit 0
fi

echo "setup: missing: ${missing[*]}"

command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; install these packages with your system's package manager: ${missing[*]}"

# Root runs apt-get directly (containers usually have no sudo); others go through sudo.
if [[ "$(id -u)" -eq 0 ]]; then
    as_root() { "$@"; }
else
    command -v sudo >/dev/null 2>&1 ||
        die "not running as root and sudo is not available; as root run: apt-get install ${missing[*]}"
    as_root() { sudo "$@"; }
fi

as_root apt-get update ||
    die "apt-get update failed (offline, or no access to the package mirrors?)"
# env (not an exported variable) so the setting survives sudo's environment reset.
as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}" ||
    die "apt-get install failed for: ${missing[*]}"

echo "setup: installed ${missing[*]}"
