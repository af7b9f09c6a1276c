"""SOAPKernelRidge: ridge regression on a normalised SOAP kernel (DScribe)."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymatgen.core import Structure
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GridSearchCV, KFold

from .._validation import check_number
from ..graphs import CrystalGraphs
from ..parallel import map_chunks
from ..structures import as_structure_list

__all__ = ["SOAPKernelRidge"]


def _inner_cv(cv, random_state):
    """An integer ``cv`` as a shuffled KFold; any other splitter as is."""
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        # shuffled: data files are often sorted (by id, formula or target)
        return KFold(n_splits=int(cv), shuffle=True, random_state=random_state)
    return cv


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

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the predictions (scikit-learn's regressor score).

        Parameters
        ----------
        X : collection of structures
            The crystals to predict.
        y : array-like of shape (n_crystals,)
            Their true targets.
        sample_weight : array-like of shape (n_crystals,), optional
            Weights of the crystals in R².

        Returns
        -------
        float
        """
        return super().score(X, y, sample_weight=sample_weight)

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
