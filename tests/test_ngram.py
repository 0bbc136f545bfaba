"""The n-gram mixed with the network (qrnn_lm.ngram, --ngram): a normalised
mixture, the weight that minimises the validation loss, storage that refuses
damaged files, and a run whose figures are the ones `evaluate` reports."""
import json
import math
import os

import numpy as np
import pytest

from qrnn_lm import ngram, train as train_mod
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.lm import LanguageModel
from conftest import TINY, assert_one_sentence_error, run_cli


def _stream(n=3000, V=20, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, V, n)
    s[::5] = 0
    s[1::5] = 7
    return s


def test_saved_ngram_gives_the_same_probabilities(tmp_path):
    kn = ngram.KneserNey(4).fit(_stream(), 23)
    ngram.save(str(tmp_path), kn, {"order": 4, "weight": None})
    back = ngram.load(str(tmp_path), 23)
    test = _stream(300, seed=1)
    np.testing.assert_array_equal(kn.log_probs(test), back.log_probs(test))
    for h in ([], [0], [0, 7, 3]):
        np.testing.assert_array_equal(kn.next_probs(h), back.next_probs(h))
    assert ngram.read_meta(str(tmp_path)) == {"order": 4, "weight": None}


def _rewrite(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", ["outputs", "unsorted", "range", "negative", "fraction", "discount", "truncated",
                                    "garbage"])
def test_a_damaged_ngram_file_is_one_sentence(tmp_path, damage):
    kn = ngram.KneserNey(3).fit(_stream(), 23)
    ngram.save(str(tmp_path), kn, {"order": 3, "weight": 0.5})
    path = str(tmp_path / ngram.FILE)
    if damage == "outputs":
        _rewrite(path, V=np.array([99]))
    elif damage == "unsorted":
        _rewrite(path, keys3=kn.keys[3][::-1].copy())
    elif damage == "range":
        keys = kn.keys[2].copy()
        keys[-1] = 23 * 23 + 5
        _rewrite(path, keys2=keys)
    elif damage == "negative":
        c = kn.levels[0]["count"].copy()
        c[0] = -1
        _rewrite(path, count1=c)
    elif damage in ("fraction", "discount"):
        _rewrite(path, **({"count2": kn.levels[1]["count"] + 0.5} if damage == "fraction"
                          else {"D2": np.array([5.0, 1.0, 1.0])}))
    elif damage == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    else:
        open(path, "wb").write(b"\x93NUMPY not really")
    with pytest.raises(QrnnLmError, match="ngram.npz"):
        ngram.load(str(tmp_path), 23)


def test_mixture_is_normalised_and_the_weight_minimises_the_loss():
    kn = ngram.KneserNey(3).fit(_stream(), 23)
    rng = np.random.default_rng(0)
    nn_lp = np.log(rng.dirichlet(np.ones(23)))
    for w in (0.0, 0.3, 1.0):
        p = np.exp(ngram.Mixture(kn, w).next_log_probs([0, 7], nn_lp))
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
    a, b = rng.exponential(2.0, 500), rng.exponential(2.0, 500)
    w = ngram.best_weight(a, b)
    grid = np.linspace(0, 1, 1001)
    losses = [ngram.mixed_nll(a, b, g).sum() for g in grid]
    assert ngram.mixed_nll(a, b, w).sum() <= min(losses) + 1e-9
    # a mixture of p and q: -ln(w e^-a + (1-w) e^-b), exactly
    assert ngram.mixed_nll([1.0], [2.0], 0.25)[0] == pytest.approx(-math.log(0.25 * math.exp(-1) + 0.75 * math.exp(-2)))
    # one model always better: the weight goes to its edge
    assert ngram.best_weight(np.full(50, 0.1), np.full(50, 3.0)) == 1.0
    assert ngram.best_weight(np.full(50, 3.0), np.full(50, 0.1)) == 0.0


def _reference_bins(train, stream, order):
    """Context classes from plain counters: the longest history (n tokens)
    seen with a count at order n + 1 (raw counts at the highest order,
    distinct left extensions below), and log2 of that count."""
    from collections import Counter
    train = [int(t) for t in train]
    total = {}
    for n in range(1, order):
        if n + 1 == order:   # h followed by any token
            total[n] = Counter(tuple(train[i - n:i]) for i in range(n, len(train)))
        else:                # distinct (u, h, w), counted by h
            grams = {tuple(train[i - n - 1:i + 1]) for i in range(n + 1, len(train))}
            total[n] = Counter(g[1:n + 1] for g in grams)
    out = []
    for t in range(1, len(stream)):
        longest, count = 0, 1
        for n in range(1, order):
            if t - n >= 0 and total[n].get(tuple(int(x) for x in stream[t - n:t]), 0) > 0:
                longest, count = n, total[n][tuple(int(x) for x in stream[t - n:t])]
        out.append(longest * ngram.COUNT_BINS + min(int(math.floor(math.log2(count))), ngram.COUNT_BINS - 1))
    return np.array(out)


def test_the_default_order_falls_with_the_corpus_and_stops():
    assert ngram.auto_order(1) == ngram.auto_order(ngram.LONG_ORDER_MAX_TOKENS) == ngram.LONG_ORDER == 8
    assert ngram.auto_order(ngram.LONG_ORDER_MAX_TOKENS + 1) == ngram.auto_order(ngram.AUTO_MAX_TOKENS) == 5
    assert ngram.auto_order(ngram.AUTO_MAX_TOKENS + 1) == 0


def test_context_classes_match_plain_counting_and_the_history_class():
    train, test = _stream(2000, V=9), _stream(200, V=11, seed=4)   # ids 9, 10 never seen in training
    kn = ngram.KneserNey(4).fit(train, 12)
    lp, bins = kn.log_probs_and_bins(test)
    np.testing.assert_array_equal(lp, kn.log_probs(test))
    # a count-of-counts estimate of 0 here (D2 of the bigrams) must not leave unseen continuations at P = 0
    assert np.all(np.isfinite(lp)) and min(lv["D"].min() for lv in kn.levels) > 0
    for h in ([3], [0, 7], [9, 9, 9]):
        assert kn.next_probs(h).sum() == pytest.approx(1.0, abs=1e-12) and kn.next_probs(h).min() > 0
    np.testing.assert_array_equal(bins, _reference_bins(train, test, 4))
    assert len(set(bins.tolist())) > 5 and bins.max() < kn.n_bins
    for t in (1, 2, 3, 50, 199):
        assert kn.history_bin(test[:t]) == bins[t - 1]
    assert kn.history_bin([]) == 0


def test_weights_by_context_minimise_each_class_and_beat_one_weight():
    rng = np.random.default_rng(1)
    bins = rng.integers(0, 6, 3000)
    bins[:40] = 7                                  # a class too small for a weight of its own
    # the network is better in even classes, the n-gram in odd ones
    a = rng.exponential(1.0, 3000) + np.where(bins % 2, 1.5, 0.0)
    b = rng.exponential(1.0, 3000) + np.where(bins % 2, 0.0, 1.5)
    overall, table = ngram.best_weights(a, b, bins, 8)
    assert overall == ngram.best_weight(a, b) and table[7] == overall and table[6] == overall
    for c in range(6):
        m = bins == c
        assert table[c] == ngram.best_weight(a[m], b[m])
        assert (table[c] > 0.5) == (c % 2 == 0)
    assert ngram.mixed_nll(a, b, table[bins]).sum() < ngram.mixed_nll(a, b, overall).sum()
    np.testing.assert_allclose(ngram.mixed_nll(a, b, np.full(3000, 0.3)), ngram.mixed_nll(a, b, 0.3), rtol=1e-12)
    # the mixture by context is normalised in every context and matches token_nll
    kn = ngram.KneserNey(3).fit(_stream(), 23)
    mix = ngram.Mixture(kn, 0.5, weights=np.linspace(0.05, 0.95, kn.n_bins))
    ids = _stream(60, seed=2)
    nn_lp = np.log(rng.dirichlet(np.ones(23), size=len(ids)))
    stream = np.concatenate([[0], ids])
    nll = mix.token_nll(ids, 0, -nn_lp[np.arange(len(ids)), ids])
    for t in range(len(ids)):
        lp = mix.next_log_probs(stream[:t + 1], nn_lp[t])
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-12)
        assert -lp[ids[t]] == pytest.approx(nll[t], rel=1e-12)


@pytest.mark.parametrize("weights", [[0.5] * 3, [0.5] * 14 + [1.5], "0.5", [0.5] * 14 + [True]])
def test_impossible_weights_by_context_are_one_sentence(tmp_path, weights):
    kn = ngram.KneserNey(3).fit(_stream(), 23)
    ngram.save(str(tmp_path), kn, {"order": 3, "weight": 0.5, "weights": weights})
    assert kn.n_bins != 3
    with pytest.raises(QrnnLmError, match="weights"):
        ngram.load_mixture(str(tmp_path), 23, None)


def test_a_run_mixes_its_ngram_and_evaluate_generate_use_it(char_data, tmp_path):
    run = str(tmp_path / "run")
    rc = train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "15", "--ngram", "3"])
    assert rc == 0
    res = json.load(open(os.path.join(run, "results.json")))
    assert res["ngram"]["order"] == 3 and 0 <= res["ngram"]["weight"] <= 1
    assert res["network"]["test"]["bpc"] == res["test"]["network_bpc"]
    # the mixture is never worse on validation than either model alone (the weight is chosen there)
    v = res["valid"]
    assert v["bpc"] <= min(v["network_bpc"], v["ngram_bpc"]) + 1e-9
    test_txt = os.path.join(os.path.dirname(char_data), "test.txt")
    lm = LanguageModel.from_checkpoint(run)
    assert lm.mixture is not None and lm.mixture.weight == res["ngram"]["weight"]
    assert lm.mixture.weights.tolist() == res["ngram"]["weights"] and len(res["ngram"]["weights"]) == 3 * 9
    assert list(lm.mixture.cache.weights) == res["ngram"]["cache"]["weights"]   # the cache, fitted on valid
    assert v["bpc"] <= v["without_cache_bpc"] + 1e-9
    text = open(test_txt, encoding="utf-8").read()
    assert lm.score(text)["bpc"] == pytest.approx(res["test"]["bpc"], rel=1e-9)
    alone = LanguageModel.from_checkpoint(run, ngram=False)
    assert alone.mixture is None
    assert alone.score(text)["bpc"] == pytest.approx(res["network"]["test"]["bpc"], rel=1e-6)
    assert lm.generate("", max_tokens=30, seed=3) == lm.generate("", max_tokens=30, seed=3)
    # an n-gram of another dataset is refused by name
    meta = json.load(open(os.path.join(run, ngram.META)))
    meta["dataset"] = "0" * 64
    json.dump(meta, open(os.path.join(run, ngram.META), "w"))
    with pytest.raises(QrnnLmError, match="another dataset"):
        LanguageModel.from_checkpoint(run)


def test_ngram_0_trains_the_network_alone_and_bad_orders_are_refused(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "5", "--ngram", "0"]) == 0
    res = json.load(open(os.path.join(run, "results.json")))
    assert "ngram" not in res and not os.path.exists(os.path.join(run, ngram.FILE))
    capsys.readouterr()
    rc = train_mod.main(["--data", char_data, "--save", str(tmp_path / "r2"), *TINY, "--ngram", "11"])
    assert_one_sentence_error(rc, capsys.readouterr().err, "--ngram")


def test_evaluate_cli_reports_the_runs_figures(char_data, tmp_path):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "10"]) == 0
    res = json.load(open(os.path.join(run, "results.json")))
    assert res["ngram"]["order"] == ngram.LONG_ORDER             # on by default for a small corpus
    test_txt = os.path.join(os.path.dirname(char_data), "test.txt")
    r = run_cli(["-m", "qrnn_lm", "evaluate", "--checkpoint", run, "--file", test_txt])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bpc"] == pytest.approx(res["test"]["bpc"], rel=1e-9)


def test_resuming_with_ngram_0_removes_the_runs_ngram(char_data, tmp_path):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "4", "--ngram", "2"]) == 0
    assert LanguageModel.from_checkpoint(run).mixture is not None
    assert train_mod.main(["--save", run, "--resume", "--max-steps", "6", "--ngram", "0"]) == 0
    assert not os.path.exists(os.path.join(run, ngram.FILE)) and LanguageModel.from_checkpoint(run).mixture is None
    res = json.load(open(os.path.join(run, "results.json")))
    assert "ngram" not in res
