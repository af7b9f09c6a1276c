"""The registry of crysk estimator classes and :func:`load`: from a checkpoint file to a fitted estimator.

Each estimator class registers itself by name (:func:`register_estimator`);
a crysk checkpoint names its class, and :func:`estimator_from_checkpoint`
rebuilds it with the stored hyperparameters and fitted state. The file
format itself is :mod:`crysk.checkpoints`'.
"""

from __future__ import annotations

import os
from typing import Any

from ..checkpoints import (
    CGCNN_DEFAULT_SETTINGS,
    CheckpointError,
    WeightSource,
    cgcnn_hyperparameters,
    cgcnn_target_scaler_state,
    read_weights,
)
from ..featurizer import graph_settings

__all__ = ["register_estimator", "registered_estimators", "estimator_from_checkpoint", "from_pretrained_estimator",
           "load", "plain_params"]

_REGISTRY: dict[str, type] = {}
_SIMPLE = (bool, int, float, str, type(None))
# parameters that describe a run, not the model: a loaded model gets the defaults
_NOT_STORED = {"warm_start_from", "warm_start_include", "freeze", "callbacks", "module", "criterion", "dataset", "iterator_train",
               "iterator_valid", "train_split", "verbose", "n_jobs", "n_threads", "malloc_tuning"}
# parameters that shape the network's tensors: changing one means the saved weights no longer all fit
_SHAPE_PARAMS = ("atom_fea_len", "n_conv", "h_fea_len", "n_h", "pair_fea_len", "feature_selector", "embedding_bias")


def register_estimator(cls: type) -> type:
    """Make ``cls`` loadable from checkpoints by its class name (a class decorator).

    Parameters
    ----------
    cls : type
        A crysk estimator class.

    Returns
    -------
    type
        ``cls``, unchanged.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_estimators() -> dict[str, type]:
    """The estimator classes a checkpoint may name.

    Returns
    -------
    dict of str to type
        Class name to class.
    """
    return dict(_REGISTRY)


def plain_params(est: Any) -> dict:
    """The hyperparameters a checkpoint stores: plain values only (no classes or objects).

    Parameters
    ----------
    est : estimator
        A crysk estimator.

    Returns
    -------
    dict
        Parameter name to value (sequences as lists).
    """
    out = {}
    for name, value in est.get_params(deep=False).items():
        if name in _NOT_STORED or name.startswith("_") or "__" in name:
            continue
        if isinstance(value, _SIMPLE):
            out[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, _SIMPLE) for v in value):
            out[name] = list(value)
    return out


def estimator_from_checkpoint(source: WeightSource, **params: Any) -> Any:
    """Build a fitted estimator from weights read from a file.

    Parameters
    ----------
    source : WeightSource
        A crysk checkpoint, an original CGCNN one or an original CrysXPP
        predictor, as read by
        :func:`crysk.checkpoints.read_weights`.
    **params
        Hyperparameters to override.

    Returns
    -------
    estimator
        A fitted crysk estimator.

    Raises
    ------
    CheckpointError
        For an unknown estimator class, other graph settings, or weights that
        do not fit the estimator's own hyperparameters.
    """
    ckpt = source.checkpoint or {}
    if source.kind == "crysk":
        cls = _REGISTRY.get(ckpt["estimator"])
        if cls is None:
            raise CheckpointError(f"unknown estimator {ckpt['estimator']!r} in {source.description}")
        stored = dict(ckpt["params"])
        if stored.get("lr_milestones") is not None:
            stored["lr_milestones"] = tuple(stored["lr_milestones"])
        est = cls(**{**stored, **params})
        est._restore_checkpoint_state(ckpt)
        best_epoch = ckpt.get("best_epoch")
        if est.graph_settings != source.graph_settings:
            raise CheckpointError(
                f"{source.description} was made with graph settings {source.graph_settings}, "
                f"but the estimator would use {est.graph_settings}"
            )
    elif source.kind == "cgcnn":
        classifier = source.task == "classification"
        cls = _REGISTRY["CGCNNClassifier" if classifier else "CGCNNRegressor"]
        est = cls(**{**cgcnn_hyperparameters(source.state_dict), **params})
        if est.graph_settings != graph_settings(**CGCNN_DEFAULT_SETTINGS):
            raise CheckpointError(f"{source.description} needs radius 8.0 and max_num_nbr 12 (CGCNN's defaults)")
        if classifier:
            # CGCNN's classification labels are the integers 0 .. n_classes - 1 (id_prop.csv's second column)
            est._restore_checkpoint_state({"classes": list(range(int(source.state_dict["fc_out.weight"].shape[0])))})
        else:
            est._restore_checkpoint_state(cgcnn_target_scaler_state(ckpt))
        best_epoch = ckpt.get("epoch")
    elif source.kind == "crysxpp":
        est, best_epoch = _original_crysxpp(source, params)
    else:
        raise CheckpointError(
            f"{source.description} holds an encoder, not a whole model; use it as warm_start_from= instead"
        )
    est.initialize()
    missing, unexpected = est.module_.load_state_dict(dict(source.state_dict), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"{source.description} does not fit a {type(est).__name__} with its own hyperparameters "
            f"(missing {missing}, unexpected {unexpected})"
        )
    est.best_epoch_ = best_epoch
    est.graph_settings_ = est.graph_settings
    return est


def from_pretrained_estimator(estimator_class: type, name_or_path: Any, **params: Any) -> Any:
    """What ``estimator_class.from_pretrained(name_or_path, **params)`` returns (see ``CrystalNet.from_pretrained``).

    Parameters
    ----------
    estimator_class : type
        The estimator class asked for.
    name_or_path : str or os.PathLike
        A pretrained model's name or a checkpoint path.
    **params
        Hyperparameters to change.

    Returns
    -------
    estimator
        Fitted when ``params`` keep the network's shape; otherwise unfitted,
        with the source's architecture, ``params`` and
        ``warm_start_from=name_or_path``.

    Raises
    ------
    CheckpointError
        For an unknown name, an unreadable file, or (fitted case) a model of
        another class.
    """
    source = read_weights(name_or_path)
    plain = {k: v for k, v in params.items() if k not in _SHAPE_PARAMS}
    saved = estimator_from_checkpoint(source, **plain)
    changes = {k: v for k, v in params.items() if k in _SHAPE_PARAMS and getattr(saved, k, v) != v}
    if not changes:
        if not isinstance(saved, estimator_class):
            raise CheckpointError(
                f"{source.description} holds a {type(saved).__name__}, not a {estimator_class.__name__}"
            )
        return saved
    # a new shape: the source's architecture and graph settings, the class's training defaults, the changes
    accepted = set(estimator_class().get_params(deep=False))
    keys = (*_SHAPE_PARAMS, "radius", "max_num_nbr")
    shape = {k: getattr(saved, k) for k in keys if k in accepted and hasattr(saved, k)}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"{estimator_class.__name__} has no parameters {unknown}")
    return estimator_class(**{**shape, **params, "warm_start_from": name_or_path})


def load(path: str | os.PathLike) -> Any:
    """Load a ready-to-predict estimator from a pretrained model's name or a checkpoint file.

    Parameters
    ----------
    path : str or os.PathLike
        The name of a pretrained model shipped with crysk
        (:func:`crysk.pretrained.available`; its sha256 is checked, and a
        path that exists wins over a name), a crysk checkpoint (``save_pretrained``), an original CGCNN
        ``.pth.tar`` checkpoint or an original CrysXPP predictor
        (``model_best.pth.tar``); the original regression files predict in
        original units with their stored normaliser, and an original CGCNN
        classifier (``task: 'classification'`` in its ``args``, such as
        ``semi-metal-classification.pth.tar``) becomes a
        :class:`~crysk.CGCNNClassifier` with classes ``[0, 1]``.

    Returns
    -------
    estimator
        A fitted crysk estimator.

    Raises
    ------
    CheckpointError
        If the file cannot be read or holds no whole model.
    """
    return estimator_from_checkpoint(read_weights(path))


def _original_crysxpp(source: WeightSource, params: dict) -> tuple[Any, int | None]:
    """A ``CrysXPPRegressor`` shaped like an original CrysXPP predictor (``model_best.pth.tar``)."""
    ckpt = source.checkpoint or {}
    state = source.state_dict
    shape = cgcnn_hyperparameters(state)
    # the authors' predictor: embedding with bias, selector only if it has a mask, L1 as a mean
    shape.update(
        embedding_bias="embedding.bias" in state,
        feature_selector="selector.weight" in state,
        l1_reduction="mean",
    )
    est = _REGISTRY["CrysXPPRegressor"](**{**shape, **params})
    if est.graph_settings != graph_settings(**CGCNN_DEFAULT_SETTINGS):
        raise CheckpointError(f"{source.description} needs radius 8.0 and max_num_nbr 12 (CrysXPP's defaults)")
    est._restore_checkpoint_state(cgcnn_target_scaler_state(ckpt))
    epoch = ckpt.get("epoch")
    return est, None if epoch is None else int(epoch)
