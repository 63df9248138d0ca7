#!/bin/bash
# device run 1: topology, GEMM scaling, current bench at 1/2/16 threads, torch at 2/16
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
export LD_LIBRARY_PATH=$BLAS_LIB
lscpu > $OUT/lscpu.txt 2>&1; head -30 $OUT/lscpu.txt
grep -E "^(model name|flags)" /proc/cpuinfo | head -2 | cut -c1-200
make -j16 train > $OUT/build.txt 2>&1 || { tail $OUT/build.txt; exit 1; }
gcc -O2 -fopenmp -I$BLAS_INC devshare/gemm_scale.c -L$BLAS_LIB -lopenblas -o /tmp/gs
OPENBLAS_CORETYPE=SkylakeX /tmp/gs | tee $OUT/gemm_scale.txt
for t in 1 2 16; do ./train bench --threads $t --steps $([ $t = 1 ] && echo 4 || echo 8) > $OUT/bench_t$t.txt 2>&1; tail -1 $OUT/bench_t$t.txt; done
OMP_PROC_BIND=spread OMP_PLACES=cores ./train bench --threads 2 --steps 8 > $OUT/bench_t2_bind.txt 2>&1; tail -1 $OUT/bench_t2_bind.txt
for t in 2 16; do python3 scripts/flash_torch.py bench --threads $t --steps 3 > $OUT/torch_t$t.txt 2>&1; tail -1 $OUT/torch_t$t.txt; done
