// fo-pooling CUDA ops: the TORCH_LIBRARY_IMPL(qrnn_lm, CUDA) registration
// (DeviceOps in fo_pool.h: checks, device guard, host set-up) and the
// launcher that picks a kernel instance and launches it on the current
// stream.  The kernels are in fo_pool_kernels.cuh, instantiated in
// fo_pool_cuda_u{4,8,16}.cu (one file per unroll factor, so they compile in
// parallel; fo_pool_cuda_instantiate.cuh).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdlib>

#include "fo_pool.h"
#include "fo_pool_cuda_launch.h"

namespace qrnn_lm {
namespace {

// Time-loop unrolling.  Each thread keeps U steps of loads in flight.  With
// many columns (threads) a moderate U already covers the memory latency and
// keeps registers, hence occupancy, in check; with few columns only a large
// U keeps enough bytes in flight.  The rule below comes from
// benchmarks/cuda/unroll_sweep.cu on an H200 (132 SMs; results in
// benchmarks/results/): at 3972 columns per SM U=8 was best or within 2
// points of copy bandwidth in every case; at 993, U=4 for the forward and 8
// for the backward; at 248 and fewer, U=16.  The instances are compiled in
// fo_pool_cuda_u{4,8,16}.cu; QRNN_LM_CUDA_UNROLL forces one (the tests use
// it to reach each).
int multiprocessor_count(int device) {
  static int counts[64] = {0};
  if (device < 0 || device >= 64) device = 0;
  if (counts[device] == 0) {
    int n = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    counts[device] = n > 0 ? n : 1;
  }
  return counts[device];
}

int choose_unroll(const FoPoolParams& p, bool backward, int device) {
  if (const char* env = std::getenv("QRNN_LM_CUDA_UNROLL")) {
    if (env[0] != '\0') {
      const int u = std::atoi(env);
      TORCH_CHECK(u == 4 || u == 8 || u == 16,
                  "qrnn_lm: QRNN_LM_CUDA_UNROLL must be 4, 8 or 16, got '", env, "'");
      return u;
    }
  }
  // columns (threads) per multiprocessor if all ran at once
  const int64_t per_sm = p.B * p.H / multiprocessor_count(device);
  if (per_sm < 512) return 16;
  if (backward || per_sm >= 2048) return 8;
  return 4;
}

template <typename scalar_t>
void launch_unrolled(int unroll, const FoPoolParams& p, bool backward, cudaStream_t stream) {
  switch (unroll) {
    case 4: launch_gates<scalar_t, 4>(p, backward, stream); break;
    case 8: launch_gates<scalar_t, 8>(p, backward, stream); break;
    default: launch_gates<scalar_t, 16>(p, backward, stream); break;
  }
}

void launch_cuda(const FoPoolParams& p, at::ScalarType dtype, bool backward) {
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  const int unroll = choose_unroll(p, backward, stream.device_index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fo_pool_cuda", [&] {
    launch_unrolled<scalar_t>(unroll, p, backward, stream);
  });
}

// The CUDA op implementations (DeviceOps in fo_pool.h): launched on the
// current stream of the inputs' device.
struct Cuda {
  static constexpr c10::DeviceType type = c10::DeviceType::CUDA;
  static constexpr const char* where = "a CUDA tensor";
  static void launch(const FoPoolParams& p, at::ScalarType dtype, bool backward) {
    launch_cuda(p, dtype, backward);
  }
  using Guard = c10::cuda::CUDAGuard;
};

}  // namespace

TORCH_LIBRARY_IMPL(qrnn_lm, CUDA, m) { register_ops<Cuda>(m); }

}  // namespace qrnn_lm
