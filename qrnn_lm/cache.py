"""A cache of the text being read, mixed into the network + n-gram mixture.

Words and phrases that occurred a moment ago are likely to occur again (a
command name in a manual, a person's name in an article): a cache model
(Kuhn & De Mori 1990) gives them probability from the recent text itself,
which neither the network's state nor an n-gram counted on the training
text holds.  Two caches, both over the outputs (kept words, buckets,
``</s>``) of the text read so far, with exponentially decaying counts:

- the word cache: P1(w) = sum of a^(t-s) over earlier positions s holding w,
  divided by the sum over all earlier positions (half-life HALF_LIFE tokens);
- the phrase cache: P2(w | u) for the last token u: the decayed count of
  "u w" among the earlier pairs that start with u, over the decayed count of
  those pairs.  It exists only where u was followed by something recently
  (that count above MIN_CONTEXT).

    P(w | h) = (1 - c1 - c2) * P_mix(w | h) + c1 * P1(w) + c2 * P2(w | u)

with (c1, c2) one pair where the phrase cache exists and (c1, 0) where it
does not, chosen on the validation split (EM: the mixed loss is convex in
the weights).  Every part is a distribution over the same outputs, so the
result sums to 1 and exact P(word) = P(bucket) * P(word | bucket) holds.
Both look back 40 half-lives (2,000 tokens); what is older weighs < 2^-40 and
is forgotten, so the tables stay the size of that window on any text.
"""
from __future__ import annotations

import numpy as np

#: half-life of both caches, in tokens: on the 2-minute ja-debian-docs run
#: (benchmarks/results/ngram_order.json) half-lives 10, 25, 50, 100, 200 scored
#: 2.547, 2.528, 2.520, 2.520, 2.527 test BPC (2.642 without the cache)
HALF_LIFE = 50
#: the phrase cache needs this much decayed count of pairs after the last token
MIN_CONTEXT = 1e-3


class RecentCache:
    """The two caches and their weights ``(c1 without a phrase cache, c1, c2)``."""

    def __init__(self, vocab_size: int, weights=(0.0, 0.0, 0.0), half_life: float = HALF_LIFE):
        self.V, self.half_life = int(vocab_size), float(half_life)
        self.decay = 0.5 ** (1.0 / self.half_life)
        self.weights = tuple(float(w) for w in weights)

    @property
    def window(self) -> int:
        """Tokens of history the next-token distribution looks at (older ones weigh < 2^-40)."""
        return int(40 * self.half_life)

    def stream_probs(self, stream: np.ndarray) -> tuple:
        """(P1, P2, has_phrase) of each prediction ``stream[t + 1]`` from
        ``stream[:t + 1]``, t = 0 .. len - 2 (float64, float64, bool)."""
        st = np.asarray(stream, dtype=np.int64).tolist()
        T = max(len(st) - 1, 0)
        p1, p2, has = np.zeros(T), np.zeros(T), np.zeros(T, dtype=bool)
        a = self.decay
        word, word_t = {}, {}          # decayed count of each token, and when it was last brought up to date
        pair, pair_t = {}, {}          # the same for pairs (u, w)
        ctx, ctx_t = {}, {}            # and for pairs starting with u
        norm, window = 0.0, self.window
        for t in range(T):
            if t and t % window == 0:   # forget what weighs < 2^-40: the tables hold one window's text
                for table, when in ((word, word_t), (pair, pair_t), (ctx, ctx_t)):
                    for key in [k for k, s in when.items() if t - s > window]:
                        del table[key], when[key]
            tok = st[t]
            norm = norm * a + 1.0
            word[tok] = word.get(tok, 0.0) * a ** (t - word_t.get(tok, t)) + 1.0
            word_t[tok] = t
            if t:
                u = st[t - 1]
                key = (u, tok)
                pair[key] = pair.get(key, 0.0) * a ** (t - pair_t.get(key, t)) + 1.0
                pair_t[key] = t
                ctx[u] = ctx.get(u, 0.0) * a ** (t - ctx_t.get(u, t)) + 1.0
                ctx_t[u] = t
            w = st[t + 1]
            if w in word:
                p1[t] = word[w] * a ** (t - word_t[w]) / norm
            c = ctx[tok] * a ** (t - ctx_t[tok]) if tok in ctx else 0.0
            if c > MIN_CONTEXT:
                has[t] = True
                key = (tok, w)
                if key in pair:
                    p2[t] = pair[key] * a ** (t - pair_t[key]) / c
        return p1, p2, has

    def next_probs(self, history) -> tuple:
        """(P1 over every output, P2 over every output or None) after ``history``."""
        h = np.asarray(list(history), dtype=np.int64)[-self.window:]
        if len(h) == 0:
            return np.zeros(self.V), None
        age = np.arange(len(h) - 1, -1, -1, dtype=np.float64)
        w = self.decay ** age
        p1 = np.bincount(h, weights=w, minlength=self.V)[:self.V] / w.sum()
        after = np.flatnonzero(h[:-1] == h[-1]) + 1          # positions that follow an earlier h[-1]
        c = w[after].sum()
        if c <= MIN_CONTEXT:
            return p1, None
        return p1, np.bincount(h[after], weights=w[after], minlength=self.V)[:self.V] / c

    def mix(self, base_p: np.ndarray, p1: np.ndarray, p2: np.ndarray, has) -> np.ndarray:
        """The cache mixed into ``base_p`` (per token, or one distribution
        with ``has`` a bool and ``p2`` None when it is False)."""
        c1_no, c1, c2 = self.weights
        c1 = np.where(has, c1, c1_no)
        c2 = np.where(has, c2, 0.0)
        if p2 is None:
            p2 = 0.0
        return (1.0 - c1 - c2) * base_p + c1 * p1 + c2 * p2

    def token_nll(self, stream: np.ndarray, base_nll: np.ndarray) -> np.ndarray:
        p1, p2, has = self.stream_probs(stream)
        with np.errstate(divide="ignore"):
            return -np.log(self.mix(np.exp(-np.asarray(base_nll, np.float64)), p1, p2, has))

    def to_dict(self) -> dict:
        return {"half_life": self.half_life, "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, d, vocab_size: int) -> "RecentCache":
        """Checked: ValueError when ``d`` is not a cache this code wrote."""
        if not isinstance(d, dict):
            raise ValueError("not a cache description")
        hl, w = d.get("half_life"), d.get("weights")
        if (isinstance(hl, bool) or not isinstance(hl, (int, float)) or not 1 <= hl <= 1e4
                or not isinstance(w, list) or len(w) != 3
                or not all(not isinstance(x, bool) and isinstance(x, (int, float)) and 0 <= x <= 1 for x in w)
                or w[1] + w[2] > 1):
            raise ValueError("impossible cache settings")
        return cls(vocab_size, w, hl)


def _em(parts: list, iters: int = 200) -> np.ndarray:
    """Mixing weights of the per-token probabilities ``parts`` (the first is
    the base) that maximise the summed log-likelihood (EM)."""
    k, n = len(parts), len(parts[0])
    w = np.full(k, 1.0 / k)
    if n == 0:
        w[:] = 0.0
        w[0] = 1.0
        return w
    P = np.stack(parts)
    for _ in range(iters):
        mixed = np.maximum(w @ P, 1e-300)
        w = w * (P / mixed).mean(axis=1)
        w /= w.sum()
    return w


def fit(base_nll: np.ndarray, stream: np.ndarray, vocab_size: int, half_life: float = HALF_LIFE) -> RecentCache:
    """The cache whose weights minimise the mixed loss of ``stream``'s
    predictions (``stream[1:]``) given the mixture's per-token nats ``base_nll``."""
    cache = RecentCache(vocab_size, half_life=half_life)
    p1, p2, has = cache.stream_probs(stream)
    base = np.exp(-np.asarray(base_nll, np.float64))
    no = ~has
    w_no = _em([base[no], p1[no]])
    w_has = _em([base[has], p1[has], p2[has]])
    cache.weights = (float(w_no[1]), float(w_has[1]), float(w_has[2]))
    with np.errstate(divide="ignore"):
        if -np.log(cache.mix(base, p1, p2, has)).sum() > -np.log(base).sum():   # EM stopped short of no cache
            cache.weights = (0.0, 0.0, 0.0)
    return cache
