#!/bin/bash
# the goals with the split-K commit: scripts/bench_compare.sh --reps 3 2 16
set -u
export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
make -j16 train > /dev/null 2>&1 || { echo build failed; exit 1; }
lscpu > $OUT/lscpu.txt
bash scripts/bench_compare.sh --reps 3 2 16 2>&1 | tee $OUT/compare.txt
