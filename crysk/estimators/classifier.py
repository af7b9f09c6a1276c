"""CrystalNetClassifier: classes, class weights and the classifier API shared by the crysk classifiers.

The network has one output per class (two for a binary problem, as the
original CGCNN classifier has): its outputs are logits, trained with the
cross-entropy (CGCNN's ``LogSoftmax`` + ``NLLLoss``), and
``predict_proba`` is their softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from skorch import NeuralNet

from .callbacks import ValidLogLoss
from .supervised import SupervisedNet

__all__ = ["CrystalNetClassifier"]


def _as_labels(y: Any, n: int, name: str) -> np.ndarray:
    if y is None:
        raise ValueError(f"{name} is required: this estimator is supervised")
    y = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per crystal), got shape {y.shape}; multi-label is not supported")
    if len(y) != n:
        raise ValueError(f"X has {n} crystals but {name} has {len(y)} labels; they must match one to one")
    if n == 0:
        raise ValueError("got no crystals to fit")
    return y


class CrystalNetClassifier(SupervisedNet, ClassifierMixin, NeuralNet):
    """Base class of the crysk graph-network classifiers (not used directly).

    Subclasses implement :meth:`_module_kwargs` (and set ``module``); the
    network gets one output per class (``n_outputs_``). All the scikit-learn
    classifier behaviour lives here: ``classes_`` from any labels (strings,
    integers, booleans), ``predict``, ``predict_proba``,
    ``decision_function``, ``score`` (accuracy), ``class_weight``, and the
    best epoch chosen on the validation log-loss.

    Parameters
    ----------
    module : type of torch.nn.Module, optional
        The network class; each subclass sets its own.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the training loss: None weighs every
        crystal alike; ``"balanced"`` weighs each class by
        ``n_crystals / (n_classes * count)``; a dict maps labels to weights
        (classes it leaves out weigh 1). The validation log-loss that picks
        the best epoch is unweighted.
    **kwargs
        The parameters of :class:`~crysk.estimators.CrystalNet`.
    """

    _monitor = "valid_log_loss_best"
    _task = "classification"
    #: the validation_fraction split keeps the class proportions
    _stratified_split = True

    def __init__(self, module: Any = None, *, class_weight: Any = None, **kwargs: Any):
        super().__init__(module, **kwargs)
        self.class_weight = class_weight

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        super()._check_params(fit_params)
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {cw!r}")

    def _extra_callbacks(self) -> list:
        return [("valid_log_loss", ValidLogLoss())]

    def _default_criterion(self) -> torch.nn.Module:
        weight = torch.as_tensor(self.class_weight_, dtype=torch.float32, device=self.device)
        return torch.nn.CrossEntropyLoss(weight=weight)

    # ------------------------------------------------------------------ targets
    def _fit_targets(self, y: Any, n: int) -> None:
        y = _as_labels(y, n, "y")
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class ({classes[0]!r}): a classifier needs crystals of at least two classes"
            )
        self.classes_ = classes
        self.n_outputs_ = len(classes)
        cw = self.class_weight
        if isinstance(cw, dict):
            unknown = [k for k in cw if k not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight names labels {unknown} that are not in y (classes {classes.tolist()})")
        self.class_weight_ = compute_class_weight(cw, classes=classes, y=y)

    def _targets_fitted(self) -> bool:
        return hasattr(self, "classes_")

    def _encode_targets(self, y: Any, n: int, name: str) -> np.ndarray:
        y = _as_labels(y, n, name)
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if unknown.any():
            raise ValueError(
                f"{name} has labels {np.unique(y[unknown]).tolist()[:5]} that the model was not fitted on "
                f"(classes {self.classes_.tolist()}); refit with all the classes"
            )
        return index.astype(np.int64)

    # ------------------------------------------------------------------ public API
    def decision_function(self, X: Any) -> np.ndarray:
        """Confidence scores: the network's logits (log-odds of class 1 for a binary problem).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to score.

        Returns
        -------
        numpy.ndarray of shape (n_crystals,) or (n_crystals, n_classes)
            Binary: ``logit(class 1) - logit(class 0)``, positive where
            class ``classes_[1]`` is predicted. Multiclass: one logit per
            class, in ``classes_`` order.
        """
        logits = self._network_outputs(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.

        Returns
        -------
        numpy.ndarray of shape (n_crystals, n_classes)
            Columns in ``classes_`` order; every row sums to 1.
        """
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithms of the class probabilities (CGCNN's ``LogSoftmax`` output).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.

        Returns
        -------
        numpy.ndarray of shape (n_crystals, n_classes)
            Columns in ``classes_`` order.
        """
        logits = torch.as_tensor(self._network_outputs(X))
        return torch.log_softmax(logits, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predict the most probable class of each crystal.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.

        Returns
        -------
        numpy.ndarray of shape (n_crystals,)
            Labels, of the type of ``classes_``.
        """
        return self.classes_[self._network_outputs(X).argmax(axis=1)]

    def _checkpoint_state(self) -> dict:
        return {"classes": self.classes_.tolist(), "class_weight": np.asarray(self.class_weight_).tolist()}

    def _restore_checkpoint_state(self, ckpt: dict) -> None:
        self.classes_ = np.asarray(ckpt["classes"])
        self.n_outputs_ = len(self.classes_)
        self.class_weight_ = np.asarray(ckpt.get("class_weight", [1.0] * self.n_outputs_), dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags
