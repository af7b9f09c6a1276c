"""ElementDescriptor: the 132 Magpie element descriptors (matminer) of structures, compositions or formulas."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Structure
from sklearn.base import BaseEstimator, TransformerMixin

from ..graphs import CrystalGraphs
from ..parallel import map_chunks
from ..structures import CrystalInputError, as_sequence, as_structure, input_ids, quiet_warnings

__all__ = ["ElementDescriptor"]


# file name endings that mark a string as a structure file rather than a formula
_STRUCTURE_SUFFIXES = (".cif", ".cif.gz", ".vasp", ".poscar", ".json", ".xyz", ".cssr", ".xsf")
# fractions are rounded to this many digits for the cache key, so that a
# Structure and its CrystalGraphs (integer counts) share one cache entry
_FRACTION_DIGITS = 12


# ----------------------------------------------------------------------------- element descriptors


@functools.lru_cache(maxsize=8)
def _featurizer(preset: str, impute_nan: bool):
    from matminer.featurizers.composition import ElementProperty

    ep = ElementProperty.from_preset(preset, impute_nan=impute_nan)
    ep.set_n_jobs(1)  # matminer's own multiprocessing would fork per call
    return ep


@functools.lru_cache(maxsize=200_000)
def _features_of(key: tuple, preset: str, impute_nan: bool) -> np.ndarray:
    """Element-property statistics of one fractional composition (cached: data sets repeat compositions)."""
    comp = Composition({Element.from_Z(z): frac for z, frac in key})
    with quiet_warnings():  # matminer/pymatgen warn about elements that lack a property (then imputed)
        out = np.asarray(_featurizer(preset, impute_nan).featurize(comp), dtype=np.float64)
    out.setflags(write=False)
    return out


def _key_from_counts(z: np.ndarray, amounts: np.ndarray) -> tuple:
    total = float(np.sum(amounts))
    return tuple((int(a), round(float(b) / total, _FRACTION_DIGITS)) for a, b in sorted(zip(z, amounts)))


def _key_from_composition(comp: Composition, index, id) -> tuple:
    comp = comp.element_composition  # oxidation states do not change element properties
    if comp.num_atoms <= 0:
        raise CrystalInputError("the composition is empty", index, id)
    dummies = [str(el) for el in comp if not isinstance(el, Element)]
    if dummies:
        raise CrystalInputError(
            f"{comp.formula!r} holds {dummies}, which are not elements; give real chemical elements", index, id
        )
    z, amounts = zip(*[(el.Z, amt) for el, amt in comp.items() if amt > 0])
    return _key_from_counts(np.array(z), np.array(amounts, dtype=np.float64))


def _looks_like_structure_path(text: str) -> bool:
    return text.lower().endswith(_STRUCTURE_SUFFIXES) or os.path.sep in text or os.path.exists(text)


def _composition_of(item: Any, index: int, id: Any) -> Composition:
    if isinstance(item, Composition):
        return item
    if isinstance(item, Structure):
        return item.composition
    if isinstance(item, str) and "\n" not in item and not _looks_like_structure_path(item):
        try:
            return Composition(item)
        except Exception as exc:  # pymatgen raises ValueError or its own errors
            raise CrystalInputError(
                f"{item!r} is neither a chemical formula nor an existing structure file ({exc})", index, id
            ) from exc
    # composition is all that matters here, so skip the geometry checks
    return as_structure(item, index=index, id=id, validate=False).composition


def _keys_of_graphs(graphs: CrystalGraphs) -> list[tuple]:
    return [
        _key_from_counts(np.array(list(c)), np.array(list(c.values()), dtype=np.float64))
        for c in graphs.element_counts()
    ]


def _keys_of_items(items: Sequence, start: int, ids: Sequence | None) -> list[tuple]:
    keys = []
    for k, item in enumerate(items):
        sid = None if ids is None else ids[k]
        keys.append(_key_from_composition(_composition_of(item, start + k, sid), start + k, sid))
    return keys


def _features_chunk(items: Sequence, start: int, ids, preset: str, impute_nan: bool) -> np.ndarray:
    keys = _keys_of_items(items, start, ids)
    return np.stack([_features_of(k, preset, impute_nan) for k in keys]) if keys else None


class ElementDescriptor(TransformerMixin, BaseEstimator):
    """Composition descriptors from element-property statistics (matminer Magpie).

    With the default ``preset="magpie"`` each crystal gets the 132
    descriptors of the TL-CGCNN paper: minimum, maximum, range, mean, mean
    absolute deviation and mode of 22 element properties, weighted by the
    atomic fractions. Only the composition matters, so identical
    compositions share one cached row.

    Parameters
    ----------
    preset : str, default="magpie"
        matminer ``ElementProperty`` preset (``"magpie"``, ``"deml"``,
        ``"matminer"``, ``"matscholar_el"``, ``"megnet_el"``).
    impute_nan : bool, default=True
        Replace element properties that are unknown for some element by the
        mean over elements (matminer's option), so downstream models never
        see NaN.
    n_jobs : int, optional
        Processes for large inputs (joblib semantics). matminer's own
        multiprocessing is always off.

    Notes
    -----
    ``transform`` accepts, per crystal: a pymatgen ``Structure`` or
    ``Composition``; a formula string such as ``"Fe2O3"``; anything else
    :func:`crysk.structures.as_structure` accepts (CIF text or path, ASE
    ``Atoms``, Structure dict); or a whole ``CrystalGraphs``, whose atomic
    numbers give the compositions, so one featurized set feeds both graph
    networks and baselines. Structures are not geometry-checked here.

    Examples
    --------
    >>> ElementDescriptor().fit_transform(["NaCl", "Fe2O3"]).shape  # doctest: +SKIP
    (2, 132)
    """

    def __init__(self, preset: str = "magpie", impute_nan: bool = True, n_jobs: int | None = 1):
        self.preset = preset
        self.impute_nan = impute_nan
        self.n_jobs = n_jobs

    def _labels(self) -> list[str]:
        if not isinstance(self.preset, str):
            raise ValueError(f"preset must be the name of a matminer ElementProperty preset, got {self.preset!r}")
        try:
            return list(_featurizer(self.preset, bool(self.impute_nan)).feature_labels())
        except ValueError as exc:
            raise ValueError(f"unknown matminer ElementProperty preset {self.preset!r} ({exc})") from exc

    def fit(self, X: Any = None, y: Any = None) -> ElementDescriptor:
        """Check the parameters; nothing is learned.

        Parameters
        ----------
        X, y : ignored
            Ignored; accepted for Pipeline compatibility.

        Returns
        -------
        self
        """
        self.feature_names_ = np.asarray(self._labels(), dtype=object)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Compute the descriptors.

        Parameters
        ----------
        X : CrystalGraphs or collection of structures, compositions or formulas
            See Notes of the class.

        Returns
        -------
        numpy.ndarray of shape (n_crystals, n_features)

        Raises
        ------
        CrystalInputError
            For an input that gives no composition, naming its position/id.
        """
        labels = self._labels()
        impute = bool(self.impute_nan)
        if isinstance(X, CrystalGraphs):
            keys = _keys_of_graphs(X)
            if not keys:
                return np.zeros((0, len(labels)))
            return np.stack([_features_of(k, self.preset, impute) for k in keys])
        seq = as_sequence(X)
        ids = input_ids(X)

        def chunk_args(start: int, stop: int, parallel: bool) -> tuple:
            items = [seq[i] for i in range(start, stop)]
            return items, start, None if ids is None else ids[start:stop], self.preset, impute

        # composition features are cheap; processes pay off only for many CIFs to parse
        parts = map_chunks(_features_chunk, len(seq), chunk_args, n_jobs=self.n_jobs, min_parallel=2000)
        parts = [p for p in parts if p is not None]
        return np.concatenate(parts) if parts else np.zeros((0, len(labels)))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the descriptors, e.g. ``"MagpieData mean Electronegativity"``.

        Parameters
        ----------
        input_features : ignored
            Ignored: the names do not depend on the input.

        Returns
        -------
        numpy.ndarray of str
        """
        return np.asarray(self._labels(), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags
