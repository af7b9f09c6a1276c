"""One command that checks crysk on a GPU: parity with the CPU, throughput, featurizing, compiling.

Sized to finish within 5 minutes on one NVIDIA H200 with 16 CPU cores:

    python benchmarks/gpu_check.py                          # everything, on cuda
    python benchmarks/gpu_check.py --device cpu --quick     # a CPU smoke run: CUDA parts are skipped

Sections (each prints a line as it finishes, and a markdown table at the end):

1. **featurize**: all 106,113 ``mp_gap`` structures (``--quick``: 600) with
   ``--n-jobs`` processes (default: every core); structures/s.
2. **parity**: on 200 structures, a CGCNN initialised from one seed predicts
   on the CPU and on CUDA; passes when they agree within 1e-4 (eV). Then one
   training step (batch of 200, SGD, lr 0.01) on each device; passes when the
   weight updates agree within 1e-3 of the largest update (CUDA sums edges in
   another order, with atomics, so bit equality is not expected).
3. **throughput**: CGCNN at the paper's defaults (batch 256) trained on every
   featurized structure held on the device; steady graphs/s (epochs 2+) and
   peak GPU memory (on the CPU, peak RSS). Goal on the H200: 20,000 graphs/s.
4. **compiled**: the same with ``compile=True`` (``torch.compile``, dynamic
   shapes) on ``--compile-n`` structures: compile time (first epoch minus a
   steady one) and steady-state speed-up over eager. Skipped on the CPU unless
   ``--compile`` is given (compiling takes minutes on 2 cores).

Writes the results as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
from _data import data_dir, peak_rss_mb


def read_gap(limit: int | None) -> tuple[list[str], np.ndarray]:
    import gzip

    cifs, gaps = [], []
    with gzip.open(data_dir() / "mp_gap.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            cifs.append(record["cif"])
            gaps.append(record["band_gap"])
            if limit is not None and len(cifs) >= limit:
                break
    return cifs, np.array(gaps)


def cgcnn(device: str, **params):
    from crysk import CGCNNRegressor

    return CGCNNRegressor(validation_fraction=None, random_state=0, device=device, **params)


def flat_weights(model) -> np.ndarray:
    return np.concatenate([p.detach().float().cpu().numpy().ravel() for p in model.module_.parameters()])


def section_featurize(args, out: dict):
    from crysk import CrystalGraphFeaturizer

    t = time.perf_counter()
    cifs, gaps = read_gap(600 if args.quick else None)
    read = time.perf_counter() - t
    t = time.perf_counter()
    graphs, skipped = CrystalGraphFeaturizer(n_jobs=args.n_jobs, errors="skip").transform_with_skipped(
        cifs, ids=list(range(len(cifs)))
    )
    wall = time.perf_counter() - t
    out["featurize"] = {
        "structures": len(cifs), "graphs": len(graphs), "skipped": len(skipped), "n_jobs": args.n_jobs,
        "seconds": wall, "structures_per_s": len(cifs) / wall, "read_seconds": read,
    }
    print(f"[featurize] {len(cifs):,} structures with {args.n_jobs} processes in {wall:.1f} s "
          f"({len(cifs) / wall:,.0f}/s; {len(skipped)} left out; reading the file took {read:.1f} s)", flush=True)
    return graphs, gaps[np.asarray(graphs.ids, dtype=np.int64)]


def section_parity(args, graphs, y, out: dict):
    other = args.device
    if other == "cpu":
        print("[parity] SKIPPED the CPU-vs-CUDA comparison (--device cpu); running its code path CPU-vs-CPU",
              flush=True)
    g, t = graphs[:200], y[:200]
    ref = cgcnn("cpu", max_epochs=0).fit(g, t)
    dev = cgcnn(other, max_epochs=0).fit(g, t)
    pred_diff = float(np.max(np.abs(ref.predict(g) - dev.predict(g))))
    start = flat_weights(ref)
    step_ref = flat_weights(cgcnn("cpu", max_epochs=1, batch_size=200).fit(g, t)) - start
    step_dev = flat_weights(cgcnn(other, max_epochs=1, batch_size=200).fit(g, t)) - start
    step_diff = float(np.max(np.abs(step_ref - step_dev)) / np.max(np.abs(step_ref)))
    ok = pred_diff < 1e-4 and step_diff < 1e-3
    out["parity"] = {
        "devices": ["cpu", other], "max_prediction_difference": pred_diff, "prediction_tolerance": 1e-4,
        "step_difference_relative": step_diff, "step_tolerance": 1e-3, "passed": ok,
    }
    print(f"[parity] cpu vs {other}: predictions differ by {pred_diff:.2e} (tolerance 1e-4); one training step's "
          f"updates differ by {step_diff:.2e} of the largest (tolerance 1e-3): {'PASS' if ok else 'FAIL'}", flush=True)


def _train(args, graphs, y, epochs, **params) -> dict:
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    model = cgcnn(args.device, max_epochs=epochs, **params).fit(graphs, y)
    wall = time.perf_counter() - t
    durations = [row["dur"] for row in model.history]
    rates = [len(graphs) / d for d in durations]
    result = {
        "crystals": len(graphs), "epochs": epochs, "seconds": wall, "graphs_per_s_per_epoch": rates,
        "steady_graphs_per_s": float(np.mean(rates[1:])) if len(rates) > 1 else rates[0],
        "first_epoch_s": durations[0], "steady_epoch_s": float(np.mean(durations[1:])) if len(durations) > 1 else None,
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mb"] = peak_rss_mb()
    return result


def section_throughput(args, graphs, y, out: dict):
    epochs = 2 if args.quick else args.epochs
    result = _train(args, graphs, y, epochs)
    out["throughput"] = result
    memory = (f"peak GPU memory {result['peak_gpu_memory_mb']:,.0f} MB" if "peak_gpu_memory_mb" in result
              else f"peak RSS {result['peak_rss_mb']:,.0f} MB")
    print(f"[throughput] CGCNN defaults, {len(graphs):,} crystals resident on {args.device}: "
          f"{result['steady_graphs_per_s']:,.0f} graphs/s (epochs 2+; per epoch "
          f"{', '.join(f'{r:,.0f}' for r in result['graphs_per_s_per_epoch'])}); {memory}", flush=True)


def section_compiled(args, graphs, y, out: dict):
    if args.device == "cpu" and not args.compile:
        print("[compiled] SKIPPED on the CPU (pass --compile to run it; it compiles for minutes on 2 cores)",
              flush=True)
        return
    n = min(len(graphs), 300 if args.quick else args.compile_n)
    g, t = graphs[:n], y[:n]
    epochs = 3
    try:
        eager = _train(args, g, t, epochs)
        compiled = _train(args, g, t, epochs, compile=True)
    except Exception as exc:  # a missing compiler or triton: report it, keep the other sections' results
        out["compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(f"[compiled] FAILED: {out['compiled']['error'][:500]}", flush=True)
        return
    speedup = compiled["steady_graphs_per_s"] / eager["steady_graphs_per_s"]
    compile_s = compiled["first_epoch_s"] - (compiled["steady_epoch_s"] or 0.0)
    out["compiled"] = {"eager": eager, "compiled": compiled, "speedup": speedup, "compile_seconds": compile_s}
    print(f"[compiled] {n:,} crystals: eager {eager['steady_graphs_per_s']:,.0f} graphs/s, compiled "
          f"{compiled['steady_graphs_per_s']:,.0f} graphs/s ({speedup:.2f}x), compiling took ~{compile_s:.0f} s",
          flush=True)


def table(out: dict) -> str:
    rows = ["| check | result |", "|---|---|"]
    f = out.get("featurize")
    if f:
        rows.append(f"| featurize {f['structures']:,} structures, {f['n_jobs']} processes | "
                    f"{f['seconds']:.1f} s, {f['structures_per_s']:,.0f} structures/s |")
    p = out.get("parity")
    if p:
        rows.append(f"| parity {p['devices'][0]} vs {p['devices'][1]} (200 structures) | predictions "
                    f"{p['max_prediction_difference']:.1e} (< 1e-4), one step {p['step_difference_relative']:.1e} "
                    f"(< 1e-3): {'pass' if p['passed'] else 'FAIL'} |")
    t = out.get("throughput")
    if t:
        memory = (f"{t['peak_gpu_memory_mb']:,.0f} MB GPU" if "peak_gpu_memory_mb" in t else f"{t['peak_rss_mb']:,.0f} MB RSS")
        rows.append(f"| train CGCNN defaults, {t['crystals']:,} crystals resident | "
                    f"{t['steady_graphs_per_s']:,.0f} graphs/s, peak {memory} |")
    c = out.get("compiled")
    if c:
        if "error" in c:
            rows.append(f"| compiled (torch.compile) | failed: {c['error'][:200]} |")
        else:
            rows.append(f"| compiled vs eager, {c['eager']['crystals']:,} crystals | {c['speedup']:.2f}x "
                        f"({c['compiled']['steady_graphs_per_s']:,.0f} vs {c['eager']['steady_graphs_per_s']:,.0f} "
                        f"graphs/s), compile ~{c['compile_seconds']:.0f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="600 structures, short runs (a smoke test)")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the throughput run")
    parser.add_argument("--compile", action="store_true", help="run the compiled section on the CPU too")
    parser.add_argument("--compile-n", type=int, default=20_000)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"CUDA is not available (torch {torch.__version__}); rerun with --device cpu for the CPU checks",
              file=sys.stderr)
        raise SystemExit(2)
    out: dict = {"device": args.device, "torch": torch.__version__, "quick": args.quick}
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
    t0 = time.perf_counter()
    graphs, y = section_featurize(args, out)
    section_parity(args, graphs, y, out)
    section_throughput(args, graphs, y, out)
    section_compiled(args, graphs, y, out)
    out["total_seconds"] = time.perf_counter() - t0
    print(f"\n{out.get('gpu', args.device)}, torch {torch.__version__}, {out['total_seconds']:.0f} s in all\n")
    print(table(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
