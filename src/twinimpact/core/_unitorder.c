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
 *  - ti_group_strings: the rows of Arrow string ids of any length grouped by string, in
 *    the order of pandas.factorize's codes, without a hash table: a radix sort by hash
 *    bits (streaming), each bucket's strings compared byte for byte (exact), the groups
 *    renumbered by first appearance.
 *  - ti_first_seen: pandas.factorize's codes of numbers in a narrow range (a direct
 *    table of first-seen codes indexed by the value's offset from the minimum, in place
 *    of a hash table).
 *  - ti_string_ranges / ti_string_first_seen: the same for strings of at most 16 bytes
 *    whose bytes vary little, read as one exact number of their varying bytes.
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
#define TI_POPCOUNT(x) __builtin_popcountll(x)
#else
#define TI_PREFETCH(p) ((void)0)
static int ti_popcount(uint64_t x)
{
    int c = 0;
    for (; x; x &= x - 1) c++;
    return c;
}
#define TI_POPCOUNT(x) ti_popcount(x)
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

/* 64-bit hash of a string's bytes (only the grouping's speed depends on it: equal
 * strings are compared byte for byte). */
static inline uint64_t ti_mix(uint64_t h)
{
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* (end: the end of the data buffer; a last partial word is read as a whole word, its
 * bytes past the string masked, when the buffer holds those bytes) */
static inline uint64_t ti_hash_bytes(const uint8_t *p, int64_t len, const uint8_t *end)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)len * 0xC2B2AE3D27D4EB4FULL);
    while (len >= 8) {
        uint64_t w; memcpy(&w, p, 8);
        h = (h ^ (w * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
        h ^= h >> 29;
        p += 8; len -= 8;
    }
    if (len > 0) {
        uint64_t w = 0;
        if (end - p >= 8) {
            memcpy(&w, p, 8);
            w &= ~(uint64_t)0 >> (8 * (8 - len));  /* the string's bytes (little-endian) */
        } else {
            memcpy(&w, p, (size_t)len);
        }
        h = (h ^ (w * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
    }
    return ti_mix(h);
}

typedef struct {
    const int32_t *off32;   /* Arrow string offsets (one of off32 / off64 non-NULL) */
    const int64_t *off64;
    const uint8_t *data;
} ti_strings;

static inline int64_t ti_off(const ti_strings *s, int64_t i)
{
    return s->off32 != NULL ? (int64_t)s->off32[i] : s->off64[i];
}

static inline int ti_str_eq(const ti_strings *s, int64_t a, int64_t b)
{
    int64_t a0 = ti_off(s, a), a1 = ti_off(s, a + 1);
    int64_t b0 = ti_off(s, b), b1 = ti_off(s, b + 1);
    return a1 - a0 == b1 - b0 && memcmp(s->data + a0, s->data + b0, (size_t)(a1 - a0)) == 0;
}

static inline void ti_str_prefetch(const ti_strings *s, int64_t i)
{
    TI_PREFETCH(s->data + ti_off(s, i));
}

/* The rows of an Arrow string array grouped by string, exactly as a stable argsort of
 * pandas.factorize's codes (first appearance) without the rows of a missing string:
 *  1. each row's bucket: the top `nbits` bits of a hash of its bytes (2**nbits for a
 *     null; `valid`: the validity bitmap from bit `valid_bit`, or NULL);
 *  2. rows sorted by bucket (ti_sort_values: stable, streaming), so that equal strings
 *     are neighbours up to the other strings of their bucket;
 *  3. each bucket's rows compared with its first row's string; a bucket of several
 *     strings (hash bits alike) regrouped by string, in order of first appearance,
 *     rows in their order (the groups are exact: distinct strings never share one);
 *  4. the groups renumbered by their first row (the factorize order) and moved there.
 * perm32 (n): the grouped rows; codes (n int64, also the buckets' scratch): each grouped
 * row's code; tmp: n uint64 of scratch. Returns the number of strings G (the grouped rows
 * are the first n - nulls of perm32 / codes; *n_rows receives that count), -2 when out
 * of memory. data_len: the bytes of the data buffer from `data` on. */
TI_EXPORT int64_t ti_group_strings(int64_t n, const int32_t *off32, const int64_t *off64,
                                   const uint8_t *data, int64_t data_len,
                                   const uint8_t *valid,
                                   int64_t valid_bit, int nbits, int32_t *perm32,
                                   int64_t *codes, uint64_t *tmp, int lo_bits,
                                   int64_t *n_rows)
{
    ti_strings s = {off32, off64, data};
    const int64_t R = (int64_t)1 << nbits;
    const int shift = 64 - nbits;
    int64_t n_null = 0;
    for (int64_t i = 0; i < n; i++) {
        if (valid != NULL) {
            int64_t b = valid_bit + i;
            if (!((valid[b >> 3] >> (b & 7)) & 1)) { codes[i] = R; n_null++; continue; }
        }
        int64_t a = ti_off(&s, i), e = ti_off(&s, i + 1);
        codes[i] = (int64_t)(ti_hash_bytes(data + a, e - a, data + data_len) >> shift);
    }
    int64_t nb = ti_sort_values(n, codes, R + 1, perm32, tmp, lo_bits);
    if (nb < 0) return nb == -2 ? -2 : -3;
    const int64_t m = n - n_null;
    *n_rows = m;
    /* 3. exact groups, in bucket order. (a) one pass over the grouped rows, each
     * compared with its bucket's first row (the strings prefetched ahead: offsets
     * 2 * TI_AHEAD rows ahead, bytes TI_AHEAD rows ahead, their offsets in cache by
     * then), noting each bucket's start and the buckets holding several strings; (b)
     * those buckets regrouped by string (local ids by first appearance, then a stable
     * counting sort of the bucket's rows by local id). */
    int64_t cap = 1024, nrun = 0, mcap = 64, nmixed = 0;
    int64_t *start = (int64_t *)malloc((size_t)cap * sizeof(int64_t));
    int64_t *mixed = (int64_t *)malloc((size_t)mcap * sizeof(int64_t));
    if (start == NULL || mixed == NULL) { free(start); free(mixed); return -2; }
    int64_t rep = 0, prev_b = -1;
    for (int64_t j = 0; j < m; j++) {
        if (j + 2 * TI_AHEAD < m) {
            int64_t q = perm32[j + 2 * TI_AHEAD];
            if (off32 != NULL) TI_PREFETCH(off32 + q); else TI_PREFETCH(off64 + q);
        }
        if (j + TI_AHEAD < m) ti_str_prefetch(&s, perm32[j + TI_AHEAD]);
        int64_t b = codes[j];
        if (b != prev_b) {
            if (nrun == cap) {
                int64_t *ns = (int64_t *)realloc(start, (size_t)(2 * cap) * sizeof(int64_t));
                if (ns == NULL) { free(start); free(mixed); return -2; }
                start = ns; cap *= 2;
            }
            start[nrun++] = j;
            rep = perm32[j];
            prev_b = b;
        } else if ((nmixed == 0 || mixed[nmixed - 1] != nrun - 1)
                   && !ti_str_eq(&s, rep, perm32[j])) {
            if (nmixed == mcap) {
                int64_t *nm = (int64_t *)realloc(mixed, (size_t)(2 * mcap) * sizeof(int64_t));
                if (nm == NULL) { free(start); free(mixed); return -2; }
                mixed = nm; mcap *= 2;
            }
            mixed[nmixed++] = nrun - 1;
        }
    }
    int64_t G = nrun;
    if (nmixed) {
        /* (b): the group starts rebuilt, the mixed buckets split */
        int64_t rcap = 0, gcap = nrun + 64, g = 0, mi = 0;
        int32_t *rrows = NULL; int32_t *rlid = NULL; int64_t *rreps = NULL;
        int64_t *gstart = (int64_t *)malloc((size_t)gcap * sizeof(int64_t));
        if (gstart == NULL) { free(start); free(mixed); return -2; }
        for (int64_t r = 0; r < nrun; r++) {
            int64_t j0 = start[r], e = r + 1 < nrun ? start[r + 1] : m;
            if (mi == nmixed || mixed[mi] != r) {
                if (g == gcap) {
                    int64_t *ng = (int64_t *)realloc(gstart, (size_t)(2 * gcap) * sizeof(int64_t));
                    if (ng == NULL) { free(gstart); free(start); free(mixed); return -2; }
                    gstart = ng; gcap *= 2;
                }
                gstart[g++] = j0;
                continue;
            }
            mi++;
            int64_t len = e - j0, nrep = 0;
            if (len > rcap) {
                free(rrows); free(rlid); free(rreps);
                rcap = 2 * len;
                rrows = (int32_t *)malloc((size_t)rcap * sizeof(int32_t));
                rlid = (int32_t *)malloc((size_t)rcap * sizeof(int32_t));
                rreps = (int64_t *)malloc((size_t)(rcap + 1) * sizeof(int64_t));
                if (rrows == NULL || rlid == NULL || rreps == NULL) {
                    free(rrows); free(rlid); free(rreps); free(gstart); free(start);
                    free(mixed); return -2;
                }
            }
            for (int64_t k = 0; k < len; k++) {
                int64_t row = perm32[j0 + k], id = -1;
                for (int64_t q = 0; q < nrep; q++)
                    if (ti_str_eq(&s, rreps[q], row)) { id = q; break; }
                if (id < 0) { id = nrep; rreps[nrep++] = row; }
                rrows[k] = (int32_t)row;
                rlid[k] = (int32_t)id;
            }
            /* counts per local id -> starts (rreps reused as the counts) */
            for (int64_t q = 0; q <= nrep; q++) rreps[q] = 0;
            for (int64_t k = 0; k < len; k++) rreps[rlid[k] + 1]++;
            for (int64_t q = 1; q <= nrep; q++) rreps[q] += rreps[q - 1];
            if (g + nrep > gcap) {
                while (g + nrep > gcap) gcap *= 2;
                int64_t *ng = (int64_t *)realloc(gstart, (size_t)gcap * sizeof(int64_t));
                if (ng == NULL) {
                    free(rrows); free(rlid); free(rreps); free(gstart); free(start);
                    free(mixed); return -2;
                }
                gstart = ng;
            }
            for (int64_t q = 0; q < nrep; q++) gstart[g++] = j0 + rreps[q];
            for (int64_t k = 0; k < len; k++) perm32[j0 + rreps[rlid[k]]++] = rrows[k];
        }
        free(rrows); free(rlid); free(rreps); free(start);
        start = gstart;
        G = g;
    }
    free(mixed);
    /* 4. rank of each group's first row among all first rows: a bit per row and a
     * running count per 64-row word */
    int64_t W = (n >> 6) + 1;
    uint64_t *bits = (uint64_t *)calloc((size_t)W, sizeof(uint64_t));
    int64_t *before = (int64_t *)malloc((size_t)W * sizeof(int64_t));
    int64_t *newstart = (int64_t *)malloc((size_t)(G + 1) * sizeof(int64_t));
    if (bits == NULL || before == NULL || newstart == NULL) {
        free(bits); free(before); free(newstart); free(start); return -2;
    }
    for (int64_t g = 0; g < G; g++) {
        int64_t f = perm32[start[g]];
        bits[f >> 6] |= (uint64_t)1 << (f & 63);
    }
    int64_t c = 0;
    for (int64_t w = 0; w < W; w++) { before[w] = c; c += TI_POPCOUNT(bits[w]); }
    /* new code of each group (in place of its start's slot: start kept, code in codes[])
     * and its size, counted at its new code */
    for (int64_t g = 0; g <= G; g++) newstart[g] = 0;
    for (int64_t g = 0; g < G; g++) {
        int64_t f = perm32[start[g]];
        int64_t rank = before[f >> 6]
            + TI_POPCOUNT(bits[f >> 6] & (((uint64_t)1 << (f & 63)) - 1));
        int64_t end = g + 1 < G ? start[g + 1] : m;
        codes[g] = rank;                 /* codes[0..G-1] free: rewritten below */
        newstart[rank + 1] = end - start[g];
    }
    free(bits); free(before);
    for (int64_t g = 0; g < G; g++) newstart[g + 1] += newstart[g];
    /* 5. groups moved to their new place (into tmp as int32), then copied back */
    int32_t *out = (int32_t *)tmp;
    for (int64_t g = 0; g < G; g++) {
        int64_t end = g + 1 < G ? start[g + 1] : m;
        memcpy(out + newstart[codes[g]], perm32 + start[g],
               (size_t)(end - start[g]) * sizeof(int32_t));
    }
    memcpy(perm32, out, (size_t)m * sizeof(int32_t));
    for (int64_t g = 0; g < G; g++)
        for (int64_t k = newstart[g]; k < newstart[g + 1]; k++) codes[k] = g;
    free(newstart); free(start);
    return G;
}

/* ti_first_seen: pandas.factorize's codes (order of first appearance) of numbers in a
 * narrow range, by a direct table instead of a hash table. Row i's value (kind: 0 signed,
 * 1 unsigned integer, 2 float; size 1/2/4/8 bytes; byte stride `stride`) is read as its
 * offset from the smallest value (integers: `lo_bits`, the minimum mod 2**64, subtracted
 * mod 2**64; floats: `lo_f` subtracted, every value an integer of magnitude < 2**53, so
 * that the difference is exact); table[off] (int32, `span` slots, filled with -1 here)
 * holds the code of the value met first, or -1. Codes into out (int64). Returns the
 * number of distinct values, -1 for an offset outside 0..span-1, -2 for a float that is
 * not such an integer (NaN included): the caller then hashes. No rounding: the codes are
 * exact. */
#define TI_TWO53 9007199254740992.0
TI_EXPORT int64_t ti_first_seen(int64_t n, const void *src, int64_t stride, int kind,
                                int size, uint64_t lo_bits, double lo_f, int64_t span,
                                int32_t *table, int64_t *out)
{
    const char *p = (const char *)src;
    int32_t g = 0;
    memset(table, 0xff, (size_t)span * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++, p += stride) {
        uint64_t off;
        if (kind == 2) {
            double x = size == 8 ? *(const double *)p : (double)*(const float *)p;
            if (!(x > -TI_TWO53 && x < TI_TWO53) || x != (double)(int64_t)x) return -2;
            double d = x - lo_f;
            if (!(d >= 0.0 && d < (double)span)) return -1;
            off = (uint64_t)(int64_t)d;
        } else {
            uint64_t v;
            if (kind == 0) {
                switch (size) {
                case 1: v = (uint64_t)(int64_t)*(const int8_t *)p; break;
                case 2: v = (uint64_t)(int64_t)*(const int16_t *)p; break;
                case 4: v = (uint64_t)(int64_t)*(const int32_t *)p; break;
                default: v = (uint64_t)*(const int64_t *)p; break;
                }
            } else {
                switch (size) {
                case 1: v = *(const uint8_t *)p; break;
                case 2: v = *(const uint16_t *)p; break;
                case 4: v = *(const uint32_t *)p; break;
                default: v = *(const uint64_t *)p; break;
                }
            }
            off = v - lo_bits;
            if (off >= (uint64_t)span) return -1;
        }
        int32_t r = table[off];
        if (r < 0) { r = g++; table[off] = r; }
        out[i] = r;
    }
    return g;
}

/* Short strings (at most TI_SHORT bytes) read as one exact number in a narrow range,
 * then coded by first appearance through a direct table (ti_string_first_seen), for
 * strings whose bytes vary little ("C027x_1995": ten values per digit). A string is its
 * bytes followed by zeros up to TI_SHORT bytes, plus its length: two strings give the
 * same number exactly when they are equal (the length tells "a" from "a\0"). */
#define TI_SHORT 16
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* A string's 16 bytes (zeros past its end) as two little-endian words. */
static inline void ti_short_words(const uint8_t *data, int64_t data_len, int64_t s,
                                  int64_t len, uint64_t *w0, uint64_t *w1)
{
    uint64_t a = 0, b = 0;
    if (s + TI_SHORT <= data_len) {
        memcpy(&a, data + s, 8);
        memcpy(&b, data + s + 8, 8);
    } else {
        uint8_t buf[TI_SHORT] = {0};
        memcpy(buf, data + s, (size_t)len);
        memcpy(&a, buf, 8);
        memcpy(&b, buf + 8, 8);
    }
    if (len < 8) { a &= len ? (~(uint64_t)0 >> (64 - 8 * len)) : 0; b = 0; }
    else if (len < 16) b &= len > 8 ? (~(uint64_t)0 >> (64 - 8 * (len - 8))) : 0;
    *w0 = a;
    *w1 = b;
}

/* ti_string_ranges: mins / maxs (TI_SHORT + 1 entries, updated in place) of each byte
 * position (zeros past a string's end) and, at index TI_SHORT, of the lengths, over the
 * n strings at offsets off32 / off64 (one of them, n + 1 entries) into data. Returns 0,
 * or -1 when a string is longer than TI_SHORT bytes. */
TI_EXPORT int64_t ti_string_ranges(int64_t n, const int32_t *off32, const int64_t *off64,
                                   const uint8_t *data, int64_t data_len, int64_t *mins,
                                   int64_t *maxs)
{
    uint8_t mn[TI_SHORT], mx[TI_SHORT];
    int64_t lmin = mins[TI_SHORT], lmax = maxs[TI_SHORT];
    for (int j = 0; j < TI_SHORT; j++) { mn[j] = (uint8_t)mins[j]; mx[j] = (uint8_t)maxs[j]; }
#if defined(__SSE2__)
    __m128i vmn = _mm_loadu_si128((const __m128i *)mn), vmx = _mm_loadu_si128((const __m128i *)mx);
#endif
    for (int64_t i = 0; i < n; i++) {
        int64_t s = off32 ? off32[i] : off64[i];
        int64_t len = (off32 ? off32[i + 1] : off64[i + 1]) - s;
        if (len > TI_SHORT) return -1;
        if (len < lmin) lmin = len;
        if (len > lmax) lmax = len;
        uint64_t w0, w1;
        ti_short_words(data, data_len, s, len, &w0, &w1);
#if defined(__SSE2__)
        __m128i v = _mm_set_epi64x((long long)w1, (long long)w0);
        vmn = _mm_min_epu8(vmn, v);
        vmx = _mm_max_epu8(vmx, v);
#else
        for (int j = 0; j < TI_SHORT; j++) {
            uint8_t b = (uint8_t)((j < 8 ? w0 >> (8 * j) : w1 >> (8 * (j - 8))) & 0xff);
            mn[j] = b < mn[j] ? b : mn[j];
            mx[j] = b > mx[j] ? b : mx[j];
        }
#endif
    }
#if defined(__SSE2__)
    _mm_storeu_si128((__m128i *)mn, vmn);
    _mm_storeu_si128((__m128i *)mx, vmx);
#endif
    for (int j = 0; j < TI_SHORT; j++) { mins[j] = mn[j]; maxs[j] = mx[j]; }
    mins[TI_SHORT] = lmin;
    maxs[TI_SHORT] = lmax;
    return 0;
}

/* ti_string_first_seen: each string's number sum_k (b[pos[k]] - mins[pos[k]]) * mults[k]
 * over the nvary positions that vary (position TI_SHORT = the length), looked up in table
 * (span int32 slots, -1 = not seen; shared across calls for the chunks of one column):
 * out[i] = the code of the string met first with that number, new codes from g. Returns
 * the next free code, or -1 for a number outside 0..span-1 (ranges not taken from these
 * strings). */
TI_EXPORT int64_t ti_string_first_seen(int64_t n, const int32_t *off32,
                                       const int64_t *off64, const uint8_t *data,
                                       int64_t data_len, int64_t nvary, const int32_t *pos,
                                       const int64_t *mins, const int64_t *mults,
                                       int64_t span, int32_t *table, int64_t g,
                                       int64_t *out)
{
    int64_t base = 0, lmult = 0;
    int nb = 0;
    int sh[TI_SHORT], wd[TI_SHORT];
    int64_t mu[TI_SHORT];
    for (int64_t k = 0; k < nvary; k++) {
        int p = pos[k];
        base += mins[p] * mults[k];        /* subtracted once: v = sum b * mult - base */
        if (p == TI_SHORT) { lmult = mults[k]; continue; }
        wd[nb] = p >> 3;
        sh[nb] = 8 * (p & 7);
        mu[nb] = mults[k];
        nb++;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t s = off32 ? off32[i] : off64[i];
        int64_t len = (off32 ? off32[i + 1] : off64[i + 1]) - s;
        if (len > TI_SHORT || len < 0) return -1;
        uint64_t w[2];
        ti_short_words(data, data_len, s, len, &w[0], &w[1]);
        int64_t v = len * lmult - base;
        for (int k = 0; k < nb; k++) v += (int64_t)((w[wd[k]] >> sh[k]) & 0xff) * mu[k];
        if (v < 0 || v >= span) return -1;
        int32_t r = table[v];
        if (r < 0) { r = (int32_t)g++; table[v] = r; }
        out[i] = r;
    }
    return g;
}

static struct PyModuleDef ti_unitorder_module = {
    PyModuleDef_HEAD_INIT, "_unitorder",
    "Compiled unit ordering of panel rows (loaded with ctypes; see core.unitorder).",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__unitorder(void) { return PyModule_Create(&ti_unitorder_module); }
