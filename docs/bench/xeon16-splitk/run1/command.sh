#!/bin/bash
# split-K weight gradients + bias/silu tile epilogue vs the previous commit (devshare/old)
set -u
export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
make -j16 train > /dev/null 2>&1 || { echo build failed; exit 1; }
(cd devshare/old && make -j16 train > /dev/null 2>&1) || { echo old build failed; exit 1; }
lscpu | grep -E "Model name|^CPU\(s\)" > $OUT/machine.txt
for rep in 1 2 3; do
  ./train bench --threads 16 --steps 10 >> $OUT/new_t16.txt 2>&1; echo "new $(tail -1 $OUT/new_t16.txt)"
  FLASH_GEMM_WGRAD=openblas ./train bench --threads 16 --steps 10 >> $OUT/new_wob_t16.txt 2>&1; echo "new-wgrad-openblas $(tail -1 $OUT/new_wob_t16.txt)"
  devshare/old/train bench --threads 16 --steps 10 >> $OUT/old_t16.txt 2>&1; echo "old $(tail -1 $OUT/old_t16.txt)"
done
for rep in 1 2; do
  ./train bench --threads 1 --steps 3 >> $OUT/new_t1.txt 2>&1; echo "new $(tail -1 $OUT/new_t1.txt)"
  devshare/old/train bench --threads 1 --steps 3 2>&1 | tail -1 | sed 's/^/old /'
  ./train bench --threads 2 --steps 6 >> $OUT/new_t2.txt 2>&1; echo "new $(tail -1 $OUT/new_t2.txt)"
  FLASH_GEMM_WGRAD=splitk ./train bench --threads 2 --steps 6 2>&1 | tail -1 | sed 's/^/new-wgrad-splitk /'
  devshare/old/train bench --threads 2 --steps 6 2>&1 | tail -1 | sed 's/^/old /'
done
