// Does a vCPU have a core of its own? An AVX-512 FMA loop (12 independent accumulators,
// register-only) on vCPU 0 alone, then on vCPUs 0 and j together for every j, then on N
// vCPUs at once: GFLOP/s of each thread. Two vCPUs that share a physical core (hyperthread
// siblings) each fall to about half.
// Build: gcc -O2 -pthread scripts/probes/fma_pairs.c
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
#define ITERS 40000000L
typedef struct {int cpu; double gflops; float sink;} Arg;
__attribute__((target("avx512f"),noinline)) static float fma_loop(long n){
  __m512 a0=_mm512_set1_ps(0),a1=a0,a2=a0,a3=a0,a4=a0,a5=a0,a6=a0,a7=a0,a8=a0,a9=a0,a10=a0,a11=a0;
  __m512 m=_mm512_set1_ps(0.999999f), c=_mm512_set1_ps(1e-7f);
  for(long k=0;k<n;k++){
    a0=_mm512_fmadd_ps(a0,m,c);a1=_mm512_fmadd_ps(a1,m,c);a2=_mm512_fmadd_ps(a2,m,c);a3=_mm512_fmadd_ps(a3,m,c);
    a4=_mm512_fmadd_ps(a4,m,c);a5=_mm512_fmadd_ps(a5,m,c);a6=_mm512_fmadd_ps(a6,m,c);a7=_mm512_fmadd_ps(a7,m,c);
    a8=_mm512_fmadd_ps(a8,m,c);a9=_mm512_fmadd_ps(a9,m,c);a10=_mm512_fmadd_ps(a10,m,c);a11=_mm512_fmadd_ps(a11,m,c);
  }
  __m512 s=_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7)));
  s=_mm512_add_ps(s,_mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)));
  return _mm512_reduce_add_ps(s);
}
static void*worker(void*p){Arg*a=p; cpu_set_t s;CPU_ZERO(&s);CPU_SET(a->cpu,&s);
  pthread_setaffinity_np(pthread_self(),sizeof s,&s);
  double t0=now(); a->sink=fma_loop(ITERS); a->gflops=2.0*16*12*ITERS/(now()-t0)/1e9; return NULL;}
static void together(int n,const int*cpus,Arg*args){pthread_t th[64];
  for(int i=0;i<n;i++){args[i].cpu=cpus[i];pthread_create(&th[i],NULL,worker,&args[i]);}
  for(int i=0;i<n;i++)pthread_join(th[i],NULL);}
int main(void){
  int ncpu=(int)sysconf(_SC_NPROCESSORS_ONLN); Arg a[64]; int cpus[64];
  cpus[0]=0; together(1,cpus,a); printf("alone: cpu 0 %.1f GFLOP/s\n",a[0].gflops);
  for(int j=1;j<ncpu;j++){cpus[0]=0;cpus[1]=j;together(2,cpus,a);printf("pair 0+%-2d: %.1f %.1f\n",j,a[0].gflops,a[1].gflops);}
  for(int n=1;n<=ncpu;n*=2){for(int i=0;i<n;i++)cpus[i]=i; together(n,cpus,a);
    double mn=1e9,sum=0;for(int i=0;i<n;i++){sum+=a[i].gflops;if(a[i].gflops<mn)mn=a[i].gflops;}
    printf("%2d threads on cpus 0..%d: total %.1f, mean %.1f, slowest %.1f GFLOP/s per thread\n",n,n-1,sum,sum/n,mn);}
  return 0;
}
