/* sdidrows, task 1: multiply-adds per ns of computing R Gram rows r_j = D'a_j in one pass
 * over the blocked design of _sdid_fw.c (32-column blocks of n rows), R = 1 (ti_row_avx's
 * kernel), 2 and 4, each row summed over t in ti_row_avx's order (separate multiply and
 * add): every row is checked bit-identical to R = 1. Register-blocked for 16 ymm
 * registers (R2: 16-column sub-blocks, R4: 8-column sub-blocks); two variants using the 32
 * registers of AVX-512VL for comparison. Build as the extension is (-O3, no contraction):
 *
 *   gcc -O3 -fwrapv -ffp-contract=off -o /tmp/mb benchmarks/sdid_rows_microbench.c
 *   flock /work/bench.lock /tmp/mb
 *
 * Figures: benchmarks/RESULTS.md, section "sdidrows" (run MB). */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

static double now(void){struct timespec ts;clock_gettime(CLOCK_MONOTONIC,&ts);return ts.tv_sec+1e-9*ts.tv_nsec;}

// R=1: copy of ti_row_avx (blocked path)
__attribute__((target("avx"),noinline))
static void row1(const double *blk, int64_t n, int64_t m, const double *a, double *r){
  for (int64_t q0=0;q0+32<=m;q0+=32){
    const double *Dq=blk+q0*n; __m256d v=_mm256_set1_pd(a[0]); __m256d c[8];
    for(int l=0;l<8;l++) c[l]=_mm256_mul_pd(_mm256_loadu_pd(Dq+4*l),v);
    for(int64_t t=1;t<n;t++){const double *Dt=Dq+t*32; v=_mm256_set1_pd(a[t]);
      for(int l=0;l<8;l++) c[l]=_mm256_add_pd(c[l],_mm256_mul_pd(_mm256_loadu_pd(Dt+4*l),v));}
    for(int l=0;l<8;l++) _mm256_storeu_pd(r+q0+4*l,c[l]);
  }
}
// R=2: per 32-col block, two halves of 16 cols; 4 acc per row (8 acc), 2 bcast, 4 loads
__attribute__((target("avx"),noinline))
static void row2(const double *blk, int64_t n, int64_t m, const double *a0p, const double *a1p, double *r0, double *r1){
  for (int64_t q0=0;q0+32<=m;q0+=32){
    const double *Dq=blk+q0*n;
    for(int h=0;h<2;h++){ const double *Dh=Dq+16*h;
      __m256d v0=_mm256_set1_pd(a0p[0]), v1=_mm256_set1_pd(a1p[0]); __m256d c[4],d[4];
      for(int l=0;l<4;l++){__m256d x=_mm256_loadu_pd(Dh+4*l); c[l]=_mm256_mul_pd(x,v0); d[l]=_mm256_mul_pd(x,v1);}
      for(int64_t t=1;t<n;t++){const double *Dt=Dh+t*32; v0=_mm256_set1_pd(a0p[t]); v1=_mm256_set1_pd(a1p[t]);
        for(int l=0;l<4;l++){__m256d x=_mm256_loadu_pd(Dt+4*l); c[l]=_mm256_add_pd(c[l],_mm256_mul_pd(x,v0)); d[l]=_mm256_add_pd(d[l],_mm256_mul_pd(x,v1));}}
      for(int l=0;l<4;l++){_mm256_storeu_pd(r0+q0+16*h+4*l,c[l]);_mm256_storeu_pd(r1+q0+16*h+4*l,d[l]);}
    }
  }
}
// R=2 with 3 ymm of columns? no: use R=3 x 4 cols? Keep R=4: 8 cols (2 ymm) x 4 rows = 8 acc, 4 bcast, 2 loads
__attribute__((target("avx"),noinline))
static void row4(const double *blk, int64_t n, int64_t m, const double *const *ap, double *const *rp){
  const double *a0=ap[0],*a1=ap[1],*a2=ap[2],*a3=ap[3];
  for (int64_t q0=0;q0+32<=m;q0+=32){
    const double *Dq=blk+q0*n;
    for(int h=0;h<4;h++){ const double *Dh=Dq+8*h;
      __m256d x0=_mm256_loadu_pd(Dh), x1=_mm256_loadu_pd(Dh+4);
      __m256d v=_mm256_set1_pd(a0[0]); __m256d c00=_mm256_mul_pd(x0,v), c01=_mm256_mul_pd(x1,v);
      v=_mm256_set1_pd(a1[0]); __m256d c10=_mm256_mul_pd(x0,v), c11=_mm256_mul_pd(x1,v);
      v=_mm256_set1_pd(a2[0]); __m256d c20=_mm256_mul_pd(x0,v), c21=_mm256_mul_pd(x1,v);
      v=_mm256_set1_pd(a3[0]); __m256d c30=_mm256_mul_pd(x0,v), c31=_mm256_mul_pd(x1,v);
      for(int64_t t=1;t<n;t++){const double *Dt=Dh+t*32; x0=_mm256_loadu_pd(Dt); x1=_mm256_loadu_pd(Dt+4);
        v=_mm256_set1_pd(a0[t]); c00=_mm256_add_pd(c00,_mm256_mul_pd(x0,v)); c01=_mm256_add_pd(c01,_mm256_mul_pd(x1,v));
        v=_mm256_set1_pd(a1[t]); c10=_mm256_add_pd(c10,_mm256_mul_pd(x0,v)); c11=_mm256_add_pd(c11,_mm256_mul_pd(x1,v));
        v=_mm256_set1_pd(a2[t]); c20=_mm256_add_pd(c20,_mm256_mul_pd(x0,v)); c21=_mm256_add_pd(c21,_mm256_mul_pd(x1,v));
        v=_mm256_set1_pd(a3[t]); c30=_mm256_add_pd(c30,_mm256_mul_pd(x0,v)); c31=_mm256_add_pd(c31,_mm256_mul_pd(x1,v));}
      double *o;
      o=rp[0]+q0+8*h; _mm256_storeu_pd(o,c00); _mm256_storeu_pd(o+4,c01);
      o=rp[1]+q0+8*h; _mm256_storeu_pd(o,c10); _mm256_storeu_pd(o+4,c11);
      o=rp[2]+q0+8*h; _mm256_storeu_pd(o,c20); _mm256_storeu_pd(o+4,c21);
      o=rp[3]+q0+8*h; _mm256_storeu_pd(o,c30); _mm256_storeu_pd(o+4,c31);
    }
  }
}
// R=4 with 16 cols (4 ymm): 16 acc -> spills; with AVX-512VL there are 32 ymm regs
__attribute__((target("avx512f,avx512vl"),noinline))
static void row4w(const double *blk, int64_t n, int64_t m, const double *const *ap, double *const *rp){
  for (int64_t q0=0;q0+32<=m;q0+=32){
    const double *Dq=blk+q0*n;
    for(int h=0;h<2;h++){ const double *Dh=Dq+16*h; __m256d c[4][4];
      for(int rr=0;rr<4;rr++){__m256d v=_mm256_set1_pd(ap[rr][0]); for(int l=0;l<4;l++) c[rr][l]=_mm256_mul_pd(_mm256_loadu_pd(Dh+4*l),v);}
      for(int64_t t=1;t<n;t++){const double *Dt=Dh+t*32; __m256d x[4]; for(int l=0;l<4;l++) x[l]=_mm256_loadu_pd(Dt+4*l);
        for(int rr=0;rr<4;rr++){__m256d v=_mm256_set1_pd(ap[rr][t]); for(int l=0;l<4;l++) c[rr][l]=_mm256_add_pd(c[rr][l],_mm256_mul_pd(x[l],v));}}
      for(int rr=0;rr<4;rr++) for(int l=0;l<4;l++) _mm256_storeu_pd(rp[rr]+q0+16*h+4*l,c[rr][l]);
    }
  }
}
// R=2 in 32 cols (16 acc): AVX-512VL registers
__attribute__((target("avx512f,avx512vl"),noinline))
static void row2w(const double *blk, int64_t n, int64_t m, const double *a0p, const double *a1p, double *r0, double *r1){
  for (int64_t q0=0;q0+32<=m;q0+=32){
    const double *Dq=blk+q0*n; __m256d c[8],d[8]; __m256d v0=_mm256_set1_pd(a0p[0]), v1=_mm256_set1_pd(a1p[0]);
    for(int l=0;l<8;l++){__m256d x=_mm256_loadu_pd(Dq+4*l); c[l]=_mm256_mul_pd(x,v0); d[l]=_mm256_mul_pd(x,v1);}
    for(int64_t t=1;t<n;t++){const double *Dt=Dq+t*32; v0=_mm256_set1_pd(a0p[t]); v1=_mm256_set1_pd(a1p[t]);
      for(int l=0;l<8;l++){__m256d x=_mm256_loadu_pd(Dt+4*l); c[l]=_mm256_add_pd(c[l],_mm256_mul_pd(x,v0)); d[l]=_mm256_add_pd(d[l],_mm256_mul_pd(x,v1));}}
    for(int l=0;l<8;l++){_mm256_storeu_pd(r0+q0+4*l,c[l]);_mm256_storeu_pd(r1+q0+4*l,d[l]);}
  }
}

int main(int argc,char**argv){
  int64_t n=30; int64_t ms[]={2000,10000,40000,200000}; int nm=4;
  for(int im=0;im<nm;im++){ int64_t m=ms[im]/32*32;
    double *blk=aligned_alloc(64,n*m*8); for(int64_t i=0;i<n*m;i++) blk[i]=(double)rand()/RAND_MAX-0.5;
    double *a[4],*r[4],*ref[4]; for(int k=0;k<4;k++){a[k]=malloc(n*8);r[k]=aligned_alloc(64,m*8);ref[k]=aligned_alloc(64,m*8);for(int t=0;t<n;t++)a[k][t]=(double)rand()/RAND_MAX-0.5;}
    for(int k=0;k<4;k++) row1(blk,n,m,a[k],ref[k]);
    // check bit identity
    row2(blk,n,m,a[0],a[1],r[0],r[1]); int ok2=!memcmp(r[0],ref[0],m*8)&&!memcmp(r[1],ref[1],m*8);
    row4(blk,n,m,(const double*const*)a,r); int ok4=1; for(int k=0;k<4;k++) ok4&=!memcmp(r[k],ref[k],m*8);
    row4w(blk,n,m,(const double*const*)a,r); int ok4w=1; for(int k=0;k<4;k++) ok4w&=!memcmp(r[k],ref[k],m*8);
    row2w(blk,n,m,a[0],a[1],r[0],r[1]); int ok2w=!memcmp(r[0],ref[0],m*8)&&!memcmp(r[1],ref[1],m*8);
    double target=2e9; // madds per trial
    int reps=(int)(target/(n*m)); if(reps<4)reps=4;
    double best[5]={1e9,1e9,1e9,1e9,1e9};
    for(int trial=0;trial<5;trial++){
      double t0=now(); for(int i=0;i<reps;i++){row1(blk,n,m,a[i&3],r[0]);} double t1=now(); if(t1-t0<best[0])best[0]=t1-t0;
      t0=now(); for(int i=0;i<reps/2;i++){row2(blk,n,m,a[0],a[1],r[0],r[1]);} t1=now(); if(t1-t0<best[1])best[1]=t1-t0;
      t0=now(); for(int i=0;i<reps/4;i++){row4(blk,n,m,(const double*const*)a,r);} t1=now(); if(t1-t0<best[2])best[2]=t1-t0;
      t0=now(); for(int i=0;i<reps/4;i++){row4w(blk,n,m,(const double*const*)a,r);} t1=now(); if(t1-t0<best[3])best[3]=t1-t0;
      t0=now(); for(int i=0;i<reps/2;i++){row2w(blk,n,m,a[0],a[1],r[0],r[1]);} t1=now(); if(t1-t0<best[4])best[4]=t1-t0;
    }
    double w[5]={reps,reps/2*2,reps/4*4,reps/4*4,reps/2*2};
    printf("n=%ld m=%ld (D %.1f MB) madds/ns: R1 %.2f | R2(16col,ymm0-15) %.2f [bit %d] | R4(8col) %.2f [bit %d] | R4(16col,avx512vl regs) %.2f [bit %d] | R2(32col,avx512vl regs) %.2f [bit %d]\n",
      n,m,n*m*8/1e6, w[0]*n*m/best[0]/1e9, w[1]*n*m/best[1]/1e9, ok2, w[2]*n*m/best[2]/1e9, ok4, w[3]*n*m/best[3]/1e9, ok4w, w[4]*n*m/best[4]/1e9, ok2w);
  }
}
