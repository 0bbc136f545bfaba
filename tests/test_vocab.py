"""Vocabulary: buckets, exact probabilities, round trips, bad input."""
import json
import math
import random
import warnings

import numpy as np
import pytest
import torch

from qrnn_lm.errors import QrnnLmError
from qrnn_lm.prepare import prepare
from qrnn_lm.spelling import SpellingModel
from qrnn_lm.vocab import Vocabulary, token_log_probs
from qrnn_lm.wordvec import allocate_clusters, kmeans_assign, read_vec_file

FOODS = ["りんご", "バナナ", "みかん", "ぶどう", "いちご", "メロン"]
PLACES = ["東京", "大阪", "京都", "札幌", "福岡", "名古屋"]


def write_lines(path, lines):
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return str(path)


def food_place_corpus(tmp_path, n=240, seed=0):
    """Foods only ever appear as "…を食べる", places as "…へ旅行に行く": words
    that share contexts.  The frame words are frequent, foods and places rare."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if i % 2:
            lines.append(f"私は毎日{rng.choice(FOODS)}を食べる。")
        else:
            lines.append(f"来週{rng.choice(PLACES)}へ旅行に行く。")
    train = write_lines(tmp_path / "train.txt", lines)
    valid = write_lines(tmp_path / "valid.txt",
                        ["私は毎日りんごを食べる。", "来週ｘｙｚ港へ旅行に行く。"])
    return train, valid


def n_frame_words(tmp_path):
    """Number of word types that are not foods or places (to keep exactly those)."""
    from qrnn_lm.tokenizers import MecabTokenizer
    tok = MecabTokenizer()
    words = {s for line in ["私は毎日りんごを食べる。", "来週東京へ旅行に行く。"]
             for s, _ in tok.tokenize(line)}
    return len(words - set(FOODS) - set(PLACES))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    train, valid = food_place_corpus(d)
    return d, train, valid, n_frame_words(d)


def test_pos_buckets_for_known_words(corpus, tmp_path):
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "p"), tokenizer="mecab", vocab_size=k,
                rare="pos", pos_depth=2)
    assert set(v.rare_words) == set(FOODS) | set(PLACES)
    for w in PLACES:
        assert v.id_to_token(v.rare_words[w][0]) == "<unk-名詞-固有名詞>"
    for w in ["りんご", "みかん", "ぶどう", "いちご", "メロン"]:
        assert v.id_to_token(v.rare_words[w][0]) == "<unk-名詞-普通名詞>"
    # depth 1: all in one 名詞 bucket
    v1 = prepare(train, valid, None, str(tmp_path / "p1"), tokenizer="mecab", vocab_size=k,
                 rare="pos", pos_depth=1)
    assert {v1.id_to_token(v1.rare_words[w][0]) for w in FOODS + PLACES} == {"<unk-名詞>"}
    # an unseen word gets a bucket from MeCab's (unknown-word) POS
    ids, lp = v.encode("来週ｘｙｚ港へ")
    toks = [v.id_to_token(i) for i in ids]
    assert toks[0] == "来週" and any(t.startswith("<unk-名詞") for t in toks)
    assert all(np.isfinite(lp)) and (lp[[v.is_bucket(i) for i in ids]] < 0).all()


def test_kmeans_groups_words_that_share_contexts(corpus, tmp_path):
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "k"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, seed=0)
    food_b = {v.rare_words[w][0] for w in FOODS}
    place_b = {v.rare_words[w][0] for w in PLACES}
    assert len(food_b) == 1 and len(place_b) == 1 and food_b != place_b
    assert all(v.is_bucket(b) for b in food_b | place_b)
    # pos+kmeans: clusters inside POS groups; places are 名詞-固有名詞 only
    v2 = prepare(train, valid, None, str(tmp_path / "pk"), tokenizer="mecab", vocab_size=k,
                 rare="pos+kmeans", buckets=2, seed=0)
    assert {v2.id_to_token(v2.rare_words[w][0]) for w in PLACES} == {"<unk-名詞-固有名詞>"}


@pytest.mark.parametrize("rare,buckets", [("unk", None), ("pos", None), ("kmeans", 3)])
def test_round_trip_through_vocab_json(corpus, tmp_path, rare, buckets):
    d, train, valid, k = corpus
    out = tmp_path / rare
    v = prepare(train, valid, None, str(out), tokenizer="mecab", vocab_size=k,
                rare=rare, buckets=buckets, workers=2)
    json.loads((out / "vocab.json").read_text(encoding="utf-8"))  # plain JSON
    w = Vocabulary.load(str(out))
    assert [w.id_to_token(i) for i in range(len(w))] == [v.id_to_token(i) for i in range(len(v))]
    assert w.rare_words == v.rare_words and w.eos_id == v.eos_id
    assert [w.is_bucket(i) for i in range(len(w))] == [v.is_bucket(i) for i in range(len(v))]
    w2 = Vocabulary.from_dict(json.loads(json.dumps(w.to_dict())))
    # the stored splits are what encode() gives line by line, </s> after each
    for split, path in (("train", train), ("valid", valid)):
        ids = np.load(out / f"{split}.ids.npy", mmap_mode="r")
        lps = np.load(out / f"{split}.rare_logp.npy", mmap_mode="r")
        exp_ids, exp_lp = [], []
        for line in open(path, encoding="utf-8").read().splitlines():
            i, lp = w2.encode(line)
            exp_ids += list(i) + [w2.eos_id]
            exp_lp += list(lp) + [0.0]
        np.testing.assert_array_equal(ids, exp_ids)
        np.testing.assert_allclose(lps, exp_lp, rtol=1e-6)
    # ids sorted by descending training frequency
    counts = np.bincount(np.load(out / "train.ids.npy"), minlength=len(w))
    assert (np.diff(counts) <= 0).all()
    np.testing.assert_array_equal(counts, w.counts)


def _char_mass(sp: SpellingModel) -> float:
    """Sum of p(c) over all 0x110000 code points, from the definition."""
    own = sp.char_counts
    T, d = sum(own.values()), len(own)
    share = d / (T + d)
    if sp.backoff is None:
        base_own, base_rest = len(own) / 0x110000, (0x110000 - len(own)) / 0x110000
    else:
        base_own = sum(math.exp(sp.backoff.char_logp(c)) for c in own)
        base_rest = 1.0 - base_own
    seen = sum(math.exp(sp.char_logp(c)) for c in own)
    assert seen == pytest.approx(sum(n / (T + d) for n in own.values()) + share * base_own)
    return seen + share * base_rest


def test_spelling_model_is_a_distribution():
    sp = SpellingModel.fit(["ねこ", "いぬ", "ねずみ", "abc"])
    assert _char_mass(sp) == pytest.approx(1.0, abs=1e-9)
    for w in ["ねこ", "x", "猫犬", "ねずみねずみ"]:
        expect = math.log(sp.q) + (len(w) - 1) * math.log1p(-sp.q)
        expect += sum(sp.char_logp(c) for c in w)
        assert sp.logp(w) == pytest.approx(expect)
    # T = 10 characters, d = 9 distinct; unseen characters: their Witten-Bell share, uniformly over code points
    assert sp.char_logp("x") == pytest.approx(math.log(9 / (10 + 9) / 0x110000))
    assert sp.logp("") == -math.inf
    one = SpellingModel.fit(list("abcab"), single_char=True)
    assert one.logp("ab") == -math.inf and math.isfinite(one.logp("z"))
    d = SpellingModel.from_dict(json.loads(json.dumps(sp.to_dict())))
    assert d.logp("ねこ") == sp.logp("ねこ")
    # a bucket's model backs off to the global one
    b = SpellingModel.fit(["ねずみ", "ねこ"], backoff=sp)
    assert _char_mass(b) == pytest.approx(1.0, abs=1e-9)
    assert b.char_logp("い") == pytest.approx(math.log(4 / 9) + sp.char_logp("い"))
    assert b.logp("ねこ") > sp.logp("ねこ")
    draws = [b.sample(random.Random(s).random) for s in range(30)]
    assert draws == [b.sample(random.Random(s).random) for s in range(30)]
    assert sum(set(w) <= set("ねずみこ") for w in draws) > 10  # mostly the bucket's own letters


@pytest.mark.filterwarnings("ignore:k-means")
@pytest.mark.parametrize("rare,buckets", [("unk", None), ("pos", None), ("pos+script", None),
                                          ("pos+kmeans", 3), ("exchange", 3)])
def test_full_vocabulary_probabilities_sum_to_one(corpus, tmp_path, rare, buckets):
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "s"), tokenizer="mecab", vocab_size=k,
                rare=rare, buckets=buckets)
    g = torch.Generator().manual_seed(1)
    lm = torch.log_softmax(torch.randn(len(v), generator=g, dtype=torch.float64), 0).numpy()
    total = 0.0
    for i in range(len(v)):
        if not v.is_bucket(i):
            total += math.exp(lm[i])
            continue
        b = v.buckets[i]
        members = [w for w, (bb, _) in v.rare_words.items() if bb == i]
        seen = sum(math.exp(lm[i] + v.rare_logp(w, i)) for w in members)
        # the unseen mass from its definition, not from the code under test
        n_tok, n_typ = b["tokens"], b["types"]
        spell_seen = sum(math.exp(v.spelling_for(i).logp(w)) for w in members)
        unseen = n_typ / (n_tok + n_typ) * (1 - spell_seen) if n_tok else 1.0
        assert v.unseen_mass(i) == pytest.approx(unseen, abs=1e-9)
        total += seen + math.exp(lm[i]) * unseen
    assert abs(total - 1.0) < 1e-6


def test_token_log_probs_torch_and_numpy():
    lp = torch.log_softmax(torch.randn(2, 3, 7, dtype=torch.float64), -1)
    ids = torch.tensor([[0, 3, 6], [1, 1, 2]])
    rare = torch.tensor([[0.0, -2.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    out = token_log_probs(lp, ids, rare)
    for a in range(2):
        for t in range(3):
            assert out[a, t].item() == pytest.approx(lp[a, t, ids[a, t]].item() + rare[a, t].item())
    np.testing.assert_allclose(token_log_probs(lp.numpy(), ids.numpy(), rare.numpy()), out.numpy())


def test_sample_word(corpus, tmp_path):
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "g"), tokenizer="mecab", vocab_size=k,
                rare="pos")
    b = v.rare_words["東京"][0]
    draw = lambda seed: [v.sample_word(b, torch.Generator().manual_seed(seed))  # noqa: E731
                         for _ in range(20)]
    a = draw(3)
    assert a == draw(3) and set(a) <= set(PLACES)
    rng = np.random.default_rng(0)
    words = [v.sample_word(b, rng, unseen=True) for _ in range(200)]
    assert any(w not in PLACES for w in words) and any(w in PLACES for w in words)
    with pytest.raises(ValueError):
        v.sample_word(v.eos_id, rng)
    assert v.decode(["東京", "へ", "</s>", "大阪"]) == "東京へ\n大阪"


def test_deterministic_with_seed(corpus, tmp_path):
    d, train, valid, k = corpus
    outs = []
    for run in range(2):
        out = tmp_path / f"r{run}"
        prepare(train, valid, None, str(out), tokenizer="mecab", vocab_size=k - 3,
                rare="pos+kmeans", buckets=4, seed=7, workers=1 + run)
        outs.append(out)
    assert (outs[0] / "vocab.json").read_bytes() == (outs[1] / "vocab.json").read_bytes()
    for f in ["train.ids.npy", "valid.ids.npy", "train.rare_logp.npy", "valid.rare_logp.npy"]:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()


def test_kmeans_input_errors(corpus, tmp_path):
    d, train, valid, k = corpus
    with pytest.raises(QrnnLmError, match="larger than the number of rare words"):
        prepare(train, valid, None, str(tmp_path / "e"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=13)
    with pytest.raises(QrnnLmError, match="larger than the number of rare"):
        kmeans_assign(np.zeros((3, 2), np.float32), 4)
    vec = tmp_path / "bad.vec"
    vec.write_text("3 4\n東京 1 2 3 4\n大阪 1 2 3\nりんご 1 2 3 4\n", encoding="utf-8")
    with pytest.raises(QrnnLmError, match="line 3 has 3 numbers.*dimension 4"):
        prepare(train, valid, None, str(tmp_path / "v"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, vectors=str(vec))
    nohdr = tmp_path / "nohdr.vec"
    nohdr.write_text("東京 1 2\n", encoding="utf-8")
    with pytest.raises(QrnnLmError, match="header"):
        read_vec_file(str(nohdr), ["東京"])


def test_vec_file_vectors_and_pos_fallback(corpus, tmp_path):
    d, train, valid, k = corpus
    vec = tmp_path / "w.vec"
    rows = [f"{w} 1 0.1 0" for w in FOODS[:4]] + [f"{w} 0 0.1 1" for w in PLACES[:4]]
    vec.write_text(f"{len(rows)} 3\n" + "\n".join(rows) + "\nother 1 1 1\n", encoding="utf-8")
    v = prepare(train, valid, None, str(tmp_path / "vv"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, vectors=str(vec))
    assert len({v.rare_words[w][0] for w in FOODS[:4]}) == 1
    assert len({v.rare_words[w][0] for w in PLACES[:4]}) == 1
    assert v.rare_words[FOODS[0]][0] != v.rare_words[PLACES[0]][0]
    # no vector: the word's POS bucket
    assert v.id_to_token(v.rare_words[PLACES[5]][0]) == "<unk-名詞-固有名詞>"


def test_allocate_clusters():
    # one each, then the 7 left by largest remainder over the room left (99 : 9)
    assert allocate_clusters(10, {"a": 100, "b": 1, "c": 10}) == {"a": 7, "b": 1, "c": 2}
    assert sum(allocate_clusters(7, {"a": 3, "b": 3, "c": 30}).values()) == 7
    assert allocate_clusters(2, {"a": 5, "b": 5, "c": 5}) == {"a": 1, "b": 1, "c": 1}
    assert allocate_clusters(50, {"a": 2, "b": 3}) == {"a": 2, "b": 3}


def test_bad_vocabulary_files(tmp_path):
    p = tmp_path / "vocab.json"
    with pytest.raises(QrnnLmError, match="no vocabulary"):
        Vocabulary.load(str(p))
    p.write_text("{not json", encoding="utf-8")
    with pytest.raises(QrnnLmError, match="not a valid vocabulary"):
        Vocabulary.load(str(tmp_path))
    p.write_text("{}", encoding="utf-8")
    with pytest.raises(QrnnLmError, match="not a qrnn_lm vocabulary"):
        Vocabulary.load(str(p))


def _random_model_checkpoint(vocab, path):
    """A train.py-style checkpoint of an untrained model over ``vocab``."""
    from qrnn_lm.lm import save_checkpoint
    from qrnn_lm.model import ModelConfig, RNNLanguageModel
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(vocab), emsize=16, nhid=32, nlayers=1, rnn="qrnn",
                         dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0)
    model = RNNLanguageModel(config)
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict(),
                     "vocab": vocab.to_dict()}, str(path))
    return str(path)


def test_context_vectors_from_a_checkpoint(corpus, tmp_path):
    """Foods always follow 私は毎日, places 来週: the model's state before them
    differs by context, so k-means on context vectors separates them even for
    an untrained model, and even when its vocabulary did not keep them."""
    d, train, valid, k = corpus
    small = prepare(train, valid, None, str(tmp_path / "unk"), tokenizer="mecab", vocab_size=k,
                    rare="unk")
    ckpt = _random_model_checkpoint(small, tmp_path / "model.pt")
    v = prepare(train, valid, None, str(tmp_path / "ctx"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, vectors=ckpt)
    food_b = {v.rare_words[w][0] for w in FOODS}
    place_b = {v.rare_words[w][0] for w in PLACES}
    assert len(food_b) == 1 and len(place_b) == 1 and food_b != place_b
    # a run directory works too, and gives the same vectors
    run = tmp_path / "run"
    run.mkdir()
    import shutil
    shutil.copy(ckpt, run / "best.pt")
    v2 = prepare(train, valid, None, str(tmp_path / "ctx2"), tokenizer="mecab", vocab_size=k,
                 rare="kmeans", buckets=2, vectors=str(run))
    assert v2.rare_words == v.rare_words
    torch.save({"model": {}}, tmp_path / "bad.pt")
    with pytest.raises(QrnnLmError, match="cannot read word vectors"):
        prepare(train, valid, None, str(tmp_path / "bad"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, vectors=str(tmp_path / "bad.pt"))
    with pytest.raises(QrnnLmError, match="neither ppmi nor fasttext"):
        prepare(train, valid, None, str(tmp_path / "bad2"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, vectors=str(tmp_path / "missing.vec"))


def test_embedding_vectors_from_a_checkpoint(corpus, tmp_path):
    """Without a text stream: the input embeddings of the words the
    checkpoint's (larger) vocabulary kept."""
    from qrnn_lm.lm import vectors_from_checkpoint
    d, train, valid, k = corpus
    big = prepare(train, valid, None, str(tmp_path / "big"), tokenizer="mecab",
                  vocab_size=1000, rare="unk")
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(len(big), 8, generator=g) * 0.05
    for w in FOODS:
        weight[big.word_to_id[w], 0] += 1.0
    ckpt = tmp_path / "model.pt"
    torch.save({"model": {"encoder.weight": weight}, "vocab": big.to_dict()}, ckpt)
    x, has = vectors_from_checkpoint(str(ckpt), FOODS + ["未知語"])
    assert has.tolist() == [True] * len(FOODS) + [False]
    np.testing.assert_allclose(np.linalg.norm(x[:-1], axis=1), 1.0, rtol=1e-5)
    assert (x[:-1, 0] > 0.9).all()


def test_fasttext_vectors_from_spelling(corpus, tmp_path):
    pytest.importorskip("gensim")
    from qrnn_lm.wordvec import fasttext_vectors
    sents = [["東京", "都", "へ", "行く"], ["東京都", "の", "人"], ["りんご", "を", "食べる"]] * 20
    words = ["東京都", "東京", "りんご", "東京湾"]  # 東京湾 never occurs: a vector from its n-grams
    x, has = fasttext_vectors(sents, words, dim=16, epochs=5, seed=0)
    assert has.all() and x.shape == (4, 16)
    x2, _ = fasttext_vectors(sents, words, dim=16, epochs=5, seed=0)
    np.testing.assert_array_equal(x, x2)  # reproducible (one thread, stable hash)
    assert x[3] @ x[1] > x[3] @ x[2]  # 東京湾 is nearer 東京 than りんご
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "ft"), tokenizer="mecab", vocab_size=k,
                rare="kmeans", buckets=2, vectors="fasttext", seed=0)
    assert len({v.rare_words[w][0] for w in FOODS + PLACES}) == 2
    assert all(v.buckets[b]["cluster"] is not None for b, _ in v.rare_words.values())
    assert v.to_dict()["vectors"] == "fasttext"


def test_unseen_words_placed_by_script(corpus, tmp_path):
    """A word never seen in training goes to the bucket where rare words of its
    POS and character class are, not the biggest bucket of its POS."""
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "ps"), tokenizer="mecab", vocab_size=k,
                rare="pos+script")
    assert v.id_to_token(v.rare_words["メロン"][0]) == "<unk-名詞-普通名詞-katakana>"
    assert v.id_to_token(v.rare_words["りんご"][0]) == "<unk-名詞-普通名詞-hiragana>"
    assert v.id_to_token(v.bucket_for("パパイヤ", "名詞-普通名詞-一般")) == "<unk-名詞-普通名詞-katakana>"
    assert v.id_to_token(v.bucket_for("すもも", "名詞-普通名詞-一般")) == "<unk-名詞-普通名詞-hiragana>"
    # k-means: katakana foods in one cluster, hiragana foods and places (more
    # tokens of 名詞-普通名詞) in the other
    vec = tmp_path / "w.vec"
    rows = {w: ([1, 0.01 * i] if w in ("バナナ", "メロン") else [0.01 * i, 1])
            for i, w in enumerate(FOODS + PLACES)}
    vec.write_text(f"{len(rows)} 2\n" + "".join(f"{w} {a} {b}\n" for w, (a, b) in rows.items()),
                   encoding="utf-8")
    km = prepare(train, valid, None, str(tmp_path / "km"), tokenizer="mecab", vocab_size=k,
                 rare="kmeans", buckets=2, vectors=str(vec))
    kata, hira = km.rare_words["バナナ"][0], km.rare_words["りんご"][0]
    assert kata != hira
    assert km.bucket_for("パパイヤ", "名詞-普通名詞-一般") == kata
    assert km.bucket_for("すもも", "名詞-普通名詞-一般") == hira
    # a vocabulary written before the table existed places by POS alone
    old = km.to_dict().copy()
    del old["unseen_bucket_by_pos_script"]
    assert Vocabulary.from_dict(old).bucket_for("パパイヤ", "名詞-普通名詞-一般") == hira


def test_kmeans_assign_small_inputs(capfd):
    rng = np.random.default_rng(0)
    centres = np.array([[5, 0], [0, 5], [-5, -5]], dtype=np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (10, 2)) for c in centres]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 10 points per cluster: no warning
        labels = kmeans_assign(x, 3, seed=0)
    # faiss's own C++ warning (< 39 points per centroid) is avoided
    assert "WARNING" not in capfd.readouterr().err
    with pytest.warns(UserWarning, match="clusters will be tiny"):
        kmeans_assign(x[::4], 3, seed=0)
    assert [len(set(labels[i:i + 10])) for i in (0, 10, 20)] == [1, 1, 1]
    assert len(set(labels)) == 3
    np.testing.assert_array_equal(labels, kmeans_assign(x, 3, seed=0))
    np.testing.assert_array_equal(kmeans_assign(x, 1), np.zeros(30))


def test_exchange_clusters_find_the_classes_the_neighbours_define():
    """Rare words 10..29 are always followed by word 1, 30..49 by word 2: two
    exchange classes are exactly those groups, and the class-bigram
    likelihood rises from the starting assignment."""
    from qrnn_lm.wordvec import class_bigram_loglik, exchange_clusters
    rng = np.random.default_rng(0)
    toks = []
    for _ in range(2000):
        w = int(rng.integers(10, 50))
        toks += [int(rng.integers(3, 10)), w, 1 if w < 30 else 2]
    stream, rare = np.asarray(toks), np.arange(10, 50)
    lab = exchange_clusters(stream, rare, 50, 2)
    assert set(lab[:20]) == {lab[0]} and set(lab[20:]) == {1 - lab[0]}
    for k in (2, 3, 7):
        lab = exchange_clusters(stream, rare, 50, k)
        assert lab.min() >= 0 and lab.max() < k
        np.testing.assert_array_equal(lab, exchange_clusters(stream, rare, 50, k))  # deterministic
        start = np.empty(40, dtype=np.int64)
        start[np.argsort(-np.bincount(stream, minlength=50)[rare], kind="stable")] = np.arange(40) % k
        assert class_bigram_loglik(stream, rare, lab, 50) > class_bigram_loglik(stream, rare, start, 50)
    # chunked reading gives the same classes as one chunk; edge cases
    np.testing.assert_array_equal(exchange_clusters(stream, rare, 50, 3, chunk=7),
                                  exchange_clusters(stream, rare, 50, 3))
    assert exchange_clusters(stream, rare, 50, 1).tolist() == [0] * 40
    assert sorted(exchange_clusters(stream, rare[:3], 50, 3).tolist()) == [0, 1, 2]
    with pytest.raises(QrnnLmError, match="between 1 and the number of rare words"):
        exchange_clusters(stream, rare[:3], 50, 4)


def test_prepare_exchange_buckets(corpus, tmp_path):
    """``--rare exchange``: K classes named like k-means clusters, unseen words
    placed by POS and character class, and --buckets required."""
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "x"), tokenizer="mecab", vocab_size=k - 3,
                rare="exchange", buckets=3)
    names = sorted(b["name"] for b in v.buckets.values())
    assert names == ["<unk-k0>", "<unk-k1>", "<unk-k2>"]
    assert v.to_dict()["rare"]["mode"] == "exchange"
    assert v.is_bucket(v.lookup("未知語ですよ", "名詞-普通名詞-一般")[0])
    with pytest.raises(QrnnLmError, match="needs --buckets"):
        prepare(train, valid, None, str(tmp_path / "y"), tokenizer="mecab", vocab_size=k,
                rare="exchange")


def test_one_encode_path_gives_encode_encode_normalized_and_split_layout(corpus, tmp_path):
    """encode_lines is the path encode, encode_normalized and
    LanguageModel.encode_text share: </s> between (and with final_eos after)
    the normalised lines, characters = their lengths + one newline each."""
    d, train, valid, k = corpus
    v = prepare(train, valid, None, str(tmp_path / "e"), tokenizer="mecab", vocab_size=k,
                rare="pos+script")
    text = "来週ｘｙｚ港へ旅行に行く。\n\n   \n私は毎日りんごを食べる。ｇｕａｖａ"
    lines = list(v.normalizer.lines(text.split("\n")))
    assert len(lines) == 2 and lines[0] == "来週xyz港へ旅行に行く。"   # NFKC, empty lines dropped
    per_line = [v.encode_normalized(line) for line in lines]
    eos = (np.array([v.eos_id], np.int32), np.zeros(1, np.float32))
    ids, lps, chars = v.encode_lines(text, final_eos=True)
    np.testing.assert_array_equal(ids, np.concatenate([per_line[0][0], eos[0], per_line[1][0], eos[0]]))
    np.testing.assert_array_equal(lps, np.concatenate([per_line[0][1], eos[1], per_line[1][1], eos[1]]))
    assert ids.dtype == np.int32 and lps.dtype == np.float32
    assert chars == sum(len(line) + 1 for line in lines)
    enc_ids, enc_lps = v.encode(text)
    np.testing.assert_array_equal(enc_ids, ids[:-1])
    np.testing.assert_array_equal(enc_lps, lps[:-1])
    assert (lps[v.bucket_mask[ids]] < 0).all() and (lps[~v.bucket_mask[ids]] == 0).all()
    assert v.encode_lines("\n \n", final_eos=True)[2] == 0 and len(v.encode("")[0]) == 0


def test_moved_names_still_import_from_vocab():
    import qrnn_lm.vocab as vocab
    from qrnn_lm import vocab_build, vocab_format
    for name in ("EOS", "RARE_MODES", "FORMAT", "VERSION", "pos_prefix", "vocab_dict_problem"):
        assert getattr(vocab, name) is getattr(vocab_format, name)
    assert vocab.pos_prefix("名詞-固有名詞-地名-一般", 2) == "名詞-固有名詞"
    d = vocab_build.build_vocab_dict({("a", "名詞"): 3, ("b", "名詞"): 1}, 2, vocab_size=1,
                                     tokenizer_config={"type": "char"})
    assert vocab.vocab_dict_problem(d) is None and Vocabulary(d).to_dict() is d
    assert [t[0] for t in d["tokens"]] == ["a", "</s>", "<unk-名詞>"]


def test_exchange_tables_grow_with_the_vocabulary_not_with_the_rare_types():
    """The class-bigram tables hold a column per kept word and per class:
    a million rare types cost no more table than a thousand."""
    from qrnn_lm.wordvec import _Exchange, exchange_clusters, class_bigram_loglik
    rng = np.random.default_rng(0)
    n_words, n_rare, k = 5000, 4900, 8
    stream = rng.integers(0, n_words, size=30000)
    rare = np.arange(100, n_words)
    ex = _Exchange(stream, rare, n_words, k, chunk=1 << 12)
    assert ex.R.shape == (k, 100 + k) and ex.L.shape == (k, 100)
    # and the clustering still raises the class-bigram likelihood over its start
    labels = exchange_clusters(stream, rare, n_words, k, max_iter=2)
    start = np.empty(n_rare, dtype=np.int64)
    start[ex.order] = np.arange(n_rare) % k
    assert class_bigram_loglik(stream, rare, labels, n_words) > class_bigram_loglik(stream, rare, start, n_words)


def test_chunked_key_counts_merge_as_they_go(monkeypatch):
    from qrnn_lm import wordvec
    monkeypatch.setattr(wordvec._KeyCounts, "MIN_MERGE", 50)
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 300, size=rng.integers(0, 200)) for _ in range(60)]
    kc, held = wordvec._KeyCounts(), []
    for ch in chunks:
        kc.add(ch)
        held.append(kc.pending)
    u, c = kc.total()
    ref_u, ref_c = np.unique(np.concatenate(chunks), return_counts=True)
    np.testing.assert_array_equal(u, ref_u)
    np.testing.assert_array_equal(c, ref_c)
    assert max(held) <= 300 + 200   # never more pending than the distinct keys and a chunk
