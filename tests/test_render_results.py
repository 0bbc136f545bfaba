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


def test_render_committed_results_and_keep_budget_block(tmp_path):
    with open(os.path.join(REPO, "benchmarks", "results", "experiments.json"), encoding="utf-8") as f:
        d = json.load(f)
    d.update(copy.deepcopy(sweep_results(-0.05, [0.001, -0.001, 0.0])))
    out = tmp_path / "RESULTS.md"
    block = "<!-- bench_budget:begin -->\n## Budgets\n\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- bench_budget:end -->"
    out.write_text("# Results\n\n## Setup\n\nold text\n\n" + block + "\n\n## Regenerate\n", encoding="utf-8")
    R.render(d, str(out), str(tmp_path / "img"), str(tmp_path / "x.json"))
    text = out.read_text(encoding="utf-8")
    assert text.count(block) == 1
    assert text.index("## Setup") < text.index(block) < text.index("## Targets")
    for heading in ("## 1. Rare words", "## 2. QRNN vs LSTM", "## 4. Vocabulary size",
                    "## 5. Rare-word schemes", "### 10% rare test tokens", "### Generated text"):
        assert heading in text
    assert "Goals of the issue" not in text and "noise at this budget" not in text
    # mean ± sd of the three seeds, as the table shows it
    unk = [4.0 + w for w in (0.01, -0.02, 0.015)]
    assert f"**{statistics.fmean(unk):.4f} ± {statistics.stdev(unk):.4f}**" in text
    for png in ("rare_words.png", "qrnn_vs_lstm.png", "memory_vs_vocab.png", "rare_sweep.png"):
        assert (tmp_path / "img" / png).stat().st_size > 0
    # rendering again keeps the block once
    R.render(d, str(out), str(tmp_path / "img"), str(tmp_path / "x.json"))
    assert out.read_text(encoding="utf-8").count(block) == 1


def test_cli_missing_json(tmp_path, capsys):
    assert R.main(["--json", str(tmp_path / "none.json"), "--out", str(tmp_path / "R.md")]) == 1
    assert "error:" in capsys.readouterr().err


def test_budget_block_stays_at_the_end_of_its_section():
    block = R.BUDGET_BEGIN + "\nbudget\n" + R.BUDGET_END
    old = "# R\n\n## A\n\ntext a\n\n" + block + "\n\n## B\n\ntext b\n"
    new = "# R\n\n## A\n\nnew a\n\n## B\n\nnew b\n"
    out = R.keep_budget_block(old, new)
    assert out.index("new a") < out.index(R.BUDGET_BEGIN) < out.index("## B")
    assert R.keep_budget_block(out, new) == out          # rendering again changes nothing
    tail = "# R\n\n## Regenerate\n\ncommands\n\n" + block + "\n"
    again = R.keep_budget_block(tail, "# R\n\n## Regenerate\n\ncommands\n")
    assert again.index("commands") < again.index(R.BUDGET_BEGIN)
