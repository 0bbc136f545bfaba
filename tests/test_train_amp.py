"""train.py under bf16 autocast on the CPU, and the --amp default rule (the
CPU's native bf16 and the measurement faked, so nothing here depends on this
machine's processor)."""
import json
import os

import pytest
import torch

from qrnn_lm import amp
from qrnn_lm import train as train_mod
from qrnn_lm.lm import load_checkpoint
from qrnn_lm.model import RNNLanguageModel
from conftest import TINY, assert_one_sentence_error


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_losses(run):
    return {r["step"]: r["loss"] for r in metrics(run) if r.get("split") == "train"}


def starts(run):
    return [r for r in metrics(run) if r.get("event") == "start"]


def test_bf16_on_cpu_trains_saves_and_resumes_exactly(char_data, tmp_path, monkeypatch):
    """7 bf16 steps straight == 3 steps, Ctrl-C, --resume, 4 more: identical
    losses and weights, the forward running under CPU bf16 autocast."""
    from test_train import interrupt_at
    seen = []
    orig_forward = RNNLanguageModel.forward

    def forward(self, *a, **k):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return orig_forward(self, *a, **k)
    monkeypatch.setattr(RNNLanguageModel, "forward", forward)
    common = ["--data", char_data, *TINY, "--device", "cpu", "--amp", "bf16", "--epochs", "50",
              "--log-interval", "1", "--eval-interval", "4", "--max-steps", "7"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert train_mod.main(common + ["--save", a]) == 0
    assert seen and seen[0]                      # training forwards ran under bf16 autocast
    orig = interrupt_at(monkeypatch, 3)
    assert train_mod.main(common + ["--save", b]) == 130
    monkeypatch.setattr(RNNLanguageModel, "forward", orig)
    assert train_mod.main(["--save", b, "--resume"]) == 0
    la, lb = train_losses(a), train_losses(b)
    assert list(lb) == list(range(1, 8)) and all(v == v for v in la.values())
    assert [la[s] for s in range(1, 8)] == [lb[s] for s in range(1, 8)]
    ca, cb = load_checkpoint(os.path.join(a, "last.pt")), load_checkpoint(os.path.join(b, "last.pt"))
    assert ca["args"]["amp"] == cb["args"]["amp"] == "bf16" and "amp" not in ca["chosen"]
    for k in ca["model"]:
        assert ca["model"][k].dtype == torch.float32     # the weights stay float32
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert [r["settings"]["amp"] for r in starts(b)] == ["bf16", "bf16"]


def test_fp16_on_cpu_is_one_sentence(char_data, tmp_path, capsys):
    rc = train_mod.main(["--data", char_data, "--save", str(tmp_path / "run"), *TINY, "--device", "cpu",
                         "--amp", "fp16", "--max-steps", "2"])
    assert_one_sentence_error(rc, capsys.readouterr().err, "--amp fp16", "CUDA", "--amp bf16")


@pytest.fixture
def fake_cpu(monkeypatch):
    """The measurement switched on, the CPU's bf16 feature and the measured
    speed-up set by the test; ``calls`` records each measurement's batch."""
    fake = {"feature": None, "ratio": 1.0, "calls": []}
    monkeypatch.setenv(amp.PROBE_ENV, "1")
    monkeypatch.setattr(amp, "cpu_bf16_feature", lambda cpuinfo=None: fake["feature"])

    def measure(model, batch, **kw):
        net = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
        assert isinstance(net, RNNLanguageModel) and kw["max_seconds"] <= 5
        fake["calls"].append(tuple(batch[0].shape))
        return fake["ratio"]
    monkeypatch.setattr(amp, "measure_bf16_speedup", measure)
    return fake


def default_run(char_data, run, capsys, *extra):
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--device", "cpu", "--max-steps", "2",
                           *extra]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("chosen for this run")]
    return line, load_checkpoint(os.path.join(run, "last.pt"))


def test_default_native_and_fast_chooses_bf16_and_records_why(char_data, tmp_path, capsys, fake_cpu):
    fake_cpu.update(feature="AMX", ratio=1.5)
    run = str(tmp_path / "run")
    line, ck = default_run(char_data, run, capsys)
    assert fake_cpu["calls"] == [(12, 4)]            # measured once, on a batch of the run's shape (bptt, batch)
    assert "amp=bf16 (CPU has AMX and a bf16 step measured 1.50x faster)" in line
    assert ck["args"]["amp"] == "bf16" and ck["chosen"]["amp"] == "bf16"
    assert "AMX" in ck["chosen"]["amp_reason"] and "1.50x" in ck["chosen"]["amp_reason"]
    (start,) = starts(run)
    assert start["settings"]["amp"] == "bf16" and "1.50x" in start["settings"]["amp_reason"]


def test_default_without_native_bf16_is_off_unmeasured(char_data, tmp_path, capsys, fake_cpu):
    fake_cpu.update(feature=None, ratio=9.0)
    line, ck = default_run(char_data, str(tmp_path / "run"), capsys)
    assert fake_cpu["calls"] == []
    assert "amp=off (this CPU has no native bf16" in line
    assert ck["args"]["amp"] == ck["chosen"]["amp"] == "off"


def test_default_native_but_slow_is_off(char_data, tmp_path, capsys, fake_cpu):
    fake_cpu.update(feature="AVX-512 BF16", ratio=0.9)
    line, ck = default_run(char_data, str(tmp_path / "run"), capsys)
    assert len(fake_cpu["calls"]) == 1
    assert "amp=off" in line and "0.90x" in ck["chosen"]["amp_reason"] and ck["args"]["amp"] == "off"


def test_probe_switched_off_by_environment(char_data, tmp_path, capsys, fake_cpu, monkeypatch):
    fake_cpu.update(feature="AMX", ratio=1.5)
    monkeypatch.setenv(amp.PROBE_ENV, "0")
    line, ck = default_run(char_data, str(tmp_path / "run"), capsys)
    assert fake_cpu["calls"] == [] and ck["args"]["amp"] == "off" and "amp=off" in line


@pytest.mark.parametrize("first,now", [(1.5, 0.5), (0.5, 1.5)])
def test_resume_keeps_the_recorded_choice_without_measuring(char_data, tmp_path, capsys, fake_cpu, first, now):
    fake_cpu.update(feature="AMX", ratio=first)
    run = str(tmp_path / "run")
    _, ck = default_run(char_data, run, capsys)
    recorded = ck["args"]["amp"]
    assert recorded == ("bf16" if first > 1 else "off") and len(fake_cpu["calls"]) == 1
    fake_cpu.update(ratio=now)
    assert train_mod.main(["--save", run, "--resume", "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert len(fake_cpu["calls"]) == 1 and "amp=" not in out
    ck = load_checkpoint(os.path.join(run, "last.pt"))
    assert ck["step"] == 4 and ck["args"]["amp"] == recorded and ck["chosen"]["amp"] == recorded
    assert [r["settings"]["amp"] for r in starts(run)] == [recorded, recorded]
    # --amp given on resume wins (and still measures nothing)
    other = "off" if recorded == "bf16" else "bf16"
    assert train_mod.main(["--save", run, "--resume", "--max-steps", "5", "--amp", other]) == 0
    assert f"--amp {recorded} -> {other}" in capsys.readouterr().out
    assert load_checkpoint(os.path.join(run, "last.pt"))["args"]["amp"] == other and len(fake_cpu["calls"]) == 1


def test_the_measurement_counts_in_the_time_budget(char_data, tmp_path, capsys, fake_cpu, monkeypatch):
    """A measurement that takes 1000 s (a faked clock) is part of the run's elapsed time."""
    import types
    from qrnn_lm import recipe
    ticks = iter([0.0, 1000.0])
    monkeypatch.setattr(recipe, "time", types.SimpleNamespace(monotonic=lambda: next(ticks)))
    fake_cpu.update(feature="AMX", ratio=1.5)
    _, ck = default_run(char_data, str(tmp_path / "run"), capsys)
    assert ck["elapsed"] >= 1000.0 and ck["train_seconds"] < 1000.0
