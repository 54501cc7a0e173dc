/* memo's fused merge kernels: one pass over each input per radix digit, one pass to merge.
 *
 * Every operation reproduces eager torch on the CPU bit for bit (and so mergekit): each
 * elementwise op is computed in fp32 and rounded to the compute dtype (round to nearest
 * even), sums run in fp32 from +0.0 in input order and are rounded once, sign(NaN) is 0.
 * Compiled without -ffast-math and with -ffp-contract=off: no fused multiply-adds, no
 * reassociation. Two compute dtypes: bf16 (T = uint16_t) and fp32 (T = float).
 *
 * Ranges: every function works on elements [0, n) of the pointers it is given; callers
 * split a chunk among threads and pass each part's offset in the chunk (`pos0`), which
 * the tie rule needs (entries equal to the threshold are kept at positions < tie_end).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 256
#define MAX_K 64

typedef union {
    float f;
    uint32_t u;
} bits32;

static inline float bf16_load(uint16_t h) {
    bits32 v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

/* fp32 -> nearest-even bf16, returned as the fp32 value it is (NaN stays NaN). */
static inline float bf16_round(float f) {
    bits32 v;
    v.f = f;
    uint32_t u = v.u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    v.u = ((u & 0x7fffffffu) > 0x7f800000u) ? u : r;
    return v.f;
}

static inline uint16_t bf16_store(float f) {
    bits32 v;
    v.f = f;
    return ((v.u & 0x7fffffffu) > 0x7f800000u) ? (uint16_t)0x7fc0 : (uint16_t)(v.u >> 16);
}

static inline float f32_load(float x) { return x; }
static inline float f32_round(float f) { return f; }
static inline float f32_store(float f) { return f; }

/* torch.sign: 1, -1, 0 (also for NaN and -0.0) */
static inline float tsign(float x) { return (x > 0.0f ? 1.0f : 0.0f) - (x < 0.0f ? 1.0f : 0.0f); }

/* The delta of one element, rounded: x - base, or x itself for stored deltas. */
#define DELTA(LOAD, ROUND, x, b, j, deltas) ((deltas) ? LOAD((x)[j]) : ROUND(LOAD((x)[j]) - LOAD((b)[j])))

/* ---- magnitude keys: histograms, tie counts and positions ---------------------------------- */

/* A block of keys (|d|'s bits): 15 bits for bf16, 31 for fp32. Vectorised; the counting is not. */
static void keys_bf16(const uint16_t *x, const uint16_t *b, int len, int deltas, uint32_t *restrict keys) {
    for (int j = 0; j < len; j++) keys[j] = bf16_store(DELTA(bf16_load, bf16_round, x, b, j, deltas)) & 0x7fffu;
}

static void keys_f32(const float *x, const float *b, int len, int deltas, uint32_t *restrict keys) {
    for (int j = 0; j < len; j++) {
        bits32 v;
        v.f = DELTA(f32_load, f32_round, x, b, j, deltas);
        keys[j] = v.u & 0x7fffffffu;
    }
}

/* Two interleaved sub-histograms (hist and hist + bins): runs of equal keys do not wait on each other. */
static void count_digits(const uint32_t *keys, int len, int shift, uint32_t mask, int filter, uint32_t prefix,
                         uint32_t bins, uint32_t *hist) {
    int j = 0;
    if (!filter) {
        for (; j + 1 < len; j += 2) {
            hist[(keys[j] >> shift) & mask]++;
            hist[bins + ((keys[j + 1] >> shift) & mask)]++;
        }
    }
    for (; j < len; j++)
        if (!filter || (keys[j] >> 16) == prefix) hist[(keys[j] >> shift) & mask]++;
}

/* bf16: one pass over 15-bit keys, 32768 bins. `hist` holds 2 x 32768 counts (zeroed here). */
void memo_hist_bf16(const uint16_t *x, const uint16_t *b, int64_t n, int deltas, uint32_t *hist) {
    uint32_t keys[BLOCK];
    memset(hist, 0, 2 * 32768 * sizeof *hist);
    for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {
        const int len = (int)((n - j0) < BLOCK ? (n - j0) : BLOCK);
        keys_bf16(x + j0, b + j0, len, deltas, keys);
        count_digits(keys, len, 0, 0x7fffu, 0, 0, 32768u, hist);
    }
}

/* fp32: pass 0 counts the high 15 bits of the 31-bit keys; pass 1 the low 16 bits of the keys whose
 * high bits equal `prefix`. `hist` holds 2 x bins counts. */
void memo_hist_f32(const float *x, const float *b, int64_t n, int deltas, int pass, uint32_t prefix, uint32_t *hist) {
    uint32_t keys[BLOCK];
    memset(hist, 0, 2 * (pass == 0 ? 32768 : 65536) * sizeof *hist);
    for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {
        const int len = (int)((n - j0) < BLOCK ? (n - j0) : BLOCK);
        keys_f32(x + j0, b + j0, len, deltas, keys);
        if (pass == 0)
            count_digits(keys, len, 16, 0x7fffu, 0, 0, 32768u, hist);
        else
            count_digits(keys, len, 0, 0xffffu, 1, prefix, 65536u, hist);
    }
}

/* Sum `rows` histograms of `bins` 32-bit counts into one of 64-bit counts. */
void memo_hist_sum(const uint32_t *hists, int64_t rows, int64_t bins, int64_t *out) {
    for (int64_t j = 0; j < bins; j++) out[j] = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < bins; j++) out[j] += hists[r * bins + j];
}

/* How many keys equal `key`; with m > 0, stop at the m-th and return -1 - its position. */
#define COUNT_KEY(NAME, T, KEYS)                                                                       \
    int64_t NAME(const T *x, const T *b, int64_t n, int deltas, uint32_t key, int64_t m) {             \
        uint32_t keys[BLOCK];                                                                          \
        int64_t seen = 0;                                                                              \
        for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {                                                    \
            const int len = (int)((n - j0) < BLOCK ? (n - j0) : BLOCK);                                \
            KEYS(x + j0, b + j0, len, deltas, keys);                                                   \
            int here = 0;                                                                              \
            for (int j = 0; j < len; j++) here += keys[j] == key;                                      \
            if (m > 0 && seen + here >= m)                                                             \
                for (int j = 0; j < len; j++)                                                          \
                    if (keys[j] == key && ++seen == m) return -1 - (j0 + j);                           \
            seen += here;                                                                              \
        }                                                                                              \
        return seen;                                                                                   \
    }

COUNT_KEY(memo_count_key_bf16, uint16_t, keys_bf16)
COUNT_KEY(memo_count_key_f32, float, keys_f32)

/* ---- the merge ----------------------------------------------------------------------------- */

typedef struct {
    int32_t k;
    int32_t consensus;     /* TIES sign election; 0: task arithmetic */
    int32_t normalize;
    int32_t deltas;        /* inputs are stored deltas */
    int32_t use_lam;
    float lam;
    float ta_divisor;      /* task arithmetic's divisor (already 1 where the weights sum to ~0) */
    int64_t pos0;          /* this part's offset in the chunk (for tie_end) */
    float thresholds[MAX_K]; /* keep |d| > t (t is a value of the compute dtype); t < 0: keep all */
    int64_t tie_ends[MAX_K]; /* |d| == t kept at chunk positions < tie_end */
    float scales[MAX_K];   /* rescale factor; NaN: none */
    float weights[MAX_K];  /* rounded to the compute dtype */
} memo_params;

#define T uint16_t
#define LOAD bf16_load
#define ROUND bf16_round
#define STORE bf16_store
#define NAME(x) x##_bf16
#include "fused_merge.h"
#undef T
#undef LOAD
#undef ROUND
#undef STORE
#undef NAME

#define T float
#define LOAD f32_load
#define ROUND f32_round
#define STORE f32_store
#define NAME(x) x##_f32
#include "fused_merge.h"
