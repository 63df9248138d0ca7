// The step's big GEMM shapes at 2 and 16 threads: OpenBLAS's own threading against one
// single-threaded GEMM per thread on a block of rows (the first version of our partition;
// autograd/cpu/gemm.c now uses 4 tiles per thread). GFLOP/s, best and median of repeated calls.
// Build: gcc -O2 -fopenmp -I$BLAS_INC scripts/probes/gemm_split.c -L$BLAS_LIB -lopenblas
// (BLAS_INC, BLAS_LIB as in the Makefile); run with OPENBLAS_CORETYPE=SkylakeX.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
extern void openblas_set_num_threads(int);
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static int cmpd(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
typedef struct {const char*name; int ta,tb,M,N,K;} Shape;
static void run(const Shape*s,float*A,float*B,float*C,int T,int split,int reps,double*best,double*med){
  double ts[64]; int lda=s->ta?s->M:s->K, ldb=s->tb?s->K:s->N;
  for(int r=0;r<reps+2;r++){
    double t0=now();
    if(!split){ openblas_set_num_threads(T);
      cblas_sgemm(CblasRowMajor,s->ta?CblasTrans:CblasNoTrans,s->tb?CblasTrans:CblasNoTrans,s->M,s->N,s->K,1.f,A,lda,B,ldb,0.f,C,s->N);
    } else {
      #pragma omp parallel num_threads(T)
      { int t=omp_get_thread_num(); int m0=(int)((long)s->M*t/T), m1=(int)((long)s->M*(t+1)/T);
        const float*Ab = s->ta? A+m0 : A+(long)m0*lda;
        cblas_sgemm(CblasRowMajor,s->ta?CblasTrans:CblasNoTrans,s->tb?CblasTrans:CblasNoTrans,m1-m0,s->N,s->K,1.f,Ab,lda,B,ldb,0.f,C+(long)m0*s->N,s->N);
      }
    }
    if(r>=2) ts[r-2]=now()-t0;
  }
  qsort(ts,reps,sizeof(double),cmpd); double fl=2.0*s->M*s->N*s->K;
  *best=fl/ts[0]/1e9; *med=fl/ts[reps/2]/1e9;
}
int main(void){
  Shape sh[]={{"to_hidden fwd  X W^T",0,1,4096,2176,512},{"to_hidden dX   dH W",0,0,4096,512,2176},
              {"to_hidden dW   dH^T X",1,0,2176,512,4096},{"to_out fwd",0,1,4096,512,1024},{"to_out dX",0,0,4096,1024,512}};
  size_t big=(size_t)4096*2176; float*A=malloc(4*big),*B=malloc(4*big),*C=malloc(4*big);
  for(size_t i=0;i<big;i++){A[i]=(float)rand()/RAND_MAX-.5f;B[i]=(float)rand()/RAND_MAX-.5f;C[i]=1;}
  int Ts[]={2,16};
  for(int ti=0;ti<2;ti++) for(int i=0;i<5;i++){
    double b0,m0,b1,m1; int reps=ti?15:5;
    run(&sh[i],A,B,C,Ts[ti],0,reps,&b0,&m0); run(&sh[i],A,B,C,Ts[ti],1,reps,&b1,&m1);
    printf("threads %2d %-22s openblas best %6.1f med %6.1f | split best %6.1f med %6.1f GFLOP/s\n",Ts[ti],sh[i].name,b0,m0,b1,m1);
  }
  return 0;
}
