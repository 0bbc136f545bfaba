"""The "Targets" section: each goal against what was measured, and a few
sentences read off the stored numbers."""
from __future__ import annotations

from experiments_config import MEM_METHODS
from report.sweep import _cut_order, _label, _scheme_order, beats, paired, sweep_table
from report.tables import _f


def time_to_reach(curve: list, target: float):
    """Training minutes at which a validation curve first reaches ``target``
    (linear between points), or None."""
    prev = None
    for p in curve:
        if p["valid_bpc"] <= target:
            if prev is None:
                return p["minutes"]
            f = (prev["valid_bpc"] - target) / (prev["valid_bpc"] - p["valid_bpc"])
            return prev["minutes"] + f * (p["minutes"] - prev["minutes"])
        prev = p
    return None


def goals(d: dict) -> list:
    rows = []
    rare = d.get("rare", {})
    km = {k: v["test_bpc"] for k, v in rare.items() if k.startswith("kmeans")}
    base = {k: v["test_bpc"] for k, v in rare.items() if k in ("unk", "pos1", "pos2")}
    if km and base:
        best_km = min(km, key=km.get)
        best_base = min(base, key=base.get)
        all_beat = max(km.values()) < min(base.values())
        held = "met" if all_beat else ("met by the best K, not every K" if km[best_km] < base[best_base]
                                       else "not met")
        rows.append(["k-means buckets beat `unk` and `pos` on test BPC (section 1: 1.7% rare test tokens)",
                     f"best k-means {best_km} {km[best_km]:.4f}, worst k-means {max(km.values()):.4f}; "
                     f"best of unk/pos {best_base} {base[best_base]:.4f}", held])
    if km and "full" in rare:
        best_km = min(km, key=km.get)
        rel = km[best_km] / rare["full"]["test_bpc"] - 1
        fs, ks = rare["full"]["steps"], rare[best_km]["steps"]
        steps = (f"; in the same time the full-vocabulary model made {fs} training steps and {best_km} {ks} "
                 f"({d.get('datasets', {}).get('full', {}).get('outputs', 0):,} against "
                 f"{d.get('datasets', {}).get(best_km, {}).get('outputs', 0):,} outputs)")
        rows.append(["k-means at 40% of types within 3% of the full-vocabulary BPC",
                     f"{best_km} {km[best_km]:.4f} vs full {rare['full']['test_bpc']:.4f} ({100 * rel:+.1f}%)"
                     + steps, "met" if rel <= 0.03 else "not met"])
    table, cuts = sweep_table(d), d.get("sweep_meta", {}).get("cuts", {})
    high = [c for c in _cut_order(cuts, table)
            if cuts.get(c, {}).get("test_rare_share", float(c.rstrip("%")) / 100) >= 0.095]
    if high:
        wins = [(c, s) for c in high for s in _scheme_order(d, table[c]) if "kmeans" in s
                and beats(paired(table[c], s, "unk")) and beats(paired(table[c], s, "pos"))]
        rows.append(["a k-means scheme beats `unk` and `pos` by more than 2 sd (paired by seed) at a rare share "
                     "≥ 10% (section 5)",
                     ("; ".join(f"{c}: {_label(d, s)}" for c, s in wins) if wins else "none")
                     + f" (cuts tried: {', '.join(high)})", "met" if wins else "not met"])
    rnn = d.get("rnn", {})
    for batching in ("stream", "sentences"):
        q, l_ = rnn.get(f"qrnn-{batching}"), rnn.get(f"lstm-{batching}")
        if not (q and l_ and q.get("curve") and l_.get("curve")):
            continue
        target = min(p["valid_bpc"] for p in l_["curve"])
        tl, tq = time_to_reach(l_["curve"], target), time_to_reach(q["curve"], target)
        speed = q["tokens_per_s"] / l_["tokens_per_s"]
        if tq is None:
            rows.append([f"QRNN-LM trains ≥ 2× faster than LSTM-LM at equal BPC ({batching})",
                         f"QRNN never reached the LSTM's best valid BPC {target:.4f}; tokens/s ratio {speed:.2f}×",
                         "not met"])
        else:
            ratio = tl / max(tq, 1e-9)
            rows.append([f"QRNN-LM trains ≥ 2× faster than LSTM-LM at equal BPC ({batching})",
                         f"valid BPC {target:.4f} (the LSTM's best): LSTM {tl:.2f} min, QRNN {tq:.2f} min "
                         f"→ {ratio:.2f}×; tokens/s ratio {speed:.2f}×",
                         "met" if ratio >= 2 else "not met"])
    return rows


def summary(d: dict) -> list:
    """A few sentences read off the stored numbers."""
    out = []
    rare, ds = d.get("rare", {}), d.get("datasets", {})
    if rare:
        order = sorted(rare, key=lambda k: rare[k]["test_bpc"])
        out.append("Rare words: test BPC ranks " + " < ".join(
            f"{rare[k]['label']} {rare[k]['test_bpc']:.3f}" for k in order) + ".")
        if "unk" in rare:
            u = rare["unk"]
            share = ds.get("unk", {}).get("test_bucket_fraction")
            out.append(f"With one `unk` bucket, {_f(share and 100 * share, '{:.1f}')}% of the test tokens are the "
                       f"bucket; the `unk` model's samples drew it for {100 * u['rare_fraction']:.1f}% of their "
                       "tokens, each shown as a concrete word drawn by P(word | bucket), never as a bucket name.")
    bd = d.get("breakdown", {})
    if "unk" in bd and "kmeans256" in bd:
        u, k = bd["unk"], bd["kmeans256"]

        def part(r, c, key):
            return r[c][key]
        bucketed = [r["test_bpc"] for n, r in rare.items() if n not in ("full", "sentencepiece", "char")]
        spread = max(bucketed) - min(bucketed)
        def rare_total(r):
            return sum(r[c]["model_bpc"] + r[c]["within_bucket_bpc"] for c in ("seen rare words", "unseen words"))
        out.append("k-means (K=256) against `unk`, bits per test character by token class (table in section 1): "
                   f"rare-word tokens {rare_total(u):.3f} (unk) vs {rare_total(k):.3f} (K=256); of which inside the "
                   "bucket for seen rare words "
                   f"{part(u, 'seen rare words', 'within_bucket_bpc'):.3f} vs "
                   f"{part(k, 'seen rare words', 'within_bucket_bpc'):.3f}, naming the bucket "
                   f"{part(u, 'seen rare words', 'model_bpc'):.3f} vs {part(k, 'seen rare words', 'model_bpc'):.3f} "
                   f"(seen rare words) and {part(u, 'unseen words', 'model_bpc'):.3f} vs "
                   f"{part(k, 'unseen words', 'model_bpc'):.3f} (the {u['unseen words']['tokens']:,} of "
                   f"{u['unseen words']['tokens'] + u['seen rare words']['tokens']:,} rare test tokens never seen in "
                   "training); kept words "
                   f"{part(u, 'kept words', 'model_bpc'):.3f} vs {part(k, 'kept words', 'model_bpc'):.3f}.  Rare "
                   f"words are {100 * d.get('datasets', {}).get('unk', {}).get('test_bucket_fraction', 0):.1f}% of "
                   f"the test tokens at the 40% cut; the bucket schemes span {spread:.3f} bits/char.")
    rnn = d.get("rnn", {})
    for batching in ("stream", "sentences"):
        q, l_ = rnn.get(f"qrnn-{batching}"), rnn.get(f"lstm-{batching}")
        if q and l_:
            out.append(f"QRNN vs LSTM, {batching} batching: {q['tokens_per_s']:,.0f} vs {l_['tokens_per_s']:,.0f} "
                       f"training tokens/s ({q['tokens_per_s'] / l_['tokens_per_s']:.2f}×); after the same wall "
                       f"time, test BPC {q['test_bpc_last']:.3f} (QRNN) vs {l_['test_bpc_last']:.3f} (LSTM).")
    mem = d.get("memory", {})
    if mem:
        v = max(r["types"] for r in mem.values())
        got = {r["method"]: r["peak_bytes"] / 2 ** 30 for r in mem.values() if r["types"] == v and "peak_bytes" in r}
        if got:
            out.append(f"Memory at {v:,} word types: " + ", ".join(
                f"{lab} {got[m]:.2f} GiB" for m, lab in MEM_METHODS if m in got) + " for one training step.")
    return out
