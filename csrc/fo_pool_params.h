// The parameter block of the fo-pooling kernels (CPU and CUDA).  Plain C++:
// no torch headers, so the CUDA kernels (fo_pool_kernels.cuh) can also be
// built into a standalone benchmark (benchmarks/cuda/unroll_sweep.cu).
// The layouts are described in fo_pool.h.
#pragma once

#include <cstdint>

namespace qrnn_lm {

struct FoPoolParams {
  int64_t T = 0, B = 0, H = 0;
  int G = 0;              // 0: plain (f, z); 2 or 3: fused gates [z|f(|o)]
  bool reverse = false;
  bool packed = false;
  const int64_t* lengths = nullptr;  // (B) steps per column, nullptr = T
  const int64_t* offsets = nullptr;  // (T+1) packed row offsets
  // forward inputs / outputs
  const void* f = nullptr;
  const void* z = nullptr;
  const void* gates = nullptr;
  const void* c0 = nullptr;      // (B, H) or nullptr for zeros
  void* c = nullptr;             // (rows, H) every state
  void* h = nullptr;             // (rows, H) o * c, fused with output gate
  void* cn = nullptr;            // (B, H)
  // backward
  const void* grad_out = nullptr;   // dL/dc (plain) or dL/dh (fused)
  const void* grad_cn = nullptr;    // (B, H)
  void* grad_f = nullptr;
  void* grad_z = nullptr;
  void* grad_gates = nullptr;
  void* grad_c0 = nullptr;          // (B, H)
};

}  // namespace qrnn_lm
