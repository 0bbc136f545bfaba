"""Files written by an older qrnn_lm keep working: the prepared dataset and the
run directory in tests/data/legacy/ were made at commit 56df9d7 (see make.sh
there) and are read here through the public commands, as a user would.

Every test copies them to tmp_path first: nothing here writes into the tree.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from qrnn_lm import LanguageModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY = os.path.join(ROOT, "tests", "data", "legacy")


@pytest.fixture
def legacy(tmp_path):
    """A copy of tests/data/legacy (text/, data/, run/) under tmp_path."""
    dst = tmp_path / "legacy"
    shutil.copytree(LEGACY, dst)
    return dst


def run(*args, cwd):
    """Runs ``python ARGS`` with this checkout first on the path; returns the result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def recorded(run_dir):
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def test_checkpoint_loads_and_scores_as_recorded(legacy):
    lm = LanguageModel.from_checkpoint(str(legacy / "run"))
    lm_last = LanguageModel.from_checkpoint(str(legacy / "run" / "last.pt"))
    test_text = (legacy / "text" / "test.txt").read_text(encoding="utf-8")
    # the test split was prepared from text/test.txt: the same text, the same figure
    final = recorded(legacy / "run")["test"]
    for model in (lm, lm_last):
        s = model.score(test_text)
        assert s["tokens"] == final["tokens"]
        assert math.isclose(s["bpc"], final["bpc"], rel_tol=1e-6), (s["bpc"], final["bpc"])


def test_evaluate_command_matches_results_json(legacy):
    for split in ("valid", "test"):
        r = run("-m", "qrnn_lm", "evaluate", "--checkpoint", "run", "--file", f"text/{split}.txt",
                cwd=legacy)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        final = recorded(legacy / "run")[split]
        assert out["tokens"] == final["tokens"]
        assert math.isclose(out["bpc"], final["bpc"], rel_tol=1e-6), (split, out["bpc"], final["bpc"])
        assert math.isfinite(out["ppl"]) and out["ppl"] > 1


def test_generate_command_and_api(legacy):
    r = run("-m", "qrnn_lm", "generate", "--checkpoint", "run", "--prompt", "猫は", "--max-tokens", "12",
            "--seed", "1", cwd=legacy)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    lm = LanguageModel.from_checkpoint(str(legacy / "run"))
    a = lm.generate("猫は", max_tokens=12, seed=3)
    assert isinstance(a, str) and a
    assert a == lm.generate("猫は", max_tokens=12, seed=3)
    assert "<unk" not in a


def test_resume_continues_the_old_run(legacy):
    before = recorded(legacy / "run")
    r = run(os.path.join(ROOT, "train.py"), "--data", "data", "--save", "run", "--resume", "--max-steps", "6", "--no-progress",
            cwd=legacy)
    assert r.returncode == 0, r.stderr
    after = recorded(legacy / "run")
    assert before["step"] == 4 and after["step"] == 6
    steps = [json.loads(line)["step"] for line in open(legacy / "run" / "metrics.jsonl", encoding="utf-8")
             if json.loads(line).get("split") == "train"]
    assert steps[:4] == [1, 2, 3, 4] and steps[-2:] == [5, 6]
    assert math.isfinite(after["test"]["bpc"])
    LanguageModel.from_checkpoint(str(legacy / "run" / "last.pt"))


def test_train_on_the_old_dataset(legacy):
    r = run(os.path.join(ROOT, "train.py"), "--data", "data", "--save", "new", "--max-steps", "3", "--emsize", "8", "--nhid", "8",
            "--nlayers", "1", "--bptt", "8", "--batch_size", "2", "--no-progress", cwd=legacy)
    assert r.returncode == 0, r.stderr
    res = recorded(legacy / "new")
    assert res["step"] == 3 and math.isfinite(res["test"]["bpc"])
