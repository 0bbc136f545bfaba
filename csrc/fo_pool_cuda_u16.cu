// The fo-pooling CUDA kernels with the time loop unrolled by 16, for every dtype.
#include "fo_pool_cuda_instantiate.cuh"

namespace qrnn_lm {
QRNN_LM_INSTANTIATE_UNROLL(16)
}  // namespace qrnn_lm
