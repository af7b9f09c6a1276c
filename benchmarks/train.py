"""Steady-state CGCNN training throughput and peak memory.

Trains CGCNNRegressor at the CGCNN defaults (batch 256, atom_fea_len 64,
n_conv 3, h_fea_len 128) on the first N band gaps of ``mp_gap.jsonl.gz`` and
prints graphs/s per epoch (training only, validation off) and the peak RSS.
Run one size per process so peak RSS belongs to that size:

    python benchmarks/train.py --n 2000
    python benchmarks/train.py --n 10000
    python benchmarks/train.py --n 10000 --device cuda --epochs 5
    python benchmarks/train.py --n 2000 --no-malloc-tuning    # glibc's own malloc settings
    python benchmarks/train.py --n 10000 --compile            # torch.compile (dynamic shapes)
    python benchmarks/train.py --n 10000 --cpu-kernels        # crysk's fused C++ kernels (crysk.nn.cpu_kernels)
    torchrun --nproc_per_node 2 benchmarks/train.py --crystals 10000 --n-jobs 1  # data-parallel

Under ``torchrun`` every process featurizes the crystals itself and takes
``batch_size / world size`` of each global batch (global batch 256 by
default, as in one process); rank 0 prints, graphs/s counting the whole
training set per epoch.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
from _data import peak_rss_mb, read_jsonl

from crysk import CGCNNRegressor, CrystalGraphFeaturizer


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB (NaN where /proc is missing)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024.0
    except (OSError, StopIteration):
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", "--crystals", dest="n", type=int, default=2000,
                        help="crystals (--crystals under torchrun, whose own options take --n)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--no-malloc-tuning", action="store_true", help="fit with malloc_tuning=False (glibc's own malloc settings)"
    )
    parser.add_argument("--compile", action="store_true", help="fit with compile=True (torch.compile)")
    parser.add_argument("--cpu-kernels", action="store_true",
                        help="train with crysk's fused C++ CPU kernels (built first, outside the timing)")
    args = parser.parse_args()
    build = 0.0
    if args.cpu_kernels:
        from crysk.nn import cpu_kernels

        t = time.perf_counter()
        cpu_kernels.enable()
        build = time.perf_counter() - t
    warnings.simplefilter("ignore")
    world = 1
    if "RANK" in os.environ:  # launched by torchrun
        dist.init_process_group("gloo")
        world = dist.get_world_size()
    rank = dist.get_rank() if world > 1 else 0

    records = read_jsonl("mp_gap.jsonl.gz", args.n)
    y = np.array([r["band_gap"] for r in records])
    t = time.perf_counter()
    feat = CrystalGraphFeaturizer(n_jobs=args.n_jobs, errors="skip")
    graphs, skipped = feat.transform_with_skipped([r["cif"] for r in records], ids=list(range(len(records))))
    featurize = time.perf_counter() - t
    y = y[graphs.ids.astype(int)]  # structures left out (isolated atoms) lose their targets too
    del records
    before_fit = current_rss_mb()
    model = CGCNNRegressor(
        max_epochs=args.epochs,
        validation_fraction=None,
        batch_size=args.batch_size // world,
        device=args.device,
        malloc_tuning=not args.no_malloc_tuning,
        random_state=0,
        compile=args.compile,
    )
    model.fit(graphs, y)
    if rank == 0:
        report(args, graphs, skipped, model, featurize, before_fit, world, build)
    if world > 1:
        dist.destroy_process_group()


def report(args, graphs, skipped, model, featurize: float, before_fit: float, world: int, build: float) -> None:
    """Print the run's figures (rank 0 only under torchrun)."""
    if args.cpu_kernels:
        print(f"crysk CPU kernels: on (built or loaded from the cache in {build:.1f} s)")
    durations = [row["dur"] for row in model.history]
    rates = [len(graphs) / d for d in durations]
    steady = float(np.mean(rates[1:])) if len(rates) > 1 else rates[0]
    if world > 1:
        print(f"data-parallel: {world} processes, {args.batch_size // world} crystals each per step")
    print(f"device: {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else f'{torch.get_num_threads()} CPU threads'})")
    print(f"crystals: {len(graphs)} ({len(skipped)} left out), featurized in {featurize:.1f} s")
    print("graphs/s per epoch: " + ", ".join(f"{r:,.0f}" for r in rates))
    print(f"steady state (epochs 2+): {steady:,.0f} graphs/s")
    if args.compile and len(durations) > 1:
        # the first epoch pays the compilation (and the warm-up both runs pay)
        print(f"compiled: first epoch {durations[0]:.1f} s vs {np.mean(durations[1:]):.1f} s later "
              f"(compilation ~{durations[0] - np.mean(durations[1:]):.0f} s)")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB (RSS before training: {before_fit:,.0f} MB); "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB")


if __name__ == "__main__":
    main()
