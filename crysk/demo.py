"""Small synthetic data sets that crysk makes itself, for demos and smoke tests."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

__all__ = ["make_demo_data"]

_CATIONS = ["Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Sr", "Ba", "Zn", "Cd", "Ag"]
_ANIONS = ["F", "Cl", "Br", "I", "O", "S", "Se", "Te"]
_FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def make_demo_data(n: int = 200, random_state: int | None = 0) -> tuple[list[Structure], np.ndarray]:
    """Make strained binary crystals and a target that depends on them.

    Half are rock-salt (8 atoms), half CsCl-type (2 atoms); lattice constants
    follow the sum of the ionic radii with random strain, so the target, the
    volume per atom in Å^3, depends on both composition and structure.

    Parameters
    ----------
    n : int, default=200
        Number of crystals.
    random_state : int, optional
        Seed.

    Returns
    -------
    structures : list of pymatgen.core.Structure
    y : numpy.ndarray of shape (n,)
        Volume per atom (Å^3).
    """
    from pymatgen.core import Element

    rng = np.random.default_rng(random_state)
    structures = []
    for i in range(n):
        a_el, b_el = rng.choice(_CATIONS), rng.choice(_ANIONS)
        r = Element(a_el).atomic_radius + Element(b_el).atomic_radius
        strain = np.diag(1.0 + rng.uniform(-0.04, 0.04, size=3))
        if i % 2 == 0:
            lattice = Lattice(np.eye(3) * 2.0 * r @ strain)
            coords = np.vstack([_FCC, (_FCC + [0.5, 0, 0]) % 1.0])
            species = [a_el] * 4 + [b_el] * 4
        else:
            lattice = Lattice(np.eye(3) * 2.0 * r / np.sqrt(3.0) @ strain)
            coords = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
            species = [a_el, b_el]
        coords = coords + rng.normal(scale=0.005, size=coords.shape)
        structures.append(Structure(lattice, species, coords))
    y = np.array([s.volume / len(s) for s in structures])
    return structures, y
