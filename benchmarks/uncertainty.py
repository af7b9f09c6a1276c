"""How honest is a deep ensemble's σ? Calibration of :class:`crysk.DeepEnsemble` on two small-data targets.

Protocol
--------
The 500-NM-Eg and 500-log10 K_VRH targets of ``tl_paper.py``, with its data
helpers: the same fixed-seed target pools, featurizer and
``RepeatedSubsample(500, 125, 125, random_state=<target index>)`` trials, so
trial *k* here has exactly the crystals of trial *k* there (at the same
``--pool-size``; its full mode uses 5,000).

Per trial, a ``DeepEnsemble`` of ``--members`` CGCNNs trained from scratch
with the Table S1 settings of ``tl_paper.py`` (its ``cgcnn`` helper: batch
64, standard target scaling, ``--epochs`` epochs, SGD lr 0.01). The members
pick their best epoch on the trial's 125 validation crystals. σ is the
standard deviation of the members' predictions (raw), and the same σ times
the factor :meth:`~crysk.DeepEnsemble.recalibrate` fits on those 125
validation crystals (recalibrated); the test crystals are used for nothing
but the scores.

Scores on the 125 test crystals of each trial, mean (std) over trials:

* MAE of the ensemble mean, and of a single network (the members' own test
  MAEs, averaged: what one would get from one of them);
* fraction of test targets within ±1σ and ±2σ (a Gaussian gives 0.683 and
  0.954), raw and recalibrated;
* Spearman rank correlation between σ and the absolute error of the mean
  (unchanged by recalibration, which rescales every σ alike);
* the recalibration factor and the mean σ.

A figure (``benchmarks/results/uncertainty[_quick].png``,
:func:`crysk.plotting.plot_calibration`) shows observed against expected
coverage over all test crystals of all trials, raw and recalibrated, one
panel per target. Tables go to ``benchmarks/results/uncertainty[_quick].md``
and per-trial rows to ``.csv``.

Commands::

    python benchmarks/uncertainty.py --quick    # 1 trial, 3 members, 5 epochs, pool 1,000: checks the pipeline
    python benchmarks/uncertainty.py            # 5 trials, 5 members, 15 epochs (~30 min of one free core)

``--n-jobs`` trains that many members at once (one process and one torch
thread each).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from _data import fill_mode_defaults
from tl_paper import RESULTS, TARGETS, Clock, cgcnn, featurize, markdown, read_records, sample

from crysk import DeepEnsemble
from crysk.evaluation import RepeatedSubsample

QUICK = dict(trials=1, epochs=5, members=3, pool_size=1000)
FULL = dict(trials=5, epochs=15, members=5, pool_size=5000)
TARGET_NAMES = ("nm-eg", "kvrh")


def within(y: np.ndarray, mean: np.ndarray, std: np.ndarray, k: float) -> float:
    """Fraction of targets inside ``mean ± k std``."""
    return float(np.mean(np.abs(y - mean) <= k * std))


def run_trial(args, graphs, y, train, val, test, seed: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, float]:
    """Fit one ensemble on a trial; its scores, the test targets, means, raw σ and recalibration factor."""
    est = cgcnn(args, n_threads=1)  # Table S1 network of tl_paper.py; one thread on these shared cores
    ens = DeepEnsemble(est, n_members=args.members, n_jobs=args.n_jobs, random_state=seed)
    t = time.perf_counter()
    ens.fit(graphs[train], y[train], X_valid=graphs[val], y_valid=y[val])
    fit_time = time.perf_counter() - t
    each = ens.predict_members(graphs[test])
    mean, raw = each.mean(axis=0), each.std(axis=0, ddof=1)
    ens.recalibrate(graphs[val], y[val])
    scale = float(ens.std_scale_)
    yt = y[test]
    err = np.abs(yt - mean)
    row = {
        "mae_ensemble": float(err.mean()),
        "mae_single": float(np.mean([np.abs(yt - p).mean() for p in each])),
        "mae_member0": float(np.abs(yt - each[0]).mean()),
        "within1_raw": within(yt, mean, raw, 1), "within2_raw": within(yt, mean, raw, 2),
        "within1_cal": within(yt, mean, scale * raw, 1), "within2_cal": within(yt, mean, scale * raw, 2),
        "spearman": float(spearmanr(raw, err).statistic),
        "scale": scale, "mean_std_raw": float(raw.mean()),
        "best_epochs": " ".join(str(m.best_epoch_) for m in ens.members_),
        "fit_time": fit_time,
    }
    return row, yt, mean, raw, scale


def summary(res: pd.DataFrame) -> list[dict]:
    """One table row per target: mean (std over trials) of each score."""
    rows = []
    for target, g in res.groupby("target", sort=False):
        spec = TARGETS[target]

        def pick(col: str) -> str:
            return f"{g[col].mean():.3f}" + (f" ({g[col].std(ddof=1):.3f})" if len(g) > 1 else "")

        rows.append({
            "Target": f"{spec['label']} ({spec['unit']})",
            "MAE ensemble": pick("mae_ensemble"), "MAE single": pick("mae_single"),
            "±1σ raw": pick("within1_raw"), "±2σ raw": pick("within2_raw"),
            "±1σ recal.": pick("within1_cal"), "±2σ recal.": pick("within2_cal"),
            "Spearman(σ, |err|)": pick("spearman"), "factor s": pick("scale"),
        })
    return rows


def figure(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crysk.plotting import plot_calibration

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 4.6), squeeze=False)
    for ax, (target, (yt, mean, raw, scale)) in zip(axes[0], curves.items()):
        plot_calibration(yt, mean, raw, ax=ax, label="raw σ")
        plot_calibration(yt, mean, scale * raw, ax=ax, label="recalibrated σ")
        ax.set_title(TARGETS[target]["label"])
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 trial, 3 members, 5 epochs, pool 1,000")
    parser.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=list(TARGET_NAMES))
    parser.add_argument("--trials", type=int, help="trials per target (quick 1, full 5)")
    parser.add_argument("--epochs", type=int, help="max epochs per member (quick 5, full 15)")
    parser.add_argument("--members", type=int, help="networks per ensemble (quick 3, full 5)")
    parser.add_argument("--pool-size", type=int, help="target pool, as tl_paper.py (quick 1000, full 5000)")
    parser.add_argument("--n-jobs", type=int, default=1, help="members trained at once (one process each)")
    parser.add_argument("--featurize-jobs", type=int, default=1, help="featurizer processes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    defaults = fill_mode_defaults(args, QUICK, FULL)
    # what tl_paper.cgcnn reads besides epochs: its full-mode batch size and target scaling of these 100-epoch runs
    args.batch_size, args.target_scaler = 64, "standard"
    changed = {k: getattr(args, k) for k in defaults if getattr(args, k) != defaults[k]}
    # a run with other settings or targets must not overwrite the table of the standard run
    suffix = ("_quick" if args.quick else "") + ("_custom" if changed else "")
    if args.targets != list(TARGET_NAMES):
        suffix += "_" + "_".join(args.targets)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    RESULTS.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    print(f"settings: {vars(args)}", flush=True)

    rows, curves = [], {}
    for target in args.targets:
        t = time.perf_counter()
        spec = TARGETS[target]
        index = list(TARGETS).index(target)
        # the pool and trials of tl_paper.py (same seeds, same featurizer)
        recs = read_records(spec["file"], spec["field"], spec["keep"])
        pool = sample(recs, max(args.pool_size, 750), seed=100 + index)
        del recs
        graphs, pool = featurize(pool, args.featurize_jobs)
        y = spec["transform"](np.array([r[spec["field"]] for r in pool], dtype=np.float64))
        clock.stage(f"{target}: read + featurize {len(pool)}", t)
        cv = RepeatedSubsample(500, 125, 125, n_trials=args.trials, random_state=index)
        pooled = []
        for trial, (train, val, test) in enumerate(cv.split_with_validation(graphs)):
            t = time.perf_counter()
            row, yt, mean, raw, scale = run_trial(args, graphs, y, train, val, test, seed=trial)
            rows.append({"target": target, "trial": trial, **row})
            pooled.append((yt, mean, raw, np.full_like(raw, scale)))
            print(f"  {target} trial {trial}: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            clock.stage(f"{target} trial {trial}", t)
        yt, mean, raw, scale = (np.concatenate(a) for a in zip(*pooled))
        # each trial's σ keeps its own trial's factor; the figure's "scale" is per crystal
        curves[target] = (yt, mean, raw, scale)

    res = pd.DataFrame(rows)
    res.to_csv(RESULTS / f"uncertainty{suffix}.csv", index=False)
    figure(curves, RESULTS / f"uncertainty{suffix}.png")
    total = time.perf_counter() - clock.start
    header = (
        f"# DeepEnsemble calibration ({'quick' if args.quick else 'full'} mode"
        + (", changed: " + ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "") + ")\n\n"
        f"{args.members} CGCNNs per ensemble (Table S1, scratch), {args.epochs} max epochs, 500 / 125 / 125, "
        f"{args.trials} trials; mean (std) over trials. Gaussian coverage: ±1σ 0.683, ±2σ 0.954. "
        "Recalibration factor fitted on each trial's validation crystals.\n"
    )
    times = clock.times_markdown(total)
    text = f"{header}\n{markdown(summary(res))}\n\nWall times:\n\n{times}\n"
    (RESULTS / f"uncertainty{suffix}.md").write_text(text, encoding="utf-8")
    print("\n" + text, flush=True)
    print(f"wrote {RESULTS / f'uncertainty{suffix}.md'}, .csv and .png; total wall time {total:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
