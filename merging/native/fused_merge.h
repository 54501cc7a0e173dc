/* The merge for one compute dtype: included by fused.c once per dtype (T, LOAD, ROUND, STORE, NAME).
 * A block of BLOCK elements at a time, each step a simple loop over the block (vectorised). */

/* wd = the input's delta, trimmed, rescaled and weighted (each step rounded to the dtype). */
static void NAME(weighted)(const T *x, const T *b, int len, int64_t tie, int deltas, float t, float s, float w,
                           float *restrict wd) {
    if (deltas)
        for (int j = 0; j < len; j++) wd[j] = LOAD(x[j]);
    else
        for (int j = 0; j < len; j++) wd[j] = ROUND(LOAD(x[j]) - LOAD(b[j]));
    if (t >= 0.0f) {
        const int cut = tie <= 0 ? 0 : (tie >= len ? len : (int)tie);
        for (int j = 0; j < cut; j++) {
            float f = tsign(fabsf(wd[j]) - t);
            wd[j] = wd[j] * fminf(f + 1.0f, 1.0f);
        }
        for (int j = cut; j < len; j++) {
            float f = tsign(fabsf(wd[j]) - t);
            wd[j] = wd[j] * fmaxf(f, 0.0f);
        }
    }
    if (s == s)
        for (int j = 0; j < len; j++) wd[j] = ROUND(wd[j] * s);
    if (w != 1.0f)
        for (int j = 0; j < len; j++) wd[j] = ROUND(wd[j] * w);
}

/* acc = the fp32 sum of the agreeing weighted deltas, divisor = the sum of their weights (rounded,
 * a zero becoming 1). */
static void NAME(elect)(const float *restrict wd, const float *restrict weights, int k, int len,
                        float *restrict acc, float *restrict divisor) {
    float majority[BLOCK];
    for (int j = 0; j < len; j++) {
        majority[j] = ROUND(acc[j]) < 0.0f ? -1.0f : 1.0f;
        acc[j] = 0.0f;
        divisor[j] = 0.0f;
    }
    for (int i = 0; i < k; i++) {
        const float w = weights[i];
        const float *restrict row = wd + (int64_t)i * BLOCK;
        for (int j = 0; j < len; j++) {
            const float a = tsign(row[j]) == majority[j] ? 1.0f : 0.0f; /* agrees (never for a zero) */
            acc[j] += row[j] * a;
            divisor[j] += w * a;
        }
    }
    for (int j = 0; j < len; j++) {
        float d = ROUND(divisor[j]);
        divisor[j] = d == 0.0f ? 1.0f : d;
    }
}

/* mixed -> out = base + mixed / divisor * lambda, each step rounded; returns how many are not finite. */
static int NAME(finish)(const T *restrict base, const float *restrict acc, const float *restrict divisor, int len,
                        int normalize, int use_lam, float lam, T *restrict out) {
    float mixed[BLOCK];
    int bad = 0;
    for (int j = 0; j < len; j++) mixed[j] = ROUND(acc[j]);
    if (normalize)
        for (int j = 0; j < len; j++) mixed[j] = ROUND(mixed[j] / divisor[j]);
    if (use_lam)
        for (int j = 0; j < len; j++) mixed[j] = ROUND(mixed[j] * lam);
    for (int j = 0; j < len; j++) {
        const float o = ROUND(LOAD(base[j]) + mixed[j]);
        bad += !(fabsf(o) <= 3.4028234663852886e38f);
        out[j] = STORE(o);
    }
    return bad;
}

/* The merged elements [0, n); returns how many of them are not finite (NaN or Inf). */
int64_t NAME(memo_merge)(const T *base, const T *const *inputs, int64_t n, const memo_params *p, T *out) {
    float wd[MAX_K][BLOCK], acc[BLOCK], divisor[BLOCK];
    const int k = p->k;
    int64_t bad = 0;
    for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {
        const int len = (int)((n - j0) < BLOCK ? (n - j0) : BLOCK);
        for (int i = 0; i < k; i++)
            NAME(weighted)(inputs[i] + j0, base + j0, len, p->tie_ends[i] - (p->pos0 + j0), p->deltas,
                           p->thresholds[i], p->scales[i], p->weights[i], wd[i]);
        for (int j = 0; j < len; j++) acc[j] = 0.0f;
        for (int i = 0; i < k; i++) {
            const float *restrict row = wd[i];
            for (int j = 0; j < len; j++) acc[j] += row[j];
        }
        if (p->consensus)
            NAME(elect)(&wd[0][0], p->weights, k, len, acc, divisor);
        else
            for (int j = 0; j < len; j++) divisor[j] = p->ta_divisor;
        bad += NAME(finish)(base + j0, acc, divisor, len, p->normalize, p->use_lam, p->lam, out + j0);
    }
    return bad;
}
