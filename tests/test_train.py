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
    return {r["step"]: r["loss"] for r in metrics(run) if r.get("split") == "train"}


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
                         "--lr", "0.05", "--schedule", "constant",
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


def interrupt_at(monkeypatch, n):
    """Ctrl-C during the n-th training forward (the step completes, is saved, the run exits 130)."""
    calls = {"n": 0}
    orig = RNNLanguageModel.forward

    def forward(self, *a, **k):
        if self.training:
            calls["n"] += 1
            if calls["n"] == n:
                os.kill(os.getpid(), signal.SIGINT)
        return orig(self, *a, **k)
    monkeypatch.setattr(RNNLanguageModel, "forward", forward)
    return orig


@pytest.mark.parametrize("batching", ["stream", "sentences"])
def test_resume_gives_identical_next_losses(char_data, tmp_path, monkeypatch, batching):
    """7 steps straight == 3 steps, Ctrl-C, --resume, 4 more: identical losses and
    weights, with dropout, random BPTT lengths, AdamW state and the budget
    schedule (cosine over --max-steps) all in play."""
    common = ["--data", char_data, "--batching", batching, *TINY, "--epochs", "50", "--log-interval", "1",
              "--eval-interval", "4", "--max-steps", "7"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert train_mod.main(common + ["--save", a]) == 0
    orig = interrupt_at(monkeypatch, 3)
    assert train_mod.main(common + ["--save", b]) == 130
    monkeypatch.setattr(RNNLanguageModel, "forward", orig)
    assert train_mod.main(["--save", b, "--resume"]) == 0        # every other flag comes from the run
    la, lb = train_losses(a), train_losses(b)
    assert list(lb) == list(range(1, 8))
    assert [la[s] for s in range(1, 8)] == [lb[s] for s in range(1, 8)]
    ca, cb = load_checkpoint(os.path.join(a, "last.pt")), load_checkpoint(os.path.join(b, "last.pt"))
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


class FakeClock:
    """train.clock advanced by one second per training forward, so that a time
    budget ends at the same step in every run."""

    def __init__(self, monkeypatch, interrupt_at=0):
        self.now, self.calls, self.interrupt_at = 1000.0, 0, interrupt_at
        self.orig = RNNLanguageModel.forward
        clock = self
        monkeypatch.setattr(train_mod, "clock", lambda: clock.now)

        def forward(model, *a, **k):
            if model.training:
                clock.now += 1.0
                clock.calls += 1
                if clock.calls == clock.interrupt_at:
                    os.kill(os.getpid(), signal.SIGINT)
            return clock.orig(model, *a, **k)
        monkeypatch.setattr(RNNLanguageModel, "forward", forward)


def train_lrs(run):
    return {r["step"]: r["lr"] for r in metrics(run) if r.get("split") == "train"}


def test_time_budget_schedule_and_exact_resume(char_data, tmp_path, monkeypatch, capsys):
    """--max-minutes 0.25 (15 s, one fake second a step): the lr decays to its
    floor at the end of the budget, never before; a run interrupted at step 5
    and resumed spends the rest of the same budget and matches the straight run."""
    common = ["--data", char_data, *TINY, "--log-interval", "1", "--max-minutes", "0.25", "--fixed-bptt",
              "--lr", "0.01", "--warmup-steps", "2"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    FakeClock(monkeypatch)
    assert train_mod.main(common + ["--save", a]) == 0
    la, lrs = train_losses(a), train_lrs(a)
    assert max(la) == 15
    floor = 0.01 * 0.1
    assert all(lr > 1.3 * floor for s, lr in lrs.items() if s <= 10), lrs      # no early collapse
    assert lrs[15] < 1.02 * floor + (0.01 - floor) * 0.5 * (1 - math.cos(math.pi / 15)) + 1e-12
    assert lrs[2] == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 1 / 15))))
    assert all(lrs[s + 1] < lrs[s] for s in range(2, 15))                      # monotone after warmup
    assert f"(last lr {lrs[15]:.2e}, floor {floor:.2e})" in capsys.readouterr().out
    FakeClock(monkeypatch, interrupt_at=5)
    assert train_mod.main(common + ["--save", b]) == 130
    ck = load_checkpoint(os.path.join(b, "last.pt"))
    assert ck["step"] == 5 and ck["elapsed"] == pytest.approx(5.0) and not ck["finished"]
    FakeClock(monkeypatch)
    assert train_mod.main(["--save", b, "--resume"]) == 0
    lb = train_losses(b)
    assert list(lb) == list(range(1, 16))
    assert [la[s] for s in lb] == [lb[s] for s in lb]
    assert load_checkpoint(os.path.join(b, "last.pt"))["finished"] == "reached --max-minutes 0.25"


def test_lr_schedule_function():
    kw = dict(peak=1.0, warmup_steps=10, min_ratio=0.1)
    assert train_mod.lr_at(0, 0.0, schedule="cosine", **kw) == pytest.approx(0.1)       # warmup
    assert train_mod.lr_at(9, 0.0, schedule="cosine", **kw) == pytest.approx(1.0)
    assert train_mod.lr_at(50, 0.5, schedule="cosine", **kw) == pytest.approx(0.55)
    assert train_mod.lr_at(99, 1.0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert train_mod.lr_at(99, 1.0, schedule="linear", **kw) == pytest.approx(0.1)
    assert train_mod.lr_at(50, 0.5, schedule="linear", **kw) == pytest.approx(0.55)
    assert train_mod.lr_at(50, 0.7, schedule="constant", **kw) == 1.0
    assert train_mod.lr_at(50, 0.7, schedule="plateau", plateau_scale=0.25, **kw) == 0.25
    ps = [i / 100 for i in range(101)]
    lrs = [train_mod.lr_at(1000, p, schedule="cosine", **kw) for p in ps]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and min(lrs[:-1]) > 0.1
    # progress: the bound closest to its end decides
    bp = train_mod.budget_progress
    assert bp(step=50, epoch_pos=0.1, elapsed=30, max_steps=100, max_minutes=2, epochs=0) == 0.5
    assert bp(step=10, epoch_pos=0.1, elapsed=90, max_steps=100, max_minutes=2, epochs=0) == 0.75
    assert bp(step=10, epoch_pos=2.5, elapsed=0, max_steps=0, max_minutes=0, epochs=5) == 0.5
    assert bp(step=10, epoch_pos=2.5, elapsed=999, max_steps=0, max_minutes=1, epochs=5) == 1.0


def test_plateau_schedule_still_available(char_data, tmp_path):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--epochs", "3", "--schedule", "plateau",
                           "--lr-decay", "0.5", "--lr", "0.01", "--fixed-bptt", "--log-interval", "1"]) == 0
    valid = [r["loss"] for r in metrics(run) if r.get("split") == "valid" and not r.get("final")]
    assert len(valid) == 3                              # once an epoch
    lrs = list(train_lrs(run).values())
    assert max(lrs) <= 0.01 + 1e-12 and lrs[-1] in (0.01, 0.005, 0.0025)


def test_defaults_rule():
    cpu = train_mod.choose_defaults(train_tokens=2_000_000, vocab_size=5066, device="cpu", minutes=2)
    assert (cpu["nlayers"], cpu["nhid"], cpu["emsize"], cpu["softmax"]) == (2, 256, 128, "adaptive")
    assert cpu["dropout"] == 0.1 and cpu["dropoute"] == 0.0        # under two passes over the corpus
    grown = train_mod.choose_defaults(train_tokens=2_000_000, vocab_size=5066, device="cpu", minutes=5)
    assert (grown["nlayers"], grown["nhid"], grown["emsize"]) == (2, 384, 192)   # a longer budget, a wider model
    assert train_mod.choose_defaults(train_tokens=2_000_000, vocab_size=5066, device="cpu", minutes=4.9)["nhid"] == 256
    many = train_mod.choose_defaults(train_tokens=100_000, vocab_size=500, device="cpu", minutes=30)
    assert many["dropout"] == 0.3 and many["dropoute"] == 0.1 and many["softmax"] == "full"
    gpu = train_mod.choose_defaults(train_tokens=2_000_000, vocab_size=50_000, device="cuda", minutes=5)
    assert gpu["nhid"] > cpu["nhid"] and gpu["batch_size"] > cpu["batch_size"]
    sgd = train_mod.choose_defaults(train_tokens=10_000, vocab_size=50, device="cpu", max_steps=100,
                                    optimizer="sgd")
    assert sgd["lr"] == 30.0 and sgd["warmup_steps"] == 0
    short = train_mod.choose_defaults(train_tokens=10_000, vocab_size=50, device="cpu", max_steps=100)
    assert 1 <= short["warmup_steps"] <= 5


def test_defaults_chosen_printed_recorded_and_flags_win(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, "--nhid", "20", "--batch_size", "4",
                           "--max-steps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("chosen for this run")]
    assert "emsize=128" in line and "nhid" not in line and "batch_size" not in line
    ck = load_checkpoint(os.path.join(run, "last.pt"))
    assert ck["config"]["nhid"] == 20 and ck["config"]["emsize"] == 128
    assert ck["chosen"]["emsize"] == 128 and "nhid" not in ck["chosen"] and ck["args"]["batch_size"] == 4


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_final_figures_do_not_depend_on_eval_batch_size(char_data, tmp_path, rnn):
    """The same weights scored with --eval-batch-size 1, 3 and 7 give the same
    test BPC (the whole split is one stream with its state carried)."""
    run = str(tmp_path / "run")
    base = ["--data", char_data, *TINY, "--rnn", rnn, "--max-steps", "4"]
    assert train_mod.main(base + ["--save", run]) == 0
    ckpt = load_checkpoint(os.path.join(run, "last.pt"))
    from qrnn_lm.data import load_split
    from qrnn_lm.lm import bits_per_char, build_model, load_vocab_dict, total_nll
    vocab = load_vocab_dict(ckpt["vocab"])
    model = build_model(ckpt, vocab)
    split = load_split(char_data, "test")
    bpcs = []
    for ebs in (1, 3, 7):
        args = train_mod.build_parser().parse_args(["--bptt", "12", "--eval-batch-size", str(ebs)])
        args.batching = "stream"
        nll, n = total_nll(model, train_mod.eval_batches_for(split, vocab.eos_id, args), "cpu", True)
        assert n == split.tokens
        bpcs.append(bits_per_char(nll, float(split.rare_logp.sum()), split.characters))
    assert bpcs[1] == pytest.approx(bpcs[0], rel=1e-6) and bpcs[2] == pytest.approx(bpcs[0], rel=1e-6)
    # and through train.py: results.json of two runs differing only in --eval-batch-size
    r1, r2 = str(tmp_path / "r1"), str(tmp_path / "r2")
    assert train_mod.main(base + ["--save", r1, "--eval-batch-size", "1"]) == 0
    assert train_mod.main(base + ["--save", r2, "--eval-batch-size", "5"]) == 0
    t1 = json.load(open(os.path.join(r1, "results.json")))["test"]["bpc"]
    t2 = json.load(open(os.path.join(r2, "results.json")))["test"]["bpc"]
    assert t1 == pytest.approx(t2, rel=1e-6)


def test_budget_stop_mid_epoch_validates_final_weights(char_data, tmp_path):
    """A run stopped by --max-steps between validations is validated once more,
    so the weights it ends with are kept as best.pt when they are better."""
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--epochs", "50", "--lr", "0.05",
                           "--max-steps", "9", "--eval-interval", "4", "--log-interval", "1"]) == 0
    valid_steps = [r["step"] for r in metrics(run) if r.get("split") == "valid" and not r.get("final")]
    assert valid_steps == [4, 8, 9], valid_steps
    best = load_checkpoint(os.path.join(run, "best.pt"))
    best_loss = min(r["loss"] for r in metrics(run) if r.get("split") == "valid" and not r.get("final"))
    assert best["best_val_loss"] == pytest.approx(best_loss)
    # a budget that ends on a validation step validates once, not twice
    run8 = str(tmp_path / "run8")
    assert train_mod.main(["--data", char_data, "--save", run8, *TINY, "--epochs", "50", "--lr", "0.05",
                           "--max-steps", "8", "--eval-interval", "4", "--log-interval", "1"]) == 0
    assert [r["step"] for r in metrics(run8) if r.get("split") == "valid" and not r.get("final")] == [4, 8]


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
    assert [r["step"] for r in rows if r.get("split") == "train"] == [2, 4]
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
    rc, err = run_train(["--data", char_data, "--save", str(tmp_path / "r"), "--amp", "fp16"], capsys)
    assert_one_sentence_error(rc, err, "--amp fp16", "CUDA")   # bf16 runs on the CPU (test_train_amp.py)


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


# ---------------------------------------------------------------------------
# what experiments read: metrics.jsonl and results.json, never stdout
# ---------------------------------------------------------------------------
def slow_validation(monkeypatch, clock, seconds=5.0):
    """Every evaluation takes ``seconds`` on the fake clock."""
    orig = train_mod.evaluate

    def evaluate(run, name):
        clock.now += seconds
        return orig(run, name)
    monkeypatch.setattr(train_mod, "evaluate", evaluate)


def test_metrics_and_results_say_where_the_time_went(char_data, tmp_path, monkeypatch):
    """One fake second a training step, five a validation: the start row of
    each session, training time without validations (and speeds over it),
    each validation's seconds, and results.json's totals, kept over --resume."""
    run = str(tmp_path / "run")
    common = ["--data", char_data, *TINY, "--fixed-bptt", "--eval-interval", "3", "--log-interval", "3"]
    slow_validation(monkeypatch, FakeClock(monkeypatch))
    assert train_mod.main(common + ["--save", run, "--max-steps", "6"]) == 0
    rows = metrics(run)
    params = sum(v.numel() for v in load_checkpoint(run)["model"].values())
    assert rows[0] == {"event": "start", "step": 0, "parameters": params, "settings": rows[0]["settings"],
                       "device": "cpu", "world_size": 1}
    assert rows[0]["settings"]["batch_size"] == 4 and rows[0]["settings"]["max_steps"] == 6
    assert rows[0]["settings"]["save"] == run and rows[0]["settings"]["emsize"] == 16
    train = [r for r in rows if r.get("split") == "train"]
    assert [(r["step"], r["train_seconds"]) for r in train] == [(3, 3.0), (6, 6.0)]
    assert all(r["ms_per_batch"] == pytest.approx(1000.0) for r in train)    # validations not counted
    assert all(r["tok_per_s"] == pytest.approx(4 * 12 / 1.0) for r in train)
    valid = [r for r in rows if r.get("split") == "valid" and not r.get("final")]
    assert [(r["step"], r["seconds"], r["train_seconds"], r["valid_seconds"]) for r in valid] == \
        [(3, 5.0, 3.0, 5.0), (6, 5.0, 6.0, 10.0)]
    res = json.load(open(os.path.join(run, "results.json")))
    assert res["parameters"] == params and res["stop_reason"] == "reached --max-steps 6"
    assert (res["train_seconds"], res["valid_seconds"]) == (6.0, 10.0)
    assert res["tokens_per_second"] == pytest.approx(res["tokens"] / 6.0) and res["tokens"] == 6 * 4 * 12
    assert res["valid"]["tokens"] > 0 and res["test"]["tokens"] > 0
    # a second session: its own start row, the counters go on
    old = str(tmp_path / "old")
    import shutil
    shutil.copytree(run, old)
    slow_validation(monkeypatch, FakeClock(monkeypatch))
    assert train_mod.main(["--save", run, "--resume", "--max-steps", "9"]) == 0
    starts = [r for r in metrics(run) if r.get("event") == "start"]
    assert [r["step"] for r in starts] == [0, 6] and starts[1]["settings"]["max_steps"] == 9
    res = json.load(open(os.path.join(run, "results.json")))
    assert (res["train_seconds"], res["valid_seconds"], res["stop_reason"]) == (9.0, 15.0, "reached --max-steps 9")
    # a checkpoint written before these counters: all its time counts as training
    from qrnn_lm.lm import save_checkpoint
    ck = load_checkpoint(os.path.join(old, "last.pt"))
    assert (ck["elapsed"], ck["train_seconds"], ck["valid_seconds"]) == (11.0, 6.0, 10.0)
    for key in ("train_seconds", "valid_seconds", "path"):
        del ck[key]
    save_checkpoint(ck, os.path.join(old, "last.pt"))
    slow_validation(monkeypatch, FakeClock(monkeypatch))
    assert train_mod.main(["--save", old, "--resume", "--max-steps", "9"]) == 0
    res = json.load(open(os.path.join(old, "results.json")))
    assert (res["train_seconds"], res["valid_seconds"]) == (14.0, 5.0)


def test_train_step_is_one_whole_step():
    """train_step: forward, backward, clipping and the optimizer step, the
    state carried and cut from its graph; a benchmark calls it as is."""
    from qrnn_lm.model import ModelConfig
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=20, emsize=8, nhid=12, nlayers=2, dropout=0.0, dropouth=0.0,
                                         dropouti=0.0, dropoute=0.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randint(0, 20, (6, 3)), torch.randint(0, 20, (6, 3))
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    loss, ntok, state = train_step_and_check(model, opt, x, y, seen)
    assert ntok == 18 and seen == [loss] and math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    loss2, _, state2 = train_step_and_check(model, opt, x, y, seen, state)
    assert loss2 < loss and state2 is not None

    def refuse(loss_value):
        raise RuntimeError("stop")
    kept = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="stop"):     # before_update stops the step before the weights change
        train_mod.train_step(model, opt, x, y, clip=0.1, before_update=refuse)
    assert all(torch.equal(a, b) for a, b in zip(kept, model.parameters()))


def train_step_and_check(model, opt, x, y, seen, state=None):
    return train_mod.train_step(model, opt, x, y, state, clip=0.25, before_update=seen.append)
