/* Attention of one decoded token over a KV cache, grouped-query heads read in place (no repeated K/V).
 *
 * q [B, Hkv, R, D] (R = query heads per KV head), k and v [B, Hkv, L, D], mask [B, L] (1 = attend; NULL: all),
 * out [B, Hkv, R, D]; fp32 or bf16 (`bf16` != 0) throughout, fp32 sums. The unmasked positions are listed first,
 * so a static cache's unused length costs nothing and every later loop runs over contiguous data: the R scores of
 * each key (its row of K read once for all R queries), one exp pass, then the weighted rows of V.
 * Why: aten's SDPA at decode sizes (SmolLM2: R = 3, D = 64, ~100 keys) spends ~40–90 µs a call, mostly setup, on
 * ~0.1 MFLOP — 2.8 ms of a 23 ms int4 step over 30 layers.
 * With AVX2 + FMA (fp32 cache, D a multiple of 8 / 32): scores two keys at a time against up to four query rows,
 * and V summed 32 columns at a time for up to three rows with every sum in a register (each K and V line read
 * once). Elsewhere plain loops, built with -fassociative-math (native.py) so they vectorize; `exp_approx` is
 * plain arithmetic for the same reason (libm's expf does not vectorize). Units [u0, u1) of B · Hkv are this call's
 * share (torch's threads split them). Returns non-zero without memory for its scratch.
 * Standalone, 1 thread (Zen 3): 3 KV heads × 3 rows × D 64, 100 keys 12 µs; 1,000 keys of 2,048 ~125 µs.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

/* e^x for x <= 0 (scores minus their maximum): 2^n · p(f) with a degree-6 polynomial, relative error < 2e-7;
 * below -87 it returns 0 (as expf underflows to it, give or take denormals). */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float t = x * 1.44269504088896341f;
    const float n = floorf(t + 0.5f);
    const float f = (t - n) * 0.693147180559945309f; /* |f| <= ln2 / 2 */
    float p = 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return x <= -87.0f ? 0.0f : p * scale;
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(COMPRESS_GENERIC)
#include <immintrin.h>
#define ATTN_AVX2 1

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* Columns [c, c + 32) of nq (<= 3, a constant where inlined) query rows' sums Σ_t p[q·ps + t] · v[keys[t]]: the
 * 4 · nq sums stay in registers over all keys and each V line is read once for the nq rows. */
static inline __attribute__((always_inline)) void v_slice(const float *vu, const int32_t *keys, int64_t n, int64_t d,
                                                          int64_t c, const float *p, int64_t ps, float *out, int nq) {
    __m256 a[3][4];
    for (int q = 0; q < nq; ++q)
        for (int j = 0; j < 4; ++j) a[q][j] = _mm256_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
        const float *vr = vu + (int64_t)keys[t] * d + c;
        __m256 w[3]; /* 3 weights + 1 row slice + 12 sums: the 16 registers */
        for (int q = 0; q < nq; ++q) w[q] = _mm256_set1_ps(p[q * ps + t]);
        for (int j = 0; j < 4; ++j) {
            const __m256 x = _mm256_loadu_ps(vr + 8 * j);
            for (int q = 0; q < nq; ++q) a[q][j] = _mm256_fmadd_ps(w[q], x, a[q][j]);
        }
    }
    for (int q = 0; q < nq; ++q)
        for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + q * d + c + 8 * j, a[q][j]);
}

/* lanes summed: [Σ s0, Σ s1, Σ s2, Σ s3] */
static inline __m128 hsum4(__m256 s0, __m256 s1, __m256 s2, __m256 s3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Scores of two keys (rows k0, k1) against nq (<= 4) query rows of q (d a multiple of 8): 2 · nq independent FMA
 * chains, each key row read once, one shuffle-reduction per key for all nq rows. */
static inline __attribute__((always_inline)) void scores2(const float *q, int64_t d, const float *k0, const float *k1,
                                                          int nq, float out0[4], float out1[4]) {
    __m256 a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i] = b[i] = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; c += 8) {
        const __m256 x0 = _mm256_loadu_ps(k0 + c), x1 = _mm256_loadu_ps(k1 + c);
        for (int i = 0; i < nq; ++i) {
            const __m256 y = _mm256_loadu_ps(q + i * d + c);
            a[i] = _mm256_fmadd_ps(y, x0, a[i]);
            b[i] = _mm256_fmadd_ps(y, x1, b[i]);
        }
    }
    _mm_storeu_ps(out0, hsum4(a[0], a[1], a[2], a[3]));
    _mm_storeu_ps(out1, hsum4(b[0], b[1], b[2], b[3]));
}
#endif

/* a · b over d values (two FMA chains with AVX2 where d is a multiple of 8) */
static inline float dot(const float *a, const float *b, int64_t d) {
#ifdef ATTN_AVX2
    if (d % 8 == 0) {
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 16 <= d; c += 16) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), s1);
        }
        if (c < d) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
        return hsum8(_mm256_add_ps(s0, s1));
    }
#endif
    float s = 0.0f;
    for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
    return s;
}

/* a row of d values as fp32: a pointer into the cache (fp32) or widened into dst (bf16) */
static inline const float *row_f32(const void *base, int bf16, int64_t row, int64_t d, float *dst) {
    if (!bf16) return (const float *)base + row * d;
    const uint16_t *p = (const uint16_t *)base + row * d;
    for (int64_t i = 0; i < d; ++i) dst[i] = bf2f(p[i]);
    return dst;
}

int attn_decode(const void *q, const void *k, const void *v, const uint8_t *mask, void *out, int64_t hkv, int64_t r,
                int64_t l, int64_t d, float scale, int bf16, int64_t u0, int64_t u1) {
    float *buf = malloc(sizeof(float) * (size_t)(r * l + 2 * r * d + d) + sizeof(int32_t) * (size_t)l);
    if (!buf) return 1;
    float *p = buf, *qr = buf + r * l, *acc = qr + r * d, *tmp = acc + r * d;
    int32_t *keys = (int32_t *)(tmp + d);
    for (int64_t u = u0; u < u1; ++u) {
        const uint8_t *m = mask ? mask + (u / hkv) * l : NULL;
        int64_t n = 0;
        for (int64_t j = 0; j < l; ++j) { /* branch-free: a mask's pattern is data */
            keys[n] = (int32_t)j;
            n += m ? (m[j] != 0) : 1;
        }
        const float *qu = row_f32(q, bf16, u, r * d, qr);
        int64_t t0 = 0; /* p[i, t] = q_i · k_t · scale */
#ifdef ATTN_AVX2
        if (!bf16 && d % 8 == 0) {
            const float *ku = (const float *)k + u * l * d;
            for (; t0 + 2 <= n; t0 += 2)
                for (int64_t i = 0; i < r; i += 4) {
                    const int nq = r - i < 4 ? (int)(r - i) : 4;
                    float s0[4], s1[4];
                    scores2(qu + i * d, d, ku + (int64_t)keys[t0] * d, ku + (int64_t)keys[t0 + 1] * d, nq, s0, s1);
                    for (int j = 0; j < nq; ++j) {
                        p[(i + j) * n + t0] = s0[j] * scale;
                        p[(i + j) * n + t0 + 1] = s1[j] * scale;
                    }
                }
        }
#endif
        for (int64_t t = t0; t < n; ++t) {
            const float *kr = row_f32(k, bf16, u * l + keys[t], d, tmp);
            for (int64_t i = 0; i < r; ++i) p[i * n + t] = dot(qu + i * d, kr, d) * scale;
        }
        float sum[16];
        for (int64_t i = 0; i < r; ++i) { /* softmax numerators and their sum, row by row */
            float *pi = p + i * n, mx = -INFINITY, s = 0.0f;
            for (int64_t t = 0; t < n; ++t) mx = pi[t] > mx ? pi[t] : mx;
            for (int64_t t = 0; t < n; ++t) {
                pi[t] = exp_approx(pi[t] - mx);
                s += pi[t];
            }
            sum[i] = s;
        }
        memset(acc, 0, sizeof(float) * (size_t)(r * d));
#ifdef ATTN_AVX2
        if (!bf16 && d % 32 == 0) {
            const float *vu = (const float *)v + u * l * d;
            for (int64_t c = 0; c < d; c += 32)
                for (int64_t i = 0; i < r; i += 3) {
                    const int64_t nq = r - i < 3 ? r - i : 3;
                    if (nq == 3) v_slice(vu, keys, n, d, c, p + i * n, n, acc + i * d, 3);
                    else if (nq == 2) v_slice(vu, keys, n, d, c, p + i * n, n, acc + i * d, 2);
                    else v_slice(vu, keys, n, d, c, p + i * n, n, acc + i * d, 1);
                }
        } else
#endif
        for (int64_t t = 0; t < n; ++t) {
            const float *vr = row_f32(v, bf16, u * l + keys[t], d, tmp);
            for (int64_t i = 0; i < r; ++i) {
                const float w = p[i * n + t];
                float *a = acc + i * d;
                for (int64_t c = 0; c < d; ++c) a[c] += w * vr[c];
            }
        }
        for (int64_t i = 0; i < r; ++i) {
            const float inv = n ? 1.0f / sum[i] : 0.0f; /* no key to attend: zeros */
            const int64_t o = (u * r + i) * d;
            for (int64_t c = 0; c < d; ++c) {
                const float y = acc[i * d + c] * inv;
                if (bf16) ((uint16_t *)out)[o + c] = f2bf(y);
                else ((float *)out)[o + c] = y;
            }
        }
    }
    free(buf);
    return 0;
}
