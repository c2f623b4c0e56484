/* Callaway & Sant'Anna's multiplier bootstrap: Mammen weights written straight into the
 * rows of each block of a blocked influence function
 * (twinimpact.estimators._cs_numerics.mammen_bootstrap).
 *
 * The influence function of the ATT(g, t) cells is stored per row group (a cohort's units,
 * the never-treated), and each draw's weights over a group's units multiply that group's
 * block. Those units are interleaved in unit order, so in NumPy each block's columns of
 * the (draws x units) weights are gathered (w[:, rows_j]) after the weights were made
 * from the uniforms in three whole-array passes. ti_mammen_split does it in one pass over
 * each draw's uniforms: it reads a uniform, makes its weight (low where u < p_low, else
 * high: the same comparison and the same two doubles as NumPy) and stores it at its
 * unit's place in its block's rows, so the products then read each block contiguously.
 *
 *   u       s rows of n uniforms (row r at u + r * n)
 *   blk     (n,) each unit's block, or -1 for a unit in no block (skipped)
 *   loc     (n,) each unit's position among its block's units
 *   cum     (J,) first element of block j in the chunk buffer, in units of b (block j
 *           occupies dst[b * cum[j] ...], b rows of nj[j] weights)
 *   row0    the row of the chunk that u's first row fills
 *   lows    NULL, or (b, J) counts: lows[(row0 + r) * J + j] is set to the number of
 *           block j's units whose weight in row r is the low one (the rows' weight sums
 *           are then high * nj - (high - low) * lows)
 *
 * ti_mammen_split_pcg does the same with the uniforms drawn in the kernel from NumPy's
 * PCG64 state (st: the state's high and low 64 bits, then the increment's; the state is
 * advanced in place): the 128-bit LCG step state = state * M + inc, the XSL-RR output
 * and (output >> 11) * 2**-53, as numpy's pcg64_next_double, so that the uniforms are
 * bit for bit those of Generator.random() on that state (NumPy's streams are stable,
 * NEP 19; the tests compare the two). Four states are advanced side by side (each by
 * four steps: M**4 and inc * (1 + M + M**2 + M**3)), which keeps the multiplier busy
 * instead of waiting on one chain of 128-bit multiplications. Without a 128-bit integer
 * type it returns -2 and the caller draws with NumPy.
 *
 * Loaded with ctypes; the module init below only makes the file a valid extension module
 * for setuptools. No arithmetic on the weights: the stored doubles are bit for bit those
 * of np.where(u < p_low, low, high).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define TI_SSE2 1
#endif

#if defined(_WIN32)
#define TI_EXPORT __declspec(dllexport)
#else
#define TI_EXPORT __attribute__((visibility("default")))
#endif

/* Number of the m doubles of row equal to x (exact comparison). */
static int64_t ti_count_equal(const double *row, int64_t m, double x)
{
    int64_t c = 0, k = 0;
#ifdef TI_SSE2
    /* two lanes at a time: each equal lane's mask is all ones, i.e. -1 as an integer */
    __m128i acc = _mm_setzero_si128();
    __m128d xx = _mm_set1_pd(x);
    for (; k + 2 <= m; k += 2)
        acc = _mm_sub_epi64(acc, _mm_castpd_si128(_mm_cmpeq_pd(_mm_loadu_pd(row + k), xx)));
    int64_t lanes[2];
    _mm_storeu_si128((__m128i *)lanes, acc);
    c = lanes[0] + lanes[1];
#endif
    for (; k < m; k++) c += row[k] == x;
    return c;
}

/* Returns 0, or -1 when the offsets table could not be allocated (nothing written). */
TI_EXPORT int ti_mammen_split(int64_t s, int64_t n, const double *u, const int32_t *blk,
                              const int32_t *loc, int64_t J, const int64_t *cum,
                              const int64_t *nj, int64_t b, int64_t row0, double *dst,
                              double p_low, double w_low, double w_high, int64_t *lows)
{
    int64_t small[64];
    int64_t *off = J <= 64 ? small : (int64_t *)malloc((size_t)J * sizeof(int64_t));
    if (off == NULL) return -1;
    for (int64_t r = 0; r < s; r++) {
        const double *ur = u + r * n;
        for (int64_t j = 0; j < J; j++) off[j] = b * cum[j] + (row0 + r) * nj[j];
        for (int64_t i = 0; i < n; i++) {
            int32_t j = blk[i];
            double w = ur[i] < p_low ? w_low : w_high;
            if (j >= 0) dst[off[j] + loc[i]] = w;
        }
        if (lows == NULL) continue;
        /* the low weights of each block's row counted from the row just written (a
         * separate pass that vectorizes; counting in the loop above would chain the
         * increments of a block's count through memory) */
        int64_t *cnt = lows + (row0 + r) * J;
        for (int64_t j = 0; j < J; j++) cnt[j] = ti_count_equal(dst + off[j], nj[j], w_low);
    }
    if (off != small) free(off);
    return 0;
}

#if defined(__SIZEOF_INT128__)
typedef unsigned __int128 ti_u128;
/* PCG_DEFAULT_MULTIPLIER_128 */
#define TI_PCG_MULT ((((ti_u128)2549297995355413924ULL) << 64) | 4865540595714422341ULL)
#define TI_2M53 (1.0 / 9007199254740992.0)

static inline uint64_t ti_xsl_rr(ti_u128 s)
{
    uint64_t hi = (uint64_t)(s >> 64), x = hi ^ (uint64_t)s;
    unsigned rot = (unsigned)(hi >> 58);
    return (x >> rot) | (x << ((-rot) & 63u));
}
#endif

TI_EXPORT int ti_mammen_split_pcg(int64_t s, int64_t n, uint64_t *st, const int32_t *blk,
                                  const int32_t *loc, int64_t J, const int64_t *cum,
                                  const int64_t *nj, int64_t b, int64_t row0, double *dst,
                                  double p_low, double w_low, double w_high, int64_t *lows)
{
#if defined(__SIZEOF_INT128__)
    int64_t small[64];
    int64_t *off = J <= 64 ? small : (int64_t *)malloc((size_t)J * sizeof(int64_t));
    if (off == NULL) return -1;
    const ti_u128 a = TI_PCG_MULT, a2 = a * a, a4 = a2 * a2;
    const ti_u128 c = ((ti_u128)st[2] << 64) | st[3], c4 = c * (1 + a + a2 + a2 * a);
    ti_u128 cur = ((ti_u128)st[0] << 64) | st[1];
    ti_u128 x0 = a * cur + c, x1 = a * x0 + c, x2 = a * x1 + c, x3 = a * x2 + c;
    const int64_t m = s * n;
    int64_t k = 0, i = 0, r = 0;
    for (int64_t j = 0; j < J; j++) off[j] = b * cum[j] + row0 * nj[j];
/* one uniform of unit i in row r: its weight stored in its block's row; at the end of a
 * row, that row's low weights counted per block and the next row's offsets set */
#define TI_EMIT(o)                                                                      \
    do {                                                                                \
        double u_ = (double)(int64_t)((o) >> 11) * TI_2M53;                             \
        int32_t j_ = blk[i];                                                            \
        double w_ = u_ < p_low ? w_low : w_high;                                        \
        if (j_ >= 0) dst[off[j_] + loc[i]] = w_;                                        \
        if (++i == n) {                                                                 \
            if (lows != NULL) {                                                         \
                int64_t *cnt_ = lows + (row0 + r) * J;                                  \
                for (int64_t jj = 0; jj < J; jj++)                                      \
                    cnt_[jj] = ti_count_equal(dst + off[jj], nj[jj], w_low);            \
            }                                                                           \
            i = 0;                                                                      \
            r++;                                                                        \
            for (int64_t jj = 0; jj < J; jj++) off[jj] += nj[jj];                       \
        }                                                                               \
    } while (0)
    for (; k + 4 <= m; k += 4) {
        uint64_t o0 = ti_xsl_rr(x0), o1 = ti_xsl_rr(x1), o2 = ti_xsl_rr(x2),
                 o3 = ti_xsl_rr(x3);
        cur = x3;
        x0 = a4 * x0 + c4;
        x1 = a4 * x1 + c4;
        x2 = a4 * x2 + c4;
        x3 = a4 * x3 + c4;
        TI_EMIT(o0);
        TI_EMIT(o1);
        TI_EMIT(o2);
        TI_EMIT(o3);
    }
    for (; k < m; k++) {
        cur = a * cur + c;
        TI_EMIT(ti_xsl_rr(cur));
    }
#undef TI_EMIT
    st[0] = (uint64_t)(cur >> 64);
    st[1] = (uint64_t)cur;
    if (off != small) free(off);
    return 0;
#else
    (void)s; (void)n; (void)st; (void)blk; (void)loc; (void)J; (void)cum; (void)nj;
    (void)b; (void)row0; (void)dst; (void)p_low; (void)w_low; (void)w_high; (void)lows;
    return -2;
#endif
}

static struct PyModuleDef ti_cs_boot_module = {
    PyModuleDef_HEAD_INIT, "_cs_boot",
    "Compiled Mammen weights split by block (loaded with ctypes; see _cs_numerics).",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__cs_boot(void) { return PyModule_Create(&ti_cs_boot_module); }
