"""Draw ``docs/_static/concepts.svg``: structures -> graphs -> estimators -> checkpoints.

Run it after changing the picture (it is committed, so building the docs needs
no matplotlib)::

    python docs/make_concepts_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = [
    ("structures", "pymatgen Structure, ASE Atoms,\nCIF / POSCAR files or text,\ntables (load_table)"),
    ("CrystalGraphs", "atoms + 12 nearest neighbours\nwithin 8 Å, packed arrays\n(CrystalGraphFeaturizer)"),
    ("estimators", "CGCNNRegressor, CrysAE,\nCrysXPPRegressor: fit / predict,\nPipeline, GridSearchCV"),
    ("checkpoints", "save_pretrained / crysk.load;\nwarm_start_from= + freeze=\nfor transfer learning"),
]


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 2.6))
    ax.set_xlim(0, 4)
    ax.set_ylim(0, 1)
    ax.axis("off")
    for i, (title, body) in enumerate(BOXES):
        x = i + 0.06
        ax.add_patch(FancyBboxPatch((x, 0.12), 0.78, 0.76, boxstyle="round,pad=0.02",
                                    facecolor="#e8f0fb", edgecolor="#2b5d9c"))
        ax.text(x + 0.39, 0.75, title, ha="center", va="center", fontsize=12, weight="bold")
        ax.text(x + 0.39, 0.42, body, ha="center", va="center", fontsize=7.6)
        if i < len(BOXES) - 1:
            ax.add_patch(FancyArrowPatch((x + 0.82, 0.5), (x + 1.02, 0.5), arrowstyle="-|>",
                                         mutation_scale=16, color="#2b5d9c"))
    # transfer learning: a checkpoint starts a new estimator
    ax.add_patch(FancyArrowPatch((3.45, 0.1), (2.45, 0.1), connectionstyle="arc3,rad=-0.35", arrowstyle="-|>",
                                 mutation_scale=14, color="#9c2b2b"))
    ax.text(2.95, -0.05, "warm_start_from", ha="center", fontsize=8.5, color="#9c2b2b")
    ax.set_ylim(-0.12, 1)
    out = Path(__file__).resolve().parent / "_static" / "concepts.svg"
    plt.rcParams["svg.hashsalt"] = "crysk"  # stable ids: the file changes only when the picture does
    fig.savefig(out, bbox_inches="tight", metadata={"Date": None})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
