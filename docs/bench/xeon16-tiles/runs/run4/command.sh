#!/bin/bash
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
gcc -O2 -pthread devshare/fma_pairs.c -o /tmp/fp && /tmp/fp | tee $OUT/fma_pairs.txt
make -j16 train > /dev/null 2>&1 || exit 1
for t in 4 8 2; do for s in 1 0 1 0; do FLASH_GEMM_SPLIT=$s ./train bench --threads $t --steps 6 >> $OUT/bench_t${t}.txt 2>&1; echo "split=$s $(tail -1 $OUT/bench_t${t}.txt)"; done; done
