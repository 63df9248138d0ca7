#!/bin/bash
# auto GEMM partition: ours vs torch at 16 and 2 threads, interleaved; 1 vs 16 threads interleaved
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
make -j16 train > /dev/null 2>&1 || exit 1
for rep in 1 2 3; do
  ./train bench --threads 16 --steps 10 >> $OUT/ours_t16.txt 2>&1; tail -1 $OUT/ours_t16.txt
  python3 scripts/flash_torch.py bench --threads 16 --steps 3 2>&1 | tail -1 | tee -a $OUT/torch.txt
  ./train bench --threads 1 --steps 3 >> $OUT/ours_t1.txt 2>&1; tail -1 $OUT/ours_t1.txt
done
for rep in 1 2; do
  ./train bench --threads 2 --steps 6 >> $OUT/ours_t2.txt 2>&1; tail -1 $OUT/ours_t2.txt
  python3 scripts/flash_torch.py bench --threads 2 --steps 3 2>&1 | tail -1 | tee -a $OUT/torch.txt
done
