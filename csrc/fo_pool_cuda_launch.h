// Launchers of the fo-pooling CUDA kernels, one instance per (dtype,
// unroll), defined in fo_pool_cuda_instantiate.cuh, compiled in
// fo_pool_cuda_u<U>.cu and called by fo_pool_cuda.cu.
#pragma once

#include <cuda_runtime.h>

#include "fo_pool_params.h"

namespace qrnn_lm {

// Launches the kernel for p.G (0, 2 or 3) on `stream`; scalar_t is the
// storage type (float, double, c10::Half, c10::BFloat16).
template <typename scalar_t, int U>
void launch_gates(const FoPoolParams& p, bool backward, cudaStream_t stream);

}  // namespace qrnn_lm
