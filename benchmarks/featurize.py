"""Featurization throughput and memory of CrystalGraphFeaturizer.

Prints structures/s (wall clock, and per CPU-second of the process for
``n_jobs=1``, which busy neighbours on a shared machine distort less) and bytes per structure for the first N structures of
``mp_gap.jsonl.gz``, from CIF text and from pymatgen ``Structure`` objects, with
``n_jobs=1`` and ``n_jobs=2``.

    python benchmarks/featurize.py                 # 1k, 10k and all 106k
    python benchmarks/featurize.py --sizes 1000    # quick look
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from _data import peak_rss_mb, read_jsonl

from crysk import CrystalGraphFeaturizer, as_structure
from crysk.structures import CIF_PARSER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 106113])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    load0 = os.getloadavg()
    records = read_jsonl("mp_gap.jsonl.gz", max(args.sizes))
    rows = []
    for n in args.sizes:
        cifs = [r["cif"] for r in records[:n]]
        for n_jobs in args.jobs:
            feat = CrystalGraphFeaturizer(n_jobs=n_jobs, errors="skip")
            t, c = time.perf_counter(), time.process_time()
            graphs, skipped = feat.transform_with_skipped(cifs)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            rows.append(("CIF text", len(cifs), n_jobs, len(cifs) / dt, _cpu_rate(n, n_jobs, dc), graphs.nbytes / len(graphs), len(skipped)))
            print(*rows[-1], flush=True)
        t = time.perf_counter()
        structures = [as_structure(c, validate=False) for c in cifs]
        parse = time.perf_counter() - t
        print(f"(parsing {n} CIFs into pymatgen Structures with as_structure, CIF reader {CIF_PARSER}: {n / parse:.0f} structures/s)", flush=True)
        for n_jobs in args.jobs:
            feat = CrystalGraphFeaturizer(n_jobs=n_jobs, errors="skip")
            t, c = time.perf_counter(), time.process_time()
            graphs, skipped = feat.transform_with_skipped(structures)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            rows.append(("Structure", n, n_jobs, n / dt, _cpu_rate(n, n_jobs, dc), graphs.nbytes / len(graphs), len(skipped)))
            print(*rows[-1], flush=True)
        del structures
    print()
    print(f"load average before/after: {load0} / {os.getloadavg()}")
    print("| input | structures | n_jobs | structures/s | structures per CPU-second | bytes/structure | left out (isolated atoms etc.) |")
    print("|---|---|---|---|---|---|---|")
    for src, n, j, rate, cpu_rate, nbytes, skipped in rows:
        print(f"| {src} | {n} | {j} | {rate:,.0f} | {cpu_rate} | {nbytes:,.0f} | {skipped} |")
    print(f"\npeak RSS of this process: {peak_rss_mb():,.0f} MB")


def _cpu_rate(n: int, n_jobs: int, cpu_seconds: float) -> str:
    # CPU time of this process: the rate that busy neighbours on a shared
    # machine do not distort; meaningful only without worker processes
    return f"{n / cpu_seconds:,.0f}" if n_jobs == 1 else "-"


if __name__ == "__main__":
    main()
