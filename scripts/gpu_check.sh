#!/usr/bin/env bash
# scripts/gpu_check.sh [--no-build] [--evidence DIR] [--compare] [--reproduce]: one round
# of the GPU work on a machine with a GPU, in one go.
#
#   always       make test-cuda (tests/run_cuda.sh), then ./train bench on the GPU: the
#                train.py model at 16 x 1,024 tokens in bf16 and fp32, and at 2 x 8,192
#                tokens in bf16, each against cuBLAS's rate at its largest product; the
#                decoder's bytes per second (./train sample --bench) on a trained model
#   --evidence   --preset flash-pytorch for 2,000 steps in bf16 and in fp32, validating
#                every 100 steps over the whole validation split, run directories in DIR
#   --compare    scripts/bench_compare_gpu.sh: flash.c against PyTorch on this GPU (one
#                round, the 16 x 1 split that measured fastest for PyTorch)
#   --reproduce  scripts/reproduce_enwik8.sh end to end on the data with 200 steps
#   --no-build   use the binaries already built (./train, build/f32/*)
# With MPI built in and mpirun found, also the bench under mpirun -np 1 with the gradient sum
# forced (NCCL when built in), its share of a step.
# DATA (default ../shared/data/enwik8-head.gz) and FIXTURES (../shared/fixtures) may be
# set in the environment.
set -uo pipefail
cd "$(dirname "$0")/.."
build=1 evidence="" compare=0 reproduce=0
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) build=0; shift ;;
        --evidence) evidence=$2; shift 2 ;;
        --compare) compare=1; shift ;;
        --reproduce) reproduce=1; shift ;;
        -h|--help) sed -n "2,18p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
    esac
done
data=${DATA:-../shared/data/enwik8-head.gz}
fixtures=${FIXTURES:-../shared/fixtures}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [ $build = 1 ]; then make train build/f32/test_cuda build/f32/parity >/dev/null || exit 1; fi

echo "== make test-cuda"
bash tests/run_cuda.sh "$fixtures" "$data"
echo "== bench"
./train bench --preset flash-pytorch --device cuda --precision bf16 --batch 16 --accum 1 --steps 20
./train bench --preset flash-pytorch --device cuda --precision fp32 --batch 16 --accum 1 --steps 10 | grep -E '^(gemm|steps|throughput|ratio|bench):'
./train bench --preset flash-pytorch --device cuda --precision bf16 --batch 2 --accum 1 --seq-len 8192 --steps 20 | grep -E '^(gemm|throughput|ratio|bench):'
./train bench --preset flash-pytorch --device cuda --precision fp32 --batch 2 --accum 1 --seq-len 8192 --steps 10 | grep -E '^(throughput|bench):'

if command -v mpirun >/dev/null 2>&1 && ./train --help 2>&1 | grep -q 'This build has MPI'; then
    echo "== the data-parallel sum on one GPU (mpirun -np 1, FLASH_ALLREDUCE_ONE_RANK=1)"
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 1 --bind-to none -x FLASH_ALLREDUCE_ONE_RANK=1 \
        ./train bench --preset flash-pytorch --device cuda --precision bf16 --batch 16 --accum 1 --steps 20 |
        grep -E '^(nccl|data parallel|bench-parallel|bench):'
fi

if [ -n "$evidence" ]; then
    for p in bf16 fp32; do
        echo "== evidence: --preset flash-pytorch, 2,000 steps, $p"
        ./train --preset flash-pytorch --device cuda --precision $p --steps 2000 --eval-every 100 \
            --eval-windows 0 --sample-every 500 --ckpt-every 1000 --log-every 500 --out "$evidence/$p" "$data" |
            grep -E '^(device|model|recipe|step [0-9]+:|step [0-9]+/|done)'
    done
    echo "== sampling"
    ./train sample "$evidence/bf16" --bench --device cuda | tail -2
    t0=$(date +%s.%N)
    ./train sample "$evidence/bf16" --device cuda --num-samples 64 --len 2000 >/dev/null
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "sample: 64 sequences x 2,000 bytes in %.2f s: %.0f bytes/s\n", b - a, 64 * 2000 / (b - a) }'
fi
if [ $compare = 1 ]; then
    echo "== flash.c against PyTorch"
    bash scripts/bench_compare_gpu.sh --rounds 1 --modes eager-fp32,compiled-bf16 --splits 16x1 --steps 20 |
        grep -E '^(compare-gpu|torch-bench|bench):|GPU|error'
fi
if [ $reproduce = 1 ]; then
    echo "== scripts/reproduce_enwik8.sh, 200 steps"
    rm -rf /tmp/flash-reproduce
    SKIP_BUILD=$((1 - build)) bash scripts/reproduce_enwik8.sh --data "$data" --out /tmp/flash-reproduce \
        --steps 200 --eval-every 0 --sample-every 0 | tail -12
fi
