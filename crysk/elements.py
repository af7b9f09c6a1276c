"""Per-element feature tables.

The CGCNN element features are 92-dimensional binary vectors: nine atomic
properties, each one-hot encoded into categories (Xie & Grossman, PRL 120,
145301, 2018; the same table is used by CrysXPP). crysk ships the table as
``crysk/data/cgcnn_atom_features.json`` (the positions of the ones per atomic
number, taken from the MIT-licensed CGCNN ``atom_init.json`` as redistributed
by matminer), covering Z = 1-100.

The slices below were derived from the table itself (each element has at most
one 1 inside each slice) and the category meanings were checked against
pymatgen's element data. Note that Table 1 of the CrysXPP paper lists 18 group
and 9 period categories, which would sum to 93; the real table has 19 group
categories (category 0 holds the lanthanides and actinides) and 7 periods.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = [
    "N_ELEMENT_FEATURES",
    "MAX_ATOMIC_NUMBER",
    "AtomicProperty",
    "ATOMIC_PROPERTIES",
    "cgcnn_feature_table",
    "element_table_id",
    "feature_names",
]

#: Length of the CGCNN element feature vector.
N_ELEMENT_FEATURES = 92
#: Largest atomic number that has a feature vector.
MAX_ATOMIC_NUMBER = 100


@dataclass(frozen=True)
class AtomicProperty:
    """One of the nine categorical atomic properties of the CGCNN table.

    Parameters
    ----------
    name : str
        Short machine name (e.g. ``"electronegativity"``).
    label : str
        Human-readable name as in Table 1 of the CrysXPP paper.
    start, stop : int
        The slice ``[start, stop)`` of the 92 dimensions the property occupies.
    categories : tuple of str
        Meaning of each category, in order.
    """

    name: str
    label: str
    start: int
    stop: int
    categories: tuple[str, ...]

    @property
    def slice(self) -> slice:
        """The slice of the 92-dimensional vector this property occupies."""
        return slice(self.start, self.stop)

    @property
    def n_categories(self) -> int:
        """Number of categories (the width of the slice)."""
        return self.stop - self.start


def _bins(lo: float, hi: float, n: int, unit: str) -> tuple[str, ...]:
    edges = np.linspace(lo, hi, n + 1)
    return tuple(f"{a:.3g}-{b:.3g} {unit}".strip() for a, b in zip(edges[:-1], edges[1:]))


#: The nine atomic properties, in table order.
ATOMIC_PROPERTIES: tuple[AtomicProperty, ...] = (
    AtomicProperty(
        "group", "Group number", 0, 19,
        ("lanthanide/actinide",) + tuple(f"group {g}" for g in range(1, 19)),
    ),
    AtomicProperty("period", "Period number", 19, 26, tuple(f"period {p}" for p in range(1, 8))),
    AtomicProperty("electronegativity", "Electronegativity", 26, 36, _bins(0.5, 4.0, 10, "(Pauling)")),
    AtomicProperty("covalent_radius", "Covalent radius", 36, 46, _bins(25, 250, 10, "pm")),
    AtomicProperty("valence_electrons", "Valence electrons", 46, 58, tuple(str(v) for v in range(1, 13))),
    AtomicProperty(
        "first_ionization_energy", "First ionization energy", 58, 68, _bins(1.3, 3.3, 10, "ln(eV)")
    ),
    AtomicProperty("electron_affinity", "Electron affinity", 68, 78, _bins(-3.0, 3.7, 10, "eV")),
    AtomicProperty("block", "Block", 78, 82, ("s", "p", "d", "f")),
    AtomicProperty("atomic_volume", "Atomic volume", 82, 92, _bins(1.5, 4.3, 10, "ln(cm3/mol)")),
)


@lru_cache(maxsize=1)
def cgcnn_feature_table() -> np.ndarray:
    """Return the CGCNN element feature table.

    Returns
    -------
    numpy.ndarray of shape (101, 92), float32
        Row ``Z`` is the feature vector of atomic number ``Z``; row 0 is all
        zeros and unused. The array is read-only.
    """
    text = resources.files("crysk").joinpath("data/cgcnn_atom_features.json").read_text()
    data = json.loads(text)
    table = np.zeros((MAX_ATOMIC_NUMBER + 1, data["n_features"]), dtype=np.float32)
    for z, ones in data["ones"].items():
        table[int(z), ones] = 1.0
    table.setflags(write=False)
    return table


@lru_cache(maxsize=1)
def element_table_id() -> str:
    """Return a short fingerprint of the element table.

    Checkpoints store it so that a model trained with one element table
    refuses to load into a model that uses another.

    Returns
    -------
    str
        ``"cgcnn92:"`` followed by 12 hex digits of the table's SHA-256.
    """
    digest = hashlib.sha256(cgcnn_feature_table().tobytes()).hexdigest()[:12]
    return f"cgcnn92:{digest}"


def feature_names() -> list[str]:
    """Names of the 92 feature dimensions, as ``"<property>=<category>"``.

    Returns
    -------
    list of str
    """
    names: list[str] = []
    for prop in ATOMIC_PROPERTIES:
        names.extend(f"{prop.name}={c}" for c in prop.categories)
    return names
