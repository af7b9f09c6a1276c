"""Baseline models of the TL-CGCNN paper: element descriptors and SOAP kernel ridge.

The paper compares its networks with PLS, LASSO, SVR (RBF kernel) and random
forests on the 132 Magpie element descriptors computed by matminer, with
hyperparameters chosen by 5-fold cross-validation on the training and
validation crystals (625 of them), and with ridge regression on a SOAP kernel
(DScribe). :func:`make_baseline` builds those models as scikit-learn
pipelines that take the same inputs as the graph networks: structures (any
form :func:`crysk.structures.as_structure` accepts) or ``CrystalGraphs``.

matminer is imported on first use, DScribe only by :class:`SOAPKernelRidge`
(``pip install crysk[soap]``).
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Structure
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from .graphs import CrystalGraphs
from ._validation import check_number
from .parallel import map_chunks
from .structures import CrystalInputError, as_sequence, as_structure, as_structure_list, input_ids, quiet_warnings

__all__ = ["BASELINE_GRIDS", "ElementDescriptor", "SOAPKernelRidge", "make_baseline"]

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


# ----------------------------------------------------------------------------- baseline pipelines


def _standardized_target(model):
    from sklearn.compose import TransformedTargetRegressor

    # grids below are then unit-free (eV, GPa or log10 GPa alike)
    return TransformedTargetRegressor(regressor=model, transformer=StandardScaler())


def _pls(random_state):
    from sklearn.cross_decomposition import PLSRegression

    return PLSRegression(), {"n_components": [1, 2, 3, 4, 6, 8, 12, 16, 24]}


def _lasso(random_state):
    from sklearn.linear_model import Lasso

    model = _standardized_target(Lasso(max_iter=50_000, random_state=random_state))
    return model, {"regressor__alpha": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]}


def _svr(random_state):
    from sklearn.svm import SVR

    model = _standardized_target(SVR(kernel="rbf"))
    return model, {
        "regressor__C": [1.0, 10.0, 100.0],
        "regressor__gamma": [1e-3, 1e-2, 1e-1],
        "regressor__epsilon": [0.01, 0.1],
    }


def _rf(random_state):
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=100, random_state=random_state, n_jobs=1)
    return model, {"max_features": [1 / 3, 1.0], "min_samples_leaf": [1, 4]}


_MODELS = {"pls": _pls, "lasso": _lasso, "svr": _svr, "rf": _rf}

#: The hyperparameter grids searched by :func:`make_baseline` (the paper does
#: not list its grids; these cover the usual ranges and stay small).
BASELINE_GRIDS = {kind: make(None)[1] for kind, make in _MODELS.items()}


def _scaling(kind: str) -> list:
    """Feature scaling steps before the model (none for the scale-free random forest).

    Features are first clipped to their training range (``MinMaxScaler(clip=True)``),
    then standardized. Without the clip, a descriptor that is nearly constant in
    the training crystals (e.g. the GSmagmom mode when they hold no magnetic
    element) standardizes to millions for a test crystal, and a linear model
    extrapolates to absurd predictions.
    """
    if kind == "rf":
        return []
    return [("clip", MinMaxScaler(clip=True)), ("scale", StandardScaler())]


def _inner_cv(cv, random_state):
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        # shuffled: data files are often sorted (by id, formula or target)
        return KFold(n_splits=int(cv), shuffle=True, random_state=random_state)
    return cv


def make_baseline(
    kind: str,
    *,
    random_state: int | None = None,
    n_jobs: int | None = 1,
    cv: int | Any = 5,
    param_grid: dict | None = None,
) -> BaseEstimator:
    """Build one of the paper's baseline regressors.

    ``"pls"``, ``"lasso"``, ``"svr"`` and ``"rf"`` give the pipeline
    ``ElementDescriptor → GridSearchCV(clip → StandardScaler → model)``:
    the 132 Magpie descriptors are computed once per ``fit`` (before the
    search, so the inner cross-validation does not recompute them), and the
    scaling sits inside the search so each inner fold is scaled on its own
    training part. Features are clipped to their training range before
    scaling (see Notes); the random forest gets them unscaled. The search minimises the MAE (the paper's metric) and refits on
    all data given to ``fit``. ``"soap"`` gives a :class:`SOAPKernelRidge`.

    Parameters
    ----------
    kind : {"pls", "lasso", "svr", "rf", "soap"}
    random_state : int, optional
        Seeds the inner folds and the random forest.
    n_jobs : int, optional
        Parallel fits in the grid search (joblib semantics).
    cv : int or cross-validation splitter, default=5
        Inner cross-validation; an int gives shuffled ``KFold``.
    param_grid : dict, optional
        Replaces the default grid (:data:`BASELINE_GRIDS`); keys name the
        model's parameters (``"n_components"`` for PLS; LASSO and SVR are
        wrapped in a target-standardizing ``TransformedTargetRegressor``, so
        ``"regressor__alpha"``, ``"regressor__C"``; for ``"soap"`` the
        ``alphas`` list is taken from ``param_grid["alpha"]``).

    Returns
    -------
    estimator
        Unfitted; ``fit(X, y)`` takes structures or ``CrystalGraphs``.

    Notes
    -----
    Default grids (the paper says only that 5-fold CV chose the
    hyperparameters against overfitting): PLS ``n_components`` 1-24;
    LASSO ``alpha`` 3e-4-0.3 on standardized targets; SVR ``C`` 1-100,
    ``gamma`` 1e-3-0.1 (on 132 standardized features; 1/132 ≈ 0.008 is
    scikit-learn's default), ``epsilon`` 0.01-0.1 standardized target units;
    RF with 100 trees, ``max_features`` 1/3 or all, ``min_samples_leaf``
    1 or 4.

    Clipping to the training range guards the linear models and the SVR
    against descriptors that are nearly constant in the training crystals:
    a test crystal with an element unlike all training ones would otherwise
    get standardized values in the millions.
    """
    if kind == "soap":
        alphas = None if param_grid is None else param_grid.get("alpha")
        kwargs = {} if alphas is None else {"alphas": tuple(alphas)}
        return SOAPKernelRidge(cv=cv, random_state=random_state, n_jobs=n_jobs, **kwargs)
    if kind not in _MODELS:
        raise ValueError(f"kind must be one of {sorted(_MODELS) + ['soap']}, got {kind!r}")
    model, grid = _MODELS[kind](random_state)
    if param_grid is not None:
        grid = param_grid
    inner = Pipeline(_scaling(kind) + [("model", model)])
    search = GridSearchCV(
        inner,
        {f"model__{k}": v for k, v in grid.items()},
        cv=_inner_cv(cv, random_state),
        scoring="neg_mean_absolute_error",
        n_jobs=n_jobs,
    )
    return Pipeline([("descriptor", ElementDescriptor(n_jobs=n_jobs)), ("search", search)])


# ----------------------------------------------------------------------------- SOAP kernel ridge


def _import_dscribe():
    try:
        from dscribe.descriptors import SOAP
    except ImportError as exc:
        raise ImportError(
            "SOAPKernelRidge needs DScribe, which is not installed: pip install crysk[soap] "
            "(or pip install dscribe)"
        ) from exc
    return SOAP


class SOAPKernelRidge(RegressorMixin, BaseEstimator):
    """Kernel ridge regression on averaged SOAP descriptors (DScribe).

    Each crystal is described by its SOAP power spectrum averaged over its
    atoms (DScribe ``average="inner"``), scaled to unit length; the kernel
    between two crystals is ``(p · p')**zeta``. For ``zeta=1`` this equals
    the mean of the local-environment kernels over all atom pairs of the two
    crystals, the "SOAP kernel formed by pairs of local environments" of
    the TL-CGCNN paper. The ridge ``alpha`` is chosen by ``cv``-fold
    cross-validation on the training crystals (MAE), with the kernel
    computed once.

    The descriptor is computed per crystal with only its own elements, and
    each species-pair block is placed at a fixed position in a sparse
    vector over all element pairs. Crystals with elements unseen in training
    therefore need no special handling: those blocks simply have no overlap
    with the training crystals.

    Parameters
    ----------
    r_cut : float, default=5.0
        Cut-off radius (Å).
    n_max : int, default=6
        Radial basis functions.
    l_max : int, default=4
        Maximum degree of the spherical harmonics.
    sigma : float, default=0.5
        Width of the atomic Gaussians (Å).
    zeta : float, default=2.0
        Kernel exponent.
    alphas : sequence of float, default=(1e-6, ..., 1)
        Ridge strengths tried; a single value skips the search.
    cv : int or splitter, default=5
        Cross-validation choosing ``alpha`` (an int gives shuffled KFold).
    n_jobs : int, optional
        Processes computing descriptors (joblib semantics).
    random_state : int, optional
        Seeds the folds.

    Attributes
    ----------
    alpha_ : float
        The chosen ridge strength.
    dual_coef_ : numpy.ndarray
        Kernel ridge coefficients over the training crystals.

    Notes
    -----
    Needs DScribe (``pip install crysk[soap]``); ``fit`` raises an
    ``ImportError`` saying so when it is missing. Takes structures, not
    ``CrystalGraphs`` (SOAP needs the atomic positions).
    """

    def __init__(
        self,
        r_cut: float = 5.0,
        n_max: int = 6,
        l_max: int = 4,
        sigma: float = 0.5,
        zeta: float = 2.0,
        alphas: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        cv: int | Any = 5,
        n_jobs: int | None = 1,
        random_state: int | None = None,
    ):
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.zeta = zeta
        self.alphas = alphas
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- descriptors -------------------------------------------------------------
    def _structures(self, X: Any) -> list[Structure]:
        if isinstance(X, CrystalGraphs):
            raise TypeError(
                "SOAPKernelRidge needs atomic positions, which CrystalGraphs do not keep; pass the structures"
            )
        return as_structure_list(X)

    def _descriptors(self, X: Any):
        import scipy.sparse as sp

        structures = self._structures(X)
        settings = (float(self.r_cut), int(self.n_max), int(self.l_max), float(self.sigma))
        n = len(structures)
        parts = map_chunks(
            _soap_rows, n, lambda start, stop, parallel: (structures[start:stop], settings),
            n_jobs=self.n_jobs, min_parallel=200,
        )
        rows = [r for p in parts for r in p]
        width = _pair_width(self.n_max, self.l_max)
        n_cols = _pair_index(_MAX_Z, _MAX_Z) * width + width
        data, indices, indptr = [], [], [0]
        for blocks in rows:
            for (a, b), values in sorted(blocks.items()):
                start = _pair_index(a, b) * width
                data.append(values)
                indices.append(np.arange(start, start + len(values)))
            indptr.append(indptr[-1] + sum(len(v) for v in blocks.values()))
        if not data:
            return sp.csr_matrix((n, n_cols))
        mat = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(n, n_cols))
        norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms) @ mat

    def _kernel(self, A, B) -> np.ndarray:
        k = np.asarray((A @ B.T).todense(), dtype=np.float64)
        return np.clip(k, 0.0, None) ** float(self.zeta)

    # -- estimator API -------------------------------------------------------------
    def _check_params(self) -> None:
        check_number("n_max", self.n_max, integer=True, low=1)
        check_number("l_max", self.l_max, integer=True, low=0)
        for name in ("r_cut", "sigma", "zeta"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.size == 0 or not np.all(alphas > 0):
            raise ValueError(f"alphas must be positive numbers, got {self.alphas!r}")

    def fit(self, X: Any, y: Any) -> SOAPKernelRidge:
        """Compute the descriptors, choose ``alpha`` and solve the ridge problem.

        Parameters
        ----------
        X : collection of structures
            The crystals: anything :class:`~crysk.CrystalGraphFeaturizer` accepts, or CrystalGraphs.
        y : array-like of shape (n_crystals,)
            The targets.

        Returns
        -------
        self

        Raises
        ------
        ImportError
            If DScribe is not installed.
        """
        _import_dscribe()
        self._check_params()
        from sklearn.kernel_ridge import KernelRidge

        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y has NaN or inf; drop those crystals before fitting")
        P = self._descriptors(X)
        if P.shape[0] != len(y):
            raise ValueError(f"X has {P.shape[0]} crystals but y has {len(y)} values")
        K = self._kernel(P, P)
        self.y_mean_ = float(y.mean())
        yc = y - self.y_mean_
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if len(alphas) > 1:
            search = GridSearchCV(
                KernelRidge(kernel="precomputed"),
                {"alpha": alphas.tolist()},
                cv=_inner_cv(self.cv, self.random_state),
                scoring="neg_mean_absolute_error",
            ).fit(K, yc)
            self.alpha_ = float(search.best_params_["alpha"])
            self.cv_results_ = search.cv_results_
        else:
            self.alpha_ = float(alphas[0])
        model = KernelRidge(kernel="precomputed", alpha=self.alpha_).fit(K, yc)
        self.dual_coef_ = model.dual_coef_
        self.descriptors_ = P
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predict targets.

        Parameters
        ----------
        X : collection of structures
            The crystals: anything :class:`~crysk.CrystalGraphFeaturizer` accepts, or CrystalGraphs.

        Returns
        -------
        numpy.ndarray of shape (n_crystals,)
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "dual_coef_")
        _import_dscribe()
        P = self._descriptors(X)
        return self._kernel(P, self.descriptors_) @ self.dual_coef_ + self.y_mean_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags


_MAX_Z = 118


def _pair_index(a: int, b: int) -> int:
    """Position of the element pair (a, b), a ≤ b, among all pairs up to Z=118."""
    a, b = min(a, b), max(a, b)
    return b * (b - 1) // 2 + (a - 1)


def _pair_width(n_max: int, l_max: int) -> int:
    return n_max * n_max * (l_max + 1)


@functools.lru_cache(maxsize=256)
def _soap_for(species: tuple[int, ...], settings: tuple):
    SOAP = _import_dscribe()
    r_cut, n_max, l_max, sigma = settings
    return SOAP(
        species=list(species), r_cut=r_cut, n_max=n_max, l_max=l_max, sigma=sigma, periodic=True, average="inner"
    )


def _soap_rows(structures: Sequence[Structure], settings: tuple) -> list[dict]:
    """Per structure: {(Za, Zb): averaged power-spectrum block}, with Za ≤ Zb."""
    from pymatgen.io.ase import AseAtomsAdaptor

    rows = []
    for s in structures:
        species = tuple(sorted({int(site.specie.Z) for site in s}))
        soap = _soap_for(species, settings)
        vec = np.asarray(soap.create(AseAtomsAdaptor.get_atoms(s)), dtype=np.float64).ravel()
        rows.append(
            {(a, b): vec[soap.get_location((a, b))] for i, a in enumerate(species) for b in species[i:]}
        )
    return rows
