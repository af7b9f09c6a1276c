"""Shared helpers for the benchmark scripts: where the data is, how to read it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
from pathlib import Path


def data_dir() -> Path:
    """The shared data folder (``$CRYSK_DATA`` or ``../shared/data`` beside the repo)."""
    env = os.environ.get("CRYSK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def read_jsonl(name: str, limit: int | None = None) -> list[dict]:
    """Read up to ``limit`` records of a gzipped JSON-lines file of the data folder."""
    records = []
    with gzip.open(data_dir() / name, "rt", encoding="utf-8") as fh:
        for line in fh:
            records.append(json.loads(line))
            if limit is not None and len(records) >= limit:
                break
    return records


def ids_sha256(ids) -> str:
    """Fingerprint of a set of record ids: sha256 of the sorted ids, one per line (model cards' ``held_out``)."""
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()


def fill_mode_defaults(args, quick: dict, full: dict) -> dict:
    """Set every option of ``args`` left at None to its ``--quick`` or full-run default; return those defaults."""
    defaults = quick if args.quick else full
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return defaults


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_resumable(make, X, y, final: Path, epochs: int, name: str):
    """Fit a long pretraining run that survives interruption, and save it as ``final``.

    While training, :class:`~crysk.estimators.SaveBestCheckpoint` keeps the
    best epoch so far in ``<final>.partial.pt``. A rerun continues from it
    with ``fit(..., resume_from=...)``: the estimator trains only the epochs
    still to run, continues the learning-rate schedule, and replaces the
    checkpoint only with an epoch that beats it (optimizer momentum starts
    afresh). An interrupted fit (skorch ends ``fit`` quietly on Ctrl-C) exits
    without writing ``final``, so a partial model is never taken for a
    finished one.

    Parameters
    ----------
    make : callable
        ``make(max_epochs=..., callbacks=[...])`` returns the unfitted crysk estimator.
    X, y
        Training data (``y=None`` for an autoencoder).
    final : Path
    epochs : int
        Epochs of the whole run.
    name : str
        Shown in messages.

    Returns
    -------
    (estimator, int)
        The fitted estimator (holding the best epoch of the whole run, numbered
        over the whole run) and the number of epochs it resumed after.
    """
    from crysk.estimators import SaveBestCheckpoint
    from crysk.checkpoints import load_checkpoint

    partial = final.with_suffix(".partial.pt")
    final.parent.mkdir(parents=True, exist_ok=True)
    resume, done = None, 0
    if partial.exists():
        resume, done = partial, int(load_checkpoint(partial).get("best_epoch") or 0)
        print(f"  resuming interrupted {name} from {partial.name} after epoch {done}", flush=True)
    model = make(max_epochs=epochs, callbacks=[("save_best", SaveBestCheckpoint(partial))])
    model.fit(X, resume_from=resume) if y is None else model.fit(X, y, resume_from=resume)
    if len(model.history) < epochs - done:
        raise SystemExit(f"{name} interrupted after {done + len(model.history)} of {epochs} epochs; "
                         f"{partial.name} keeps the best of them: rerun to resume")
    model.save_pretrained(final)
    partial.unlink(missing_ok=True)
    return model, done
