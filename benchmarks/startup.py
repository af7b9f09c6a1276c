"""Start-up and loader figures: what a user waits for before any work.

Prints the wall time of ``python -c "import crysk"``, ``crysk --help`` and
``import crysk.featurizer`` (what a featurization worker imports), the first and
second featurizer calls with ``n_jobs=1`` and ``n_jobs=2`` on 2,000 Materials
Project crystals (structures/s), and ``load_table`` with ``nrows=300`` against
the whole file. The 1-minute load average is printed beside every figure.

Usage::

    python benchmarks/startup.py [--n 2000] [--skip-full-table]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _data import data_dir, read_jsonl


def _load() -> str:
    return "%.2f" % os.getloadavg()[0]


def _run(args: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="crystals for the featurizer figures (default 2000)")
    parser.add_argument("--skip-full-table", action="store_true", help="skip loading all of mp_eform (minutes)")
    args = parser.parse_args()
    py = sys.executable
    print("| what | seconds (best of 3) | 1-min load |\n|---|---|---|")
    for label, cmd in (
        ("python -c 'import crysk'", [py, "-c", "import crysk"]),
        ("crysk --help", [py, "-m", "crysk", "--help"]),
        ("import crysk.featurizer (worker imports)", [py, "-c", "import crysk.featurizer"]),
        ("import crysk.estimators (torch, skorch)", [py, "-c", "import crysk.estimators"]),
    ):
        print(f"| {label} | {_run(cmd):.2f} | {_load()} |", flush=True)

    from crysk import CrystalGraphFeaturizer

    cifs = [r["cif"] for r in read_jsonl("mp_eform.jsonl.gz", args.n)]
    print(f"\n| featurizer, {args.n} CIF texts | call | structures/s | 1-min load |\n|---|---|---|---|")
    for n_jobs in (1, 2):
        featurizer = CrystalGraphFeaturizer(n_jobs=n_jobs)
        for call in ("first", "second"):
            t = time.perf_counter()
            featurizer.transform(cifs)
            print(f"| n_jobs={n_jobs} | {call} | {args.n / (time.perf_counter() - t):,.0f} | {_load()} |", flush=True)

    from crysk import load_table

    path = data_dir() / "mp_eform.jsonl.gz"
    print("\n| load_table(mp_eform.jsonl.gz) | seconds | records | 1-min load |\n|---|---|---|---|")
    t = time.perf_counter()
    data = load_table(path, target_cols="formation_energy_per_atom", nrows=300)
    print(f"| nrows=300 | {time.perf_counter() - t:.2f} | {len(data)} | {_load()} |", flush=True)
    ids = list(data.ids[::10])
    t = time.perf_counter()
    data = load_table(path, target_cols="formation_energy_per_atom", ids=ids)
    print(f"| ids= (30 of the first 300) | {time.perf_counter() - t:.2f} | {len(data)} | {_load()} |", flush=True)
    if not args.skip_full_table:
        t = time.perf_counter()
        data = load_table(path, target_cols="formation_energy_per_atom", n_jobs=2)
        print(f"| all, n_jobs=2 | {time.perf_counter() - t:.2f} | {len(data)} | {_load()} |", flush=True)


if __name__ == "__main__":
    main()
