"""The experiment report is rendered from stored results alone (no training)."""
import copy
import json
import os
import statistics
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
pytest.importorskip("matplotlib")
import render_results as R  # noqa: E402


def sweep_results(kmeans_delta, noise):
    """Two cuts x three schemes x three seeds; kmeans-fasttext is unk's BPC
    plus ``kmeans_delta`` plus a seed-dependent ``noise``."""
    d = {"sweep_meta": {"cuts": {"10%": {"target": 0.1, "kept": 900, "test_rare_share": 0.101},
                                 "20%": {"target": 0.2, "kept": 300, "test_rare_share": 0.199}},
                        "config": {"steps": 60, "seeds": [1, 2, 3], "buckets": 64, "samples": 20,
                                   "sample_tokens": 60, "model": "--nhid 128"},
                        "test_pos1": {"名詞": 50, "助詞": 40, "動詞": 10}},
         "sweep": {}}
    base = {"10%": 4.0, "20%": 3.8}
    for cut, b in base.items():
        for seed, wiggle in zip((1, 2, 3), (0.01, -0.02, 0.015)):
            for scheme, bpc in (("unk", b + wiggle), ("pos", b + wiggle - 0.001),
                                ("kmeans-fasttext", b + wiggle + kmeans_delta + noise[seed - 1])):
                d["sweep"][f"{cut}/{scheme}/s{seed}"] = {
                    "test_bpc": bpc, "steps": 60,
                    "bits": {"total": bpc, "kept": bpc - 0.5, "bucket": 0.2, "within": 0.3},
                    "gen": {"js_bits": 0.1, "content_share": 0.5, "leaks": 0,
                            "pos1": {"名詞": 5, "助詞": 5}}}
    return d


def test_sweep_findings_use_paired_seeds():
    # 0.05 lower on every seed, tiny jitter: more than 2 sd below unk and pos
    win = R.sweep_findings(sweep_results(-0.05, [0.001, -0.001, 0.0]))
    assert any("k-means, fastText vectors at 10%" in x and "20%" in x for x in win), win
    assert "lowest mean test BPC k-means, fastText vectors" in win[0]
    assert win[1].startswith("10%, paired by seed: k-means, fastText vectors is lower by more than 2 sd than "
                             "unk (1 bucket) (-0.05"), win[1]
    assert any(x.startswith("10%, where the bits") and "inside the bucket +0.000" in x for x in win), win
    # the same mean gain, but seed noise larger than it: not 2 sd
    lose = R.sweep_findings(sweep_results(-0.05, [0.08, -0.12, -0.11]))
    assert lose[-1].endswith(": none."), lose
    assert "within 2 sd (no difference at this budget): " in lose[1], lose[1]
    # prepare's default scheme is judged against each cut's winners
    d = sweep_results(-0.05, [0.001, -0.001, 0.0])
    d["sweep"] = {k.replace("/pos/", "/pos+script/"): v for k, v in d["sweep"].items()}
    line = [x for x in R.sweep_findings(d) if "`prepare`'s default" in x]
    assert line == ["`prepare`'s default bucket scheme, pos × character type (`--rare pos+script`), is the lowest "
                    "or within 2 sd of the lowest at no cut; beaten by more than 2 sd at 10% (k-means, fastText "
                    "vectors), 20% (k-means, fastText vectors)."], line
    assert R.beats([-0.05, -0.051, -0.049]) and not R.beats([-0.05]) and not R.beats([0.1, 0.2])


def test_render_committed_results_with_budget_section(tmp_path):
    with open(os.path.join(REPO, "benchmarks", "results", "experiments.json"), encoding="utf-8") as f:
        d = json.load(f)
    d.update(copy.deepcopy(sweep_results(-0.05, [0.001, -0.001, 0.0])))
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\n## Setup\n\nold text\n", encoding="utf-8")   # nothing of it is kept
    budget = os.path.join(REPO, "benchmarks", "results", "bench_budget_cpu.json")
    R.render(d, str(out), str(tmp_path / "img"), str(tmp_path / "x.json"), budget)
    text = out.read_text(encoding="utf-8")
    assert "old text" not in text and "bench_budget:begin" not in text
    heading = "## What a budget buys (`benchmarks/bench_budget.py`)"   # README links to its anchor
    assert text.count(heading) == 1
    assert text.index("## Setup") < text.index("## Targets") < text.index("## Regenerate") < text.index(heading)
    for heading in ("## 1. Rare words", "## 2. QRNN vs LSTM", "## 4. Vocabulary size",
                    "## 5. Rare-word schemes", "### 10% rare test tokens", "### Generated text"):
        assert heading in text
    assert "Goals of the issue" not in text and "noise at this budget" not in text
    # mean ± sd of the three seeds, as the table shows it
    unk = [4.0 + w for w in (0.01, -0.02, 0.015)]
    assert f"**{statistics.fmean(unk):.4f} ± {statistics.stdev(unk):.4f}**" in text
    for png in ("rare_words.png", "qrnn_vs_lstm.png", "memory_vs_vocab.png", "rare_sweep.png"):
        assert (tmp_path / "img" / png).stat().st_size > 0
    # the run's wall time, stated once
    assert text.count(f"A full run took {d['meta']['total_minutes']:.0f} minutes of wall time") == 1
    # rendering again gives the same file
    R.render(d, str(out), str(tmp_path / "img"), str(tmp_path / "x.json"), budget)
    assert out.read_text(encoding="utf-8") == text


def test_cli_missing_json(tmp_path, capsys):
    assert R.main(["--json", str(tmp_path / "none.json"), "--out", str(tmp_path / "R.md")]) == 1
    assert "error:" in capsys.readouterr().err
    committed = os.path.join(REPO, "benchmarks", "results", "experiments.json")
    assert R.main(["--json", committed, "--budget-json", str(tmp_path / "none.json"),
                   "--out", str(tmp_path / "R.md")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bench_budget.py" in err and "Traceback" not in err
    assert not (tmp_path / "R.md").exists()


def test_budget_section_from_its_json(tmp_path):
    """The budget section is rendered from bench_budget.py's JSON: mean and
    half-range over seeds per cell, the criteria, a link to the JSON."""
    from report.budget import budget_section
    run = {"rc": 0, "chosen": None}
    result = {"meta": {"command": "python benchmarks/bench_budget.py", "corpus": "c", "machine": "m", "cpus": 2,
                       "threads": 2, "torch": "t", "date": "d", "load_min": 0.5, "load_max": 1.5},
              "runs": [dict(run, contender="defaults", minutes=2, seed=1, test_bpc=3.0, steps=100, tokens=2e6),
                       dict(run, contender="defaults", minutes=2, seed=2, test_bpc=3.2, steps=120, tokens=3e6),
                       dict(run, contender="classic", minutes=2, seed=1, test_bpc=3.5, steps=80, tokens=1e6)]}
    path = tmp_path / "results" / "budget.json"
    lines = budget_section(result, str(path), str(tmp_path / "docs"), "img")
    text = "\n".join(lines)
    assert "| (a) defaults (MeCab) | 3.100 ±0.100, n=2 (110, 2.50M) |" in text
    assert "| (b) classic recipe (LSTM 2x200, SGD 20) | 3.500 (80, 1.00M) |" in text
    assert "- 2 min: the defaults are 11.4% below the classic recipe (3.100 vs 3.500 test BPC)." in text
    assert "![test BPC against budget](img/bpc_vs_budget.png)" in text
    assert "[../results/budget.json](../results/budget.json)" in text
