"""The fast CIF reader: gemmi for P1 files, with pymatgen's coordinates and site order."""

from __future__ import annotations

import functools
import os
import re

import numpy as np


def _looks_like_cif(text: str) -> bool:
    return "_cell_length_a" in text or text.lstrip().startswith("data_") or "\ndata_" in text


#: CIF reader: "auto" (gemmi when installed, else pymatgen), "gemmi" or "pymatgen".
#: Set the environment variable CRYSK_CIF_PARSER to choose.
CIF_PARSER = os.environ.get("CRYSK_CIF_PARSER", "auto")
_ELEMENT = re.compile(r"[A-Z][a-z]?")


def _gemmi_cif_arrays(text: str):
    """Parse CIF text with gemmi (C++, ~20x faster than pymatgen's parser).

    Returns ``(symbols, lattice_parameters, frac_coords)`` of the full unit
    cell, or ``None`` when gemmi is missing or the CIF needs pymatgen's
    handling (several blocks, partial occupancy, unknown symbols), in which
    case the caller falls back to pymatgen and its error messages.
    """
    if CIF_PARSER == "pymatgen":
        return None
    try:
        import gemmi
    except ImportError:
        if CIF_PARSER == "gemmi":
            raise
        return None
    try:
        small = gemmi.make_small_structure_from_block(gemmi.cif.read_string(text).sole_block())
    except Exception:
        return None
    if any(site.occ < 1 - 1e-6 for site in small.sites):
        return None
    if not _is_p1(small):
        # pymatgen expands symmetry with its own arithmetic, site order and
        # merging; only an identity-only CIF gives the same floats both ways,
        # and the neighbour rule at distance ties depends on those exact bits
        return None
    sites = small.sites
    symbols = []
    for site in sites:
        name = site.element.name
        if name == "X":
            match = _ELEMENT.match(site.type_symbol or site.label)
            name = gemmi.Element(match.group()).name if match else "X"
            if name == "X":
                return None
        symbols.append(name)
    if not symbols:
        return None
    frac = _snap_thirds(np.array([site.fract.tolist() for site in sites], dtype=np.float64).reshape(-1, 3))
    frac -= np.floor(frac)  # wrapped into [0, 1) as pymatgen's CifParser does
    order = _pymatgen_site_order(symbols, [site.occ for site in sites])
    if order is None:
        return None
    return [symbols[i] for i in order], small.cell.parameters, frac[order]


def _pymatgen_site_order(symbols: list[str], occupancies: list[float]) -> np.ndarray | None:
    """The order in which pymatgen's CIF parser lists these sites, or None.

    pymatgen groups the sites by composition and then sorts them with
    ``Structure.get_sorted_structure`` (a stable sort on electronegativity,
    then on the species string), which for fully occupied single-element
    sites is a stable sort on ``(X, symbol)``. Matching it matters where
    neighbours are equally far away: the reference neighbour rule keeps them
    in site order. Returns None (parse with pymatgen instead) for partial
    occupancies or elements without an electronegativity, where that
    shortcut is not exact.
    """
    if any(occ != 1.0 for occ in occupancies):
        return None
    x = {sym: _electronegativity(sym) for sym in set(symbols)}
    if any(np.isnan(v) for v in x.values()):
        return None
    return np.array(sorted(range(len(symbols)), key=lambda i: (x[symbols[i]], symbols[i])), dtype=np.int64)


@functools.lru_cache(maxsize=None)
def _electronegativity(symbol: str) -> float:
    from pymatgen.core import Element

    # Element.X warns (and gives NaN) for elements without one, e.g. He
    x = Element(symbol).data.get("X")
    return float("nan") if x is None else float(x)


def _is_p1(small) -> bool:
    """Whether a gemmi small structure has the identity as its only symmetry operation."""
    import gemmi

    if small.symops:
        identity = gemmi.Op("x,y,z")
        return all(gemmi.Op(op) == identity for op in small.symops)
    return small.spacegroup is not None and small.spacegroup.number == 1


# pymatgen's CifParser replaces fractional coordinates within a relative 1e-4
# of 1/3 or 2/3 by the exact value (its frac_tolerance); doing the same keeps
# the coordinates bit-identical to pymatgen's
_THIRDS = (1 / 3, 2 / 3)
_FRAC_TOLERANCE = 1e-4


def _snap_thirds(frac: np.ndarray) -> np.ndarray:
    out = frac.copy()
    for third in _THIRDS:
        out[np.abs(frac / third - 1.0) <= _FRAC_TOLERANCE] = third
    return out
