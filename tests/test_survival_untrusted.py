"""Unit tests of the pieces that make strangers' checkpoints and datasets safe
to load: tokenizer model paths confined to their directory, bounded
vocabulary numbers, the model size known before the model is built, the
``--seed`` flag, and Python warnings as one line."""
import argparse
import base64
import os
import warnings

import pytest
import torch

from qrnn_lm.errors import QrnnLmError, run_command
from qrnn_lm.model import ModelConfig, RNNLanguageModel
from qrnn_lm.model_size import (MAX_DIM, check_model_size, config_dict_problem, parameter_count)
from qrnn_lm.tokenizers import tokenizer_from_dict, tokenizer_model_path


# -- tokenizer model paths ----------------------------------------------------
@pytest.fixture()
def model_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "sp.model").write_bytes(b"x" * 10)
    (tmp_path / "outside.model").write_bytes(b"y")
    return d


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.model", "sub/../../outside.model", "..\\outside.model"])
def test_tokenizer_path_outside_its_directory_is_refused(model_dir, name):
    with pytest.raises(QrnnLmError, match="refused"):
        tokenizer_model_path(name, str(model_dir))


def test_tokenizer_path_symlink_out_of_the_directory_is_refused(model_dir):
    os.symlink(str(model_dir.parent / "outside.model"), str(model_dir / "link.model"))
    with pytest.raises(QrnnLmError, match="outside"):
        tokenizer_model_path("link.model", str(model_dir))


def test_tokenizer_path_must_be_a_small_regular_file(model_dir, monkeypatch):
    os.mkfifo(str(model_dir / "fifo.model"))
    with pytest.raises(QrnnLmError, match="not a regular file"):
        tokenizer_model_path("fifo.model", str(model_dir))
    assert tokenizer_model_path("sp.model", str(model_dir)) == os.path.realpath(str(model_dir / "sp.model"))
    monkeypatch.setattr("qrnn_lm.tokenizers.MAX_MODEL_BYTES", 5)
    with pytest.raises(QrnnLmError, match="bytes"):
        tokenizer_model_path("sp.model", str(model_dir))


@pytest.mark.parametrize("proto", ["%%% not base64 %%%", base64.b64encode(b"\x00garbage" * 50).decode(), 7])
def test_garbage_embedded_tokenizer_is_a_sentence(proto):
    with pytest.raises(QrnnLmError, match="ckpt.pt"):
        tokenizer_from_dict({"type": "sentencepiece", "model_file": "sp.model", "model_proto": proto},
                            where="checkpoint ckpt.pt")


# -- vocabulary numbers -------------------------------------------------------
def test_vocab_pos_depth_counts_and_spelling_are_bounded(char_data):
    from qrnn_lm.vocab import Vocabulary
    from qrnn_lm.vocab_format import vocab_dict_problem
    d = Vocabulary.load(char_data).to_dict()
    assert vocab_dict_problem(d) is None
    assert "pos_depth" in vocab_dict_problem(dict(d, rare=dict(d["rare"], pos_depth=10 ** 12)))
    tokens = [list(t) for t in d["tokens"]]
    tokens[0][1] = 10 ** 30
    assert "not a whole number" in vocab_dict_problem(dict(d, tokens=tokens))
    spelling = dict(d["spelling"], n_types=0, single_char=False,
                    char_counts={"a": 10 ** 9})          # one word of 10^9 characters: sampling never ends
    assert "characters" in vocab_dict_problem(dict(d, spelling=spelling))


def test_a_newer_vocab_version_is_refused(char_data):
    from qrnn_lm.vocab import Vocabulary
    d = Vocabulary.load(char_data).to_dict()
    with pytest.raises(QrnnLmError, match="version 99"):
        Vocabulary.from_dict(dict(d, version=99))


# -- the model size, before the model is built --------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(tied=True), dict(rnn="lstm"), dict(window=3, nlayers=3),
                                dict(softmax="adaptive", cutoffs=[10, 40]),
                                dict(softmax="adaptive", cutoffs=[5, 20, 60], div_value=2.0)])
def test_parameter_count_is_that_of_the_built_model(kw):
    base = dict(vocab_size=100, emsize=16, nhid=24, nlayers=2)
    c = ModelConfig(**{**base, **({"emsize": 24} if kw.get("tied") else {}), **kw})
    model = RNNLanguageModel(c)
    assert parameter_count(c) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("key,value", [("nhid", MAX_DIM + 1), ("emsize", 10 ** 9), ("nlayers", 10 ** 6),
                                       ("window", 10 ** 4), ("nhid", 2.5), ("vocab_size", True),
                                       ("div_value", 1e308), ("cutoffs", list(range(1, 1000)))])
def test_impossible_config_numbers_are_named(key, value):
    d = ModelConfig(vocab_size=100, emsize=16, nhid=24, nlayers=2).to_dict()
    assert config_dict_problem(d) is None
    assert key in config_dict_problem(dict(d, **{key: value}))


def test_a_model_larger_than_memory_names_the_flag():
    c = ModelConfig(vocab_size=100, emsize=16, nhid=4096, nlayers=2)
    assert check_model_size(c, what="x", memory=10 ** 12) == parameter_count(c)
    with pytest.raises(QrnnLmError, match=r"memory.*lower --nhid \(now 4096\)"):
        check_model_size(c, what="x", training=True, memory=10 ** 6, names={"nhid": "--nhid"})
    big = ModelConfig(vocab_size=2_000_000, emsize=1024, nhid=16, nlayers=1)
    with pytest.raises(QrnnLmError, match="lower emsize"):
        check_model_size(big, what="x", memory=10 ** 6)


# -- flags and warnings -------------------------------------------------------
@pytest.mark.parametrize("text,value", [("7", 7), ("-5", -5), ("1e3", 1000), ("1e23", int(1e23)), ("1.5", "1.5"),
                                        ("abc", "abc"), ("nan", "nan")])
def test_seed_value(text, value):
    from qrnn_lm.recipe import seed_value
    assert seed_value(text) == value


@pytest.mark.parametrize("seed", [-5, 2 ** 63, "1.5"])
def test_check_flags_refuses_a_bad_seed(seed):
    from qrnn_lm.recipe import check_flags
    from qrnn_lm.train import build_parser
    args = build_parser().parse_args(["--data", "x"])
    args.seed = seed
    with pytest.raises(QrnnLmError, match="--seed"):
        check_flags(args)
    args.seed = 2 ** 63 - 1
    check_flags(args)


def test_a_python_warning_under_a_command_is_one_line(capsys):
    def command(argv):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("odd bytes\nin the corpus", UserWarning)
        return 0
    assert run_command(command, []) == 0
    err = capsys.readouterr().err
    assert err == "warning: odd bytes in the corpus\n", err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_a_cuda_device_without_cuda_is_a_sentence(device):
    from qrnn_lm.lm import _usable_device
    with pytest.raises(QrnnLmError, match="cuda"):
        _usable_device(device)
    assert _usable_device("cpu") == torch.device("cpu")


def test_check_model_flags_refuses_a_model_no_machine_holds():
    from qrnn_lm.model_size import check_flag_sizes
    args = argparse.Namespace(emsize=16, nhid=10 ** 6, nlayers=2, window=None, rnn=None, tied=None)
    with pytest.raises(QrnnLmError, match="--nhid"):
        check_flag_sizes(args)


# -- checkpoints --------------------------------------------------------------
@pytest.mark.parametrize("block", [{"bptt": -3}, {"bptt": 10 ** 12}, {"max_len": -1}, {"batching": "words"},
                                   {"bptt": "70"}])
def test_impossible_inference_settings_are_a_sentence(block):
    from qrnn_lm.checkpoint import inference_settings
    ck = {"path": "crafted.pt", "inference": {"batching": "stream", "bptt": 70, "max_len": None, **block}}
    with pytest.raises(QrnnLmError, match="crafted.pt"):
        inference_settings(ck)


@pytest.mark.parametrize("version", [2, 10 ** 6, "1", -1])
def test_a_checkpoint_version_newer_than_the_code_is_refused(tmp_path, version):
    from qrnn_lm.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
    path = str(tmp_path / "future.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "version": version, "model": {}, "config": {}, "vocab": {}}, path)
    with pytest.raises(QrnnLmError, match="future.pt.*version"):
        load_checkpoint(path)


def test_sane_inference_settings_are_kept():
    from qrnn_lm.checkpoint import inference_settings
    ck = {"path": "x.pt", "inference": {"batching": "sentences", "bptt": 35.0, "max_len": 140}}
    assert inference_settings(ck) == {"batching": "sentences", "bptt": 35, "max_len": 140}
    assert inference_settings({"path": "x.pt", "args": {"bptt": 0}})["bptt"] == 70


@pytest.mark.parametrize("seed", ["1e23", "99999999999999999999999", "1.5", "abc"])
def test_generate_refuses_a_bad_seed_in_one_sentence(capsys, seed):
    from qrnn_lm.cli import generate_main
    assert generate_main(["--checkpoint", "unused", "--seed", seed]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --seed must be a whole number") and err.count("\n") == 1, err
