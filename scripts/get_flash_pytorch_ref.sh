#!/usr/bin/env bash
# scripts/get_flash_pytorch_ref.sh FLASH_GIT_DIR ROTARY_GIT_DIR [OUT_DIR]
#
# Puts the Python files of the reference implementation into OUT_DIR (default ref/, which
# .gitignore keeps out of the repository: never commit them), for
# scripts/flash_pytorch_ref_bench.py: flash_pytorch/ from a git directory (a clone, bare or
# not) of lucidrains/FLASH-pytorch at tag 0.1.9, and rotary_embedding_torch/ from one of
# lucidrains/rotary-embedding-torch at tag 0.8.9 (FLASH-pytorch asks for >= 0.1.5; 0.8.9 needs
# torch >= 2.0 and einops >= 0.7). Only the package files are copied (about 40 KB), so the
# folder can travel with a copy of the working tree. OUT_DIR/SOURCE.txt records the commits.
# Alternatively `pip install flash-pytorch==0.1.9` and leave --ref out.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
flash=$1 rotary=$2
out=${3:-"$(cd "$(dirname "$0")/.." && pwd)/ref"}
flash_tag=${FLASH_TAG:-0.1.9} rotary_tag=${ROTARY_TAG:-0.8.9}
for d in "$flash" "$rotary"; do
    git --git-dir="$d" rev-parse --git-dir >/dev/null 2>&1 || git -C "$d" rev-parse --git-dir >/dev/null 2>&1 ||
        { echo "error: $d is not a git directory" >&2; exit 1; }
done
g() { if [ -d "$1/objects" ]; then git --git-dir="$1" "${@:2}"; else git -C "$1" "${@:2}"; fi; }
mkdir -p "$out"
rm -rf "$out/flash_pytorch" "$out/rotary_embedding_torch"
g "$flash" archive "$flash_tag" flash_pytorch | tar -x -C "$out"
g "$rotary" archive "$rotary_tag" rotary_embedding_torch | tar -x -C "$out"
{
    echo "flash_pytorch: lucidrains/FLASH-pytorch $flash_tag $(g "$flash" rev-parse "$flash_tag^{commit}")"
    echo "rotary_embedding_torch: lucidrains/rotary-embedding-torch $rotary_tag $(g "$rotary" rev-parse "$rotary_tag^{commit}")"
} >"$out/SOURCE.txt"
cat "$out/SOURCE.txt"
du -sh "$out"
