#!/usr/bin/env bash
# tests/golden.sh check|record TRAIN_BIN DATA [EXPECTED_DIR]
#
# The numerics against a golden record: short runs of small models through the real
# binary (training with validation, periodic samples and checkpoints; eval; sample; export;
# loading and resuming a checkpoint written by an earlier version of the program), each
# output compared byte for byte with tests/fixtures/golden/ (EXPECTED_DIR). The record was
# made by the code before the model moved behind model/model.h; `record` rewrites it (only
# for a deliberate change of the numerics).
#
# What is compared: metrics.csv without its timing columns (tok_per_s, elapsed_s),
# samples.txt, the `eval:` lines, `./train sample` output, the export's SHA-256, and the
# rows a resumed tests/fixtures/ckpt-v2-tiny.bin adds. Everything runs at --threads 2: the
# results are bit-identical at a fixed thread count (README, "Checkpoints and resume").
# Prints "ok NAME" / "FAIL NAME" per comparison and "RESULT passed=N failed=M".
set -u
mode=$1; bin=$2; data=$3
here=$(cd "$(dirname "$0")" && pwd)
exp=${4:-$here/fixtures/golden}
ckpt_fixture=$here/fixtures/ckpt-v2-tiny.bin
tmp=$(mktemp -d /tmp/flash-golden.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# OpenBLAS's kernels differ per CPU (AVX2, AVX-512) and so do the last bits of a product; the
# record was made with its Haswell (AVX2 + FMA) kernels, which every x86-64 CPU with AVX2
# runs, so they are asked for by name (FLASH_BLAS_CORE=env: flash.c keeps them). On an
# AVX-512 machine the automatic choice (SkylakeX, Cooperlake) differs from the record from
# the first step's gradient on.
if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    echo "skip golden: the record's OpenBLAS kernels (Haswell) need AVX2, which this CPU lacks"
    echo "RESULT passed=0 failed=0 skipped=14"
    exit 0
fi
export FLASH_BLAS_CORE=env OPENBLAS_CORETYPE=Haswell
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

# the deterministic columns of metrics.csv: step,tokens,lr,train_loss,val_loss,val_bpc,grad_norm
metrics_det() { cut -d, -f1-7 "$1"; }

A="--dim 64 --depth 2 --group-size 32 --qk-dim 32 --seq-len 128 --batch 2 --accum 2 --threads 2
   --steps 30 --warmup 5 --eval-every 10 --eval-windows 4 --sample-every 15 --sample-len 64
   --sample-prime 40 --ckpt-every 10 --seed 7"
B="--preset flash-pytorch --dim 32 --depth 1 --group-size 16 --qk-dim 16 --expansion 1.5
   --norm layernorm --attn-fn relu2 --no-shift-tokens --seq-len 48 --batch 3 --accum 1
   --threads 2 --steps 12 --eval-every 6 --eval-windows 3 --sample-every 6 --sample-len 40
   --sample-prime 30 --ckpt-every 6 --seed 11"
# shellcheck disable=SC2086
{
run train_a "$data" --out "$tmp/a" $A &&
    metrics_det "$tmp/a/metrics.csv" > "$got/a.metrics" && cp "$tmp/a/samples.txt" "$got/a.samples"
run train_b "$data" --out "$tmp/b" $B &&
    metrics_det "$tmp/b/metrics.csv" > "$got/b.metrics" && cp "$tmp/b/samples.txt" "$got/b.samples"
run eval_a_test eval "$tmp/a" "$data" --threads 2 && grep '^eval:' "$got/eval_a_test.out" > "$got/a.eval_test"
run eval_a_val eval "$tmp/a" "$data" --split val --seq-len 100 --batch 3 --threads 2 &&
    grep '^eval:' "$got/eval_a_val.out" > "$got/a.eval_val"
run eval_b eval "$tmp/b" "$data" --threads 2 && grep '^eval:' "$got/eval_b.out" > "$got/b.eval_test"
run sample_a sample "$tmp/a" --len 100 --seed 3 --num-samples 2 --prompt "The " --threads 2 &&
    cp "$got/sample_a.out" "$got/a.sample"
run sample_a_long sample "$tmp/a" --len 50 --seed 4 --threads 2 \
    --prompt "[[Category:Anarchism]] and a prompt longer than two groups of thirty-two bytes each" &&
    cp "$got/sample_a_long.out" "$got/a.sample_long"
run sample_b sample "$tmp/b" --len 60 --seed 5 --temperature 0.7 --threads 2 && cp "$got/sample_b.out" "$got/b.sample"
run export_a export "$tmp/a" "$tmp/a.safetensors" && sha256sum < "$tmp/a.safetensors" > "$got/a.export_sha256"
# the checkpoint written by the earlier program: loads, evaluates, samples, resumes
mkdir -p "$tmp/c"
cp "$ckpt_fixture" "$tmp/c/ckpt-00000005.bin"
run eval_ckpt eval "$ckpt_fixture" "$data" --threads 2 && grep '^eval:' "$got/eval_ckpt.out" > "$got/ckpt.eval"
run sample_ckpt sample "$ckpt_fixture" --len 40 --seed 9 --threads 2 && cp "$got/sample_ckpt.out" "$got/ckpt.sample"
run resume_ckpt --resume "$tmp/c" "$data" --threads 2 && metrics_det "$tmp/c/metrics.csv" > "$got/ckpt.resumed_metrics"
}

names="a.metrics a.samples b.metrics b.samples a.eval_test a.eval_val b.eval_test a.sample a.sample_long
       b.sample a.export_sha256 ckpt.eval ckpt.sample ckpt.resumed_metrics"
if [ "$mode" = record ]; then
    mkdir -p "$exp"
    for n in $names; do cp "$got/$n" "$exp/$n"; done
    echo "recorded $(echo $names | wc -w) outputs in $exp"
fi
for n in $names; do
    if [ ! -f "$got/$n" ]; then
        echo "FAIL golden $n: not produced"; failed=$((failed + 1))
    elif cmp -s "$got/$n" "$exp/$n"; then
        echo "ok   golden $n"; passed=$((passed + 1))
    else
        echo "FAIL golden $n: differs from the record"; diff "$exp/$n" "$got/$n" | head -6 | sed 's/^/  /'
        failed=$((failed + 1))
    fi
done
echo "RESULT passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
