// (1) memory bandwidth: triad a = b + s c over 3 x 128 MiB, 1..16 threads;
// (2) T independent single-threaded GEMMs at once (each thread its own A, B, C):
//     per-thread GFLOP/s, against one alone, three times. Shape: a to_hidden forward block
//     (256 x 2176 x 512).
// Build: gcc -O2 -fopenmp -I$BLAS_INC scripts/probes/mem_gemm.c -L$BLAS_LIB -lopenblas
// (BLAS_INC, BLAS_LIB as in the Makefile); run with OPENBLAS_CORETYPE=SkylakeX.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
extern void openblas_set_num_threads(int);
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(void){
  size_t n=(size_t)32<<20; float*a=malloc(4*n),*b=malloc(4*n),*c=malloc(4*n);
  #pragma omp parallel for
  for(size_t i=0;i<n;i++){a[i]=0;b[i]=1;c[i]=2;}
  for(int T=1;T<=16;T*=2){ double best=1e9;
    for(int r=0;r<5;r++){ double t0=now();
      #pragma omp parallel for num_threads(T) schedule(static)
      for(size_t i=0;i<n;i++) a[i]=b[i]+0.5f*c[i];
      double dt=now()-t0; if(dt<best)best=dt; }
    printf("triad %2d threads: %.1f GB/s\n",T,12.0*n/best/1e9); }
  int M=256,N=2176,K=512; openblas_set_num_threads(1);
  for(int rep=0;rep<3;rep++)
  for(int T=1;T<=16;T*=(T==1?16:2)){
    double rate[64];
    #pragma omp parallel num_threads(T)
    { int t=omp_get_thread_num();
      float*A=malloc(4L*M*K),*B=malloc(4L*N*K),*C=malloc(4L*M*N);
      for(long i=0;i<(long)M*K;i++)A[i]=(float)((i*7)%13)-6;
      for(long i=0;i<(long)N*K;i++)B[i]=(float)((i*5)%11)-5;
      for(long i=0;i<(long)M*N;i++)C[i]=0;
      #pragma omp barrier
      double best=1e9;
      for(int r=0;r<12;r++){ double t0=now();
        cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1.f,A,K,B,K,0.f,C,N);
        double dt=now()-t0; if(r>1&&dt<best)best=dt; }
      rate[t]=2.0*M*N*K/best/1e9; free(A);free(B);free(C);
    }
    double s=0,mn=1e9; for(int i=0;i<T;i++){s+=rate[i]; if(rate[i]<mn)mn=rate[i];}
    printf("independent gemm %dx%dx%d, %2d threads: per thread mean %.1f slowest %.1f, total %.1f GFLOP/s\n",M,N,K,T,s/T,mn,s);
  }
  return 0;
}
