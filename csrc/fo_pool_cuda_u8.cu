// The fo-pooling CUDA kernels with the time loop unrolled by 8, for every dtype.
#define QRNN_LM_INSTANTIATE_LAUNCH
#include "fo_pool_cuda_launch.h"

namespace qrnn_lm {
QRNN_LM_INSTANTIATE_UNROLL(8)
}  // namespace qrnn_lm
