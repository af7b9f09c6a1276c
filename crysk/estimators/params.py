"""The scikit-learn parameter contract of the crysk estimators, on top of skorch's.

skorch's ``NeuralNet`` takes every instance attribute as a parameter (its own
bookkeeping included), prints its module in ``repr`` and clones a fitted
``warm_start_from`` estimator into an unfitted one. :class:`ParamsMixin`
gives the crysk estimators scikit-learn's behaviour instead: ``get_params``
lists the constructor's parameters and the skorch arguments the user
changed, ``repr`` shows what the user set, ``clone`` passes a fitted weight
source on by reference, and nothing here checks or builds anything.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from sklearn.base import BaseEstimator, clone

from .data import GraphBatchIterator, GraphDataset

__all__ = ["ParamsMixin"]

# skorch arguments that crysk's own machinery replaces: skorch's signature accepts them, but any value
# other than crysk's would be ignored, so fit refuses it (with what to do instead)
_REPLACED = {
    "iterator_train": (GraphBatchIterator, "crysk batches the graphs on the device itself; set batch_size"),
    "iterator_valid": (GraphBatchIterator, "crysk batches the graphs on the device itself; set batch_size"),
    "dataset": (GraphDataset, "crysk builds its datasets from the graphs"),
    "predict_nonlinearity": ("auto", "predictions are the network outputs in the targets' units"),
    "warm_start": (False, "use partial_fit to continue training, or warm_start_from= to start from weights"),
}
_REPLACED_PREFIXES = ("iterator_train__", "iterator_valid__", "dataset__")


def _same(value: Any, default: Any) -> bool:
    """Whether ``value`` is ``default``: the same object, or an equal plain value."""
    if value is default:
        return True
    plain = (bool, int, float, str, type(None))
    return type(value) is type(default) and isinstance(value, plain) and value == default


def _is_estimator(obj: Any) -> bool:
    return hasattr(obj, "fit") and hasattr(obj, "get_params") and not isinstance(obj, type)


class ParamsMixin:
    """scikit-learn's parameter handling for a skorch ``NeuralNet`` subclass (put it first in the bases).

    The host class sets ``_default_module`` (the network class it builds).
    """

    def _skorch_defaults(self) -> dict[str, Any]:
        """skorch's own arguments with crysk's values for them (they stay out of ``get_params`` unless changed)."""
        return {
            "module": self._default_module,
            "criterion": None,
            "train_split": None,
            "callbacks": None,
            "iterator_train": GraphBatchIterator,
            "iterator_valid": GraphBatchIterator,
            "dataset": GraphDataset,
            "predict_nonlinearity": "auto",
            "warm_start": False,
            "compile": False,
            "use_caching": "auto",
            "torch_load_kwargs": None,
        }

    def _get_param_names(self) -> list[str]:
        # skorch takes every instance attribute not ending in "_" as a parameter, its own bookkeeping
        # (_params_to_validate) included. crysk's parameters are its constructor's, plus the skorch
        # arguments given a value other than crysk's and the routed ones (module__*, optimizer__*, ...)
        signature = inspect.signature(type(self).__init__).parameters.values()
        names = {p.name for p in signature if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        attrs = vars(self)
        names |= {k for k, d in self._skorch_defaults().items() if k in attrs and not _same(attrs[k], d)}
        names |= {k for k in attrs if "__" in k and not k.startswith("_")}
        names |= {k for k in getattr(self, "_params_to_validate", ()) if k in attrs}
        return sorted(names)

    def set_params(self, **params: Any) -> "ParamsMixin":
        """Set parameters (scikit-learn's ``set_params``; nothing is checked or built here).

        Parameters
        ----------
        **params
            Constructor parameters by name, skorch arguments (``criterion``,
            ``train_split``, ``callbacks`` ...) and routed ones
            (``optimizer__nesterov``, ``callbacks__print_log__sink`` ...).

        Returns
        -------
        self
        """
        skorch_args = {k: params.pop(k) for k in list(params) if k in self._skorch_defaults() and k != "callbacks"}
        # skorch's arguments at crysk's values are not in get_params, so BaseEstimator.set_params would
        # refuse them; they are plain attributes, read when fitting
        for name, value in skorch_args.items():
            setattr(self, name, value)
        return super().set_params(**params) if params else self

    def __repr__(self) -> str:
        # scikit-learn's repr (the parameters the user changed), not skorch's list of module attributes
        return BaseEstimator.__repr__(self)

    def __sklearn_clone__(self) -> "ParamsMixin":
        """Clone as scikit-learn does, passing a fitted ``warm_start_from`` estimator by reference.

        A fitted estimator given as ``warm_start_from`` is the source of the
        weights, not a sub-estimator to refit: ``clone`` would turn it into
        an unfitted copy, and every clone made by ``cross_val_score``,
        ``GridSearchCV`` or :func:`crysk.evaluation.compare` would then have
        nothing to start from. Its weights are read at each ``fit``.

        Returns
        -------
        estimator
            An unfitted estimator with the same parameters.
        """
        params = self.get_params(deep=False)
        source = params.get("warm_start_from")
        if not _is_estimator(source):
            return super().__sklearn_clone__()
        new_params = {k: v if k == "warm_start_from" else clone(v, safe=False) for k, v in params.items()}
        new = type(self)(**new_params)
        if hasattr(self, "_metadata_request"):
            new._metadata_request = copy.deepcopy(self._metadata_request)
        return new

    def _check_skorch_arguments(self) -> None:
        """Refuse values of the skorch arguments crysk replaces (they would be ignored)."""
        for name, (default, instead) in _REPLACED.items():
            if not _same(getattr(self, name, default), default):
                raise ValueError(f"{name}={getattr(self, name)!r} is not used by crysk estimators: {instead}")
        routed = sorted(k for k in vars(self) if k.startswith(_REPLACED_PREFIXES))
        if routed:
            raise ValueError(f"{routed} are not used by crysk estimators: crysk batches the graphs itself")
