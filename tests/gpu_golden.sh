#!/usr/bin/env bash
# tests/gpu_golden.sh check|record TRAIN_BIN DATA [EXPECTED_DIR]
#
# The GPU's numerics against a record, as tests/golden.sh does for the CPU: the CUDA backend
# is deterministic (fixed launch shapes, no atomics in the sums), so short runs on one GPU
# give the same bytes every time. Made before a change that must not move the numbers (the
# rooms of issue 19) and checked after it, on the same kind of GPU.
#
# For fp32 and bf16 each: a small model with every option flipped (layernorm, relu2, no
# token shift, an odd group count) and the train.py model (--preset flash-pytorch) for a few
# steps, each with validation, samples and a checkpoint; then `eval` and `sample` of the
# run on the GPU. Compared: metrics.csv without its timing columns, samples.txt, the
# `eval:` lines, the sample's text. Needs a GPU; prints "ok"/"FAIL" lines and
# "RESULT passed=N failed=M".
set -u
mode=$1; bin=$2; data=$3
here=$(cd "$(dirname "$0")" && pwd)
exp=${4:-$here/fixtures/gpu-golden}
tmp=$(mktemp -d /tmp/flash-gpu-golden.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
got=$tmp/got
mkdir -p "$got"
passed=0; failed=0

run() {  # name, args...: runs the binary, keeps stdout in $got/NAME.out
    local name=$1; shift
    if ! "$bin" "$@" > "$got/$name.out" 2> "$tmp/$name.err"; then
        echo "FAIL $name: ./train $* exited non-zero"; sed 's/^/  /' "$tmp/$name.err" | tail -5
        failed=$((failed + 1)); return 1
    fi
}
metrics_det() { cut -d, -f1-7 "$1"; }

S="--dim 96 --depth 2 --group-size 48 --qk-dim 32 --expansion 1.5 --norm layernorm --attn-fn relu2
   --no-shift-tokens --seq-len 240 --batch 3 --accum 2 --steps 12 --warmup 3 --eval-every 6
   --eval-windows 4 --sample-every 6 --sample-len 64 --sample-prime 40 --ckpt-every 6 --seed 5"
L="--preset flash-pytorch --batch 4 --accum 1 --steps 8 --eval-every 4 --eval-windows 4
   --sample-every 8 --sample-len 96 --sample-prime 64 --ckpt-every 8 --seed 9"
names=""
for p in fp32 bf16; do
    for m in s l; do
        if [ $m = s ]; then args=$S; else args=$L; fi
        # shellcheck disable=SC2086
        run "train_${m}_$p" "$data" --device cuda --precision $p --out "$tmp/$m$p" $args &&
            metrics_det "$tmp/$m$p/metrics.csv" > "$got/$m.$p.metrics" &&
            cp "$tmp/$m$p/samples.txt" "$got/$m.$p.samples"
        run "eval_${m}_$p" eval "$tmp/$m$p" "$data" --device cuda --precision $p --split val --seq-len 200 --batch 2 &&
            grep '^eval:' "$got/eval_${m}_$p.out" > "$got/$m.$p.eval"
        run "sample_${m}_$p" sample "$tmp/$m$p" --device cuda --precision $p --len 120 --seed 3 \
            --num-samples 2 --prompt "The " && cp "$got/sample_${m}_$p.out" "$got/$m.$p.sample"
        names="$names $m.$p.metrics $m.$p.samples $m.$p.eval $m.$p.sample"
    done
done

if [ "$mode" = record ]; then
    mkdir -p "$exp"
    for n in $names; do [ -f "$got/$n" ] && cp "$got/$n" "$exp/$n"; done
    echo "recorded in $exp"
fi
for n in $names; do
    if [ ! -f "$got/$n" ]; then
        echo "FAIL gpu-golden $n: not produced"; failed=$((failed + 1))
    elif cmp -s "$got/$n" "$exp/$n"; then
        echo "ok   gpu-golden $n"; passed=$((passed + 1))
    else
        echo "FAIL gpu-golden $n: differs from the record"; diff "$exp/$n" "$got/$n" | head -6 | sed 's/^/  /'
        failed=$((failed + 1))
    fi
done
echo "RESULT passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
