#!/usr/bin/env bash
# scripts/bench_compare.sh [--reps N] [THREADS...]
#
# flash.c's training step (./train bench) against a PyTorch model written from the same spec
# (scripts/flash_torch.py bench; needs python3 with torch), the train.py model, 4 x 1,024
# tokens, on this machine. On a shared machine one pair of runs can be off by 30%, so:
#  * at each thread count (default: 2 and all cores), N rounds (default 3), each round one run
#    of each program, their order alternating; it prints every run, then the medians and
#    their ratio;
#  * parallel efficiency: N rounds of flash.c at 1 thread and at the last thread count,
#    interleaved; tok/s(T) / (T x tok/s(1)) of the medians;
#  * linear in context, at the last thread count: 16,384 tokens per step as 16 x 1,024 and
#    as 2 x 8,192.
# Build first with `make train`. Each run's last line goes to stdout; the summary lines start
# with "compare:", "efficiency:", "gemm-efficiency:" (the same medians for the GEMM rate each
# bench measured) and "context:".
set -euo pipefail
cd "$(dirname "$0")/.."
reps=3
if [ "${1:-}" = "--reps" ]; then reps=$2; shift 2; fi
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(2 "$(nproc)")
have_torch=0
python3 -c 'import torch' 2>/dev/null && have_torch=1
tok() { sed 's/.*tok_per_s=\([0-9.]*\).*/\1/'; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
steps_for() { if [ "$1" -le 1 ]; then echo 3; elif [ "$1" -le 4 ]; then echo 6; else echo 20; fi; }
ours() { ./train bench --threads "$1" --steps "$(steps_for "$1")" | tail -1; }
theirs() { python3 scripts/flash_torch.py bench --threads "$1" --steps 5 | tail -1; }

for t in "${threads[@]}"; do
    a=(); b=()
    for r in $(seq "$reps"); do
        if [ $((r % 2)) -eq 1 ] || [ $have_torch -eq 0 ]; then
            o=$(ours "$t"); echo "$o"; a+=("$(tok <<<"$o")")
            if [ $have_torch -eq 1 ]; then p=$(theirs "$t"); echo "$p"; b+=("$(tok <<<"$p")"); fi
        else
            p=$(theirs "$t"); echo "$p"; b+=("$(tok <<<"$p")")
            o=$(ours "$t"); echo "$o"; a+=("$(tok <<<"$o")")
        fi
    done
    ma=$(printf '%s\n' "${a[@]}" | median)
    if [ $have_torch -eq 1 ]; then
        mb=$(printf '%s\n' "${b[@]}" | median)
        echo "compare: threads=$t rounds=$reps flash_c_median=$ma torch_median=$mb ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", a/b}')"
    else
        echo "compare: threads=$t rounds=$reps flash_c_median=$ma (no torch here)"
    fi
done

t=${threads[-1]}
one=(); many=(); gone=(); gmany=()
gemm() { sed 's/.*gemm_gflops=\([0-9.]*\).*/\1/'; }
for r in $(seq "$reps"); do
    o=$(ours 1); echo "$o"; one+=("$(tok <<<"$o")"); gone+=("$(gemm <<<"$o")")
    o=$(ours "$t"); echo "$o"; many+=("$(tok <<<"$o")"); gmany+=("$(gemm <<<"$o")")
done
m1=$(printf '%s\n' "${one[@]}" | median); mt=$(printf '%s\n' "${many[@]}" | median)
g1=$(printf '%s\n' "${gone[@]}" | median); gt=$(printf '%s\n' "${gmany[@]}" | median)
echo "efficiency: threads=1->$t rounds=$reps tok_per_s_1=$m1 tok_per_s_$t=$mt efficiency=$(awk -v a="$m1" -v b="$mt" -v t="$t" 'BEGIN{printf "%.3f", b/(t*a)}')"
# the same for the one GEMM each bench measured first (OpenBLAS's threading, the step's
# largest shape): how well the machine's own GEMM scales in these runs
echo "gemm-efficiency: threads=1->$t rounds=$reps gemm_gflops_1=$g1 gemm_gflops_$t=$gt efficiency=$(awk -v a="$g1" -v b="$gt" -v t="$t" 'BEGIN{printf "%.3f", b/(t*a)}')"

short=$(./train bench --threads "$t" --batch 16 --seq-len 1024 --steps 5 | tail -1)
long=$(./train bench --threads "$t" --batch 2 --seq-len 8192 --steps 5 | tail -1)
echo "T=1024: $short"
echo "T=8192: $long"
echo "context: threads=$t tok_per_s_T8192_over_T1024=$(awk -v a="$(tok <<<"$short")" -v b="$(tok <<<"$long")" 'BEGIN{printf "%.3f", b/a}')"
