#!/bin/bash
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
export LD_LIBRARY_PATH=$BLAS_LIB
gcc -O2 -fopenmp -I$BLAS_INC devshare/mem_gemm.c -L$BLAS_LIB -lopenblas -o /tmp/mg && OPENBLAS_CORETYPE=SkylakeX /tmp/mg | tee $OUT/mem_gemm.txt | grep independent
make -j16 train > /dev/null 2>&1 || exit 1
for rep in 1 2; do for t in 2 16; do
  for w in openblas auto; do FLASH_GEMM=$w ./train bench --threads $t --steps $([ $t = 2 ] && echo 6 || echo 10) >> $OUT/ours_${w}_t$t.txt 2>&1; echo "$w $(tail -1 $OUT/ours_${w}_t$t.txt)"; done
  python3 scripts/flash_torch.py bench --threads $t --steps 3 2>&1 | tail -1 | tee -a $OUT/torch.txt
done; done
