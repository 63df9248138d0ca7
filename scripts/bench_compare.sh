#!/usr/bin/env bash
# scripts/bench_compare.sh [THREADS...]: flash.c's training step against a PyTorch model
# written from the same spec (scripts/flash_torch.py; needs python3 with torch), on this
# machine, at each thread count (default: 2 and all cores), then linear-in-context: 16,384
# tokens per step as 16 x 1,024 and as 2 x 8,192. Build first with `make train`.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(2 "$(nproc)")
for t in "${threads[@]}"; do
    ours=$(./train bench --threads "$t" | tail -1)
    echo "$ours"
    if python3 -c 'import torch' 2>/dev/null; then
        theirs=$(python3 scripts/flash_torch.py bench --threads "$t" --steps 3 | tail -1)
        echo "$theirs"
        a=$(sed 's/.*tok_per_s=\([0-9.]*\).*/\1/' <<<"$ours")
        b=$(sed 's/.*tok_per_s=\([0-9.]*\).*/\1/' <<<"$theirs")
        echo "compare: threads=$t flash_c_over_torch=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}')"
    fi
done
t=${threads[-1]}
short=$(./train bench --threads "$t" --batch 16 --seq-len 1024 --steps 5 | tail -1)
long=$(./train bench --threads "$t" --batch 2 --seq-len 8192 --steps 5 | tail -1)
echo "T=1024: $short"
echo "T=8192: $long"
a=$(sed 's/.*tok_per_s=\([0-9.]*\).*/\1/' <<<"$short")
b=$(sed 's/.*tok_per_s=\([0-9.]*\).*/\1/' <<<"$long")
echo "context: threads=$t tok_per_s_T8192_over_T1024=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", b/a}')"
