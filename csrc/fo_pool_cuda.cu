// fo-pooling CUDA kernels and their TORCH_LIBRARY_IMPL(qrnn_lm, CUDA) registration.
//
// One thread per (b, h) column loops over time with the state in a register.
// Adjacent threads own adjacent h, so every load and store of a step is
// coalesced.  The time loop is unrolled by kUnroll with all loads of a chunk
// issued before the dependent arithmetic, so each thread keeps several
// memory requests in flight (the recurrence only serialises the FMAs).
// half / bfloat16 are computed in float (at::opmath_type).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "fo_pool.h"

namespace qrnn_lm {
namespace {

constexpr int kThreads = 128;
constexpr int kUnroll = 4;

template <typename T>
__device__ __forceinline__ T dsigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

__device__ __forceinline__ int64_t row_of(const FoPoolParams& p, int64_t t, int64_t b) {
  return p.packed ? p.offsets[t] + b : t * p.B + b;
}

// Time step of the k-th update of a column with L steps.
__device__ __forceinline__ int64_t step_time(const FoPoolParams& p, int64_t k, int64_t L) {
  return p.reverse ? L - 1 - k : k;
}

template <typename scalar_t, int G>
__global__ void __launch_bounds__(kThreads) fo_pool_fwd_kernel(const FoPoolParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (col >= p.B * p.H) return;
  const int64_t H = p.H, T = p.T;
  const int64_t W = G == 0 ? H : G * H;
  const int64_t b = col / H, h = col - b * H;
  int64_t L = p.lengths ? p.lengths[b] : T;
  L = L < 0 ? 0 : (L > T ? T : L);  // validated on the host; never read out of bounds
  const auto* __restrict__ f = static_cast<const scalar_t*>(G == 0 ? p.f : p.gates);
  const auto* __restrict__ z = static_cast<const scalar_t*>(p.z);
  auto* __restrict__ c = static_cast<scalar_t*>(p.c);
  auto* __restrict__ hout = static_cast<scalar_t*>(p.h);
  acc_t s = p.c0 ? static_cast<acc_t>(static_cast<const scalar_t*>(p.c0)[col]) : acc_t(0);

  int64_t k = 0;
  for (; k < L; k += kUnroll) {
    acc_t fv[kUnroll], zv[kUnroll], ov[kUnroll];
    int64_t rows[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (k + u < L) {
        rows[u] = row_of(p, step_time(p, k + u, L), b);
        if constexpr (G == 0) {
          fv[u] = static_cast<acc_t>(f[rows[u] * W + h]);
          zv[u] = static_cast<acc_t>(z[rows[u] * W + h]);
        } else {
          zv[u] = static_cast<acc_t>(f[rows[u] * W + h]);
          fv[u] = static_cast<acc_t>(f[rows[u] * W + H + h]);
          if constexpr (G == 3) ov[u] = static_cast<acc_t>(f[rows[u] * W + 2 * H + h]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (k + u < L) {
        acc_t fu = fv[u], zu = zv[u];
        if constexpr (G != 0) {
          zu = tanh(zu);
          fu = dsigmoid(fu);
        }
        s = fu * s + (acc_t(1) - fu) * zu;
        c[rows[u] * H + h] = static_cast<scalar_t>(s);
        if constexpr (G == 3) hout[rows[u] * H + h] = static_cast<scalar_t>(dsigmoid(ov[u]) * s);
      }
    }
  }
  if (!p.packed) {  // padding positions are 0
    for (int64_t t = L; t < T; ++t) {
      const int64_t r = t * p.B + b;
      c[r * H + h] = scalar_t(0);
      if constexpr (G == 3) hout[r * H + h] = scalar_t(0);
    }
  }
  static_cast<scalar_t*>(p.cn)[col] = static_cast<scalar_t>(s);
}

template <typename scalar_t, int G>
__global__ void __launch_bounds__(kThreads) fo_pool_bwd_kernel(const FoPoolParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (col >= p.B * p.H) return;
  const int64_t H = p.H, T = p.T;
  const int64_t W = G == 0 ? H : G * H;
  const int64_t b = col / H, h = col - b * H;
  int64_t L = p.lengths ? p.lengths[b] : T;
  L = L < 0 ? 0 : (L > T ? T : L);
  const auto* __restrict__ in = static_cast<const scalar_t*>(G == 0 ? p.f : p.gates);
  const auto* __restrict__ z = static_cast<const scalar_t*>(p.z);
  const auto* __restrict__ c = static_cast<const scalar_t*>(p.c);
  const auto* __restrict__ gout = static_cast<const scalar_t*>(p.grad_out);
  auto* __restrict__ gf = static_cast<scalar_t*>(G == 0 ? p.grad_f : p.grad_gates);
  auto* __restrict__ gz = static_cast<scalar_t*>(p.grad_z);
  const acc_t c0v =
      p.c0 ? static_cast<acc_t>(static_cast<const scalar_t*>(p.c0)[col]) : acc_t(0);
  acc_t g = static_cast<acc_t>(static_cast<const scalar_t*>(p.grad_cn)[col]);

  // k counts forward updates; walk them backwards.
  for (int64_t k0 = L - 1; k0 >= 0; k0 -= kUnroll) {
    acc_t fv[kUnroll], zv[kUnroll], ov[kUnroll], pv[kUnroll], cv[kUnroll], gv[kUnroll];
    int64_t rows[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 - u;
      if (k >= 0) {
        rows[u] = row_of(p, step_time(p, k, L), b);
        const int64_t r = rows[u];
        pv[u] = k > 0 ? static_cast<acc_t>(c[row_of(p, step_time(p, k - 1, L), b) * H + h]) : c0v;
        gv[u] = static_cast<acc_t>(gout[r * H + h]);
        if constexpr (G == 0) {
          fv[u] = static_cast<acc_t>(in[r * W + h]);
          zv[u] = static_cast<acc_t>(z[r * W + h]);
        } else {
          zv[u] = static_cast<acc_t>(in[r * W + h]);
          fv[u] = static_cast<acc_t>(in[r * W + H + h]);
          if constexpr (G == 3) {
            ov[u] = static_cast<acc_t>(in[r * W + 2 * H + h]);
            cv[u] = static_cast<acc_t>(c[r * H + h]);
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (k0 - u >= 0) {
        const int64_t r = rows[u];
        if constexpr (G == 0) {
          const acc_t gc = g + gv[u];
          gf[r * W + h] = static_cast<scalar_t>(gc * (pv[u] - zv[u]));
          gz[r * W + h] = static_cast<scalar_t>(gc * (acc_t(1) - fv[u]));
          g = gc * fv[u];
        } else {
          const acc_t zt = tanh(zv[u]);
          const acc_t ft = dsigmoid(fv[u]);
          acc_t gc;
          if constexpr (G == 3) {
            const acc_t ot = dsigmoid(ov[u]);
            gc = g + gv[u] * ot;
            gf[r * W + 2 * H + h] = static_cast<scalar_t>(gv[u] * cv[u] * ot * (acc_t(1) - ot));
          } else {
            gc = g + gv[u];
          }
          gf[r * W + h] = static_cast<scalar_t>(gc * (acc_t(1) - ft) * (acc_t(1) - zt * zt));
          gf[r * W + H + h] = static_cast<scalar_t>(gc * (pv[u] - zt) * ft * (acc_t(1) - ft));
          g = gc * ft;
        }
      }
    }
  }
  if (!p.packed) {  // no gradient reaches padding positions
    for (int64_t t = L; t < T; ++t) {
      const int64_t r = t * p.B + b;
      if constexpr (G == 0) {
        gf[r * W + h] = scalar_t(0);
        gz[r * W + h] = scalar_t(0);
      } else {
#pragma unroll
        for (int q = 0; q < G; ++q) gf[r * W + q * H + h] = scalar_t(0);
      }
    }
  }
  static_cast<scalar_t*>(p.grad_c0)[col] = static_cast<scalar_t>(g);
}

template <typename scalar_t, int G>
void launch_typed(const FoPoolParams& p, bool backward, cudaStream_t stream) {
  const int64_t blocks = (p.B * p.H + kThreads - 1) / kThreads;
  if (backward) {
    fo_pool_bwd_kernel<scalar_t, G><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    fo_pool_fwd_kernel<scalar_t, G><<<blocks, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_cuda(const FoPoolParams& p, at::ScalarType dtype, bool backward) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fo_pool_cuda", [&] {
    if (p.G == 0) launch_typed<scalar_t, 0>(p, backward, stream);
    else if (p.G == 2) launch_typed<scalar_t, 2>(p, backward, stream);
    else launch_typed<scalar_t, 3>(p, backward, stream);
  });
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "qrnn_lm: ", name, " must be a CUDA tensor here, got ", t.device());
}

// ---------------------------------------------------------------------------
// CUDA op implementations: checks, device guard, launch (all in fo_pool.h)
// ---------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> fo_pool_cuda(const at::Tensor& f, const at::Tensor& z,
                                                const std::optional<at::Tensor>& c0,
                                                const std::optional<at::Tensor>& lengths,
                                                bool reverse) {
  check_cuda(f, "f");
  const c10::cuda::CUDAGuard guard(f.device());
  return plain_forward(launch_cuda, f, z, c0, lengths, nullptr, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fo_pool_backward_cuda(
    const at::Tensor& grad_c, const at::Tensor& grad_cn, const at::Tensor& f,
    const at::Tensor& z, const at::Tensor& c, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& lengths, bool reverse) {
  check_cuda(f, "f");
  const c10::cuda::CUDAGuard guard(f.device());
  return plain_backward(launch_cuda, grad_c, grad_cn, f, z, c, c0, lengths, nullptr, reverse);
}

std::tuple<at::Tensor, at::Tensor> fo_pool_packed_cuda(const at::Tensor& f, const at::Tensor& z,
                                                       const at::Tensor& batch_sizes,
                                                       const std::optional<at::Tensor>& c0,
                                                       bool reverse) {
  check_cuda(f, "f");
  const c10::cuda::CUDAGuard guard(f.device());
  return plain_forward(launch_cuda, f, z, c0, std::nullopt, &batch_sizes, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fo_pool_packed_backward_cuda(
    const at::Tensor& grad_c, const at::Tensor& grad_cn, const at::Tensor& f,
    const at::Tensor& z, const at::Tensor& c, const at::Tensor& batch_sizes,
    const std::optional<at::Tensor>& c0, bool reverse) {
  check_cuda(f, "f");
  const c10::cuda::CUDAGuard guard(f.device());
  return plain_backward(launch_cuda, grad_c, grad_cn, f, z, c, c0, std::nullopt, &batch_sizes,
                        reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fo_pool_fused_cuda(
    const at::Tensor& gates, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& lengths, bool output_gate, bool reverse) {
  check_cuda(gates, "gates");
  const c10::cuda::CUDAGuard guard(gates.device());
  return fused_forward(launch_cuda, gates, c0, lengths, nullptr, output_gate, reverse);
}

std::tuple<at::Tensor, at::Tensor> fo_pool_fused_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& grad_cn, const at::Tensor& gates,
    const at::Tensor& c, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& lengths, bool output_gate, bool reverse) {
  check_cuda(gates, "gates");
  const c10::cuda::CUDAGuard guard(gates.device());
  return fused_backward(launch_cuda, grad_h, grad_cn, gates, c, c0, lengths, nullptr,
                        output_gate, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fo_pool_fused_packed_cuda(
    const at::Tensor& gates, const at::Tensor& batch_sizes, const std::optional<at::Tensor>& c0,
    bool output_gate, bool reverse) {
  check_cuda(gates, "gates");
  const c10::cuda::CUDAGuard guard(gates.device());
  return fused_forward(launch_cuda, gates, c0, std::nullopt, &batch_sizes, output_gate, reverse);
}

std::tuple<at::Tensor, at::Tensor> fo_pool_fused_packed_backward_cuda(
    const at::Tensor& grad_h, const at::Tensor& grad_cn, const at::Tensor& gates,
    const at::Tensor& c, const at::Tensor& batch_sizes, const std::optional<at::Tensor>& c0,
    bool output_gate, bool reverse) {
  check_cuda(gates, "gates");
  const c10::cuda::CUDAGuard guard(gates.device());
  return fused_backward(launch_cuda, grad_h, grad_cn, gates, c, c0, std::nullopt, &batch_sizes,
                        output_gate, reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(qrnn_lm, CUDA, m) {
  m.impl("fo_pool", &fo_pool_cuda);
  m.impl("fo_pool_backward", &fo_pool_backward_cuda);
  m.impl("fo_pool_packed", &fo_pool_packed_cuda);
  m.impl("fo_pool_packed_backward", &fo_pool_packed_backward_cuda);
  m.impl("fo_pool_fused", &fo_pool_fused_cuda);
  m.impl("fo_pool_fused_backward", &fo_pool_fused_backward_cuda);
  m.impl("fo_pool_fused_packed", &fo_pool_fused_packed_cuda);
  m.impl("fo_pool_fused_packed_backward", &fo_pool_fused_packed_backward_cuda);
}

}  // namespace qrnn_lm
