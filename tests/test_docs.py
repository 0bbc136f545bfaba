"""Every code block in README.md and docs/*.md runs as written.

A fenced block tagged ``python`` or ``bash`` is run, in document order, in a
scratch directory that looks like a checkout where a user has been working:
``train.txt``/``valid.txt``/``test.txt`` (a tiny Japanese corpus), ``data/mine``
(a prepared char dataset), ``runs/quickstart`` (a tiny trained run) and
``train.py``.  Paths a page creates itself (``prepare --out X``) are removed
first, so the page makes them.

A block that cannot run in a test (apt-get, minutes of training, a GPU) has
``<!-- not run: why -->`` on the line before it; for it, and for every block
of the generated docs/RESULTS.md, every ``--flag`` of a ``python``/``torchrun``
command must exist in that command's ``--help``.  Blocks tagged ``text`` (or
untagged) are listings or output; commands in them are flag-checked too.
Relative links must point at files that exist (and headings that exist).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                              if f.endswith(".md"))
GENERATED = {os.path.join("docs", "RESULTS.md")}   # written by benchmarks/render_results.py
RUN_TAGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
LISTING_TAGS = {"", "text"}
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(\S.*?)\s*-->$")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")


class Block:
    def __init__(self, path, line, tag, text, not_run):
        self.path, self.line, self.tag, self.text, self.not_run = path, line, tag, text, not_run

    def __repr__(self):
        return f"{self.path}:{self.line} ({self.tag or 'untagged'})"


def code_blocks(path, text):
    """The fenced blocks of a markdown text, each with its not-run reason (or None)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, tag, start = m.group(1), m.group(2).lower(), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path}:{start + 1}: a code block is not closed"
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(prev)
        blocks.append(Block(path, start + 1, tag, "\n".join(body) + "\n", marker.group(1) if marker else None))
        i += 1
    return blocks


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def all_blocks():
    return [b for rel in DOCS for b in code_blocks(rel, read(rel))]


def commands(text):
    """The simple commands of a shell text, as token lists (continuations joined,
    comments dropped, split at && || ; |)."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        cmd = []
        for t in tokens + [";"]:
            if t in ("&&", "||", ";", "|"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(t)
    return out


def parser_command(cmd):
    """For a python/torchrun command, (the --help command, its arguments); else None."""
    while cmd and re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0]):    # VAR=value prefixes
        cmd = cmd[1:]
    if not cmd:
        return None
    if cmd[0] == "torchrun":
        scripts = [i for i, t in enumerate(cmd) if t.endswith(".py")]
        if not scripts:
            return None
        cmd = ["python"] + cmd[scripts[0]:]
    if cmd[0] not in ("python", "python3") or len(cmd) < 2:
        return None
    if cmd[1] == "-m":
        if len(cmd) < 4 or cmd[2] != "qrnn_lm":
            return None                                      # pip, venv, pytest: not ours
        return ["-m", "qrnn_lm", cmd[3], "--help"], cmd[4:]
    if not cmd[1].endswith(".py"):
        return None
    positional = []
    for t in cmd[2:]:
        if not re.fullmatch(r"[a-z_]+", t):
            break
        positional.append(t)                                 # a subcommand, e.g. bench_lm.py speed
    return [cmd[1], *positional, "--help"], cmd[2 + len(positional):]


_HELP = {}


def help_text(help_cmd):
    key = tuple(help_cmd)
    if key not in _HELP:
        script = help_cmd[0]
        assert script == "-m" or os.path.isfile(os.path.join(ROOT, script)), f"no such script: {script}"
        r = subprocess.run([sys.executable, *help_cmd], cwd=ROOT, env=env(), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"{' '.join(help_cmd)} failed: {r.stderr[-2000:]}"
        _HELP[key] = r.stdout
    return _HELP[key]


def unknown_flags(text):
    """[(command, flag)] for every --flag its parser does not know."""
    bad = []
    for cmd in commands(text):
        pc = parser_command(cmd)
        if pc is None:
            continue
        help_cmd, args = pc
        flags = [a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]
        if not flags:
            continue                           # nothing to check: don't run the script at all
        helped = help_text(help_cmd)
        for flag in flags:
            if not re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", helped):
                bad.append((" ".join(help_cmd[:-1]), flag))
    return bad


def listing_commands(text):
    """Lines of a listing that are commands (python/torchrun/bash ...)."""
    return "\n".join(line for line in text.splitlines()
                     if re.match(r"^\s*(python3?|torchrun|bash)\s", line))


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([ROOT] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), e.get("PATH", "")])
    e["PYTHONIOENCODING"] = "utf-8"
    return e


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """What the pages assume a user has: text files, data/mine, runs/quickstart, train.py."""
    ws = tmp_path_factory.mktemp("docs_ws")
    paths = write_corpus(str(ws), n_train=80)
    for split, p in paths.items():
        assert os.path.basename(p) == f"{split}.txt"
    os.symlink(os.path.join(ROOT, "train.py"), ws / "train.py")
    r = subprocess.run([sys.executable, "-m", "qrnn_lm", "prepare", "--train", "train.txt", "--valid",
                        "valid.txt", "--test", "test.txt", "--out", "data/mine", "--tokenizer", "char",
                        "--vocab-size", "30", "--rare", "unk", "--quiet"],
                       cwd=ws, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "train.py", "--data", "data/mine", "--save", "runs/quickstart",
                        "--max-steps", "3", "--emsize", "8", "--nhid", "8", "--nlayers", "1", "--bptt", "8",
                        "--batch_size", "2", "--no-progress"],
                       cwd=ws, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return ws


def test_every_block_is_run_or_marked():
    blocks = all_blocks()
    for b in blocks:
        assert b.tag in RUN_TAGS or b.tag in LISTING_TAGS, f"{b}: tag it python, bash or text"
    run = [b for b in blocks if b.tag in RUN_TAGS and not b.not_run and b.path not in GENERATED]
    # the README's three API snippets (fo_pool, QRNN, LanguageModel) run
    readme_python = [b for b in run if b.path == "README.md" and RUN_TAGS[b.tag] == "python"]
    assert len(readme_python) >= 3, readme_python
    assert any(RUN_TAGS[b.tag] == "bash" for b in run)


def test_no_indented_code_blocks():
    # commands in 4-space indented blocks would escape these tests
    for rel in DOCS:
        if rel in GENERATED:
            continue
        in_fence = False
        for n, line in enumerate(read(rel).splitlines(), 1):
            if FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence and re.match(r"^ {4,}(python3?|pip|bash|torchrun|sudo) ", line):
                pytest.fail(f"{rel}:{n}: an indented code block; fence it")


@pytest.mark.parametrize("rel", DOCS)
def test_flags_of_blocks_that_do_not_run_exist(rel):
    bad = []
    for b in code_blocks(rel, read(rel)):
        if b.tag in LISTING_TAGS:
            bad += [(b, *u) for u in unknown_flags(listing_commands(b.text))]
        elif RUN_TAGS[b.tag] == "bash" and (b.not_run or rel in GENERATED):
            bad += [(b, *u) for u in unknown_flags(b.text)]
    assert not bad, "flags that no parser knows: " + "; ".join(f"{b}: {c} {f}" for b, c, f in bad)


def test_flag_check_can_fail():
    assert unknown_flags("python train.py --data x --max-minutes 5\n") == []
    assert unknown_flags("python train.py --data x --no-such-flag 5\n") == [("train.py", "--no-such-flag")]
    assert unknown_flags("python -m qrnn_lm prepare --out x \\\n  --vocab-sizes 5\n") == \
        [("-m qrnn_lm prepare", "--vocab-sizes")]
    assert unknown_flags("pip install --no-build-isolation -e .\n") == []


@pytest.mark.parametrize("rel", [d for d in DOCS if d not in GENERATED])
def test_blocks_run_as_written(rel, workspace, tmp_path):
    blocks = [b for b in code_blocks(rel, read(rel)) if b.tag in RUN_TAGS and not b.not_run]
    if not blocks:
        pytest.skip(f"{rel} has no block to run")
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    for b in blocks:                           # what the page creates, it must create itself
        if RUN_TAGS[b.tag] == "bash":
            for cmd in commands(b.text):
                for flag, value in zip(cmd, cmd[1:]):
                    if flag == "--out":
                        shutil.rmtree(ws / value, ignore_errors=True)
    for b in blocks:
        if RUN_TAGS[b.tag] == "python":
            script = tmp_path / "block.py"
            script.write_text(b.text, encoding="utf-8")
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", b.text]
        r = subprocess.run(argv, cwd=ws, env=env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{b} failed (exit {r.returncode}):\n{b.text}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


def slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(rel):
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", read(rel), re.M)}


@pytest.mark.parametrize("rel", DOCS)
def test_relative_links_point_at_what_exists(rel):
    text = re.sub(r"```.*?```", "", read(rel), flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue                                           # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(rel), path)) if path else rel
        if not os.path.exists(os.path.join(ROOT, dest)):
            bad.append(target)
        elif anchor and dest.endswith(".md") and anchor not in headings(dest):
            bad.append(target)
    assert not bad, f"{rel}: broken links: {bad}"
