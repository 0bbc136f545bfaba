// The fo-pooling CUDA kernels with the time loop unrolled by 8, for every dtype.
#include "fo_pool_cuda_instantiate.cuh"

namespace qrnn_lm {
QRNN_LM_INSTANTIATE_UNROLL(8)
}  // namespace qrnn_lm
