"""Figures for crysk models (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_feature_selector", "plot_parity"]


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
