#!/usr/bin/env bash
# scripts/find_shared.sh: prints the directory that holds the shared test data (fixtures/
# and data/enwik8-head.gz), which the project never copies into itself. In order:
#   $FLASH_SHARED;
#   ../shared beside this checkout (the documented place);
#   ../shared beside the checkout this one was cloned from, when its origin is a local
#   directory (a fresh clone in /tmp of a checkout that sits beside shared/).
# Prints nothing when none has fixtures/.
cd "$(dirname "$0")/.." || exit 0
has() { [ -n "$1" ] && [ -d "$1/fixtures" ]; }
if has "${FLASH_SHARED:-}"; then echo "$FLASH_SHARED"; exit 0; fi
if has ../shared; then (cd ../shared && pwd); exit 0; fi
origin=$(git config --get remote.origin.url 2>/dev/null || true)
origin=${origin#file://}
if [ -n "$origin" ] && [ -d "$origin" ] && has "$origin/../shared"; then
    (cd "$origin/../shared" && pwd); exit 0
fi
exit 0
