"""Featurize a million structures to disk, then train from the memory map and from RAM.

Stage ``featurize`` streams ``mp_gap.jsonl.gz`` (106,113 structures) round and
round until ``--n`` structures are read (each pass's copies are the same
crystals: the cost per structure is the real one, the data are not new), and
featurizes them with :func:`crysk.featurize_to_disk` into a graph store. It
reports structures/s, the store's size, and the peak resident memory of the
process and of the whole process tree (sampled with psutil when installed,
so the featurizing workers count too).

Stages ``train-mmap`` and ``train-ram`` train CGCNNRegressor at the CGCNN
defaults for ``--epochs`` epochs on the first ``--train-n`` crystals of the
store, once gathering batches from the memory map and once from a copy in
memory, and report graphs/s and peak RSS (split into anonymous memory and
file pages of the map, which the kernel can drop).

Each stage runs in its own process so that peak RSS belongs to it:

    python benchmarks/scale.py --n 1000000 --store /tmp/crysk-1M      # all three stages
    python benchmarks/scale.py --stage featurize --n 20000 --store /tmp/s
    python benchmarks/scale.py --stage train-mmap --store /tmp/s --train-n 10000

An interrupted featurize stage resumes from its finished chunks when rerun.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from _data import data_dir, peak_rss_mb


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024.0
    except (OSError, StopIteration):
        return float("nan")


class TreePeak:
    """Peak summed RSS of this process and its children, sampled every ``interval`` s (needs psutil)."""

    def __init__(self, interval: float = 0.5):
        self.peak_mb = float("nan")
        self._stop = threading.Event()
        try:
            import psutil
        except ImportError:
            self._thread = None
            return
        me = psutil.Process()

        def sample():
            peak = 0.0
            while not self._stop.wait(interval):
                total = 0
                for p in [me, *me.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total / 2**20)
                self.peak_mb = peak

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak_mb


def cif_stream(n: int):
    """CIF text of ``mp_gap.jsonl.gz``, pass after pass, ``n`` in all (read lazily)."""
    import gzip
    import json

    def one_pass():
        with gzip.open(data_dir() / "mp_gap.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["cif"]

    return itertools.islice(itertools.chain.from_iterable(one_pass() for _ in itertools.count()), n)


def band_gaps() -> np.ndarray:
    """The 106,113 band gaps, without keeping the CIF text in memory."""
    import gzip
    import json

    with gzip.open(data_dir() / "mp_gap.jsonl.gz", "rt", encoding="utf-8") as fh:
        return np.array([json.loads(line)["band_gap"] for line in fh])


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def stage_featurize(args) -> None:
    from crysk import CrystalGraphFeaturizer, featurize_to_disk
    from crysk.store import is_store

    # chunks an interrupted run left are skipped, so only the rest counts towards this run's rate
    kept_dir = Path(args.store) / "_chunks"
    kept = sum(1 for c in kept_dir.glob("chunk-*") if is_store(c)) if kept_dir.is_dir() else 0
    todo = max(0, args.n - kept * args.chunk_size)
    tree = TreePeak()
    t = time.perf_counter()
    graphs = featurize_to_disk(
        cif_stream(args.n),
        args.store,
        chunk_size=args.chunk_size,
        featurizer=CrystalGraphFeaturizer(n_jobs=args.n_jobs, errors="skip"),
        verbose=args.verbose,
    )
    wall = time.perf_counter() - t
    tree_peak = tree.stop()
    print(f"featurized {args.n:,} inputs -> {len(graphs):,} graphs in {wall:,.0f} s "
          f"({todo / wall:,.0f} structures/s over the {todo:,} this run featurized, {kept} chunk(s) kept from an "
          f"earlier run; n_jobs={args.n_jobs}, chunk_size={args.chunk_size:,})")
    print(f"store: {args.store} ({du_mb(Path(args.store)):,.0f} MB on disk, "
          f"{len(graphs.atomic_numbers):,} atoms, {len(graphs.neighbors):,} edges)")
    print(f"peak RSS: main process {peak_rss_mb():,.0f} MB; process tree (main + workers) {tree_peak:,.0f} MB")


def stage_train(args, mapped: bool) -> None:
    import torch

    from crysk import CGCNNRegressor, CrystalGraphs

    warnings.simplefilter("ignore")
    gaps = band_gaps()
    store = CrystalGraphs.load(args.store, mmap=True)
    graphs = store[: args.train_n]  # a slice of a map is still a map
    if not mapped:
        graphs = graphs.take(np.arange(len(graphs)))  # a copy in memory
    y = gaps[np.asarray(graphs.ids, dtype=np.int64) % len(gaps)]
    before = _status_mb("VmRSS")
    model = CGCNNRegressor(max_epochs=args.epochs, validation_fraction=None, random_state=0, device=args.device)
    t = time.perf_counter()
    model.fit(graphs, y)
    wall = time.perf_counter() - t
    rates = [len(graphs) / row["dur"] for row in model.history]
    kind = "memory map" if mapped else "RAM"
    print(f"train from {kind}: {len(graphs):,} crystals, {args.epochs} epoch(s) in {wall:,.1f} s, "
          f"graphs/s per epoch: {', '.join(f'{r:,.0f}' for r in rates)} ({torch.get_num_threads()} threads)")
    print(f"  RSS before fit {before:,.0f} MB; peak RSS {peak_rss_mb():,.0f} MB; at the end anonymous "
          f"{_status_mb('RssAnon'):,.0f} MB + file pages {_status_mb('RssFile'):,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", "featurize", "train-mmap", "train-ram"], default="all")
    parser.add_argument("--n", type=int, default=1_000_000, help="structures to featurize")
    parser.add_argument("--store", default="/tmp/crysk-scale-store", help="graph store directory")
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--train-n", type=int, default=20_000, help="crystals to train on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards (stage all)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.stage == "featurize":
        return stage_featurize(args)
    if args.stage.startswith("train"):
        return stage_train(args, mapped=args.stage == "train-mmap")
    base = [sys.executable, __file__, "--store", args.store, "--n", str(args.n), "--chunk-size", str(args.chunk_size),
            "--n-jobs", str(args.n_jobs), "--train-n", str(args.train_n), "--epochs", str(args.epochs),
            "--device", args.device] + (["--verbose"] if args.verbose else [])
    for stage in ("featurize", "train-mmap", "train-ram"):
        sys.stdout.flush()
        subprocess.run([*base, "--stage", stage], check=True)
    if not args.keep:
        shutil.rmtree(args.store, ignore_errors=True)


if __name__ == "__main__":
    main()
