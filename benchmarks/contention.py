"""Training beside busy neighbours: fit times with and without a busy process, by torch thread count.

Prints, for an 8-epoch CGCNN fit (CGCNN default widths) on Materials Project
crystals, the wall time with the machine as it is ("idle") and beside
``--busy`` processes that spin (``while True: pass``), for ``n_threads`` =
2, 1 and the default (auto: the cores not busy when the fit starts); then
``GridSearchCV`` with ``n_jobs=1`` and ``n_jobs=2``. The 1-minute load average
is printed beside every figure: on a shared machine "idle" means only that
this script starts no extra load.

Usage::

    python benchmarks/contention.py [--n 400] [--epochs 8] [--repeat 2] [--busy 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np
from _data import read_jsonl

from crysk import CGCNNRegressor, CrystalGraphFeaturizer


def _spin() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _load() -> str:
    return "%.2f" % os.getloadavg()[0]


def _time_fit(graphs, y, n_threads, epochs: int, repeat: int) -> tuple[float, str]:
    times = []
    for _ in range(repeat):
        model = CGCNNRegressor(max_epochs=epochs, batch_size=64, n_threads=n_threads, random_state=0)
        t = time.perf_counter()
        model.fit(graphs, y)
        times.append(time.perf_counter() - t)
    return statistics.median(times), _load()


def _time_grid(graphs, y, n_jobs: int, epochs: int) -> tuple[float, str]:
    from sklearn.model_selection import GridSearchCV

    grid = GridSearchCV(
        CGCNNRegressor(max_epochs=epochs, batch_size=64, random_state=0),
        {"lr": [0.01, 0.005]}, cv=2, n_jobs=n_jobs, scoring="neg_mean_absolute_error",
    )
    t = time.perf_counter()
    grid.fit(graphs, y)
    return time.perf_counter() - t, _load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="crystals (default 400)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per fit (default 8)")
    parser.add_argument("--repeat", type=int, default=2, help="fits per figure; the median is shown (default 2)")
    parser.add_argument("--busy", type=int, default=1, help="spinning processes for the busy case (default 1)")
    parser.add_argument("--no-grid", action="store_true", help="skip the GridSearchCV figures")
    args = parser.parse_args()

    records = read_jsonl("mp_eform.jsonl.gz", args.n)
    graphs = CrystalGraphFeaturizer().transform([r["cif"] for r in records])
    y = np.array([r["formation_energy_per_atom"] for r in records])
    print(f"{args.n} crystals, {args.epochs} epochs, CGCNN defaults, batch 64; {os.cpu_count()} cores; "
          f"load average at start {_load()}")
    _time_fit(graphs[:64], y[:64], -1, 1, 1)  # warm-up: first-call costs are not contention

    rows = []
    for busy in (0, args.busy):
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            time.sleep(1.0 if busy else 0.0)
            for label, n_threads in (("2 (torch default)", 2), ("1", 1), ("auto (default)", None)):
                t, load = _time_fit(graphs, y, n_threads, args.epochs, args.repeat)
                rows.append((busy, label, t, load))
                print(f"  busy={busy}  n_threads={label:<18} {t:6.2f} s  (load {load})", flush=True)
        finally:
            for p in spinners:
                p.terminate()
                p.join()

    print("\n| busy processes | n_threads | fit time (s) | 1-min load |")
    print("|---|---|---|---|")
    for busy, label, t, load in rows:
        print(f"| {busy} | {label} | {t:.2f} | {load} |")
    idle = {label: t for busy, label, t, _ in rows if busy == 0}
    ref = idle["2 (torch default)"]
    for busy, label, t, _ in rows:
        if busy:
            print(f"busy/idle(2 threads) with n_threads={label}: {t / ref:.2f}x")

    if not args.no_grid:
        print("\nGridSearchCV (2 lrs x 2 folds = 4 fits):")
        for n_jobs in (1, 2):
            t, load = _time_grid(graphs, y, n_jobs, args.epochs)
            print(f"| n_jobs={n_jobs} | {t:.2f} s | load {load} |", flush=True)


if __name__ == "__main__":
    main()
