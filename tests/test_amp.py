"""Mixed precision on the CPU: the model and fo-pooling under bf16 autocast, and qrnn_lm.amp."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm import amp, ops
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.model import ModelConfig, RNNLanguageModel
from qrnn_lm.rnn import pack_list


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def tiny_model(rnn, softmax, **kw):
    d = dict(vocab_size=40, rnn=rnn, emsize=16, nhid=24, nlayers=2, window=2, softmax=softmax,
             dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0,
             cutoffs=[8, 20] if softmax == "adaptive" else [])
    d.update(kw)
    torch.manual_seed(0)
    return RNNLanguageModel(ModelConfig(**d)).train()


def loss_and_grads(model, x, y, autocast):
    model.zero_grad(set_to_none=True)
    with autocast():
        nll, state = model(x, targets=y)
        loss = nll.mean()
    loss.backward()
    return nll, loss, state, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------
# the model under CPU bf16 autocast
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_model_trains_under_cpu_bf16_autocast(rnn, softmax):
    model = tiny_model(rnn, softmax)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 40, (9, 3), generator=g), torch.randint(0, 40, (9, 3), generator=g)
    seen = {}

    def note(key, t):
        seen.setdefault(key, t.dtype)  # returns None: the hook leaves the output alone

    out_layer = model.decoder if softmax == "full" else model.decoder.head
    hooks = [model.rnns[0].register_forward_hook(lambda m, i, o: note("rnn", o[0])),
             model.decoder.register_forward_pre_hook(lambda m, i: note("out_in", i[0])),
             out_layer.register_forward_hook(lambda m, i, o: note("out", o))]
    _, loss32, _, grads32 = loss_and_grads(model, x, y, contextlib.nullcontext)
    seen.clear()
    nll, loss16, state, grads16 = loss_and_grads(model, x, y, bf16_autocast)
    for h in hooks:
        h.remove()
    # the RNN layers ran in bf16, the output layer and the loss in float32
    assert seen == {"rnn": torch.bfloat16, "out_in": torch.float32, "out": torch.float32}
    assert nll.dtype == torch.float32 and math.isfinite(loss16.item())
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.03)
    # weights stay float32; their gradients are float32, finite, and close in direction
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert grads16.keys() == grads32.keys()
    for name, g16 in grads16.items():
        assert g16.dtype == torch.float32 and bool(torch.isfinite(g16).all()), name
        cos = F.cosine_similarity(g16.flatten(), grads32[name].flatten(), dim=0)
        assert cos > 0.95, (name, cos)
    # the state carried to the next chunk is float32 whatever autocast did
    tensors = [t for s in state for t in (s if rnn == "lstm" else (s.c, *s.inputs))]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)
    with bf16_autocast():  # and a carried state runs the next chunk
        nll2, _ = model(x, state, targets=y)
    assert bool(torch.isfinite(nll2).all())


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_packed_input_and_log_probs_under_cpu_bf16_autocast(rnn, softmax):
    model = tiny_model(rnn, softmax, dropout=0.2, dropouth=0.2, dropouti=0.2, dropoute=0.1, zoneout=0.1
                       if rnn == "qrnn" else 0.0)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 40, (n,), generator=g) for n in (6, 4, 1)]
    x, y = pack_list(seqs), pack_list([s.flip(0) for s in seqs])
    with bf16_autocast():
        nll, _ = model(x, targets=y)
    nll.mean().backward()
    assert nll.shape == (11,) and bool(torch.isfinite(nll).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    model.eval()
    feats, _ = model(torch.stack([s[:1] for s in seqs], 1))
    ref = model.log_probs(feats.reshape(-1, feats.size(-1)))
    with bf16_autocast():
        feats16, _ = model(torch.stack([s[:1] for s in seqs], 1))
        logp = model.log_probs(feats16.reshape(-1, feats16.size(-1)))
    assert feats16.dtype == torch.bfloat16 and logp.dtype == torch.float32
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logp, ref, rtol=0.05, atol=0.05)


@pytest.mark.skipif("cpu" not in ops.compiled_devices(), reason="no compiled CPU kernel")
@pytest.mark.parametrize("zoneout", [0.0, 0.1])
def test_qrnn_runs_the_compiled_kernels_in_bf16_under_cpu_autocast(zoneout):
    """No QRNN piece falls back to the reference loop or to float32 under CPU autocast."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "qrnn_lm":
                calls.append((func.__name__.split(".")[0], args[0].dtype))
            return func(*args, **(kwargs or {}))

    model = tiny_model("qrnn", "adaptive", zoneout=zoneout)
    x = torch.randint(0, 40, (5, 2))
    with Record():
        with bf16_autocast():
            nll, _ = model(x, targets=x)
        nll.mean().backward()
    op = "fo_pool_fused" if zoneout == 0.0 else "fo_pool"
    assert sorted(set(calls)) == [(op, torch.bfloat16), (op + "_backward", torch.bfloat16)]
    assert len(calls) == 4  # forward and backward of both layers


# ---------------------------------------------------------------------------
# fo-pooling with bf16 inputs under CPU autocast against the float64 reference
# ---------------------------------------------------------------------------

SHAPES = [((1, 1, 5), None), ((1, 3, 5), [0, 1, 0]), ((7, 1, 5), [7]), ((6, 3, 5), [0, 6, 3])]


def _bf16(t):
    return t.bfloat16().requires_grad_()


def _compare(out16, out64, inputs16, inputs64):
    """Forward outputs and the gradients of a bf16-rounded random loss."""
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(o.shape, generator=g).bfloat16() for o in out16]
    torch.autograd.backward(list(out16), weights)
    torch.autograd.backward(list(out64), [w.double() for w in weights])
    for a, b in zip(out16, out64):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.double(), b, rtol=2e-2, atol=2e-2)
    for a, b in zip(inputs16, inputs64):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("shape,lengths", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_fo_pool_bf16_under_cpu_autocast(shape, lengths, reverse):
    g = torch.Generator().manual_seed(4)
    f, z, c0 = torch.rand(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape[1:], generator=g)
    lens = None if lengths is None else torch.tensor(lengths)
    ins16 = [_bf16(t) for t in (f, z, c0)]
    ins64 = [t.detach().double().requires_grad_() for t in ins16]  # the same rounded values
    with bf16_autocast():
        out16 = ops.fo_pool(*ins16, lens, reverse=reverse)
    out64 = ops.fo_pool_reference(*ins64, lens, reverse=reverse)
    _compare(out16, out64, ins16, ins64)


@pytest.mark.parametrize("shape,lengths", SHAPES)
@pytest.mark.parametrize("output_gate", [True, False])
def test_fo_pool_fused_bf16_under_cpu_autocast(shape, lengths, output_gate):
    T, B, H = shape
    G = 3 if output_gate else 2
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(T, B, 4, generator=g), torch.randn(G * H, 4, generator=g)
    lens = None if lengths is None else torch.tensor(lengths)
    c0 = _bf16(torch.randn(B, H, generator=g))
    with bf16_autocast():
        gates = F.linear(x, w)  # autocast makes the gates bf16, as in the QRNN
        assert gates.dtype == torch.bfloat16
        gates = gates.detach().requires_grad_()
        out16 = ops.fo_pool_fused(gates, c0, lens, output_gate=output_gate)
    gates64, c064 = (t.detach().double().requires_grad_() for t in (gates, c0))
    out64 = ops.fo_pool_fused_reference(gates64, c064, lens, output_gate=output_gate)
    _compare(out16, out64, [gates, c0], [gates64, c064])


# ---------------------------------------------------------------------------
# qrnn_lm.amp
# ---------------------------------------------------------------------------

ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
        "flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
        "bugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu avx512_bf16\n")
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\nbugs\t\t: avx512_bf16_fake\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n"


def test_cpu_bf16_probe_parses_cpuinfo_flags():
    assert amp.cpu_has_native_bf16(ZEN4) and amp.cpu_bf16_feature(ZEN4) == "AVX-512 BF16"
    assert amp.cpu_has_native_bf16(SAPPHIRE_RAPIDS) and amp.cpu_bf16_feature(SAPPHIRE_RAPIDS) == "AMX"
    for text in (SKYLAKE, ARM, ""):
        assert not amp.cpu_has_native_bf16(text)
        assert amp.cpu_bf16_feature(text) is None
    assert isinstance(amp.cpu_has_native_bf16(), bool)  # this machine, whatever it has


def test_cpu_bf16_probe_is_false_on_other_processors(monkeypatch):
    monkeypatch.setattr(amp.platform, "machine", lambda: "aarch64")
    assert amp.cpu_has_native_bf16() is False


def test_choose_amp_rules():
    def never():
        raise AssertionError("measured without native bf16")

    choice, reason = amp.choose_amp("cpu", never, native=False)
    assert choice == "off" and "no native bf16" in reason
    choice, reason = amp.choose_amp("cpu", 1.5, native="AVX-512 BF16")
    assert (choice, reason) == ("bf16", "bf16: CPU has AVX-512 BF16 and a bf16 step measured 1.50x faster")
    assert amp.choose_amp("cpu", lambda: 1.5, native="AMX")[0] == "bf16"
    assert amp.choose_amp("cpu", 1.1, native=True)[0] == "bf16"
    choice, reason = amp.choose_amp("cpu", 1.0, native="AVX-512 BF16")
    assert choice == "off" and "1.00x" in reason
    assert amp.choose_amp("cpu", None, native=True)[0] == "off"
    assert amp.choose_amp("cuda", 2.0, native=True)[0] == "off"
    assert amp.choose_amp("cuda", requested="bf16") == ("bf16", "bf16: --amp bf16 as given")
    assert amp.choose_amp("cuda", requested="fp16")[0] == "fp16"
    assert amp.choose_amp("cpu", 1.0, requested="bf16", native=False)[0] == "bf16"


def test_fp16_on_cpu_is_refused_in_one_sentence():
    for call in (lambda: amp.autocast_for("cpu", "fp16"), lambda: amp.choose_amp("cpu", requested="fp16")):
        with pytest.raises(QrnnLmError) as e:
            call()
        msg = str(e.value)
        assert "--amp bf16" in msg and msg.endswith(".") and msg.count(". ") == 0 and "\n" not in msg
    with pytest.raises(QrnnLmError, match="one of off, bf16, fp16"):
        amp.autocast_for("cpu", "fp8")


def test_autocast_for():
    assert amp.autocast_for("cpu", "off")().__enter__() is None
    assert amp.autocast_for("cuda", None) is amp.autocast_for("cpu", "off")
    with amp.autocast_for("cpu", "bf16")():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    factory = amp.autocast_for("cuda", "fp16")  # built without a GPU; entered only on one
    assert factory.keywords["dtype"] == torch.float16


def test_measure_bf16_speedup_leaves_the_model_alone():
    model = tiny_model("qrnn", "adaptive", dropout=0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 40, (5, 2))
    rng = torch.random.get_rng_state()
    ratio = amp.measure_bf16_speedup(model, (x, x), steps=2, max_seconds=0.5)
    assert ratio > 0 and math.isfinite(ratio)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert amp.measure_bf16_speedup(lambda: tiny_model("lstm", "full"), (x, x), steps=1) > 0
