// fo-pooling CUDA kernels, free of torch headers: fo_pool_cuda_u{4,8,16}.cu
// instantiate them for the registered ops (fo_pool_cuda_instantiate.cuh), and
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

// Pointers and indices of one column, shared by its chunks.
template <typename scalar_t>
struct Column {
  int64_t b, h, L, H, W;
  const scalar_t* __restrict__ in;    // f (plain) or gates (fused)
  const scalar_t* __restrict__ z;     // plain only
  const scalar_t* __restrict__ c;     // backward: the forward's states
  const scalar_t* __restrict__ gout;  // backward: dL/dc or dL/dh
};

// Column col = b * H + h of the launch: its indices, steps and inputs.
template <typename scalar_t, int G>
__device__ __forceinline__ Column<scalar_t> column_of(const FoPoolParams& p, int64_t col) {
  Column<scalar_t> q;
  q.H = p.H;
  q.W = G == 0 ? p.H : G * p.H;
  q.b = col / p.H;
  q.h = col - q.b * p.H;
  const int64_t L = p.lengths ? p.lengths[q.b] : p.T;
  q.L = L < 0 ? 0 : (L > p.T ? p.T : L);  // validated on the host; never read out of bounds
  q.in = static_cast<const scalar_t*>(G == 0 ? p.f : p.gates);
  q.z = static_cast<const scalar_t*>(p.z);
  q.c = static_cast<const scalar_t*>(p.c);  // backward only
  q.gout = static_cast<const scalar_t*>(p.grad_out);  // backward only
  return q;
}

// The inputs of one step at element index i (row * W + h): f and z, or the
// gate pre-activations z, f (and o).
template <int G, typename scalar_t>
__device__ __forceinline__ void load_step(const Column<scalar_t>& q, int64_t i, scalar_t& f,
                                          scalar_t& z, scalar_t& o) {
  if constexpr (G == 0) {
    f = q.in[i];
    z = q.z[i];
  } else {
    z = q.in[i];
    f = q.in[i + q.H];
    if constexpr (G == 3) o = q.in[i + 2 * q.H];
  }
}

// The N forward steps k, ..., k+N-1 of a column (all < L).  Every load of
// the chunk is issued first, into registers of the storage type; nothing
// reads a loaded value (not even a conversion) until all are in flight, so
// the loads overlap instead of each waiting for the last.
template <typename scalar_t, typename acc_t, int G, int N>
__device__ __forceinline__ void fwd_chunk(const FoPoolParams& p, const Column<scalar_t>& q,
                                          int64_t k, acc_t& s, scalar_t* __restrict__ c,
                                          scalar_t* __restrict__ hout) {
  int64_t rows[N];
#pragma unroll
  for (int u = 0; u < N; ++u) rows[u] = row_of(p, step_time(p, k + u, q.L), q.b);
  scalar_t fr[N], zr[N], orr[N];
#pragma unroll
  for (int u = 0; u < N; ++u) {
    load_step<G>(q, rows[u] * q.W + q.h, fr[u], zr[u], orr[u]);
  }
#pragma unroll
  for (int u = 0; u < N; ++u) {
    acc_t fu = static_cast<acc_t>(fr[u]), zu = static_cast<acc_t>(zr[u]);
    if constexpr (G != 0) {
      zu = tanh(zu);
      fu = dsigmoid(fu);
    }
    s = fu * s + (acc_t(1) - fu) * zu;
    const int64_t o = rows[u] * q.H + q.h;
    c[o] = static_cast<scalar_t>(s);
    if constexpr (G == 3) hout[o] = static_cast<scalar_t>(dsigmoid(static_cast<acc_t>(orr[u])) * s);
  }
}

template <typename scalar_t, typename acc_t, int G, int kUnroll>
__global__ void __launch_bounds__(kMaxThreads) fo_pool_fwd_kernel(const FoPoolParams p) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= p.B * p.H) return;
  const Column<scalar_t> q = column_of<scalar_t, G>(p, col);
  const int64_t T = p.T, L = q.L;
  auto* __restrict__ c = static_cast<scalar_t*>(p.c);
  auto* __restrict__ hout = static_cast<scalar_t*>(p.h);
  acc_t s = p.c0 ? static_cast<acc_t>(static_cast<const scalar_t*>(p.c0)[col]) : acc_t(0);

  int64_t k = 0;
  for (; k + kUnroll <= L; k += kUnroll) fwd_chunk<scalar_t, acc_t, G, kUnroll>(p, q, k, s, c, hout);
  // the rest (< kUnroll steps) in chunks of 8, 4, 2, 1
  if constexpr (kUnroll > 8) if (k + 8 <= L) { fwd_chunk<scalar_t, acc_t, G, 8>(p, q, k, s, c, hout); k += 8; }
  if constexpr (kUnroll > 4) if (k + 4 <= L) { fwd_chunk<scalar_t, acc_t, G, 4>(p, q, k, s, c, hout); k += 4; }
  if constexpr (kUnroll > 2) if (k + 2 <= L) { fwd_chunk<scalar_t, acc_t, G, 2>(p, q, k, s, c, hout); k += 2; }
  if constexpr (kUnroll > 1) if (k + 1 <= L) { fwd_chunk<scalar_t, acc_t, G, 1>(p, q, k, s, c, hout); k += 1; }
  if (!p.packed) {  // padding positions are 0
    for (int64_t t = L; t < T; ++t) {
      const int64_t r = t * p.B + q.b;
      c[r * q.H + q.h] = scalar_t(0);
      if constexpr (G == 3) hout[r * q.H + q.h] = scalar_t(0);
    }
  }
  static_cast<scalar_t*>(p.cn)[col] = static_cast<scalar_t>(s);
}

// The N backward steps k0, k0-1, ..., k0-N+1 of a column.  cr[j] holds the
// state after step k0-j, for j = 0..N: the chunk's own states and the one
// before its last step.  With FROM_C0 the chunk ends at step 0 and that
// "state before" is c0 instead of a load (cr[N] is given by the caller).
template <typename scalar_t, typename acc_t, int G, int N, bool FROM_C0>
__device__ __forceinline__ void bwd_chunk(const FoPoolParams& p, const Column<scalar_t>& q,
                                          int64_t k0, acc_t& g, acc_t c0v,
                                          scalar_t* __restrict__ gin, scalar_t* __restrict__ gz) {
  int64_t rows[N + 1];
#pragma unroll
  for (int j = 0; j < N + (FROM_C0 ? 0 : 1); ++j) rows[j] = row_of(p, step_time(p, k0 - j, q.L), q.b);
  scalar_t fr[N], zr[N], orr[N], gr[N], cr[N + 1];
#pragma unroll
  for (int j = 0; j < N + (FROM_C0 ? 0 : 1); ++j) cr[j] = q.c[rows[j] * q.H + q.h];
#pragma unroll
  for (int u = 0; u < N; ++u) {
    gr[u] = q.gout[rows[u] * q.H + q.h];
    load_step<G>(q, rows[u] * q.W + q.h, fr[u], zr[u], orr[u]);
  }
#pragma unroll
  for (int u = 0; u < N; ++u) {
    const int64_t i = rows[u] * q.W + q.h;
    const acc_t prev = (FROM_C0 && u == N - 1) ? c0v : static_cast<acc_t>(cr[u + 1]);
    const acc_t gv = static_cast<acc_t>(gr[u]);
    if constexpr (G == 0) {
      const acc_t fv = static_cast<acc_t>(fr[u]), zv = static_cast<acc_t>(zr[u]);
      const acc_t gc = g + gv;
      gin[i] = static_cast<scalar_t>(gc * (prev - zv));
      gz[i] = static_cast<scalar_t>(gc * (acc_t(1) - fv));
      g = gc * fv;
    } else {
      const acc_t zt = tanh(static_cast<acc_t>(zr[u]));
      const acc_t ft = dsigmoid(static_cast<acc_t>(fr[u]));
      acc_t gc;
      if constexpr (G == 3) {
        const acc_t ot = dsigmoid(static_cast<acc_t>(orr[u]));
        gc = g + gv * ot;
        gin[i + 2 * q.H] =
            static_cast<scalar_t>(gv * static_cast<acc_t>(cr[u]) * ot * (acc_t(1) - ot));
      } else {
        gc = g + gv;
      }
      gin[i] = static_cast<scalar_t>(gc * (acc_t(1) - ft) * (acc_t(1) - zt * zt));
      gin[i + q.H] = static_cast<scalar_t>(gc * (prev - zt) * ft * (acc_t(1) - ft));
      g = gc * ft;
    }
  }
}

template <typename scalar_t, typename acc_t, int G, int kUnroll>
__global__ void __launch_bounds__(kMaxThreads) fo_pool_bwd_kernel(const FoPoolParams p) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= p.B * p.H) return;
  const Column<scalar_t> q = column_of<scalar_t, G>(p, col);
  const int64_t T = p.T, L = q.L;
  auto* __restrict__ gin = static_cast<scalar_t*>(G == 0 ? p.grad_f : p.grad_gates);
  auto* __restrict__ gz = static_cast<scalar_t*>(p.grad_z);
  const acc_t c0v =
      p.c0 ? static_cast<acc_t>(static_cast<const scalar_t*>(p.c0)[col]) : acc_t(0);
  acc_t g = static_cast<acc_t>(static_cast<const scalar_t*>(p.grad_cn)[col]);

  // k counts forward updates; walk them backwards, down to step 1 in chunks
  // whose "state before" is loaded, then step 0, which starts from c0.
  int64_t k0 = L - 1;
  for (; k0 >= kUnroll; k0 -= kUnroll)
    bwd_chunk<scalar_t, acc_t, G, kUnroll, false>(p, q, k0, g, c0v, gin, gz);
  if constexpr (kUnroll > 8) if (k0 >= 8) { bwd_chunk<scalar_t, acc_t, G, 8, false>(p, q, k0, g, c0v, gin, gz); k0 -= 8; }
  if constexpr (kUnroll > 4) if (k0 >= 4) { bwd_chunk<scalar_t, acc_t, G, 4, false>(p, q, k0, g, c0v, gin, gz); k0 -= 4; }
  if constexpr (kUnroll > 2) if (k0 >= 2) { bwd_chunk<scalar_t, acc_t, G, 2, false>(p, q, k0, g, c0v, gin, gz); k0 -= 2; }
  if constexpr (kUnroll > 1) if (k0 >= 1) { bwd_chunk<scalar_t, acc_t, G, 1, false>(p, q, k0, g, c0v, gin, gz); k0 -= 1; }
  if (k0 == 0) bwd_chunk<scalar_t, acc_t, G, 1, true>(p, q, 0, g, c0v, gin, gz);
  const int64_t W = q.W, H = q.H, h = q.h;
  if (!p.packed) {  // no gradient reaches padding positions
    for (int64_t t = L; t < T; ++t) {
      const int64_t r = t * p.B + q.b;
      if constexpr (G == 0) {
        gin[r * W + h] = scalar_t(0);
        gz[r * W + h] = scalar_t(0);
      } else {
#pragma unroll
        for (int j = 0; j < G; ++j) gin[r * W + j * H + h] = scalar_t(0);
      }
    }
  }
  static_cast<scalar_t*>(p.grad_c0)[col] = static_cast<scalar_t>(g);
}

}  // namespace kernels
}  // namespace qrnn_lm
