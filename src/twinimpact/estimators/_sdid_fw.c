/* Frank-Wolfe iterations of synthetic DiD's weight problems.
 *
 * The compiled form of the loop of twinimpact.estimators._sdid_solver.fw_gram_sets (read
 * its docstring first): the same Gram-form step, with the same floating-point operations
 * in the same order for each problem, including the lazy common scale factor sigma of x
 * and of the half-gradient. The NumPy batch computes the initial state (h, y, the three
 * scalars) and hands it over; this file only iterates. One difference: the NumPy batch
 * rescales every problem of the batch when any problem's sigma drops below 1e-100, this
 * loop rescales a problem when its own sigma does (a change of rounding only).
 *
 * Speed. A step reads one row of the Gram matrix (k numbers) and updates the k-vector h;
 * once the Gram matrix no longer fits in the processor's cache (about 2,000 controls)
 * fetching that row from memory dominates. Two problems therefore run in alternation:
 * while one updates its h, the row the other needs next (known from its last step) is
 * prefetched, so memory and arithmetic overlap. The update and the next step's argmin
 * share one pass, vectorised with SSE2 on x86-64 (scalar elsewhere): separate
 * multiplies and adds (no fused multiply-add; built with -ffp-contract=off), so every
 * entry rounds as in the scalar loop and the argmin is the scalar loop's (first smallest).
 * In data form (ti_fw_data: no Gram matrix, a row not in the row cache is computed from
 * the design, T0 multiply-adds an entry) up to 16 problems sharing the design are live at
 * once and the rows they miss are computed four (sixteen for a design of 16 MB or more)
 * at a time in one pass over it (ti_fw_data_side, ti_rows4_avx: each number of D read
 * serves four or sixteen rows) -- a placebo's replicates; the bootstrap's draws on the
 * controls' design, mostly cached, alternate.
 *
 * From 8,192 controls a point fit's and the bootstrap draws' problems run the pruned loop
 * (ti_fw_prune_one, below): no Gram row at all, only the coordinates that may be the
 * next vertex brought up to date, with the same numbers.
 *
 * A placebo's unit-weight problems in data form run none of these by default: they run
 * ti_fw_screen (at the end of the file), in residual form with a single-precision screen
 * of every coordinate's half-gradient; the side-by-side rows above serve them only when
 * _sdid_solver.SCREEN_MIN_ELEMS is raised.
 *
 * Loaded with ctypes (twinimpact.estimators._sdid_solver._compiled_fw); the module init
 * below only makes the file a valid extension module for setuptools.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define TI_EXPORT __declspec(dllexport)
#else
#define TI_EXPORT __attribute__((visibility("default")))
#endif

/* First index of the smallest entry of h[0..k-1], as the loop `if (h[j] < m)` from m = h[0]
 * (NaN entries are never smaller; a NaN h[0] gives 0). */
static int64_t ti_argmin(const double *h, int64_t k)
{
    int64_t i = 0;
    double m = h[0];
    for (int64_t j = 1; j < k; j++)
        if (h[j] < m) { m = h[j]; i = j; }
    return i;
}

/* Lanes of a vectorised argmin: lane l saw the entries j = l (mod W) of the vectorised
 * part with the first smallest value m[l] at index ix[l] (-1: none below +inf). Combine
 * them with the scalar tail j0..k-1 into ti_argmin's answer; fall back to ti_argmin when
 * the lanes cannot say (h[0] NaN, or no entry below +inf). */
static int64_t ti_argmin_lanes(const double *h, int64_t k, const double *m,
                               const double *ix, int W, int64_t j0)
{
    double bm = INFINITY;
    int64_t bi = -1;
    for (int l = 0; l < W; l++) {
        int64_t il = (int64_t)ix[l];
        if (il < 0) continue;
        if (bi < 0 || m[l] < bm || (m[l] == bm && il < bi)) { bm = m[l]; bi = il; }
    }
    for (int64_t j = j0; j < k; j++)
        if (h[j] < bm) { bm = h[j]; bi = j; }
    if (bi < 0 || h[0] != h[0]) return ti_argmin(h, k);
    return bi;
}

/* h[j] += (row[j] - at[j]) * c for every j (these three roundings, in this order, as the
 * NumPy loop), then ti_argmin(h, k): one pass over the data instead of two. `pf` (may be
 * NULL): k numbers to prefetch meanwhile (the other problem's next Gram row). */
static int64_t ti_update_argmin_scalar(double *h, const double *row, const double *at,
                                       double c, int64_t k, const double *pf)
{
    (void)pf;
    for (int64_t j = 0; j < k; j++) {
        double r = row[j] - at[j];
        r *= c;
        h[j] += r;
    }
    return ti_argmin(h, k);
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define TI_HAVE_X86 1
#define TI_PF(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)

/* SSE2 (every x86-64): two lanes, two accumulators (entries j = 0, 1 and 2, 3 mod 4:
 * independent comparison chains). */
static int64_t ti_update_argmin_sse2(double *h, const double *row, const double *at,
                                     double c, int64_t k, const double *pf)
{
    const __m128d vc = _mm_set1_pd(c), four = _mm_set1_pd(4.0);
    __m128d m0 = _mm_set1_pd(INFINITY), b0 = _mm_set1_pd(-1.0), i0 = _mm_set_pd(1.0, 0.0);
    __m128d m1 = m0, b1 = b0, i1 = _mm_set_pd(3.0, 2.0);
    int64_t j = 0;
    for (; j + 4 <= k; j += 4) {
        if (pf && (j & 7) == 0) TI_PF(pf + j);
        __m128d r0 = _mm_sub_pd(_mm_loadu_pd(row + j), _mm_loadu_pd(at + j));
        __m128d r1 = _mm_sub_pd(_mm_loadu_pd(row + j + 2), _mm_loadu_pd(at + j + 2));
        r0 = _mm_mul_pd(r0, vc);
        r1 = _mm_mul_pd(r1, vc);
        __m128d v0 = _mm_add_pd(_mm_loadu_pd(h + j), r0);
        __m128d v1 = _mm_add_pd(_mm_loadu_pd(h + j + 2), r1);
        _mm_storeu_pd(h + j, v0);
        _mm_storeu_pd(h + j + 2, v1);
        __m128d l0 = _mm_cmplt_pd(v0, m0), l1 = _mm_cmplt_pd(v1, m1);
        m0 = _mm_or_pd(_mm_and_pd(l0, v0), _mm_andnot_pd(l0, m0));
        m1 = _mm_or_pd(_mm_and_pd(l1, v1), _mm_andnot_pd(l1, m1));
        b0 = _mm_or_pd(_mm_and_pd(l0, i0), _mm_andnot_pd(l0, b0));
        b1 = _mm_or_pd(_mm_and_pd(l1, i1), _mm_andnot_pd(l1, b1));
        i0 = _mm_add_pd(i0, four);
        i1 = _mm_add_pd(i1, four);
    }
    for (int64_t jj = j; jj < k; jj++) {
        double r = row[jj] - at[jj];
        r *= c;
        h[jj] += r;
    }
    double m[4], ix[4];
    _mm_storeu_pd(m, m0);
    _mm_storeu_pd(m + 2, m1);
    _mm_storeu_pd(ix, b0);
    _mm_storeu_pd(ix + 2, b1);
    return ti_argmin_lanes(h, k, m, ix, 4, j);
}
#endif

typedef int64_t (*ti_update_fn)(double *, const double *, const double *, double, int64_t,
                                const double *);

/* which update runs: set by ti_fw_select */
static ti_update_fn ti_update_argmin = 0;
/* interleave two problems (prefetching each other's next row) or run them one by one */
static int ti_pair = 1;
/* how ti_data_row computes: 0 scalar, 1 SSE2, 2 AVX where the processor has it (set by
 * ti_fw_select; every variant rounds each entry the same: lane-wise, mul then add) */
static int ti_row_vec = 0;
/* data form (ti_fw_data): up to this many problems run side by side, the Gram rows they
 * miss in the cache computed in one pass over the blocked design (ti_rows_raw); 1: the
 * scheme before (two in alternation, each row computed alone). Set by ti_fw_rows. For a
 * design of ti_wide_min numbers or more (16 MB: out of the caches) up to ti_nrows_wide:
 * sixteen rows a pass over the design halve the placebo's CPU at 250,000 units (a 54 MB
 * design), change nothing at 25,000 (5.4 MB, in L3) and slow it at 4,000 (in L2;
 * RESULTS.md, run PL). Set by ti_fw_rows_wide (_sdid_solver sets the threshold from its
 * WIDE_ELEMS when it loads this file: the same threshold as its grouping of replicates). */
static int ti_nrows = 4;
static int ti_nrows_wide = 16;
static int64_t ti_wide_min = (int64_t)1 << 21;


/* Choose the update: which = 0 scalar, else SSE2 where available; pair = 1 to
 * run two problems in alternation. Returns the update chosen (0 scalar, 1 SSE2). The tests run
 * every variant (same numbers). */
TI_EXPORT int ti_fw_select(int which, int pair)
{
    ti_update_fn f = ti_update_argmin_scalar;
    int got = 0;
#ifdef TI_HAVE_X86
    if (which != 0) { f = ti_update_argmin_sse2; got = 1; }
#else
    (void)which;
#endif
    ti_update_argmin = f;
    ti_pair = pair != 0;
#ifdef TI_HAVE_X86
    __builtin_cpu_init();
    ti_row_vec = (which == 0) ? 0 : ((which < 0 && __builtin_cpu_supports("avx")) ? 2 : 1);
#endif
    return got;
}

/* Problems side by side in ti_fw_data (1-16; see ti_nrows; w <= 0 leaves it); returns
 * the value now set. Every value gives the same numbers (each row is the one-row
 * kernel's to the bit). */
TI_EXPORT int ti_fw_rows(int w)
{
    if (w > 0) ti_nrows = w > 16 ? 16 : w;
    return ti_nrows;
}

/* The same for designs of min_nm numbers or more (w <= 0 / min_nm < 0: leave them);
 * returns the width now set. */
TI_EXPORT int ti_fw_rows_wide(int w, int64_t min_nm)
{
    if (w > 0) ti_nrows_wide = w > 16 ? 16 : w;
    if (min_nm >= 0) ti_wide_min = min_nm;
    return ti_nrows_wide;
}

/* value of A'b on a masked coordinate (_sdid_solver._MASKED) */
#define TI_MASKED (-1e200)

/* arguments shared by all problems of a call of ti_fw_gram / ti_fw_data */
typedef struct {
    int64_t k, max_iter;
    const double *bank, *gd, *Atb, *bb, *eta, *md2n;
    const int64_t *base;
    double *h, *y, *cp, *xx, *p;
    int64_t *n_iter;
    uint8_t *conv;
    /* data form (ti_fw_data; bank NULL): D (n x m, C order) the centred design's distinct
     * columns, cmap (k; NULL: identity, k == m) coordinate -> column of D, scratch rbuf
     * (m + n numbers) and gbuf (k); blk (may be NULL): D's first m - m % 32 columns in
     * blocks of 32 columns x n rows, each block contiguous (the AVX kernel reads it in
     * order: 20% faster than D's strided rows at 18,000 columns) */
    int64_t n, m;
    const double *D, *blk;
    const int64_t *cmap;
    double *rbuf, *gbuf;
    int64_t cmap_per;        /* 1: cmap holds one map per problem (B x k), else one map */
} ti_args;

/* the coordinate map of problem b (NULL: the identity) */
static const int64_t *ti_cmap(const ti_args *A, int64_t b)
{
    return A->cmap ? A->cmap + (A->cmap_per ? b * A->k : 0) : NULL;
}

#ifdef TI_HAVE_X86
/* ti_data_row's r = D'a with AVX (4 lanes, 8 accumulators: 32 entries a block); returns
 * the number of leading entries done (a multiple of 32) */
__attribute__((target("avx")))
static int64_t ti_row_avx(const double *D, const double *blk, int64_t n, int64_t m,
                          const double *a, double *r)
{
    int64_t q0 = 0;
    for (; q0 + 32 <= m; q0 += 32) {
        const double *Dq = blk ? blk + q0 * n : D + q0;
        const int64_t ld = blk ? 32 : m;
        __m256d v = _mm256_set1_pd(a[0]);
        __m256d c[8];
        for (int l = 0; l < 8; l++) c[l] = _mm256_mul_pd(_mm256_loadu_pd(Dq + 4 * l), v);
        for (int64_t t = 1; t < n; t++) {
            const double *Dt = Dq + t * ld;
            v = _mm256_set1_pd(a[t]);
            for (int l = 0; l < 8; l++)
                c[l] = _mm256_add_pd(c[l], _mm256_mul_pd(_mm256_loadu_pd(Dt + 4 * l), v));
        }
        for (int l = 0; l < 8; l++) _mm256_storeu_pd(r + q0 + 4 * l, c[l]);
    }
    return q0;
}

/* Four rows of one 32-column block Dq (n x 32, contiguous) of the blocked design: entry
 * o of row j (a[j]'s dot product with column o) into r[j] + o, summed over t with
 * separate multiplies and adds in ti_row_avx's order. Register-blocked for the 16 ymm
 * registers: four sub-blocks of 8 columns, each 4 rows x 2 accumulators + 4 broadcasts +
 * 2 loads (the sub-blocks after the first read the block from L1). Inlined into
 * ti_rows4_avx; as its own function it compiles better than the old loop body did: the
 * placebo at 250,000 units -22% CPU (benchmarks/RESULTS.md, run PC). */
__attribute__((target("avx"), always_inline))
static inline void ti_rows4_block(const double *Dq, int64_t n, const double *const *a,
                                  double *const *r)
{
    const double *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    for (int h = 0; h < 4; h++) {
        const double *Dh = Dq + 8 * h;
        __m256d x0 = _mm256_loadu_pd(Dh), x1 = _mm256_loadu_pd(Dh + 4);
        __m256d v = _mm256_set1_pd(a0[0]);
        __m256d c00 = _mm256_mul_pd(x0, v), c01 = _mm256_mul_pd(x1, v);
        v = _mm256_set1_pd(a1[0]);
        __m256d c10 = _mm256_mul_pd(x0, v), c11 = _mm256_mul_pd(x1, v);
        v = _mm256_set1_pd(a2[0]);
        __m256d c20 = _mm256_mul_pd(x0, v), c21 = _mm256_mul_pd(x1, v);
        v = _mm256_set1_pd(a3[0]);
        __m256d c30 = _mm256_mul_pd(x0, v), c31 = _mm256_mul_pd(x1, v);
        for (int64_t t = 1; t < n; t++) {
            const double *Dt = Dh + t * 32;
            x0 = _mm256_loadu_pd(Dt);
            x1 = _mm256_loadu_pd(Dt + 4);
            v = _mm256_set1_pd(a0[t]);
            c00 = _mm256_add_pd(c00, _mm256_mul_pd(x0, v));
            c01 = _mm256_add_pd(c01, _mm256_mul_pd(x1, v));
            v = _mm256_set1_pd(a1[t]);
            c10 = _mm256_add_pd(c10, _mm256_mul_pd(x0, v));
            c11 = _mm256_add_pd(c11, _mm256_mul_pd(x1, v));
            v = _mm256_set1_pd(a2[t]);
            c20 = _mm256_add_pd(c20, _mm256_mul_pd(x0, v));
            c21 = _mm256_add_pd(c21, _mm256_mul_pd(x1, v));
            v = _mm256_set1_pd(a3[t]);
            c30 = _mm256_add_pd(c30, _mm256_mul_pd(x0, v));
            c31 = _mm256_add_pd(c31, _mm256_mul_pd(x1, v));
        }
        const int o = 8 * h;
        _mm256_storeu_pd(r[0] + o, c00); _mm256_storeu_pd(r[0] + o + 4, c01);
        _mm256_storeu_pd(r[1] + o, c10); _mm256_storeu_pd(r[1] + o + 4, c11);
        _mm256_storeu_pd(r[2] + o, c20); _mm256_storeu_pd(r[2] + o + 4, c21);
        _mm256_storeu_pd(r[3] + o, c30); _mm256_storeu_pd(r[3] + o + 4, c31);
    }
}

/* 4 G rows r_j = D'a_j (j < 4 G, G <= 4) in one pass over the blocked design (blk:
 * 32-column blocks), each block by ti_rows4_block for each group of four rows in turn
 * (the groups after the first read it from L1: the design is read from memory once for
 * 4 G rows), so each r_j equals ti_row_avx's to the bit. With G = 1, each number of D
 * fetched serves four rows: 1.6-1.9x ti_row_avx's multiply-adds per ns on a design in L3
 * (30 x 10,000 / 40,000: 26.4 against 14.3 / 16.5), 1.2x in L2 (benchmarks/RESULTS.md,
 * sdidrows); G = 4 serves sixteen (a design in memory: RESULTS.md, run PL). Returns the
 * leading entries done (a multiple of 32). */
__attribute__((target("avx")))
static int64_t ti_rows4_avx(const double *blk, int64_t n, int64_t m,
                            const double *const *a, double *const *r, int G)
{
    int64_t q0 = 0;
    for (; q0 + 32 <= m; q0 += 32) {
        const double *Dq = blk + q0 * n;
        for (int gr = 0; gr < G; gr++) {
            double *rq[4];
            for (int j = 0; j < 4; j++) rq[j] = r[4 * gr + j] + q0;
            ti_rows4_block(Dq, n, a + 4 * gr, rq);
        }
    }
    return q0;
}

/* Two rows in one pass (as ti_rows4_avx): sub-blocks of 16 columns, 2 rows x 4
 * accumulators (1.2-1.4x ti_row_avx on a design in L3). */
__attribute__((target("avx")))
static int64_t ti_rows2_avx(const double *blk, int64_t n, int64_t m,
                            const double *const *a, double *const *r)
{
    const double *a0 = a[0], *a1 = a[1];
    int64_t q0 = 0;
    for (; q0 + 32 <= m; q0 += 32) {
        const double *Dq = blk + q0 * n;
        for (int h = 0; h < 2; h++) {
            const double *Dh = Dq + 16 * h;
            __m256d v0 = _mm256_set1_pd(a0[0]), v1 = _mm256_set1_pd(a1[0]);
            __m256d c[4], d[4];
            for (int l = 0; l < 4; l++) {
                __m256d x = _mm256_loadu_pd(Dh + 4 * l);
                c[l] = _mm256_mul_pd(x, v0);
                d[l] = _mm256_mul_pd(x, v1);
            }
            for (int64_t t = 1; t < n; t++) {
                const double *Dt = Dh + t * 32;
                v0 = _mm256_set1_pd(a0[t]);
                v1 = _mm256_set1_pd(a1[t]);
                for (int l = 0; l < 4; l++) {
                    __m256d x = _mm256_loadu_pd(Dt + 4 * l);
                    c[l] = _mm256_add_pd(c[l], _mm256_mul_pd(x, v0));
                    d[l] = _mm256_add_pd(d[l], _mm256_mul_pd(x, v1));
                }
            }
            for (int l = 0; l < 4; l++) {
                _mm256_storeu_pd(r[0] + q0 + 16 * h + 4 * l, c[l]);
                _mm256_storeu_pd(r[1] + q0 + 16 * h + 4 * l, d[l]);
            }
        }
    }
    return q0;
}

#endif

/* the lazy scale factor is folded back into x and h below this (_RESCALE_BELOW; a knob
 * for the tests, which raise it to run the rescale often: every loop uses it) */
static double ti_rescale_below = 1e-100;

/* set the rescale threshold (v > 0; else leave it); returns the value now set */
TI_EXPORT double ti_fw_rescale(double v)
{
    if (v > 0.0) ti_rescale_below = v;
    return ti_rescale_below;
}

/* one problem's running state */
typedef struct {
    int64_t b, t, i;
    double cp, xx, p, sigma, vprev;
} ti_prob;

/* Row i of G + eta I in data form (ti_fw_data), without any k x k object: r = D'a with
 * a = column u = cmap[i] of D, each entry summed over the rows of D in order with
 * separate roundings, r[q] = (((D[0,q] a[0]) + D[1,q] a[1]) + ...) -- the operations of
 * _sdid_solver._data_rows, lane by lane (so the same numbers); then spread to the k
 * coordinates (r[cmap[j]]) and eta added to entry i. O(n m) per call. */
static void ti_row_tail(const double *D, int64_t n, int64_t m, const double *a, double *r,
                        int64_t q0);

static void ti_row_raw(const double *D, const double *blk, int64_t n, int64_t m,
                       const double *a, double *r)
{
    int64_t q0 = 0;
#ifdef TI_HAVE_X86
    if (ti_row_vec > 1) q0 = ti_row_avx(D, blk, n, m, a, r);
#else
    (void)blk;
#endif
    ti_row_tail(D, n, m, a, r, q0);
}

/* entries q0 .. m - 1 of ti_row_raw's r (SSE2 where chosen, then scalar) */
static void ti_row_tail(const double *D, int64_t n, int64_t m, const double *a, double *r,
                        int64_t q0)
{
#ifdef TI_HAVE_X86
    if (ti_row_vec) for (; q0 + 16 <= m; q0 += 16) {
    /* 16 entries at a time in 8 SSE2 accumulators (independent add chains), each entry
     * summed over t in order with a separate multiply and add: the scalar loop's roundings */
        const double *Dq = D + q0;
        __m128d v = _mm_set1_pd(a[0]);
        __m128d c0 = _mm_mul_pd(_mm_loadu_pd(Dq), v), c1 = _mm_mul_pd(_mm_loadu_pd(Dq + 2), v);
        __m128d c2 = _mm_mul_pd(_mm_loadu_pd(Dq + 4), v), c3 = _mm_mul_pd(_mm_loadu_pd(Dq + 6), v);
        __m128d c4 = _mm_mul_pd(_mm_loadu_pd(Dq + 8), v), c5 = _mm_mul_pd(_mm_loadu_pd(Dq + 10), v);
        __m128d c6 = _mm_mul_pd(_mm_loadu_pd(Dq + 12), v), c7 = _mm_mul_pd(_mm_loadu_pd(Dq + 14), v);
        for (int64_t t = 1; t < n; t++) {
            const double *Dt = Dq + t * m;
            v = _mm_set1_pd(a[t]);
            c0 = _mm_add_pd(c0, _mm_mul_pd(_mm_loadu_pd(Dt), v));
            c1 = _mm_add_pd(c1, _mm_mul_pd(_mm_loadu_pd(Dt + 2), v));
            c2 = _mm_add_pd(c2, _mm_mul_pd(_mm_loadu_pd(Dt + 4), v));
            c3 = _mm_add_pd(c3, _mm_mul_pd(_mm_loadu_pd(Dt + 6), v));
            c4 = _mm_add_pd(c4, _mm_mul_pd(_mm_loadu_pd(Dt + 8), v));
            c5 = _mm_add_pd(c5, _mm_mul_pd(_mm_loadu_pd(Dt + 10), v));
            c6 = _mm_add_pd(c6, _mm_mul_pd(_mm_loadu_pd(Dt + 12), v));
            c7 = _mm_add_pd(c7, _mm_mul_pd(_mm_loadu_pd(Dt + 14), v));
        }
        _mm_storeu_pd(r + q0, c0); _mm_storeu_pd(r + q0 + 2, c1);
        _mm_storeu_pd(r + q0 + 4, c2); _mm_storeu_pd(r + q0 + 6, c3);
        _mm_storeu_pd(r + q0 + 8, c4); _mm_storeu_pd(r + q0 + 10, c5);
        _mm_storeu_pd(r + q0 + 12, c6); _mm_storeu_pd(r + q0 + 14, c7);
    }
#endif
    const int64_t CH = 512;                          /* 4 KB of r stays in L1 */
    for (; q0 < m; q0 += CH) {
        const int64_t q1 = (q0 + CH < m) ? q0 + CH : m;
        const double a0 = a[0];
        for (int64_t q = q0; q < q1; q++) r[q] = D[q] * a0;
        for (int64_t t = 1; t < n; t++) {
            const double *Dt = D + t * m;
            const double at = a[t];
            for (int64_t q = q0; q < q1; q++) {
                double z = Dt[q] * at;
                r[q] += z;
            }
        }
    }
}

/* R (1-16) raw rows r[j] = D'a[j] at once: with AVX and the blocked design, the leading
 * multiple of 32 entries of all rows in one pass over it (ti_rows4_avx in groups of four,
 * the last group padded with rows into spare, m numbers; ti_rows2_avx for R = 2), the
 * rest row by row (ti_row_tail); else each row by ti_row_raw. Every row equals
 * ti_row_raw's to the bit. */
static void ti_rows_raw(const ti_args *A, int R, const double *const *a, double *const *r,
                        double *spare)
{
    int64_t q0 = 0;
#ifdef TI_HAVE_X86
    if (R > 1 && ti_row_vec > 1 && A->blk) {
        if (R == 2) {
            q0 = ti_rows2_avx(A->blk, A->n, A->m, a, r);
        } else {                                     /* groups of four, the last padded */
            const int G = (R + 3) / 4;
            const double *a16[16];
            double *r16[16];
            for (int j = 0; j < 4 * G; j++) {
                a16[j] = j < R ? a[j] : a[R - 1];
                r16[j] = j < R ? r[j] : spare;
            }
            q0 = ti_rows4_avx(A->blk, A->n, A->m, a16, r16, G);
        }
        for (int j = 0; j < R; j++) ti_row_tail(A->D, A->n, A->m, a[j], r[j], q0);
        return;
    }
#endif
    (void)q0; (void)spare;
    for (int j = 0; j < R; j++) ti_row_raw(A->D, A->blk, A->n, A->m, a[j], r[j]);
}

/* column u of D into a (n numbers) */
static void ti_column(const ti_args *A, int64_t b, int64_t i, double *a)
{
    const int64_t *cm = ti_cmap(A, b);
    const int64_t u = cm ? cm[i] : i;
    for (int64_t t = 0; t < A->n; t++) a[t] = A->D[t * A->m + u];
}

/* the raw row r (m numbers) spread to the k coordinates (into g when cmap) and eta
 * added to entry i */
static const double *ti_finish_row(const ti_args *A, int64_t b, double *r, double *g,
                                   int64_t i, double eta)
{
    double *row = r;
    const int64_t *cm = ti_cmap(A, b);
    if (cm) {
        row = g;
        for (int64_t j = 0; j < A->k; j++) row[j] = r[cm[j]];
    }
    row[i] += eta;
    return row;
}

/* the Gram row problem P needs next (P->i), in the scratch buffers */
static const double *ti_data_row(const ti_args *A, const ti_prob *P)
{
    double *r = A->rbuf, *a = r + A->m;
    ti_column(A, P->b, P->i, a);
    ti_row_raw(A->D, A->blk, A->n, A->m, a, r);
    return ti_finish_row(A, P->b, r, A->gbuf, P->i, A->eta[P->b]);
}

static void ti_start(const ti_args *A, ti_prob *P, int64_t b)
{
    P->b = b;
    P->t = 0;
    P->cp = A->cp[b]; P->xx = A->xx[b]; P->p = A->p[b];
    P->sigma = 1.0; P->vprev = INFINITY;
    P->i = ti_argmin(A->h + b * A->k, A->k);
}

static const double *ti_row(const ti_args *A, const ti_prob *P)
{
    return A->bank + (A->base[P->b] + P->i) * A->k;
}

/* The exact line search's step length s = -h'(e_i - x) / den (computed by the caller)
 * clamped to [0, 1 - 2^-53] (NaN -> 0; the largest step stops one rounding unit short of
 * x = e_i, _STEP_MAX), 0 where den is not positive. Every loop's step (ti_move, ts_step). */
static inline double ti_step_length(double s, double den)
{
    const double step_max = 1.0 - 1.1102230246251565e-16;   /* 1 - 2^-53 (_STEP_MAX) */
    s = (s > 0.0) ? s : 0.0;                         /* np.fmax(s, 0): NaN -> 0 */
    s = (s < step_max) ? s : step_max;
    if (!(den > 0.0)) s *= 0.0;
    return s;
}

/* R's stopping rule after step t (counted by the caller) with objective val, the previous
 * objective in *vprev: 0 to go on (*vprev = val), else 1 with *done whether the decrease
 * criterion stopped it (not max_iter). Every loop's (ti_stop, ts_step). */
static inline int ti_stop_rule(int64_t t, int64_t max_iter, double md2n, double *vprev,
                               double val, uint8_t *done)
{
    if (t < 2) {
        if (t < max_iter) { *vprev = val; return 0; }
        *done = 0;
        return 1;
    }
    int cont = (*vprev - val) > md2n;
    if (t < max_iter && cont) { *vprev = val; return 0; }
    *done = (uint8_t)!cont;
    return 1;
}

/* The move of a step of problem P towards its vertex P->i (whose half-gradient hb[i] is
 * current): the exact line search, the new x'(G + eta I)x, |x|^2, x'A'b and scale sigma,
 * and x_i; returns c = s / sigma, the step's coefficient of the half-gradient's update
 * h += (row_i - A'b) c. */
static double ti_move(const ti_args *A, ti_prob *P)
{
    const int64_t k = A->k, b = P->b, i = P->i;
    const double *at = A->Atb + b * k;
    double *hb = A->h + b * k, *yb = A->y + b * k;
    double cp = P->cp, xx = P->xx, p = P->p, sigma = P->sigma;
    double hv = hb[i] * sigma, xi = yb[i] * sigma, a = at[i];
    double g = A->gd[A->base[b] + i];
    double q = hv + a;                               /* ((G + eta I) x)_i */
    double pa = (p + a) * 0.5;
    double den = cp - 2.0 * q;
    den += g;                                        /* (e_i - x)'(G + eta I)(e_i - x) */
    double s = cp - p;
    s -= hv;
    s /= den;                                        /* -hg'(e_i - x) / den */
    s = ti_step_length(s, den);
    double u = 1.0 - s, s2 = 2.0 * s, ss = s * s;
    /* u (u S + 2 s V) + s^2 C with S = (cp, xx, p), V = (q, x_i, pa), C = (g, 1, a) */
    double tc = cp * u, tx = xx * u, tp = p * u;
    tc += q * s2; tx += xi * s2; tp += pa * s2;
    tc *= u; tx *= u; tp *= u;
    tc += g * ss; tx += ss; tp += a * ss;
    P->cp = tc; P->xx = tx; P->p = tp;
    sigma *= u;
    P->sigma = sigma;
    double c = s / sigma;
    yb[i] += c;
    return c;
}

/* The objective after a step: n (zeta^2 |x|^2 + |A x - b|^2 / n) */
static double ti_value(const ti_args *A, const ti_prob *P)
{
    double e = A->eta[P->b] * P->xx;
    double val = P->cp - e;
    val -= P->p;
    val -= P->p;
    val += A->bb[P->b];
    val = (val < 0.0) ? 0.0 : val;                   /* np.maximum(val, 0) */
    val += e;
    return val;
}

/* The stopping rule after step P->t (counted by the caller) with objective val; returns 1
 * when P has finished (its weights, iterations and convergence flag written out). */
static int ti_stop(const ti_args *A, ti_prob *P, double val)
{
    const int64_t t = P->t, b = P->b, k = A->k;
    uint8_t done;
    if (!ti_stop_rule(t, A->max_iter, A->md2n[b], &P->vprev, val, &done)) return 0;
    double *yb = A->y + b * k;
    for (int64_t j = 0; j < k; j++) yb[j] *= P->sigma;
    A->n_iter[b] = t;
    A->conv[b] = done;
    return 1;
}

/* One Frank-Wolfe step of problem P (prefetching pf meanwhile); returns 1 when P has
 * finished (its weights, iterations and convergence flag written out). */
static int ti_step(const ti_args *A, ti_prob *P, const double *pf, const double *drow)
{
    const int64_t k = A->k, b = P->b, i = P->i;
    const double *at = A->Atb + b * k;
    double *hb = A->h + b * k, *yb = A->y + b * k;
    const double *row = A->bank ? A->bank + (A->base[b] + i) * k : drow;
    double c = ti_move(A, P);
    P->i = ti_update_argmin(hb, row, at, c, k, pf);  /* next step's vertex */
    double val = ti_value(A, P);
    int64_t t = ++P->t;
    if (t % 8 == 0 && P->sigma < ti_rescale_below) {
        for (int64_t j = 0; j < k; j++) { yb[j] *= P->sigma; hb[j] *= P->sigma; }
        P->sigma = 1.0;
        P->i = ti_argmin(hb, k);
    }
    return ti_stop(A, P, val);
}

/* B problems with k coordinates each.
 * bank: rows of (G + eta I); problem b reads rows base[b] .. base[b] + k - 1
 * gd:   diagonal entry of each bank row (indexed like bank rows)
 * Atb:  (B, k) A'b per problem (TI_MASKED where the problem may not go)
 * bb, eta, md2n: per problem b'b, n zeta^2, n min_decrease^2
 * h, y: (B, k) in: the initial half-gradient (G + eta I)x - A'b and x; out: y = weights
 * cp, xx, p: per problem x'(G + eta I)x, |x|^2, x'A'b (in; overwritten)
 * n_iter, conv: per problem iterations run, stopping rule met before max_iter */
TI_EXPORT void ti_fw_gram(int64_t B, int64_t k, const double *bank, const int64_t *base,
                          const double *gd, const double *Atb, const double *bb,
                          const double *eta, const double *md2n, int64_t max_iter,
                          double *h, double *y, double *cp_, double *xx_, double *p_,
                          int64_t *n_iter, uint8_t *conv)
{
    if (!ti_update_argmin) ti_fw_select(-1, 1);
    ti_args A = {k, max_iter, bank, gd, Atb, bb, eta, md2n, base, h, y, cp_, xx_, p_,
                 n_iter, conv, 0, 0, NULL, NULL, NULL, NULL, NULL, 0};
    if (B <= 0 || k <= 0) return;
    if (!ti_pair) {
        for (int64_t b = 0; b < B; b++) {
            ti_prob P;
            ti_start(&A, &P, b);
            while (!ti_step(&A, &P, NULL, NULL)) {}
        }
        return;
    }
    /* two slots in alternation; a slot whose problem finished takes the next one */
    ti_prob S[2];
    int live[2] = {0, 0};
    int64_t next = 0;
    for (int l = 0; l < 2 && next < B; l++) { ti_start(&A, &S[l], next++); live[l] = 1; }
    int l = 0;
    while (live[0] || live[1]) {
        if (live[l]) {
            const double *pf = live[1 - l] ? ti_row(&A, &S[1 - l]) : NULL;
            if (ti_step(&A, &S[l], pf, NULL)) {
                live[l] = 0;
                if (next < B) { ti_start(&A, &S[l], next++); live[l] = 1; }
            }
        }
        l = 1 - l;
    }
}

/* ti_fw_data's row cache: raw rows r = D'a (m numbers each), keyed by the column u of D.
 * A row is kept on its second request (a vertex the loop returns to; most are visited
 * several times: ~10,000 steps over a few thousand vertices, and pass 2's support far
 * fewer) while slots remain, and read from the cache after that: the same numbers,
 * computed once by the same code.
 * With fewer slots than columns, the last `ring` slots (ti_fw_ring: 32) are a ring of the
 * rows computed most recently that did not get a slot of their own (first requests, and
 * misses once the other slots are taken), each overwriting the oldest: a bootstrap draw
 * returns to a vertex within 32 steps at a third of its steps (median gap between visits
 * 9 steps at 20,000 units), long after the slots filled with the first vertices asked
 * twice, so the ring answers those returns -- rows found 5% -> 45% of the requests at
 * 20,000 units, 56% -> 60% at 10,000; CPU -22% / -6% (RESULTS.md, run SBT). A ring row
 * is the row computed before for the same column: the same numbers. Only in
 * ti_data_row_cached (rows used one at a time); ti_fw_data_side, which holds several
 * rows of a round at once, has none. */
#define TI_RING_MAX 64
typedef struct {
    double *rows;            /* cap x m (the caller's buffer) */
    int64_t *slot;           /* m: slot of column u; -1 never requested, -2 requested once,
                              * <= -3: in ring place -3 - slot */
    double *g;               /* k: the finished row when cmap is NULL (the cached row kept) */
    int64_t cap, used;
    int64_t fc;              /* slots kept for good: cap - ring */
    int64_t ring, rpos;      /* ring places (the last of the cap rows) and the next one */
    int64_t ring_u[TI_RING_MAX];   /* column in each ring place (-1: empty) */
} ti_cache;

/* ring places of ti_cache (0 to TI_RING_MAX; 0: none, ti_data_row_cached as before) and
 * the rows read from the ring since the last ti_fw_ring call (for the tests) */
static int ti_ring = 32;
static int64_t ti_ring_hits = 0;

/* Ring places of the row cache (w: 0 none, at most 64; w < 0 leaves it); returns the
 * value now set and zeroes the count of rows read from the ring (ti_fw_ring_hits). Every
 * value gives the same numbers (a ring row is the row computed before). */
TI_EXPORT int ti_fw_ring(int w)
{
    if (w >= 0) ti_ring = w > TI_RING_MAX ? TI_RING_MAX : w;
    ti_ring_hits = 0;
    return ti_ring;
}

/* rows read from the ring since the last ti_fw_ring call */
TI_EXPORT int64_t ti_fw_ring_hits(void) { return ti_ring_hits; }

/* the ring place for column u (its oldest row dropped: that column back to "requested") */
static double *ti_ring_take(ti_cache *C, int64_t u, int64_t m)
{
    const int64_t pos = C->rpos;
    const int64_t old = C->ring_u[pos];
    if (old >= 0) C->slot[old] = -2;
    C->ring_u[pos] = u;
    C->slot[u] = -3 - pos;
    C->rpos = (pos + 1 == C->ring) ? 0 : pos + 1;
    return C->rows + (C->fc + pos) * m;
}

/* the cached raw row of column u (NULL: none) */
static const double *ti_cached(const ti_cache *C, int64_t u, int64_t m)
{
    const int64_t s = C->slot[u];
    if (s >= 0) return C->rows + s * m;
    if (s <= -3) return C->rows + (C->fc - 3 - s) * m;
    return NULL;
}

static const double *ti_data_row_cached(const ti_args *A, const ti_prob *P, ti_cache *C)
{
    const int64_t *cm = ti_cmap(A, P->b);
    const int64_t i = P->i, u = cm ? cm[i] : i;
    const int64_t s = C->slot[u];
    double *r = (double *)ti_cached(C, u, A->m);
    if (s <= -3) ti_ring_hits++;
    if (!r) {
        r = A->rbuf;
        if (s == -2 && C->used < C->fc) {
            C->slot[u] = C->used;
            r = C->rows + (C->used++) * A->m;
        } else if (C->ring) {                        /* no slot of its own: the ring */
            r = ti_ring_take(C, u, A->m);
        } else if (s == -1) {
            C->slot[u] = -2;
        }
        double *a = A->rbuf + A->m;
        ti_column(A, P->b, i, a);
        ti_row_raw(A->D, A->blk, A->n, A->m, a, r);
    }
    if (cm || r == A->rbuf) return ti_finish_row(A, P->b, r, A->gbuf, i, A->eta[P->b]);
    memcpy(C->g, r, (size_t)A->k * sizeof(double));     /* k == m: keep the cached row */
    C->g[i] += A->eta[P->b];
    return C->g;
}

/* live problems of ti_fw_data_side at most (each its own slot) */
#define TI_SLOTS 16

/* ti_fw_data's loop with up to TI_SLOTS problems live at once (as many as B allows) whose
 * missed Gram rows are computed W (2-16) at a time: a round visits the live problems in
 * turn from where the last round stopped, looks each one's next row up in the cache
 * (C->cap 0: none), and closes when W rows are missed (or every live problem was
 * visited); the rows missed are computed together (ti_rows_raw: one pass over the
 * blocked design serves up to four rows; a column asked twice in a round computed once),
 * then each problem of the round takes its step in turn, the next one's cached row
 * prefetched meanwhile. Every problem advances in turn, so B = 5 problems of equal length
 * still fill every pass (not four together, then one alone). Each problem's operations are
 * its own and every row is the one-row kernel's: the same numbers as one by one. The cache
 * keeps a row on its second request, as ti_data_row_cached (requests counted in visiting
 * order). scr: W m + W n + m numbers of scratch (raw rows, columns, a spare row). */
static void ti_fw_data_side(const ti_args *A, ti_cache *C, int64_t B, int W, double *scr)
{
    const int64_t m = A->m, n = A->n;
    const int NS = (int)(B < TI_SLOTS ? B : TI_SLOTS);
    double *cols = scr + W * m, *spare = cols + W * n;
    ti_prob S[TI_SLOTS];
    int live[TI_SLOTS], n_live = 0, cur = 0;
    int64_t next = 0;
    for (int l = 0; l < NS; l++) { ti_start(A, &S[l], next++); live[l] = 1; n_live++; }
    while (n_live > 0) {
        int rl[TI_SLOTS], hit[TI_SLOTS], incache[TI_SLOTS], dup[TI_SLOTS];
        const double *raw[TI_SLOTS], *ca[TI_SLOTS];
        double *cr[TI_SLOTS];
        int64_t cu[TI_SLOTS];
        int nr = 0, nc = 0, nmiss = 0, seen = 0;
        while (seen < n_live && nmiss < W) {         /* the round: live slots from cur */
            while (!live[cur]) cur = (cur + 1) % NS;
            const int l = cur;
            cur = (cur + 1) % NS;
            seen++;
            const int64_t *cm = ti_cmap(A, S[l].b);
            const int64_t i = S[l].i, u = cm ? cm[i] : i;
            const int q = nr++;
            rl[q] = l;
            hit[q] = incache[q] = 0;
            dup[q] = -1;
            double *dst = scr + nmiss * m;
            if (C->cap > 0) {
                const int64_t s = C->slot[u];
                if (s >= 0) { raw[q] = C->rows + s * m; hit[q] = incache[q] = 1; continue; }
                if (s == -1) {
                    C->slot[u] = -2;
                } else if (C->used < C->cap) {
                    C->slot[u] = C->used;
                    dst = C->rows + (C->used++) * m;
                    incache[q] = 1;
                }
            }
            nmiss++;
            raw[q] = dst;
            for (int j = 0; j < nc; j++)
                if (cu[j] == u) { dup[q] = j; break; }
            if (dup[q] < 0) {
                double *a = cols + nc * n;
                for (int64_t t = 0; t < n; t++) a[t] = A->D[t * m + u];
                ca[nc] = a; cr[nc] = dst; cu[nc] = u; nc++;
            }
        }
        if (nc) ti_rows_raw(A, nc, ca, cr, spare);
        for (int q = 0; q < nr; q++)
            if (dup[q] >= 0)
                memcpy((double *)raw[q], cr[dup[q]], (size_t)m * sizeof(double));
        for (int q = 0; q < nr; q++) {
            const int l = rl[q];
            const double *pf = (q + 1 < nr && hit[q + 1]) ? raw[q + 1] : NULL;
            const ti_prob *P = &S[l];
            const double *row;
            if (ti_cmap(A, P->b) || !incache[q]) {
                row = ti_finish_row(A, P->b, (double *)raw[q], A->gbuf, P->i, A->eta[P->b]);
            } else {                                 /* k == m: keep the cached row */
                memcpy(C->g, raw[q], (size_t)A->k * sizeof(double));
                C->g[P->i] += A->eta[P->b];
                row = C->g;
            }
            if (ti_step(A, &S[l], pf, row)) {
                if (next < B) {
                    ti_start(A, &S[l], next++);
                } else {
                    live[l] = 0;
                    n_live--;
                }
            }
        }
    }
}

/* ---- Pruned steps (data form, rows not cached) ---------------------------------------
 * A step of the loops above updates the half-gradient h of all k coordinates with a Gram
 * row, O(n m) to compute from the design when it is not cached (every step beyond ~20,000
 * controls: the design streamed from memory). The pruned loop gets the same iterates
 * without computing rows. It keeps the steps taken (vertex, coefficient c) in a log and
 * brings a coordinate's h up to date only when it may be the next vertex, replaying the
 * updates it missed one by one: each Gram entry D_j . D_i a dot product in the row
 * kernel's order with its separate roundings, eta added on the vertex, then the same
 * three roundings as ti_update_argmin -- so every h it reads is the full loop's number to
 * the bit, and the argmin (first smallest) is the full loop's.
 *
 * Which coordinates may be the argmin: in exact arithmetic
 *     h_j(t) = h_j(0) + D_j . W_t + eta (x_j(t) - x_j(0)) - (A'b)_j C_t,
 * W_t = sum_s c_s D_{i_s}, C_t = sum_s c_s (scaled as h). With a reference W_r (q = D'W_r,
 * one pass over the design) and a unit direction e (the way W moved since the previous
 * renewal; D'e a second pass), W_t - W_r = a1 e + r and D_j . W_t >= q_j + pe_j a1 -
 * rho_j |r| (pe_j = D_j . e, rho_j >= |D_j - pe_j e|: Cauchy-Schwarz on the rest), so
 * L_j = v_j - atp_j C_t + pe_j a1 - rho_j |r| is a lower bound of h_j(t) (ti_bound);
 * its parts include a margin for every rounding of the full loop's h_j (at most (max_iter
 * + n + 32) 8 u of the magnitudes summed, kap below) and of the bound's own arithmetic. A
 * step evaluates L_j for every coordinate (four numbers each, no row) and replays only
 * those with L_j <= the smallest h found so far. The bound loosens as W moves away from
 * W_r; the reference and direction are renewed once the candidates since the last
 * renewal have cost about two passes (ti_prune_alpha). A rescale of the lazy scale factor
 * (sigma below ti_rescale_below) brings every coordinate up to date first (the full loop
 * scales them all), then restarts the bound from the scaled state. */

/* arrays of the pruned loop shared by the problems of a ti_fw_data call */
typedef struct {
    const double *DT;        /* m x n: the design's columns, each contiguous */
    const double *nrm;       /* m: column norms, rounded up */
    double *v, *atp, *pe, *rho, *base0;   /* k each: the bound's parts (below) */
    int64_t *tau;            /* k: log length up to which h_j is current */
    int64_t *cand, *prev;    /* k each: coordinates replayed this step / last step */
    int64_t *lu, *li;        /* log: column and coordinate of each step's vertex */
    double *lc;              /* log: each step's c */
    double *W, *Wr, *e, *q, *qe;   /* n, n, n, m, m */
} ti_pws;

/* knobs (tests and benchmarks): pruned loop from m >= ti_prune_min (-1: never), and the
 * renewal when the candidates since the last cost ti_prune_alpha times its two passes */
static int64_t ti_prune_min = 8192;
static double ti_prune_alpha = 1.0;
static int64_t ti_prune_stats[6];   /* steps, candidates, renewals, catch-ups of all,
                                     * steps replayed, problems handed to the full loop */
/* a problem whose pruned steps cost more than this share of the full loop's steps without
 * cached rows (n m + 4 k each) goes on with the full loop (checked every 64 steps from
 * the 256th) */
static double ti_prune_giveup = 0.75;

/* Set the hand-over share (share >= 0; else leave it); returns the share now set. */
TI_EXPORT double ti_fw_prune_giveup(double share)
{
    if (share >= 0.0) ti_prune_giveup = share;
    return ti_prune_giveup;
}

/* Set the pruned loop's threshold (min_m >= 0 columns; -1 never; below -1: leave it) and
 * renewal rule (alpha > 0; else leave it); zeroes the counts (ti_fw_prune_stats) and
 * returns the threshold now set. */
TI_EXPORT int64_t ti_fw_prune(int64_t min_m, double alpha)
{
    if (min_m >= -1) ti_prune_min = min_m;
    if (alpha > 0.0) ti_prune_alpha = alpha;
    for (int l = 0; l < 6; l++) ti_prune_stats[l] = 0;
    return ti_prune_min;
}

TI_EXPORT void ti_fw_prune_stats(int64_t *out)
{
    for (int l = 0; l < 6; l++) out[l] = ti_prune_stats[l];
}

/* g[l] = a[l] . b for l < 8 (unused lanes: any column), each over t in the row kernel's
 * order with separate roundings (g = a_0 b_0, then g += a_t b_t): eight independent
 * chains at once instead of one latency-bound chain */
static void ti_dots8(const double *const *a, const double *b, int64_t n, double *g)
{
    double g0 = a[0][0] * b[0], g1 = a[1][0] * b[0], g2 = a[2][0] * b[0],
           g3 = a[3][0] * b[0], g4 = a[4][0] * b[0], g5 = a[5][0] * b[0],
           g6 = a[6][0] * b[0], g7 = a[7][0] * b[0];
    for (int64_t t = 1; t < n; t++) {
        const double bt = b[t];
        double z0 = a[0][t] * bt, z1 = a[1][t] * bt, z2 = a[2][t] * bt, z3 = a[3][t] * bt;
        double z4 = a[4][t] * bt, z5 = a[5][t] * bt, z6 = a[6][t] * bt, z7 = a[7][t] * bt;
        g0 += z0; g1 += z1; g2 += z2; g3 += z3; g4 += z4; g5 += z5; g6 += z6; g7 += z7;
    }
    g[0] = g0; g[1] = g1; g[2] = g2; g[3] = g3; g[4] = g4; g[5] = g5; g[6] = g6; g[7] = g7;
}

/* the update of h_j by log entry s with Gram entry g (the full loop's roundings) */
static inline double ti_replay(const ti_pws *W, double h, double g, double a, int64_t j,
                               int64_t s, double eta)
{
    if (W->li[s] == j) g += eta;
    double r = g - a;
    r *= W->lc[s];
    return h + r;
}

/* bring h_j up to date (the updates of log entries tau[j] .. nlog - 1, in order; their
 * Gram entries eight at a time) */
static void ti_catch_up(const ti_args *A, const ti_pws *W, int64_t j, int64_t uj,
                        const double *at, double *hb, double eta, int64_t nlog)
{
    const int64_t n = A->n;
    const double *dj = W->DT + uj * n;
    double h = hb[j];
    const double a = at[j];
    for (int64_t s0 = W->tau[j]; s0 < nlog; s0 += 8) {
        const int64_t cnt = nlog - s0 < 8 ? nlog - s0 : 8;
        const double *cols[8];
        double g[8];
        for (int64_t l = 0; l < 8; l++) cols[l] = W->DT + W->lu[s0 + (l < cnt ? l : 0)] * n;
        ti_dots8(cols, dj, n, g);
        for (int64_t l = 0; l < cnt; l++) h = ti_replay(W, h, g[l], a, j, s0 + l, eta);
    }
    hb[j] = h;
    W->tau[j] = nlog;
}

/* every coordinate of the problem (coordinate map cm) up to date */
static void ti_catch_up_all(const ti_args *A, const ti_pws *W, const int64_t *cm,
                            const double *at, double *hb, double eta, int64_t nlog)
{
    for (int64_t j = 0; j < A->k; j++)
        if (W->tau[j] < nlog) ti_catch_up(A, W, j, cm ? cm[j] : j, at, hb, eta, nlog);
}

/* bring cnt <= 8 coordinates js up to date: those one step behind (most: last step's
 * candidates) together, their Gram entries with the last vertex in one ti_dots8 */
static int64_t ti_catch_up8(const ti_args *A, const ti_pws *W, const int64_t *cm,
                            const int64_t *js, int cnt, const double *at, double *hb,
                            double eta, int64_t nlog)
{
    const int64_t n = A->n;
    const double *cols[8];
    int64_t one[8], steps = 0;
    int n1 = 0;
    for (int l = 0; l < cnt; l++) {
        const int64_t j = js[l];
        if (W->tau[j] >= nlog) continue;
        steps += nlog - W->tau[j];
        if (W->tau[j] == nlog - 1) {
            one[n1] = j;
            cols[n1++] = W->DT + (cm ? cm[j] : j) * n;
        } else {
            ti_catch_up(A, W, j, cm ? cm[j] : j, at, hb, eta, nlog);
        }
    }
    if (n1) {
        const double *ds = W->DT + W->lu[nlog - 1] * n;
        double g[8];
        for (int l = n1; l < 8; l++) cols[l] = cols[0];
        ti_dots8(cols, ds, n, g);
        for (int l = 0; l < n1; l++) {
            const int64_t j = one[l];
            hb[j] = ti_replay(W, hb[j], g[l], at[j], j, nlog - 1, eta);
            W->tau[j] = nlog;
        }
    }
    return steps;
}

/* the sweep's running best and counts */
typedef struct {
    double bm;
    int64_t bi, nc, since;
} ti_sweep;

/* the pending coordinates (that passed the bound) up to date, candidates, compared with
 * the best (first smallest: the order of comparison does not matter) */
static void ti_sweep_flush(const ti_args *A, ti_pws *W, ti_sweep *sw, const int64_t *cm,
                           const double *at, double *hb, double eta, int64_t nlog,
                           const int64_t *pend, int np)
{
    sw->since += ti_catch_up8(A, W, cm, pend, np, at, hb, eta, nlog);
    for (int l = 0; l < np; l++) {
        const int64_t j = pend[l];
        W->cand[sw->nc++] = j;
        const double hj = hb[j];
        if (hj < sw->bm || (hj == sw->bm && j < sw->bi)) { sw->bm = hj; sw->bi = j; }
    }
}

/* the step's constants of the bound L_j = v_j - atp_j C + min(pe_j alo, pe_j ahi)
 * - rho_j rp (ti_fw_prune_one) */
typedef struct {
    double C, alo, ahi, rp;
} ti_bnd;

static inline double ti_bound(const ti_pws *W, const ti_bnd *B, int64_t j)
{
    const double lo = W->pe[j] * B->alo, hi = W->pe[j] * B->ahi;
    return W->v[j] - W->atp[j] * B->C + (lo < hi ? lo : hi) - W->rho[j] * B->rp;
}

/* the sweep from coordinate j0 on, one bound at a time */
static void ti_sweep_scalar(const ti_args *A, ti_pws *W, ti_sweep *sw, const int64_t *cm,
                            const double *at, double *hb, double eta, int64_t nlog,
                            const ti_bnd *B, int64_t j0)
{
    int64_t pend[8];
    int np = 0;
    for (int64_t j = j0; j < A->k; j++) {
        if (!(ti_bound(W, B, j) <= sw->bm)) continue;
        pend[np++] = j;
        if (np == 8) { ti_sweep_flush(A, W, sw, cm, at, hb, eta, nlog, pend, np); np = 0; }
    }
    if (np) ti_sweep_flush(A, W, sw, cm, at, hb, eta, nlog, pend, np);
}

#ifdef TI_HAVE_X86
/* the sweep's bounds four at a time (AVX); returns the coordinates done */
__attribute__((target("avx")))
static int64_t ti_sweep_avx(const ti_args *A, ti_pws *W, ti_sweep *sw, const int64_t *cm,
                            const double *at, double *hb, double eta, int64_t nlog,
                            const ti_bnd *B)
{
    const int64_t k = A->k;
    const __m256d vC = _mm256_set1_pd(B->C), vlo = _mm256_set1_pd(B->alo),
                  vhi = _mm256_set1_pd(B->ahi), vr = _mm256_set1_pd(B->rp);
    __m256d vb = _mm256_set1_pd(sw->bm);
    const double *v = W->v, *ap = W->atp, *pe = W->pe, *rh = W->rho;
    int64_t pend[16];
    int np = 0;
    int64_t j = 0;
    for (; j + 4 <= k; j += 4) {
        const __m256d P = _mm256_loadu_pd(pe + j);
        __m256d L = _mm256_sub_pd(_mm256_loadu_pd(v + j),
                                  _mm256_mul_pd(_mm256_loadu_pd(ap + j), vC));
        L = _mm256_add_pd(L, _mm256_min_pd(_mm256_mul_pd(P, vlo), _mm256_mul_pd(P, vhi)));
        L = _mm256_sub_pd(L, _mm256_mul_pd(_mm256_loadu_pd(rh + j), vr));
        const int mk = _mm256_movemask_pd(_mm256_cmp_pd(L, vb, _CMP_LE_OQ));
        if (!mk) continue;
        for (int l = 0; l < 4; l++)
            if (mk >> l & 1) pend[np++] = j + l;
        if (np >= 8) {
            ti_sweep_flush(A, W, sw, cm, at, hb, eta, nlog, pend, 8);
            for (int l = 8; l < np; l++) pend[l - 8] = pend[l];
            np -= 8;
            vb = _mm256_set1_pd(sw->bm);
        }
    }
    if (np) ti_sweep_flush(A, W, sw, cm, at, hb, eta, nlog, pend, np);
    return j;
}
#endif

/* every coordinate whose bound L_j <= the best so far: brought up to date and compared */
static void ti_prune_sweep(const ti_args *A, ti_pws *W, ti_sweep *sw, const int64_t *cm,
                           const double *at, double *hb, double eta, int64_t nlog,
                           const ti_bnd *B)
{
    int64_t j0 = 0;
#ifdef TI_HAVE_X86
    if (ti_row_vec > 1) j0 = ti_sweep_avx(A, W, sw, cm, at, hb, eta, nlog, B);
#endif
    ti_sweep_scalar(A, W, sw, cm, at, hb, eta, nlog, B, j0);
}

/* v_j of the bound: base0_j + q_j (0 before the first renewal) + eta (1 - kap) x_j */
static inline double ti_bound_v(const ti_pws *W, int64_t j, int64_t uj, const double *yb,
                                double eta, double kap, int have_q)
{
    return W->base0[j] + (have_q ? W->q[uj] : 0.0) + eta * (1.0 - kap) * yb[j];
}

/* the bound's per-coordinate parts from the current reference: v_j from q = D'W_r,
 * pe_j = D_j . e and rho_j >= |D_j - pe_j e| (rounded up, kap2 |D_j|^2 added) */
static void ti_prune_parts(const ti_pws *W, int64_t k, const int64_t *cm, const double *at,
                           const double *yb, double eta, double kap, double kap2,
                           int have_q, int have_e, double ne2)
{
    for (int64_t j = 0; j < k; j++) {
        const int64_t uj = cm ? cm[j] : j;
        const double nr = W->nrm[uj];
        const double pj = have_e ? W->qe[uj] : 0.0;
        double r2 = nr * nr - pj * pj * (2.0 - ne2);
        r2 += kap2 * nr * nr;
        W->pe[j] = pj;
        W->rho[j] = (r2 > 0.0 ? sqrt(r2) : 0.0) * (1.0 + kap);
        W->v[j] = (at[j] == TI_MASKED) ? INFINITY
                : ti_bound_v(W, j, uj, yb, eta, kap, have_q);
    }
}

/* the bound from the problem's current state (its start, or a rescale): every h_j current
 * as of an empty log, W = W_r = e = 0, the parts without reference or direction */
static void ti_prune_restart(const ti_args *A, ti_pws *W, const int64_t *cm,
                             const double *at, const double *hb, const double *yb,
                             double eta, double kap, double kap2)
{
    for (int64_t j = 0; j < A->k; j++) {
        W->base0[j] = (hb[j] - kap * fabs(hb[j])) - eta * yb[j] * (1.0 + kap);
        W->tau[j] = 0;
    }
    for (int64_t l = 0; l < A->n; l++) W->W[l] = W->Wr[l] = W->e[l] = 0.0;
    ti_prune_parts(W, A->k, cm, at, yb, eta, kap, kap2, 0, 0, 0.0);
}

/* one problem (b) by the pruned loop; the same weights, iterations and convergence flag
 * as ti_step's loops (h is left partly out of date: the callers do not read it back) */
static void ti_fw_prune_one(const ti_args *A, ti_pws *W, ti_cache *Cc, int64_t b)
{
    const int64_t k = A->k, n = A->n, m = A->m;
    const int64_t *cm = ti_cmap(A, b);
    const double *at = A->Atb + b * k;
    double *hb = A->h + b * k, *yb = A->y + b * k;
    const double eta = A->eta[b];
    const double u53 = 1.1102230246251565e-16;
    const double kap = (double)(A->max_iter + n + 32) * 8.0 * u53;
    const double kap2 = (double)(n + 8) * 8.0 * u53;
    const double *DT = W->DT;
    for (int64_t j = 0; j < k; j++) W->atp[j] = at[j] + kap * fabs(at[j]);
    ti_prob P;
    ti_start(A, &P, b);
    int64_t nlog = 0, nprev = 0, since = 0, renewals = 0, cands = 0;
    double work = 0.0;   /* the pruned steps' work so far, in multiply-adds */
    double C = 0.0, S = 0.0, Sr = 0.0, nWr = 0.0;
    int have_q = 0, have_e = 0;
    double ne2 = 0.0;
    ti_prune_restart(A, W, cm, at, hb, yb, eta, kap, kap2);
    const double budget = ti_prune_alpha * 2.0 * (double)m * (double)n;
    for (;;) {
        const int64_t i = P.i, ui = cm ? cm[i] : i;
        if (W->tau[i] < nlog) ti_catch_up(A, W, i, ui, at, hb, eta, nlog);
        double c = ti_move(A, &P);
        W->lu[nlog] = ui; W->li[nlog] = i; W->lc[nlog] = c;
        nlog++;
        const double *di = DT + ui * n;
        for (int64_t l = 0; l < n; l++) W->W[l] += c * di[l];
        C += c;
        S += c * W->nrm[ui];
        W->v[i] = ti_bound_v(W, i, ui, yb, eta, kap, have_q);
        double val = ti_value(A, &P);
        int64_t t = ++P.t;
        ti_prune_stats[0]++;
        if (t % 8 == 0 && P.sigma < ti_rescale_below) {
            /* the full loop scales every h: all up to date, then scaled; the bound
             * restarts from this state */
            ti_catch_up_all(A, W, cm, at, hb, eta, nlog);
            ti_prune_stats[3]++;
            for (int64_t j = 0; j < k; j++) { yb[j] *= P.sigma; hb[j] *= P.sigma; }
            P.sigma = 1.0;
            P.i = ti_argmin(hb, k);
            nlog = 0; nprev = 0; since = 0; renewals = 0; cands = 0;
            C = S = Sr = nWr = 0.0;
            have_q = have_e = 0;
            ne2 = 0.0;
            ti_prune_restart(A, W, cm, at, hb, yb, eta, kap, kap2);
            if (ti_stop(A, &P, val)) return;
            continue;
        }
        if ((double)cands * (double)(n + 8) > budget) {
            /* renew the reference (q = D'W_r) and the direction (the way W moved since
             * the last renewal, or W itself at the first): two passes over the design */
            double d2 = 0.0;
            for (int64_t l = 0; l < n; l++) {
                const double d = renewals ? W->W[l] - W->Wr[l] : W->W[l];
                W->e[l] = d;
                d2 += d * d;
            }
            const double nd = sqrt(d2);
            have_e = nd > 0.0;
            ne2 = 0.0;
            if (have_e) {
                for (int64_t l = 0; l < n; l++) { W->e[l] /= nd; ne2 += W->e[l] * W->e[l]; }
                ti_row_raw(A->D, A->blk, n, m, W->e, W->qe);
            } else {
                for (int64_t l = 0; l < n; l++) W->e[l] = 0.0;
            }
            for (int64_t l = 0; l < n; l++) W->Wr[l] = W->W[l];
            ti_row_raw(A->D, A->blk, n, m, W->Wr, W->q);
            have_q = 1;
            Sr = S;
            double w2 = 0.0;
            for (int64_t l = 0; l < n; l++) w2 += W->Wr[l] * W->Wr[l];
            nWr = sqrt(w2);
            cands = 0;
            renewals++;
            work += 2.0 * (double)m * (double)n + 8.0 * (double)k;
            ti_prune_stats[2]++;
            ti_prune_parts(W, k, cm, at, yb, eta, kap, kap2, 1, have_e, ne2);
        }
        /* this step's constants: dW = W - W_r = a1 e + r */
        double a1 = 0.0, dw2 = 0.0, r2 = 0.0;
        for (int64_t l = 0; l < n; l++) {
            const double d = W->W[l] - W->Wr[l];
            a1 += W->e[l] * d;
            dw2 += d * d;
        }
        for (int64_t l = 0; l < n; l++) {
            const double r = (W->W[l] - W->Wr[l]) - a1 * W->e[l];
            r2 += r * r;
        }
        const double de = kap * (fabs(a1) + sqrt(dw2) + 2.0 * S + Sr + nWr) * (1.0 + kap);
        ti_bnd Bd = {C, a1 - de, a1 + de, sqrt(r2) * (1.0 + kap) + de};
        /* the next vertex: first the coordinates replayed last step (likely near the
         * smallest), then every coordinate whose bound does not rule it out */
        double bm = INFINITY;
        int64_t bi = -1;
        const int64_t since0 = since;
        for (int64_t e = 0; e < nprev; e += 8) {
            const int cnt = (int)(nprev - e < 8 ? nprev - e : 8);
            since += ti_catch_up8(A, W, cm, W->prev + e, cnt, at, hb, eta, nlog);
            for (int l = 0; l < cnt; l++) {
                const int64_t j = W->prev[e + l];
                const double hj = hb[j];
                if (hj < bm || (hj == bm && j < bi)) { bm = hj; bi = j; }
            }
        }
        if (bi < 0) {                                /* no seed: the smallest bound's */
            double lm = INFINITY;
            int64_t jl = -1;
            for (int64_t j = 0; j < k; j++) {
                const double L = ti_bound(W, &Bd, j);
                if (L < lm) { lm = L; jl = j; }
            }
            if (jl >= 0) {
                if (W->tau[jl] < nlog) {
                    since += nlog - W->tau[jl];
                    ti_catch_up(A, W, jl, cm ? cm[jl] : jl, at, hb, eta, nlog);
                }
                bm = hb[jl]; bi = jl;
                if (!(bm == bm)) { bm = INFINITY; bi = -1; }
            }
        }
        ti_sweep sw = {bm, bi, 0, since};
        ti_prune_sweep(A, W, &sw, cm, at, hb, eta, nlog, &Bd);
        bm = sw.bm; bi = sw.bi; since = sw.since;
        const int64_t nc = sw.nc;
        if (bi < 0 || !(bm == bm)) {
            /* nothing finite found (NaN / infinite h): every coordinate up to date and
             * the full loop's argmin */
            ti_catch_up_all(A, W, cm, at, hb, eta, nlog);
            ti_prune_stats[3]++;
            bi = ti_argmin(hb, k);
        }
        ti_prune_stats[1] += nc;
        ti_prune_stats[4] += since - since0;
        cands += nc;
        work += (double)(nc + since - since0) * (double)(n + 8) + 4.0 * (double)k;
        P.i = bi;
        int64_t *tmp = W->prev; W->prev = W->cand; W->cand = tmp;
        nprev = nc;
        if (ti_stop(A, &P, val)) return;
        if (P.t >= 256 && P.t % 64 == 0
                && work > ti_prune_giveup * (double)P.t * ((double)m * (double)n + 4.0 * k)) {
            /* pruning does not pay here (half-gradients close together, as a placebo's):
             * every coordinate up to date, then the full loop's steps to the end */
            ti_catch_up_all(A, W, cm, at, hb, eta, nlog);
            ti_prune_stats[5]++;
            if (Cc->cap > 0)
                while (!ti_step(A, &P, NULL, ti_data_row_cached(A, &P, Cc))) {}
            else
                while (!ti_step(A, &P, NULL, ti_data_row(A, &P))) {}
            return;
        }
    }
}

/* every problem of a ti_fw_data call by the pruned loop (one by one); returns 0 without
 * memory for its arrays (the caller then runs its own loop) */
static int ti_fw_data_pruned(const ti_args *A, ti_cache *Cc, int64_t B)
{
    const int64_t k = A->k, n = A->n, m = A->m, L = A->max_iter + 1;
    ti_pws W;
    double *DT = (double *)malloc((size_t)(m * n + 3 * m) * sizeof(double));
    double *dk = (double *)malloc((size_t)(5 * k) * sizeof(double));
    int64_t *ik = (int64_t *)malloc((size_t)(3 * k + 2 * L) * sizeof(int64_t));
    double *dl = (double *)malloc((size_t)(L + 3 * n) * sizeof(double));
    if (!DT || !dk || !ik || !dl) { free(DT); free(dk); free(ik); free(dl); return 0; }
    double *nrm = DT + m * n;
    for (int64_t u = 0; u < m; u++) {
        double *c = DT + u * n;
        for (int64_t t = 0; t < n; t++) c[t] = A->D[t * m + u];
        double ss = c[0] * c[0];
        for (int64_t t = 1; t < n; t++) ss += c[t] * c[t];
        nrm[u] = sqrt(ss) * (1.0 + 1e-12);           /* rounded up */
    }
    W.DT = DT; W.nrm = nrm; W.q = nrm + m; W.qe = W.q + m;
    W.v = dk; W.atp = dk + k; W.pe = dk + 2 * k; W.rho = dk + 3 * k; W.base0 = dk + 4 * k;
    W.tau = ik; W.cand = ik + k; W.prev = ik + 2 * k; W.lu = ik + 3 * k; W.li = W.lu + L;
    W.lc = dl; W.W = dl + L; W.Wr = W.W + n; W.e = W.Wr + n;
    for (int64_t b = 0; b < B; b++) ti_fw_prune_one(A, &W, Cc, b);
    free(DT); free(dk); free(ik); free(dl);
    return 1;
}

/* ti_fw_gram's loop in data form: no Gram matrix; each step computes the row it needs
 * (ti_data_row, O(n m)) instead of reading it from a k x k bank -- or, with a cache
 * (cache: cache_rows x m numbers, cache_rows >= 1; NULL / 0: none), reads a row computed
 * before for the same column of D (ti_data_row_cached; the problems of a call share D,
 * so they share the cache). cache_slot (m) / cache_used (1): NULL, a cache for this call
 * only; else the caller's table, kept across calls on the same D (a placebo's chunks),
 * its entries -1 for a fresh cache. With several problems, ti_pair and the AVX kernel
 * (the blocked copy of D), and one coordinate map (a placebo's replicates; not the
 * bootstrap's draws in the control-design form, cmap_per: most of their rows are cached),
 * up to 16 run side by side and the rows they miss are computed up to ti_nrows (4; for a
 * design of ti_wide_min numbers or more ti_nrows_wide, 16) in one pass over D
 * (ti_fw_data_side; placebo at 4,000 / 10,000 / 20,000 units: -14% / -34% / -38% CPU,
 * run RW; sixteen at 250,000 units: -47%, run PL); else (ti_fw_rows(1), SSE2 / scalar
 * rows) with a cache two problems run in alternation, the other's next row prefetched
 * when it is cached (a placebo's chunk: 5-7% less CPU at 4,000-6,000 units, run SW),
 * else one by one. (Two rows per pass
 * were tried before in 32-column blocks, 16 accumulators in 16 registers: no faster;
 * register-blocked, two rows gain 1.2-1.4x and four rows 1.6-1.9x in multiply-adds per
 * ns on a design in L3, RESULTS.md "sdidrows".)
 * D (n x m), cmap (k, or NULL), rbuf (m + n), gbuf (k, or NULL without cmap) scratch; a
 * blocked copy of D (n x m numbers) is allocated here for the AVX kernel; gd (k):
 * diagonal of G + eta I (the column sums of squares of D in ti_data_row's order, spread
 * by cmap, plus eta); base (B) all zero; the other arguments as ti_fw_gram's.
 * cmap_per: cmap is B x k, one map per problem (bootstrap draws solved in alternation
 * on the controls' design), gd B x k and base[b] = b k. */
TI_EXPORT void ti_fw_data(int64_t B, int64_t k, int64_t n, int64_t m, const double *D,
                          const int64_t *cmap, const int64_t *base, const double *gd,
                          const double *Atb, const double *bb, const double *eta,
                          const double *md2n, int64_t max_iter, double *h, double *y,
                          double *cp_, double *xx_, double *p_, int64_t *n_iter,
                          uint8_t *conv, double *rbuf, double *gbuf, double *cache,
                          int64_t cache_rows, int64_t *cache_slot, int64_t *cache_used,
                          int64_t cmap_per)
{
    if (!ti_update_argmin) ti_fw_select(-1, 1);
    if (B <= 0 || k <= 0) return;
    double *blk = NULL;                              /* NULL also when malloc fails */
    if (ti_row_vec > 1 && m >= 32) {
        const int64_t nb = m / 32;
        blk = (double *)malloc((size_t)(nb * 32 * n) * sizeof(double));
        if (blk)
            for (int64_t bq = 0; bq < nb; bq++)
                for (int64_t t = 0; t < n; t++)
                    for (int l = 0; l < 32; l++)
                        blk[(bq * n + t) * 32 + l] = D[t * m + bq * 32 + l];
    }
    ti_args A = {k, max_iter, NULL, gd, Atb, bb, eta, md2n, base, h, y, cp_, xx_, p_,
                 n_iter, conv, n, m, D, blk, cmap, rbuf, gbuf, cmap_per != 0};
    ti_cache C = {cache, cache_slot, NULL, cache ? cache_rows : 0, 0, 0, 0, 0, {0}};
    if (C.cap > 0) {
        if (!cache_slot) C.slot = (int64_t *)malloc((size_t)m * sizeof(int64_t));
        C.g = cmap ? NULL : (double *)malloc((size_t)k * sizeof(double));
        if (!C.slot || (!cmap && !C.g)) {            /* no memory: no cache */
            if (!cache_slot) free(C.slot);
            free(C.g);
            C.slot = NULL; C.g = NULL; C.cap = 0;
        } else if (cache_slot) {
            C.used = cache_used ? *cache_used : 0;   /* the caller's cache, kept */
        } else {
            for (int64_t u = 0; u < m; u++) C.slot[u] = -1;
        }
    }
    const int wmax = m * n >= ti_wide_min ? ti_nrows_wide : ti_nrows;
    const int W = (int)(B < wmax ? B : wmax);
    double *scr = NULL;
    /* side by side where rows miss: a placebo's replicates (one coordinate map). Not the
     * control-design form's bootstrap draws (cmap_per): they find 82-96% of their rows in
     * the cache and the alternation below is faster for them (run RP: +1-8% CPU side by
     * side at 2,000-4,000 units) */
    if (W > 1 && ti_pair && blk && !cmap_per)
        scr = (double *)malloc((size_t)(W * m + W * n + m) * sizeof(double));
    /* the ring (ti_cache) where rows cannot all have slots: a quarter of the slots at most,
     * none taken yet (a cache kept from an earlier call on D may have filled them) */
    C.fc = C.cap;
    if (!scr && C.cap > 0 && C.cap < m) {
        C.ring = C.cap / 4 < ti_ring ? C.cap / 4 : ti_ring;
        if (C.ring > C.cap - C.used) C.ring = C.cap - C.used;
        C.fc = C.cap - C.ring;
        for (int64_t j = 0; j < C.ring; j++) C.ring_u[j] = -1;
    }
    /* pruned: a point fit's problem or a bootstrap draw's (B = 1 without masked
     * coordinates, or cmap_per); not a placebo's replicates (masked: the units drawn as
     * treated), whose half-gradients lie close together (a placebo's treated units are
     * controls): 16% of the coordinates pass the bound at 10,000 units, 5x slower than
     * the rows computed four at a time and cached (RESULTS.md, section "Synthetic DiD:
     * pruned Frank-Wolfe steps") */
    int prune = ti_prune_min >= 0 && m >= ti_prune_min && !scr && (B == 1 || cmap_per)
                && max_iter <= 10000000;          /* (its log: max_iter entries) */
    if (prune && !cmap_per)
        for (int64_t j = 0; j < k; j++)
            if (Atb[j] == TI_MASKED) { prune = 0; break; }
    if (prune && ti_fw_data_pruned(&A, &C, B)) {
        /* (done) */
    } else if (scr) {
        ti_fw_data_side(&A, &C, B, W, scr);
        free(scr);
    } else if (C.cap > 0 && ti_pair && B > 1) {
        /* two problems in alternation (ti_fw_gram's scheme): while one updates, the cached
         * row the other needs next is prefetched (rows not cached are computed in turn);
         * each problem's operations are its own, so the same numbers */
        ti_prob S[2];
        int live[2] = {0, 0};
        int64_t next = 0;
        for (int l = 0; l < 2 && next < B; l++) { ti_start(&A, &S[l], next++); live[l] = 1; }
        int l = 0;
        while (live[0] || live[1]) {
            if (live[l]) {
                const double *pf = NULL;
                if (live[1 - l]) {
                    const int64_t *cmo = ti_cmap(&A, S[1 - l].b);
                    const int64_t io = S[1 - l].i, uo = cmo ? cmo[io] : io;
                    pf = ti_cached(&C, uo, m);
                }
                if (ti_step(&A, &S[l], pf, ti_data_row_cached(&A, &S[l], &C))) {
                    live[l] = 0;
                    if (next < B) { ti_start(&A, &S[l], next++); live[l] = 1; }
                }
            }
            l = 1 - l;
        }
    } else {
        for (int64_t b = 0; b < B; b++) {
            ti_prob P;
            ti_start(&A, &P, b);
            if (C.cap > 0)
                while (!ti_step(&A, &P, NULL, ti_data_row_cached(&A, &P, &C))) {}
            else
                while (!ti_step(&A, &P, NULL, ti_data_row(&A, &P))) {}
        }
    }
    for (int64_t j = 0; j < C.ring; j++)                 /* the ring is this call's: its */
        if (C.ring_u[j] >= 0) C.slot[C.ring_u[j]] = -2;  /* columns back to "requested" */
    if (cache_slot) {
        if (cache_used && C.cap > 0) *cache_used = C.used;
    } else {
        free(C.slot);
    }
    free(C.g);
    free(blk);
}

/* out (k x k, C order) = G[idx][:, idx] + eta I, G with ld numbers a row: a bootstrap
 * draw's Gram matrix read from the Gram matrix of all controls built once (the same
 * entries), eta added to the diagonal as weight_problem does (one rounding). Rows in
 * order, each a gather along one row of G (idx sorted: a forward sweep). */
TI_EXPORT void ti_gather_gram(int64_t k, const double *G, int64_t ld, const int64_t *idx,
                              double eta, double *out)
{
    for (int64_t i = 0; i < k; i++) {
        const double *src = G + idx[i] * ld;
        double *dst = out + i * k;
        for (int64_t j = 0; j < k; j++) dst[j] = src[idx[j]];
        dst[i] += eta;
    }
}

/* ----------------------------------------------------------------------------------------
 * A placebo's unit-weight problems in residual form with a single-precision screen
 * (ti_fw_screen; _sdid_solver.fw_screened).
 *
 * Why. In data form the loops above update the half-gradient h (k numbers) with a Gram
 * row each step, which costs T0 multiply-adds a coordinate (the row computed from the
 * design) plus the update's reads and writes of h and A'b. A placebo's problems visit a
 * new vertex at nearly every step from 25,000 units on, so no row is ever reused, and
 * their half-gradients lie too close together for the pruned loop's bound (RESULTS.md,
 * "Synthetic DiD placebo beyond the caches"). Here no h is stored. A problem keeps
 * v = A x (T0 numbers) and the lazily scaled x, and a step computes only what its argmin
 * needs:
 *
 *   h_j = a_j'(v - b) + eta x_j          (the half-gradient R's sc.weight.fw computes)
 *
 * first for every coordinate in single precision (the design held as floats in blocks of
 * sixteen coordinates; AVX-512, AVX2 + FMA or plain C, chosen at run time; up to 16
 * problems a pass so each block is read once for all of them), with a proven bound E on
 * the error of that screen against the double-precision value; then in double precision,
 * in a fixed order, only for the coordinates whose screened value lies within 2E of the
 * smallest. A coordinate left out has h_j >= screened_j - E > min + E >= the smallest
 * candidate's h, so the argmin (first smallest, as R's which.min) is the one the
 * exhaustive loop (every coordinate in double precision; `exhaustive`, for the tests)
 * finds: the same vertex, the same numbers to the bit, whatever the screen's rounding.
 * On a placebo's problems one or two coordinates a step are computed in double (1.2-1.5
 * on issue 13's panel, 2,250 to 225,000 controls).
 *
 * The line search and the objective use v: h'x = (v - b)'v + eta |x|^2, |A(e_i - x)|^2 =
 * |a_i - v|^2, objective n zeta^2 |x|^2 + |v - b|^2 (n times R's). So a step is O(T0)
 * after its argmin. These are R's formulas; their rounding differs from the Gram and
 * h-form loops' (the weights agree to ~1e-15, tested to 1e-10 against them and against
 * the literal transcription sc_weight_fw_reference, with the same vertex at every step).
 *
 * The error bound. In units scaled by powers of two (the design by sD so that its
 * largest |entry| is below 1, the residual by sr likewise; exact), with u = 2^-24: every
 * term of the screen is a product of two inputs rounded to float (two roundings), summed
 * with n + 1 fused multiply-adds (one rounding each), so the screen differs from the
 * exact sum of the double inputs by at most gamma_{n+3} (sum |a_tj||r_t| + eta sigma
 * y_j) <= gamma_{n+3} (max_j |a_j| |r| + eta sigma max_j y_j) (Higham, Accuracy and
 * Stability, 3.1), and the double value from it by gamma_{n+2} in double. E takes
 * gamma_{n+8} with a 1% margin, plus 2^-80 for results near float's underflow. A step
 * is computed exhaustively when the scaled penalty coefficient is not finite or above
 * 2^60 (the penalty term then stays below 2^91, far inside float's range). x = sigma y
 * with sigma folded into y once it falls below 2^-30 (so y < 2^31 stays a float).
 */
#define TS_W 16
#define TS_FOLD 9.313225746154785e-10        /* 2^-30 */

typedef struct {
    int64_t b, t;            /* problem, steps done */
    double sigma, xx, vprev, ymax, eta_sig;
    double *v, *r;           /* n each: A x and A x - b */
    float *rf;               /* n: (A x - b) sr, rounded to float */
    int64_t slot;            /* its lanes in ts_args.pf */
    int64_t nc, cap;         /* candidates of this step and the buffer's capacity */
    int64_t *cand;
    float *hc;
    double mq, e2;           /* smallest screened value so far, 2E (scaled units) */
    float thr, cf;           /* push threshold, eta sigma sD sr as a float */
    int exact;               /* this step exhaustive */
    int64_t i;               /* this step's vertex */
    double hi;               /* its half-gradient (double) */
} ts_prob;

typedef struct {
    int64_t k, n, kp, max_iter;
    const double *D;         /* n x k, C order */
    float *Df;               /* kp / 16 blocks of n x 16 floats: D sD, zero-padded */
    double sD, nrm;          /* scale of Df; largest column norm of D sD (rounded up) */
    double gam;              /* gamma_{n+8} with margin */
    float *pf;               /* per block of 16 coordinates, W slots of 16 floats: float(y_j)
                              * of the problem in that slot; NaN where masked or padding
                              * (one stream for every live problem, not one each) */
    int64_t W;
    const double *bv, *eta, *md2n;
    const uint8_t *keep;
    double *y;
    int64_t *n_iter;
    uint8_t *conv;
    int exhaustive;
    int64_t *stats;          /* steps, candidates, exhaustive steps */
} ts_args;

static int ts_push_room(ts_prob *Q, int64_t need)
{
    if (Q->nc + need <= Q->cap) return 0;
    int64_t cap = Q->cap ? Q->cap : 256;
    while (cap < Q->nc + need) cap *= 2;
    int64_t *c = (int64_t *)realloc(Q->cand, (size_t)cap * sizeof(int64_t));
    if (!c) return -1;
    Q->cand = c;
    float *h = (float *)realloc(Q->hc, (size_t)cap * sizeof(float));
    if (!h) return -1;
    Q->hc = h;
    Q->cap = cap;
    return 0;
}

/* Record the lanes of mask m (bit l: coordinate j0 + l, value hv[l]; lanes <= 32) as
 * candidates and lower the threshold to the new smallest value + 2E (rounded up to a
 * float). */
static int ts_push(ts_prob *Q, int64_t j0, const float *hv, uint32_t m, int lanes)
{
    if (ts_push_room(Q, lanes)) return -1;
    double mn = Q->mq;
    for (int l = 0; l < lanes; l++) {
        if (!(m >> l & 1u)) continue;
        Q->cand[Q->nc] = j0 + l;
        Q->hc[Q->nc++] = hv[l];
        if ((double)hv[l] < mn) mn = (double)hv[l];
    }
    if (mn < Q->mq) {
        Q->mq = mn;
        Q->thr = nextafterf((float)(mn + Q->e2), INFINITY);
    }
    return 0;
}

/* The screen of problems P[0..np-1] over every coordinate, plain C (any order: the
 * bound holds for any); used without AVX2 + FMA. */
static int ts_screen_scalar(const ts_args *A, ts_prob *const *P, int np)
{
    const int64_t n = A->n, nb = A->kp / 16;
    float hv[16];
    for (int q = 0; q < np; q++) {
        ts_prob *Q = P[q];
        for (int64_t bp = 0; bp < nb; bp++) {
            uint32_t m = 0;
            const float *pf = A->pf + (bp * A->W + Q->slot) * 16;
            for (int l = 0; l < 16; l++) {
                const float *d = A->Df + bp * n * 16 + l;
                float acc = 0.0f;
                for (int64_t t = 0; t < n; t++) acc += d[16 * t] * Q->rf[t];
                acc += pf[l] * Q->cf;
                hv[l] = acc;
                if (acc <= Q->thr) m |= 1u << l;
            }
            if (m && ts_push(Q, 16 * bp, hv, m, 16)) return -1;
        }
    }
    return 0;
}

#ifdef TI_HAVE_X86
/* The screen with AVX2 + FMA: sixteen coordinates (a block) by four problems a kernel,
 * the block staying in L1 while every group of four problems reads it. */
#define TS_ACC(q) a##q##0 = _mm256_fmadd_ps(x0, bq, a##q##0); \
                  a##q##1 = _mm256_fmadd_ps(x1, bq, a##q##1)
__attribute__((target("avx2,fma")))
static int ts_screen_avx2(const ts_args *A, ts_prob *const *P, int np, const float *zero)
{
    const int64_t n = A->n, nb = A->kp / 16;
    float hv[16] __attribute__((aligned(32)));
    const int64_t ahead = 4, dl = n * 16 * 4, pl = A->W * 16 * 4;   /* bytes */
    for (int64_t bp = 0; bp < nb; bp++) {
        const float *d0 = A->Df + bp * n * 16, *d1 = d0 + 8;
        if (bp + ahead < nb) {      /* the design's and the penalties' blocks ahead */
            const char *dn = (const char *)(d0 + ahead * n * 16);
            const char *pn = (const char *)(A->pf + (bp + ahead) * A->W * 16);
            for (int64_t o = 0; o < dl; o += 64) _mm_prefetch(dn + o, _MM_HINT_T0);
            for (int64_t o = 0; o < pl; o += 64) _mm_prefetch(pn + o, _MM_HINT_T0);
        }
        for (int g = 0; g < np; g += 4) {
            const float *r0 = P[g]->rf;
            const float *r1 = g + 1 < np ? P[g + 1]->rf : zero;
            const float *r2 = g + 2 < np ? P[g + 2]->rf : zero;
            const float *r3 = g + 3 < np ? P[g + 3]->rf : zero;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
            __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int64_t t = 0; t < n; t++) {
                __m256 x0 = _mm256_loadu_ps(d0 + 16 * t), x1 = _mm256_loadu_ps(d1 + 16 * t);
                __m256 bq = _mm256_broadcast_ss(r0 + t);
                TS_ACC(0);
                bq = _mm256_broadcast_ss(r1 + t);
                TS_ACC(1);
                bq = _mm256_broadcast_ss(r2 + t);
                TS_ACC(2);
                bq = _mm256_broadcast_ss(r3 + t);
                TS_ACC(3);
            }
            __m256 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            for (int q = 0; q < 4 && g + q < np; q++) {
                ts_prob *Q = P[g + q];
                const float *pf = A->pf + (bp * A->W + Q->slot) * 16;
                __m256 cf = _mm256_set1_ps(Q->cf), th = _mm256_set1_ps(Q->thr);
                __m256 h0 = _mm256_fmadd_ps(_mm256_loadu_ps(pf), cf, acc[q][0]);
                __m256 h1 = _mm256_fmadd_ps(_mm256_loadu_ps(pf + 8), cf, acc[q][1]);
                uint32_t m = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(h0, th, _CMP_LE_OQ))
                    | (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(h1, th, _CMP_LE_OQ)) << 8;
                if (m) {
                    _mm256_store_ps(hv, h0);
                    _mm256_store_ps(hv + 8, h1);
                    if (ts_push(Q, 16 * bp, hv, m, 16)) return -1;
                }
            }
        }
    }
    return 0;
}
#undef TS_ACC

/* The same with AVX-512: thirty-two coordinates (two blocks) by four problems a kernel. */
#define TS_ACC(q) a##q##0 = _mm512_fmadd_ps(x0, bq, a##q##0); \
                  a##q##1 = _mm512_fmadd_ps(x1, bq, a##q##1)
__attribute__((target("avx512f")))
static int ts_screen_avx512(const ts_args *A, ts_prob *const *P, int np, const float *zero)
{
    const int64_t n = A->n, nb = A->kp / 32;
    float hv[32] __attribute__((aligned(64)));
    const int64_t ahead = 2, dl = 2 * n * 16 * 4, pl = 2 * A->W * 16 * 4;   /* bytes */
    for (int64_t bp = 0; bp < nb; bp++) {
        const float *d0 = A->Df + 2 * bp * n * 16, *d1 = d0 + n * 16;
        if (bp + ahead < nb) {      /* the design's and the penalties' blocks ahead */
            const char *dn = (const char *)(d0 + ahead * 2 * n * 16);
            const char *pn = (const char *)(A->pf + 2 * (bp + ahead) * A->W * 16);
            for (int64_t o = 0; o < dl; o += 64) _mm_prefetch(dn + o, _MM_HINT_T0);
            for (int64_t o = 0; o < pl; o += 64) _mm_prefetch(pn + o, _MM_HINT_T0);
        }
        for (int g = 0; g < np; g += 4) {
            const float *r0 = P[g]->rf;
            const float *r1 = g + 1 < np ? P[g + 1]->rf : zero;
            const float *r2 = g + 2 < np ? P[g + 2]->rf : zero;
            const float *r3 = g + 3 < np ? P[g + 3]->rf : zero;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
            __m512 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int64_t t = 0; t < n; t++) {
                __m512 x0 = _mm512_loadu_ps(d0 + 16 * t), x1 = _mm512_loadu_ps(d1 + 16 * t);
                __m512 bq = _mm512_set1_ps(r0[t]);
                TS_ACC(0);
                bq = _mm512_set1_ps(r1[t]);
                TS_ACC(1);
                bq = _mm512_set1_ps(r2[t]);
                TS_ACC(2);
                bq = _mm512_set1_ps(r3[t]);
                TS_ACC(3);
            }
            __m512 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            for (int q = 0; q < 4 && g + q < np; q++) {
                ts_prob *Q = P[g + q];
                const float *pf = A->pf + (2 * bp * A->W + Q->slot) * 16;
                __m512 cf = _mm512_set1_ps(Q->cf), th = _mm512_set1_ps(Q->thr);
                __m512 h0 = _mm512_fmadd_ps(_mm512_loadu_ps(pf), cf, acc[q][0]);
                __m512 h1 = _mm512_fmadd_ps(_mm512_loadu_ps(pf + 16 * A->W), cf, acc[q][1]);
                uint32_t m = (uint32_t)_mm512_cmp_ps_mask(h0, th, _CMP_LE_OQ)
                    | (uint32_t)_mm512_cmp_ps_mask(h1, th, _CMP_LE_OQ) << 16;
                if (m) {
                    _mm512_store_ps(hv, h0);
                    _mm512_store_ps(hv + 16, h1);
                    if (ts_push(Q, 32 * bp, hv, m, 32)) return -1;
                }
            }
        }
    }
    return 0;
}
#undef TS_ACC
static int ts_kernel = -1;     /* 0 plain C, 1 AVX2 + FMA, 2 AVX-512 */
#endif

/* h_j in double precision, in a fixed order (the value both the screened and the
 * exhaustive step compare) */
static inline double ts_h(const ts_args *A, const ts_prob *Q, int64_t j)
{
    const double *D = A->D + j;
    const int64_t k = A->k;
    double acc = D[0] * Q->r[0];
    for (int64_t t = 1; t < A->n; t++) {
        double p = D[t * k] * Q->r[t];
        acc += p;
    }
    double pen = Q->eta_sig * A->y[Q->b * k + j];
    return acc + pen;
}

/* Before a step: the residual scaled to floats, the penalty coefficient and 2E. */
static void ts_prepare(const ts_args *A, ts_prob *Q)
{
    const int64_t n = A->n;
    double mx = 0.0, ss = 0.0;
    Q->eta_sig = A->eta[Q->b] * Q->sigma;
    for (int64_t t = 0; t < n; t++) {
        double a = fabs(Q->r[t]);
        mx = a > mx ? a : mx;
    }
    int e = 0;
    double sr = 1.0;
    if (mx > 0.0 && isfinite(mx)) { frexp(mx, &e); sr = ldexp(1.0, -e); }
    for (int64_t t = 0; t < n; t++) {
        double a = Q->r[t] * sr;
        ss += a * a;
        Q->rf[t] = (float)a;
    }
    double rn = sqrt(ss) * (1.0 + 1e-12);
    double cf = Q->eta_sig * A->sD * sr;
    Q->cf = (float)cf;
    Q->e2 = 2.0 * (A->gam * (A->nrm * rn + cf * Q->ymax * (1.0 + 1e-12)) + 0x1p-80);
    Q->mq = INFINITY;
    Q->thr = INFINITY;
    Q->nc = 0;
    Q->exact = A->exhaustive || !isfinite(mx) || !(cf <= 0x1p60) || !isfinite(Q->e2);
}

/* This step's vertex: the first smallest h_j (double) among the screen's candidates, or
 * over every coordinate when exhaustive; -1 when none is finite. */
static void ts_argmin(const ts_args *A, ts_prob *Q)
{
    const uint8_t *keep = A->keep + Q->b * A->k;
    double best = INFINITY;
    int64_t i = -1;
    if (Q->exact || !(Q->mq < INFINITY)) {
        for (int64_t j = 0; j < A->k; j++) {
            if (!keep[j]) continue;
            double h = ts_h(A, Q, j);
            if (h < best) { best = h; i = j; }
        }
        A->stats[2]++;
    } else {
        double lim = Q->mq + Q->e2;
        int64_t used = 0;
        for (int64_t c = 0; c < Q->nc; c++) {
            if (!((double)Q->hc[c] <= lim)) continue;
            int64_t j = Q->cand[c];
            double h = ts_h(A, Q, j);
            used++;
            if (h < best) { best = h; i = j; }
        }
        A->stats[1] += used;
    }
    Q->i = i;
    Q->hi = best;
}

static void ts_pf(const ts_args *A, ts_prob *Q)
{
    const uint8_t *keep = A->keep + Q->b * A->k;
    const double *yb = A->y + Q->b * A->k;
    double mx = 0.0;
    for (int64_t j = 0; j < A->kp; j++) {
        float *f = A->pf + ((j / 16) * A->W + Q->slot) * 16 + j % 16;
        if (j < A->k && keep[j]) {
            *f = (float)yb[j];
            mx = yb[j] > mx ? yb[j] : mx;
        } else {
            *f = NAN;
        }
    }
    Q->ymax = mx;
}

static void ts_residual(const ts_args *A, ts_prob *Q)
{
    const double *bv = A->bv + Q->b * A->n;
    for (int64_t t = 0; t < A->n; t++) Q->r[t] = Q->v[t] - bv[t];
}

static void ts_start(const ts_args *A, ts_prob *Q, int64_t b)
{
    const int64_t k = A->k, n = A->n;
    const double *yb = A->y + b * k;
    Q->b = b;
    Q->t = 0;
    Q->sigma = 1.0;
    Q->vprev = INFINITY;
    double xx = 0.0;
    for (int64_t j = 0; j < k; j++) xx += yb[j] * yb[j];
    Q->xx = xx;
    for (int64_t t = 0; t < n; t++) {
        const double *Dt = A->D + t * k;
        double acc = 0.0;
        for (int64_t j = 0; j < k; j++) acc += Dt[j] * yb[j];
        Q->v[t] = acc;
    }
    ts_residual(A, Q);
    ts_pf(A, Q);
}

/* The step towards Q->i and the stopping rule (ti_stop's); returns 1 when the problem has
 * finished (weights, iterations and convergence flag written out). */
static int ts_step(const ts_args *A, ts_prob *Q)
{
    const int64_t k = A->k, n = A->n, b = Q->b, i = Q->i;
    double *yb = A->y + b * k;
    const double eta = A->eta[b];
    uint8_t done = 0;
    int stop = 0;
    if (i < 0) {
        stop = 1;                       /* no finite half-gradient: stop where it is */
    } else {
        double xi = Q->sigma * yb[i];
        double hx = 0.0, dv = 0.0;
        for (int64_t t = 0; t < n; t++) {
            double p = Q->r[t] * Q->v[t];
            hx += p;
            double d = A->D[t * k + i] - Q->v[t];
            d *= d;
            dv += d;
        }
        double ex = eta * Q->xx;
        hx += ex;                                        /* h'x */
        double dxx = Q->xx - 2.0 * xi;
        dxx += 1.0;                                      /* |e_i - x|^2 */
        double den = eta * dxx;
        den += dv;
        double s = hx - Q->hi;
        s /= den;                                        /* -h'(e_i - x) / den */
        s = ti_step_length(s, den);
        double u = 1.0 - s, s2 = 2.0 * s, ss = s * s;
        for (int64_t t = 0; t < n; t++) {
            double a = Q->v[t] * u;
            double c = A->D[t * k + i] * s;
            Q->v[t] = a + c;
        }
        double tx = Q->xx * u;
        tx += xi * s2;
        tx *= u;
        tx += ss;
        Q->xx = tx;
        Q->sigma *= u;
        yb[i] += s / Q->sigma;
        A->pf[((i / 16) * A->W + Q->slot) * 16 + i % 16] = (float)yb[i];
        if (yb[i] > Q->ymax) Q->ymax = yb[i];
        ts_residual(A, Q);
    }
    double val = 0.0;
    for (int64_t t = 0; t < n; t++) {
        double p = Q->r[t] * Q->r[t];
        val += p;
    }
    val += eta * Q->xx;
    int64_t t = ++Q->t;
    A->stats[0]++;
    if (!stop) {
        if (Q->sigma < TS_FOLD) {                        /* fold sigma into y */
            for (int64_t j = 0; j < k; j++) yb[j] *= Q->sigma;
            Q->sigma = 1.0;
            ts_pf(A, Q);
        }
        if (!ti_stop_rule(t, A->max_iter, A->md2n[b], &Q->vprev, val, &done)) return 0;
    }
    for (int64_t j = 0; j < k; j++) yb[j] *= Q->sigma;
    A->n_iter[b] = t;
    A->conv[b] = done;
    return 1;
}

/* B problems sharing the design D (n x k, C order; column j the centred series of
 * coordinate j): problem b's target bv[b] (n), usable coordinates keep[b] (k), start
 * y[b] (k, on the simplex, 0 where not kept), eta[b] = n zeta^2, md2n[b] = n
 * min_decrease^2; up to max_iter steps (R's stopping rule). Out: y (weights), n_iter,
 * conv. W problems live at once (1-16), each pass of the screen serving all of them;
 * exhaustive 1: every coordinate in double precision (the tests' reference). stats (3):
 * steps, candidates computed in double, exhaustive steps (added to). Returns 0, or -1
 * when memory ran out (nothing else changed then but the outputs of problems begun). */
TI_EXPORT int ti_fw_screen_kernel(int which);

TI_EXPORT int64_t ti_fw_screen(int64_t B, int64_t k, int64_t n, const double *D,
                               const double *bv, const uint8_t *keep, const double *eta,
                               const double *md2n, int64_t max_iter, double *y,
                               int64_t *n_iter, uint8_t *conv, int64_t W, int exhaustive,
                               int64_t *stats)
{
    if (B <= 0 || k <= 0) return 0;
    if (W < 1) W = 1;
    if (W > TS_W) W = TS_W;
    if (W > B) W = B;
    const int64_t kp = (k + 31) / 32 * 32;
    ts_args A = {k, n, kp, max_iter, D, NULL, 1.0, 0.0, 0.0, NULL, W, bv, eta, md2n, keep,
                 y, n_iter, conv, exhaustive, stats};
    int64_t rc = -1;
    ts_prob S[TS_W];
    memset(S, 0, sizeof S);
    float *zero = (float *)calloc((size_t)n + 8, sizeof(float));
    A.Df = (float *)malloc((size_t)(kp * n) * sizeof(float));
    A.pf = (float *)malloc((size_t)(kp * W) * sizeof(float));
    if (!zero || !A.Df || !A.pf) goto out;
    for (int w = 0; w < W; w++) {
        S[w].v = (double *)malloc((size_t)(2 * n) * sizeof(double));
        S[w].rf = (float *)malloc((size_t)n * sizeof(float));
        if (!S[w].v || !S[w].rf) goto out;
        S[w].r = S[w].v + n;
        S[w].slot = w;
    }
    {
        /* the design scaled by a power of two (largest |entry| below 1) into float
         * blocks of sixteen coordinates; its largest column norm in those units */
        double mx = 0.0;
        for (int64_t i = 0; i < n * k; i++) { double a = fabs(D[i]); mx = a > mx ? a : mx; }
        int e = 0;
        if (mx > 0.0 && isfinite(mx)) { frexp(mx, &e); A.sD = ldexp(1.0, -e); }
        for (int64_t bl = 0; bl < kp / 16; bl++)
            for (int64_t t = 0; t < n; t++)
                for (int l = 0; l < 16; l++) {
                    int64_t j = 16 * bl + l;
                    A.Df[(bl * n + t) * 16 + l] = j < k ? (float)(D[t * k + j] * A.sD) : 0.0f;
                }
        double nm = 0.0;                 /* column sums of squares, a block at a time */
        for (int64_t bl = 0; bl < kp / 16; bl++) {
            double ss[16] = {0.0};
            for (int64_t t = 0; t < n; t++)
                for (int l = 0; l < 16; l++) {
                    double a = (double)A.Df[(bl * n + t) * 16 + l];
                    ss[l] += a * a;
                }
            for (int l = 0; l < 16; l++) nm = ss[l] > nm ? ss[l] : nm;
        }
        A.nrm = sqrt(nm) * (1.0 + 1e-6);
        double g = (double)(n + 8) * 0x1p-24;
        A.gam = 1.01 * g / (1.0 - g);
        if (!isfinite(mx)) A.exhaustive = 1;
    }
#ifdef TI_HAVE_X86
    if (ts_kernel < 0) ti_fw_screen_kernel(-1);
#endif
    {
        ts_prob *live[TS_W], *scr[TS_W];
        int64_t next = 0;
        int nl = 0;
        for (int w = 0; w < W; w++) { ts_start(&A, &S[w], next++); live[nl++] = &S[w]; }
        while (nl > 0) {
            int ns = 0;
            for (int q = 0; q < nl; q++) {
                ts_prepare(&A, live[q]);
                if (!live[q]->exact) scr[ns++] = live[q];
            }
            if (ns) {
                int bad;
#ifdef TI_HAVE_X86
                bad = ts_kernel == 2 ? ts_screen_avx512(&A, scr, ns, zero)
                      : ts_kernel == 1 ? ts_screen_avx2(&A, scr, ns, zero)
                      : ts_screen_scalar(&A, scr, ns);
#else
                bad = ts_screen_scalar(&A, scr, ns);
#endif
                if (bad) goto out;
            }
            int m = 0;
            for (int q = 0; q < nl; q++) {
                ts_prob *Q = live[q];
                ts_argmin(&A, Q);
                if (ts_step(&A, Q)) {
                    if (next >= B) continue;
                    ts_start(&A, Q, next++);
                }
                live[m++] = Q;
            }
            nl = m;
        }
    }
    rc = 0;
out:
    for (int w = 0; w < TS_W; w++) {
        free(S[w].v); free(S[w].rf); free(S[w].cand); free(S[w].hc);
    }
    free(A.Df);
    free(A.pf);
    free(zero);
    return rc;
}

/* Which kernel ti_fw_screen's screen runs here: 2 AVX-512, 1 AVX2 + FMA, 0 plain C;
 * which < 0 reads (choosing the best the processor has on first use), 0-2 asks for that
 * kernel or the best below it the processor has (tests: every kernel, the same
 * numbers). */
TI_EXPORT int ti_fw_screen_kernel(int which)
{
#ifdef TI_HAVE_X86
    __builtin_cpu_init();
    int have = __builtin_cpu_supports("avx512f") ? 2
        : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
    if (which >= 0) ts_kernel = which < have ? which : have;
    else if (ts_kernel < 0) ts_kernel = have;
    return ts_kernel;
#else
    (void)which;
    return 0;
#endif
}

static struct PyModuleDef ti_sdid_fw_module = {
    PyModuleDef_HEAD_INIT, "_sdid_fw",
    "Compiled Frank-Wolfe loop of synthetic DiD (loaded with ctypes; see _sdid_solver).",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__sdid_fw(void) { return PyModule_Create(&ti_sdid_fw_module); }
