"""Carry the resume points of long benchmark runs from one machine to the next, through git.

The pretraining runs behind ``crysk.pretrained`` and the DFT -> experiment table take longer than one
working session on 2 CPU cores, and their state lives in git-ignored folders (``benchmarks/results/``,
``$CRYSK_ZOO_DIR``) that a fresh machine does not have. This script copies the small files a run needs
to go on into ``benchmarks/carry/`` (tracked) and back:

* every ``pretrain_zoo.py`` run that is not shipped yet: ``last.pt`` (weights and optimiser state of the
  last finished epoch, the resume point), ``best.pt``, ``history.csv``, ``run.json``;
* the DFT models of ``dft_to_experiment.py`` (``benchmarks/results/pretrained/dft2exp_*.pt``, finished or
  partial, with their ``.last.pt`` resume points until the model is finished);
* the fit caches of the comparisons (``benchmarks/results/*_fits.csv``: one row per finished fit).

Featurized graphs are not carried: ``pretrain_zoo.py`` makes them again from ``../shared/data`` in about
two minutes. A file is copied only when it differs; ``restore`` never replaces a newer local file.

Commands::

    python benchmarks/carry.py save       # before the session ends: then git add benchmarks/carry && commit
    python benchmarks/carry.py restore    # on a fresh machine, before resuming the runs
    python benchmarks/carry.py status     # what is carried, and what is local
    python benchmarks/carry.py drop crysae-mp   # once a run is shipped (its files leave the carry folder)
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "benchmarks" / "carry"
RESULTS = ROOT / "benchmarks" / "results"
ZOO_FILES = ("last.pt", "best.pt", "history.csv", "run.json")


def zoo_dir() -> Path:
    """Where ``pretrain_zoo.py`` keeps its state (its own default)."""
    return Path(os.environ.get("CRYSK_ZOO_DIR", RESULTS / "zoo")).resolve()


def shipped(model: str) -> bool:
    return (ROOT / "crysk" / "pretrained" / f"{model}.pt").is_file()


def pairs() -> list[tuple[Path, Path]]:
    """(local file, carried file) for everything that is carried, from either side."""
    out: dict[Path, Path] = {}
    zoo = zoo_dir()
    models = {p.name for p in zoo.iterdir() if p.is_dir() and p.name != "graphs"} if zoo.is_dir() else set()
    models |= {p.name for p in (CARRY / "zoo").iterdir() if p.is_dir()} if (CARRY / "zoo").is_dir() else set()
    for model in sorted(models):
        if shipped(model):
            continue  # its run is over: the package holds the model, the card its history
        for name in ZOO_FILES:
            out[zoo / model / name] = CARRY / "zoo" / model / name
    for pattern, sub in (("pretrained/dft2exp_*.pt", "pretrained"), ("*_fits.csv", "")):
        local = {p.name for p in RESULTS.glob(pattern)}
        local |= {p.name for p in (CARRY / "results" / sub).glob(Path(pattern).name)}
        for name in sorted(local):
            out[RESULTS / sub / name] = CARRY / "results" / sub / name
    return sorted(out.items())


def copy(src: Path, dst: Path) -> bool:
    """Copy ``src`` over ``dst`` atomically when they differ; True when something was copied."""
    if not src.is_file() or (dst.is_file() and filecmp.cmp(src, dst, shallow=False)):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["save", "restore", "status", "drop"])
    parser.add_argument("names", nargs="*", help="drop: the zoo runs or result files to stop carrying")
    args = parser.parse_args()
    if args.action == "drop":
        for name in args.names:
            for path in (CARRY / "zoo" / name, *CARRY.glob(f"results/**/{name}")):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
                print(f"dropped {path}")
        return 0
    n = 0
    for local, carried in pairs():
        if args.action == "status":
            state = ("same" if local.is_file() and carried.is_file() and filecmp.cmp(local, carried, shallow=False)
                     else "local only" if not carried.is_file() else "carried only" if not local.is_file()
                     else "differ")
            print(f"{state:12s} {carried}")
        elif args.action == "save":
            n += copy(local, carried)
            # a finished DFT model replaces its resume points (fit_resumable deletes them locally)
            finished = local.with_name(local.name.replace(".partial.pt", ".pt").replace(".last.pt", ".pt"))
            if finished != local and finished.is_file() and carried.is_file():
                carried.unlink()
                print(f"dropped {carried} ({finished.name} is finished)")
        elif not local.is_file() or carried.stat().st_mtime > local.stat().st_mtime:
            n += copy(carried, local)
    if args.action != "status":
        where = f"to {CARRY}" if args.action == "save" else f"from {CARRY}"
        print(f"{args.action}: {n} file(s) copied {where} (zoo state in {zoo_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
