/* Dequantize per-channel int8 weights (codes q [N, K], one bf16 scale per row) into W [N, K], for the prefill matmul.
 *
 * Why: the int8 prefill path dequantized through an Inductor-compiled loop (0.5 ms per 1536 x 576 weight on two
 * AVX2 threads, plus a dynamo frame per call), about a tenth of the fp32 matmul it feeds. This loop streams the
 * codes once and the compiler vectorizes it. w = q·s is exact in fp32 (an int8 times a bf16 has at most 16
 * significant bits); the bf16 output rounds it once (round to nearest even), the dequantizing path's value.
 */
#include <stdint.h>

#include "bf16.h"

/* Rows r0..r1 of W in fp32 (out_fp32 != 0) or bf16. Returns 0 (the signature of the other kernels). */
int int8_cpu_unpack(const int8_t *q, const uint16_t *scales, void *out, int64_t k, int64_t r0, int64_t r1,
                    int out_fp32) {
    for (int64_t r = r0; r < r1; ++r) {
        const float s = bf2f(scales[r]);
        const int8_t *row = q + r * k;
        if (out_fp32) {
            float *o = (float *)out + r * k;
            for (int64_t c = 0; c < k; ++c) o[c] = (float)row[c] * s;
        } else {
            uint16_t *o = (uint16_t *)out + r * k;
            for (int64_t c = 0; c < k; ++c) o[c] = f2bf((float)row[c] * s);
        }
    }
    return 0;
}
