"""`python -m qrnn_lm evaluate|generate`, LanguageModel, and bad checkpoints."""
import json
import math
import os
import shutil

import pytest
import torch

from qrnn_lm import LanguageModel
from qrnn_lm.cli import evaluate_main, generate_main
from qrnn_lm.lm import load_checkpoint, save_checkpoint
from qrnn_lm.train import main as train_main
from conftest import TINY, assert_one_sentence_error, prepare_dataset

@pytest.fixture(scope="module")
def run_dir(char_data, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("cli") / "run")
    assert train_main(["--data", char_data, "--save", run, *TINY, "--max-steps", "12", "--eval-interval", "6",
                       "--lr", "0.02"]) == 0
    return run


@pytest.fixture(scope="module")
def test_text(char_data):
    src = json.load(open(os.path.join(char_data, "test.meta.json")))["source"]
    return src


def test_evaluate_prints_json_matching_training(run_dir, test_text, capsys):
    # one column, as train.py scores a split; --batch-size only sets the window
    final = json.load(open(os.path.join(run_dir, "results.json")))["test"]
    for extra in ([], ["--batch-size", "1"], ["--batch-size", "7"]):
        assert evaluate_main(["--checkpoint", run_dir, "--file", test_text, *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        assert {"ppl", "bpc", "tokens", "characters"} <= set(out)
        # the same text, model and layout as train.py's final test evaluation
        assert out["tokens"] == final["tokens"]
        assert math.isclose(out["bpc"], final["bpc"], rel_tol=1e-6), (extra, out["bpc"], final["bpc"])
        assert math.isclose(out["ppl"], math.exp(final["loss"]), rel_tol=1e-6)


def test_language_model_api(run_dir):
    lm = LanguageModel.from_checkpoint(run_dir)
    s = lm.score("猫が魚を食べる。\n犬が本を読む。")
    assert s["characters"] == len("猫が魚を食べる。") + len("犬が本を読む。") + 2
    assert s["tokens"] == s["characters"]  # char tokenizer: one token per character and line end
    assert s["ppl"] > 1 and s["bpc"] > 0
    # a file path is accepted too; generation is reproducible with a seed
    lm2 = LanguageModel.from_checkpoint(os.path.join(run_dir, "last.pt"))
    assert lm2.generate("猫が", max_tokens=20, seed=3) == lm2.generate("猫が", max_tokens=20, seed=3)


def test_generate_expands_buckets(run_dir, capsys):
    lm = LanguageModel.from_checkpoint(run_dir)
    buckets = {lm.vocab.id_to_token(i) for i in range(len(lm.vocab)) if lm.vocab.is_bucket(i)}
    assert buckets
    # a high temperature makes the (frequent) bucket tokens come up often
    text = lm.generate("", max_tokens=200, seed=1, temperature=3.0)
    assert not any(b in text for b in buckets) and "</s>" not in text
    assert generate_main(["--checkpoint", run_dir, "--prompt", "猫が", "--max-tokens", "30", "--seed", "0",
                          "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("猫が") and len(out) > 3
    assert not any(b in out for b in buckets)


def test_generate_bucket_expansion_is_exercised(run_dir, monkeypatch):
    """Force every sample to be a bucket id: the text holds concrete words only."""
    lm = LanguageModel.from_checkpoint(run_dir)
    bucket = next(i for i in range(len(lm.vocab)) if lm.vocab.is_bucket(i))
    monkeypatch.setattr(LanguageModel, "_sample", staticmethod(lambda *a, **k: bucket))
    text = lm.generate("", max_tokens=15, seed=0)
    assert len(text) >= 15 and lm.vocab.id_to_token(bucket) not in text


def test_python_m_entry_points(run_dir, test_text, capsys):
    from qrnn_lm.__main__ import main as qrnn_lm_main
    assert qrnn_lm_main(["evaluate", "--checkpoint", run_dir, "--file", test_text]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 0
    assert qrnn_lm_main(["generate", "--checkpoint", run_dir, "--max-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip()


# ---------------------------------------------------------------------------
# bad checkpoints and input
# ---------------------------------------------------------------------------
def test_truncated_checkpoint(run_dir, tmp_path, test_text, capsys):
    bad = tmp_path / "trunc.pt"
    data = open(os.path.join(run_dir, "best.pt"), "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    rc = evaluate_main(["--checkpoint", str(bad), "--file", test_text])
    assert_one_sentence_error(rc, capsys.readouterr().err, "truncated")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    rc = generate_main(["--checkpoint", str(empty)])
    assert_one_sentence_error(rc, capsys.readouterr().err, "empty")


def test_not_a_checkpoint(tmp_path, test_text, capsys):
    txt = tmp_path / "notes.pt"
    txt.write_text("just some text\n")
    rc = evaluate_main(["--checkpoint", str(txt), "--file", test_text])
    assert_one_sentence_error(rc, capsys.readouterr().err, "not a checkpoint")
    tensors = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, tensors)
    rc = generate_main(["--checkpoint", str(tensors)])
    assert_one_sentence_error(rc, capsys.readouterr().err, "not a qrnn_lm checkpoint")
    code = tmp_path / "code.pt"
    torch.save({"format": "qrnn_lm.checkpoint", "x": Exploit()}, code)
    rc = generate_main(["--checkpoint", str(code)])
    assert_one_sentence_error(rc, capsys.readouterr().err, "could run code")
    assert not os.path.exists(tmp_path / "pwned")
    rc = generate_main(["--checkpoint", str(tmp_path / "nowhere")])
    assert_one_sentence_error(rc, capsys.readouterr().err, "does not exist")
    rc = generate_main(["--checkpoint", str(tmp_path)])  # a directory with no checkpoint
    assert_one_sentence_error(rc, capsys.readouterr().err, "holds no checkpoint")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_with_another_vocabulary(run_dir, tmp_path, test_text, capsys):
    other = prepare_dataset(str(tmp_path / "other"), vocab_size=8, seed=4)
    ckpt = load_checkpoint(os.path.join(run_dir, "best.pt"))
    from qrnn_lm.vocab import Vocabulary
    ckpt["vocab"] = Vocabulary.load(other).to_dict()
    mixed = str(tmp_path / "mixed.pt")
    save_checkpoint({k: v for k, v in ckpt.items() if k != "path"}, mixed)
    rc = evaluate_main(["--checkpoint", mixed, "--file", test_text])
    assert_one_sentence_error(rc, capsys.readouterr().err, "vocabular")


def test_evaluate_bad_file_and_device(run_dir, tmp_path, capsys):
    rc = evaluate_main(["--checkpoint", run_dir, "--file", str(tmp_path / "missing.txt")])
    assert_one_sentence_error(rc, capsys.readouterr().err, "does not exist")
    (tmp_path / "empty.txt").write_text("\n\n")
    rc = evaluate_main(["--checkpoint", run_dir, "--file", str(tmp_path / "empty.txt")])
    assert_one_sentence_error(rc, capsys.readouterr().err, "empty")
    if not torch.cuda.is_available():
        rc = generate_main(["--checkpoint", run_dir, "--device", "cuda"])
        assert_one_sentence_error(rc, capsys.readouterr().err, "no CUDA GPU")


def test_saved_checkpoint_survives_failed_overwrite(run_dir, tmp_path, monkeypatch):
    """An interrupted save never replaces the previous file."""
    path = str(tmp_path / "last.pt")
    shutil.copyfile(os.path.join(run_dir, "last.pt"), path)
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {}}, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_sentence_model_scores_like_training(char_data, tmp_path, test_text, capsys):
    """A model trained with --batching sentences is scored line by line from a
    zero state, as in training; generation restarts the state after </s>."""
    run = str(tmp_path / "sent")
    assert train_main(["--data", char_data, "--save", run, *TINY, "--batching", "sentences", "--rnn", "lstm",
                       "--tied", "--emsize", "24", "--max-steps", "4", "--eval-interval", "2"]) == 0
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", run, "--file", test_text, "--batch-size", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    final = json.load(open(os.path.join(run, "results.json")))["test"]
    assert out["tokens"] == final["tokens"]
    assert math.isclose(out["bpc"], final["bpc"], rel_tol=1e-6)
    text = LanguageModel.from_checkpoint(run).generate("猫", max_tokens=40, seed=0)
    assert text.startswith("猫")
