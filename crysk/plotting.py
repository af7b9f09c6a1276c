"""Figures for crysk models (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_calibration", "plot_feature_selector", "plot_parity"]


def _axes(ax):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt  # falls back to the Agg backend without a display

    return plt.subplots(figsize=(8, 4.5))


def plot_feature_selector(
    model: Any,
    structure: Any = None,
    *,
    ax=None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
):
    """Bar chart of a CrysXPP feature selector (Figs. 4-6 of the CrysXPP paper).

    Parameters
    ----------
    model : CrysXPPRegressor
        A fitted model with a feature selector.
    structure : structure, optional
        Without it, one bar per atomic property (``feature_importances_``).
        With one structure (anything crysk accepts, or a ``CrystalGraphs``
        whose first crystal is used), grouped bars: for each
        property, the selector weight of each element's category in it.
    ax : matplotlib Axes, optional
        Where to draw (a new figure by default).
    path : str or os.PathLike, optional
        Save the figure there (PNG by the suffix, 150 dpi).
    title : str, optional
        Title of the plot (None: a default one).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes(ax)
    if structure is None:
        imp = model.feature_importances_
        ax.bar(np.arange(len(imp)), imp.to_numpy(), color="tab:blue")
        ax.set_xticks(np.arange(len(imp)), imp.index, rotation=40, ha="right")
        ax.set_ylabel("mean |selector weight| over categories")
    else:
        from .graphs import CrystalGraphs

        table = model.explain(structure[:1] if isinstance(structure, CrystalGraphs) else [structure])
        per = table.drop_duplicates(["element", "property"]).pivot(index="property", columns="element", values="weight")
        order = [p for p in pd.unique(table["property"]) if p in per.index]
        per = per.loc[order]
        width = 0.8 / max(per.shape[1], 1)
        x = np.arange(len(per))
        for i, element in enumerate(per.columns):
            ax.bar(x + (i - (per.shape[1] - 1) / 2) * width, per[element].to_numpy(), width, label=element)
        ax.set_xticks(x, per.index, rotation=40, ha="right")
        ax.set_ylabel("selector weight of the atom's category")
        ax.legend(title="element")
    ax.axhline(0, color="black", lw=0.6)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_parity(
    y_true: Any,
    y_pred: Any,
    *,
    ax=None,
    path: str | os.PathLike | None = None,
    label: str = "",
    unit: str = "",
):
    """Predicted against true values with the diagonal and the MAE.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Predictions.
        True targets.
    ax : matplotlib Axes, optional
        Axes to draw on (None: a new figure).
    path : str or os.PathLike, optional
        Save the figure there.
    label : str, optional
        Property name for the axis labels.
    unit : str, optional
        Unit shown in the axis labels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes(ax)
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.scatter(y_true, y_pred, s=8, alpha=0.6)
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(f"true {label}{suffix}".strip())
    ax.set_ylabel(f"predicted {label}{suffix}".strip())
    ax.set_title(f"MAE {np.abs(y_true - y_pred).mean():.3g}{(' ' + unit) if unit else ''}")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_calibration(
    y_true: Any,
    y_pred: Any,
    y_std: Any,
    *,
    ax=None,
    path: str | os.PathLike | None = None,
    label: str | None = None,
    levels: Any = None,
):
    """Observed against expected coverage of Gaussian central intervals (a calibration curve).

    For each confidence level ``p`` the interval ``y_pred ± z σ`` with
    ``z = Φ⁻¹((1 + p) / 2)`` should hold a fraction ``p`` of the true values
    if the errors are Gaussian with standard deviation σ. The curve is the
    fraction that does: on the diagonal the σ are calibrated, below it they
    are too small (overconfident), above it too large. Call it again on the
    same ``ax`` to compare, e.g., raw and recalibrated σ.

    Parameters
    ----------
    y_true : array-like of shape (n,) or (n, n_targets)
        True targets (NaN entries are left out).
    y_pred : array-like, same shape as ``y_true``
        Predicted means (e.g. :meth:`crysk.DeepEnsemble.predict`).
    y_std : array-like, same shape as ``y_true``
        Predicted standard deviations σ (entries with σ <= 0 or NaN are left out).
    ax : matplotlib Axes, optional
        Axes to draw on (None: a new square figure).
    path : str or os.PathLike, optional
        Save the figure there (PNG by the suffix, 150 dpi).
    label : str, optional
        Legend entry of the curve; the miscalibration area (mean absolute
        gap between the curve and the diagonal) is appended.
    levels : array-like of float, optional
        Expected coverages in (0, 1) (default: 0.01, 0.02, ..., 0.99).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.
    """
    from scipy.stats import norm

    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    y_true, y_pred, y_std = (np.asarray(a, dtype=float).ravel() for a in (y_true, y_pred, y_std))
    if not (len(y_true) == len(y_pred) == len(y_std)):
        raise ValueError(f"y_true, y_pred and y_std must have the same shape, got {len(y_true)}, {len(y_pred)}, "
                         f"{len(y_std)} values")
    keep = np.isfinite(y_true) & np.isfinite(y_pred) & np.isfinite(y_std) & (y_std > 0)
    if not keep.any():
        raise ValueError("no entry with a finite target and prediction and a positive σ to plot")
    levels = np.linspace(0.01, 0.99, 99) if levels is None else np.asarray(levels, dtype=float).ravel()
    if levels.size == 0 or (levels <= 0).any() or (levels >= 1).any():
        raise ValueError("levels must be coverages strictly between 0 and 1")
    z = np.abs(y_true[keep] - y_pred[keep]) / y_std[keep]
    observed = (z[None, :] <= norm.ppf((1 + levels) / 2)[:, None]).mean(axis=1)
    area = float(np.abs(observed - levels).mean())
    if not any(line.get_gid() == "calibration-diagonal" for line in ax.get_lines()):  # once per axes
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", gid="calibration-diagonal")
    ax.plot(levels, observed, lw=1.5, label=None if label is None else f"{label} (area {area:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("expected coverage of the ±zσ interval")
    ax.set_ylabel("observed coverage")
    if label is not None:
        ax.legend(loc="upper left")
    ax.figure.tight_layout()
    if path is not None:
        ax.figure.savefig(path, dpi=150)
    return ax
