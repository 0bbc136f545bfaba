// fo-pooling (QRNN recurrence) ops: the host-side interface shared by the CPU
// and CUDA registrations.
//
//   c_t = f_t * c_{t-1} + (1 - f_t) * z_t        h_t = o_t * c_t
//
// Two memory layouts, one kernel logic.  A "column" is one (b, h) pair; its
// data for time step t lives in row(t, b) of a (rows, width) matrix:
//   padded (T, B, H):  row(t, b) = t * B + b, column active while t < len[b]
//   packed (N, H):     row(t, b) = offsets[t] + b, active while b < bs[t]
//                      (equivalently t < len[b] with len from batch_sizes)
// Iterating t upward (or downward for reverse) and updating only active
// columns gives both directions: a reversed sequence's active steps are
// len[b]-1, ..., 0, exactly the descending t that are < len[b].
//
// Plain ops read f and z (row width H).  Fused ops read gate
// pre-activations, row width G*H laid out [z | f | o], and apply
// tanh / sigmoid / sigmoid in registers.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "fo_pool_params.h"

namespace qrnn_lm {

using Launcher = void (*)(const FoPoolParams&, at::ScalarType, bool backward);

// Host-side set-up of the ops (fo_pool_host.cpp): check the arguments, build
// the length tables and outputs, fill a FoPoolParams and call `launch` on it.
// batch_sizes == nullptr: padded layout (optional lengths); else packed.
std::tuple<at::Tensor, at::Tensor> plain_forward(
    Launcher launch, const at::Tensor& f, const at::Tensor& z,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& lengths,
    const at::Tensor* batch_sizes, bool reverse);

std::tuple<at::Tensor, at::Tensor, at::Tensor> plain_backward(
    Launcher launch, const at::Tensor& grad_c, const at::Tensor& grad_cn, const at::Tensor& f,
    const at::Tensor& z, const at::Tensor& c, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor* batch_sizes, bool reverse);

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_forward(
    Launcher launch, const at::Tensor& gates, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor* batch_sizes, bool output_gate,
    bool reverse);

std::tuple<at::Tensor, at::Tensor> fused_backward(
    Launcher launch, const at::Tensor& grad_h, const at::Tensor& grad_cn,
    const at::Tensor& gates, const at::Tensor& c, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor* batch_sizes, bool output_gate,
    bool reverse);

// ---------------------------------------------------------------------------
// The op implementations of one device, registered with
// TORCH_LIBRARY_IMPL(qrnn_lm, <key>, m) { register_ops<Device>(m); }.
// Device provides:
//   static constexpr c10::DeviceType type;   the inputs' device type
//   static constexpr const char* where;      for the error message
//   static void launch(const FoPoolParams&, at::ScalarType, bool backward);
//   Guard                                    constructed from the inputs' device
//                                            for the duration of the call
// ---------------------------------------------------------------------------

template <typename Device>
struct DeviceOps {
  using T = at::Tensor;
  using OptT = std::optional<at::Tensor>;

  static void check(const T& t, const char* name) {
    TORCH_CHECK(t.device().type() == Device::type, "qrnn_lm: ", name, " must be ",
                Device::where, " here, got ", t.device());
  }

  static std::tuple<T, T> fo_pool(const T& f, const T& z, const OptT& c0, const OptT& lengths,
                                  bool reverse) {
    check(f, "f");
    const typename Device::Guard guard(f.device());
    return plain_forward(Device::launch, f, z, c0, lengths, nullptr, reverse);
  }

  static std::tuple<T, T, T> fo_pool_backward(const T& grad_c, const T& grad_cn, const T& f,
                                              const T& z, const T& c, const OptT& c0,
                                              const OptT& lengths, bool reverse) {
    check(f, "f");
    const typename Device::Guard guard(f.device());
    return plain_backward(Device::launch, grad_c, grad_cn, f, z, c, c0, lengths, nullptr,
                          reverse);
  }

  static std::tuple<T, T> fo_pool_packed(const T& f, const T& z, const T& batch_sizes,
                                         const OptT& c0, bool reverse) {
    check(f, "f");
    const typename Device::Guard guard(f.device());
    return plain_forward(Device::launch, f, z, c0, std::nullopt, &batch_sizes, reverse);
  }

  static std::tuple<T, T, T> fo_pool_packed_backward(const T& grad_c, const T& grad_cn,
                                                     const T& f, const T& z, const T& c,
                                                     const T& batch_sizes, const OptT& c0,
                                                     bool reverse) {
    check(f, "f");
    const typename Device::Guard guard(f.device());
    return plain_backward(Device::launch, grad_c, grad_cn, f, z, c, c0, std::nullopt,
                          &batch_sizes, reverse);
  }

  static std::tuple<T, T, T> fo_pool_fused(const T& gates, const OptT& c0, const OptT& lengths,
                                           bool output_gate, bool reverse) {
    check(gates, "gates");
    const typename Device::Guard guard(gates.device());
    return fused_forward(Device::launch, gates, c0, lengths, nullptr, output_gate, reverse);
  }

  static std::tuple<T, T> fo_pool_fused_backward(const T& grad_h, const T& grad_cn,
                                                 const T& gates, const T& c, const OptT& c0,
                                                 const OptT& lengths, bool output_gate,
                                                 bool reverse) {
    check(gates, "gates");
    const typename Device::Guard guard(gates.device());
    return fused_backward(Device::launch, grad_h, grad_cn, gates, c, c0, lengths, nullptr,
                          output_gate, reverse);
  }

  static std::tuple<T, T, T> fo_pool_fused_packed(const T& gates, const T& batch_sizes,
                                                  const OptT& c0, bool output_gate,
                                                  bool reverse) {
    check(gates, "gates");
    const typename Device::Guard guard(gates.device());
    return fused_forward(Device::launch, gates, c0, std::nullopt, &batch_sizes, output_gate,
                         reverse);
  }

  static std::tuple<T, T> fo_pool_fused_packed_backward(const T& grad_h, const T& grad_cn,
                                                        const T& gates, const T& c,
                                                        const T& batch_sizes, const OptT& c0,
                                                        bool output_gate, bool reverse) {
    check(gates, "gates");
    const typename Device::Guard guard(gates.device());
    return fused_backward(Device::launch, grad_h, grad_cn, gates, c, c0, std::nullopt,
                          &batch_sizes, output_gate, reverse);
  }
};

template <typename Device>
void register_ops(torch::Library& m) {
  using Ops = DeviceOps<Device>;
  m.impl("fo_pool", &Ops::fo_pool);
  m.impl("fo_pool_backward", &Ops::fo_pool_backward);
  m.impl("fo_pool_packed", &Ops::fo_pool_packed);
  m.impl("fo_pool_packed_backward", &Ops::fo_pool_packed_backward);
  m.impl("fo_pool_fused", &Ops::fo_pool_fused);
  m.impl("fo_pool_fused_backward", &Ops::fo_pool_fused_backward);
  m.impl("fo_pool_fused_packed", &Ops::fo_pool_fused_packed);
  m.impl("fo_pool_fused_packed_backward", &Ops::fo_pool_fused_packed_backward);
}

}  // namespace qrnn_lm
