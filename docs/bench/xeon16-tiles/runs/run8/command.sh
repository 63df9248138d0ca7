#!/bin/bash
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
make -j16 train > /dev/null 2>&1 || exit 1
(cd devshare/old && make -j16 train > /dev/null 2>&1) || exit 1
lscpu | grep -E "Model name|^CPU\(s\)" > $OUT/machine.txt
for rep in 1 2; do
  ./train bench --threads 16 --steps 10 >> $OUT/new_t16.txt 2>&1; echo "new $(tail -1 $OUT/new_t16.txt)"
  devshare/old/train bench --threads 16 --steps 10 2>&1 | tail -1 | sed 's/^/old /'
  python3 scripts/flash_torch.py bench --threads 16 --steps 3 2>&1 | tail -1 | tee -a $OUT/torch.txt
  ./train bench --threads 1 --steps 3 >> $OUT/new_t1.txt 2>&1; echo "new $(tail -1 $OUT/new_t1.txt)"
  ./train bench --threads 2 --steps 6 >> $OUT/new_t2.txt 2>&1; echo "new $(tail -1 $OUT/new_t2.txt)"
  python3 scripts/flash_torch.py bench --threads 2 --steps 3 2>&1 | tail -1 | tee -a $OUT/torch.txt
done
./train bench --threads 16 --batch 16 --seq-len 1024 --steps 5 > $OUT/ctx_1024.txt 2>&1; echo "T1024 $(tail -1 $OUT/ctx_1024.txt)"
./train bench --threads 16 --batch 2 --seq-len 8192 --steps 5 > $OUT/ctx_8192.txt 2>&1; echo "T8192 $(tail -1 $OUT/ctx_8192.txt)"
