"""Train the pretrained models that ship with crysk (``crysk.pretrained``), in resumable pieces.

Models (the registry in ``crysk/pretrained/__init__.py`` describes each):

=====================  ==========================================================================
``cgcnn-mp-eform``     CGCNN on the MP formation energies (``mp_eform``) except the 1,156 crystals
                       with a measured formation enthalpy (pymatgen's set: the test crystals of
                       ``dft_to_experiment.py``, which uses this model as its DFT model), 10 % held
                       out for validation (seeded), 120 epochs, lr x0.1 at epoch 80.
``cgcnn-mp-gap``       CGCNN on the training part of Matbench ``mp_gap`` fold 0
                       (``KFold(5, shuffle=True, random_state=18012019)``, the first split; 10 % of
                       it for validation); test MAE on fold 0's test part.
``cgcnn-mp-nm-gap``    The same split restricted to non-metals (``band_gap > 0.1`` eV).
``crysae-mp``          CrysAE on the unique structures of ``mp_gap`` and ``mp_eform`` (no labels).
=====================  ==========================================================================

Deduplication for ``crysae-mp``: two crystals are the same when their crystal graphs are (that is
all a CrysAE sees): the same sorted atomic numbers and the same sorted list of
(centre Z, neighbour Z, distance rounded to 0.01 Å) over the 12-nearest-neighbour graph. The first
occurrence is kept (``mp_eform`` first, then ``mp_gap``).

State (``--state-dir``, default ``$CRYSK_ZOO_DIR`` or ``benchmarks/results/zoo``; git-ignored):

* ``graphs/<file>.npz`` + ``.targets.npy``: featurized graphs, made once from the CIF text.
* ``<model>/last.pt``: the weights after the last finished epoch (the resume point); ``best.pt``:
  the best validation epoch so far; ``history.csv``: one row per epoch over all pieces;
  ``run.json``: pieces (start, command, load average; wall time and epochs when the piece ended by
  itself) and whether the run is done. The card's ``wall_time_s`` is the sum of the history's epoch
  times, which counts every piece, killed ones too.

The state folder is git-ignored and stays on its machine; ``benchmarks/carry.py save`` copies the small files
of every unshipped run (``last.pt``, ``best.pt``, ``history.csv``, ``run.json``) into the tracked
``benchmarks/carry/`` and ``benchmarks/carry.py restore`` puts them back on a fresh machine, where the next piece
resumes from them (the graphs are featurized again, about two minutes).

A piece that diverges (NaN loss, :class:`crysk.estimators.NonFiniteLossError`) goes on at once from the last
finished epoch with the learning rate halved for the rest of the run (``lr_scale`` in ``run.json`` and the
card; every divergence is listed there), at most three times. If the resumed piece fails again at the same
batch (it sees the same batches in the same order), the learning rate is not the cause and the run stops at once,
saying so (session 15: a NaN in crysk's fused CPU kernels, since fixed).

Each piece resumes after the last finished epoch (``fit(resume_from=last.pt)``: the learning-rate
schedule continues and the optimiser state comes back from ``last.pt``; the batch order starts afresh).
``--max-minutes`` stops a piece cleanly at the end of the last epoch that fits in the budget, so the run can go
on across sessions; killing the process loses at most the epoch in progress (files are replaced atomically). A run is
locked by the process training it (``<model>/lock`` holds its pid), so a second piece started while
one runs does nothing; a lock left by a dead process is taken over.

``--finalize`` copies ``best.pt`` of every finished run into ``crysk/pretrained/<model>.pt`` and
writes its model card (``<model>.json``): sha256, validation and test MAE, the 10 reference
structures with their predictions, the data and licence, epochs, commands and wall time.
Unfinished runs are refused, and so are runs whose validation score still improved by 2 % or more
over their last 20 epochs (``plateau`` in the card): nothing undertrained is shipped.

Commands::

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/pretrain_zoo.py --models cgcnn-mp-eform --max-minutes 100
    python benchmarks/pretrain_zoo.py --models cgcnn-mp-gap --device cuda          # on a GPU
    python benchmarks/pretrain_zoo.py --status                                     # where each run stands
    python benchmarks/pretrain_zoo.py --finalize --models cgcnn-mp-eform           # ship a finished run
    python benchmarks/pretrain_zoo.py --models cgcnn-mp-eform --epochs 2 --limit 300 \\
        --state-dir /tmp/zoo-smoke                                                 # smoke test
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import math
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _data import data_dir, ids_sha256, read_jsonl, resume_point_class

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "crysk" / "pretrained"
MATBENCH_SEED = 18012019

#: per model: data, estimator and run length (epochs of the whole run; ship only when all ran)
MODELS = {
    "cgcnn-mp-eform": dict(data="eform", estimator="cgcnn", epochs=120, milestones=(80,)),
    "cgcnn-mp-gap": dict(data="gap", estimator="cgcnn", epochs=120, milestones=(80,)),
    "cgcnn-mp-nm-gap": dict(data="nm-gap", estimator="cgcnn", epochs=120, milestones=(80,)),
    "crysae-mp": dict(data="union", estimator="crysae", epochs=100, milestones=(70,)),
}


# --------------------------------------------------------------------------- data
def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "n/a"


def cached_graphs(state: Path, file: str, field: str | None, limit: int | None, n_jobs: int):
    """Graphs (ids kept), targets and the data file's row of each graph; featurized once and cached."""
    from crysk import CrystalGraphFeaturizer, CrystalGraphs

    tag = file.removesuffix(".jsonl.gz") + (f"_first{limit}" if limit else "")
    path = state / "graphs" / f"{tag}.npz"
    side = path.with_suffix(".meta.npz")
    if path.exists() and side.exists():
        meta = np.load(side, allow_pickle=False)
        return CrystalGraphs.load(path), meta["targets"], meta["rows"]
    t = time.perf_counter()
    cifs, ids, targets = [], [], []
    with gzip.open(data_dir() / file, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            cifs.append(rec["cif"])
            ids.append(rec["id"])
            targets.append(np.nan if field is None else float(rec[field]))
            if limit and len(ids) >= limit:
                break
    featurizer = CrystalGraphFeaturizer(radius=8.0, max_num_nbr=12, n_jobs=n_jobs, errors="skip")
    graphs, skipped = featurizer.transform_with_skipped(cifs, ids=ids)
    for exc in skipped:
        print(f"  {file}: skipped {exc}", flush=True)
    row_of = {i: k for k, i in enumerate(ids)}
    rows = np.array([row_of[i] for i in graphs.ids], dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    graphs.save(path)
    with open(side, "wb") as fh:
        np.savez(fh, targets=np.asarray(targets)[rows], rows=rows, n_records=len(ids))
    print(f"  featurized {len(graphs)} of {len(ids)} {file} structures in {time.perf_counter() - t:.0f} s "
          f"(cached in {path})", flush=True)
    return graphs, np.asarray(targets)[rows], rows


def n_records(state: Path, file: str, limit: int | None) -> int:
    tag = file.removesuffix(".jsonl.gz") + (f"_first{limit}" if limit else "")
    return int(np.load(state / "graphs" / f"{tag}.meta.npz")["n_records"])


def matbench_fold0(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of Matbench's fold 0 training and test parts (KFold(5, shuffle, seed 18012019), first split)."""
    from sklearn.model_selection import KFold

    train, test = next(KFold(5, shuffle=True, random_state=MATBENCH_SEED).split(np.arange(n)))
    return train, test


def graph_keys(graphs) -> list[str]:
    """A fingerprint per crystal graph: sorted Z, sorted (centre Z, neighbour Z, distance to 0.01 Å)."""
    keys = []
    for i in range(len(graphs)):
        g = graphs.graph(i)
        z = np.asarray(g["atomic_numbers"], dtype=np.int64)
        edges = np.stack([z[g["source"]], z[g["target"]],
                          np.round(np.asarray(g["distances"], dtype=np.float64) * 100).astype(np.int64)], axis=1)
        edges = edges[np.lexsort(edges.T[::-1])]
        h = hashlib.sha1(np.sort(z).tobytes())
        h.update(edges.tobytes())
        keys.append(h.hexdigest())
    return keys


def experimental_ids(state: Path) -> list[str]:
    """The mp_eform ids with a measured formation enthalpy (pymatgen's set), sorted; cached in the state folder.

    ``cgcnn-mp-eform`` is trained without these crystals so that it can serve as the DFT model of
    ``dft_to_experiment.py`` (whose test crystals they are) and a user can test it against experiment.
    """
    from crysk.datasets import load_experimental_formation_enthalpy

    path = state / "graphs" / "experimental_ids.json"
    if path.exists():
        return json.loads(path.read_text())
    cifs = {r["id"]: r["cif"] for r in read_jsonl("mp_eform.jsonl.gz")}
    ids = sorted(str(i) for i in load_experimental_formation_enthalpy(cifs).ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ids))
    return ids


def held_out(model: str, state: Path) -> dict | None:
    """The crystals a model's training set leaves out on purpose (for its card), or None."""
    if MODELS[model]["data"] != "eform":
        return None
    ids = experimental_ids(state)
    return {"what": EXPERIMENTAL_HOLD_OUT, "n": len(ids),
            "ids_sha256": ids_sha256(ids), "ids": ids}


EXPERIMENTAL_HOLD_OUT = ("the mp_eform crystals with a measured formation enthalpy in pymatgen's exp_compounds set "
                         "(crysk.datasets.load_experimental_formation_enthalpy), the test crystals of "
                         "benchmarks/dft_to_experiment.py")


def dataset(model: str, state: Path, args):
    """(train graphs, train targets, test graphs, test targets, test record ids, description) of a model."""
    spec = MODELS[model]
    if spec["data"] == "eform":
        g, y, _ = cached_graphs(state, "mp_eform.jsonl.gz", "formation_energy_per_atom", args.limit, args.n_jobs)
        keep = ~np.isin(g.ids.astype(str), experimental_ids(state))
        # the held-out crystals, never trained on, are its test part (their DFT values); they are experimentally
        # known compounds, not a random draw, so their MAE need not match a random test set's
        return g[keep], y[keep], g[~keep], y[~keep], (
            f"mp_eform without the {int((~keep).sum())} crystals that have a measured formation enthalpy "
            "(pymatgen's exp_compounds set, held out for the DFT -> experiment benchmark); 10 % of the rest "
            "(seeded) for validation; test MAE on the held-out crystals' DFT values")
    if spec["data"] in ("gap", "nm-gap"):
        g, y, rows = cached_graphs(state, "mp_gap.jsonl.gz", "band_gap", args.limit, args.n_jobs)
        train_rows, test_rows = matbench_fold0(n_records(state, "mp_gap.jsonl.gz", args.limit))
        train = np.isin(rows, train_rows)
        test = np.isin(rows, test_rows)
        what = "Matbench mp_gap fold 0 (KFold(5, shuffle=True, random_state=18012019), first split)"
        if spec["data"] == "nm-gap":
            train &= y > 0.1
            test &= y > 0.1
            what += ", non-metals only (band_gap > 0.1 eV)"
        return g[train], y[train], g[test], y[test], what + "; 10 % of the training part for validation"
    # union of both files' structures, deduplicated by crystal graph
    from crysk import concatenate

    ge, _, _ = cached_graphs(state, "mp_eform.jsonl.gz", "formation_energy_per_atom", args.limit, args.n_jobs)
    gg, _, _ = cached_graphs(state, "mp_gap.jsonl.gz", "band_gap", args.limit, args.n_jobs)
    both = concatenate([ge, gg])
    key_file = state / "graphs" / f"union_keys{'_first' + str(args.limit) if args.limit else ''}.npy"
    if key_file.exists():
        keep = np.load(key_file)
    else:
        _, keep = np.unique(np.array(graph_keys(both)), return_index=True)
        keep = np.sort(keep)
        np.save(key_file, keep)
    print(f"  union: {len(keep)} unique of {len(both)} crystal graphs", flush=True)
    return both[keep], None, None, None, (
        f"the {len(keep)} unique crystal graphs of mp_eform and mp_gap (same sorted Z and same sorted "
        "(centre Z, neighbour Z, distance to 0.01 Å) edges count as one; first occurrence kept)")


# --------------------------------------------------------------------------- training
def make_estimator(model: str, args, callbacks):
    spec = MODELS[model]
    epochs = args.epochs or spec["epochs"]
    common = dict(lr_milestones=spec["milestones"], max_epochs=epochs, validation_fraction=0.1, device=args.device,
                  random_state=0, callbacks=callbacks, n_threads=args.n_threads)
    if spec["estimator"] == "cgcnn":
        from crysk import CGCNNRegressor

        # the CGCNN code's / TL paper's pretraining settings (Table S1), the papers' batch size
        return CGCNNRegressor(atom_fea_len=64, n_conv=3, h_fea_len=128, n_h=1, lr=0.01, optimizer="sgd",
                              batch_size=256, target_scaler="standard", **common)
    from crysk import CrysAE

    return CrysAE(atom_fea_len=64, n_conv=3, lr=0.003, optimizer="adam", batch_size=512, **common)


def epoch_callback(run_dir: Path, deadline: float | None):
    """A skorch callback: save the resume point, log each epoch, stop before the time budget runs out."""

    class ZooEpoch(resume_point_class()):
        def on_epoch_end(self, net, **kwargs):
            # the resume point: this epoch's weights, numbered over the whole run, with the run's best score
            super().on_epoch_end(net, **kwargs)
            row = net.history[-1]
            key = net._monitor.removesuffix("_best")
            score = float(row.get(key, math.nan))
            epoch = int(row["epoch"])
            lr = float(net.optimizer_.param_groups[0]["lr"])
            new = not (run_dir / "history.csv").exists()
            with open(run_dir / "history.csv", "a", newline="") as fh:
                w = csv.writer(fh)
                if new:
                    w.writerow(["epoch", "train_loss", key, "best_so_far", "lr", "seconds", "load_avg", "utc"])
                w.writerow([epoch, f"{row['train_loss']:.6g}", f"{score:.6g}", f"{self.best_:.6g}", f"{lr:g}",
                            f"{row['dur']:.1f}", load_avg(), datetime.now(timezone.utc).isoformat(timespec="seconds")])
            import torch

            print(f"  epoch {epoch}: train loss {row['train_loss']:.4f}, {key} {score:.4f} (best {self.best_:.4f}), "
                  f"{row['dur']:.0f} s, {torch.get_num_threads()} threads, load {load_avg()}", flush=True)
            if deadline is not None and time.time() + 1.2 * row["dur"] > deadline:
                print("  time budget reached: stopping after this epoch (resume point saved)", flush=True)
                raise KeyboardInterrupt  # skorch ends fit quietly on it

    return ZooEpoch(run_dir / "last.pt")


def read_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {"pieces": [], "done": False, "epochs_done": 0}


def write_run(run_dir: Path, run: dict) -> None:
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=1, default=str))
    tmp.replace(run_dir / "run.json")


def take_lock(run_dir: Path) -> bool:
    """Claim the run for this process (``run_dir/lock`` holds its pid); False if a live process holds it.

    Two pieces writing the same ``last.pt``/``history.csv`` would corrupt the run; a lock left by a
    process that died is taken over.
    """
    lock = run_dir / "lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)  # raises if no such process
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale
                continue
            except PermissionError:
                pass  # alive, another user's
            print(f"{run_dir.name}: another process (pid {lock.read_text().strip()}) is training it; "
                  f"not starting a second piece", flush=True)
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def train(model: str, state: Path, args, deadline: float | None) -> None:
    run_dir = state / model
    run_dir.mkdir(parents=True, exist_ok=True)
    if not take_lock(run_dir):
        return
    try:
        _train(model, run_dir, state, args, deadline)
    finally:
        (run_dir / "lock").unlink(missing_ok=True)


#: a diverged run (NaN loss) resumes from its last finished epoch with the learning rate times this ...
DIVERGENCE_LR_FACTOR = 0.5
#: ... at most this many times
MAX_DIVERGENCES = 3


def _train(model: str, run_dir: Path, state: Path, args, deadline: float | None) -> None:
    from crysk.checkpoints import load_checkpoint
    from crysk.estimators import NonFiniteLossError, SaveBestCheckpoint

    run = read_run(run_dir)
    epochs = args.epochs or MODELS[model]["epochs"]
    if run.get("done") and run.get("epochs_done", 0) >= epochs:
        print(f"{model}: finished ({run['epochs_done']} epochs); --finalize ships it", flush=True)
        return
    print(f"{model}: preparing data", flush=True)
    X, y, _, _, what = dataset(model, state, args)
    print(f"{model}: {len(X)} training crystals ({what})", flush=True)
    resume, prior_best, done = None, math.inf, 0
    if (run_dir / "last.pt").exists():
        last = load_checkpoint(run_dir / "last.pt")
        resume, done = run_dir / "last.pt", int(last["best_epoch"])
        prior_best = float(last.get("best_score") or math.inf)
        print(f"{model}: resuming after epoch {done} of {epochs} (best validation score so far {prior_best:.4f})",
              flush=True)
    if done >= epochs:
        run.update(done=True, epochs_done=done, epochs_total=epochs)
        write_run(run_dir, run)
        return
    callbacks = [("save_best", SaveBestCheckpoint(run_dir / "best.pt")),
                 ("zoo_epoch", epoch_callback(run_dir, deadline))]
    est = make_estimator(model, args, callbacks)
    lr_scale = float(run.get("lr_scale", 1.0))
    est.set_params(lr=est.lr * lr_scale)
    piece = {"start_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "after_epoch": done,
             "load_avg_start": load_avg(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
             "device": args.device, "torch_threads": None, "lr": est.lr}
    t = time.perf_counter()
    if deadline is not None and time.time() > deadline:
        print(f"{model}: no time left in this piece", flush=True)
        return
    import torch

    from crysk.nn import cpu_kernels

    piece["torch_threads"] = torch.get_num_threads()
    piece["cpu_kernels"] = cpu_kernels.enabled()  # crysk's fused C++ kernels: speed only, same function
    # recorded before training, so that a piece that is killed (not stopped by its time budget) still lists
    # its command; its epochs and their times are in history.csv either way
    run["pieces"].append(piece)
    write_run(run_dir, run)
    try:
        est.fit(X, resume_from=resume) if y is None else est.fit(X, y, resume_from=resume)
    except NonFiniteLossError as exc:
        # an unattended run that diverges goes on from its last finished epoch at half the learning rate
        # (the whole schedule scaled), at most MAX_DIVERGENCES times; the card lists every divergence
        run.setdefault("divergences", []).append(
            {"epoch": exc.epoch, "batch": exc.batch, "lr": exc.lr, "lr_scale_before": lr_scale,
             "utc": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        run["lr_scale"] = lr_scale * DIVERGENCE_LR_FACTOR
        piece.update(wall_s=round(time.perf_counter() - t, 1), diverged=str(exc), load_avg_end=load_avg())
        write_run(run_dir, run)
        kept = (f"the resume point after the last good epoch is {run_dir / 'last.pt'}"
                if (run_dir / "last.pt").exists() else "no epoch had finished")
        where = [(d["epoch"], d["batch"]) for d in run["divergences"]]
        if len(where) > 1 and where[-1] == where[-2]:
            # a resumed piece sees the same batches in the same order: a NaN at the same batch at half the lr
            # comes from that batch's data or from the arithmetic (session 15: the fused CPU kernels), so
            # lowering the lr again would only waste the retries
            raise SystemExit(
                f"{model}: the same batch (epoch {exc.epoch}, batch {exc.batch}) gave a NaN again at half the "
                f"learning rate, so the learning rate is not the cause: look at that batch's crystals and at the "
                f"arithmetic (e.g. run once with CRYSK_CPU_KERNELS unset to rule out crysk's fused CPU kernels); "
                f"{kept}") from exc
        if len(run["divergences"]) > MAX_DIVERGENCES:
            raise SystemExit(f"{model}: diverged {len(run['divergences'])} times (last: {exc}); stopping: "
                             f"{kept}") from exc
        print(f"{model}: {exc}\n{model}: going on from the last finished epoch with the learning rate x "
              f"{run['lr_scale']:g}", flush=True)
        return _train(model, run_dir, state, args, deadline)
    last_epoch = int(load_checkpoint(run_dir / "last.pt")["best_epoch"]) if (run_dir / "last.pt").exists() else done
    piece.update(wall_s=round(time.perf_counter() - t, 1), epochs=last_epoch - done, until_epoch=last_epoch,
                 load_avg_end=load_avg())
    run.update(epochs_done=last_epoch, epochs_total=epochs, done=last_epoch >= epochs, settings=vars(args))
    write_run(run_dir, run)
    print(f"{model}: {'finished' if run['done'] else 'paused'} after epoch {last_epoch} of {epochs} "
          f"({piece['wall_s']:.0f} s this piece)", flush=True)


# --------------------------------------------------------------------------- finalize
def reference_records(model: str, test_ids: list[str] | None, n: int = 10) -> list[dict]:
    """Ten records whose CIF text and predictions go into the model card (seeded pick)."""
    spec = MODELS[model]
    file = "mp_eform.jsonl.gz" if spec["data"] in ("eform", "union") else "mp_gap.jsonl.gz"
    wanted = None
    if test_ids is not None:
        # min: a --limit smoke run may hold fewer test crystals than that
        pick = np.random.default_rng(0).choice(len(test_ids), min(n, len(test_ids)), replace=False)
        wanted = {test_ids[i] for i in pick}
    out = []
    with gzip.open(data_dir() / file, "rt", encoding="utf-8") as fh:
        for k, line in enumerate(fh):
            if wanted is None and k % 3671 != 0:  # spread over the file
                continue
            rec = json.loads(line)
            if wanted is None or rec["id"] in wanted:
                out.append({"id": rec["id"], "cif": rec["cif"]})
            if len(out) == n:
                break
    return out


PLATEAU_WINDOW, PLATEAU_TOLERANCE = 20, 0.02


def plateau_check(scores: list[float]) -> dict:
    """Whether the validation score has plateaued: its last ``PLATEAU_WINDOW`` epochs improved the
    best score before them by less than ``PLATEAU_TOLERANCE`` (relative)."""
    before, last = scores[:-PLATEAU_WINDOW], scores[-PLATEAU_WINDOW:]
    if not before:
        return {"window": PLATEAU_WINDOW, "improvement": None, "plateaued": False}  # too short to tell
    improvement = max(0.0, (min(before) - min(last)) / abs(min(before)))
    return {"window": PLATEAU_WINDOW, "improvement": improvement, "plateaued": improvement < PLATEAU_TOLERANCE}


def training_time(hist: list[dict], run: dict) -> tuple[float, str]:
    """The run's training time: the sum of its epochs' times in ``history.csv``, and a note saying so.

    The history has one row per finished epoch whichever way each piece ended; a piece's own wall time
    is known only when it ended by itself (time budget or last epoch), not when it was killed.
    """
    seconds = {int(r["epoch"]): float(r["seconds"]) for r in hist}  # a repeated epoch counts once (its last run)
    timed = [p for p in run["pieces"] if "wall_s" in p]
    note = (f"sum of the {len(seconds)} epochs' times in the run's history.csv "
            f"({hist[0]['utc']} to {hist[-1]['utc']}); {len(run['pieces'])} pieces recorded, "
            f"{len(timed)} of them with their own wall time ({sum(p['wall_s'] for p in timed):.0f} s, which "
            "includes data preparation)")
    return round(sum(seconds.values()), 1), note


def finalize(model: str, state: Path, args) -> None:
    import crysk
    from crysk import CrystalGraphFeaturizer
    from crysk.checkpoints import file_sha256
    from crysk.pretrained import PLANNED

    run_dir = state / model
    run = read_run(run_dir)
    if not run.get("done"):
        raise SystemExit(f"{model}: not finished ({run.get('epochs_done', 0)} of "
                         f"{run.get('epochs_total', MODELS[model]['epochs'])} epochs): refusing to ship it")
    hist = list(csv.DictReader(open(run_dir / "history.csv")))
    key = [k for k in hist[0] if k.startswith("valid_")][0]
    best_row = min(hist, key=lambda r: float(r[key]))
    plateau = plateau_check([float(r[key]) for r in hist])
    if not plateau["plateaued"] and not args.force:
        how = ("has too few epochs to tell" if plateau["improvement"] is None
               else f"still improved by {plateau['improvement']:.1%}")
        raise SystemExit(f"{model}: validation {key} {how} over the last {plateau['window']} epochs: not "
                         "plateaued, refusing to ship it (train longer with --epochs, or --force)")
    wall, wall_note = training_time(hist, run)
    est = crysk.load(run_dir / "best.pt")
    X, y, X_test, y_test, what = dataset(model, state, args)
    test_mae = None
    if X_test is not None:
        test_mae = float(np.mean(np.abs(est.predict(X_test) - y_test)))
    refs = reference_records(model, None if X_test is None else list(X_test.ids))
    graphs = CrystalGraphFeaturizer(radius=8.0, max_num_nbr=12).transform([r["cif"] for r in refs])
    outputs = est.predict(graphs) if hasattr(est, "predict") and MODELS[model]["estimator"] != "crysae" \
        else est.transform(graphs)
    package = args.package_dir
    package.mkdir(parents=True, exist_ok=True)
    target = package / f"{model}.pt"
    shutil.copyfile(run_dir / "best.pt", target)
    size = target.stat().st_size
    card = dict(PLANNED[model])
    card.update(
        name=model,
        file=target.name,
        sha256=file_sha256(target),
        size_bytes=size,
        crysk_version=crysk.__version__,
        split=what,
        n_train_crystals=len(X),
        epochs=int(run["epochs_done"]),
        best_epoch=int(best_row["epoch"]),
        validation_metric=key,
        # regressors: the best epoch's validation MAE; CrysAE: its total reconstruction loss
        validation_mae=float(best_row[key]) if key == "valid_mae" else None,
        validation_loss=None if key == "valid_mae" else float(best_row[key]),
        test_mae=test_mae,
        n_test_crystals=None if X_test is None else len(X_test),
        training_commands=list(dict.fromkeys(p["command"] for p in run["pieces"])),
        wall_time_s=wall,
        wall_time_note=wall_note,
        pieces=len(run["pieces"]),
        device=sorted({p["device"] for p in run["pieces"]}),
        trained_utc=run["pieces"][-1]["start_utc"],
        held_out=held_out(model, state),
        plateau=plateau,
        # NaN losses the run recovered from (each resumed at a lower learning rate) and the final lr scale
        divergences=run.get("divergences", []),
        # NaNs whose cause was found and fixed in crysk (each with its "cause"), after which the run went on
        # from its last good epoch at the unchanged learning rate
        divergences_fixed=run.get("divergences_fixed", []),
        lr_scale=float(run.get("lr_scale", 1.0)),
        reference={"ids": [r["id"] for r in refs], "cif": [r["cif"] for r in refs],
                   "outputs": np.asarray(outputs, dtype=np.float64).tolist()},
    )
    (package / f"{model}.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    print(f"{model}: shipped {target} ({size} bytes, sha256 {card['sha256'][:12]}...), validation {key} "
          f"{float(best_row[key]):.4f}, test MAE {test_mae}", flush=True)
    if size > 1_100_000:
        print(f"  warning: {target.name} is {size} bytes, above the ~1 MB a shipped model should take", flush=True)


def status(state: Path) -> None:
    """Where each run stands: epochs finished (from its per-epoch history), pieces, wall time, best score."""
    for model in MODELS:
        run = read_run(state / model)
        hist_path = state / model / "history.csv"
        rows = list(csv.DictReader(open(hist_path))) if hist_path.exists() else []
        done = int(rows[-1]["epoch"]) if rows else 0
        best = f", best validation {float(rows[-1]['best_so_far']):.4f}" if rows else ""
        wall = sum(float(r["seconds"]) for r in rows)
        print(f"{model}: {done} of {run.get('epochs_total', MODELS[model]['epochs'])} epochs{best}, "
              f"{len(run['pieces'])} pieces, {wall / 3600:.2f} h of epochs, "
              f"{'done' if run.get('done') else 'not done'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop cleanly after the last epoch that fits in this budget (resume later)")
    parser.add_argument("--finalize", action="store_true", help="ship finished runs into crysk/pretrained/")
    parser.add_argument("--status", action="store_true", help="print where each run stands")
    parser.add_argument("--force", action="store_true",
                        help="--finalize even when validation has not plateaued (the card records it)")
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("CRYSK_ZOO_DIR", ROOT / "benchmarks" / "results" / "zoo")))
    parser.add_argument("--package-dir", type=Path, default=PACKAGE_DIR,
                        help="where --finalize writes <model>.pt and .json (default crysk/pretrained; another folder "
                             "works through $CRYSK_PRETRAINED_DIRS)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the whole run (default per model)")
    parser.add_argument("--limit", type=int, default=None, help="first N records of each file only (smoke tests)")
    parser.add_argument("--n-jobs", type=int, default=1, help="featurizer processes")
    parser.add_argument("--n-threads", type=int, default=None,
                        help="torch threads for training (default: the estimators' automatic choice, the cores "
                             "free at each epoch, at most torch's setting); pin it for a run that should own the cores")
    args = parser.parse_args()
    state = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if args.status:
        status(state)
        return 0
    if args.finalize:
        for model in args.models:
            finalize(model, state, args)
        return 0
    deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
    print(f"pretrain_zoo: {args.models}, state in {state}, load {load_avg()}", flush=True)
    for model in args.models:
        train(model, state, args, deadline)
        if deadline is not None and time.time() > deadline:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
