/* Decode-sized products y [M, N] = x [M, K] · Wᵀ straight from packed weights, for small M on a CPU.
 *
 * Why: at M = 1 aten's int4pack kernel runs at about a third of the memory floor of its bytes and
 * the int8pack one below half, so a quantized model read fewer bytes yet did not decode faster than
 * a dense bf16 model compiled with Inductor's GEMM templates. These loops stream each weight byte
 * once and keep every partial sum in registers.
 *
 * int4 (aten's CPU int4pack layout, table sz [G, N, 2] of bf16 (s, zt = (8 − z)·s), w = (q − 8)·s + zt):
 *   y[n] = Σ_g s·Σ_{k∈g} x_k·q_nk + (zt − 8·s)·X_g,  X_g = Σ_{k∈g} x_k.
 *   With AVX512-BF16 each code becomes the bf16 number 128 + q by OR-ing 0x4300 into it, and
 *   vdpbf16ps multiplies pairs of columns (k, k+1) exactly and adds in fp32; the 128·X_g it adds is
 *   taken back at the end of the group: y += s·dot + (zt − 136·s)·X_g.
 * int8 (row-major int8 [N, K], one bf16 scale per row): y[n] = s_n · Σ_k x_k·q_nk; with AVX512 four rows
 *   at a time, sixteen codes widened to fp32 per step, against x widened once per call.
 *
 * With AVX2 + FMA only (AMD Zen 3, older Intel): the same sums with eight fp32 lanes, each code widened
 *   to fp32 (vpmovzxbd straight from memory, then mask / shift for the two nibbles, or vpmovsxbd for int8).
 *
 * Every path computes in fp32 from the exact codes (no bf16 rounding of w) and rounds y once to bf16.
 * A generic C path does the same sums where neither is there (or COMPRESS_GENERIC is set).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "int4_cpu_layout.h"

#if defined(__AVX512BF16__) && defined(__AVX512VBMI__) && defined(__AVX512BW__) && !defined(COMPRESS_GENERIC)
#define GEMV_AVX512 1
#include <immintrin.h>
/* Bytes ahead of each weight stream to prefetch: out of cache, 1536 x 576 on one Sapphire Rapids thread took
 * int8 50 -> 34 us and int4 30 -> 28 us (in cache a few % slower; a decode step reads every weight once). */
#define PREFETCH 4096
#elif defined(__AVX2__) && defined(__FMA__) && !defined(COMPRESS_GENERIC)
#define GEMV_AVX2 1
#include <immintrin.h>
#define PREFETCH 4096
#endif

/* Rows r0..r1 of one int4 output row y (N values): the same sums without intrinsics. */
static void int4_rows_generic(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, float *y, int64_t n,
                              int64_t k, int64_t groups, int64_t r0, int64_t r1) {
    int64_t group = k / groups;
    for (int64_t r = r0; r < r1; ++r) {
        float acc = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
            float dot = 0.0f, xs = 0.0f;
            for (int64_t c = g * group; c < (g + 1) * group; ++c) {
                float xv = bf2f(x[c]);
                dot += xv * (float)int4_code(packed, n, k, r, c);
                xs += xv;
            }
            float s = bf2f(sz[(g * n + r) * 2]), zt = bf2f(sz[(g * n + r) * 2 + 1]);
            acc += s * dot + (zt - 8.0f * s) * xs;
        }
        y[r] = acc;
    }
}

#ifdef GEMV_AVX512
/* One full 64-row block b of one output row: four zmm of sums per group, four of results. */
static void int4_block_avx512(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, const float *xsum,
                              float *y, int64_t n, int64_t k, int64_t groups, int64_t b) {
    const int64_t group = k / groups;
    /* byte 0 of lane i gets code byte c = 16h + i of column k, byte 2 that of column k + 1 (bytes 1, 3: masked) */
    const __m512i iota = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(0x00010001));
    const __m512i p0 = _mm512_add_epi32(iota, _mm512_set1_epi32(0x00200000)),
                  p1 = _mm512_add_epi32(iota, _mm512_set1_epi32(0x00300010));
    const __mmask64 keep = 0x5555555555555555ULL;
    const __m512i nib = _mm512_set1_epi32(0x000F000F), one28 = _mm512_set1_epi32(0x43004300);
    const __m512 c136 = _mm512_set1_ps(136.0f);
    const __m512i hi16 = _mm512_set1_epi32((int)0xFFFF0000u);
    __m512 y0 = _mm512_setzero_ps(), y1 = y0, y2 = y0, y3 = y0;
    const uint8_t *p = packed + b * k * 32;
    for (int64_t g = 0; g < groups; ++g) {
        __m512 d0 = _mm512_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
        for (int64_t c = g * group; c < (g + 1) * group; c += 2) {
            uint32_t xp;
            memcpy(&xp, x + c, 4);
            const __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xp);
            _mm_prefetch((const char *)(p + c * 32 + PREFETCH), _MM_HINT_T0);
            const __m512i v = _mm512_loadu_si512(p + c * 32);
            const __m512i a = _mm512_maskz_permutexvar_epi8(keep, p0, v);  /* rows 0..15 | 32..47 */
            const __m512i e = _mm512_maskz_permutexvar_epi8(keep, p1, v);  /* rows 16..31 | 48..63 */
            d0 = _mm512_dpbf16_ps(d0, (__m512bh)_mm512_ternarylogic_epi32(a, nib, one28, 0xEA), xv);
            d1 = _mm512_dpbf16_ps(d1, (__m512bh)_mm512_ternarylogic_epi32(e, nib, one28, 0xEA), xv);
            d2 = _mm512_dpbf16_ps(d2, (__m512bh)_mm512_or_si512(_mm512_srli_epi16(a, 4), one28), xv);
            d3 = _mm512_dpbf16_ps(d3, (__m512bh)_mm512_or_si512(_mm512_srli_epi16(e, 4), one28), xv);
        }
        const uint16_t *t = sz + (g * n + b * 64) * 2;
        const __m512 xs = _mm512_set1_ps(xsum[g]);
#define GROUP_END(Y, D, R)                                                                     \
        {                                                                                      \
            const __m512i st = _mm512_loadu_si512(t + 2 * (R));                                \
            const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(st, 16));                   \
            const __m512 zt = _mm512_castsi512_ps(_mm512_and_si512(st, hi16));                 \
            Y = _mm512_fmadd_ps(s, D, Y);                                                      \
            Y = _mm512_fmadd_ps(_mm512_fnmadd_ps(c136, s, zt), xs, Y);                         \
        }
        GROUP_END(y0, d0, 0) GROUP_END(y1, d1, 16) GROUP_END(y2, d2, 32) GROUP_END(y3, d3, 48)
#undef GROUP_END
    }
    _mm512_storeu_ps(y + b * 64, y0);
    _mm512_storeu_ps(y + b * 64 + 16, y1);
    _mm512_storeu_ps(y + b * 64 + 32, y2);
    _mm512_storeu_ps(y + b * 64 + 48, y3);
}
#endif

#ifdef GEMV_AVX2
/* One full 64-row block b of one output row with AVX2, from x already widened to fp32 (xf): eight ymm of sums
 * per group (rows 0..31 from the low nibbles, 32..63 from the high), folded into y[64] at each group's end with
 * eight (s, zt) pairs per load, as the AVX512 path does. */
static void int4_block_avx2(const float *xf, const uint8_t *packed, const uint16_t *sz, const float *xsum,
                            float *y, int64_t n, int64_t k, int64_t groups, int64_t b) {
    const int64_t group = k / groups;
    const __m256i nib = _mm256_set1_epi32(15);
    for (int j = 0; j < 64; j += 8) _mm256_storeu_ps(y + b * 64 + j, _mm256_setzero_ps());
    const uint8_t *p = packed + b * k * 32;
    for (int64_t g = 0; g < groups; ++g) {
        __m256 d[8];
        for (int j = 0; j < 8; ++j) d[j] = _mm256_setzero_ps();
        for (int64_t c = g * group; c < (g + 1) * group; ++c) {
            const __m256 xv = _mm256_broadcast_ss(xf + c);
            const uint8_t *col = p + c * 32;
            _mm_prefetch((const char *)(col + PREFETCH), _MM_HINT_T0);
            for (int j = 0; j < 4; ++j) {  /* bytes 8j..8j+7: rows 8j.. (low nibble) and 32 + 8j.. (high) */
                const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(col + 8 * j)));
                d[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, nib)), xv, d[j]);
                d[j + 4] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), xv, d[j + 4]);
            }
        }
        int4_group_end_avx2(sz, d, xsum[g], y, n, g, b);
    }
}
#endif

static void store_bf16(uint16_t *out, const float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) out[r] = f2bf(y[r]);
}

/* y[m, r0:r1] for every row m of x (r0 a multiple of 64; r1 a multiple of 64 or N). 0, or 1 without memory. */
int int4_gemv(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t m, int64_t n,
              int64_t k, int64_t groups, int64_t r0, int64_t r1) {
    int64_t group = k / groups;
    float *y = malloc((n + groups + k) * sizeof(float));
    if (!y) return 1;
    float *xsum = y + n, *xf = xsum + groups;  /* xf: this row of x in fp32 (the AVX2 blocks broadcast from it) */
    for (int64_t i = 0; i < m; ++i) {
        const uint16_t *xi = x + i * k;
        for (int64_t c = 0; c < k; ++c) xf[c] = bf2f(xi[c]);
        for (int64_t g = 0; g < groups; ++g) {
            float s = 0.0f;
            for (int64_t c = g * group; c < (g + 1) * group; ++c) s += xf[c];
            xsum[g] = s;
        }
        int64_t done = r0;
#ifdef GEMV_AVX512
        const int64_t full = n / 64 * 64;
        if (group % 2 == 0) {
            for (int64_t b = r0 / 64; b < (r1 < full ? r1 : full) / 64; ++b)
                int4_block_avx512(xi, packed, sz, xsum, y, n, k, groups, b);
            done = r1 < full ? r1 : full;
            if (done < r0) done = r0;
        }
#elif defined(GEMV_AVX2)
        const int64_t full = n / 64 * 64;
        for (int64_t b = r0 / 64; b < (r1 < full ? r1 : full) / 64; ++b)
            int4_block_avx2(xf, packed, sz, xsum, y, n, k, groups, b);
        done = r1 < full ? r1 : full;
        if (done < r0) done = r0;
#endif
        if (done < r1) int4_rows_generic(xi, packed, sz, y, n, k, groups, done, r1);
        store_bf16(out + i * n, y, r0, r1);
    }
    free(y);
    return 0;
}

#ifdef GEMV_AVX2
static inline float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
#endif

/* int8 rows r0..r1 of y for every row of x. 0, or 1 without memory. */
int int8_gemv(const uint16_t *x, const int8_t *q, const uint16_t *scales, uint16_t *out, int64_t m, int64_t n,
              int64_t k, int64_t r0, int64_t r1) {
    float *xf = malloc(k * sizeof(float));
    if (!xf) return 1;
    for (int64_t i = 0; i < m; ++i) {
        const uint16_t *xi = x + i * k;
        for (int64_t c = 0; c < k; ++c) xf[c] = bf2f(xi[c]);
        int64_t r = r0;
#ifdef GEMV_AVX512
        const int64_t kv = k / 16 * 16;
        for (; r + 4 <= r1; r += 4) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            const int8_t *w = q + r * k;
            for (int64_t c = 0; c < kv; c += 16) {
                const __m512 xv = _mm512_loadu_ps(xf + c);
                for (int j = 0; j < 4; ++j) _mm_prefetch((const char *)(w + j * k + c + PREFETCH), _MM_HINT_T0);
#define ROW(A, J) A = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + (J) * k + c)))), xv, A);
                ROW(a0, 0) ROW(a1, 1) ROW(a2, 2) ROW(a3, 3)
#undef ROW
            }
            float d[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                          _mm512_reduce_add_ps(a3)};
            for (int j = 0; j < 4; ++j) {
                for (int64_t c = kv; c < k; ++c) d[j] += xf[c] * (float)w[j * k + c];
                out[i * n + r + j] = f2bf(bf2f(scales[r + j]) * d[j]);
            }
        }
#elif defined(GEMV_AVX2)
        /* eight rows at a time: eight independent FMA chains keep both FMA pipes busy (four rows left half of
         * them idle), and each row's stream is prefetched a line at a time (out of cache the 49,152 x 576 head
         * took 3.8 ms with four rows and no prefetch, 1.9 ms so) */
        const int64_t kv = k / 8 * 8;
        for (; r + 8 <= r1; r += 8) {
            __m256 a[8];
            for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_ps();
            const int8_t *w = q + r * k;
            for (int64_t c = 0; c < kv; c += 8) {
                const __m256 xv = _mm256_loadu_ps(xf + c);
                if ((c & 63) == 0)
                    for (int j = 0; j < 8; ++j) _mm_prefetch((const char *)(w + j * k + c + PREFETCH), _MM_HINT_T0);
                for (int j = 0; j < 8; ++j)
                    a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                               _mm_loadl_epi64((const __m128i *)(w + j * k + c)))), xv, a[j]);
            }
            for (int j = 0; j < 8; ++j) {
                float d = hsum8(a[j]);
                for (int64_t c = kv; c < k; ++c) d += xf[c] * (float)w[j * k + c];
                out[i * n + r + j] = f2bf(bf2f(scales[r + j]) * d);
            }
        }
#endif
        for (; r < r1; ++r) {
            const int8_t *w = q + r * k;
            float d = 0.0f;
            for (int64_t c = 0; c < k; ++c) d += xf[c] * (float)w[c];
            out[i * n + r] = f2bf(bf2f(scales[r]) * d);
        }
    }
    free(xf);
    return 0;
}
