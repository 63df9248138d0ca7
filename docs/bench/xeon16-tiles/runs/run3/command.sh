#!/bin/bash
# split vs OpenBLAS threading in the step, interleaved with torch, at 16 and 2 threads; 1 thread
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
make -j16 train > $OUT/build.txt 2>&1 || { tail $OUT/build.txt; exit 1; }
for rep in 1 2 3; do
  for s in 1 0; do FLASH_GEMM_SPLIT=$s ./train bench --threads 16 --steps 10 > $OUT/t16_s${s}_$rep.txt 2>&1; echo "split=$s $(tail -1 $OUT/t16_s${s}_$rep.txt)"; done
  python3 scripts/flash_torch.py bench --threads 16 --steps 3 > $OUT/torch16_$rep.txt 2>&1; tail -1 $OUT/torch16_$rep.txt
done
for rep in 1 2; do
  for s in 1 0; do FLASH_GEMM_SPLIT=$s ./train bench --threads 2 --steps 6 > $OUT/t2_s${s}_$rep.txt 2>&1; echo "split=$s $(tail -1 $OUT/t2_s${s}_$rep.txt)"; done
  python3 scripts/flash_torch.py bench --threads 2 --steps 3 > $OUT/torch2_$rep.txt 2>&1; tail -1 $OUT/torch2_$rep.txt
done
./train bench --threads 1 --steps 4 > $OUT/t1.txt 2>&1; tail -1 $OUT/t1.txt
