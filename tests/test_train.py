"""End-to-end train.py runs on a tiny prepared corpus (seconds each)."""
import hashlib
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from qrnn_lm import train as train_mod
from qrnn_lm.lm import load_checkpoint
from qrnn_lm.model import RNNLanguageModel
from conftest import TINY, assert_one_sentence_error, prepare_dataset, write_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_losses(run):
    return {r["step"]: r["loss"] for r in metrics(run) if r["split"] == "train"}


def run_train(argv, capsys=None):
    rc = train_mod.main(argv)
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
@pytest.mark.parametrize("batching", ["stream", "sentences"])
def test_train_lowers_loss(char_data, tmp_path, rnn, batching):
    run = str(tmp_path / "run")
    rc = train_mod.main(["--data", char_data, "--save", run, "--rnn", rnn, "--batching", batching, *TINY,
                         "--max-steps", "20", "--epochs", "50", "--log-interval", "5", "--eval-interval", "10",
                         "--lr", "0.05",
                         "--dropout", "0", "--dropouth", "0", "--dropouti", "0", "--dropoute", "0"])
    assert rc == 0
    losses = list(train_losses(run).values())
    res = json.load(open(os.path.join(run, "results.json")))
    assert losses[-1] < losses[0] - 0.15, losses
    vocab_size = load_checkpoint(run)["config"]["vocab_size"]
    assert res["valid"]["loss"] < math.log(vocab_size) - 0.4  # well below a uniform guess
    assert res["test"]["tokens"] > 0 and 0 < res["test"]["bpc"] < 8
    ckpt = load_checkpoint(run)
    assert ckpt["path"].endswith("best.pt")
    assert {"model", "optimizer", "scheduler", "config", "vocab", "rng", "data", "step",
            "best_val_loss"} <= set(ckpt)


@pytest.mark.parametrize("batching", ["stream", "sentences"])
def test_resume_gives_identical_next_losses(char_data, tmp_path, batching):
    """6 steps straight == 3 steps, stop, --resume, 3 more: identical losses,
    with dropout, random BPTT lengths and AdamW state all in play."""
    common = ["--data", char_data, "--batching", batching, *TINY, "--epochs", "50", "--log-interval", "1",
              "--eval-interval", "4"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert train_mod.main(common + ["--save", a, "--max-steps", "7"]) == 0
    assert train_mod.main(common + ["--save", b, "--max-steps", "3"]) == 0
    assert train_mod.main(common + ["--save", b, "--max-steps", "7", "--resume"]) == 0
    la, lb = train_losses(a), train_losses(b)
    assert list(lb) == list(range(1, 8))
    assert [la[s] for s in range(4, 8)] == [lb[s] for s in range(4, 8)]
    ca, cb = load_checkpoint(os.path.join(a, "last.pt")), load_checkpoint(os.path.join(b, "last.pt"))
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


def test_budget_stop_mid_epoch_validates_final_weights(char_data, tmp_path):
    """A run stopped by --max-steps between validations is validated once more,
    so the weights it ends with are kept as best.pt when they are better."""
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--epochs", "50", "--lr", "0.05",
                           "--max-steps", "9", "--eval-interval", "4", "--log-interval", "1"]) == 0
    valid_steps = [r["step"] for r in metrics(run) if r["split"] == "valid" and not r.get("final")]
    assert valid_steps == [4, 8, 9], valid_steps
    best = load_checkpoint(os.path.join(run, "best.pt"))
    best_loss = min(r["loss"] for r in metrics(run) if r["split"] == "valid" and not r.get("final"))
    assert best["best_val_loss"] == pytest.approx(best_loss)
    # a budget that ends on a validation step validates once, not twice
    run8 = str(tmp_path / "run8")
    assert train_mod.main(["--data", char_data, "--save", run8, *TINY, "--epochs", "50", "--lr", "0.05",
                           "--max-steps", "8", "--eval-interval", "4", "--log-interval", "1"]) == 0
    assert [r["step"] for r in metrics(run8) if r["split"] == "valid" and not r.get("final")] == [4, 8]


def test_new_run_never_overwrites_a_saved_run(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["--data", char_data, "--save", run, *TINY, "--max-steps", "2"]
    assert train_mod.main(args) == 0
    before = hashlib.sha256(open(os.path.join(run, "last.pt"), "rb").read()).hexdigest()
    capsys.readouterr()
    rc, err = run_train(args + ["--seed", "7"], capsys)
    assert_one_sentence_error(rc, err, "already holds a run", "--resume")
    assert hashlib.sha256(open(os.path.join(run, "last.pt"), "rb").read()).hexdigest() == before


def test_adaptive_softmax_with_unused_clusters_and_weight_decay(char_data, tmp_path):
    """Rare clusters get no gradient in most steps (grad None); SGD with
    weight decay must carry on (the cleargrads/WeightDecay failure)."""
    run = str(tmp_path / "run")
    args = ["--data", char_data, "--save", run, *TINY, "--nhid", "32", "--softmax", "adaptive",
            "--cutoffs", "4", "10", "--max-steps", "6", "--log-interval", "2"]
    assert train_mod.main(args + ["--optimizer", "sgd", "--lr", "1", "--wdecay", "0.01"]) == 0
    assert train_mod.main(args + ["--optimizer", "adamw", "--save", str(tmp_path / "r2")]) == 0
    assert all(map(lambda v: v == v, train_losses(run).values()))


def test_train_from_text_files_prepares_and_caches(tmp_path, capsys):
    paths = write_corpus(str(tmp_path))
    cache = str(tmp_path / "cache")
    argv = ["--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
            "--tokenizer", "char", "--vocab-size", "12", "--rare", "unk", "--cache-dir", cache,
            *TINY, "--max-steps", "2", "--save", str(tmp_path / "run")]
    assert train_mod.main(argv) == 0
    assert "preparing" in capsys.readouterr().err
    (prepared,) = os.listdir(cache)
    assert train_mod.main(argv[:-1] + [str(tmp_path / "run2")]) == 0
    assert "preparing" not in capsys.readouterr().err                 # cache hit
    assert os.listdir(cache) == [prepared]
    assert train_mod.main(argv[:9] + ["16"] + argv[10:-1] + [str(tmp_path / "run3")]) == 0  # other --vocab-size
    assert len(os.listdir(cache)) == 2


def test_ctrl_c_saves_and_resumes(char_data, tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    calls = {"n": 0}
    orig = RNNLanguageModel.forward

    def forward(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3 and self.training:
            os.kill(os.getpid(), signal.SIGINT)   # as if the user pressed Ctrl-C mid-step
        return orig(self, *a, **k)
    monkeypatch.setattr(RNNLanguageModel, "forward", forward)
    rc = train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "50", "--log-interval", "1"])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().out
    ckpt = load_checkpoint(os.path.join(run, "last.pt"))
    assert ckpt["step"] == 3
    monkeypatch.setattr(RNNLanguageModel, "forward", orig)
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "5", "--resume"]) == 0
    assert load_checkpoint(os.path.join(run, "last.pt"))["step"] == 5


def test_ddp_two_cpu_processes(char_data, tmp_path):
    run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "train.py"), "--data", char_data, "--save", run, *TINY, "--max-steps", "4",
           "--log-interval", "2", "--eval-interval", "3"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = metrics(run)
    # only rank 0 logs: one train row per interval, not two
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]
    ckpt = load_checkpoint(os.path.join(run, "last.pt"))
    assert len(ckpt["rng"]) == 2 and len(ckpt["data"]["state"]) == 2
    # each rank carried its own state (its own columns of the stream)
    s0, s1 = ckpt["data"]["state"]
    assert not torch.equal(s0[0][0], s1[0][0])
    assert p.stdout.count("| epoch") == 2


# ---------------------------------------------------------------------------
# bad input and faults: one sentence, non-zero exit, nothing saved is lost
# ---------------------------------------------------------------------------
def test_missing_and_empty_data(tmp_path, capsys):
    rc, err = run_train(["--data", str(tmp_path / "nope"), "--save", str(tmp_path / "r")], capsys)
    assert_one_sentence_error(rc, err, "not a prepared dataset")
    rc, err = run_train(["--save", str(tmp_path / "r")], capsys)
    assert_one_sentence_error(rc, err, "no training data")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    rc, err = run_train(["--train", str(empty), "--valid", str(empty), "--save", str(tmp_path / "r"),
                         "--cache-dir", str(tmp_path / "c")], capsys)
    assert_one_sentence_error(rc, err, "empty")
    rc, err = run_train(["--train", str(tmp_path / "missing.txt"), "--save", str(tmp_path / "r")], capsys)
    assert_one_sentence_error(rc, err, "does not exist")


def test_resume_with_other_vocabulary_refused(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "2"]) == 0
    before = hashlib.sha256(open(os.path.join(run, "last.pt"), "rb").read()).hexdigest()
    other = prepare_dataset(str(tmp_path / "other"), vocab_size=8, seed=5)
    rc, err = run_train(["--data", other, "--save", run, *TINY, "--max-steps", "4", "--resume"], capsys)
    assert_one_sentence_error(rc, err, "another vocabulary")
    assert hashlib.sha256(open(os.path.join(run, "last.pt"), "rb").read()).hexdigest() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(char_data, tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "2"]) == 0
    before = hashlib.sha256(open(os.path.join(run, "last.pt"), "rb").read()).hexdigest()
    orig = RNNLanguageModel.nll
    calls = {"n": 0}

    def nll(self, f, t):
        calls["n"] += 1
        out = orig(self, f, t)
        return out * float("nan") if calls["n"] == 2 else out
    monkeypatch.setattr(RNNLanguageModel, "nll", nll)
    rc, err = run_train(["--data", char_data, "--save", run, *TINY, "--max-steps", "6", "--resume"], capsys)
    assert_one_sentence_error(rc, err, "nan", "step 4", "last.pt")
    assert hashlib.sha256(open(os.path.join(run, "last.pt"), "rb").read()).hexdigest() == before


def test_cuda_oom_names_the_flag(char_data, tmp_path, monkeypatch, capsys):
    def forward(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(RNNLanguageModel, "forward", forward)
    rc, err = run_train(["--data", char_data, "--save", str(tmp_path / "r"), *TINY, "--max-steps", "2"], capsys)
    assert_one_sentence_error(rc, err, "out of memory", "--batch_size")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu(char_data, tmp_path, capsys):
    rc, err = run_train(["--data", char_data, "--save", str(tmp_path / "r"), "--device", "cuda"], capsys)
    assert_one_sentence_error(rc, err, "no CUDA GPU")
    rc, err = run_train(["--data", char_data, "--save", str(tmp_path / "r"), "--amp", "bf16"], capsys)
    assert_one_sentence_error(rc, err, "--amp")


def test_mecab_dictionary_missing(tmp_path, monkeypatch, capsys):
    import fugashi

    def no_dictionary(*a, **k):
        raise RuntimeError("Failed initializing MeCab: no dictionary")
    monkeypatch.setitem(sys.modules, "unidic_lite", None)     # import unidic_lite fails
    monkeypatch.setattr(fugashi, "Tagger", no_dictionary)
    paths = write_corpus(str(tmp_path))
    rc, err = run_train(["--train", paths["train"], "--valid", paths["valid"], "--tokenizer", "mecab",
                         "--workers", "1", "--cache-dir", str(tmp_path / "c"), "--save", str(tmp_path / "r")],
                        capsys)
    assert rc != 0 and "Traceback" not in err
    assert "dictionary" in err and "unidic-lite" in err


def test_loss_curve_png_when_matplotlib_is_installed(char_data, tmp_path):
    pytest.importorskip("matplotlib")
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "4",
                           "--log-interval", "1", "--eval-interval", "2"]) == 0
    with open(os.path.join(run, "loss.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("rnn,amp,batching", [("qrnn", "bf16", "stream"), ("qrnn", "off", "sentences"),
                                              ("lstm", "fp16", "stream"), ("lstm", "bf16", "sentences")])
def test_train_resume_and_generate_on_cuda(char_data, tmp_path, rnn, amp, batching):
    """The GPU path end to end: autocast (bf16, or fp16 with the grad scaler),
    cuDNN LSTM / CUDA fo-pooling, packed sentence batches, exact resume, and
    generation from the checkpoint on the GPU."""
    from qrnn_lm.lm import LanguageModel
    args = ["--data", char_data, "--rnn", rnn, "--batching", batching, "--device", "cuda", "--amp", amp,
            *TINY, "--epochs", "50", "--log-interval", "5", "--eval-interval", "10", "--lr", "0.05",
            "--dropout", "0", "--dropouth", "0", "--dropouti", "0", "--dropoute", "0", "--seed", "3"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    assert train_mod.main(args + ["--save", full, "--max-steps", "30"]) == 0
    losses = list(train_losses(full).values())
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.15, losses
    assert train_mod.main(args + ["--save", part, "--max-steps", "10"]) == 0
    assert train_mod.main(args + ["--save", part, "--max-steps", "30", "--resume"]) == 0
    a, b = train_losses(full), train_losses(part)
    for step in (15, 20, 25, 30):  # same losses after the resume, up to GPU reduction order
        assert abs(a[step] - b[step]) < 1e-2 * max(1.0, abs(a[step])), (step, a[step], b[step])
    lm = LanguageModel.from_checkpoint(full, device="cuda")
    text = lm.generate("ab", max_tokens=20, seed=0)
    assert text.startswith("ab") and len(text) > 2
    assert math.isfinite(lm.score("abc ab")["bpc"])
