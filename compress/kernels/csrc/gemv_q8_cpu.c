/* Decode-sized products y [M, N] = x̂ [M, K] · Wᵀ from packed weights, with x rounded to int8 blocks (llama.cpp's
 * Q8_0), for CPUs with AVX2 but no AVX512-BF16 (AMD Zen 3, older Intel).
 *
 * Why: there the fp32 GEMVs of gemv_cpu.c widen every code to fp32 for one FMA of 8 multiply-adds and are
 * bound by those instructions, not by memory; vpmaddubsw multiplies 32 byte pairs at once, so integer dot
 * products on int8 activations do the same sums in a third of the instructions (what llama.cpp does for every
 * weight type). Dispatch uses them for int8 by default (native.GEMV_Q8): in a decode step the int4 GEMVs already
 * stream at about the memory's rate, so rounding x bought them little there.
 *
 * Each row of x (bf16) is cut into blocks of 32: d_b = max|x| / 127, xq = x · (127 / max|x|) rounded to nearest
 * even, in [−127, 127], so x̂ = d_b · xq (a block of zeros: d_b = 0; a non-finite value: d_b = NaN). Then, with
 * integer sums inside a block and fp32 across blocks:
 *   int4 (layout cpu_int4 and its table (s, zt = (8 − z)·s), so w = s·q + (zt − 8s)):
 *     y[n] = Σ_g s·Σ_{b∈g} d_b·Σ_{k∈b} q_nk·xq_k + (zt − 8s)·X̂_g,  X̂_g = Σ_{b∈g} d_b·Σ_{k∈b} xq_k
 *   int8 (row-major codes in [−128, 127], one scale per row): y[n] = s_n · Σ_b d_b·Σ_{k∈b} q_nk·xq_k
 * i.e. exactly x̂ · Wᵀ up to fp32 rounding, y rounded once to bf16. K (and the int4 group) must be multiples of
 * 32: the caller checks. Built a second time with COMPRESS_GENERIC: the same sums without intrinsics.
 *
 * AVX2, int4: for columns (c, c+1) the two 32-byte columns of a 64-row block are split into nibbles and
 * interleaved (vpunpck{l,h}bw) so that each byte pair holds one row's two codes; vpmaddubsw against the pair
 * (xq_c, xq_c+1) gives that row's sum in 16 bits. Eight pairs (≤ 8·2·15·127 = 30,480) fit before the sums are
 * widened to fp32 and scaled by d_b. int8: |q| and xq signed by q (vpsign) keep vpmaddubsw's pairs within 16 bits
 * (≤ 2·128·127) even for the code −128, then vpmaddwd adds neighbours into 32 bits.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "int4_cpu_layout.h"

#if defined(__AVX2__) && defined(__FMA__) && !defined(COMPRESS_GENERIC)
#define Q8_AVX2 1
#include <immintrin.h>
#define PREFETCH 4096
#endif

#define QB 32 /* columns per block of x */

/* One row of x → its codes xq [K] and block scales xd [K/32]. */
static void quantize_row(const uint16_t *x, int64_t k, int8_t *xq, float *xd) {
    for (int64_t b = 0; b < k; b += QB) {
        float amax = 0.0f;
        int bad = 0;
        for (int c = 0; c < QB; ++c) {
            float a = fabsf(bf2f(x[b + c]));
            bad |= !(a <= FLT_MAX);
            amax = a > amax ? a : amax;
        }
        const float id = amax > 0.0f && !bad ? 127.0f / amax : 0.0f;
        xd[b / QB] = bad ? NAN : amax / 127.0f;
        for (int c = 0; c < QB; ++c) xq[b + c] = (int8_t)nearbyintf(bf2f(x[b + c]) * id);
    }
}

/* Rows r0..r1 of one int4 output row without intrinsics. */
static void int4_rows_q8(const int8_t *xq, const float *xd, const uint8_t *packed, const uint16_t *sz, const float *xsum,
                         float *y, int64_t n, int64_t k, int64_t groups, int64_t r0, int64_t r1) {
    const int64_t group = k / groups;
    for (int64_t r = r0; r < r1; ++r) {
        float acc = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
            float f = 0.0f;
            for (int64_t b = g * group; b < (g + 1) * group; b += QB) {
                int32_t isum = 0;
                for (int64_t c = b; c < b + QB; ++c) isum += (int32_t)int4_code(packed, n, k, r, c) * xq[c];
                f += xd[b / QB] * (float)isum;
            }
            const float s = bf2f(sz[(g * n + r) * 2]), zt = bf2f(sz[(g * n + r) * 2 + 1]);
            acc += s * f + (zt - 8.0f * s) * xsum[g];
        }
        y[r] = acc;
    }
}

#ifdef Q8_AVX2
/* One full 64-row block b of one output row. f[j]: fp32 sums of rows 8j..8j+7 for the current group. */
static void int4_block_q8_avx2(const int8_t *xq, const float *xd, const uint8_t *packed, const uint16_t *sz,
                               const float *xsum, float *y, int64_t n, int64_t k, int64_t groups, int64_t b) {
    const int64_t group = k / groups;
    const __m256i nib = _mm256_set1_epi8(0x0F);
    for (int j = 0; j < 64; j += 8) _mm256_storeu_ps(y + b * 64 + j, _mm256_setzero_ps());
    const uint8_t *p = packed + b * k * 32;
    for (int64_t g = 0; g < groups; ++g) {
        __m256 f[8];
        for (int j = 0; j < 8; ++j) f[j] = _mm256_setzero_ps();
        for (int64_t c0 = g * group; c0 < (g + 1) * group; c0 += 16) {
            /* a0: rows 0-7 | 16-23, a1: 8-15 | 24-31, a2: 32-39 | 48-55, a3: 40-47 | 56-63 (16-bit sums) */
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t c = c0; c < c0 + 16; c += 2) {
                int16_t pair;
                memcpy(&pair, xq + c, 2);
                const __m256i xp = _mm256_set1_epi16(pair);
                const uint8_t *col = p + c * 32;
                _mm_prefetch((const char *)(col + PREFETCH), _MM_HINT_T0);
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)col);
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(col + 32));
                const __m256i l0 = _mm256_and_si256(v0, nib), l1 = _mm256_and_si256(v1, nib);
                const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nib);
                const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nib);
                a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(l0, l1), xp));
                a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(l0, l1), xp));
                a2 = _mm256_add_epi16(a2, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(h0, h1), xp));
                a3 = _mm256_add_epi16(a3, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(h0, h1), xp));
            }
            const __m256 d = _mm256_set1_ps(xd[c0 / QB]);
#define WIDEN(J, A, HALF)                                                                                        \
            f[J] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(A, HALF))), d, f[J]);
            WIDEN(0, a0, 0) WIDEN(2, a0, 1) WIDEN(1, a1, 0) WIDEN(3, a1, 1)
            WIDEN(4, a2, 0) WIDEN(6, a2, 1) WIDEN(5, a3, 0) WIDEN(7, a3, 1)
#undef WIDEN
        }
        int4_group_end_avx2(sz, f, xsum[g], y, n, g, b);
    }
}
#endif

/* Scratch for one call: y or nothing [n floats], xd [k/32], xsum [groups], xq [k bytes]; NULL without memory. */
static float *scratch(int64_t n, int64_t k, int64_t groups, float **xd, float **xsum, int8_t **xq) {
    float *y = malloc((n + k / QB + groups) * sizeof(float) + k);
    if (!y) return NULL;
    *xd = y + n;
    *xsum = *xd + k / QB;
    *xq = (int8_t *)(*xsum + groups);
    return y;
}

/* int4 y[m, r0:r1] for every row m of x (r0 a multiple of 64; r1 a multiple of 64 or N). 0, or 1 without memory. */
int int4_gemv_q8(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t m, int64_t n,
                 int64_t k, int64_t groups, int64_t r0, int64_t r1) {
    const int64_t group = k / groups;
    float *xd, *xsum;
    int8_t *xq;
    float *y = scratch(n, k, groups, &xd, &xsum, &xq);
    if (!y) return 1;
    for (int64_t i = 0; i < m; ++i) {
        quantize_row(x + i * k, k, xq, xd);
        for (int64_t g = 0; g < groups; ++g) {
            float s = 0.0f;
            for (int64_t b = g * group; b < (g + 1) * group; b += QB) {
                int32_t t = 0;
                for (int c = 0; c < QB; ++c) t += xq[b + c];
                s += xd[b / QB] * (float)t;
            }
            xsum[g] = s;
        }
        int64_t done = r0;
#ifdef Q8_AVX2
        const int64_t full = n / 64 * 64;
        for (int64_t b = r0 / 64; b < (r1 < full ? r1 : full) / 64; ++b)
            int4_block_q8_avx2(xq, xd, packed, sz, xsum, y, n, k, groups, b);
        done = r1 < full ? r1 : full;
        if (done < r0) done = r0;
#endif
        if (done < r1) int4_rows_q8(xq, xd, packed, sz, xsum, y, n, k, groups, done, r1);
        for (int64_t r = r0; r < r1; ++r) out[i * n + r] = f2bf(y[r]);
    }
    free(y);
    return 0;
}

/* int8 rows r0..r1 of y for every row of x. 0, or 1 without memory. */
int int8_gemv_q8(const uint16_t *x, const int8_t *q, const uint16_t *scales, uint16_t *out, int64_t m, int64_t n,
                 int64_t k, int64_t r0, int64_t r1) {
    float *xd, *xsum;
    int8_t *xq;
    float *buf = scratch(0, k, 0, &xd, &xsum, &xq);
    if (!buf) return 1;
    for (int64_t i = 0; i < m; ++i) {
        quantize_row(x + i * k, k, xq, xd);
        int64_t r = r0;
#ifdef Q8_AVX2
        /* eight rows at a time, each row's stream prefetched a line at a time */
        const __m256i ones = _mm256_set1_epi16(1);
        for (; r + 8 <= r1; r += 8) {
            __m256 a[8];
            for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_ps();
            const int8_t *w = q + r * k;
            for (int64_t c = 0; c < k; c += QB) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + c));
                const __m256 d = _mm256_set1_ps(xd[c / QB]);
                if ((c & 63) == 0)
                    for (int j = 0; j < 8; ++j) _mm_prefetch((const char *)(w + j * k + c + PREFETCH), _MM_HINT_T0);
                for (int j = 0; j < 8; ++j) {
                    const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + j * k + c));
                    const __m256i pr = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                    a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(pr, ones)), d, a[j]);
                }
            }
            for (int j = 0; j < 8; ++j) {
                __m128 h = _mm_add_ps(_mm256_castps256_ps128(a[j]), _mm256_extractf128_ps(a[j], 1));
                h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                out[i * n + r + j] = f2bf(bf2f(scales[r + j]) * _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h))));
            }
        }
#endif
        for (; r < r1; ++r) {
            const int8_t *w = q + r * k;
            float acc = 0.0f;
            for (int64_t b = 0; b < k; b += QB) {
                int32_t isum = 0;
                for (int64_t c = b; c < b + QB; ++c) isum += (int32_t)w[c] * xq[c];
                acc += xd[b / QB] * (float)isum;
            }
            out[i * n + r] = f2bf(bf2f(scales[r]) * acc);
        }
    }
    free(buf);
    return 0;
}
