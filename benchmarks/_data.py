"""Shared helpers for the benchmark scripts: where the data is, how to read it."""

from __future__ import annotations

import gzip
import json
import math
import os
import resource
from pathlib import Path

from skorch.callbacks import Callback


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

    While training, the best epoch so far is kept in ``<final>.partial.pt``,
    with ``<final>.partial.json`` recording the epochs it holds and its
    validation score. A rerun warm-starts from it and trains only the epochs
    still to run, as the uninterrupted run would have: the learning rate
    continues the estimator's step schedule (``lr``, ``lr_milestones``,
    ``gamma``) from where the checkpoint was, and the checkpoint is replaced
    only by an epoch that beats its score, so a resumed run never swaps a
    good checkpoint for a worse one. Optimizer momentum starts afresh. An
    interrupted fit (skorch ends ``fit`` quietly on Ctrl-C) exits without
    writing ``final``, so a partial model is never taken for a finished one.

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
        The fitted estimator (holding the best epoch of the whole run) and the
        number of epochs it resumed after.
    """
    import crysk

    partial, progress = final.with_suffix(".partial.pt"), final.with_suffix(".partial.json")
    state = {"best_score": math.inf, "saved": False}

    class SaveBestCounting(Callback):
        """Checkpoint an epoch only when it beats the best score of every piece of the run."""

        def on_epoch_end(self, net, **kwargs):
            row = net.history[-1]
            score = row[net._monitor.removesuffix("_best")]
            if score < state["best_score"]:
                net.best_epoch_ = row["epoch"]
                net.save_pretrained(partial)
                state.update(best_score=float(score), saved=True)
                progress.write_text(json.dumps({"epochs_done": done + int(row["epoch"]),
                                                "best_score": float(score)}))

    final.parent.mkdir(parents=True, exist_ok=True)
    resume, done = None, 0
    if partial.exists():
        resume = partial
        if progress.exists():
            saved = json.loads(progress.read_text())
            done = int(saved["epochs_done"])
            state["best_score"] = float(saved.get("best_score", math.inf))
        print(f"  resuming interrupted {name} from {partial.name} after epoch {done} "
              f"(validation score {state['best_score']:.4f})", flush=True)
    model = make(max_epochs=max(epochs - done, 0), warm_start_from=resume,
                 callbacks=[("save_best", SaveBestCounting())])
    if done:
        # continue the step schedule of the whole run instead of restarting it
        p = model.get_params()
        milestones = list(p["lr_milestones"] or [])
        factor = p["gamma"] ** sum(m <= done for m in milestones)
        model.set_params(lr=p["lr"] * factor, lr_milestones=[m - done for m in milestones if m > done])
        if p.get("lr_transferred") is not None:
            model.set_params(lr_transferred=p["lr_transferred"] * factor)
    model.fit(X) if y is None else model.fit(X, y)
    if len(model.history) < model.max_epochs:
        raise SystemExit(f"{name} interrupted after {done + len(model.history)} of {epochs} epochs; "
                         f"{partial.name} keeps the best of them: rerun to resume")
    if not state["saved"] and partial.exists():
        # no epoch of this piece beat the earlier pieces: the checkpoint holds the run's best
        model = crysk.load(partial)
    model.save_pretrained(final)
    partial.unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    return model, done
