/* Dequantize aten's CPU int4pack layout straight into Wᵀ [K, N] in bf16, for the prefill matmul.
 *
 * Byte (b, k, c) of a full 64-row block holds rows 64b + c (low nibble) and 64b + 32 + c (high) of
 * column k, so each column of Wᵀ reads 32 consecutive bytes: a streaming loop with no transpose,
 * which the compiler vectorizes (Inductor's version of the same unpack needs a transposing copy).
 * A last partial block of r = N mod 64 rows stores rows 2j (low) and 2j + 1 (high) in byte (k, j).
 *
 * Scales and zero points come from the kernel's own table sz [G, N, 2] (bf16 scale s and
 * zt = (8 − z)·s): z = 8 − round(zt / s) is exact where s ≠ 0, and a zero scale gives w = 0.
 * w = (q − z)·s is computed in fp32 and rounded once to bf16 (round to nearest even), the same
 * value as the dequantizing path's bf16 math. Built a second time with KN_FP32 (as int4_cpu_kn_f32), it
 * stores the fp32 values unrounded, for fp32 models (CPUs without bf16 hardware).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

/* Columns k0..k1 of Wᵀ (out holds all K rows of N); returns 0, or 1 when scratch memory ran out. */
#ifdef KN_FP32
typedef float out_t;
#define STORE(v) (v)
#else
typedef uint16_t out_t;
#define STORE(v) f2bf(v)
#endif

int int4_cpu_kn(const uint8_t *packed, const uint16_t *sz, out_t *out, int64_t n, int64_t k,
                int64_t groups, int64_t k0, int64_t k1) {
    int64_t group = k / groups, full = n / 64 * 64, blocks = n / 64, rest = n - full;
    float *s = malloc(2 * n * sizeof(float));
    if (!s) return 1;
    float *z = s + n;
    int64_t loaded = -1;
    for (int64_t col = k0; col < k1; ++col) {
        int64_t g = col / group;
        if (g != loaded) {
            const uint16_t *t = sz + g * n * 2;
            for (int64_t i = 0; i < n; ++i) {
                float sc = bf2f(t[2 * i]), zt = bf2f(t[2 * i + 1]);
                s[i] = sc;
                z[i] = sc != 0.0f ? 8.0f - nearbyintf(zt / sc) : 0.0f;
            }
            loaded = g;
        }
        out_t *o = out + col * n;
        for (int64_t b = 0; b < blocks; ++b) {
            const uint8_t *p = packed + (b * k + col) * 32;
            const int64_t lo = b * 64, hi = lo + 32;
            for (int c = 0; c < 32; ++c) {
                o[lo + c] = STORE(((float)(p[c] & 15) - z[lo + c]) * s[lo + c]);
                o[hi + c] = STORE(((float)(p[c] >> 4) - z[hi + c]) * s[hi + c]);
            }
        }
        if (rest) {
            const uint8_t *p = packed + full * k / 2 + col * (rest / 2);
            for (int64_t j = 0; j < rest / 2; ++j) {
                int64_t r = full + 2 * j;
                o[r] = STORE(((float)(p[j] & 15) - z[r]) * s[r]);
                o[r + 1] = STORE(((float)(p[j] >> 4) - z[r + 1]) * s[r + 1]);
            }
        }
    }
    free(s);
    return 0;
}
