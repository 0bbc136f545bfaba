"""The peers of benchmarks/bench_budget.py: the Kneser-Ney n-gram is a
normalised distribution over the outputs, and both peers score a split with
train.py's bits-per-character formula."""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))

from peers import gpt, kneser_ney  # noqa: E402
from peers.kneser_ney import KneserNey  # noqa: E402
from qrnn_lm.data import Split  # noqa: E402
from qrnn_lm.lm import bits_per_char  # noqa: E402


def _stream(n=3000, V=20, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, V, n)
    s[::5] = 0                       # a frequent "</s>"
    s[1::5] = 7                      # and a word that always follows it
    return s


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kneser_ney_sums_to_one_for_every_history(order):
    V = 23                            # 3 outputs never seen in training
    m = KneserNey(order).fit(_stream(V=20), V)
    for h in ([], [0], [4, 5], [0, 7, 3, 9], [1, 2, 3, 4, 5, 6], [22, 21], [0, 0, 0, 0]):
        p = m.next_probs(h)
        assert p.shape == (V,)
        assert abs(p.sum() - 1.0) < 1e-9, (order, h, p.sum())
        assert (p > 0).all()


def test_kneser_ney_stream_scores_match_single_queries_and_learn():
    train, V = _stream(), 23
    m = KneserNey(5).fit(train, V)
    test = _stream(400, seed=1)
    lp = m.log_probs(test)
    one = np.array([math.log(m.next_probs(test[:t])[test[t]]) for t in range(1, len(test))])
    assert np.allclose(lp, one, atol=1e-12)
    assert -lp.mean() < math.log(V) - 0.3   # the 0s every 5th token are learnt
    D = m.levels[-1]["D"]
    assert 0 < D[0] <= D[1] <= D[2] <= 3


def test_kneser_ney_split_bpc_is_finite_and_uses_the_bucket_formula():
    train, V = _stream(), 23
    m = KneserNey(5).fit(np.concatenate([[0], train]), V)
    ids = _stream(200, seed=2)
    rare = np.zeros(len(ids), dtype=np.float32)
    rare[::7] = -2.5
    split = Split("test", ids, rare, {"tokens": len(ids), "characters": 3 * len(ids)})
    r = kneser_ney.score_split(m, split, eos_id=0)
    nll = -m.log_probs(np.concatenate([[0], ids])).sum()
    assert math.isfinite(r["bpc"]) and r["tokens"] == len(ids)
    assert r["bpc"] == pytest.approx(bits_per_char(nll, float(rare.sum()), 3 * len(ids)))
    assert r["bpc"] == pytest.approx((nll - rare.sum()) / (3 * len(ids) * math.log(2)))


class _Uniform(torch.nn.Module):
    def __init__(self, V):
        super().__init__()
        self.V = V

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.V), None


class _NextIsPlusOne(torch.nn.Module):
    """P(next = last + 1 mod V) = q, the rest uniform: exact only when every
    target is scored once, with its own predecessor as the last input."""

    def __init__(self, V, q=0.9):
        super().__init__()
        self.V, self.q = V, q

    def forward(self, idx, targets=None):
        p = torch.full((*idx.shape, self.V), (1 - self.q) / (self.V - 1))
        p.scatter_(-1, ((idx + 1) % self.V).unsqueeze(-1), self.q)
        return p.log(), None


@pytest.mark.parametrize("n,block,stride", [(1, 8, 4), (7, 8, 4), (8, 8, 8), (50, 8, 3), (64, 16, 16), (65, 16, 1)])
def test_gpt_windows_score_every_target_once(n, block, stride):
    seen = []
    for a, first in gpt.windows(n, block, stride):
        seen += list(range(first, a + min(block, n) + 1))
    assert seen == list(range(1, n + 1))
    V = 11
    stream = np.arange(n + 1) % V
    nll, count = gpt.stream_nll(_NextIsPlusOne(V), stream, block, stride, batch=4)
    assert count == n and nll == pytest.approx(-n * math.log(0.9), rel=1e-5)


def test_gpt_split_bpc_is_train_py_formula_uniform_model():
    V, ids = 37, np.array([3, 5, 0, 9, 9, 36, 0, 1, 2, 0], dtype=np.int32)
    rare = np.array([0, -1.5, 0, 0, -0.25, 0, 0, 0, 0, 0], dtype=np.float32)
    C = 17
    split = Split("test", ids, rare, {"tokens": len(ids), "characters": C})
    r = gpt.score_split(_Uniform(V), split, eos_id=0, block=4, stride=2)
    expected = len(ids) * math.log2(V) / C + 1.75 / (C * math.log(2))
    assert r["bpc"] == pytest.approx(expected)
    assert r["bpc"] == pytest.approx(bits_per_char(len(ids) * math.log(V), -1.75, C))
    assert r["ppl"] == pytest.approx(V) and r["tokens"] == len(ids)


def test_peer_scripts_write_results_on_a_tiny_dataset(tmp_path, monkeypatch):
    from conftest import prepare_dataset
    data = prepare_dataset(str(tmp_path / "corpus"), tokenizer="char", vocab_size=16)
    monkeypatch.setitem(gpt.SETTINGS, "warmup_iters", 2)
    assert gpt.main(["--data", data, "--save", str(tmp_path / "gpt"), "--minutes", "0.02"]) == 0
    assert kneser_ney.main(["--data", data, "--save", str(tmp_path / "kn")]) == 0
    for run in ("gpt", "kn"):
        res = json.load(open(tmp_path / run / "results.json", encoding="utf-8"))
        assert math.isfinite(res["test"]["bpc"]) and 0 < res["test"]["bpc"] < 20
        assert res["test"]["tokens"] == np.load(os.path.join(data, "test.ids.npy")).shape[0]
    assert gpt.main(["--data", str(tmp_path / "none"), "--save", str(tmp_path / "x"), "--minutes", "1"]) == 1


def test_budget_section_and_commands_show_the_peers(tmp_path):
    """gpt runs per budget on the defaults' dataset; the n-grams have no
    budget: one row, shown under every budget longer than their counting."""
    import bench_budget
    from report.budget import budget_section
    data = {"defaults": "DATA"}
    cmd = bench_budget.command("gpt", 2, 7, "corpus", "cache", data, "SAVE")
    assert cmd[1].endswith(os.path.join("peers", "gpt.py")) and cmd[cmd.index("--data") + 1] == "DATA"
    assert cmd[cmd.index("--minutes") + 1] == "2" and cmd[cmd.index("--seed") + 1] == "7"
    cmd = bench_budget.command("ngram", 2, 7, "corpus", "cache", data, "SAVE")
    assert cmd[1].endswith("kneser_ney.py") and "--minutes" not in cmd
    assert bench_budget.command("kenlm", 2, 7, "c", "c", data, "S", "/x/lmplz")[-2:] == ["--lmplz", "/x/lmplz"]
    run = {"rc": 0, "chosen": None, "seed": 1}
    result = {"meta": {"command": "c", "corpus": "c", "machine": "m", "cpus": 2, "threads": 2, "torch": "t",
                       "date": "d", "load_min": 0.5, "load_max": 1.5, "skipped": {"kenlm": "no lmplz"}},
              "runs": [dict(run, contender="defaults", minutes=m, test_bpc=3.0, steps=100, tokens=2e6) for m in (1, 2)]
              + [dict(run, contender="gpt", minutes=2, test_bpc=3.3, steps=50, tokens=1e6),
                 dict(run, contender="ngram", minutes=0, test_bpc=3.6, steps=0, tokens=3e6, train_seconds=90,
                      wall_s=120)]}
    text = "\n".join(budget_section(result, str(tmp_path / "b.json"), str(tmp_path), "img"))
    assert "| (d) small GPT (nanoGPT model.py, 4x128, context 64, AdamW 1e-3) | – | 3.300 (50, 1.00M) |" in text
    assert "| (e) Kneser-Ney 5-gram (interpolated modified, numpy) | – | 3.600 (90 s, 3.00M) |" in text
    assert "- 2 min: the defaults are 9.1% below the small GPT (3.000 vs 3.300 test BPC)." in text
    assert "- 2 min: the defaults are 16.7% below the Kneser-Ney 5-gram (3.000 vs 3.600 test BPC)." in text
    assert "- Skipped: kenlm: no lmplz." in text and "| 0 min" not in text
    bench_budget.write_plot(result["runs"], str(tmp_path / "p.png"))
    assert os.path.getsize(tmp_path / "p.png") > 0


def test_kenlm_lines_end_at_every_eos_and_query_totals_add_up(tmp_path):
    from peers import kenlm_lmplz
    path = str(tmp_path / "t.txt")
    assert kenlm_lmplz.write_lines(np.array([5, 6, 2, 2, 7, 2]), 2, path) == 3
    assert open(path, encoding="utf-8").read() == "5 6\n\n7\n"
    with pytest.raises(ValueError, match="does not end with </s>"):
        kenlm_lmplz.write_lines(np.array([5, 2, 6]), 2, path)
    query = tmp_path / "query"
    query.write_text("#!/bin/sh\ncat >/dev/null\necho '5=1 2 -0.5\tTotal: -1.25 OOV: 1'\necho 'Total: -2 OOV: 0'\n"
                     "echo 'Perplexity including OOVs: 3'\n")
    query.chmod(0o755)
    assert kenlm_lmplz.query_log10(str(query), "m.arpa", path) == (-3.25, 1)
