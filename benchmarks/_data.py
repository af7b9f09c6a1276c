"""Shared helpers for the benchmark scripts: where the data is, how to read it."""

from __future__ import annotations

import gzip
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_resumable(make, X, y, final: Path, epochs: int, name: str):
    """Fit a long pretraining run that survives interruption, and save it as ``final``.

    While training, the best epoch so far is kept in ``<final>.partial.pt``
    (with ``<final>.partial.json`` counting the epochs it holds); a rerun
    warm-starts from it and trains only the epochs still to run (optimizer
    momentum starts afresh). An interrupted fit (skorch ends ``fit`` quietly
    on Ctrl-C) exits without writing ``final``, so a partial model is never
    taken for a finished one.

    Parameters
    ----------
    make : callable
        ``make(max_epochs=..., warm_start_from=..., callbacks=[...])`` returns
        the unfitted crysk estimator.
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
        The fitted estimator and the number of epochs it resumed after.
    """
    from crysk.estimators import SaveBestCheckpoint

    partial, progress = final.with_suffix(".partial.pt"), final.with_suffix(".partial.json")

    class SaveBestCounting(SaveBestCheckpoint):
        def on_epoch_end(self, net, **kwargs):
            before = net.best_epoch_
            super().on_epoch_end(net, **kwargs)
            if net.best_epoch_ != before:  # a checkpoint was written
                progress.write_text(json.dumps({"epochs_done": done + int(net.best_epoch_)}))

    final.parent.mkdir(parents=True, exist_ok=True)
    resume, done = None, 0
    if partial.exists():
        resume = partial
        done = json.loads(progress.read_text())["epochs_done"] if progress.exists() else 0
        print(f"  resuming interrupted {name} from {partial.name} after epoch {done}", flush=True)
    model = make(max_epochs=max(epochs - done, 0), warm_start_from=resume,
                 callbacks=[("save_best", SaveBestCounting(partial))])
    model.fit(X) if y is None else model.fit(X, y)
    if len(model.history) < model.max_epochs:
        raise SystemExit(f"{name} interrupted after {done + len(model.history)} of {epochs} epochs; "
                         f"{partial.name} keeps the best epoch so far: rerun to resume")
    model.save_pretrained(final)
    partial.unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    return model, done
