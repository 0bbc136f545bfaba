// fo-pooling ops: schemas (TORCH_LIBRARY) and the CPU kernels.
//
// CPU strategy: the B*H columns are split into one contiguous range per
// thread (at::parallel_for).  Each thread walks time and, per step, runs a
// contiguous inner loop over its columns (per batch entry, over H), keeping
// the recurrent state in a thread-local buffer.  For the plain layouts the
// columns of one step are contiguous in memory, so every thread streams
// long contiguous runs of f, z and c -- the loop is memory bound and the
// compiler vectorises it.
#include <Python.h>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fo_pool.h"

// An empty module: importing qrnn_lm._C runs the static op registrations
// below; the ops are then reached through torch.ops.qrnn_lm.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

// The hot loops are compiled twice on x86 with GCC/Clang: for baseline
// x86-64 (SSE2) and with AVX2+FMA, picked per call from the CPU's features
// (see use_avx2).  The extension is built for baseline x86-64 to stay
// portable, which alone leaves the fused kernels 4-wide and without FMA (~4x
// slower than AVX2).  Everything below the range drivers is always_inline so
// that it is compiled into each version with that version's ISA.
#if defined(__GNUC__) || defined(__clang__)
#define QRNN_LM_INLINE inline __attribute__((always_inline))
#else
#define QRNN_LM_INLINE inline
#endif
// -DQRNN_LM_NO_MULTIVERSION builds the baseline version only (as on other
// CPUs and compilers).
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(QRNN_LM_NO_MULTIVERSION)
#define QRNN_LM_X86_AVX2 1
#else
#define QRNN_LM_X86_AVX2 0
#endif

namespace qrnn_lm {
namespace {

// exp for float that GCC can vectorise (std::exp is a scalar libm call,
// which makes the fused kernels ~20x slower than the plain ones): Cephes'
// range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r,
// 2^n built in the exponent bits.  Max relative error ~2 ulp on [-87, 0].
// Only called with x <= 0 (see Acts), so only the lower clamp is needed.
// Needs -fno-trapping-math (set by setup.py) for GCC to if-convert the clamp.
QRNN_LM_INLINE float vexp_neg(float x) {
  x = std::max(x, -87.0f);
  const float t = x * 1.44269504088896341f;
  // round to nearest without a branch: adding 1.5 * 2^23 drops the fraction
  const float fn = (t + 12582912.0f) - 12582912.0f;
  const int32_t n = static_cast<int32_t>(fn);
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
QRNN_LM_INLINE double vexp_neg(double x) { return std::exp(x); }


// The activations of one column's gate pre-activations (a, b, c) = (z, f, o),
// from e = exp(-|x|) in (0, 1] and d = 1 + e in (1, 2]:
//   sigmoid(x) = 1/d if x >= 0 else e/d,   1 - sigmoid(x) = e/d or 1/d,
//   tanh(x) = sign(x) (1 - E)/(1 + E),     1 - tanh(x)^2 = 4E/(1 + E)^2,
// with E = exp(-2|x|).  A gate and its complement are both plain quotients
// (no 1 - s cancellation), and because every d lies in (1, 2] the two or
// three reciprocals come from ONE division of their product (at most 8, so
// no overflow): divisions, not the exps, bounded the old 1/(1 + e) form.
// Max error against float64 ~3 ulp (relative for the sigmoids).  The signs
// are applied without ?: (copysign, and 0/1 weights, which are exact): with
// half/bfloat16 loads and stores GCC gave up if-converting the selects, so
// the loops did not vectorise.
template <int G, typename T>
struct Acts {
  T z, f, f1, o, o1, dz;  // tanh, sigmoid(f), 1-sigmoid(f), sigmoid(o), 1-sigmoid(o), 1-tanh^2
  QRNN_LM_INLINE Acts(T a, T b, T c) {
    const T ea = vexp_neg(T(-2) * std::abs(a)), eb = vexp_neg(-std::abs(b));
    const T da = T(1) + ea, db = T(1) + eb;
    const T dab = da * db;
    T rab, ec = T(0), rc = T(0);  // rab = 1/(da db), rc = 1/dc
    if constexpr (G == 3) {
      ec = vexp_neg(-std::abs(c));
      const T dc = T(1) + ec;
      const T inv = T(1) / (dab * dc);
      rab = inv * dc;
      rc = inv * dab;
    } else {
      rab = T(1) / dab;
    }
    const T ra = rab * db, rb = rab * da;
    z = std::copysign((T(1) - ea) * ra, a);
    dz = T(4) * ea * ra * ra;
    const T ebr = eb * rb, mb = static_cast<T>(b < T(0));
    f = mb * ebr + (T(1) - mb) * rb;
    f1 = mb * rb + (T(1) - mb) * ebr;
    if constexpr (G == 3) {
      const T ecr = ec * rc, mc = static_cast<T>(c < T(0));
      o = mc * ecr + (T(1) - mc) * rc;
      o1 = mc * rc + (T(1) - mc) * ecr;
    } else {
      o = o1 = T(0);
    }
  }
};

// ---------------------------------------------------------------------------
// Inner loops over n contiguous columns of one batch entry at one step.
// ---------------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
QRNN_LM_INLINE void plain_fwd(const scalar_t* __restrict__ f, const scalar_t* __restrict__ z,
                      scalar_t* __restrict__ c, acc_t* __restrict__ st, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const acc_t fv = static_cast<acc_t>(f[j]);
    const acc_t s = fv * st[j] + (acc_t(1) - fv) * static_cast<acc_t>(z[j]);
    st[j] = s;
    c[j] = static_cast<scalar_t>(s);
  }
}

template <typename scalar_t, typename acc_t>
QRNN_LM_INLINE void plain_bwd(const scalar_t* __restrict__ gout, const scalar_t* __restrict__ f,
                      const scalar_t* __restrict__ z, const scalar_t* __restrict__ prev,
                      scalar_t* __restrict__ gf, scalar_t* __restrict__ gz,
                      acc_t* __restrict__ g, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const acc_t gc = g[j] + static_cast<acc_t>(gout[j]);
    const acc_t fv = static_cast<acc_t>(f[j]);
    const acc_t pv = static_cast<acc_t>(prev[j]);
    gf[j] = static_cast<scalar_t>(gc * (pv - static_cast<acc_t>(z[j])));
    gz[j] = static_cast<scalar_t>(gc * (acc_t(1) - fv));
    g[j] = gc * fv;
  }
}

// gates row pointer already offset by h; chunks are H apart.
template <int G, typename scalar_t, typename acc_t>
QRNN_LM_INLINE void fused_fwd(const scalar_t* __restrict__ gates, int64_t H, scalar_t* __restrict__ c,
                      scalar_t* __restrict__ h, acc_t* __restrict__ st, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const Acts<G, acc_t> a(static_cast<acc_t>(gates[j]), static_cast<acc_t>(gates[H + j]),
                           G == 3 ? static_cast<acc_t>(gates[2 * H + j]) : acc_t(0));
    const acc_t s = a.f * st[j] + a.f1 * a.z;
    st[j] = s;
    c[j] = static_cast<scalar_t>(s);
    if constexpr (G == 3) h[j] = static_cast<scalar_t>(a.o * s);
  }
}

template <int G, typename scalar_t, typename acc_t>
QRNN_LM_INLINE void fused_bwd_loop(const scalar_t* __restrict__ gh,
                                   const scalar_t* __restrict__ gates, int64_t H,
                                   const scalar_t* __restrict__ c,
                                   const scalar_t* __restrict__ prev, scalar_t* __restrict__ gg,
                                   acc_t* __restrict__ g, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const Acts<G, acc_t> a(static_cast<acc_t>(gates[j]), static_cast<acc_t>(gates[H + j]),
                           G == 3 ? static_cast<acc_t>(gates[2 * H + j]) : acc_t(0));
    const acc_t ghv = static_cast<acc_t>(gh[j]);
    acc_t gc;
    if constexpr (G == 3) {
      gc = g[j] + ghv * a.o;
      gg[2 * H + j] = static_cast<scalar_t>(ghv * static_cast<acc_t>(c[j]) * a.o * a.o1);
    } else {
      gc = g[j] + ghv;
    }
    const acc_t pv = static_cast<acc_t>(prev[j]);
    gg[j] = static_cast<scalar_t>(gc * a.f1 * a.dz);
    gg[H + j] = static_cast<scalar_t>(gc * (pv - a.z) * a.f * a.f1);
    g[j] = gc * a.f;
  }
}

// With half/bfloat16 GCC does not vectorise the loop above when it has an
// output gate ("control flow in loop": too many conversions to if-convert),
// so those types go through acc_t buffers of kChunk columns: convert in,
// run the acc_t loop, convert out -- each a loop GCC vectorises.
template <int G, typename scalar_t, typename acc_t>
QRNN_LM_INLINE void fused_bwd(const scalar_t* __restrict__ gh, const scalar_t* __restrict__ gates,
                              int64_t H, const scalar_t* __restrict__ c,
                              const scalar_t* __restrict__ prev, scalar_t* __restrict__ gg,
                              acc_t* __restrict__ g, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, acc_t> || G != 3) {
    fused_bwd_loop<G>(gh, gates, H, c, prev, gg, g, n);
  } else {
    constexpr int64_t kChunk = 128;
    alignas(64) acc_t ghf[kChunk], gatesf[3 * kChunk], cf[kChunk], prevf[kChunk],
        ggf[3 * kChunk];
    for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
      const int64_t m = std::min(kChunk, n - j0);
      for (int64_t j = 0; j < m; ++j) {
        ghf[j] = static_cast<acc_t>(gh[j0 + j]);
        cf[j] = static_cast<acc_t>(c[j0 + j]);
        prevf[j] = static_cast<acc_t>(prev[j0 + j]);
      }
      for (int q = 0; q < 3; ++q)
        for (int64_t j = 0; j < m; ++j)
          gatesf[q * kChunk + j] = static_cast<acc_t>(gates[q * H + j0 + j]);
      fused_bwd_loop<G>(ghf, gatesf, kChunk, cf, prevf, ggf, g + j0, m);
      for (int q = 0; q < 3; ++q)
        for (int64_t j = 0; j < m; ++j)
          gg[q * H + j0 + j] = static_cast<scalar_t>(ggf[q * kChunk + j]);
    }
  }
}

// ---------------------------------------------------------------------------
// Drivers: one thread per contiguous column range, time loop outside.
// ---------------------------------------------------------------------------

constexpr int64_t kGrain = 2048;  // columns; below this one thread is faster

inline int64_t row_of(const FoPoolParams& p, int64_t t, int64_t b) {
  return p.packed ? p.offsets[t] + b : t * p.B + b;
}

template <typename scalar_t, int G>
QRNN_LM_INLINE void forward_range(const FoPoolParams& p, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H, T = p.T;
  const int64_t W = G == 0 ? H : G * H;  // input row width
  const auto* c0 = static_cast<const scalar_t*>(p.c0);
  auto* cn = static_cast<scalar_t*>(p.cn);
  auto* c = static_cast<scalar_t*>(p.c);
  auto* hout = static_cast<scalar_t*>(p.h);
  std::vector<acc_t> state(end - begin);
  for (int64_t k = begin; k < end; ++k)
    state[k - begin] = c0 ? static_cast<acc_t>(c0[k]) : acc_t(0);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = p.reverse ? T - 1 - s : s;
    for (int64_t k = begin; k < end;) {
      const int64_t b = k / H, h = k - b * H, n = std::min(end, (b + 1) * H) - k;
      acc_t* st = state.data() + (k - begin);
      k += n;
      const int64_t L = p.lengths ? p.lengths[b] : T;
      if (t < L) {
        const int64_t row = row_of(p, t, b);
        if constexpr (G == 0) {
          plain_fwd(static_cast<const scalar_t*>(p.f) + row * H + h,
                    static_cast<const scalar_t*>(p.z) + row * H + h, c + row * H + h, st, n);
        } else {
          fused_fwd<G>(static_cast<const scalar_t*>(p.gates) + row * W + h, H,
                       c + row * H + h, G == 3 ? hout + row * H + h : nullptr, st, n);
        }
      } else if (!p.packed) {  // padding: output 0, state kept
        const int64_t row = t * p.B + b;
        std::fill_n(c + row * H + h, n, scalar_t(0));
        if (G == 3) std::fill_n(hout + row * H + h, n, scalar_t(0));
      }
    }
  }
  for (int64_t k = begin; k < end; ++k) cn[k] = static_cast<scalar_t>(state[k - begin]);
}

template <typename scalar_t, int G>
QRNN_LM_INLINE void backward_range(const FoPoolParams& p, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H, T = p.T;
  const int64_t W = G == 0 ? H : G * H;
  const auto* c0 = static_cast<const scalar_t*>(p.c0);
  const auto* c = static_cast<const scalar_t*>(p.c);
  const auto* gout = static_cast<const scalar_t*>(p.grad_out);
  const auto* gcn = static_cast<const scalar_t*>(p.grad_cn);
  auto* gc0 = static_cast<scalar_t*>(p.grad_c0);
  std::vector<acc_t> grad(end - begin);
  // the state before the first step when c0 is None: a row of zeros keeps
  // the inner loops branch-free (and so vectorised)
  std::vector<scalar_t> zero_row(c0 ? 0 : H, scalar_t(0));
  for (int64_t k = begin; k < end; ++k) grad[k - begin] = static_cast<acc_t>(gcn[k]);
  // walk time in the opposite order of the forward
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = p.reverse ? s : T - 1 - s;
    const int64_t tp = p.reverse ? t + 1 : t - 1;  // the forward's previous step
    for (int64_t k = begin; k < end;) {
      const int64_t b = k / H, h = k - b * H, n = std::min(end, (b + 1) * H) - k;
      acc_t* g = grad.data() + (k - begin);
      k += n;
      const int64_t L = p.lengths ? p.lengths[b] : T;
      if (t < L) {
        const int64_t row = row_of(p, t, b);
        const scalar_t* prev = (tp >= 0 && tp < L) ? c + row_of(p, tp, b) * H + h
                                                   : (c0 ? c0 + b * H + h : zero_row.data() + h);
        if constexpr (G == 0) {
          plain_bwd(gout + row * H + h, static_cast<const scalar_t*>(p.f) + row * H + h,
                    static_cast<const scalar_t*>(p.z) + row * H + h, prev,
                    static_cast<scalar_t*>(p.grad_f) + row * H + h,
                    static_cast<scalar_t*>(p.grad_z) + row * H + h, g, n);
        } else {
          fused_bwd<G>(gout + row * H + h, static_cast<const scalar_t*>(p.gates) + row * W + h,
                       H, c + row * H + h, prev,
                       static_cast<scalar_t*>(p.grad_gates) + row * W + h, g, n);
        }
      } else if (!p.packed) {  // padding: no gradient
        const int64_t row = t * p.B + b;
        if constexpr (G == 0) {
          std::fill_n(static_cast<scalar_t*>(p.grad_f) + row * H + h, n, scalar_t(0));
          std::fill_n(static_cast<scalar_t*>(p.grad_z) + row * H + h, n, scalar_t(0));
        } else {
          for (int q = 0; q < G; ++q)
            std::fill_n(static_cast<scalar_t*>(p.grad_gates) + row * W + q * H + h, n,
                        scalar_t(0));
        }
      }
    }
  }
  for (int64_t k = begin; k < end; ++k) gc0[k] = static_cast<scalar_t>(grad[k - begin]);
}

// One version per ISA of each column-range driver (see QRNN_LM_X86_AVX2).
template <typename scalar_t, int G, bool backward>
void range_default(const FoPoolParams& p, int64_t begin, int64_t end) {
  if constexpr (backward) backward_range<scalar_t, G>(p, begin, end);
  else forward_range<scalar_t, G>(p, begin, end);
}

#if QRNN_LM_X86_AVX2
template <typename scalar_t, int G, bool backward>
__attribute__((target("avx2,fma"))) void range_avx2(const FoPoolParams& p, int64_t begin,
                                                   int64_t end) {
  if constexpr (backward) backward_range<scalar_t, G>(p, begin, end);
  else forward_range<scalar_t, G>(p, begin, end);
}

// Whether to run the AVX2+FMA versions: the CPU (and OS) must support them,
// and QRNN_LM_CPU_BASELINE=1 forces the baseline ones (read per call, so
// tests can cover both versions in one process; a getenv is ~100 ns).
bool use_avx2() {
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  if (!supported) return false;
  const char* env = std::getenv("QRNN_LM_CPU_BASELINE");
  return env == nullptr || env[0] == '\0' || (env[0] == '0' && env[1] == '\0');
}
#endif

template <typename scalar_t, int G, bool backward>
void run_cpu(const FoPoolParams& p) {
#if QRNN_LM_X86_AVX2
  const bool avx2 = use_avx2();
#endif
  at::parallel_for(0, p.B * p.H, kGrain, [&](int64_t begin, int64_t end) {
#if QRNN_LM_X86_AVX2
    if (avx2) return range_avx2<scalar_t, G, backward>(p, begin, end);
#endif
    range_default<scalar_t, G, backward>(p, begin, end);
  });
}

void launch_cpu(const FoPoolParams& p, at::ScalarType dtype, bool backward) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fo_pool_cpu", [&] {
    if (backward) {
      if (p.G == 0) run_cpu<scalar_t, 0, true>(p);
      else if (p.G == 2) run_cpu<scalar_t, 2, true>(p);
      else run_cpu<scalar_t, 3, true>(p);
    } else {
      if (p.G == 0) run_cpu<scalar_t, 0, false>(p);
      else if (p.G == 2) run_cpu<scalar_t, 2, false>(p);
      else run_cpu<scalar_t, 3, false>(p);
    }
  });
}

// The CPU op implementations (DeviceOps in fo_pool.h).
struct Cpu {
  static constexpr c10::DeviceType type = c10::DeviceType::CPU;
  static constexpr const char* where = "on the CPU";
  static void launch(const FoPoolParams& p, at::ScalarType dtype, bool backward) {
    launch_cpu(p, dtype, backward);
  }
  struct Guard {  // nothing to select on the CPU
    explicit Guard(const c10::Device&) {}
  };
};

}  // namespace

// Schemas.  Forward ops return every tensor the backward needs (c for the
// fused ops; without an output gate h *is* c and the second output is empty).
TORCH_LIBRARY(qrnn_lm, m) {
  m.def("fo_pool(Tensor f, Tensor z, Tensor? c0, Tensor? lengths, bool reverse) "
        "-> (Tensor, Tensor)");
  m.def("fo_pool_backward(Tensor grad_c, Tensor grad_c_n, Tensor f, Tensor z, Tensor c, "
        "Tensor? c0, Tensor? lengths, bool reverse) -> (Tensor, Tensor, Tensor)");
  m.def("fo_pool_packed(Tensor f, Tensor z, Tensor batch_sizes, Tensor? c0, bool reverse) "
        "-> (Tensor, Tensor)");
  m.def("fo_pool_packed_backward(Tensor grad_c, Tensor grad_c_n, Tensor f, Tensor z, "
        "Tensor c, Tensor batch_sizes, Tensor? c0, bool reverse) -> (Tensor, Tensor, Tensor)");
  m.def("fo_pool_fused(Tensor gates, Tensor? c0, Tensor? lengths, bool output_gate, "
        "bool reverse) -> (Tensor, Tensor, Tensor)");
  m.def("fo_pool_fused_backward(Tensor grad_h, Tensor grad_c_n, Tensor gates, Tensor c, "
        "Tensor? c0, Tensor? lengths, bool output_gate, bool reverse) -> (Tensor, Tensor)");
  m.def("fo_pool_fused_packed(Tensor gates, Tensor batch_sizes, Tensor? c0, "
        "bool output_gate, bool reverse) -> (Tensor, Tensor, Tensor)");
  m.def("fo_pool_fused_packed_backward(Tensor grad_h, Tensor grad_c_n, Tensor gates, "
        "Tensor c, Tensor batch_sizes, Tensor? c0, bool output_gate, bool reverse) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(qrnn_lm, CPU, m) { register_ops<Cpu>(m); }

}  // namespace qrnn_lm
