"""Tests for the QRNN / LSTM encoders (qrnn_lm.rnn)."""
import collections
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from qrnn_lm import checks, ops
from qrnn_lm.rnn import (
    LSTM,
    QRNN,
    QRNNState,
    detach_state,
    pack_list,
    reorder_state,
    unpack_to_list,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def qrnn64(*args, seed=0, **kw):
    torch.manual_seed(seed)
    return QRNN(*args, **kw).double().eval()


def rand_seqs(lengths, feat, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, feat, generator=g, dtype=dtype) for n in lengths]


def pad(seqs, T=None):
    T = T or max(len(s) for s in seqs)
    out = seqs[0].new_zeros(T, len(seqs), seqs[0].shape[1])
    for b, s in enumerate(seqs):
        out[: len(s), b] = s
    return out


# ------------------------------------------------------------------ helpers


def test_pack_list_round_trip_keeps_order_and_1d():
    seqs = [torch.arange(n) for n in (3, 5, 1, 4)]
    packed = pack_list(seqs)
    assert isinstance(packed, PackedSequence)
    back = unpack_to_list(packed)
    assert [b.tolist() for b in back] == [s.tolist() for s in seqs]
    seqs2 = rand_seqs([2, 6, 3], 4)
    for a, b in zip(unpack_to_list(pack_list(seqs2)), seqs2):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "bad, msg",
    [([], "empty list"), ([torch.zeros(0, 3)], "length-0"), ([torch.zeros(2, 3), torch.zeros(2, 4)], "does not match"),
     ([torch.zeros(2, 3, 1)], "expected"), (torch.zeros(3, 2), "list of tensors")],
)
def test_pack_list_rejects_bad_input(bad, msg):
    with pytest.raises(ValueError, match=msg):
        pack_list(bad)


# ------------------------------------------------------------------ packed / padded / alone


@pytest.mark.parametrize(
    "window,bidirectional,output_gate,zoneout",
    [(1, False, True, 0.0), (3, False, True, 0.0), (2, True, False, 0.0), (3, True, True, 0.3), (1, True, True, 0.0)],
)
def test_packed_padded_and_alone_agree(window, bidirectional, output_gate, zoneout):
    m = qrnn64(3, 4, 2, window=window, bidirectional=bidirectional, output_gate=output_gate, zoneout=zoneout)
    lengths = [4, 7, 1, 5, 2]
    seqs = rand_seqs(lengths, 3)
    D, L = m.num_directions, m.num_layers
    g = torch.Generator().manual_seed(5)
    c0 = torch.randn(L * D, len(seqs), 4, generator=g, dtype=torch.float64)
    hist = tuple(torch.randn(window - 1, len(seqs), m.layer_input_size(l), generator=g, dtype=torch.float64)
                 for l in range(L)) if window > 1 else ()
    state = QRNNState(c0, hist)

    out_p, st_p = m(pack_list(seqs), state)
    x = pad(seqs, T=9)
    x[7:] = 5.0  # garbage in padding must not leak anywhere
    for b, n in enumerate(lengths):
        x[n:, b] = 3.0
    out_t, st_t = m(x, state, lengths=torch.tensor(lengths))
    assert out_t.shape == (9, 5, D * 4)
    for b, (n, o) in enumerate(zip(lengths, unpack_to_list(out_p))):
        alone_state = reorder_state(state, torch.tensor([b]))
        o1, st1 = m(seqs[b].unsqueeze(1), alone_state)
        close(o, o1[:, 0])
        close(out_t[:n, b], o1[:, 0])
        assert torch.all(out_t[n:, b] == 0)
        close(st_p.c[:, b], st1.c[:, 0])
        for h_p, h_t, h1 in zip(st_p.inputs, st_t.inputs, st1.inputs):
            close(h_p[:, b], h1[:, 0])
            close(h_t[:, b], h1[:, 0])
    close(st_t.c, st_p.c)


def test_padded_lengths_zero_keeps_state():
    m = qrnn64(3, 4, 2, window=3)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    c0 = torch.randn(2, 3, 4, dtype=torch.float64)
    hist = (torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64))
    out, st = m(x, QRNNState(c0, hist), lengths=torch.tensor([0, 5, 2]))
    assert torch.all(out[:, 0] == 0)
    close(st.c[:, 0], c0[:, 0])
    close(st.inputs[0][:, 0], hist[0][:, 0])
    close(st.inputs[0][:, 2], x[:2, 2])  # the last two inputs of a length-2 sequence


# ------------------------------------------------------------------ streaming exactness


def _split(x, cuts):
    bounds = [0, *cuts, x.shape[0]]
    return [x[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("window,layers", [(1, 1), (1, 3), (2, 2), (3, 1), (3, 3)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_chunked_equals_whole(window, layers, batch_first):
    m = qrnn64(3, 5, layers, window=window, batch_first=batch_first)
    x = torch.randn(11, 4, 3, dtype=torch.float64)
    whole, st_w = m(x.transpose(0, 1) if batch_first else x)
    outs, st = [], None
    for chunk in _split(x, [1, 2, 7]):  # chunks shorter than window - 1 included
        o, st = m(chunk.transpose(0, 1) if batch_first else chunk, st)
        outs.append(o.transpose(0, 1) if batch_first else o)
    chunked = torch.cat(outs, 0)
    close(chunked, whole.transpose(0, 1) if batch_first else whole)
    close(st.c, st_w.c)
    for a, b in zip(st.inputs, st_w.inputs):
        close(a, b)


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("packed", [False, True])
def test_chunked_variable_lengths_equals_whole(window, packed):
    """Each sequence cut at its own places (chunk lengths 0, 1, ...) equals one run."""
    m = qrnn64(2, 3, 2, window=window)
    totals = [6, 3, 8, 2]
    first = [2, 1, 5, 1] if packed else [0, 1, 5, 2]
    seqs = rand_seqs(totals, 2, seed=3)
    whole, st_w = m(pack_list(seqs))
    whole = unpack_to_list(whole)
    c1 = [s[:a] for s, a in zip(seqs, first)]
    c2 = [s[a:] for s, a in zip(seqs, first)]
    if packed:
        assert min(len(s) for s in c2) >= 1
        o1, st = m(pack_list(c1))
        o2, st = m(pack_list(c2), st)
        o1, o2 = unpack_to_list(o1), unpack_to_list(o2)
    else:
        l1, l2 = torch.tensor([len(s) for s in c1]), torch.tensor([len(s) for s in c2])
        p1, st = m(pad(c1, T=5) if max(l1) else torch.zeros(5, 4, 2, dtype=torch.float64), lengths=l1)
        p2, st = m(pad([s if len(s) else torch.zeros(1, 2, dtype=torch.float64) for s in c2]), st, lengths=l2)
        o1 = [p1[: n, b] for b, n in enumerate(l1.tolist())]
        o2 = [p2[: n, b] for b, n in enumerate(l2.tolist())]
    for b in range(len(seqs)):
        close(torch.cat([o1[b], o2[b]], 0), whole[b])
    close(st.c, st_w.c)
    for a, b in zip(st.inputs, st_w.inputs):
        close(a, b)


def test_reorder_state_then_continue():
    m = qrnn64(3, 4, 2, window=2)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    _, st = m(x[:4])
    idx = torch.tensor([2, 0, 0])
    o_re, _ = m(x[4:, idx], reorder_state(st, idx))
    _, st_sel = m(x[:4, idx])
    o_ref, _ = m(x[4:, idx], st_sel)
    close(o_re, o_ref)


def test_detach_state_cuts_graph():
    m = QRNN(3, 4, 2, window=2)
    _, st = m(torch.randn(5, 2, 3))
    assert st.c.requires_grad and st.inputs[1].requires_grad
    d = m.detach_state(st)
    assert isinstance(d, QRNNState)
    assert not d.c.requires_grad and not any(h.requires_grad for h in d.inputs)
    h, c = detach_state((torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)))
    assert not h.requires_grad and not c.requires_grad


# ------------------------------------------------------------------ bidirectional, window references


def _conv_layer_reference(x, w, b, window, output_gate, c0=None, hist=None, reverse=False):
    """One direction of one layer, for one sequence x (T, I): explicit conv1d + reference pool."""
    T, I = x.shape
    GH = w.shape[0]
    if reverse:  # the backward direction is the forward one on the reversed sequence
        h, cn = _conv_layer_reference(x.flip(0), w, b, window, output_gate, c0, None)
        return h.flip(0), cn
    left = torch.zeros(window - 1, I, dtype=x.dtype) if hist is None else hist
    xp = torch.cat([left, x], 0).t().unsqueeze(0)  # (1, I, k-1+T)
    conv_w = w.view(GH, window, I).permute(0, 2, 1)  # column block j <-> tap j
    gates = F.conv1d(xp, conv_w, b)[0].t().unsqueeze(1)  # (T, 1, GH)
    h, cn = ops.fo_pool_fused_reference(gates, c0, output_gate=output_gate)
    return h[:, 0], cn


@pytest.mark.parametrize("window", [1, 2, 4])
def test_window_matches_conv_reference(window):
    m = qrnn64(3, 4, 1, window=window)
    x = torch.randn(7, 3, dtype=torch.float64)
    hist = torch.randn(window - 1, 3, dtype=torch.float64)
    c0 = torch.randn(1, 4, dtype=torch.float64)
    out, st = m(x.unsqueeze(1), QRNNState(c0.unsqueeze(0), (hist.unsqueeze(1),) if window > 1 else ()))
    ref, cn = _conv_layer_reference(x, m.weight_l0, m.bias_l0, window, True, c0, hist)
    close(out[:, 0], ref)
    close(st.c[0], cn)


@pytest.mark.parametrize("window,output_gate", [(1, True), (3, False)])
def test_bidirectional_stack_matches_reversed_runs(window, output_gate):
    """Layer l+1 reads [forward | backward] of layer l; backward = forward on reversed input."""
    m = qrnn64(3, 4, 2, window=window, bidirectional=True, output_gate=output_gate, bias=False)
    assert m.bias_l0 is None
    lengths = [5, 2, 7]
    seqs = rand_seqs(lengths, 3, seed=7)
    out, st = m(pack_list(seqs))
    for b, (s, o) in enumerate(zip(seqs, unpack_to_list(out))):
        x = s
        for layer in range(2):
            w_f, _ = m._params(layer, 0)
            w_b, _ = m._params(layer, 1)
            h_f, c_f = _conv_layer_reference(x, w_f, None, window, output_gate)
            h_b, c_b = _conv_layer_reference(x, w_b, None, window, output_gate, reverse=True)
            close(st.c[2 * layer, b], c_f[0])
            close(st.c[2 * layer + 1, b], c_b[0])
            x = torch.cat([h_f, h_b], 1)
        close(o, x)


# ------------------------------------------------------------------ gradients, modes


def test_gradcheck_small_double_model():
    m = qrnn64(2, 2, 2, window=2, bidirectional=True, seed=3)
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def fn(x, c0, h0, *ps):
        pd = dict(zip(names, ps))
        out, st = torch.func.functional_call(
            m, pd, (x, QRNNState(c0, (h0, torch.zeros(1, 2, 4, dtype=torch.float64)))), {"lengths": lengths}
        )
        return out, st.c

    assert torch.autograd.gradcheck(fn, (x, c0, h0, *params), eps=1e-6, atol=1e-5)

    seqs = [torch.randn(n, 2, dtype=torch.float64) for n in (3, 1)]
    data = pack_list(seqs)

    def fn_packed(d, *ps):
        out, st = torch.func.functional_call(m, dict(zip(names, ps)), (data._replace(data=d),))
        return out.data, st.c

    assert torch.autograd.gradcheck(fn_packed, (data.data.clone().requires_grad_(), *params), eps=1e-6, atol=1e-5)


def test_eval_is_deterministic_and_train_is_not():
    m = qrnn64(3, 4, 3, window=2, dropout=0.5, zoneout=0.5, bidirectional=True)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    a, _ = m(x)
    b, _ = m(x)
    assert torch.equal(a, b)
    m.train()
    c, _ = m(x)
    d, _ = m(x)
    assert not torch.allclose(c, d)


def test_zoneout_train_keeps_state_and_eval_uses_expectation():
    p = 0.3
    m = qrnn64(3, 4, 1, zoneout=p)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    c0 = torch.randn(1, 2, 4, dtype=torch.float64)
    out, st = m(x, c0)  # eval: f' = p + (1 - p) f
    gates = F.linear(x, m.weight_l0, m.bias_l0)
    z, f, o = torch.tanh(gates[..., :4]), torch.sigmoid(gates[..., 4:8]), torch.sigmoid(gates[..., 8:])
    c, cn = ops.fo_pool_reference(p + (1 - p) * f, z, c0[0])
    close(out, o * c)
    close(st.c[0], cn)
    m_all = qrnn64(3, 4, 1, zoneout=1 - 1e-12).train()  # every unit zoned out: state never changes
    out, st = m_all(x, c0)
    close(st.c, c0)


def test_dropout_between_layers_only():
    torch.manual_seed(0)
    one = QRNN(3, 4, 1, dropout=0.9).train()  # nothing between layers: no effect
    x = torch.randn(4, 2, 3)
    a, _ = one(x)
    b, _ = one(x)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ interface parity


class TinyLM(nn.Module):
    """Model code written once against the nn.LSTM convention."""

    def __init__(self, rnn):
        super().__init__()
        self.emb = nn.Embedding(20, rnn.input_size)
        self.rnn = rnn
        d = 2 if rnn.bidirectional else 1
        self.out = nn.Linear(d * rnn.hidden_size, 20)

    def forward(self, ids, state=None):
        if isinstance(ids, PackedSequence):
            h, state = self.rnn(ids._replace(data=self.emb(ids.data)), state)
            return h._replace(data=self.out(h.data)), state
        h, state = self.rnn(self.emb(ids), state)
        return self.out(h), state


@pytest.mark.parametrize(
    "make",
    [lambda: QRNN(6, 5, 2, window=2, dropout=0.2), lambda: LSTM(6, 5, 2, dropout=0.2),
     lambda: nn.LSTM(6, 5, 2, dropout=0.2), lambda: QRNN(6, 5, 2, bidirectional=True),
     lambda: LSTM(6, 5, 1, bidirectional=True, batch_first=True)],
)
def test_same_model_code_runs_with_any_rnn(make):
    torch.manual_seed(0)
    model = TinyLM(make())
    bf = model.rnn.batch_first
    ids = torch.randint(0, 20, (7, 3))
    ids = ids.t() if bf else ids
    # truncated BPTT over two chunks
    state = None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for chunk in (ids[:, :4], ids[:, 4:]) if bf else (ids[:4], ids[4:]):
        logits, state = model(chunk, state)
        logits.sum().backward()
        opt.step()
        opt.zero_grad()
        state = detach_state(state)
    state = reorder_state(state, torch.tensor([1, 1, 0]))
    logits, _ = model(ids[[1, 1, 0]] if bf else ids[:, [1, 1, 0]], state)
    assert logits.shape == ((3, 7, 20) if bf else (7, 3, 20))
    # sentences as a list of id sequences (the NStepLSTM habit)
    packed = pack_list([torch.randint(0, 20, (n,)) for n in (3, 6, 2)])
    model.eval()
    out, _ = model(packed)
    assert [len(o) for o in unpack_to_list(out)] == [3, 6, 2]


def test_lstm_matches_nn_lstm_and_handles_lengths():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, 2, bidirectional=True).double()
    m = LSTM(3, 4, 2, bidirectional=True).double()
    m.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    close(m(x)[0], ref(x)[0])
    lengths = torch.tensor([6, 0, 2])
    h0 = torch.randn(4, 3, 4, dtype=torch.float64)
    c0 = torch.randn(4, 3, 4, dtype=torch.float64)
    out, (h, c) = m(x, (h0, c0), lengths=lengths)
    assert torch.all(out[:, 1] == 0) and torch.all(out[2:, 2] == 0)
    close(h[:, 1], h0[:, 1])
    close(c[:, 1], c0[:, 1])
    for b in (0, 2):
        n = int(lengths[b])
        o1, (h1, c1) = ref(x[:n, b : b + 1], (h0[:, b : b + 1], c0[:, b : b + 1]))
        close(out[:n, b], o1[:, 0])
        close(h[:, b], h1[:, 0])
        close(c[:, b], c1[:, 0])


# ------------------------------------------------------------------ compile, autocast


def test_torch_compile_tensor_input():
    torch.manual_seed(0)
    m = QRNN(3, 4, 2, window=2).eval()
    x = torch.randn(5, 2, 3)
    ref, st_ref = m(x)
    cm = torch.compile(m, backend="aot_eager", fullgraph=True)
    out, st = cm(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(st.c, st_ref.c)
    lstm = LSTM(3, 4).eval()
    torch.testing.assert_close(torch.compile(lstm, backend="aot_eager")(x)[0], lstm(x)[0])


@pytest.mark.parametrize("make", [lambda: QRNN(3, 4, 2, window=2, bidirectional=True), lambda: LSTM(3, 4, 2)])
def test_cpu_autocast_bf16(make):
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(5, 2, 3)
    ref, st = m(x[:3])
    ref2, _ = m(x[3:], st)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, st_a = m(x[:3])  # float32 state passed in below, bf16 gates inside
        out, _ = m(x[3:], st)
        m(pack_list([x[:, 0], x[:2, 1]]))
    torch.testing.assert_close(out.float(), ref2, atol=0.05, rtol=0.05)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("cls", [QRNN, LSTM])
def test_bad_inputs_give_clear_errors(cls):
    m = cls(3, 4, 2)
    with pytest.raises(ValueError, match="3 features"):
        m(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match="3 features"):
        m(pack_list([torch.randn(2, 7)]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        m(torch.randn(5, 2, 3), lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(5, 2, 3), lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="3-D"):
        m(torch.randn(5, 3))
    with pytest.raises(ValueError, match="parameters are on cpu"):
        m(torch.randn(5, 2, 3, device="meta"))
    with pytest.raises(ValueError, match="on meta but the input is on cpu"):
        state = torch.zeros(2, 2, 4, device="meta")
        m(torch.randn(5, 2, 3), state if cls is QRNN else (state, state))
    with pytest.raises(ValueError, match="another batch size"):
        state = torch.zeros(2, 3, 4)
        m(torch.randn(5, 2, 3), state if cls is QRNN else (state, state))


@pytest.mark.parametrize("cls", [QRNN, LSTM])
def test_input_dtype_must_match_parameters(cls):
    m = cls(3, 4, 2)
    x64 = torch.randn(5, 2, 3, dtype=torch.float64)
    for x in (x64, pack_list([x64[:, 0], x64[:2, 1]])):
        with pytest.raises(ValueError, match=r"input has dtype torch.float64 but the module's "
                           r"parameters have torch.float32; convert the input with "
                           r"input.to\(torch.float32\) or the module with module.double\(\)$"):
            m(x)
    with pytest.raises(ValueError, match=r"dtype torch.bfloat16 .* module.to\(torch.bfloat16\)"):
        m(torch.randn(5, 2, 3).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast runs mixed float dtypes
        m(torch.randn(5, 2, 3).bfloat16())
        with pytest.raises(ValueError, match="torch.float64"):  # but not float64
            m(x64)
    m.double()
    out, _ = m(x64)
    assert out.dtype == torch.float64
    with pytest.raises(ValueError, match=r"dtype torch.float32 but the module's parameters have "
                       r"torch.float64"):
        m(x64.float())


def test_bad_constructor_and_packed_arguments():
    with pytest.raises(ValueError, match="window"):
        QRNN(3, 4, window=0)
    with pytest.raises(ValueError, match="zoneout"):
        QRNN(3, 4, zoneout=1.0)
    m = QRNN(3, 4, window=2)
    p = pack_list([torch.randn(3, 3), torch.randn(2, 3)])
    with pytest.raises(ValueError, match="rows"):
        m(PackedSequence(p.data[:-1], p.batch_sizes, p.sorted_indices, p.unsorted_indices))
    with pytest.raises(ValueError, match="only for Tensor input"):
        m(p, lengths=torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="non-increasing"):
        m(PackedSequence(p.data, torch.tensor([2, 3]), None, None))
    with pytest.raises(ValueError, match="no steps"):
        m(PackedSequence(p.data[:0], p.batch_sizes[:0], None, None))
    with pytest.raises(ValueError, match="lengths must be an integer tensor"):
        m(torch.randn(3, 2, 3), lengths=torch.tensor([3.0, 2.0]))
    with pytest.raises(ValueError, match="not nn.LSTM's"):
        m(torch.randn(3, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="one per layer"):
        m(torch.randn(3, 2, 3), QRNNState(torch.zeros(1, 2, 4), (torch.zeros(1, 2, 3),) * 2))


# ------------------------------------------------------------------ CUDA


@needs_cuda
@pytest.mark.parametrize("window,bidirectional", [(1, False), (3, True)])
def test_cuda_matches_cpu_double(window, bidirectional):
    m = qrnn64(3, 8, 2, window=window, bidirectional=bidirectional)
    mc = qrnn64(3, 8, 2, window=window, bidirectional=bidirectional).float().cuda()
    seqs = rand_seqs([5, 9, 1, 4], 3)
    out, st = m(pack_list(seqs))
    out_c, st_c = mc(pack_list([s.float().cuda() for s in seqs]))
    for a, b in zip(unpack_to_list(out), unpack_to_list(out_c)):
        torch.testing.assert_close(b.double().cpu(), a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st_c.c.double().cpu(), st.c, atol=1e-5, rtol=1e-5)
    x = pad(seqs)
    out_t, _ = mc(x.float().cuda(), lengths=torch.tensor([5, 9, 1, 4]).cuda())
    torch.testing.assert_close(out_t.double().cpu(), m(x, lengths=torch.tensor([5, 9, 1, 4]))[0], atol=1e-5, rtol=1e-5)


@needs_cuda
@pytest.mark.parametrize("make", [lambda: QRNN(16, 32, 2, window=2), lambda: LSTM(16, 32, 2, dropout=0.3)])
def test_cuda_bf16_and_autocast(make):
    torch.manual_seed(0)
    m = make().cuda()
    x = torch.randn(12, 4, 16, device="cuda")
    ref, st = m(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, st_a = m(x, st)
        out.float().sum().backward()
    mb = make().cuda().bfloat16()
    mb.load_state_dict(m.state_dict())
    out_b, _ = mb(x.bfloat16())
    torch.testing.assert_close(out_b.float(), ref, atol=0.1, rtol=0.05)  # bf16 through 12 steps
    m.train()  # dropout between layers through cuDNN's packed path
    m(pack_list([x[:, 0], x[:5, 1]]))[0].data.sum().backward()


@pytest.mark.skipif("cpu" not in ops.compiled_devices(), reason="no compiled CPU kernels")
@pytest.mark.parametrize("zoneout", [0.0, 0.3])
def test_qrnn_checks_its_arguments_once(monkeypatch, zoneout):
    """QRNN validates at its own boundary, once per call, and calls the ops
    unchecked below it (the ops' checks would sync a GPU once per layer and
    direction)."""
    def fail(*args, **kwargs):
        raise AssertionError("ops argument check called below QRNN.forward")
    for name in ("fo_pool_args", "fo_pool_packed_args", "fo_pool_fused_args",
                 "fo_pool_fused_packed_args", "fused_gates", "gates_pair", "c0", "lengths"):
        monkeypatch.setattr(checks, name, fail)
    calls = collections.Counter()

    def counted(name, real):
        def check(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return check
    for name in ("module_input", "module_lengths", "batch_sizes"):
        monkeypatch.setattr(checks, name, counted(name, getattr(checks, name)))
    m = QRNN(3, 4, num_layers=2, window=2, bidirectional=True, zoneout=zoneout).eval()
    x = torch.randn(5, 2, 3)
    out, state = m(x, lengths=torch.tensor([5, 3]))
    m(x, state)
    m(pack_list([torch.randn(4, 3), torch.randn(2, 3)]), state)
    assert calls == {"module_input": 3, "module_lengths": 1, "batch_sizes": 1}
