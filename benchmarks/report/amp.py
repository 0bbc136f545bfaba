"""Section 9: bf16 autocast on the CPU (benchmarks/bench_amp_cpu.py's JSON):
step time float32 vs bf16, and quality at equal steps, paired by seed."""
from __future__ import annotations

import os

from report.stored import load_stored
from report.tables import _rel, _table

COMMAND = "python benchmarks/bench_amp_cpu.py"


def amp_section(results_dir: str) -> list:
    path = os.path.join(results_dir, "bench_amp_cpu.json")
    L = ["## 9. bf16 on the CPU (`benchmarks/bench_amp_cpu.py`)\n"]
    d, missing = load_stored(path, COMMAND)
    if d is None:
        return L + [missing]
    m = d.get("model", {})
    L.append(f"The default CPU model (QRNN {m.get('nlayers')}×{m.get('nhid')}, emsize {m.get('emsize')}, "
             f"{m.get('softmax')} softmax over {m.get('vocab_size', 0):,} outputs, batch {m.get('batch')} × "
             f"{m.get('bptt')}, AdamW) on the shared Japanese corpus ({d.get('train_tokens', 0):,} training tokens), "
             f"torch {d.get('torch')}, {d.get('threads')} threads, native bf16: {d.get('cpu_bf16_feature') or 'none'} "
             f"(`{_rel(path)}`). bf16 means the forward under CPU autocast: the RNN layers in bf16 (the fo-pool kernels "
             f"accumulate in float32), the output layer and the loss in float32, float32 weights.\n")
    s = d.get("speed")
    if s:
        L.append(f"Step time (`{COMMAND} --part speed`; {s.get('rounds')} rounds of {s.get('round_steps')} steps, "
                 f"float32 and bf16 interleaved; load average {d.get('loadavg_start', [0])[0]:.1f} at the start):\n")
        L.append(_table(["", "float32", "bf16", "float32 / bf16"],
                        [["ms per step (median, wall)", f"{s['ms_per_step_median']['fp32']:.1f}",
                          f"{s['ms_per_step_median']['bf16']:.1f}", f"**{s['ratio_fp32_over_bf16']:.2f}×**"],
                         ["CPU ms per step (median)", f"{s['cpu_ms_per_step_median']['fp32']:.1f}",
                          f"{s['cpu_ms_per_step_median']['bf16']:.1f}",
                          f"{s['cpu_time_ratio_fp32_over_bf16']:.2f}×"]]) + "\n")
        if s.get("choose_amp"):
            L.append(f"The defaults rule's own short measurement in the same process: "
                     f"{s.get('measure_bf16_speedup', 0):.2f}× → `{s['choose_amp'][1]}`.\n")
    else:
        L.append(f"Step time: not measured; `{COMMAND} --part speed` adds it.\n")
    q = d.get("quality")
    if q:
        sm = q["summary"]
        run = d.get("quality_run", d)
        L.append(f"Quality at equal steps (`{COMMAND} --part quality --steps {q['steps']} --seeds {q['seeds']}`; per "
                 f"seed the same initial weights, batches and dropout draws in both modes; both evaluated in "
                 f"float32; load average {run.get('loadavg_start', [0])[0]:.1f} at the start):\n")
        rows = [[r["seed"], f"{r['fp32_valid_bpc']:.4f}", f"{r['bf16_valid_bpc']:.4f}", f"{r['diff_valid_bpc']:+.4f}",
                 f"{r['fp32_test_bpc']:.4f}", f"{r['bf16_test_bpc']:.4f}", f"{r['diff_test_bpc']:+.4f}"]
                for r in q["runs"]]
        ms = lambda k: f"{sm[k]['mean']:.4f} ± {sm[k]['sd']:.4f}"
        rows.append(["mean ± sd", ms("fp32_valid_bpc"), ms("bf16_valid_bpc"),
                     f"{sm['diff_valid_bpc']['mean']:+.4f} ± {sm['diff_valid_bpc']['sd']:.4f}",
                     ms("fp32_test_bpc"), ms("bf16_test_bpc"),
                     f"{sm['diff_test_bpc']['mean']:+.4f} ± {sm['diff_test_bpc']['sd']:.4f}"])
        L.append(_table(["seed", "valid BPC float32", "valid BPC bf16", "bf16 − float32", "test BPC float32",
                         "test BPC bf16", "bf16 − float32"], rows) + "\n")
        diff = sm["diff_test_bpc"]
        same = abs(diff["mean"]) <= 2 * max(diff["sd"], 1e-12) or abs(diff["mean"]) < 0.001
        L.append(f"- Paired difference in test BPC, bf16 − float32: {diff['mean']:+.4f} ± {diff['sd']:.4f} over "
                 f"{diff['n']} seeds, against a seed-to-seed spread of {sm['fp32_test_bpc']['sd']:.4f}: "
                 + ("no difference in quality per step." if same else "bf16 differs in quality per step.") + "\n")
    else:
        L.append(f"Quality at equal steps: not measured; `{COMMAND} --part quality` adds it.\n")
    return L
