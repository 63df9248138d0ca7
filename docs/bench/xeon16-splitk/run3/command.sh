mkdir -p /tmp/ob && for f in devshare/debs/*.deb; do dpkg -x $f /tmp/ob; done
export BLAS_LIB=/tmp/ob/usr/lib/x86_64-linux-gnu/openblas-openmp BLAS_INC=/tmp/ob/usr/include/x86_64-linux-gnu/openblas-openmp
gcc -O2 -fopenmp -I$BLAS_INC scripts/probes/gemm_aggregate.c -L$BLAS_LIB -Wl,-rpath,$BLAS_LIB -lopenblas -o /tmp/ga && OPENBLAS_CORETYPE=SkylakeX /tmp/ga | tee $OUT/probe_gemm_aggregate.txt
make -j16 train >/dev/null 2>&1 && ./train bench --threads 16 --steps 20 > $OUT/bench_t16.txt 2>&1
./train bench --threads 1 --steps 3 > $OUT/bench_t1.txt 2>&1
OPENBLAS_CORETYPE=SkylakeX /tmp/ga | tee -a $OUT/probe_gemm_aggregate.txt
