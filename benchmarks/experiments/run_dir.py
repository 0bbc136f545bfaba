"""Read what train.py writes into its run directory: ``results.json`` and
``metrics.jsonl``.  The experiments read these files only, never train.py's
console output.

The fields read (train.py's run-directory contract):

- ``results.json``: ``step``, ``parameters``, ``tokens_per_second`` (target
  tokens over training time), ``train_seconds``, ``valid_seconds``,
  ``stop_reason``, and ``test`` / ``valid`` with ``loss``, ``ppl``, ``bpc``;
- ``metrics.jsonl``: one JSON object a line; validation rows (``"split":
  "valid"``) carry ``step``, ``bpc``, ``loss`` and ``train_seconds`` (training
  time so far, validations and checkpoint saves left out); rows with
  ``"final": true`` are the end-of-run scores, not points of the curve.

A missing file or field raises ``RunFormatError`` with one sentence naming
it (the runner records it as the step's failure).
"""
from __future__ import annotations

import json
import os


class RunFormatError(ValueError):
    """A run directory lacks a file or a field the experiments read."""


def _need(row: dict, key: str, where: str):
    if key not in row:
        raise RunFormatError(f"{where} has no '{key}' field (written by an older train.py); update the checkout "
                             "and rerun the step with --redo NAME.")
    return row[key]


def read_results(run_dir: str) -> dict:
    """``RUN/results.json`` as a dict."""
    path = os.path.join(run_dir, "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        raise RunFormatError(f"{path} is missing; train.py did not finish this run: rerun the step.") from None
    except json.JSONDecodeError as e:
        raise RunFormatError(f"{path} is not valid JSON ({e}); rerun the step.") from None


def read_metrics(run_dir: str) -> list:
    """The rows of ``RUN/metrics.jsonl``."""
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        raise RunFormatError(f"{path} is missing; train.py did not finish this run: rerun the step.") from None
    except json.JSONDecodeError as e:
        raise RunFormatError(f"{path} has a line that is not JSON ({e}); rerun the step.") from None


def validations(rows: list) -> list:
    """The validation rows of a run, end-of-run scores left out."""
    return [x for x in rows if x.get("split") == "valid" and not x.get("final")]


def learning_curve(rows: list, where: str = "metrics.jsonl") -> list:
    """Validation BPC against training minutes (validations and checkpoint
    saves left out), one point per validated step (two validations at one
    step, nothing trained between them: the later one)."""
    points = {}
    for x in validations(rows):
        row = f"a validation row of {where}"
        points[_need(x, "step", row)] = {"step": x["step"], "minutes": _need(x, "train_seconds", row) / 60,
                                         "valid_bpc": _need(x, "bpc", row)}
    return [points[k] for k in sorted(points)]


def best_step(rows: list, last_step: int) -> int:
    """Step of the weights train.py evaluated at the end (its best.pt: the best
    validation loss; the last step when there was no validation)."""
    val = validations(rows)
    return min(val, key=lambda x: (x["loss"], x["step"]))["step"] if val else last_step


def read_run(run_dir: str) -> dict:
    """What the experiments keep of one finished train.py run: steps, test and
    validation BPC, parameter count, training tokens per second, training and
    validation seconds, why it stopped, the learning curve and the step of
    the evaluated weights."""
    res = read_results(run_dir)
    rows = read_metrics(run_dir)
    where = os.path.join(run_dir, "results.json")
    test = _need(res, "test", where)
    step = _need(res, "step", where)
    return {"steps": step, "test_bpc": _need(test, "bpc", where + " ('test')"),
            "test_ppl": _need(test, "ppl", where + " ('test')"),
            "valid_bpc": res.get("valid", {}).get("bpc"),
            "params": _need(res, "parameters", where),
            "tokens_per_s": _need(res, "tokens_per_second", where),
            "train_seconds": _need(res, "train_seconds", where),
            "valid_seconds": _need(res, "valid_seconds", where),
            "stop_reason": _need(res, "stop_reason", where),
            "curve": learning_curve(rows, os.path.join(run_dir, "metrics.jsonl")),
            "best_step": best_step(rows, step),
            "timing": "train.py"}  # tokens/s and curve minutes measured by train.py itself
