"""`python -m qrnn_lm serve`: per-token scores, the JSON API, the command, and the page in a browser.

The browser test needs playwright (pip) and a Chromium (Debian: `apt-get install chromium`;
another binary with QRNN_LM_CHROMIUM=/path); it is skipped, with the reason, without them.
"""
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from qrnn_lm import LanguageModel
from qrnn_lm.cli import evaluate_main
from qrnn_lm.token_scores import compare_texts, inspect_text
from qrnn_lm.train import main as train_main
from conftest import TINY, assert_one_sentence_error, prepare_dataset

# starlette's test client warns that it will move from httpx to httpx2
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LN2 = math.log(2)


def _train(data, run, *extra):
    assert train_main(["--data", data, "--save", run, *TINY, "--max-steps", "12", "--eval-interval", "6",
                       "--lr", "0.02", *extra]) == 0
    return run


@pytest.fixture(scope="module")
def runs(char_data, tmp_path_factory):
    """Two stream models and a sentence model on the same characters, and a
    model of another tokenizer (mecab: words, POS buckets)."""
    tmp = tmp_path_factory.mktemp("serve")
    words = prepare_dataset(str(tmp / "words"), tokenizer="mecab", vocab_size=20, rare="pos")
    return {"a": _train(char_data, str(tmp / "a")), "b": _train(char_data, str(tmp / "b"), "--seed", "1"),
            "sent": _train(char_data, str(tmp / "sent"), "--batching", "sentences"),
            "words": _train(words, str(tmp / "w"))}


@pytest.fixture(scope="module")
def text_file(char_data):
    return json.load(open(os.path.join(char_data, "test.meta.json")))["source"]


def _evaluate(run, path, capsys):
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", run, "--file", path]) == 0
    return json.loads(capsys.readouterr().out)


def _one_sentence(body):
    msg = body["error"]
    assert isinstance(msg, str) and msg.endswith(".") and "\n" not in msg and "Traceback" not in msg, msg
    return msg


# ---------------------------------------------------------------------------
# per-token scores
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["a", "sent", "words"])
def test_token_scores_add_up_to_evaluate(runs, which, text_file, capsys):
    ev = _evaluate(runs[which], text_file, capsys)
    lm = LanguageModel.from_checkpoint(runs[which])
    r = inspect_text(lm, open(text_file, encoding="utf-8").read())
    for key in ("ppl", "bpc", "nll", "tokens", "characters"):
        assert r["summary"][key] == ev[key], key          # exactly: the same path, the same sums
    tokens = r["tokens"]
    assert len(tokens) == ev["tokens"]
    assert math.isclose(sum(t["bits"] for t in tokens), ev["bpc"] * ev["characters"], rel_tol=1e-9)
    assert sum(t["eos"] for t in tokens) == len([ln for ln in open(text_file, encoding="utf-8") if ln.strip()])
    rare = [t for t in tokens if t["bucket"]]
    assert rare, "the test text should hold rare words"
    for t in tokens:
        assert math.isclose(t["bits"], -math.log2(t["p"]), rel_tol=1e-9)
        ps = [alt["p"] for alt in t["top"]]
        assert len(ps) == 5 and ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6
    for t in rare:
        assert t["token"] == t["bucket"] and lm.vocab.is_bucket(t["id"])
        assert math.isclose(t["p"], t["p_bucket"] * t["p_word"], rel_tol=1e-9)
        assert math.isclose(t["p_word"], math.exp(lm.vocab.rare_logp(t["text"], t["id"])), rel_tol=1e-5)


def test_token_scores_are_at_the_right_positions(runs):
    """Independent of the batching: one forward over the whole text (stream),
    one per line from a zero state (sentences)."""
    text = "猫が魚を食べる。犬が本を読む。\n鳥が花を見る。\n先生が手紙を書く。"
    for which in ("a", "sent"):
        lm = LanguageModel.from_checkpoint(runs[which], ngram=False)   # the network's own positions
        r = inspect_text(lm, text, batch_size=1)
        ids, _, _ = lm.encode_text(text)
        stream = np.concatenate([[lm.vocab.eos_id], ids])
        pieces = [(0, len(ids))]
        if which == "sent":
            ends = list(np.flatnonzero(ids == lm.vocab.eos_id) + 1)
            pieces = list(zip([0] + ends[:-1], ends))
        with torch.no_grad():
            for s, e in pieces:
                x = torch.from_numpy(stream[s:e]).long().unsqueeze(1)
                feats, _ = lm.model(x)
                lp = lm.model.log_probs(feats[:, 0]).double()
                want = -lp[torch.arange(e - s), torch.from_numpy(ids[s:e]).long()]
                got = torch.tensor([t["model_bits"] * LN2 for t in r["tokens"][s:e]], dtype=torch.float64)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
                assert [t["top"][0]["token"] for t in r["tokens"][s:e]] == \
                    [lm.vocab.id_to_token(int(i)) for i in lp.argmax(-1)]


def test_token_scores_of_a_run_with_an_ngram_are_the_mixtures(runs):
    text = "猫が魚を食べる。犬が本を読む。\n鳥が花を見る。"
    lm = LanguageModel.from_checkpoint(runs["a"])
    assert lm.mixture is not None
    net = LanguageModel.from_checkpoint(runs["a"], ngram=False)
    ids, _, _ = lm.encode_text(text)
    nn = np.array([t["model_bits"] * LN2 for t in inspect_text(net, text)["tokens"]])
    r = inspect_text(lm, text)
    want = lm.mixture.token_nll(ids, lm.vocab.eos_id, nn)
    np.testing.assert_allclose([t["model_bits"] * LN2 for t in r["tokens"]], want, rtol=1e-6)
    stream = np.concatenate([[lm.vocab.eos_id], ids])
    with torch.no_grad():
        feats, _ = net.model(torch.from_numpy(stream[:-1]).long().unsqueeze(1))
        lp = net.model.log_probs(feats[:, 0]).double().numpy()
    for t in (0, 3, len(ids) - 1):
        mixed = lm.mixture.next_log_probs(stream[max(0, t - 15):t + 1], lp[t])
        assert r["tokens"][t]["top"][0]["token"] == lm.vocab.id_to_token(int(np.argmax(mixed)))
        assert r["tokens"][t]["top"][0]["p"] == pytest.approx(float(np.exp(mixed.max())), rel=1e-6)


def test_compare(runs):
    text = "猫が魚を食べる。\n鳥が本を読む。"
    a, b = (LanguageModel.from_checkpoint(runs[n], ngram=False) for n in ("a", "b"))
    c = compare_texts(a, b, text)
    assert c["reason"] is None
    assert c["diff"] == [tb["bits"] - ta["bits"] for ta, tb in zip(c["a"]["tokens"], c["b"]["tokens"])]
    assert any(d != 0 for d in c["diff"])
    other = compare_texts(a, LanguageModel.from_checkpoint(runs["words"]), text)
    assert other["diff"] is None and "tokenize this text differently" in other["reason"]


# ---------------------------------------------------------------------------
# the JSON API
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(runs):
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    pytest.importorskip("httpx", reason="httpx (for the test client) is not installed")
    from fastapi.testclient import TestClient
    from qrnn_lm.serve import Limits, create_app
    models = [(name, LanguageModel.from_checkpoint(runs[name])) for name in ("a", "b", "words")]
    return TestClient(create_app(models, Limits(max_chars=400, timeout=30)))


def test_api_score_equals_evaluate(client, runs, text_file, capsys):
    ev = _evaluate(runs["a"], text_file, capsys)
    raw = open(text_file, "rb").read()
    by_json = client.post("/api/score", json={"text": raw.decode("utf-8")}).json()
    # an upload: raw bytes (a byte-order mark and CRLF line ends read as evaluate reads them)
    crlf = b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")
    by_upload = client.post("/api/score?model=0&top=3", content=crlf,
                            headers={"Content-Type": "application/octet-stream"}).json()
    for r in (by_json, by_upload):
        assert {k: r["summary"][k] for k in ev if k in r["summary"]} == \
            {k: v for k, v in ev.items() if k in r["summary"]}
    assert len(by_upload["tokens"][0]["top"]) == 3
    info = client.get("/api/models").json()
    assert [m["name"] for m in info["models"]] == ["a", "b", "words"] and info["max_chars"] == 400


def test_api_errors_are_one_sentence(client):
    cases = [
        ({"json": {"text": "  \n "}}, 400, "empty"),
        ({"json": {"text": "猫" * 401}}, 413, "limit of 400"),
        ({"content": b"x" * 2_000_000, "headers": {"Content-Type": "text/plain"}}, 413, "bytes"),
        ({"content": "猫が".encode("shift_jis") + b"\xff\xfe\x81", "headers": {"Content-Type": "text/plain"}},
         400, "not UTF-8"),
        ({"content": b"\x00\x01binary", "headers": {"Content-Type": "application/octet-stream"}}, 400, "binary"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ({"json": ["text"]}, 400, "JSON object"),
        ({"json": {"text": "猫", "model": 7}}, 400, "3 model(s)"),
        ({"json": {"text": 5}}, 400, "'text'"),
    ]
    for kwargs, status, needle in cases:
        r = client.post("/api/score", **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert needle in _one_sentence(r.json())
    for body, needle in (({"max_tokens": -1}, "max_tokens"), ({"temperature": 0}, "temperature"),
                         ({"top_p": 2}, "top_p"), ({"max_tokens": 10 ** 6}, "max_tokens"),
                         ({"seed": "x"}, "seed")):
        r = client.post("/api/generate", json=body)
        assert r.status_code == 400 and needle in _one_sentence(r.json()), r.text
    assert "no page" in _one_sentence(client.get("/api/nothing").json())
    assert "not allowed" in _one_sentence(client.get("/api/score").json())
    r = client.post("/api/compare", json={"text": "猫が本を読む。", "a": 0, "b": 2})
    assert r.json()["diff"] is None and "differently" in r.json()["reason"]


def _events(body: str):
    out = []
    for chunk in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_api_generate_streams_what_generate_returns(client, runs):
    lm = LanguageModel.from_checkpoint(runs["a"])
    with client.stream("POST", "/api/generate", json={"prompt": "猫が", "max_tokens": 30, "seed": 5,
                                                      "top_k": 5}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.read().decode("utf-8"))
    assert events[-1] == ("done", {"pieces": len(events) - 1, "stopped": "done"})
    text = "".join(d["text"] for e, d in events if e == "message")
    assert len(events) > 3 and text == lm.generate("猫が", max_tokens=30, seed=5, top_k=5)


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------
def test_serve_refuses_remote_host_busy_port_bad_checkpoint(runs, tmp_path, capsys):
    from qrnn_lm.serve import main as serve_main
    assert_one_sentence_error(serve_main(["--checkpoint", runs["a"], "--host", "0.0.0.0"]),
                              capsys.readouterr().err, "no authentication", "--allow-remote")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_sentence_error(serve_main(["--checkpoint", str(bad), "--port", "0"]),
                              capsys.readouterr().err, "bad.pt")
    pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert_one_sentence_error(serve_main(["--checkpoint", runs["a"], "--port", str(port)]),
                                  capsys.readouterr().err, f"port {port}", "in use", "--port")


def test_serve_without_fastapi_says_how_to_install(runs, monkeypatch, capsys):
    from qrnn_lm.serve import main as serve_main
    monkeypatch.setitem(sys.modules, "fastapi", None)   # import fastapi -> ImportError
    assert_one_sentence_error(serve_main(["--checkpoint", runs["a"]]), capsys.readouterr().err,
                              "pip install 'qrnn_lm[serve]'")


@pytest.fixture(scope="module")
def server(runs):
    """``python -m qrnn_lm serve`` on a free loopback port: its base URL."""
    pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "qrnn_lm", "serve", "--checkpoint", runs["a"],
                             "--checkpoint", runs["b"], "--port", "0", "--max-chars", "2000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=120)
    except queue.Empty:
        first = ""
    if not first.startswith("serving http://127.0.0.1:"):
        proc.kill()
        pytest.fail(f"the server did not start: {first!r} {proc.stderr.read()[-2000:]}")
    yield first.split()[1]
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=20) in (0, 130)  # Ctrl-C: uvicorn shuts down, the command says "interrupted."
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_real_server_answers(server):
    page = urllib.request.urlopen(server, timeout=30).read().decode("utf-8")
    assert "/static/serve.js" in page
    for name in ("serve.js", "serve.css"):
        assert urllib.request.urlopen(server + "static/" + name, timeout=30).status == 200
    req = urllib.request.Request(server + "api/score", data=json.dumps({"text": "猫が本を読む。"}).encode(),
                                 headers={"Content-Type": "application/json"})
    assert json.load(urllib.request.urlopen(req, timeout=60))["summary"]["tokens"] == 8
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(server + "api/score", data=b"\xff\xfe\xfd",
                                                      headers={"Content-Type": "text/plain"}), timeout=30)
    assert e.value.code == 400 and "UTF-8" in _one_sentence(json.load(e.value))


# ---------------------------------------------------------------------------
# the page, in a real browser
# ---------------------------------------------------------------------------
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = os.environ.get("QRNN_LM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("no Chromium to drive (apt-get install chromium, or set QRNN_LM_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_page_generates_scores_and_inspects(browser, server, runs, text_file, capsys):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("#gen-model option", state="attached")
    # generate: text streams in piece by piece and is what generate() returns
    page.fill("#prompt", "猫が")
    page.fill("#max-tokens", "40")
    page.fill("#seed", "3")
    page.click("#generate-btn")
    page.wait_for_selector("#gen-out[data-state=done]", timeout=60000)
    lm = LanguageModel.from_checkpoint(runs["a"])
    assert page.text_content("#gen-out") == lm.generate("猫が", max_tokens=40, seed=3)
    assert int(page.get_attribute("#gen-out", "data-pieces")) > 5
    # Stop ends a long generation (2000 tokens take seconds here); the server goes on answering
    page.fill("#max-tokens", "2000")
    page.click("#generate-btn")
    page.wait_for_function("Number(document.getElementById('gen-out').dataset.pieces) > 5")
    page.click("#stop-btn")
    page.wait_for_selector("#gen-out[data-state=stopped]")
    assert int(page.get_attribute("#gen-out", "data-pieces")) < 1000 and page.is_enabled("#generate-btn")
    # score: the coloured tokens' bits add up to evaluate's total; the figures shown are evaluate's
    ev = _evaluate(runs["a"], text_file, capsys)
    page.fill("#score-text", open(text_file, encoding="utf-8").read())
    page.click("#score-btn")
    page.wait_for_selector("#tokens[data-mode=score] .tok")
    bits = [float(b) for b in page.eval_on_selector_all("#tokens .tok", "els => els.map(e => e.dataset.bits)")]
    assert len(bits) == ev["tokens"]
    assert math.isclose(sum(bits), ev["bpc"] * ev["characters"], rel_tol=1e-9)
    assert float(page.get_attribute("#sum-bpc", "data-value")) == ev["bpc"]
    assert float(page.get_attribute("#sum-ppl", "data-value")) == ev["ppl"]
    styles = page.eval_on_selector_all("#tokens .tok", "els => new Set(els.map(e => e.style.background)).size")
    assert styles > 3 and page.is_visible("#legend")
    # hover a rare word: its bucket and the two factors of its probability
    rare = page.query_selector("#tokens .tok[data-bucket]")
    bucket = rare.get_attribute("data-bucket")
    rare.hover()
    tip = page.text_content("#tip")
    assert page.is_visible("#tip") and f"bucket {bucket}" in tip
    assert "P(bucket | history)" in tip and "P(word | bucket)" in tip and "top 5" in tip
    # compare the two models: per-token differences
    page.click("#compare-btn")
    page.wait_for_selector("#tokens[data-mode=compare] .tok")
    page.hover("#tokens .tok >> nth=3")
    assert "B − A" in page.text_content("#tip")
    # bad input: one sentence on the page
    page.fill("#score-text", "   ")
    page.click("#score-btn")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == "the text is empty; give at least one non-empty line."
    page.set_input_files("#score-file", files=[{"name": "sjis.txt", "mimeType": "text/plain",
                                                "buffer": "猫が本を読む。".encode("shift_jis")}])
    page.click("#score-btn")
    page.wait_for_function("document.getElementById('error').textContent.includes('UTF-8')")
    assert not errors, errors
    page.close()


def test_requests_are_bounded_in_time(runs):
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    from fastapi.testclient import TestClient
    from qrnn_lm.serve import Limits, create_app
    lm = LanguageModel.from_checkpoint(runs["a"])
    slow = TestClient(create_app([("a", lm)], Limits(max_chars=400, timeout=1e-9)))
    r = slow.post("/api/score", json={"text": "猫が本を読む。"})
    assert r.status_code == 400 and "time limit" in _one_sentence(r.json())
    with slow.stream("POST", "/api/generate", json={"max_tokens": 500, "seed": 0}) as r:
        events = _events(r.read().decode("utf-8"))
    assert events[-1] == ("done", {"pieces": 1, "stopped": "time limit"})
