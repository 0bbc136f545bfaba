"""Sections 6-9 of docs/RESULTS.md are read off the benchmark JSON files
(tiny ones written here), and name the command that writes a missing one."""
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from report.amp import amp_section  # noqa: E402
from report.contents import anchor, contents  # noqa: E402
from report.gpu import gpu_section  # noqa: E402
from report.kernels import cpu_kernel_section  # noqa: E402
from report.pipeline import pipeline_section  # noqa: E402


def write(path, d):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f)


def fo_row(T, B, H, dtype, fwd, bwd, fwdbwd, copy, unbind=None):
    """A bench_fo_pool.py row; the shares of ``copy`` GB/s follow from the
    times as the benchmark computes them."""
    n, es = T * B * H, {"float32": 4, "bfloat16": 2}[dtype]
    r = {"T": T, "B": B, "H": H, "dtype": dtype, "n": n, "kernel_fwd_ms": fwd, "kernel_bwd_ms": bwd,
         "fused_fwd_ms": 2 * fwd, "fused_bwd_ms": 2 * bwd, "kernel_fwdbwd_ms": fwdbwd}
    for k, passes in (("kernel_fwd", 3), ("kernel_bwd", 6), ("fused_fwd", 5), ("fused_bwd", 8)):
        r[k + "_pct_copy"] = 100 * passes * n * es / (r[k + "_ms"] / 1e3) / 1e9 / copy
    if unbind:
        r.update(unbind_fwdbwd_ms=unbind, reference_fwdbwd_ms=2 * unbind,
                 speedup_fwdbwd_vs_unbind=unbind / fwdbwd, speedup_fwdbwd_vs_reference=2 * unbind / fwdbwd)
    return r


def fo_run(device, copy, rows, **kw):
    return dict({"benchmark": "fo_pool", "date": "2026-01-02T03:04:05+00:00", "device": device,
                 "device_name": "Test CPU" if device == "cpu" else "Test GPU", "torch": "9.9", "threads": 2,
                 "cpu_count": 2, "cpu_avx2_fma": True, "QRNN_LM_CPU_BASELINE": None, "copy_GBs": copy,
                 "repeats": 9, "rows": rows}, **kw)


def test_cpu_kernel_section_reads_every_run(tmp_path):
    # 128*32*512 float32 elements, 9 passes at 10 GB/s: 7.55 ms of memory floor
    write(tmp_path / "fo_pool_cpu_1.json", fo_run("cpu", 10.0, [fo_row(128, 32, 512, "float32", 2.0, 4.0, 8.0,
                                                                      10.0, unbind=24.0)]))
    write(tmp_path / "fo_pool_cpu_2.json", fo_run("cpu", 10.0, [fo_row(128, 32, 512, "float32", 2.0, 4.0, 6.0,
                                                                      10.0, unbind=24.0),
                                                               fo_row(64, 8, 256, "bfloat16", 1.0, 1.0, 3.0,
                                                                      10.0)], repeats=5))
    text = "\n".join(cpu_kernel_section(str(tmp_path)))
    assert text.startswith("## 6. CPU fo-pooling kernels, run by run")
    # the command is rebuilt from the JSON's fields; --no-slow where no float32 row timed the loops
    assert ("`python benchmarks/bench_fo_pool.py --threads 2 --shapes 128x32x512 64x8x256 --dtypes float32 "
            "bfloat16 --repeats 5`") in text
    assert "| 1 | 10.0 | 128×32×512 | float32 | 2.00 (126%) | 4.00 (126%) | 4.00 (105%) | 8.00 (84%) | 8.00 | " \
           "7.55 | 1.06× | 3.0× | 6.0× |" in text
    # 64*8*256 bfloat16: forward 3n * 2 bytes in 1 ms = 0.79 GB/s = 8% of 10 GB/s; floor 9n * 2 bytes: 0.24 ms
    assert "| 2 | 10.0 | 64×8×256 | bfloat16 | 1.00 (8%) | 1.00 (16%) | 2.00 (7%) | 2.00 (10%) | 3.00 | 0.24 | " \
           "12.72× | – | – |" in text
    assert ("- 128×32×512 float32, 2 threads, 2 runs: forward+backward 6.00–8.00 ms, 3.0–4.0× faster than the "
            "`unbind` loop, 6.0–8.0× the reference loop, 0.79–1.06× the floor.") in text
    assert "No stored run measured the portable" in text and "QRNN_LM_CPU_BASELINE=1" in text
    # a run of the portable kernel: its command says so, and the note goes
    write(tmp_path / "fo_pool_cpu_3.json", fo_run("cpu", 10.0, [fo_row(128, 32, 512, "float32", 2.0, 4.0, 8.0, 10.0)],
                                                  QRNN_LM_CPU_BASELINE="1"))
    text = "\n".join(cpu_kernel_section(str(tmp_path)))
    assert "kernel: portable (QRNN_LM_CPU_BASELINE): `QRNN_LM_CPU_BASELINE=1 python benchmarks/bench_fo_pool.py " \
           "--threads 2 --shapes 128x32x512 --dtypes float32 --repeats 9 --no-slow`" in text
    assert "No stored run measured the portable" not in text


def test_gpu_section_reads_its_folder(tmp_path):
    gpu = tmp_path / "gpu_test_20260102"
    # 64*512*1024 float32 forward: 3n * 4 bytes in 0.12 ms = 3355 GB/s = 84% of 4000 GB/s
    write(gpu / "bench_fo_pool_cuda.json", fo_run("cuda", 4000.0, [
        fo_row(64, 512, 1024, "float32", 0.12, 0.24, 0.33, 4000.0, unbind=33.0),
        fo_row(64, 512, 1024, "bfloat16", 0.12, 0.24, 0.33, 4000.0),
        fo_row(128, 64, 512, "float32", 0.05, 0.05, 0.2, 4000.0, unbind=2.0)], threads=None, inner_calls_per_run=10))
    rnn = {"meta": {"device": "cuda", "device_name": "Test GPU", "hidden": 320, "input": "tensor", "threads": 16,
                    "date": "2026-01-02", "command": "python benchmarks/bench_rnn.py --device cuda --quick"},
           "results": [{"batch": b, "length": n, "speedup_fwd": s, "speedup_fwdbwd": s + 1,
                        "qrnn_over_matmul_fwdbwd": 1.5} for b, n, s in ((8, 32, 2.0), (256, 512, 10.0))]}
    write(gpu / "bench_rnn_cuda_quick.json", rnn)
    write(gpu / "train_torchrun_bf16_results.json", {"step": 5000, "valid": {"ppl": 21.0, "bpc": 2.5},
                                                     "test": {"ppl": 19.0, "bpc": 2.6, "tokens": 59338}})
    text = "\n".join(gpu_section(str(tmp_path), str(tmp_path / "docs")))
    assert "### `" in text and "gpu_test_20260102/`" in text
    assert "`python benchmarks/bench_fo_pool.py --device cuda --shapes 64x512x1024 128x64x512 --dtypes float32 " \
           "bfloat16 --repeats 9 --inner 10`" in text
    assert "| 64×512×1024 | 524,288 | float32 | 84% | 84% | 70% | 56% | 100× |" in text
    assert "| 64×512×1024 | 524,288 | bfloat16 | 42% | 42% | 35% | 28% | – |" in text
    assert "| 128×64×512 | 32,768 | float32 | 25% | 50% | 21% | 34% | 10× |" in text
    assert "- Shapes with at least 131,072 columns: float32 forward 84%, backward 84%; bfloat16 forward 42%, " \
           "backward 42%." in text
    assert "- Shapes with fewer columns: float32 forward 25%, backward 50%." in text
    assert "- Forward+backward through autograd: 10–100× faster than the `unbind` loop." in text
    assert "batch 8–256 × length 32–512: the QRNN layer's forward+backward is 3.0–11.0× faster" in text
    assert "thread" not in text   # CPU threads say nothing of a GPU run
    assert "| 5,000 | 21.00 | 2.5000 | 19.00 | 2.6000 | 59,338 |" in text
    assert "README" not in text      # the folder has none to link


def test_pipeline_section_reads_prepare_and_wiki_json(tmp_path):
    write(tmp_path / "bench_prepare.json", {
        "machine": "x86_64", "cpus": 2, "load_avg_start": 1.0, "load_avg_end": 2.0, "lines": 100, "characters": 5000,
        "tokens": 3000, "tokens_per_s_workers1": 1000.0, "cpu_seconds_workers1": 3.0,
        "tokens_per_s_workers2": 1500.0, "cpu_seconds_workers2": 2.5, "prepare_train_tokens": 123456,
        "prepare_seconds": 15.71, "prepare_phases": ["  1.0s train: ...", " 15.7s done"]})
    row = {"dump": "full", "file": ".xml.bz2", "sample": 50, "xml_mb": 40.0, "pages": 1000, "articles_written": 20,
           "cpu_seconds": 8.0, "pages_per_cpu_s": 125.0, "xml_mb_per_cpu_s": 5.0, "xml_mb_per_s": 1.0,
           "peak_rss_mb": 77.3}
    write(tmp_path / "wiki_extract.json", {"date": "2026-01-02", "cpu": "x86_64", "cores": 2, "python": "3.11",
                                           "mwparserfromhell": "0.7", "mwparserfromhell_c_tokenizer": True,
                                           "rows": [row, dict(row, dump="quarter", xml_mb=10.0, sample=1,
                                                              xml_mb_per_cpu_s=0.75, peak_rss_mb=76.9)]})
    text = "\n".join(pipeline_section(str(tmp_path)))
    assert "`python benchmarks/bench_prepare.py --lines 100 --workers 2`" in text
    assert "| 1 | 1,000 | 3.00 | 1,000 |" in text and "| 2 | 1,500 | 2.50 | 1,200 |" in text
    assert "took **15.7 s** of wall time" in text and "```\n1.0s train: ...\n15.7s done\n```" in text
    assert "`python benchmarks/bench_wiki.py --mb 40`" in text
    assert "| full | `.xml.bz2` | `--sample 50` | 40.0 | 1,000 | 20 | 8.0 | 125 | 5.00 | 1.00 | 77 |" in text
    assert "- Peak RSS 77 MB for dumps of 10 and 40 MB of XML" in text
    assert "- Every article: 0.75 MB of XML per CPU second" in text
    assert "10 GB of uncompressed XML at that rate take about 33 CPU minutes." in text


def test_missing_or_broken_json_names_the_command(tmp_path):
    empty = str(tmp_path)
    assert "`python benchmarks/bench_fo_pool.py` writes one." in "\n".join(cpu_kernel_section(empty))
    assert "`python benchmarks/bench_rnn.py --quick --threads 1` writes the JSON" in \
        "\n".join(cpu_kernel_section(empty))
    assert "`OUT=dir bash benchmarks/gpu_check.sh` on a machine with a GPU" in "\n".join(gpu_section(empty))
    text = "\n".join(pipeline_section(empty))
    assert "bench_prepare.json` does not exist; `python benchmarks/bench_prepare.py` writes it." in text
    assert "wiki_extract.json` does not exist; `python benchmarks/bench_wiki.py` writes it." in text
    # a GPU folder with no files, and a JSON file that is not JSON
    os.makedirs(tmp_path / "gpu_x")
    (tmp_path / "bench_prepare.json").write_text("{", encoding="utf-8")
    (tmp_path / "fo_pool_cpu_1.json").write_text("", encoding="utf-8")
    text = "\n".join(gpu_section(empty))
    assert "bench_fo_pool_cuda.json` does not exist; `python benchmarks/bench_fo_pool.py --device cuda` writes it" \
           in text
    assert "`python benchmarks/bench_rnn.py --device cuda --quick` writes the JSON" in text
    assert "train_torchrun_bf16_results.json` does not exist; `torchrun --standalone" in text
    assert "cannot be read" in "\n".join(pipeline_section(empty))
    text = "\n".join(cpu_kernel_section(empty))
    assert "fo_pool_cpu_1.json` cannot be read" in text and "run `python benchmarks/bench_fo_pool.py` again" in text


def test_contents_links_every_section():
    assert anchor("## What a budget buys (`benchmarks/bench_budget.py`)") == \
        "what-a-budget-buys-benchmarksbench_budgetpy"          # docs/TRAINING.md links to it
    assert anchor("## 1. Rare words at a 40% vocabulary") == "1-rare-words-at-a-40-vocabulary"
    lines = contents(["## Setup\n", "text\n## 6. CPU fo-pooling kernels, run by run\n", "### not listed\n"])
    assert lines == ["Contents:\n", "- [Setup](#setup)",
                     "- [6. CPU fo-pooling kernels, run by run](#6-cpu-fo-pooling-kernels-run-by-run)", ""]


def test_cli_results_dir(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import render_results as R
    committed = os.path.join(REPO, "benchmarks", "results", "experiments.json")
    out = tmp_path / "R.md"
    assert R.main(["--json", committed, "--results-dir", str(tmp_path / "none"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --results-dir") and "Traceback" not in err and not out.exists()
    (tmp_path / "empty").mkdir()
    assert R.main(["--json", committed, "--results-dir", str(tmp_path / "empty"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "- [7. GPU runs](#7-gpu-runs)" in text
    for cmd in ("python benchmarks/bench_fo_pool.py", "OUT=dir bash benchmarks/gpu_check.sh",
                "python benchmarks/bench_prepare.py", "python benchmarks/bench_wiki.py"):
        assert f"`{cmd}` " in text, cmd
    assert text.index("## 5. Rare-word schemes") < text.index("## 6. CPU") < text.index("## 7. GPU") \
        < text.index("## 8. Data preparation") < text.index("## Regenerate")


def amp_run(diffs):
    runs = [{"seed": i + 1, "fp32_valid_bpc": 3.0 + 0.01 * i, "bf16_valid_bpc": 3.0 + 0.01 * i + d,
             "diff_valid_bpc": d, "fp32_test_bpc": 3.1 + 0.01 * i, "bf16_test_bpc": 3.1 + 0.01 * i + d,
             "diff_test_bpc": d} for i, d in enumerate(diffs)]
    import statistics
    summary = {k: {"mean": statistics.mean(r[k] for r in runs), "sd": statistics.stdev(r[k] for r in runs),
                   "n": len(runs)} for k in runs[0] if k.endswith("bpc")}
    return {"model": {"nlayers": 2, "nhid": 256, "emsize": 128, "softmax": "adaptive", "vocab_size": 5079,
                      "batch": 32, "bptt": 35}, "train_tokens": 1000, "torch": "9.9", "threads": 2,
            "cpu_bf16_feature": "AMX", "loadavg_start": [0.1, 0, 0],
            "speed": {"rounds": 6, "round_steps": 20, "ms_per_step_median": {"fp32": 30.0, "bf16": 20.0},
                      "ratio_fp32_over_bf16": 1.5, "cpu_ms_per_step_median": {"fp32": 60.0, "bf16": 40.0},
                      "cpu_time_ratio_fp32_over_bf16": 1.5, "measure_bf16_speedup": 1.4,
                      "choose_amp": ["bf16", "bf16: CPU has AMX and a bf16 step measured 1.40x faster"]},
            "quality": {"steps": 600, "seeds": len(runs), "runs": runs, "summary": summary}}


def test_amp_section_reads_speed_and_paired_quality(tmp_path):
    write(tmp_path / "bench_amp_cpu.json", amp_run([0.0002, -0.0001, 0.0002]))
    text = "\n".join(amp_section(str(tmp_path)))
    assert text.startswith("## 9. bf16 on the CPU")
    assert "| ms per step (median, wall) | 30.0 | 20.0 | **1.50×** |" in text
    assert "`python benchmarks/bench_amp_cpu.py --part quality --steps 600 --seeds 3`" in text
    assert "| 2 | 3.0100 | 3.0099 | -0.0001 |" in text
    assert "no difference in quality per step" in text
    # a paired difference far outside its spread is reported as a difference
    write(tmp_path / "bench_amp_cpu.json", amp_run([0.05, 0.051, 0.049]))
    assert "bf16 differs in quality per step" in "\n".join(amp_section(str(tmp_path)))
    # a missing part names the command that adds it; a missing file names the benchmark
    d = amp_run([0.0, 0.0, 0.0])
    d["quality"] = None
    write(tmp_path / "bench_amp_cpu.json", d)
    assert "`python benchmarks/bench_amp_cpu.py --part quality` adds it" in "\n".join(amp_section(str(tmp_path)))
    os.remove(tmp_path / "bench_amp_cpu.json")
    assert "`python benchmarks/bench_amp_cpu.py` writes it" in "\n".join(amp_section(str(tmp_path)))


def test_pipeline_runs_are_read_off_every_bench_pipeline_file(tmp_path):
    row = lambda s, cpu, anon: {"seconds": s, "cpu_seconds": cpu, "xml_mb_per_s": 1000 / s,
                                "xml_mb_per_cpu_s": 1000 / cpu, "max_process_rss_mb": 300, "peak_tree_rss_mb": 500,
                                "peak_tree_anon_rss_mb": anon, "stage_share": {"extract+tokenize train": 0.97}}
    write(tmp_path / "bench_pipeline_1024mb.json", {
        "size_mb_asked": 1024, "date": "2026-01-02 03:04", "cores": 2, "load_average_at_start": [0.2, 0, 0],
        "dump": {"xml_bytes": 1.0e9, "articles": 10, "redirects": 2, "other_ns": 1}, "settings": "defaults",
        "identical_outputs": True, "note": "",
        "runs": {"multistream": {"1": row(1000, 990, 250), "2": row(550, 1050, 400), "speedup_2_vs_1": 1000 / 550,
                                 "scaling_efficiency": 1000 / 550 / 2}},
        "projection": {"jawiki_xml_mb": 17000, "model": "T(k)", "hours_8_cores": 1.5, "hours_16_cores": 0.8,
                       "assumptions": ["a", "b"]}})
    text = "\n".join(pipeline_section(str(tmp_path)))
    assert "`python benchmarks/bench_pipeline.py --size-mb 1024`" in text
    assert "- multistream: `--workers 2` is 1.82× as fast as `--workers 1` (scaling efficiency 0.91)." in text
    assert "| multistream | 2 | 550 | 1050 | 1.82 | 0.95 | 300 | 500 | 400 | – | – / – / – | – | 97% |" in text
    assert "**1.5 h on 8 cores, 0.8 h on 16 cores**" in text
    assert "What grows with the dump" not in text     # older files: no stage memory, no types
    # newer files: the prepare process's memory by stage, the types, the tree's Pss; sizes side by side
    grown = dict(row(2000, 4000, 900), peak_tree_pss_mb=450, train_types=500_000,
                 main_process_peak_anon_mb={"extract+tokenize train": 200, "vocabulary": 380, "ids (train, valid, test)": 370})
    write(tmp_path / "bench_pipeline_4096mb.json", {
        "size_mb_asked": 4096, "workers_asked": "2", "forms_asked": "multistream", "date": "2026-01-02 05:06",
        "cores": 2, "load_average_at_start": [0.2, 0, 0], "dump": {"xml_bytes": 4.0e9}, "settings": "defaults",
        "identical_outputs": True, "runs": {"multistream": {"2": grown}}})
    small = dict(row(550, 1050, 400), peak_tree_pss_mb=300, train_types=100_000,
                 main_process_peak_anon_mb={"extract+tokenize train": 90, "vocabulary": 100, "ids (train, valid, test)": 150})
    data = json.load(open(tmp_path / "bench_pipeline_1024mb.json"))
    data["runs"]["multistream"]["2"] = small
    write(tmp_path / "bench_pipeline_1024mb.json", data)
    text = "\n".join(pipeline_section(str(tmp_path)))
    assert "`python benchmarks/bench_pipeline.py --size-mb 4096 --workers 2 --forms multistream`" in text
    assert "| multistream | 2 | 2000 | 4000 | 0.50 | 0.25 | 300 | 500 | 900 | 450 | 200 / 380 / 370 | 500,000 | 97% |" in text
    growth = text[text.index("### What grows with the dump"):]
    assert growth.index("| 1,000 | 2 | 100,000 | 150 | 400 | 300 |") < growth.index("| 4,000 | 2 | 500,000 | 380 | 900 | 450 |")
    os.remove(tmp_path / "bench_pipeline_4096mb.json")
    os.remove(tmp_path / "bench_pipeline_1024mb.json")
    assert "no `benchmarks/results/bench_pipeline*.json`" in "\n".join(pipeline_section(str(tmp_path)))
