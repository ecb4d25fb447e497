/* The cpu_int4 layout (compress/formats/int4_layout.py) for the GEMVs: byte (b, c, j) of a full 64-row block holds
 * rows 64b + j (low nibble) and 64b + 32 + j (high) of column c; a last partial block of N mod 64 rows stores
 * rows 2j (low) and 2j + 1 (high) in byte (c, j). `int4_code` reads one code (the loops without intrinsics);
 * `int4_group_end_avx2` folds a group's sums of a full block into y with the table's (s, zt) pairs. */
#pragma once
#include <stdint.h>

static inline uint8_t int4_code(const uint8_t *packed, int64_t n, int64_t k, int64_t r, int64_t c) {
    const int64_t full = n / 64 * 64;
    if (r < full) {
        const int64_t b = r / 64, j = r % 64;
        const uint8_t byte = packed[(b * k + c) * 32 + (j & 31)];
        return j >= 32 ? byte >> 4 : byte & 15;
    }
    const int64_t j = r - full;
    const uint8_t byte = packed[full * k / 2 + c * ((n - full) / 2) + j / 2];
    return (j & 1) ? byte >> 4 : byte & 15;
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(COMPRESS_GENERIC)
#include <immintrin.h>

/* y[64 rows of block b] += s·sums + (zt − 8s)·xsum for group g, where sums[j] holds rows 8j..8j+7 of Σ q·x and the
 * table sz [G, N, 2] is bf16 (s, zt = (8 − z)·s): eight rows' pairs per 32-byte load. */
static inline void int4_group_end_avx2(const uint16_t *sz, const __m256 *sums, float xsum, float *y, int64_t n,
                                       int64_t g, int64_t b) {
    const __m256i hi16 = _mm256_set1_epi32((int)0xFFFF0000u);
    const __m256 c8 = _mm256_set1_ps(8.0f), xs = _mm256_set1_ps(xsum);
    const uint16_t *t = sz + (g * n + b * 64) * 2;
    float *yb = y + b * 64;
    for (int j = 0; j < 8; ++j) {
        const __m256i st = _mm256_loadu_si256((const __m256i *)(t + 16 * j));
        const __m256 s = _mm256_castsi256_ps(_mm256_slli_epi32(st, 16));
        const __m256 zt = _mm256_castsi256_ps(_mm256_and_si256(st, hi16));
        const __m256 yv = _mm256_fmadd_ps(s, sums[j], _mm256_loadu_ps(yb + 8 * j));
        _mm256_storeu_ps(yb + 8 * j, _mm256_fmadd_ps(_mm256_fnmadd_ps(c8, s, zt), xs, yv));
    }
}
#endif
