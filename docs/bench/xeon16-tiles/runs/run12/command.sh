#!/bin/bash
set -u

export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
make -j16 train > /dev/null 2>&1 || exit 1
for rep in 1 2; do for p in default ACTIVE PASSIVE; do
  if [ $p = default ]; then o=$(./train bench --threads 2 --steps 6 | tail -1); else o=$(OMP_WAIT_POLICY=$p ./train bench --threads 2 --steps 6 | tail -1); fi
  echo "$p $o"; done; done
