// fo-pooling CUDA ops: TORCH_LIBRARY_IMPL(qrnn_lm, CUDA) registrations that
// check their inputs (fo_pool.h), pick a kernel instance and launch it on the
// current stream under a device guard.  The kernels are in fo_pool_kernels.cuh,
// instantiated in fo_pool_cuda_u4.cu and fo_pool_cuda_u16.cu (two files so
// they compile in parallel).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "fo_pool.h"
#include "fo_pool_cuda_launch.h"

namespace qrnn_lm {
namespace {

// Time-loop unrolling.  Each thread keeps kUnroll steps of loads in flight;
// when there are many columns (threads) a small unroll already covers the
// memory latency and keeps registers (occupancy) low, and with few columns
// a large unroll is needed to keep enough bytes in flight.  Measured by
// benchmarks/cuda/unroll_sweep.cu.  QRNN_LM_CUDA_UNROLL=4|16 forces one
// (tests and benchmarks use it to reach both instances).
constexpr int kUnrollSmall = 4;   // fo_pool_cuda_u4.cu
constexpr int kUnrollLarge = 16;  // fo_pool_cuda_u16.cu

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

int choose_unroll(const FoPoolParams& p, int device) {
  if (const char* env = std::getenv("QRNN_LM_CUDA_UNROLL")) {
    if (std::strcmp(env, "4") == 0) return kUnrollSmall;
    if (std::strcmp(env, "16") == 0) return kUnrollLarge;
    TORCH_CHECK(env[0] == '\0', "qrnn_lm: QRNN_LM_CUDA_UNROLL must be 4 or 16, got '", env,
                "'");
  }
  // threads per multiprocessor if every column ran at once
  const int64_t per_sm = p.B * p.H / multiprocessor_count(device);
  return per_sm >= 512 ? kUnrollSmall : kUnrollLarge;
}

void launch_cuda(const FoPoolParams& p, at::ScalarType dtype, bool backward) {
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  const int unroll = choose_unroll(p, stream.device_index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fo_pool_cuda", [&] {
    if (unroll == kUnrollLarge) launch_gates<scalar_t, kUnrollLarge>(p, backward, stream);
    else launch_gates<scalar_t, kUnrollSmall>(p, backward, stream);
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
