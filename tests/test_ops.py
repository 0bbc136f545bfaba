"""fo-pooling ops: compiled kernels vs float64 references, autograd, opcheck,
torch.compile, and input validation.  CUDA cases are skipped without a GPU."""
import os
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from qrnn_lm import ops

CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device")),
]
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=3e-2, atol=6e-2),
    torch.float16: dict(rtol=5e-3, atol=1e-2),
}
# (T, B, H): T=1, B=1, H=1, H not a multiple of 32, ...
SHAPES = [(1, 1, 1), (1, 3, 5), (6, 1, 7), (9, 4, 33), (13, 5, 64), (4, 7, 1), (20, 3, 130)]


def kernel_device(device):
    if device not in ops.compiled_devices():
        pytest.skip(f"no compiled kernel for {device}")
    return device


def test_cpu_kernel_is_compiled():
    if os.environ.get("QRNN_LM_NO_JIT"):
        pytest.skip("QRNN_LM_NO_JIT set")
    assert "cpu" in ops.compiled_devices()


def make_lengths(kind, T, B, gen):
    if kind is None:
        return None
    if kind == "full":
        return torch.full((B,), T, dtype=torch.int64)
    lengths = torch.randint(0, T + 1, (B,), generator=gen)
    lengths[0] = T  # contains T; unsorted in general
    if B > 1:
        lengths[-1] = 0 if kind == "with_zero" else max(1, int(lengths[-1]))
    return lengths


def leaf(x, dtype, device, noncontig=False):
    """A leaf tensor on device with x's values; optionally a non-contiguous view."""
    x = x.to(dtype)
    if noncontig and x.dim() >= 2:
        y = x.transpose(0, 1).contiguous().to(device).transpose(0, 1)
    else:
        y = x.to(device)
    return y.detach().requires_grad_(True)


def grads_of(outputs, inputs, seeds):
    loss = sum((o.double() * s.to(o.device)).sum() for o, s in zip(outputs, seeds))
    grads = torch.autograd.grad(loss, [i for i in inputs if i is not None], allow_unused=True)
    return [g.double().cpu() if g is not None else None for g in grads]


def assert_close(a, b, dtype):
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), **TOL[dtype])


def random_inputs(T, B, H, gen, G=None):
    f = torch.rand(T, B, H, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    z = torch.randn(T, B, H, generator=gen, dtype=torch.float64)
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    gates = None if G is None else torch.randn(T, B, G * H, generator=gen, dtype=torch.float64)
    return f, z, c0, gates


# --------------------------------------------------------------------------
# padded layout
# --------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lengths_kind", [None, "with_zero", "positive"])
@pytest.mark.parametrize("reverse", [False, True])
def test_fo_pool_matches_reference(device, shape, lengths_kind, reverse):
    kernel_device(device)
    T, B, H = shape
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, lengths_kind, reverse)).encode()))
    f, z, c0, _ = random_inputs(T, B, H, gen)
    lengths = make_lengths(lengths_kind, T, B, gen)
    seeds = [torch.randn(T, B, H, generator=gen, dtype=torch.float64),
             torch.randn(B, H, generator=gen, dtype=torch.float64)]
    dtypes = [torch.float64, torch.float32] + ([torch.float16, torch.bfloat16]
                                               if device == "cuda" else [torch.bfloat16])
    for dtype in dtypes:
        for with_c0, noncontig in ((True, False), (False, True)):
            fk, zk = leaf(f, dtype, device, noncontig), leaf(z, dtype, device, noncontig)
            ck = leaf(c0, dtype, device) if with_c0 else None
            c, c_n = ops.fo_pool(fk, zk, ck, lengths, reverse=reverse)
            assert c.shape == (T, B, H) and c_n.shape == (B, H) and c.dtype == dtype
            # float64 oracle on the same (rounded) values
            fr, zr = leaf(fk.detach().double().cpu(), torch.float64, "cpu"), \
                leaf(zk.detach().double().cpu(), torch.float64, "cpu")
            cr0 = leaf(ck.detach().double().cpu(), torch.float64, "cpu") if with_c0 else None
            c_ref, c_n_ref = ops.fo_pool_reference(fr, zr, cr0, lengths, reverse=reverse)
            assert_close(c, c_ref, dtype)
            assert_close(c_n, c_n_ref, dtype)
            if lengths is not None:  # padding is exactly zero
                pad = torch.arange(T).unsqueeze(1) >= lengths.unsqueeze(0)
                assert (c.detach().cpu()[pad] == 0).all()
            g = grads_of([c, c_n], [fk, zk, ck], seeds)
            g_ref = grads_of([c_ref, c_n_ref], [fr, zr, cr0], seeds)
            for a, b in zip(g, g_ref):
                assert_close(a, b, dtype)


def test_reference_semantics_by_hand():
    # one sequence, H=1: c1 = .5*2 + .5*4 = 3, c2 = .25*3 + .75*(-1) = 0
    f = torch.tensor([[[0.5]], [[0.25]]], dtype=torch.float64)
    z = torch.tensor([[[4.0]], [[-1.0]]], dtype=torch.float64)
    c0 = torch.tensor([[2.0]], dtype=torch.float64)
    for fn in (ops.fo_pool, ops.fo_pool_reference):
        c, c_n = fn(f, z, c0)
        assert c.flatten().tolist() == [3.0, 0.0] and c_n.item() == 0.0
        # reverse: c1 = .25*2 + .75*(-1) = -.25, c0' = .5*(-.25) + .5*4 = 1.875
        c, c_n = fn(f, z, c0, reverse=True)
        assert c.flatten().tolist() == [1.875, -0.25] and c_n.item() == 1.875
        c, c_n = fn(f, z, c0, torch.tensor([0]))
        assert c.flatten().tolist() == [0.0, 0.0] and c_n.item() == 2.0


# --------------------------------------------------------------------------
# packed layout, and agreement with the padded layout
# --------------------------------------------------------------------------

def pack(x, lengths):
    return pack_padded_sequence(x, lengths, enforce_sorted=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 37), (12, 8, 64), (3, 9, 2)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fo_pool_packed(device, shape, reverse, dtype):
    kernel_device(device)
    T, B, H = shape
    gen = torch.Generator().manual_seed(T * 1000 + B * 10 + H + reverse)
    f, z, c0, _ = random_inputs(T, B, H, gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    pf, pz = pack(f, lengths), pack(z, lengths)
    bs = pf.batch_sizes
    c0s = c0[pf.sorted_indices]
    fk, zk, ck = (leaf(x, dtype, device) for x in (pf.data, pz.data, c0s))
    c, c_n = ops.fo_pool_packed(fk, zk, bs, ck, reverse=reverse)
    fr, zr, cr = (leaf(x, torch.float64, "cpu") for x in (pf.data, pz.data, c0s))
    c_ref, c_n_ref = ops.fo_pool_packed_reference(fr, zr, bs, cr, reverse=reverse)
    assert_close(c, c_ref, dtype)
    assert_close(c_n, c_n_ref, dtype)
    seeds = [torch.randn(c.shape, generator=gen, dtype=torch.float64),
             torch.randn(c_n.shape, generator=gen, dtype=torch.float64)]
    for a, b in zip(grads_of([c, c_n], [fk, zk, ck], seeds),
                    grads_of([c_ref, c_n_ref], [fr, zr, cr], seeds)):
        assert_close(a, b, dtype)
    # packed == padded (packing, running, unpacking with padding 0)
    c_pad, c_n_pad = ops.fo_pool(f.to(device), z.to(device), c0.to(device), lengths,
                                 reverse=reverse)
    assert_close(pack(c_pad.cpu(), lengths).data, c.detach(), dtype)
    assert_close(c_n_pad[pf.sorted_indices.to(device)], c_n.detach(), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_without_c0(device):
    kernel_device(device)
    gen = torch.Generator().manual_seed(3)
    f, z, _, _ = random_inputs(5, 3, 4, gen)
    lengths = torch.tensor([5, 2, 4])
    pf, pz = pack(f, lengths), pack(z, lengths)
    fk, zk = leaf(pf.data, torch.float64, device), leaf(pz.data, torch.float64, device)
    c, c_n = ops.fo_pool_packed(fk, zk, pf.batch_sizes)
    c_ref, c_n_ref = ops.fo_pool_packed_reference(pf.data, pz.data, pf.batch_sizes)
    assert_close(c, c_ref, torch.float64)
    assert_close(c_n, c_n_ref, torch.float64)
    c_n.sum().backward()  # only c_n used: grad_c arrives as None/zeros
    assert fk.grad is not None and torch.isfinite(fk.grad).all()


# --------------------------------------------------------------------------
# fused pre-activation variants
# --------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 5, 33), (11, 3, 64)])
def test_fo_pool_fused(device, output_gate, reverse, shape):
    kernel_device(device)
    T, B, H = shape
    G = 3 if output_gate else 2
    gen = torch.Generator().manual_seed(T * 100 + H + 7 * output_gate + reverse)
    _, _, c0, gates = random_inputs(T, B, H, gen, G)
    gates = gates * 2
    lengths = make_lengths("with_zero", T, B, gen)
    dtypes = [torch.float64, torch.float32] + ([torch.float16, torch.bfloat16]
                                               if device == "cuda" else [torch.bfloat16])
    for dtype in dtypes:
        gk, ck = leaf(gates, dtype, device, noncontig=True), leaf(c0, dtype, device)
        h, c_n = ops.fo_pool_fused(gk, ck, lengths, output_gate=output_gate, reverse=reverse)
        assert h.shape == (T, B, H) and c_n.shape == (B, H)
        gr = leaf(gk.detach().double().cpu(), torch.float64, "cpu")
        cr = leaf(ck.detach().double().cpu(), torch.float64, "cpu")
        h_ref, c_n_ref = ops.fo_pool_fused_reference(gr, cr, lengths, output_gate=output_gate,
                                                     reverse=reverse)
        assert_close(h, h_ref, dtype)
        assert_close(c_n, c_n_ref, dtype)
        seeds = [torch.randn(T, B, H, generator=gen, dtype=torch.float64),
                 torch.randn(B, H, generator=gen, dtype=torch.float64)]
        for a, b in zip(grads_of([h, c_n], [gk, ck], seeds),
                        grads_of([h_ref, c_n_ref], [gr, cr], seeds)):
            assert_close(a, b, dtype)

        # packed fused on the sequences with length > 0
        keep = lengths > 0
        L = lengths[keep]
        pg = pack(gates[:, keep], L)
        c0p = c0[keep][pg.sorted_indices]
        gpk, cpk = leaf(pg.data, dtype, device), leaf(c0p, dtype, device)
        hp, c_np = ops.fo_pool_fused_packed(gpk, pg.batch_sizes, cpk, output_gate=output_gate,
                                            reverse=reverse)
        gpr = leaf(gpk.detach().double().cpu(), torch.float64, "cpu")
        cpr = leaf(cpk.detach().double().cpu(), torch.float64, "cpu")
        hp_ref, c_np_ref = ops.fo_pool_fused_packed_reference(
            gpr, pg.batch_sizes, cpr, output_gate=output_gate, reverse=reverse)
        assert_close(hp, hp_ref, dtype)
        assert_close(c_np, c_np_ref, dtype)
        seeds = [torch.randn(hp.shape, generator=gen, dtype=torch.float64),
                 torch.randn(c_np.shape, generator=gen, dtype=torch.float64)]
        for a, b in zip(grads_of([hp, c_np], [gpk, cpk], seeds),
                        grads_of([hp_ref, c_np_ref], [gpr, cpr], seeds)):
            assert_close(a, b, dtype)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("unroll", ["4", "8", "16"])
def test_cuda_every_unroll_instance(monkeypatch, unroll):
    """Each compiled unroll factor of the CUDA kernels (the launcher picks one
    by the number of columns; QRNN_LM_CUDA_UNROLL forces it) against float64,
    with T not a multiple of any factor and lengths 0, 1 and T: full chunks,
    the tail ladder and the step from c0 all run."""
    kernel_device("cuda")
    monkeypatch.setenv("QRNN_LM_CUDA_UNROLL", unroll)
    T, B, H = 37, 6, 45
    gen = torch.Generator().manual_seed(int(unroll))
    f, z, c0, gates = random_inputs(T, B, H, gen, 3)
    lengths = torch.tensor([37, 0, 1, 17, 36, 5])
    seeds = [torch.randn(T, B, H, generator=gen, dtype=torch.float64),
             torch.randn(B, H, generator=gen, dtype=torch.float64)]
    keep = lengths > 0
    pg = pack(gates[:, keep], lengths[keep])
    pseeds = [torch.randn(pg.data.shape[0], H, generator=gen, dtype=torch.float64),
              torch.randn(int(keep.sum()), H, generator=gen, dtype=torch.float64)]
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        for reverse in (False, True):
            runs = [
                (lambda a, c, r=reverse: ops.fo_pool(a[0], a[1], c, lengths, reverse=r),
                 lambda a, c, r=reverse: ops.fo_pool_reference(a[0], a[1], c, lengths, reverse=r),
                 [f, z], c0, seeds),
                (lambda a, c, r=reverse: ops.fo_pool_fused(a[0], c, lengths, reverse=r),
                 lambda a, c, r=reverse: ops.fo_pool_fused_reference(a[0], c, lengths, reverse=r),
                 [gates * 2], c0, seeds),
                (lambda a, c, r=reverse: ops.fo_pool_fused_packed(a[0], pg.batch_sizes, c, reverse=r),
                 lambda a, c, r=reverse: ops.fo_pool_fused_packed_reference(a[0], pg.batch_sizes, c,
                                                                            reverse=r),
                 [pg.data * 2], c0[keep][pg.sorted_indices], pseeds),
            ]
            for run, ref, args, c_init, sd in runs:
                xk = [leaf(a, dtype, "cuda") for a in args]
                ck = leaf(c_init, dtype, "cuda")
                out = run(xk, ck)
                xr = [leaf(a.detach().double().cpu(), torch.float64, "cpu") for a in xk]
                cr = leaf(ck.detach().double().cpu(), torch.float64, "cpu")
                out_ref = ref(xr, cr)
                for a, b in zip(out, out_ref):
                    assert_close(a, b, dtype)
                for a, b in zip(grads_of(out, xk + [ck], sd), grads_of(out_ref, xr + [cr], sd)):
                    assert_close(a, b, dtype)


@pytest.mark.parametrize("baseline", [False, True])
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("H", [45, 300])
def test_fo_pool_fused_cpu_isa_versions(monkeypatch, baseline, output_gate, H):
    """Both CPU versions of the fused kernels (AVX2+FMA where the CPU has it,
    and baseline x86-64, forced by QRNN_LM_CPU_BASELINE=1) match float64 on
    gate values from tiny to saturating (|x| up to 120, past the exp clamp),
    with H not a multiple of the vector width (vector body and tail) and, for
    half/bfloat16, of the backward's 128-column chunks."""
    kernel_device("cpu")
    monkeypatch.setenv("QRNN_LM_CPU_BASELINE", "1" if baseline else "0")
    T, B = 7, 3
    G = 3 if output_gate else 2
    gen = torch.Generator().manual_seed(5 + output_gate + H)
    scale = torch.tensor([1e-6, 1e-2, 0.5, 2.0, 8.0, 30.0, 120.0], dtype=torch.float64)
    gates = torch.randn(T, B, G * H, generator=gen, dtype=torch.float64)
    gates = gates * scale[torch.randint(0, len(scale), gates.shape, generator=gen)]
    gates[0, 0, :4] = torch.tensor([0.0, -0.0, 88.5, -88.5])
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 0])
    seeds = [torch.randn(T, B, H, generator=gen, dtype=torch.float64),
             torch.randn(B, H, generator=gen, dtype=torch.float64)]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        gk, ck = leaf(gates, dtype, "cpu"), leaf(c0, dtype, "cpu")
        h, c_n = ops.fo_pool_fused(gk, ck, lengths, output_gate=output_gate)
        # compare against float64 run on the inputs as rounded to dtype
        gq = leaf(gk.detach().double(), torch.float64, "cpu")
        cq = leaf(ck.detach().double(), torch.float64, "cpu")
        hq, c_nq = ops.fo_pool_fused_reference(gq, cq, lengths, output_gate=output_gate)
        assert_close(h, hq, dtype)
        assert_close(c_n, c_nq, dtype)
        for a, b in zip(grads_of([h, c_n], [gk, ck], seeds),
                        grads_of([hq, c_nq], [gq, cq], seeds)):
            assert_close(a, b, dtype)


# --------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile
# --------------------------------------------------------------------------

def _gradcheck_cases(device):
    gen = torch.Generator().manual_seed(11)
    T, B, H = 5, 3, 4
    f, z, c0, gates = random_inputs(T, B, H, gen, 3)
    lengths = torch.tensor([5, 0, 3])
    plengths = torch.tensor([5, 2, 3])
    pf, pz, pg = pack(f, plengths), pack(z, plengths), pack(gates, plengths)
    bs = pf.batch_sizes

    def d(x):
        return x.to(device).requires_grad_(True)

    for rev in (False, True):
        yield (lambda f, z, c0, rev=rev: ops.fo_pool(f, z, c0, lengths, reverse=rev),
               (d(f), d(z), d(c0)))
        yield (lambda f, z, c0, rev=rev: ops.fo_pool_packed(f, z, bs, c0, reverse=rev),
               (d(pf.data), d(pz.data), d(c0)))
        yield (lambda g, c0, rev=rev: ops.fo_pool_fused(g, c0, lengths, reverse=rev),
               (d(gates), d(c0)))
        yield (lambda g, c0, rev=rev: ops.fo_pool_fused_packed(g, bs, c0, output_gate=False,
                                                               reverse=rev),
               (d(pg.data[:, :8]), d(c0)))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    kernel_device(device)
    for fn, args in _gradcheck_cases(device):
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def _opcheck_samples(device):
    gen = torch.Generator().manual_seed(5)
    T, B, H = 4, 3, 5
    f, z, c0, gates = random_inputs(T, B, H, gen, 3)
    lengths = torch.tensor([4, 0, 2], device=device)
    plengths = torch.tensor([4, 1, 2])
    pf, pz, pg = pack(f, plengths), pack(z, plengths), pack(gates, plengths)
    bs = pf.batch_sizes

    def d(x, rg=True):
        return x.to(device).requires_grad_(rg)

    q = torch.ops.qrnn_lm
    return [
        (q.fo_pool.default, (d(f), d(z), d(c0), lengths, False)),
        (q.fo_pool.default, (d(f), d(z), None, None, True)),
        (q.fo_pool_packed.default, (d(pf.data), d(pz.data), bs, d(c0), True)),
        (q.fo_pool_fused.default, (d(gates), d(c0), lengths, True, False)),
        (q.fo_pool_fused.default, (d(gates[..., :2 * H]), None, lengths, False, True)),
        (q.fo_pool_fused_packed.default, (d(pg.data), bs, d(c0), True, False)),
        # the backward ops are ops too (fake impls, schema)
        (q.fo_pool_backward.default, (d(f, False), d(c0, False), d(f, False), d(z, False),
                                      d(f, False), d(c0, False), lengths, True)),
        (q.fo_pool_fused_backward.default, (d(f, False), d(c0, False), d(gates, False),
                                            d(f, False), None, lengths, True, False)),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    kernel_device(device)
    for op, args in _opcheck_samples(device):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    kernel_device(device)
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def layer(f_pre, z_pre, c0, lengths):
        c, c_n = ops.fo_pool(torch.sigmoid(f_pre), torch.tanh(z_pre), c0, lengths)
        return c * 2, c_n

    gen = torch.Generator().manual_seed(9)
    fp = torch.randn(6, 3, 8, generator=gen).to(device).requires_grad_(True)
    zp = torch.randn(6, 3, 8, generator=gen).to(device).requires_grad_(True)
    c0 = torch.randn(3, 8, generator=gen).to(device)
    lengths = torch.tensor([6, 2, 0], device=device)
    c, c_n = layer(fp, zp, c0, lengths)
    (c.sum() + c_n.sum()).backward()
    fr = fp.detach().clone().requires_grad_(True)
    zr = zp.detach().clone().requires_grad_(True)
    c_ref, c_n_ref = ops.fo_pool_reference(torch.sigmoid(fr), torch.tanh(zr), c0, lengths)
    (c_ref.sum() * 2 + c_n_ref.sum()).backward()
    torch.testing.assert_close(c, c_ref * 2)
    torch.testing.assert_close(c_n, c_n_ref)
    torch.testing.assert_close(fp.grad, fr.grad)
    torch.testing.assert_close(zp.grad, zr.grad)


# --------------------------------------------------------------------------
# bad inputs: a ValueError (Python) / RuntimeError (C++) naming the problem
# --------------------------------------------------------------------------

def _bad_cases(device):
    f = torch.rand(4, 3, 5, device=device)
    z = torch.randn(4, 3, 5, device=device)
    g = torch.randn(4, 3, 15, device=device)
    L = torch.tensor([4, 1, 2])
    bs = torch.tensor([3, 2, 2, 1])
    fp, zp = torch.rand(8, 5, device=device), torch.randn(8, 5, device=device)
    cases = [
        (lambda: ops.fo_pool(f[0], z[0]), "f must have shape"),
        (lambda: ops.fo_pool(f, z[:, :2]), "z has shape"),
        (lambda: ops.fo_pool(f, z.double()), "z has dtype"),
        (lambda: ops.fo_pool(f.long(), z.long()), "f must be float16"),
        (lambda: ops.fo_pool(f, z, torch.zeros(3, 4, device=device)), "c0 must have shape"),
        (lambda: ops.fo_pool(f, z, torch.zeros(3, 5, device=device).double()), "c0 has dtype"),
        (lambda: ops.fo_pool(f, z, lengths=L.int()), "lengths must have dtype int64"),
        (lambda: ops.fo_pool(f, z, lengths=torch.tensor([4, 5, 1])), "lengths must lie in"),
        (lambda: ops.fo_pool(f, z, lengths=torch.tensor([4, -1, 1])), "lengths must lie in"),
        (lambda: ops.fo_pool(f, z, lengths=torch.tensor([4, 1])), "lengths must have shape"),
        (lambda: ops.fo_pool(f, z, lengths=[4, 1, 2]), "lengths must be an int64 Tensor"),
        (lambda: ops.fo_pool(f, z, lengths=torch.tensor([4, 1, 2], device="meta")),
         "lengths is on meta; put it on the CPU"),
        (lambda: ops.fo_pool_fused(g, lengths=torch.tensor([4, 5, 1])),
         r"fo_pool_fused: lengths must lie in \[0, 4\]"),
        (lambda: ops.fo_pool_packed(fp, zp, torch.tensor([2, 3, 2, 1])), "non-increasing"),
        (lambda: ops.fo_pool_packed(fp, zp, torch.tensor([3, 2, 1])), "sum to"),
        (lambda: ops.fo_pool_packed(fp, zp, torch.tensor([3, 2, 2, 1, 0])), "positive"),
        (lambda: ops.fo_pool_packed(fp, zp, bs.int()), "int64 CPU"),
        (lambda: ops.fo_pool_packed(fp, zp, bs, torch.zeros(2, 5, device=device)),
         "c0 must have shape"),
        (lambda: ops.fo_pool_fused(g[..., :14]), "must be 3\\*H"),
        (lambda: ops.fo_pool_fused(g[..., :13], output_gate=False), "must be 2\\*H"),
        (lambda: ops.fo_pool_fused(g[0]), "gates must have shape"),
        (lambda: ops.fo_pool_fused_packed(g[:1], torch.tensor([2, 1])), "gates must have shape"),
        (lambda: ops.fo_pool_fused_packed(g[0, :2], torch.tensor([1, 1, 1])), "sum to"),
    ]
    if device == "cuda":
        cases += [
            (lambda: ops.fo_pool(f, z.cpu()), "z is on"),
            (lambda: ops.fo_pool(f, z, torch.zeros(3, 5)), "c0 is on"),
        ]
    return cases


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_value_error(device):
    if device == "cuda":
        kernel_device(device)
    for fn, pattern in _bad_cases(device):
        with pytest.raises(ValueError, match=pattern):
            fn()


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_caught_in_cpp(device):
    """Calling the registered ops directly skips the Python checks; C++ still refuses."""
    kernel_device(device)
    q = torch.ops.qrnn_lm
    f = torch.rand(4, 3, 5, device=device)
    z = torch.randn(4, 3, 5, device=device)
    cases = [
        # the numbers too: a module carrying its own copy of libstdc++ loses
        # them (or crashes) when it formats a message
        (lambda: q.fo_pool(f, z[:, :2], None, None, False),
         r"z has shape \[4, 2, 5\] but f has \[4, 3, 5\]"),
        (lambda: q.fo_pool(f[0], z[0], None, None, False), "f must have shape"),
        (lambda: q.fo_pool(f, z.double(), None, None, False), "z has dtype"),
        (lambda: q.fo_pool(f, z, torch.zeros(2, 5, device=device), None, False),
         "c0 must have shape"),
        (lambda: q.fo_pool(f, z, None, torch.tensor([4, 9, 0]), False), "outside"),
        (lambda: q.fo_pool(f, z, None, torch.tensor([4, 1, 0], dtype=torch.int32), False),
         "int64"),
        (lambda: q.fo_pool_packed(f[0], z[0], torch.tensor([1, 2]), None, False),
         "non-increasing"),
        (lambda: q.fo_pool_packed(f[0], z[0], torch.tensor([2, 2]), None, False), "sum to"),
        (lambda: q.fo_pool_fused(torch.randn(4, 3, 7, device=device), None, None, True, False),
         "3\\*H"),
    ]
    for fn, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern):
            fn()


def test_extension_uses_the_shared_cpp_runtime():
    """qrnn_lm._C must link libstdc++.so.6, not carry a static copy (setup.py
    names the shared library: qrnn_lm._build.shared_libstdcxx)."""
    import shutil
    import subprocess
    import sys
    if not sys.platform.startswith("linux") or shutil.which("readelf") is None:
        pytest.skip("needs Linux and readelf")
    try:
        import qrnn_lm._C as C
    except ImportError:
        pytest.skip("no prebuilt qrnn_lm._C (JIT build or fallback in use)")
    out = subprocess.run(["readelf", "-d", C.__file__], capture_output=True, text=True).stdout
    assert "libstdc++.so.6" in out, out


def test_fallback_reference_handles_half_precision():
    # the references compute half/bfloat16 in float32, like the kernels
    gen = torch.Generator().manual_seed(1)
    f, z, c0, _ = random_inputs(6, 2, 3, gen)
    c, c_n = ops.fo_pool_reference(f.bfloat16(), z.bfloat16(), c0.bfloat16())
    c64, c_n64 = ops.fo_pool_reference(f, z, c0)
    assert c.dtype == torch.bfloat16
    assert_close(c, c64, torch.bfloat16)
    assert_close(c_n, c_n64, torch.bfloat16)


# --------------------------------------------------------------------------
# loader: prebuilt module for another torch, and the reference fallback
# --------------------------------------------------------------------------

def test_loader_refuses_extension_built_for_another_torch(tmp_path, monkeypatch):
    from qrnn_lm import _ext
    (tmp_path / "_build_info.json").write_text('{"torch": "0.0.1", "cuda": false}')
    monkeypatch.setattr(_ext, "_PKG", tmp_path)
    why = _ext._try_prebuilt()
    assert why is not None and "built against torch 0.0.1" in why


def test_fallback_warns_once_and_uses_reference():
    import subprocess
    import sys
    code = r'''
import importlib.abc, os, sys, warnings
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "qrnn_lm._C":
            raise ImportError("blocked by the test")
sys.meta_path.insert(0, Block())
os.environ["QRNN_LM_NO_JIT"] = "1"
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    import torch
    from qrnn_lm import ops
    f, z = torch.rand(3, 2, 4, dtype=torch.float64), torch.randn(3, 2, 4, dtype=torch.float64)
    c, c_n = ops.fo_pool(f, z)
    ops.fo_pool(f, z)
    r, r_n = ops.fo_pool_reference(f, z)
    assert torch.equal(c, r) and torch.equal(c_n, r_n)
msgs = [str(x.message) for x in w if "qrnn_lm" in str(x.message)]
print(len(msgs), sorted(ops.compiled_devices()))
print(msgs[0] if msgs else "")
'''
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    first, msg = out.stdout.splitlines()[:2]
    assert first == "1 []"
    assert "blocked by the test" in msg and "pip install --no-build-isolation" in msg
