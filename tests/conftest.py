"""Helpers shared by the test modules: a tiny prepared Japanese corpus
(the ``char_data`` fixture, ``prepare_dataset``, ``write_corpus``), the
smallest training arguments (``TINY``) and the check of a one-sentence CLI
failure.  Modules import the plain helpers with ``from conftest import ...``."""
import os
import random

import pytest

SUBJ = ["猫", "犬", "鳥", "私", "彼", "先生", "学生", "子供"]
OBJ = ["本", "魚", "手紙", "歌", "花", "水"]
VERB = ["走る", "見る", "食べる", "書く", "読む", "歌う"]


def write_corpus(directory, n_train=60, n_valid=8, n_test=8, seed=0):
    """A few dozen lines of simple, learnable Japanese; returns {split: path}."""
    rng = random.Random(seed)

    def line():
        return "".join(f"{rng.choice(SUBJ)}が{rng.choice(OBJ)}を{rng.choice(VERB)}。"
                       for _ in range(rng.randint(1, 3)))
    paths = {}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        p = os.path.join(directory, f"{split}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write("\n".join(line() for _ in range(n)) + "\n")
        paths[split] = p
    return paths


def prepare_dataset(directory, tokenizer="char", vocab_size=16, rare="unk", seed=0, **corpus):
    """Write a corpus and run ``qrnn_lm.prepare.main`` on it; returns the dataset dir."""
    from qrnn_lm import prepare
    os.makedirs(directory, exist_ok=True)
    paths = write_corpus(directory, seed=seed, **corpus)
    out = os.path.join(directory, "data")
    rc = prepare.main(["--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
                       "--out", out, "--tokenizer", tokenizer, "--vocab-size", str(vocab_size),
                       "--rare", rare, "--quiet"])
    assert rc == 0
    return out


TINY = ["--emsize", "16", "--nhid", "24", "--nlayers", "2", "--batch_size", "4", "--bptt", "12",
        "--eval-batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    return prepare_dataset(str(tmp_path_factory.mktemp("lmdata")))


def assert_one_sentence_error(rc, err, *needles):
    assert rc != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
