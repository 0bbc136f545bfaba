// fo-pooling CUDA kernels, free of torch headers: fo_pool_cuda.cu
// instantiates them for the registered ops, and
// benchmarks/cuda/unroll_sweep.cu times them standalone.
//
// One thread per (b, h) column loops over time with the state in a register.
// Adjacent threads own adjacent h, so every load and store of a step is
// coalesced.  The time loop is unrolled by kUnroll with all loads of a chunk
// issued before the dependent arithmetic, so each thread keeps several
// memory requests in flight (the recurrence only serialises the FMAs); with
// few columns a larger kUnroll is what keeps enough bytes in flight.
// scalar_t is the storage type, acc_t the type computed in (float for
// half / bfloat16).
#pragma once

#include <cstdint>

#include "fo_pool_params.h"

namespace qrnn_lm {
namespace kernels {

constexpr int kMaxThreads = 256;  // largest block the kernels are launched with

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

template <typename scalar_t, typename acc_t, int G, int kUnroll>
__global__ void __launch_bounds__(kMaxThreads) fo_pool_fwd_kernel(const FoPoolParams p) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
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

template <typename scalar_t, typename acc_t, int G, int kUnroll>
__global__ void __launch_bounds__(kMaxThreads) fo_pool_bwd_kernel(const FoPoolParams p) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
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

}  // namespace kernels
}  // namespace qrnn_lm
