"""Pretrained models that ship with crysk, by name.

Each shipped model is two package-data files in this folder: ``<name>.pt``
(a crysk checkpoint, weights only) and ``<name>.json`` (its model card: the
data, licence and attribution, split, epochs, validation and test MAE,
featurizer settings, crysk version, training command, wall time, the
file's sha256 and predictions on 10 reference structures).
``benchmarks/pretrain_zoo.py --finalize`` writes both.

A name works wherever a checkpoint path does: ``warm_start_from="cgcnn-mp-eform"``,
:func:`crysk.load`, ``from_pretrained``, ``fit(resume_from=...)`` and the
``crysk predict`` / ``crysk pretrained`` commands. **A path that exists
wins over a name**: a file called ``cgcnn-mp-eform`` in the working folder
is read as that file. The file's sha256 is checked against its card before
it is read, and it is read weights-only (:mod:`crysk.checkpoints`).

Models of your own are found by name too: :func:`register` adds one for
the running process; a folder named in the environment variable
``CRYSK_PRETRAINED_DIRS`` (``os.pathsep``-separated folders holding
``<name>.pt`` with a ``<name>.json`` card, as ``--finalize`` writes them)
adds its models to every process, the ``crysk`` command included; a
shipped model of the same name wins over such a folder.

This module imports no torch: listing and describing models is instant.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["PLANNED", "ENV_DIRS", "available", "describe", "locate", "register", "unregister", "looks_like_name"]

_HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

_MP_LICENCE = {
    "licence": "CC BY 4.0 (Materials Project data)",
    "attribution": [
        "Materials Project: A. Jain et al., APL Materials 1, 011002 (2013); data licensed CC BY 4.0.",
    ],
}
_FEATURIZER = {"radius": 8.0, "max_num_nbr": 12, "gaussian": "centres 0-8 Å, step 0.2 Å, width 0.2 Å",
               "element_features": "CGCNN's 92-dimensional one-hot atom features"}
_CGCNN_ARCH = {"estimator": "CGCNNRegressor", "atom_fea_len": 64, "n_conv": 3, "h_fea_len": 128, "n_h": 1}
_CGCNN_TRAINING = ("SGD, momentum 0.9, lr 0.01 (x0.1 at epoch 80), batch 256, MSE on standardized targets, "
                   "120 epochs, best validation epoch kept (the CGCNN code's and the TL-CGCNN paper's optimiser, "
                   "learning rate and batch; run length chosen for 2 CPU cores, validation checked to have "
                   "plateaued before shipping)")

#: What each model is and how it is trained: the card of a model not (yet) shipped, and the
#: static part of a shipped model's card (the measured part comes from ``<name>.json``).
PLANNED: dict[str, dict[str, Any]] = {
    "cgcnn-mp-eform": {
        "summary": "CGCNN trained on 35,581 Materials Project formation energies per atom",
        "target": "formation energy per atom", "unit": "eV/atom",
        "data": "mp_eform: the CrysXPP paper's 36,737 Materials Project formation energies (from CGCNN's data set)",
        "split_plan": "all but the 1,156 crystals that have a measured formation enthalpy in pymatgen's set "
                      "(crysk.datasets.load_experimental_formation_enthalpy; held out so that the model can be "
                      "tested against experiment, as benchmarks/dft_to_experiment.py does; their ids are in the "
                      "card's held_out); 10 % of the rest (seeded) held out to pick the best epoch; test MAE against "
                      "the held-out crystals' DFT values (experimentally known compounds, not a random draw)",
        "use_for": "structure-driven targets: band gaps of non-metals, elastic moduli, other energies",
        **_MP_LICENCE,
        "attribution_extra": ["CrysXPP data set: K. Das et al., npj Comput. Mater. 8, 43 (2022), MIT licence.",
                              "CGCNN: T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018)."],
        "architecture": _CGCNN_ARCH, "featurizer": _FEATURIZER, "training": _CGCNN_TRAINING,
        "regenerate": "python benchmarks/pretrain_zoo.py --models cgcnn-mp-eform && "
                      "python benchmarks/pretrain_zoo.py --finalize --models cgcnn-mp-eform",
    },
    "cgcnn-mp-gap": {
        "summary": "CGCNN trained on Matbench mp_gap fold 0 (PBE band gaps, metals included)",
        "target": "PBE band gap", "unit": "eV",
        "data": "Matbench v0.1 matbench_mp_gap (106,113 Materials Project band gaps)",
        "split_plan": "training part of Matbench fold 0 (KFold(5, shuffle=True, random_state=18012019), first "
                      "split), 10 % of it for validation; test MAE on fold 0's test part (Matbench leaderboard "
                      "CGCNN: 0.297 eV averaged over 5 folds)",
        "use_for": "band gaps and other electronic-structure targets, metal/non-metal classification",
        **_MP_LICENCE,
        "attribution_extra": ["Matbench: A. Dunn et al., npj Comput. Mater. 6, 138 (2020)."],
        "architecture": _CGCNN_ARCH, "featurizer": _FEATURIZER, "training": _CGCNN_TRAINING,
        "regenerate": "python benchmarks/pretrain_zoo.py --models cgcnn-mp-gap && "
                      "python benchmarks/pretrain_zoo.py --finalize --models cgcnn-mp-gap",
    },
    "cgcnn-mp-nm-gap": {
        "summary": "CGCNN trained on the non-metal band gaps (band_gap > 0.1 eV) of Matbench mp_gap fold 0",
        "target": "PBE band gap of non-metals", "unit": "eV",
        "data": "Matbench v0.1 matbench_mp_gap, the 56,258 crystals with band_gap > 0.1 eV",
        "split_plan": "the non-metals of Matbench fold 0's training part (10 % for validation); test MAE on the "
                      "non-metals of fold 0's test part",
        "use_for": "the TL-CGCNN paper's source for formation-energy targets; band gaps of semiconductors",
        **_MP_LICENCE,
        "attribution_extra": ["Matbench: A. Dunn et al., npj Comput. Mater. 6, 138 (2020).",
                              "TL-CGCNN: J. Lee and R. Asahi, Comput. Mater. Sci. 190, 110314 (2021)."],
        "architecture": _CGCNN_ARCH, "featurizer": _FEATURIZER, "training": _CGCNN_TRAINING,
        "regenerate": "python benchmarks/pretrain_zoo.py --models cgcnn-mp-nm-gap && "
                      "python benchmarks/pretrain_zoo.py --finalize --models cgcnn-mp-nm-gap",
    },
    "crysae-mp": {
        "summary": "CrysAE autoencoder trained without labels on the unique structures of mp_gap and mp_eform",
        "target": None, "unit": None,
        "data": "the union of mp_eform (36,737) and mp_gap (106,113) structures, deduplicated: two crystals "
                "count as one when their crystal graphs are the same (same sorted atomic numbers and the same "
                "sorted (centre Z, neighbour Z, distance rounded to 0.01 Å) edges); first occurrence kept",
        "split_plan": "10 % (seeded) held out to pick the best epoch by reconstruction loss",
        "use_for": "warm-starting CrysXPPRegressor (its encoder) when no labelled source fits the target",
        **_MP_LICENCE,
        "attribution_extra": ["CrysXPP / CrysAE: K. Das et al., npj Comput. Mater. 8, 43 (2022).",
                              "Matbench: A. Dunn et al., npj Comput. Mater. 6, 138 (2020)."],
        "architecture": {"estimator": "CrysAE", "atom_fea_len": 64, "n_conv": 3},
        "featurizer": _FEATURIZER,
        "training": "Adam, lr 0.003 (x0.1 at epoch 70), batch 512, 100 epochs (the CrysXPP paper's CrysAE: 200 "
                    "epochs on its ~37k crystals; this set is about three times larger, so ~1.5x its optimiser "
                    "steps), all four reconstruction "
                    "terms, best validation epoch kept, validation checked to have plateaued before shipping",
        "regenerate": "python benchmarks/pretrain_zoo.py --models crysae-mp && "
                      "python benchmarks/pretrain_zoo.py --finalize --models crysae-mp",
    },
}

# models registered at run time (register()): name -> (weights path, card)
_EXTRA: dict[str, tuple[Path, dict[str, Any]]] = {}


def looks_like_name(source: Any) -> bool:
    """Whether ``source`` could name a pretrained model rather than a file.

    A name is a string of letters, digits, ``-`` and ``_`` (no folder
    separator, no file extension). Callers check first that no file of
    that name exists: a path that exists wins.

    Parameters
    ----------
    source : object
        What was passed as ``warm_start_from``, to :func:`crysk.load` etc.

    Returns
    -------
    bool
    """
    return isinstance(source, str) and (source in _EXTRA or bool(_NAME.match(source)))


#: environment variable naming further folders of models (``<name>.pt`` + ``<name>.json`` card),
#: separated by ``os.pathsep``
ENV_DIRS = "CRYSK_PRETRAINED_DIRS"


def _folders() -> list[Path]:
    """Where models are looked for: this package's folder first, then the folders in ``$CRYSK_PRETRAINED_DIRS``."""
    extra = [Path(p) for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p]
    return [_HERE, *extra]


def _shipped(name: str) -> tuple[Path, dict[str, Any]] | None:
    """The weights path and card of a model in one of the folders (the package's wins), or None."""
    for folder in _folders():
        card_path, weights = folder / f"{name}.json", folder / f"{name}.pt"
        if card_path.is_file() and weights.is_file():
            return weights, json.loads(card_path.read_text(encoding="utf-8"))
    return None


def _shipped_names() -> list[str]:
    names = set()
    for folder in _folders():
        if folder.is_dir():
            names |= {p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}.pt").is_file()}
    return sorted(names)


def available(include_planned: bool = False) -> list[str]:
    """Names of the pretrained models that can be loaded.

    Parameters
    ----------
    include_planned : bool, default=False
        Also list the models crysk plans to ship (:data:`PLANNED`) whose
        weights this installation does not have yet; :func:`describe`
        says which is which.

    Returns
    -------
    list of str
        Sorted names.
    """
    names = set(_shipped_names()) | set(_EXTRA)
    if include_planned:
        names |= set(PLANNED)
    return sorted(names)


def _unknown(name: Any) -> str:
    have = available()
    planned = [n for n in PLANNED if n not in have]
    text = f"no pretrained model named {name!r}; available: {have or 'none in this installation'}"
    if planned:
        text += f"; planned but not shipped yet: {planned}"
    return text + " (a checkpoint path that exists is read as a file)"


def describe(name: str) -> dict[str, Any]:
    """The model card of a pretrained model.

    Parameters
    ----------
    name : str
        A name from :func:`available` (``include_planned=True`` for the
        planned ones).

    Returns
    -------
    dict
        For a shipped model: its card (``status="available"``) with
        ``data``, ``licence``, ``attribution``, ``split``, ``epochs``,
        ``validation_mae``, ``test_mae``, ``featurizer``, ``crysk_version``,
        ``training_commands``, ``wall_time_s``, ``sha256`` and
        ``reference`` (10 structures as CIF text with the model's outputs
        on them). For a planned model without weights: what it will be, with
        ``status="planned"`` and how to train it (``regenerate``).

    Raises
    ------
    crysk.CheckpointError
        For an unknown name; the message lists the names there are.
    """
    if name in _EXTRA:
        path, card = _EXTRA[name]
        return {**copy.deepcopy(card), "name": name, "status": "available", "path": str(path)}
    shipped = _shipped(name) if isinstance(name, str) and _NAME.match(name) else None
    if shipped is not None:
        path, card = shipped
        return {**copy.deepcopy(PLANNED.get(name, {})), **card, "name": name, "status": "available", "path": str(path)}
    if name in PLANNED:
        return {**copy.deepcopy(PLANNED[name]), "name": name, "status": "planned",
                "note": "not shipped in this crysk version: its training has not finished; the regenerate "
                        "command trains it (hours on 2 CPU cores)"}
    from .._errors import CheckpointError

    raise CheckpointError(_unknown(name))


def locate(name: str) -> tuple[Path, str | None]:
    """The weights file of a pretrained model and the sha256 it must have.

    Parameters
    ----------
    name : str
        A name from :func:`available`.

    Returns
    -------
    (pathlib.Path, str or None)
        The file, and its expected sha256 (None only for a model
        registered without one).

    Raises
    ------
    crysk.CheckpointError
        For an unknown name, or a planned model whose weights are not in
        this installation; the message lists the names there are.
    """
    from .._errors import CheckpointError

    card = describe(name)
    if card["status"] != "available":
        raise CheckpointError(
            f"pretrained model {name!r} is planned but not shipped in this crysk version (its training has not "
            f"finished); train it with `{card['regenerate']}`, or use one of {available() or 'the checkpoint files'}"
        )
    return Path(card["path"]), card.get("sha256")


def register(name: str, path: str | os.PathLike, *, sha256: str | None = None,
             card: dict[str, Any] | None = None) -> None:
    """Make a checkpoint file loadable by name (for in-house model zoos and tests).

    Parameters
    ----------
    name : str
        Letters, digits, ``-`` and ``_``. A registered name hides a shipped
        model of the same name until :func:`unregister`.
    path : str or os.PathLike
        A crysk checkpoint (``save_pretrained``) or any file
        :func:`crysk.load` reads. It is not read here.
    sha256 : str, optional
        The hex digest the file must have; checked at every load.
    card : dict, optional
        Model card entries returned by :func:`describe`.

    Raises
    ------
    ValueError
        If ``name`` is not a valid model name.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a pretrained model name uses letters, digits, '-' and '_' only, got {name!r}")
    entry = dict(card or {})
    entry["sha256"] = sha256
    _EXTRA[name] = (Path(path).resolve(), entry)


def unregister(name: str) -> None:
    """Forget a model added with :func:`register` (shipped models stay).

    Parameters
    ----------
    name : str
        The registered name; unknown names are ignored.
    """
    _EXTRA.pop(name, None)
