// The C kernels as torch operators (compress::int4_cpu_kn, int8_unpack, int4_gemv, int8_gemv; the GEMVs with fp32
// sums of bf16 x, or with `q8` integer sums of x rounded to int8 blocks).
//
// Why C++ and not ctypes behind a Python op: a decode step of SmolLM2 makes ~210 of these calls, and the
// Python op cost ~8 µs a call against ~2 µs through the dispatcher straight into C++; and at::parallel_for
// splits a call over torch's own intra-op threads (set_num_threads) where a Python thread pool cost ~20 µs.
// Each op splits its rows (GEMV: 64-row blocks) or columns (unpack) only past `min_split` weights, below
// which one thread is faster than waking the others.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cstdint>
#include <optional>

extern "C" {
int int4_cpu_kn(const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t n, int64_t k, int64_t groups,
                int64_t k0, int64_t k1);
int int4_cpu_kn_f32(const uint8_t *packed, const uint16_t *sz, float *out, int64_t n, int64_t k, int64_t groups,
                    int64_t k0, int64_t k1);
int int4_gemv(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t m, int64_t n,
              int64_t k, int64_t groups, int64_t r0, int64_t r1);
int int4_gemv_generic(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t m,
                      int64_t n, int64_t k, int64_t groups, int64_t r0, int64_t r1);
int int8_cpu_unpack(const int8_t *q, const uint16_t *scales, void *out, int64_t k, int64_t r0, int64_t r1,
                    int out_fp32);
int int8_gemv(const uint16_t *x, const int8_t *q, const uint16_t *scales, uint16_t *out, int64_t m, int64_t n,
              int64_t k, int64_t r0, int64_t r1);
int int8_gemv_generic(const uint16_t *x, const int8_t *q, const uint16_t *scales, uint16_t *out, int64_t m,
                      int64_t n, int64_t k, int64_t r0, int64_t r1);
int int4_gemv_q8(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t m, int64_t n,
                 int64_t k, int64_t groups, int64_t r0, int64_t r1);
int int4_gemv_q8_generic(const uint16_t *x, const uint8_t *packed, const uint16_t *sz, uint16_t *out, int64_t m,
                         int64_t n, int64_t k, int64_t groups, int64_t r0, int64_t r1);
int int8_gemv_q8(const uint16_t *x, const int8_t *q, const uint16_t *scales, uint16_t *out, int64_t m, int64_t n,
                 int64_t k, int64_t r0, int64_t r1);
int int8_gemv_q8_generic(const uint16_t *x, const int8_t *q, const uint16_t *scales, uint16_t *out, int64_t m,
                         int64_t n, int64_t k, int64_t r0, int64_t r1);
int attn_decode(const void *q, const void *k, const void *v, const uint8_t *mask, void *out, int64_t hkv, int64_t r,
                int64_t l, int64_t d, float scale, int bf16, int64_t u0, int64_t u1);
}

namespace {

template <typename T> const T *in(const at::Tensor &t) { return reinterpret_cast<const T *>(t.const_data_ptr()); }
template <typename T> T *out(at::Tensor &t) { return reinterpret_cast<T *>(t.mutable_data_ptr()); }

// f(a, b) on [0, size) in pieces of whole `unit`s, over torch's threads once the work passes min_split weights
// (`per_unit` weights a unit); a kernel that returns non-zero ran out of scratch memory.
template <typename F>
void split(int64_t size, int64_t unit, int64_t per_unit, int64_t min_split, const char *name, F f) {
    const int64_t units = (size + unit - 1) / unit;
    const int64_t grain = std::max<int64_t>(1, min_split / std::max<int64_t>(1, per_unit * unit));
    std::atomic<bool> failed{false};
    at::parallel_for(0, units, grain, [&](int64_t a, int64_t b) {
        if (f(a * unit, std::min(size, b * unit))) failed = true;
    });
    TORCH_CHECK(!failed, name, ": no memory for its scratch");
}

void check(const at::Tensor &t, at::ScalarType dtype, const char *what) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous(), what,
                ": expected a contiguous CPU tensor of ", dtype, ", got ", t.scalar_type());
}

at::Tensor int4_cpu_kn_op(const at::Tensor &packed, const at::Tensor &sz, int64_t n, int64_t k, int64_t min_split,
                          bool fp32) {
    check(packed, at::kByte, "int4_cpu_kn packed");
    check(sz, at::kBFloat16, "int4_cpu_kn sz");
    auto wt = at::empty({k, n}, packed.options().dtype(fp32 ? at::kFloat : at::kBFloat16));
    split(k, 1, n, min_split, "int4_cpu_kn", [&](int64_t a, int64_t b) {
        return fp32 ? int4_cpu_kn_f32(in<uint8_t>(packed), in<uint16_t>(sz), out<float>(wt), n, k, sz.size(0), a, b)
                    : int4_cpu_kn(in<uint8_t>(packed), in<uint16_t>(sz), out<uint16_t>(wt), n, k, sz.size(0), a, b);
    });
    return wt;
}

at::Tensor int8_unpack_op(const at::Tensor &q, const at::Tensor &scales, int64_t min_split, bool fp32) {
    check(q, at::kChar, "int8_unpack q");
    check(scales, at::kBFloat16, "int8_unpack scales");
    const int64_t n = q.size(0), k = q.size(1);
    auto w = at::empty({n, k}, q.options().dtype(fp32 ? at::kFloat : at::kBFloat16));
    split(n, 1, k, min_split, "int8_unpack", [&](int64_t a, int64_t b) {
        return int8_cpu_unpack(in<int8_t>(q), in<uint16_t>(scales), w.mutable_data_ptr(), k, a, b, fp32);
    });
    return w;
}

// q8: x rounded to int8 blocks of 32 (gemv_q8_cpu.c), whose K (and int4 group) must be multiples of 32
at::Tensor int4_gemv_op(const at::Tensor &x, const at::Tensor &packed, const at::Tensor &sz, int64_t n,
                        int64_t min_split, bool generic, bool q8) {
    check(x, at::kBFloat16, "int4_gemv x");
    check(packed, at::kByte, "int4_gemv packed");
    check(sz, at::kBFloat16, "int4_gemv sz");
    const int64_t m = x.size(0), k = x.size(1);
    auto y = at::empty({m, n}, x.options());
    TORCH_CHECK(!q8 || (k % 32 == 0 && (k / sz.size(0)) % 32 == 0), "int4_gemv q8: K and the group must be multiples of 32");
    auto kernel = q8 ? (generic ? int4_gemv_q8_generic : int4_gemv_q8) : (generic ? int4_gemv_generic : int4_gemv);
    split(n, 64, k, min_split, "int4_gemv", [&](int64_t a, int64_t b) {
        return kernel(in<uint16_t>(x), in<uint8_t>(packed), in<uint16_t>(sz), out<uint16_t>(y), m, n, k, sz.size(0), a, b);
    });
    return y;
}

at::Tensor int8_gemv_op(const at::Tensor &x, const at::Tensor &q, const at::Tensor &scales, int64_t min_split,
                        bool generic, bool q8) {
    check(x, at::kBFloat16, "int8_gemv x");
    check(q, at::kChar, "int8_gemv q");
    check(scales, at::kBFloat16, "int8_gemv scales");
    const int64_t m = x.size(0), k = x.size(1), n = q.size(0);
    auto y = at::empty({m, n}, x.options());
    TORCH_CHECK(!q8 || k % 32 == 0, "int8_gemv q8: K must be a multiple of 32");
    auto kernel = q8 ? (generic ? int8_gemv_q8_generic : int8_gemv_q8) : (generic ? int8_gemv_generic : int8_gemv);
    split(n, 64, k, min_split, "int8_gemv", [&](int64_t a, int64_t b) {
        return kernel(in<uint16_t>(x), in<int8_t>(q), in<uint16_t>(scales), out<uint16_t>(y), m, n, k, a, b);
    });
    return y;
}

// one query token per (batch, KV head) unit: q [B, Hkv, R, D], k and v [B, Hkv, L, D], mask [B, L] bool or none
at::Tensor attn_decode_op(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                          const std::optional<at::Tensor> &mask, double scale, int64_t min_split) {
    const auto dtype = q.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "attn_decode: fp32 or bf16, got ", dtype);
    check(q, dtype, "attn_decode q");
    check(k, dtype, "attn_decode k");
    check(v, dtype, "attn_decode v");
    TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && k.sizes() == v.sizes() && q.size(0) == k.size(0) &&
                q.size(1) == k.size(1) && q.size(3) == k.size(3) && q.size(2) <= 16, "attn_decode: shapes");
    const int64_t b = q.size(0), hkv = q.size(1), r = q.size(2), l = k.size(2), d = q.size(3);
    const uint8_t *m = nullptr;
    if (mask) {
        check(*mask, at::kBool, "attn_decode mask");
        TORCH_CHECK(mask->numel() == b * l, "attn_decode mask: [B, L] expected");
        m = in<uint8_t>(*mask);
    }
    auto y = at::empty_like(q);
    split(b * hkv, 1, 2 * r * l * d, min_split, "attn_decode", [&](int64_t a, int64_t e) {
        return attn_decode(q.const_data_ptr(), k.const_data_ptr(), v.const_data_ptr(), m, y.mutable_data_ptr(), hkv, r,
                           l, d, (float)scale, dtype == at::kBFloat16, a, e);
    });
    return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(compress, m) {
    m.def("int4_cpu_kn(Tensor packed, Tensor sz, int n, int k, int min_split, bool fp32=False) -> Tensor");
    m.def("int8_unpack(Tensor q, Tensor scales, int min_split, bool fp32=False) -> Tensor");
    m.def("int4_gemv(Tensor x, Tensor packed, Tensor sz, int n, int min_split, bool generic=False, bool q8=False) -> Tensor");
    m.def("int8_gemv(Tensor x, Tensor q, Tensor scales, int min_split, bool generic=False, bool q8=False) -> Tensor");
    m.def("attn_decode(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, int min_split) -> Tensor");
}

TORCH_LIBRARY_IMPL(compress, CPU, m) {
    m.impl("int4_cpu_kn", &int4_cpu_kn_op);
    m.impl("int8_unpack", &int8_unpack_op);
    m.impl("int4_gemv", &int4_gemv_op);
    m.impl("int8_gemv", &int8_gemv_op);
    m.impl("attn_decode", &attn_decode_op);
}
