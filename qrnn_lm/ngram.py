"""An n-gram beside the network: an interpolated modified Kneser-Ney model
(Chen & Goodman 1998) over the network's own outputs (kept words, rare-word
buckets, ``</s>``), mixed with the network's distribution.

A 5-gram counts a few million tokens in seconds and is, for the first minutes
of training, a better model than the network; the two are better together
than either (their errors differ: the n-gram remembers exact phrases, the
network generalises).  So train.py counts one over the training ids when the
run starts (its seconds count in the budget), and at the end picks the mixing
weights that minimise the validation loss:

    P(w | h) = lam(h) * P_network(w | h) + (1 - lam(h)) * P_ngram(w | h_last n-1)

lam(h) depends on how well the n-gram knows the context: one weight per
(longest history the n-gram has seen, log2 of that history's count) -- at most
``order`` x (COUNT_BINS) weights, each the best on the validation tokens of its
context class (the summed loss separates by class), the overall weight where a
class has fewer than MIN_BIN_TOKENS of them.  Where the n-gram has seen its
whole history hundreds of times it is trusted more than where it backs off
to unigrams (Jelinek & Mercer's bucketed weights).

The mixture is a normalised distribution over the same outputs, so exact
P(word) = P(bucket) * P(word | bucket) and bits per character hold as before.
The run directory keeps it as ``ngram.npz`` (the counts; ``np.load`` without
pickles) and ``ngram.json`` (order, weight, figures); ``evaluate``,
``generate`` and ``serve`` use it when it is there.

Counting: every n-gram of the training stream gets a dense id order by order
-- the key of an n-gram is ``id(its first n-1 tokens) * V + last token``,
exact in int64 (no collisions), made dense with ``np.unique``.  Orders below
the highest use continuation counts N1+(. h w); discounts D1, D2, D3+ per
order from that order's count-of-counts; the unigram level interpolates with
the uniform distribution over all V outputs, so every output has probability
> 0 and P(. | h) sums to 1 over the V outputs for every history h.
"""
from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

from .cache import RecentCache
from .errors import QrnnLmError
from .rundir import atomic_write

FILE, META = "ngram.npz", "ngram.json"
#: Above this many training tokens the n-gram is off unless asked for
#: (--ngram ORDER): its counts take ~16 bytes per distinct n-gram on disk and
#: a few times that while counting (3.3 M 5-grams, 50 MB, for 2.3 M tokens).
AUTO_MAX_TOKENS = 10_000_000
#: Context classes of the mixing weights: log2 of the history's count, 0..COUNT_BINS-1.
COUNT_BINS = 9
#: A context class with fewer validation tokens than this uses the overall weight.
MIN_BIN_TOKENS = 100
#: The smallest discount (Chen & Goodman's estimates can reach 0 on tiny counts).
MIN_DISCOUNT = 0.01
DEFAULT_ORDER = 5
#: Up to this many training tokens the default order is LONG_ORDER: on
#: ja-debian-docs (2.3M tokens) the 2-minute default network mixed with
#: orders 3..8, 10 scored 2.728, 2.691, 2.672, 2.659, 2.649, 2.642, 2.637 test
#: BPC (benchmarks/results/ngram_order.json, weights by context, no cache); 8
#: is within 0.01 of 10 at 2/3 of its disk (ngram.npz: 137 MB, the 5-gram's 50 MB).
LONG_ORDER_MAX_TOKENS = 3_000_000
LONG_ORDER = 8


def auto_order(train_tokens: int) -> int:
    """The order a run gets when --ngram is left out (0: none)."""
    if train_tokens <= LONG_ORDER_MAX_TOKENS:
        return LONG_ORDER
    return DEFAULT_ORDER if train_tokens <= AUTO_MAX_TOKENS else 0
MAX_ORDER = 10


def discounts(counts: np.ndarray) -> np.ndarray:
    """(D1, D2, D3+) from the count-of-counts n1..n4 of ``counts`` (Chen &
    Goodman's estimates), kept within [0, c] for c = 1, 2, 3 when the counts
    are too few to estimate them."""
    n = [int(np.sum(counts == k)) for k in (1, 2, 3, 4)]
    if min(n) == 0:
        return np.array([0.5, 1.0, 1.5])
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    return np.clip(d, 0.0, [1.0, 2.0, 3.0])


class KneserNey:
    """Interpolated modified Kneser-Ney over ``vocab_size`` outputs."""

    def __init__(self, order: int = 5):
        if order < 1:
            raise ValueError("the order must be >= 1")
        self.order = order

    # -- counting ----------------------------------------------------------
    def fit(self, stream: np.ndarray, vocab_size: int) -> "KneserNey":
        """Count every n-gram (n <= order) of ``stream`` (int ids < vocab_size)."""
        stream = np.asarray(stream, dtype=np.int64)
        if len(stream) < 2 or stream.min() < 0 or stream.max() >= vocab_size:
            raise ValueError("the training stream needs >= 2 ids, all in [0, vocab_size)")
        V = self.V = int(vocab_size)
        N = len(stream)
        # gid[k][i]: dense id of the k-gram ending at position i (-1 where i < k - 1)
        gid = [np.zeros(N, dtype=np.int64), stream.copy()]
        self.keys, self.ngram_hist, first = [None, np.arange(V, dtype=np.int64)], [None, None], [None, None]
        for k in range(2, self.order + 1):
            key = np.full(N, -1, dtype=np.int64)
            key[k - 1:] = gid[k - 1][k - 2:-1] * V + stream[k - 1:]
            valid = key >= 0
            uniq, pos, inv = np.unique(key[valid], return_index=True, return_inverse=True)
            g = np.full(N, -1, dtype=np.int64)
            g[valid] = inv
            gid.append(g)
            self.keys.append(uniq)
            first.append(np.flatnonzero(valid)[pos])
        self.levels = []
        for k in range(1, self.order + 1):
            if k == self.order:          # the highest order: raw counts
                cnt = np.bincount(gid[k][gid[k] >= 0], minlength=len(self.keys[k]))
            else:                        # continuation counts N1+(. w_1..w_k)
                suffix = gid[k][first[k + 1]]
                cnt = np.bincount(suffix, minlength=len(self.keys[k]) if k > 1 else V)
            self.levels.append(self._level(k, cnt))
        return self

    def _level(self, k: int, cnt: np.ndarray, D: np.ndarray | None = None) -> dict:
        """Per-order tables: counts, discounts (estimated from the counts
        unless given), per-history totals and interpolation weights' numerators."""
        V = self.V
        hist = self.keys[k] // V if k > 1 else np.zeros(V, dtype=np.int64)
        nhist = (len(self.keys[k - 1]) if k > 2 else V) if k > 1 else 1
        D = discounts(cnt[cnt > 0]) if D is None else D
        # a zero discount would leave a history no mass for the lower orders:
        # an unseen continuation would get probability 0 (odd, tiny corpora)
        D = np.maximum(D, MIN_DISCOUNT)
        disc = np.where(cnt >= 3, D[2], np.where(cnt == 2, D[1], np.where(cnt == 1, D[0], 0.0)))
        total = np.bincount(hist, weights=cnt, minlength=nhist)
        gamma = np.bincount(hist, weights=disc, minlength=nhist)
        return {"count": cnt.astype(np.float64), "disc": disc, "total": total, "gamma": gamma, "D": D}

    # -- lookup ------------------------------------------------------------
    def _find(self, k: int, key: np.ndarray) -> np.ndarray:
        """Dense ids of k-gram keys (-1 where the k-gram was never seen)."""
        keys = self.keys[k]
        out = np.full(len(key), -1, dtype=np.int64)
        ok = key >= 0
        if len(keys) == 0:
            return out
        j = np.searchsorted(keys, key[ok])
        j = np.minimum(j, len(keys) - 1)
        out[ok] = np.where(keys[j] == key[ok], j, -1)
        return out

    def history_ids(self, stream: np.ndarray) -> list:
        """hid[k][i]: id of the k-gram ending at position i of ``stream`` among
        the training k-grams (-1 when unseen or too close to the start)."""
        stream = np.asarray(stream, dtype=np.int64)
        N = len(stream)
        hid = [np.zeros(N, dtype=np.int64), stream.copy()]
        for k in range(2, self.order):
            key = np.full(N, -1, dtype=np.int64)
            prev = hid[k - 1][k - 2:-1]
            key[k - 1:] = np.where(prev >= 0, prev * self.V + stream[k - 1:], -1)
            hid.append(self._find(k, key))
        return hid

    def prob(self, hists: list, words: np.ndarray) -> np.ndarray:
        """P(word | history) for parallel arrays: ``hists[k - 1]`` holds the id
        of each query's (k-1)-token history (-1: unseen), k = 1..order."""
        words = np.asarray(words, dtype=np.int64)
        p = np.full(len(words), 1.0 / self.V)
        for k in range(1, self.order + 1):
            lv, h = self.levels[k - 1], np.asarray(hists[k - 1], dtype=np.int64)
            seen = h >= 0
            hs = np.where(seen, h, 0)
            total = np.where(seen, lv["total"][hs], 0.0)
            known = total > 0
            if k == 1:
                g = words
            else:
                g = self._find(k, np.where(known, hs * self.V + words, -1))
            c = np.where(g >= 0, lv["count"][np.maximum(g, 0)], 0.0)
            d = np.where(g >= 0, lv["disc"][np.maximum(g, 0)], 0.0)
            safe = np.where(known, total, 1.0)
            p = np.where(known, (c - d + lv["gamma"][hs] * p) / safe, p)
        return p

    def _next_hists(self, history) -> list:
        """``hists`` of :meth:`prob` for one query: the token after
        ``history`` (its last order-1 ids), one id per history length."""
        history = list(history)[-(self.order - 1):] if self.order > 1 else []
        hid = self.history_ids(np.asarray(history, dtype=np.int64)) if history else None
        return [np.array([0 if n == 0 else (int(hid[n][-1]) if n <= len(history) else -1)], dtype=np.int64)
                for n in range(self.order)]

    def next_probs(self, history) -> np.ndarray:
        """P(w | history) for every output w (the history's last order-1 ids)."""
        return self.next_probs_and_bin(history)[0]

    def next_probs_and_bin(self, history) -> tuple:
        """:meth:`next_probs` and the context class of the next token (:meth:`bins`)."""
        hists = self._next_hists(history)
        probs = self.prob([np.broadcast_to(h, self.V) for h in hists], np.arange(self.V))
        return probs, int(self.bins(hists)[0])

    def _stream_hists(self, stream: np.ndarray) -> list:
        """``hists`` of :meth:`prob` for the targets stream[1:]."""
        hid = self.history_ids(stream)
        T = len(stream) - 1
        hists = [np.zeros(T, dtype=np.int64)]
        for n in range(1, self.order):
            h = np.full(T, -1, dtype=np.int64)
            h[n - 1:] = hid[n][n - 1:T]   # the n-gram ending at t - 1 (history of target t)
            hists.append(h)
        return hists

    def log_probs(self, stream: np.ndarray) -> np.ndarray:
        """ln P(stream[t] | stream[:t]) for t = 1..len(stream)-1."""
        stream = np.asarray(stream, dtype=np.int64)
        return np.log(self.prob(self._stream_hists(stream), stream[1:]))

    def log_probs_and_bins(self, stream: np.ndarray) -> tuple:
        """:meth:`log_probs` and the context class of each target (:meth:`bins`)."""
        stream = np.asarray(stream, dtype=np.int64)
        hists = self._stream_hists(stream)
        return np.log(self.prob(hists, stream[1:])), self.bins(hists)

    @property
    def n_bins(self) -> int:
        return self.order * COUNT_BINS

    def bins(self, hists: list) -> np.ndarray:
        """Context class of each query of ``hists`` (as :meth:`prob` takes
        them): n * COUNT_BINS + min(floor(log2 count), COUNT_BINS - 1) for
        the longest history of n tokens (0 <= n < order) the n-gram has seen
        (n = 0: none; count: the history's total at the next order)."""
        longest = np.zeros(len(hists[0]), dtype=np.int64)
        total = np.zeros(len(hists[0]))
        for n in range(1, self.order):
            h = np.asarray(hists[n], dtype=np.int64)
            t = np.where(h >= 0, self.levels[n]["total"][np.maximum(h, 0)], 0.0)
            longest, total = np.where(t > 0, n, longest), np.where(t > 0, t, total)
        c = np.floor(np.log2(np.maximum(total, 1.0))).astype(np.int64)
        return longest * COUNT_BINS + np.minimum(c, COUNT_BINS - 1)

    def history_bin(self, history) -> int:
        """The context class of the next token after ``history``."""
        return int(self.bins(self._next_hists(history))[0])


# ---------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------
def save(run_dir: str, kn: KneserNey, meta: dict) -> None:
    """``ngram.npz`` (the counts) and ``ngram.json`` (``meta``) in ``run_dir``."""
    arrays = {"V": np.array([kn.V]), "order": np.array([kn.order])}
    for k in range(1, kn.order + 1):
        lv = kn.levels[k - 1]
        arrays[f"count{k}"] = lv["count"]
        arrays[f"D{k}"] = lv["D"]
        if k >= 2:
            arrays[f"keys{k}"] = kn.keys[k]
    atomic_write(os.path.join(run_dir, FILE), lambda f: np.savez(f, **arrays))
    save_meta(run_dir, meta)


def remove(run_dir: str) -> bool:
    """Delete the n-gram of ``run_dir``; whether there was one."""
    found = False
    for name in (META, FILE):   # the weight first: without it the counts are never used
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)
            found = True
    return found


def save_meta(run_dir: str, meta: dict) -> None:
    text = json.dumps(meta, indent=1).encode("utf-8")
    atomic_write(os.path.join(run_dir, META), lambda f: f.write(text))


def read_meta(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, META)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise QrnnLmError(f"{path} cannot be read ({e}); delete it (and {FILE}) to use the network alone.") \
            from None
    if not isinstance(meta, dict):
        raise QrnnLmError(f"{path} is not an n-gram description; delete it to use the network alone.")
    return meta


def load(run_dir: str, vocab_size: int) -> KneserNey:
    """The KneserNey model saved in ``run_dir``, checked before use (the file
    may come from anywhere: shapes, orders and ids are verified)."""
    path = os.path.join(run_dir, FILE)
    bad = f"{path} is damaged or not an n-gram of this model"
    try:
        with np.load(path, allow_pickle=False) as z:
            V, order = int(z["V"][0]), int(z["order"][0])
            if V != vocab_size or not 1 <= order <= MAX_ORDER:
                raise QrnnLmError(f"{bad} ({V} outputs, order {order}; the model has {vocab_size} outputs).")
            kn = KneserNey(order)
            kn.V, kn.keys, kn.levels = V, [None, np.arange(V, dtype=np.int64)], []
            for k in range(1, order + 1):
                cnt = np.asarray(z[f"count{k}"], dtype=np.float64)
                D = np.asarray(z[f"D{k}"], dtype=np.float64)
                if k >= 2:
                    keys = np.asarray(z[f"keys{k}"], dtype=np.int64)
                    n_hist = V if k == 2 else len(kn.keys[k - 1])
                    if (len(keys) != len(cnt) or (len(keys) and (keys.min() < 0 or keys.max() >= n_hist * V))
                            or np.any(np.diff(keys) <= 0)):
                        raise QrnnLmError(f"{bad} (its {k}-grams are out of order or range).")
                    kn.keys.append(keys)
                elif len(cnt) != V:
                    raise QrnnLmError(f"{bad} (its unigram counts do not match the outputs).")
                if (D.shape != (3,) or not np.all(np.isfinite(D)) or np.any(D < 0) or np.any(D > [1, 2, 3])
                        or not np.all(np.isfinite(cnt)) or np.any(cnt < 0) or np.any(cnt != np.floor(cnt))):
                    raise QrnnLmError(f"{bad} (impossible counts or discounts).")
                kn.levels.append(kn._level(k, cnt, D))
    except QrnnLmError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise QrnnLmError(f"{bad} ({type(e).__name__}: {e}); delete it (and {META}) to use the network alone.") \
            from None
    return kn


# ---------------------------------------------------------------------------
# the mixture
# ---------------------------------------------------------------------------
def mixed_nll(nn_nll: np.ndarray, ngram_nll: np.ndarray, weight) -> np.ndarray:
    """Per-token -ln(weight * P_network + (1 - weight) * P_ngram) from the two
    models' per-token -ln P (nats); ``weight`` one number or one per token."""
    nn_nll, ngram_nll = np.asarray(nn_nll, np.float64), np.asarray(ngram_nll, np.float64)
    if np.ndim(weight):
        w = np.asarray(weight, np.float64)
        with np.errstate(divide="ignore"):
            return -np.logaddexp(np.log(w) - nn_nll, np.log1p(-w) - ngram_nll)
    if weight >= 1.0:
        return nn_nll.copy()
    if weight <= 0.0:
        return ngram_nll.copy()
    return -np.logaddexp(math.log(weight) - nn_nll, math.log1p(-weight) - ngram_nll)


def best_weight(nn_nll: np.ndarray, ngram_nll: np.ndarray) -> float:
    """The network's weight in [0, 1] that minimises the summed mixed loss
    (the loss is convex in the weight: a golden-section search finds it)."""
    f = lambda w: float(mixed_nll(nn_nll, ngram_nll, w).sum())   # noqa: E731
    lo, hi = 0.0, 1.0
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(40):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    w = (lo + hi) / 2
    for edge in (0.0, 1.0):                  # the optimum may sit on an edge
        if f(edge) <= f(w):
            w = edge
    return w


def best_weights(nn_nll: np.ndarray, ngram_nll: np.ndarray, bins: np.ndarray, n_bins: int,
                 min_tokens: int = MIN_BIN_TOKENS) -> tuple:
    """(overall weight, weight per context class): each class's weight
    minimises the summed mixed loss of its tokens (the classes' losses add
    up, so each is found alone); a class with fewer than ``min_tokens``
    tokens gets the overall weight."""
    nn_nll, ngram_nll, bins = np.asarray(nn_nll), np.asarray(ngram_nll), np.asarray(bins)
    overall = best_weight(nn_nll, ngram_nll)
    table = np.full(n_bins, overall)
    for b in np.unique(bins):
        mask = bins == b
        if mask.sum() >= min_tokens:
            table[b] = best_weight(nn_nll[mask], ngram_nll[mask])
    return overall, table


class Mixture:
    """A network's outputs mixed with a KneserNey model: ``weight`` on the
    network, or ``weights[context class]`` (:meth:`KneserNey.bins`) when given;
    then a cache of the text read so far (:mod:`qrnn_lm.cache`), when given."""

    def __init__(self, kn: KneserNey, weight: float, meta: dict | None = None, weights=None, cache=None):
        self.kn, self.weight, self.meta = kn, float(weight), meta or {}
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.cache = cache

    @property
    def history_len(self) -> int:
        """How many of the last tokens :meth:`next_log_probs` needs."""
        return max(self.kn.order, self.cache.window if self.cache is not None else 0)

    def token_nll(self, ids: np.ndarray, eos_id: int, nn_nll: np.ndarray, cache: bool = True) -> np.ndarray:
        """Mixed per-token nats of ``ids`` (the stream ``[eos] + ids``, as
        the network reads it) from the network's per-token nats; ``cache``
        False: without the cache."""
        stream = np.concatenate([[eos_id], np.asarray(ids, dtype=np.int64)])
        lp, bins = self.kn.log_probs_and_bins(stream)
        nll = mixed_nll(nn_nll, -lp, self.weight if self.weights is None else self.weights[bins])
        if cache and self.cache is not None:
            nll = self.cache.token_nll(stream, nll)
        return nll

    def next_log_probs(self, history: list, nn_log_probs: np.ndarray) -> np.ndarray:
        """ln P(w | history) of the mixture for every output w (``history``:
        the stream read so far, ``</s>`` first; its last :attr:`history_len`
        tokens are enough)."""
        ngram_p, context = self.kn.next_probs_and_bin(history)
        w = self.weight if self.weights is None else float(self.weights[context])
        p = w * np.exp(np.asarray(nn_log_probs, np.float64)) + (1 - w) * ngram_p
        if self.cache is not None:
            p1, p2 = self.cache.next_probs(history)
            p = self.cache.mix(p, p1, p2, p2 is not None)
        return np.log(np.maximum(p, 1e-300))


def load_mixture(checkpoint_path: str, vocab_size: int, dataset_identity: str | None) -> Mixture | None:
    """The mixture saved beside ``checkpoint_path`` (a run directory or a file
    in one), or None when there is none (or it has no weight yet, or its
    weight is 1).  An n-gram of another dataset is refused."""
    run_dir = checkpoint_path if os.path.isdir(checkpoint_path) else os.path.dirname(os.path.abspath(checkpoint_path))
    meta = read_meta(run_dir)
    if meta is None or not os.path.isfile(os.path.join(run_dir, FILE)):
        return None
    weight = meta.get("weight")
    if weight is None:
        return None
    if not _is_weight(weight):
        raise QrnnLmError(f"{os.path.join(run_dir, META)} gives an impossible weight {weight!r}.")
    weights = meta.get("weights")   # per context class (older runs: one weight)
    if weights is not None and (not isinstance(weights, list) or not all(map(_is_weight, weights))):
        raise QrnnLmError(f"{os.path.join(run_dir, META)} gives impossible weights by context.")
    if dataset_identity and meta.get("dataset") and meta["dataset"] != dataset_identity:
        raise QrnnLmError(f"the n-gram in {run_dir} was counted on another dataset than the checkpoint's "
                          f"vocabulary; delete {FILE} and {META} to use the network alone.")
    if (weight if weights is None else min(weights, default=1.0)) >= 1.0:
        return None
    cache = None
    if meta.get("cache") is not None:
        try:
            cache = RecentCache.from_dict(meta["cache"], vocab_size)
        except ValueError:
            raise QrnnLmError(f"{os.path.join(run_dir, META)} gives impossible cache settings; delete it and "
                              f"{FILE} to use the network alone.") from None
    kn = load(run_dir, vocab_size)
    if weights is not None and len(weights) != kn.n_bins:
        raise QrnnLmError(f"{os.path.join(run_dir, META)} gives {len(weights)} weights by context for "
                          f"{kn.n_bins} classes; delete it and {FILE} to use the network alone.")
    return Mixture(kn, weight, meta, weights, cache)


def _is_weight(w) -> bool:
    return not isinstance(w, bool) and isinstance(w, (int, float)) and 0.0 <= w <= 1.0
