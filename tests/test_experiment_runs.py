"""The experiments read a train.py run from its run directory's JSON files
(results.json, metrics.jsonl) only; no training here."""
import json
import os
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from experiments import runner  # noqa: E402
from experiments.run_dir import RunFormatError, read_run  # noqa: E402


def write_run(run_dir, drop_result=None, drop_valid=None):
    """A run directory as train.py writes it: a start row, train rows, three
    validations (the last when the budget ended), the final rows, results.json."""
    os.makedirs(run_dir, exist_ok=True)
    rows = [{"event": "start", "step": 0, "parameters": 123456, "settings": {"nhid": 256}, "device": "cpu",
             "world_size": 1}]
    train_s = 0.0
    for step, bpc, loss in ((60, 4.5, 5.0), (120, 4.0, 4.4), (150, 3.9, 4.3)):
        train_s += 30.0
        rows.append({"split": "train", "step": step, "epoch": 1, "loss": loss + 0.1, "ppl": 100.0, "lr": 3e-3,
                     "ms_per_batch": 500.0, "tok_per_s": 4480.0, "minutes": train_s / 60, "progress": 0.5,
                     "train_seconds": train_s})
        valid = {"split": "valid", "step": step, "epoch": 1, "loss": loss, "ppl": 80.0, "tokens": 1000,
                 "bpc": bpc, "seconds": 4.0, "train_seconds": train_s, "valid_seconds": 4.0 * step / 60}
        if step == 120 and drop_valid:
            del valid[drop_valid]
        rows.append(valid)
    rows.append(dict(rows[-1], seconds=3.0))   # validated twice at the last step (epoch end and budget end)
    rows += [{"split": "valid", "final": True, "step": 150, "loss": 4.3, "ppl": 74.0, "bpc": 3.9},
             {"split": "test", "final": True, "step": 150, "loss": 4.2, "ppl": 70.0, "bpc": 3.8}]
    with open(os.path.join(run_dir, "metrics.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    res = {"step": 150, "tokens": 336000, "minutes": 1.6, "chosen": {}, "parameters": 123456,
           "train_seconds": 90.0, "valid_seconds": 10.0, "tokens_per_second": 3733.3,
           "stop_reason": "reached --max-minutes 1.5",
           "valid": {"loss": 4.3, "ppl": 74.0, "bpc": 3.9, "tokens": 1000},
           "test": {"loss": 4.2, "ppl": 70.0, "bpc": 3.8, "tokens": 2000}}
    if drop_result:
        del res[drop_result]
    with open(os.path.join(run_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(res, f)


def test_read_run_gives_curve_parameters_and_tokens_per_second(tmp_path):
    write_run(str(tmp_path))
    r = read_run(str(tmp_path))
    assert r["curve"] == [{"step": 60, "minutes": 0.5, "valid_bpc": 4.5},
                          {"step": 120, "minutes": 1.0, "valid_bpc": 4.0},
                          {"step": 150, "minutes": 1.5, "valid_bpc": 3.9}]   # one per step; final rows are none
    assert r["params"] == 123456
    assert r["tokens_per_s"] == pytest.approx(3733.3)
    assert (r["steps"], r["test_bpc"], r["test_ppl"], r["valid_bpc"]) == (150, 3.8, 70.0, 3.9)
    assert (r["train_seconds"], r["valid_seconds"], r["best_step"]) == (90.0, 10.0, 150)
    assert r["stop_reason"] == "reached --max-minutes 1.5"


@pytest.mark.parametrize("drop_result,drop_valid,field", [("parameters", None, "'parameters'"),
                                                           ("tokens_per_second", None, "'tokens_per_second'"),
                                                           (None, "train_seconds", "'train_seconds'")])
def test_read_run_names_a_missing_field(tmp_path, drop_result, drop_valid, field):
    write_run(str(tmp_path), drop_result, drop_valid)
    with pytest.raises(RunFormatError) as e:
        read_run(str(tmp_path))
    msg = str(e.value)
    assert field in msg and "--redo" in msg and "\n" not in msg
    os.remove(tmp_path / "metrics.jsonl")
    with pytest.raises(RunFormatError, match="metrics.jsonl is missing"):
        read_run(str(tmp_path))


def test_train_step_reads_the_run_directory(tmp_path, monkeypatch):
    """runner.train stores what read_run gives, whatever train.py printed."""
    def fake_run(cmd, log_path, env):
        write_run(cmd[cmd.index("--save") + 1])
        return {"rc": 0, "wall_s": 100.0, "last_line": "| epoch 1 | step 9 | 1.0M parameters", "maxrss_bytes": 2 ** 30}
    monkeypatch.setattr(runner, "run_logged", fake_run)
    args = types.SimpleNamespace(work=str(tmp_path), redo=[], threads=None)
    store = types.SimpleNamespace(get=lambda section, key: None)
    out = runner.train("unk", str(tmp_path / "data"), 1.5, ["--rnn", "qrnn"], args, store, "rare")
    assert out["params"] == 123456 and out["tokens_per_s"] == pytest.approx(3733.3)
    assert [p["minutes"] for p in out["curve"]] == [0.5, 1.0, 1.5]
    assert out["maxrss_bytes"] == 2 ** 30 and out["wall_s"] == 100.0
    assert out["command"].startswith("python train.py --data $WORK/data --save $WORK/runs/rare/unk")
