// Definitions of the CUDA launchers declared in fo_pool_cuda_launch.h, for
// the files that instantiate them (fo_pool_cuda_u<U>.cu, one per unroll
// factor U: QRNN_LM_INSTANTIATE_UNROLL(U)).
#pragma once

#include "fo_pool_cuda_launch.h"

#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "fo_pool_kernels.cuh"

namespace qrnn_lm {

constexpr int kThreads = 128;

template <typename scalar_t, int G, int U>
void launch_typed(const FoPoolParams& p, bool backward, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t blocks = (p.B * p.H + kThreads - 1) / kThreads;
  if (backward) {
    kernels::fo_pool_bwd_kernel<scalar_t, acc_t, G, U><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    kernels::fo_pool_fwd_kernel<scalar_t, acc_t, G, U><<<blocks, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int U>
void launch_gates(const FoPoolParams& p, bool backward, cudaStream_t stream) {
  if (p.G == 0) launch_typed<scalar_t, 0, U>(p, backward, stream);
  else if (p.G == 2) launch_typed<scalar_t, 2, U>(p, backward, stream);
  else launch_typed<scalar_t, 3, U>(p, backward, stream);
}

#define QRNN_LM_INSTANTIATE_UNROLL(U)                                                  \
  template void launch_gates<float, U>(const FoPoolParams&, bool, cudaStream_t);        \
  template void launch_gates<double, U>(const FoPoolParams&, bool, cudaStream_t);       \
  template void launch_gates<c10::Half, U>(const FoPoolParams&, bool, cudaStream_t);    \
  template void launch_gates<c10::BFloat16, U>(const FoPoolParams&, bool, cudaStream_t);

}  // namespace qrnn_lm
