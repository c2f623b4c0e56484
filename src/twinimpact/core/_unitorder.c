/* Rows put in unit order once, at data preparation (twinimpact.core.unitorder).
 *
 * On a panel whose rows come in no order (shuffled rows, string unit ids hashed in
 * first-appearance order) every later pass that adds a row into a per-unit table (the
 * checks of the preparation, the fit's scatters, the cluster sums) reads and writes that
 * table at a random place; with ~1e6 units the table no longer fits in cache and each
 * row costs a miss. Ordering the rows by unit code once makes all those passes stream.
 *
 *  - ti_byte_ranges / ti_mixed_radix: short string ids (core.labels.short_string_keys:
 *    one exact uint64 per string of <= 8 bytes) turned into one exact integer in a dense
 *    range when the bytes vary little (zero-padded ids "u0001234": ten values per digit),
 *    so that they are sorted, not hashed.
 *  - ti_sort_values: stable sort of integers in 0..R-1 by two LSD counting passes (the
 *    low `lo_bits`, then the high bits; each pass reads the rows in order and writes into
 *    at most 2**lo_bits sequential output streams, which stay in cache, instead of
 *    landing at a random place of an n-row array), giving the permutation and each
 *    sorted row's dense code (codes in value order).
 *  - ti_gather: dst_k[j] = src_k[perm[j]] for several columns at once (item sizes 1, 2,
 *    4, 8 bytes, any byte stride of the source), so that each row's index is read once
 *    and the random reads of all columns are in flight together; the rows' sources are
 *    prefetched a few rows ahead.
 *
 * Loaded with ctypes (twinimpact.core.unitorder._compiled); the module init below only
 * makes the file a valid extension module for setuptools. No floating-point arithmetic:
 * the results are exact (same bytes as NumPy's stable argsort and take).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define TI_EXPORT __declspec(dllexport)
#else
#define TI_EXPORT __attribute__((visibility("default")))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TI_PREFETCH(p) __builtin_prefetch((p), 0, 0)
#else
#define TI_PREFETCH(p) ((void)0)
#endif

/* Per-byte smallest and largest value of keys[0..n-1] (mins[b], maxs[b] for byte b =
 * bits 8b..8b+7). */
TI_EXPORT void ti_byte_ranges(int64_t n, const uint64_t *keys, int64_t *mins, int64_t *maxs)
{
    uint8_t lo[8], hi[8];
    for (int b = 0; b < 8; b++) { lo[b] = 255; hi[b] = 0; }
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = keys[i];
        for (int b = 0; b < 8; b++) {
            uint8_t v = (uint8_t)(k >> (8 * b));
            if (v < lo[b]) lo[b] = v;
            if (v > hi[b]) hi[b] = v;
        }
    }
    for (int b = 0; b < 8; b++) { mins[b] = n ? lo[b] : 0; maxs[b] = n ? hi[b] : 0; }
}

/* keys[i] -> sum_b (byte_b(keys[i]) - mins[b]) * mults[b], in place (out aliases keys):
 * an exact, one-to-one mixed-radix number of keys whose bytes lie in mins..maxs. */
TI_EXPORT void ti_mixed_radix(int64_t n, const uint64_t *keys, const int64_t *mins,
                              const int64_t *mults, int64_t *out)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = keys[i];
        int64_t v = 0;
        for (int b = 0; b < 8; b++)
            v += ((int64_t)(uint8_t)(k >> (8 * b)) - mins[b]) * mults[b];
        out[i] = v;
    }
}

/* Stable sort of values v[0..n-1] in 0..R-1 (R <= 2**32, n < 2**31) by two LSD counting
 * passes (the low lo_bits, then the high bits), writing the rows in value order to
 * perm32 and, in place of v, each sorted row's dense code: the rank of its value among
 * the distinct values present (0..G-1). tmp: n uint64 of scratch. Returns G, or -1 for
 * a value outside 0..R-1 (v then unspecified), -2 when out of memory. */
TI_EXPORT int64_t ti_sort_values(int64_t n, int64_t *v, int64_t R, int32_t *perm32,
                                 uint64_t *tmp, int lo_bits)
{
    const int64_t B = (int64_t)1 << lo_bits, mask = B - 1;
    const int64_t H = ((R > 0 ? R - 1 : 0) >> lo_bits) + 1;
    int64_t *lo = (int64_t *)calloc((size_t)B, sizeof(int64_t));
    int64_t *hi = (int64_t *)calloc((size_t)H, sizeof(int64_t));
    if (lo == NULL || hi == NULL) { free(lo); free(hi); return -2; }
    for (int64_t i = 0; i < n; i++) {
        int64_t x = v[i];
        if (x < 0 || x >= R) { free(lo); free(hi); return -1; }
        lo[x & mask]++;
        hi[x >> lo_bits]++;
    }
    int64_t s = 0;
    for (int64_t b = 0; b < B; b++) { int64_t c = lo[b]; lo[b] = s; s += c; }
    s = 0;
    for (int64_t h = 0; h < H; h++) { int64_t c = hi[h]; hi[h] = s; s += c; }
    for (int64_t i = 0; i < n; i++) {
        uint64_t x = (uint64_t)v[i];
        tmp[lo[x & mask]++] = (x << 32) | (uint64_t)i;
    }
    for (int64_t j = 0; j < n; j++) {
        uint64_t t = tmp[j];
        uint64_t x = t >> 32;
        int64_t p = hi[x >> lo_bits]++;
        perm32[p] = (int32_t)(t & 0xffffffffu);
        v[p] = (int64_t)x;
    }
    free(lo);
    free(hi);
    int64_t g = -1, prev = -1;
    for (int64_t j = 0; j < n; j++) {
        if (v[j] != prev) { g++; prev = v[j]; }
        v[j] = g;
    }
    return g + 1;
}

#define TI_AHEAD 16

/* dst[k][j] = src[k][perm[j] * stride[k]] for j < n and k < ncols; item sizes 1, 2, 4 or
 * 8 bytes (size[k]); dst contiguous. perm32 or perm64 (the other NULL). Returns 0, or -1
 * for an unsupported item size. */
TI_EXPORT int ti_gather(int64_t n, const int32_t *perm32, const int64_t *perm64,
                        int64_t ncols, const char *const *src, const int64_t *stride,
                        const int64_t *size, char *const *dst)
{
    for (int64_t k = 0; k < ncols; k++)
        if (size[k] != 1 && size[k] != 2 && size[k] != 4 && size[k] != 8) return -1;
    for (int64_t j = 0; j < n; j++) {
        int64_t p = perm32 != NULL ? (int64_t)perm32[j] : perm64[j];
        if (j + TI_AHEAD < n) {
            int64_t q = perm32 != NULL ? (int64_t)perm32[j + TI_AHEAD] : perm64[j + TI_AHEAD];
            for (int64_t k = 0; k < ncols; k++) TI_PREFETCH(src[k] + q * stride[k]);
        }
        for (int64_t k = 0; k < ncols; k++) {
            const char *s = src[k] + p * stride[k];
            switch (size[k]) {
            case 8: { uint64_t v; memcpy(&v, s, 8); memcpy(dst[k] + 8 * j, &v, 8); break; }
            case 4: { uint32_t v; memcpy(&v, s, 4); memcpy(dst[k] + 4 * j, &v, 4); break; }
            case 2: { uint16_t v; memcpy(&v, s, 2); memcpy(dst[k] + 2 * j, &v, 2); break; }
            default: dst[k][j] = *s; break;
            }
        }
    }
    return 0;
}

static struct PyModuleDef ti_unitorder_module = {
    PyModuleDef_HEAD_INIT, "_unitorder",
    "Compiled unit ordering of panel rows (loaded with ctypes; see core.unitorder).",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__unitorder(void) { return PyModule_Create(&ti_unitorder_module); }
