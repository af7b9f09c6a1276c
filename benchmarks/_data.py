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


def save_resume_point(net, path: Path, epoch: int, best_score: float) -> None:
    """Write ``net``'s weights after ``epoch`` as a point that ``fit(resume_from=path)`` continues from.

    The checkpoint's epoch is the number of epochs done and its ``best_score`` the run's best validation
    score so far, so that a resumed piece counts an epoch as the best only when it beats that score.
    """
    from crysk.checkpoints import crysk_payload, save_checkpoint
    from crysk.estimators.registry import plain_params

    payload = crysk_payload(type(net).__name__, plain_params(net), net.module_.state_dict(), net.graph_settings,
                            epoch, net._checkpoint_state())
    payload["best_score"] = best_score
    # Adam's moments too: a resumed piece then continues the run instead of restarting them from zero
    payload["optimizer_state"] = net.optimizer_.state_dict()["state"]
    save_checkpoint(path, payload)


def resume_point_class():
    """The skorch callback class that saves the resume point (:func:`save_resume_point`) after every epoch.

    ``SaveResumePoint(path)`` tracks the run's best validation score in ``best_`` (starting from the
    resumed checkpoint's, if any); subclasses add what else an epoch should do. A function, so that
    skorch is imported only by the scripts that train.
    """
    global _SaveResumePoint
    if _SaveResumePoint is None:
        import math

        from skorch.callbacks import Callback

        class SaveResumePoint(Callback):
            def __init__(self, path):
                self.path = path

            def on_train_begin(self, net, **kwargs):
                state = getattr(net, "_resume_state", None)
                self.best_ = math.inf if state is None else state.best_score

            def on_epoch_end(self, net, **kwargs):
                row = net.history[-1]
                score = float(row.get(net._monitor.removesuffix("_best"), math.nan))
                if math.isfinite(score) and score < self.best_:
                    self.best_ = score
                save_resume_point(net, Path(self.path), int(row["epoch"]), self.best_)

        _SaveResumePoint = SaveResumePoint
    return _SaveResumePoint


_SaveResumePoint = None


def fit_resumable(make, X, y, final: Path, epochs: int, name: str):
    """Fit a long pretraining run that survives interruption, and save it as ``final``.

    While training, :class:`~crysk.estimators.SaveBestCheckpoint` keeps the
    best epoch so far in ``<final>.partial.pt`` and every epoch's weights go
    to ``<final>.last.pt``. A rerun continues from the last finished epoch
    with ``fit(..., resume_from=...)``: the estimator trains only the epochs
    still to run, continues the learning-rate schedule, and replaces the
    best checkpoint only with an epoch that beats it (optimizer momentum
    starts afresh). At the end the run's best epoch (which may come from an
    earlier piece) is what is saved. An interrupted fit (skorch ends ``fit``
    quietly on Ctrl-C) exits without writing ``final``, so a partial model
    is never taken for a finished one.

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
    from crysk.checkpoints import load_checkpoint, read_weights
    from crysk.estimators import SaveBestCheckpoint

    partial = final.with_suffix(".partial.pt")
    last = final.with_suffix(".last.pt")
    final.parent.mkdir(parents=True, exist_ok=True)
    resume, done = None, 0
    # the last finished epoch when there is one; runs from before the resume point existed have the best only
    for point in (last, partial):
        if point.exists():
            resume, done = point, int(load_checkpoint(point).get("best_epoch") or 0)
            print(f"  resuming interrupted {name} from {point.name} after epoch {done}", flush=True)
            break
    model = make(max_epochs=epochs, callbacks=[("save_best", SaveBestCheckpoint(partial)),
                                               ("save_last", resume_point_class()(last))])
    model.fit(X, resume_from=resume) if y is None else model.fit(X, y, resume_from=resume)
    if len(model.history) < epochs - done:
        raise SystemExit(f"{name} interrupted after {done + len(model.history)} of {epochs} epochs; "
                         f"{last.name} and {partial.name} keep the last and the best of them: rerun to resume")
    if partial.exists():
        # the run's best epoch: this piece may not have beaten one from an earlier piece
        best = read_weights(partial)
        model.module_.load_state_dict(best.state_dict)
        model.best_epoch_ = int(best.checkpoint["best_epoch"])
    model.save_pretrained(final)
    partial.unlink(missing_ok=True)
    last.unlink(missing_ok=True)
    return model, done
