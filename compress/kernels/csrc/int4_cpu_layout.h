/* One code of the cpu_int4 layout (compress/formats/int4_layout.py): byte (b, c, j) of a full 64-row block holds
 * rows 64b + j (low nibble) and 64b + 32 + j (high) of column c; a last partial block of N mod 64 rows stores
 * rows 2j (low) and 2j + 1 (high) in byte (c, j). For the loops without intrinsics. */
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
