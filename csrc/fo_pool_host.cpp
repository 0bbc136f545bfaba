// Host-side checks and set-up of the fo-pooling ops, shared by the CPU
// (fo_pool.cpp) and CUDA (fo_pool_cuda.cu) registrations: argument checks
// (the last line of validation, after the Python wrappers), the length
// tables of the two layouts, output allocation and the FoPoolParams block
// handed to the device's launcher.
#include "fo_pool.h"

#include <vector>

namespace qrnn_lm {
namespace {

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_floating_point(), "qrnn_lm: ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

void check_same(const at::Tensor& a, const at::Tensor& ref, const char* name,
                       const char* refname) {
  TORCH_CHECK(a.scalar_type() == ref.scalar_type(), "qrnn_lm: ", name, " has dtype ",
              a.scalar_type(), " but ", refname, " has ", ref.scalar_type());
  TORCH_CHECK(a.device() == ref.device(), "qrnn_lm: ", name, " is on ", a.device(),
              " but ", refname, " is on ", ref.device());
}

at::Tensor check_c0(const std::optional<at::Tensor>& c0, int64_t B, int64_t H,
                           const at::Tensor& ref) {
  if (!c0.has_value() || !c0->defined()) return at::Tensor();
  check_same(*c0, ref, "c0", "the input");
  TORCH_CHECK(c0->dim() == 2 && c0->size(0) == B && c0->size(1) == H,
              "qrnn_lm: c0 must have shape (B, H) = (", B, ", ", H, "), got ", c0->sizes());
  return c0->contiguous();
}

// Lengths on the CPU are range-checked here; lengths already on the device
// were checked by the Python wrapper (a check here would synchronise).
at::Tensor check_lengths(const std::optional<at::Tensor>& lengths, int64_t T,
                                int64_t B, const at::Tensor& ref) {
  if (!lengths.has_value() || !lengths->defined()) return at::Tensor();
  const at::Tensor& L = *lengths;
  TORCH_CHECK(L.scalar_type() == at::kLong, "qrnn_lm: lengths must be int64, got ",
              L.scalar_type());
  TORCH_CHECK(L.dim() == 1 && L.size(0) == B, "qrnn_lm: lengths must have shape (B,) = (",
              B, ",), got ", L.sizes());
  TORCH_CHECK(L.device().is_cpu() || L.device() == ref.device(), "qrnn_lm: lengths is on ",
              L.device(), "; put it on the CPU or on ", ref.device());
  if (L.device().is_cpu() && B > 0) {
    auto Lc = L.contiguous();
    const int64_t* p = Lc.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      TORCH_CHECK(p[b] >= 0 && p[b] <= T, "qrnn_lm: lengths[", b, "] = ", p[b],
                  " is outside [0, T=", T, "]");
  }
  return L.to(ref.device()).contiguous();
}

// From PackedSequence.batch_sizes: row offsets (T+1) and per-column lengths
// (B), packed into one int64 tensor [offsets | lengths] on `device`.
at::Tensor packed_tables(const at::Tensor& batch_sizes, int64_t N,
                                const at::Device& device, int64_t* B_out) {
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.dim() == 1,
              "qrnn_lm: batch_sizes must be a 1-d int64 CPU tensor, got ",
              batch_sizes.scalar_type(), " on ", batch_sizes.device());
  auto bs = batch_sizes.contiguous();
  const int64_t T = bs.size(0);
  const int64_t* p = bs.data_ptr<int64_t>();
  const int64_t B = T > 0 ? p[0] : 0;
  auto tables = at::empty({T + 1 + B}, bs.options());
  int64_t* off = tables.data_ptr<int64_t>();
  int64_t* len = off + T + 1;
  off[0] = 0;
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(p[t] >= 1, "qrnn_lm: batch_sizes must be positive, got ", p[t], " at ", t);
    TORCH_CHECK(t == 0 || p[t] <= p[t - 1],
                "qrnn_lm: batch_sizes must be non-increasing (as from pack_sequence)");
    off[t + 1] = off[t] + p[t];
  }
  TORCH_CHECK(off[T] == N, "qrnn_lm: batch_sizes sum to ", off[T], " but the data has ", N,
              " rows");
  // len[b] = number of steps t with bs[t] > b
  for (int64_t b = 0, t = T; b < B; ++b) {
    while (t > 0 && p[t - 1] <= b) --t;
    len[b] = t;
  }
  *B_out = B;
  return tables.to(device);
}

// Sets p.packed, p.T, p.B and the length tables from x's layout: packed rows
// (N, ...) with batch_sizes, or (T, B, ...) with optional lengths.  The
// returned tensor owns the tables that p points into: keep it alive until the
// launch is done.
at::Tensor set_layout(FoPoolParams& p, const at::Tensor& x,
                             const std::optional<at::Tensor>& lengths,
                             const at::Tensor* batch_sizes) {
  p.packed = batch_sizes != nullptr;
  at::Tensor owner;
  if (p.packed) {
    owner = packed_tables(*batch_sizes, x.size(0), x.device(), &p.B);
    p.T = batch_sizes->size(0);
    p.offsets = owner.data_ptr<int64_t>();
    p.lengths = p.offsets + p.T + 1;
  } else {
    p.T = x.size(0);
    p.B = x.size(1);
    owner = check_lengths(lengths, p.T, p.B, x);
    p.lengths = owner.defined() ? owner.data_ptr<int64_t>() : nullptr;
  }
  return owner;
}

// f of the plain ops: packed rows (N, H) with batch_sizes, else (T, B, H).
void check_plain_rank(const at::Tensor& f, const at::Tensor* batch_sizes) {
  if (batch_sizes != nullptr) {
    TORCH_CHECK(f.dim() == 2, "qrnn_lm: packed f must have shape (N, H), got ", f.sizes());
  } else {
    TORCH_CHECK(f.dim() == 3, "qrnn_lm: f must have shape (T, B, H), got ", f.sizes());
  }
}

// p.G and p.H of a fused op; gates are (T, B, G*H), or packed (N, G*H).
void set_gates_shape(FoPoolParams& p, const at::Tensor& gates, const at::Tensor* batch_sizes,
                     bool output_gate) {
  const bool packed = batch_sizes != nullptr;
  p.G = output_gate ? 3 : 2;
  TORCH_CHECK(gates.dim() == (packed ? 2 : 3), "qrnn_lm: gates must have shape ",
              packed ? "(N, G*H)" : "(T, B, G*H)", ", got ", gates.sizes());
  TORCH_CHECK(gates.size(-1) % p.G == 0, "qrnn_lm: the last dim of gates (",
              gates.size(-1), ") must be ", p.G, "*H");
  p.H = gates.size(-1) / p.G;
}

void check_grad_cn(const at::Tensor& grad_cn, const FoPoolParams& p) {
  TORCH_CHECK(grad_cn.dim() == 2 && grad_cn.size(0) == p.B && grad_cn.size(1) == p.H,
              "qrnn_lm: grad_c_n must have shape (B, H)");
}

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

// Plain forward, both layouts. f, z: (T, B, H) or packed (N, H).
std::tuple<at::Tensor, at::Tensor> plain_forward(
    Launcher launch, const at::Tensor& f_, const at::Tensor& z_,
    const std::optional<at::Tensor>& c0_, const std::optional<at::Tensor>& lengths_,
    const at::Tensor* batch_sizes, bool reverse) {
  check_float(f_, "f");
  check_same(z_, f_, "z", "f");
  TORCH_CHECK(z_.sizes() == f_.sizes(), "qrnn_lm: z has shape ", z_.sizes(), " but f has ",
              f_.sizes());
  FoPoolParams p;
  p.reverse = reverse;
  check_plain_rank(f_, batch_sizes);
  p.H = f_.size(-1);
  const auto layout = set_layout(p, f_, lengths_, batch_sizes);
  auto c0 = check_c0(c0_, p.B, p.H, f_);
  auto f = f_.contiguous(), z = z_.contiguous();
  auto c = at::empty_like(f);
  auto cn = at::empty({p.B, p.H}, f.options());
  p.f = f.data_ptr();
  p.z = z.data_ptr();
  p.c0 = data_or_null(c0);
  p.c = c.data_ptr();
  p.cn = cn.data_ptr();
  if (p.B * p.H > 0) launch(p, f.scalar_type(), false);
  return {c, cn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> plain_backward(
    Launcher launch, const at::Tensor& grad_c_, const at::Tensor& grad_cn_,
    const at::Tensor& f_, const at::Tensor& z_, const at::Tensor& c_,
    const std::optional<at::Tensor>& c0_, const std::optional<at::Tensor>& lengths_,
    const at::Tensor* batch_sizes, bool reverse) {
  check_float(f_, "f");
  check_same(z_, f_, "z", "f");
  check_same(c_, f_, "c", "f");
  check_same(grad_c_, f_, "grad_c", "f");
  check_same(grad_cn_, f_, "grad_c_n", "f");
  TORCH_CHECK(z_.sizes() == f_.sizes() && c_.sizes() == f_.sizes() &&
                  grad_c_.sizes() == f_.sizes(),
              "qrnn_lm: backward: f, z, c and grad_c must have the same shape");
  FoPoolParams p;
  p.reverse = reverse;
  check_plain_rank(f_, batch_sizes);
  p.H = f_.size(-1);
  const auto layout = set_layout(p, f_, lengths_, batch_sizes);
  check_grad_cn(grad_cn_, p);
  auto c0 = check_c0(c0_, p.B, p.H, f_);
  auto f = f_.contiguous(), z = z_.contiguous(), c = c_.contiguous();
  auto gc = grad_c_.contiguous(), gcn = grad_cn_.contiguous();
  auto grad_f = at::empty_like(f), grad_z = at::empty_like(f);
  auto grad_c0 = at::empty({p.B, p.H}, f.options());
  p.f = f.data_ptr();
  p.z = z.data_ptr();
  p.c = c.data_ptr();
  p.c0 = data_or_null(c0);
  p.grad_out = gc.data_ptr();
  p.grad_cn = gcn.data_ptr();
  p.grad_f = grad_f.data_ptr();
  p.grad_z = grad_z.data_ptr();
  p.grad_c0 = grad_c0.data_ptr();
  if (p.B * p.H > 0) launch(p, f.scalar_type(), true);
  return {grad_f, grad_z, grad_c0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_forward(
    Launcher launch, const at::Tensor& gates_, const std::optional<at::Tensor>& c0_,
    const std::optional<at::Tensor>& lengths_, const at::Tensor* batch_sizes,
    bool output_gate, bool reverse) {
  check_float(gates_, "gates");
  FoPoolParams p;
  p.reverse = reverse;
  set_gates_shape(p, gates_, batch_sizes, output_gate);
  const auto layout = set_layout(p, gates_, lengths_, batch_sizes);
  auto c0 = check_c0(c0_, p.B, p.H, gates_);
  auto gates = gates_.contiguous();
  auto shape = gates.sizes().vec();
  shape.back() = p.H;
  auto c = at::empty(shape, gates.options());
  // Without an output gate h is c; return an empty second output rather than
  // an alias (custom-op outputs must not alias each other).
  auto h = output_gate ? at::empty(shape, gates.options()) : at::Tensor();
  auto cn = at::empty({p.B, p.H}, gates.options());
  p.gates = gates.data_ptr();
  p.c0 = data_or_null(c0);
  p.c = c.data_ptr();
  p.h = output_gate ? h.data_ptr() : nullptr;
  p.cn = cn.data_ptr();
  if (p.B * p.H > 0) launch(p, gates.scalar_type(), false);
  if (output_gate) return {h, c, cn};
  return {c, at::empty({0}, gates.options()), cn};
}

std::tuple<at::Tensor, at::Tensor> fused_backward(
    Launcher launch, const at::Tensor& grad_h_, const at::Tensor& grad_cn_,
    const at::Tensor& gates_, const at::Tensor& c_, const std::optional<at::Tensor>& c0_,
    const std::optional<at::Tensor>& lengths_, const at::Tensor* batch_sizes,
    bool output_gate, bool reverse) {
  check_float(gates_, "gates");
  check_same(c_, gates_, "c", "gates");
  check_same(grad_h_, gates_, "grad_h", "gates");
  check_same(grad_cn_, gates_, "grad_c_n", "gates");
  FoPoolParams p;
  p.reverse = reverse;
  set_gates_shape(p, gates_, batch_sizes, output_gate);
  auto shape = gates_.sizes().vec();
  shape.back() = p.H;
  TORCH_CHECK(c_.sizes() == at::IntArrayRef(shape) && grad_h_.sizes() == at::IntArrayRef(shape),
              "qrnn_lm: backward: c and grad_h must have shape ", shape);
  const auto layout = set_layout(p, gates_, lengths_, batch_sizes);
  check_grad_cn(grad_cn_, p);
  auto c0 = check_c0(c0_, p.B, p.H, gates_);
  auto gates = gates_.contiguous(), c = c_.contiguous();
  auto gh = grad_h_.contiguous(), gcn = grad_cn_.contiguous();
  auto grad_gates = at::empty_like(gates);
  auto grad_c0 = at::empty({p.B, p.H}, gates.options());
  p.gates = gates.data_ptr();
  p.c = c.data_ptr();
  p.c0 = data_or_null(c0);
  p.grad_out = gh.data_ptr();
  p.grad_cn = gcn.data_ptr();
  p.grad_gates = grad_gates.data_ptr();
  p.grad_c0 = grad_c0.data_ptr();
  if (p.B * p.H > 0) {
    launch(p, gates.scalar_type(), true);
  } else {
    grad_gates.zero_();
    grad_c0.zero_();
  }
  return {grad_gates, grad_c0};
}

}  // namespace qrnn_lm
