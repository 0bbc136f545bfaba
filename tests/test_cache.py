"""The cache of the text read so far (qrnn_lm.cache), against direct float64 sums."""
import json
import os

import numpy as np
import pytest

from qrnn_lm import cache as cache_mod, ngram
from qrnn_lm.errors import QrnnLmError


def _reference(stream, half_life):
    """P1, P2, has_phrase by the definitions, summed directly."""
    a = 0.5 ** (1.0 / half_life)
    st = [int(x) for x in stream]
    p1, p2, has = [], [], []
    for t in range(len(st) - 1):
        w = st[t + 1]
        ages = [t - s for s in range(t + 1)]
        p1.append(sum(a ** g for s, g in zip(range(t + 1), ages) if st[s] == w) / sum(a ** g for g in ages))
        after = [s for s in range(1, t + 1) if st[s - 1] == st[t]]
        c = sum(a ** (t - s) for s in after)
        has.append(c > cache_mod.MIN_CONTEXT)
        p2.append(sum(a ** (t - s) for s in after if st[s] == w) / c if c > cache_mod.MIN_CONTEXT else 0.0)
    return np.array(p1), np.array(p2), np.array(has, dtype=bool)


def _stream(n, V, seed):
    rng = np.random.default_rng(seed)
    phrase = rng.integers(0, V, 6)
    out = []
    while len(out) < n:   # random tokens with a phrase that keeps coming back
        out.extend(phrase if rng.random() < 0.4 else rng.integers(0, V, 3))
    return np.array(out[:n])


@pytest.mark.parametrize("n,V,half_life", [(1, 5, 50), (2, 5, 50), (3, 1, 50), (120, 7, 3), (400, 23, 50),
                                           (300, 11, 1)])
def test_stream_probs_match_the_definitions(n, V, half_life):
    s = _stream(n, V, seed=n)
    c = cache_mod.RecentCache(V, half_life=half_life)
    p1, p2, has = c.stream_probs(s)
    r1, r2, rh = _reference(s, half_life)
    assert len(p1) == max(n - 1, 0)
    np.testing.assert_allclose(p1, r1, rtol=1e-10, atol=1e-11)   # older than the window: < 2^-40
    np.testing.assert_array_equal(has, rh)
    np.testing.assert_allclose(p2, r2, rtol=1e-10, atol=1e-11)


def test_next_probs_are_distributions_and_agree_with_the_stream():
    V, s = 13, _stream(300, 13, seed=4)
    c = cache_mod.RecentCache(V, half_life=7)
    p1, p2, has = c.stream_probs(s)
    assert c.next_probs([])[0].sum() == 0 and c.next_probs([])[1] is None
    for t in range(len(s) - 1):
        q1, q2 = c.next_probs(s[:t + 1])
        assert q1.sum() == pytest.approx(1.0, abs=1e-12)
        assert q1[s[t + 1]] == pytest.approx(p1[t], rel=1e-9, abs=1e-11)
        assert (q2 is not None) == has[t]
        if q2 is not None:
            assert q2.sum() == pytest.approx(1.0, abs=1e-12)
            assert q2[s[t + 1]] == pytest.approx(p2[t], rel=1e-9, abs=1e-11)


def test_fit_lowers_the_loss_of_repetitive_text_and_leaves_random_text_alone():
    V = 30
    rng = np.random.default_rng(0)
    base = np.full(1999, np.log(V))    # a uniform model: -ln(1/V) per token
    c = cache_mod.fit(base, _stream(2000, V, seed=1), V)
    c1_no, c1, c2 = c.weights
    assert 0 <= c1_no <= 1 and 0 <= c1 and 0 <= c2 and c1 + c2 <= 1 and c2 > 0.2
    assert c.token_nll(_stream(2000, V, seed=2), base).sum() < base.sum() * 0.8
    # a model that already knows the text: the cache cannot help, the weights never make it worse
    s = rng.integers(0, V, 2000)
    good = np.full(1999, 0.01)
    c = cache_mod.fit(good, s, V)
    assert c.token_nll(s, good).sum() <= good.sum() + 1e-9


def test_the_mixture_with_a_cache_is_normalised_and_scores_as_it_generates(tmp_path):
    V = 23
    kn = ngram.KneserNey(3).fit(_stream(3000, V, seed=0), V)
    cache = cache_mod.RecentCache(V, (0.02, 0.03, 0.2), half_life=10)
    mix = ngram.Mixture(kn, 0.5, weights=np.linspace(0.05, 0.95, kn.n_bins), cache=cache)
    assert mix.history_len == cache.window
    rng = np.random.default_rng(2)
    ids = _stream(200, V, seed=3)
    nn_lp = np.log(rng.dirichlet(np.ones(V), size=len(ids)))
    stream = np.concatenate([[0], ids])
    nll = mix.token_nll(ids, 0, -nn_lp[np.arange(len(ids)), ids])
    plain = mix.token_nll(ids, 0, -nn_lp[np.arange(len(ids)), ids], cache=False)
    assert nll.sum() < plain.sum()          # the repeated phrase is cheaper with the cache
    for t in range(len(ids)):
        lp = mix.next_log_probs(stream[max(0, t + 1 - mix.history_len):t + 1], nn_lp[t])
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-12)
        assert -lp[ids[t]] == pytest.approx(nll[t], rel=1e-9)
    # saved with the n-gram and read back
    ngram.save(str(tmp_path), kn, {"order": 3, "weight": 0.5, "weights": mix.weights.tolist(),
                                   "cache": cache.to_dict()})
    back = ngram.load_mixture(str(tmp_path), V, None)
    assert back.cache.weights == cache.weights and back.cache.half_life == 10
    np.testing.assert_allclose(back.token_nll(ids, 0, -nn_lp[np.arange(len(ids)), ids]), nll, rtol=1e-12)


@pytest.mark.parametrize("bad", [{"half_life": 0, "weights": [0, 0, 0]}, {"half_life": 50, "weights": [0, 0.6, 0.6]},
                                 {"half_life": 50, "weights": [0, 0]}, {"half_life": 50, "weights": [-0.1, 0, 0]},
                                 {"half_life": True, "weights": [0, 0, 0]}, "50", [1, 2]])
def test_impossible_cache_settings_are_one_sentence(tmp_path, bad):
    kn = ngram.KneserNey(3).fit(_stream(300, 23, seed=0), 23)
    ngram.save(str(tmp_path), kn, {"order": 3, "weight": 0.5, "cache": bad})
    with pytest.raises(QrnnLmError, match="cache settings"):
        ngram.load_mixture(str(tmp_path), 23, None)
    meta = json.load(open(os.path.join(tmp_path, ngram.META)))
    meta["cache"] = None   # a run from before the cache: the mixture without one
    json.dump(meta, open(os.path.join(tmp_path, ngram.META), "w"))
    assert ngram.load_mixture(str(tmp_path), 23, None).cache is None
