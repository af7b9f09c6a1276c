"""Digesting a compare table: paired t-tests, mean (std) summaries, Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["PairedTTestResult", "markdown_table", "paired_ttest", "summarize"]


@dataclass(frozen=True)
class PairedTTestResult:
    """Outcome of :func:`paired_ttest`.

    Parameters
    ----------
    statistic : float
        t statistic of ``a - b`` (negative when ``a`` has the smaller metric).
    pvalue : float
        Two-sided p-value.
    mean_difference : float
        Mean over trials of ``a - b``.
    n_trials : int
        Number of paired trials.
    """

    statistic: float
    pvalue: float
    mean_difference: float
    n_trials: int


def _per_trial(results: pd.DataFrame, name: str, metric: str) -> pd.Series:
    rows = results[results["estimator"] == name]
    if rows.empty:
        raise ValueError(f"no results for estimator {name!r}; known: {list(pd.unique(results['estimator']))}")
    if rows["trial"].duplicated().any():
        raise ValueError(f"estimator {name!r} has several rows per trial; pass one compare() table")
    return rows.set_index("trial")[metric]


def paired_ttest(results: pd.DataFrame, a: str, b: str, metric: str = "test_mae") -> PairedTTestResult:
    """Paired t-test of two estimators' per-trial scores (the TL-CGCNN paper's test).

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`compare`.
    a, b : str
        Estimator names.
    metric : str, default="test_mae"
        Column of the :func:`compare` table to compare.

    Returns
    -------
    PairedTTestResult
        From ``scipy.stats.ttest_rel`` on the values of the trials both
        estimators ran.

    Raises
    ------
    ValueError
        If an estimator is missing, the trials do not match, or fewer than
        two trials are shared.
    """
    from scipy.stats import ttest_rel

    if metric not in results.columns:
        raise ValueError(f"no column {metric!r} in the results; columns are {list(results.columns)}")
    va, vb = _per_trial(results, a, metric), _per_trial(results, b, metric)
    if set(va.index) != set(vb.index):
        raise ValueError(
            f"{a!r} and {b!r} ran different trials ({sorted(va.index)} vs {sorted(vb.index)}); "
            "compare them on the same splits (one compare() call)"
        )
    if len(va) < 2:
        raise ValueError(f"a paired t-test needs at least 2 trials, got {len(va)}")
    vb = vb.loc[va.index]
    test = ttest_rel(va.to_numpy(), vb.to_numpy())
    return PairedTTestResult(
        float(test.statistic), float(test.pvalue), float((va - vb).mean()), len(va)
    )


_DEFAULT_METRICS = ("train_mae", "val_mae", "test_mae", "fit_time")


def summarize(results: pd.DataFrame, metrics: Sequence[str] = _DEFAULT_METRICS) -> pd.DataFrame:
    """Mean and standard deviation over trials, per estimator.

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`compare`.
    metrics : sequence of str
        Columns to summarize (missing or all-NaN ones are left out).

    Returns
    -------
    pandas.DataFrame
        Indexed by estimator, with columns ``<metric>_mean`` and
        ``<metric>_std`` (sample standard deviation, ``ddof=1``, as in the
        paper's tables) and ``n_trials``.
    """
    metrics = [m for m in metrics if m in results.columns and results[m].notna().any()]
    grouped = results.groupby("estimator", observed=True, sort=True)
    out = pd.DataFrame(index=grouped.size().index)
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=1)
    out["n_trials"] = grouped.size()
    return out


def markdown_table(
    results: pd.DataFrame, metrics: Sequence[str] = ("train_mae", "test_mae"), digits: int = 3
) -> str:
    """A Markdown table of ``mean (std)`` per estimator, like Table S2 of the paper.

    Needs no extra package (pandas' ``to_markdown`` would need tabulate).

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`compare`.
    metrics : sequence of str, default=("train_mae", "test_mae")
        Columns of the :func:`compare` table to show.
    digits : int, default=3
        Decimals shown.

    Returns
    -------
    str
    """
    summary = summarize(results, metrics)
    shown = [m for m in metrics if f"{m}_mean" in summary.columns]
    lines = ["| estimator | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for name, row in summary.iterrows():
        cells = [f"{row[f'{m}_mean']:.{digits}f} ({row[f'{m}_std']:.{digits}f})" for m in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
