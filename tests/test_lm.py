"""Language model and batching: units."""

import math

import numpy as np
import pytest
import torch

from qrnn_lm.data import SentenceBatches, StreamBatches
from qrnn_lm.model import ModelConfig, RNNLanguageModel
from qrnn_lm.train import make_optimizer

# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
def small_config(**kw):
    d = dict(vocab_size=30, emsize=8, nhid=12, nlayers=2, dropout=0.1, dropouth=0.1, dropouti=0.1,
             dropoute=0.1)
    d.update(kw)
    return ModelConfig(**d)


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_packed_equals_padded_in_eval(rnn, softmax):
    """A sentence batch run packed gives each sequence the nll it gets alone."""
    torch.manual_seed(0)
    model = RNNLanguageModel(small_config(rnn=rnn, softmax=softmax, nhid=32,
                                          cutoffs=[5, 15] if softmax == "adaptive" else [])).eval()
    ids = np.array([3, 4, 5, 0, 6, 7, 0, 8, 9, 10, 11, 12, 0], dtype=np.int32)
    batches = SentenceBatches(ids, 0, batch_size=3, max_len=50, train=False)
    (_, x, y), = list(batches.epoch(0))
    nll, _ = model(x, targets=y)
    stream = np.concatenate([[0], ids])
    alone = []
    for s, n in [(7, 6), (0, 4), (4, 3)]:  # pieces in descending length order
        xi = torch.from_numpy(stream[s:s + n]).long().unsqueeze(1)
        yi = torch.from_numpy(stream[s + 1:s + n + 1]).long().unsqueeze(1)
        alone.append(model(xi, targets=yi)[0])
    assert nll.shape == (13,)
    torch.testing.assert_close(nll.sum(), torch.cat(alone).sum(), rtol=1e-5, atol=1e-5)


def test_stream_state_carry_matches_one_window():
    torch.manual_seed(0)
    model = RNNLanguageModel(small_config(window=2)).eval()
    x = torch.randint(0, 30, (10, 3))
    y = torch.randint(0, 30, (10, 3))
    whole, _ = model(x, targets=y)
    a, s = model(x[:4], targets=y[:4])
    b, _ = model(x[4:], model.detach_state(s), targets=y[4:])
    # nll rows are time-major: (T, B) flattened
    torch.testing.assert_close(torch.cat([a, b]), whole, rtol=1e-5, atol=1e-5)


def test_tied_and_log_probs_normalised():
    model = RNNLanguageModel(small_config(tied=True)).eval()
    assert model.decoder.weight is model.encoder.weight
    feats, _ = model(torch.randint(0, 30, (5, 2)))
    lp = model.log_probs(feats.reshape(-1, feats.size(-1)))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(10))
    ad = RNNLanguageModel(small_config(softmax="adaptive", cutoffs=[4, 12], nhid=32)).eval()
    feats, _ = ad(torch.randint(0, 30, (5, 2)))
    lp = ad.log_probs(feats.reshape(-1, feats.size(-1)))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(10))
    y = torch.randint(0, 30, (10,))
    torch.testing.assert_close(ad.nll(feats.reshape(-1, feats.size(-1)), y), -lp.gather(1, y[:, None])[:, 0])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        small_config(tied=True, softmax="adaptive")
    with pytest.raises(ValueError):
        small_config(softmax="adaptive", cutoffs=[10, 5])
    with pytest.raises(ValueError):
        small_config(rnn="gru")
    with pytest.raises(ValueError):  # nhid 12 / 4**2 < 1: an empty tail projection
        small_config(softmax="adaptive", cutoffs=[6, 18])
    assert ModelConfig.from_dict(small_config().to_dict()) == small_config()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_none_gradients_do_not_break_weight_decay(optimizer):
    """zero_grad(set_to_none=True) leaves grad None for an adaptive-softmax
    cluster that no target hit and for frozen parameters; the weight-decayed
    optimizer step must skip them, not fail, and update everything else."""
    torch.manual_seed(0)
    model = RNNLanguageModel(small_config(softmax="adaptive", cutoffs=[6, 18], nhid=32))
    model.rnns[1].requires_grad_(False)  # a frozen part
    opt = make_optimizer(model, optimizer, lr=0.1, wdecay=0.5)
    tail = model.decoder.tail[1][1].weight
    frozen = next(model.rnns[1].parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        nll, _ = model(torch.randint(0, 30, (6, 3)), targets=torch.randint(0, 6, (6, 3)))  # head only
        nll.mean().backward()
        assert tail.grad is None and frozen.grad is None
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    after = dict(model.named_parameters())
    assert torch.equal(after["decoder.tail.1.1.weight"], before["decoder.tail.1.1.weight"])
    assert torch.equal(frozen, before[[n for n, p in after.items() if p is frozen][0]])
    assert not torch.equal(after["encoder.weight"], before["encoder.weight"])
    # a later step that does reach the tail updates it (optimizer state made lazily)
    opt.zero_grad(set_to_none=True)
    nll, _ = model(torch.randint(0, 30, (6, 3)), targets=torch.full((6, 3), 25))
    nll.mean().backward()
    opt.step()
    assert not torch.equal(tail, before["decoder.tail.1.1.weight"])


# ---------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------
def _random_ids(n=97, eos=0, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 9, n).astype(np.int32)
    ids[rng.random(n) < 0.15] = eos
    ids[-1] = eos
    return ids


@pytest.mark.parametrize("b,bptt", [(1, 5), (3, 4), (7, 50), (10, 1)])
def test_stream_eval_scores_every_token_once(b, bptt):
    ids = _random_ids()
    batches = StreamBatches(ids, 0, b, bptt, train=False)
    stream = np.concatenate([[0], ids])
    seen = []
    for _, x, y in batches.epoch(0):
        ok = y >= 0
        # every target is the token after its input in the eos-prepended stream
        for t, col in zip(*np.nonzero(ok.numpy())):
            seen.append(int(y[t, col]))
        assert x.shape == y.shape
    assert sorted(seen) == sorted(ids.tolist())
    # columns are contiguous and cover the stream in order
    cols = [[] for _ in range(batches.batch_size)]
    for _, x, y in batches.epoch(0):
        for c in range(batches.batch_size):
            cols[c] += [int(v) for v in y[:, c] if v >= 0]
    assert sum(cols, []) == ids.tolist()
    assert stream[0] == 0


def test_stream_train_slices_and_random_lengths():
    ids = _random_ids(400)
    a = StreamBatches(ids, 0, 3, 10, train=True, random_length=True, seed=1, rank=0, world_size=2)
    b = StreamBatches(ids, 0, 3, 10, train=True, random_length=True, seed=1, rank=1, world_size=2)
    assert a.plan(0) == b.plan(0) != a.plan(1)          # same window plan on every rank
    assert sum(n for _, n in a.plan(0)) == a.length
    xa = next(a.epoch(0))[1]
    xb = next(b.epoch(0))[1]
    assert not torch.equal(xa, xb)                       # different columns
    x, y = a.window(3, 5)
    assert torch.equal(x[1:], y[:-1])                    # target = next input


def test_sentence_batches_cover_all_tokens_and_split_by_rank():
    ids = _random_ids(300)
    ev = SentenceBatches(ids, 0, batch_size=4, max_len=6, train=False)
    n = 0
    for _, x, y in ev.epoch(0):
        assert torch.equal(x.batch_sizes, y.batch_sizes)
        n += y.data.numel()
    assert n == len(ids)
    tr = [SentenceBatches(ids, 0, 4, 6, train=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    g0, g1 = tr[0].batches(0), tr[1].batches(0)
    assert len(g0) == len(g1)
    assert not set(np.concatenate(g0)) & set(np.concatenate(g1))
    assert [g.tolist() for g in tr[0].batches(0)] == [g.tolist() for g in tr[0].batches(0)]   # deterministic
    for g in g0:  # grouped by length: little padding waste
        lens = tr[0].length[g]
        assert lens.max() - lens.min() <= 3


# ---------------------------------------------------------------------------
# the checkpoint's inference block
# ---------------------------------------------------------------------------
def test_inference_reads_the_checkpoint_inference_block(char_data, tmp_path):
    """New checkpoints say how to read text (batching, bptt, max_len) in their
    own block; LanguageModel reads it, and derives it from train.py's flags
    for checkpoints written before the block existed."""
    from qrnn_lm import train as train_mod
    from qrnn_lm.checkpoint import inference_settings
    from qrnn_lm.lm import LanguageModel, load_checkpoint, save_checkpoint
    from conftest import TINY
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--batching", "sentences",
                           "--max-steps", "2"]) == 0
    ck = load_checkpoint(run)
    assert ck["inference"] == {"batching": "sentences", "bptt": 12, "max_len": 48}
    assert ck["args"]["bptt"] == 12                       # still there: --resume reads it
    lm = LanguageModel.from_checkpoint(run)
    assert (lm.batching, lm.bptt, lm.max_len) == ("sentences", 12, 48)
    path = str(tmp_path / "other.pt")
    ck["inference"] = {"batching": "stream", "bptt": 20, "max_len": None}
    save_checkpoint(ck, path)
    lm = LanguageModel.from_checkpoint(path)
    assert (lm.batching, lm.bptt, lm.max_len) == ("stream", 20, 80)
    del ck["inference"]                                  # an older checkpoint: from its args
    save_checkpoint(ck, path)
    assert inference_settings(load_checkpoint(path)) == {"batching": "sentences", "bptt": 12, "max_len": None}
    lm = LanguageModel.from_checkpoint(path)
    assert (lm.batching, lm.bptt, lm.max_len) == ("sentences", 12, 48)
    score = lm.score("猫が本を読む。")
    assert score["tokens"] > 0 and math.isfinite(score["bpc"])
