"""The checkpoint format, in one place.

* The crysk payload: what :meth:`~crysk.estimators.CrystalNet.save_pretrained`
  stores (weights, hyperparameters, featurizer settings, target scaler,
  best epoch) under ``format="crysk-checkpoint"``.
* Writing, atomically, and reading with ``torch.load(weights_only=True)``:
  no code from a file ever runs (numpy scalars, which CGCNN's classifier
  file holds, are rebuilt under a narrow allowlist of numpy globals).
* The original CGCNN ``.pth.tar`` layout (its hyperparameters inferred from
  the tensor shapes, its normaliser as a target scaler) and the released
  CrysAE (CrysXPP) autoencoder, a pickled module rebuilt from inert stand-in
  classes.
* :class:`WeightSource`: weights from any of these, or from a fitted
  estimator, with the graph settings they expect.

Weight matching and ``freeze=`` live in :mod:`crysk.transfer`; building an
estimator from a checkpoint (the registry, :func:`crysk.load`) in
:mod:`crysk.estimators.registry`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# defined in a leaf module so that crysk.pretrained (which this module asks about names) can raise it too
from ._errors import CheckpointError

__all__ = [
    "CheckpointError",
    "WeightSource",
    "CGCNN_DEFAULT_SETTINGS",
    "crysk_payload",
    "save_checkpoint",
    "load_checkpoint",
    "file_sha256",
    "locate_source",
    "read_weights",
    "cgcnn_hyperparameters",
    "cgcnn_task",
    "cgcnn_target_scaler_state",
    "scaler_state",
    "scaler_from_state",
]

FORMAT = "crysk-checkpoint"
FORMAT_VERSION = 1
#: Graph settings of the original CGCNN (and CrysXPP) code, which their files do not store.
CGCNN_DEFAULT_SETTINGS = {"radius": 8.0, "max_num_nbr": 12}
_CRYSAE_NODE_DECODER_REASON = (
    "skipped: the released CrysAE trained fc_atom_feature with a per-bit binary loss, "
    "crysk's CrysAE decoder uses a cross-entropy per atomic property"
)


# --------------------------------------------------------------------------- writing / reading
def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically.

    The data goes to a temporary file in the same folder, which is flushed to
    disk and then renamed over ``path``: a failure or an interruption midway
    leaves any previous file at ``path`` intact.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (its folder is created if needed).
    payload : mapping
        Only tensors, numbers, strings, booleans, None, lists, tuples and
        dicts, so that it loads with ``torch.load(weights_only=True)``.

    Returns
    -------
    pathlib.Path

    Notes
    -----
    In a data-parallel run (:mod:`crysk.distributed`) only rank 0 writes:
    every rank holds the same weights, and several processes replacing one
    file would race. The other ranks return ``path`` without writing.
    """
    from ._files import atomic_open
    from .distributed import rank

    path = Path(path)
    if rank() != 0:
        return path
    # the temporary file gets 0o666 & ~umask, as any file the user creates (mkstemp's 0o600 would survive the rename)
    with atomic_open(path) as fh:
        torch.save(dict(payload), fh)
    return path


def _torch_load(path: Path, **kwargs) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True, **kwargs)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """Read a checkpoint file with ``weights_only=True`` (never runs pickled code).

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    sha256 : str, optional
        The hex digest the file must have (a shipped pretrained model's);
        checked before anything in the file is read.

    Returns
    -------
    dict

    Raises
    ------
    CheckpointError
        If the file is missing, is not a torch file, holds pickled Python
        objects other than plain data, numpy scalars and tensors, or does
        not have the expected sha256.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a folder, not a checkpoint file: pass the checkpoint file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if sha256 is not None:
        found = file_sha256(path)
        if found != sha256.lower():
            raise CheckpointError(
                f"{str(path)!r} has sha256 {found[:16]}..., not the {sha256[:16]}... its model card records: the "
                "file is damaged or was replaced. Reinstall crysk (or regenerate the model with "
                "benchmarks/pretrain_zoo.py --finalize)"
            )
    not_torch = _not_a_torch_file(path)
    if not_torch:
        # refuse before torch.load, whose errors on such files mislead ("pop from empty list")
        raise CheckpointError(f"{str(path)!r} is not a crysk checkpoint: {not_torch}")
    allowed: list = []
    while True:
        try:
            with _ALLOWLIST_LOCK, torch.serialization.safe_globals(allowed):
                obj = _torch_load(path)
            break
        except pickle.UnpicklingError as exc:
            if "model.CrystalAE" in str(exc) and not allowed:
                return _load_released_crysae(path)
            if _NUMPY_SCALAR.search(str(exc)) and not allowed:
                # CGCNN's classifier stores its best AUC as a numpy float64: allow what rebuilds a numpy number
                allowed = _numpy_scalar_globals()
                continue
            found = re.search(r"GLOBAL [\w.]+", str(exc))
            if found is None:
                raise CheckpointError(f"cannot read {str(path)!r} as a torch checkpoint: {_last_line(exc)}") from exc
            raise CheckpointError(
                f"{str(path)!r} holds pickled Python objects, not just weights and numbers ({found.group(0)}). "
                "crysk loads weights only and never runs code from a file: re-save the model's "
                "state_dict (or use est.save_pretrained)"
            ) from exc
        except Exception as exc:
            raise CheckpointError(f"cannot read {str(path)!r} as a torch checkpoint: {_first_line(exc)}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dictionary")
    return dict(obj)


# every file torch.save writes starts with one of these: a zip archive, or the legacy
# format's pickled magic number
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")
_COMPRESSED = {b"\x1f\x8b": "gzip", b"\x78\x01": "zlib", b"\x78\x9c": "zlib", b"\x78\xda": "zlib",
               b"BZh": "bz2", b"\xfd7zXZ": "xz", b"\x04\x22\x4d\x18": "lz4"}


def _not_a_torch_file(path: Path) -> str | None:
    """What the file is, with the fix, when its first bytes show it is no torch file; else None."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_TORCH_HEADERS[0]):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if names and all(n.endswith(".npy") for n in names):
            return ("it is a numpy .npz file (e.g. crystal graphs from `crysk featurize`), not a model; "
                    "pass the model first and the graphs after it")
        return None
    if head.startswith(_TORCH_HEADERS[1]):
        return None
    if not head:
        return "the file is empty (an interrupted copy or save?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return ("it is a Python pickle (e.g. joblib.dump or pickle.dump of an estimator or Pipeline); "
                "load it in Python with joblib.load (only if you trust its source), or save the model "
                "with est.save_pretrained(path)")
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            return (f"it is {kind}-compressed data (e.g. joblib.dump(..., compress=...)); load it in Python "
                    "with joblib.load (only if you trust its source), or save the model with est.save_pretrained(path)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None  # unknown binary: let torch.load try and report
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    if text.lstrip().startswith("data_") or "_cell_length_a" in text:
        return "it is a CIF file (a structure): pass it as a structure to predict on, not as the model"
    return f"it is a text file (it starts with {first!r}), not a model saved by crysk or CGCNN"


def _last_line(exc: BaseException) -> str:
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    return text[-1] if text else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _StandInCrystalAE(torch.nn.Module):  # inert: no forward, no code from the file
    pass


class _StandInConvLayer(torch.nn.Module):
    pass


# torch's allow-list of classes for weights_only loading is process-wide; crysk's own loads take turns
_ALLOWLIST_LOCK = threading.Lock()
_NUMPY_SCALAR = re.compile(r"GLOBAL numpy\.(_?core)\.multiarray\.scalar\b")


def _numpy_scalar_globals() -> list:
    """The globals that rebuild a pickled numpy float/int scalar, and nothing else.

    A numpy scalar pickles as ``numpy.core.multiarray.scalar(dtype, bytes)``
    (``numpy._core`` since numpy 2): that function, ``numpy.dtype`` and the
    dtype classes of the plain numeric types. They build values, never run
    code from the file.
    """
    from numpy._core.multiarray import scalar

    dtypes = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.bool_]
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *{type(np.dtype(t)) for t in dtypes},
    ]


def _load_released_crysae(path: Path) -> dict:
    """Rebuild the released CrysAE module from inert stand-ins and return its weights.

    The file is a whole pickled ``model.CrystalAE`` (CrysXPP code). Empty
    ``torch.nn.Module`` subclasses stand in for the project's classes, named
    ``model.CrystalAE``/``model.ConvLayer`` in torch's weights-only
    allow-list only, so the unpickler restores the tensors without
    importing or running their code, and no module named ``model`` is ever
    looked up or installed (a user's own ``model`` module stays untouched).
    """
    allowed = [
        (_StandInCrystalAE, "model.CrystalAE"),
        (_StandInConvLayer, "model.ConvLayer"),
        torch.nn.Linear,
        torch.nn.Bilinear,
        torch.nn.ModuleList,
        torch.nn.BatchNorm1d,
        torch.nn.Sigmoid,
        torch.nn.Softplus,
        set,
    ]
    try:
        with _ALLOWLIST_LOCK, torch.serialization.safe_globals(allowed):
            module = _torch_load(path)
    except Exception as exc:
        raise CheckpointError(f"cannot read the CrysAE checkpoint {str(path)!r}: {_first_line(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise CheckpointError(f"{str(path)!r} did not hold a CrysAE module")
    return {"format": "crysae-released", "state_dict": OrderedDict(module.state_dict())}


# --------------------------------------------------------------------------- sources of weights
@dataclass
class WeightSource:
    """Weights to transfer, with what is known about how they were made.

    Parameters
    ----------
    state_dict : OrderedDict of str to torch.Tensor
        The weights, by parameter name.
    kind : str
        ``"crysk"``, ``"cgcnn"`` (original CGCNN file), ``"crysxpp"``
        (original CrysXPP predictor), ``"crysae-released"`` or ``"estimator"``.
    graph_settings : dict
        ``radius``, ``max_num_nbr`` and ``element_table`` the weights expect.
    description : str
        Where the weights came from, for messages.
    checkpoint : dict or None
        The whole checkpoint, when read from a file.
    skipped : dict of str to str
        Source tensors that must not be loaded even where a target tensor has
        the same name and shape, with the reason (e.g. a layer trained for
        another loss than crysk's layer of that name).
    task : {"regression", "classification"} or None
        What the weights' output layer was trained for (None: no output
        layer, or not known); a model for the other task does not take it.
    """

    state_dict: "OrderedDict[str, torch.Tensor]"
    kind: str
    graph_settings: dict
    description: str
    checkpoint: dict | None = None
    skipped: dict = field(default_factory=dict)
    task: str | None = None


def _cgcnn_settings() -> dict:
    from .elements import element_table_id

    return {**CGCNN_DEFAULT_SETTINGS, "element_table": element_table_id()}


def read_weights(source: Any) -> WeightSource:
    """Read weights from a checkpoint path or a fitted crysk estimator.

    Parameters
    ----------
    source : str, os.PathLike, fitted estimator or WeightSource
        A crysk checkpoint (``save_pretrained``), an original CGCNN
        ``.pth.tar`` checkpoint, an original CrysXPP predictor
        (``model_best.pth.tar``, whose ``mask`` becomes ``selector.weight``),
        the released CrysAE ``model_pretrain.pth``, or a fitted crysk
        estimator. The CrysAE's ``fc_atom_feature`` is marked as skipped
        (:attr:`WeightSource.skipped`): the authors trained it with a per-bit
        binary loss, while crysk's CrysAE node decoder of that name is
        trained with a cross-entropy per atomic property, so the weights
        would mean something else there.

    Returns
    -------
    WeightSource

    Raises
    ------
    CheckpointError
        If the source cannot be read or is not a model.
    """
    if isinstance(source, WeightSource):
        return source
    if hasattr(source, "module_") and hasattr(source, "graph_settings"):
        if not getattr(source, "initialized_", False):
            raise CheckpointError(f"cannot warm-start from an unfitted {type(source).__name__}; fit it first")
        state = OrderedDict((k, v.detach().cpu().clone()) for k, v in source.module_.state_dict().items())
        return WeightSource(
            state,
            "estimator",
            dict(source.graph_settings),
            f"a fitted {type(source).__name__}",
            task=getattr(source, "_task", None),
        )
    if hasattr(source, "fit") and hasattr(source, "get_params"):
        raise CheckpointError(f"cannot warm-start from an unfitted {type(source).__name__}; fit it first")
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(
            f"warm_start_from must be a checkpoint path, a pretrained model's name or a fitted crysk estimator, "
            f"got {type(source).__name__}"
        )
    path, sha256, pretrained = locate_source(source)
    ckpt = load_checkpoint(path, sha256=sha256)
    name = str(source)
    if pretrained is not None:
        name = f"pretrained model {pretrained!r}"
    if ckpt.get("format") == FORMAT:
        # classifiers store their classes, regressors their target scaler; CrysAE neither
        task = "classification" if "classes" in ckpt else "regression" if "target_scaler" in ckpt else None
        return WeightSource(
            OrderedDict(ckpt["state_dict"]),
            "crysk",
            dict(ckpt["graph_settings"]),
            name if pretrained is not None else f"crysk checkpoint {name!r}",
            ckpt,
            task=task,
        )
    if ckpt.get("format") == "crysae-released":
        return WeightSource(
            ckpt["state_dict"],
            "crysae-released",
            _cgcnn_settings(),
            f"released CrysAE {name!r}",
            ckpt,
            skipped={n: _CRYSAE_NODE_DECODER_REASON for n in ckpt["state_dict"] if n.startswith("fc_atom_feature.")},
        )
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping) and "mask" in ckpt["state_dict"]:
        # the original CrysXPP predictor calls its feature selector `mask`; crysk's is `selector.weight`
        state = OrderedDict(("selector.weight" if k == "mask" else k, v) for k, v in ckpt["state_dict"].items())
        return WeightSource(state, "crysxpp", _cgcnn_settings(), f"CrysXPP predictor {name!r}", ckpt, task="regression")
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        return WeightSource(
            OrderedDict(ckpt["state_dict"]),
            "cgcnn",
            _cgcnn_settings(),
            f"CGCNN checkpoint {name!r}",
            ckpt,
            task=cgcnn_task(ckpt),
        )
    raise CheckpointError(
        f"{name!r} is not a crysk, CGCNN, CrysXPP or CrysAE checkpoint (keys: {sorted(ckpt)[:8]}); "
        "crysk reads files written by save_pretrained, CGCNN's .pth.tar and CrysXPP's model_best.pth.tar "
        "and model_pretrain.pth"
    )


def locate_source(source: str | os.PathLike) -> tuple[Path, str | None, str | None]:
    """Where a checkpoint given by path or by pretrained model name is.

    A path that exists wins; otherwise a string that looks like a name (no
    folder separator, no extension) is looked up in :mod:`crysk.pretrained`.

    Parameters
    ----------
    source : str or os.PathLike
        A checkpoint path or a pretrained model's name (``"cgcnn-mp-eform"``).

    Returns
    -------
    (pathlib.Path, str or None, str or None)
        The file, the sha256 it must have (pretrained models) and the
        pretrained model's name (None for a path).

    Raises
    ------
    CheckpointError
        For a name that is no pretrained model (the message lists the names)
        or a planned model not shipped in this version.
    """
    path = Path(source)
    if path.exists() or not isinstance(source, str):
        return path, None, None
    from . import pretrained

    if not pretrained.looks_like_name(source):
        return path, None, None
    weights, sha256 = pretrained.locate(source)
    return weights, sha256, source


# --------------------------------------------------------------------------- the crysk payload
def crysk_payload(
    estimator: str,
    params: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    graph_settings: Mapping[str, Any],
    best_epoch: int | None,
    state: Mapping[str, Any],
) -> dict:
    """The dictionary a crysk checkpoint holds (format version 1).

    Parameters
    ----------
    estimator : str
        The estimator's registered class name (see
        :func:`crysk.estimators.registry.register_estimator`).
    params : mapping
        Its hyperparameters, plain values only.
    state_dict : mapping of str to torch.Tensor
        The network's weights (moved to the CPU here).
    graph_settings : mapping
        The featurizer settings the weights expect.
    best_epoch : int or None
        The epoch whose weights these are.
    state : mapping
        Further fitted state of the estimator (e.g. ``target_scaler``,
        ``n_outputs``, ``y_ndim`` for regressors; ``classes`` and
        ``class_weight`` for classifiers).

    Returns
    -------
    dict
        Only tensors and plain data, so it loads with ``weights_only=True``.
    """
    from ._version import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "crysk_version": __version__,
        "estimator": estimator,
        "params": dict(params),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "graph_settings": dict(graph_settings),
        "best_epoch": None if best_epoch is None else int(best_epoch),
        **state,
    }


# --------------------------------------------------------------------------- the original CGCNN layout
def cgcnn_hyperparameters(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The original CGCNN's hyperparameters, read from its tensor shapes.

    Its ``.pth.tar`` files store weights and an optimiser, not the network's
    shape; the shapes give it.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        The weights of an original CGCNN checkpoint.

    Returns
    -------
    dict
        ``atom_fea_len``, ``n_conv``, ``h_fea_len`` and ``n_h`` (the
        :class:`~crysk.CGCNNRegressor` parameters of the same names).
    """
    n_conv = len({k.split(".")[1] for k in state_dict if k.startswith("convs.")})
    fcs = len({k.split(".")[1] for k in state_dict if k.startswith("fcs.")})
    return {
        "atom_fea_len": int(state_dict["embedding.weight"].shape[0]),
        "n_conv": n_conv,
        "h_fea_len": int(state_dict["conv_to_fc.weight"].shape[0]),
        "n_h": fcs + 1,
    }


def cgcnn_task(checkpoint: Mapping[str, Any]) -> str:
    """Whether an original CGCNN checkpoint is a regression or a classification model.

    Parameters
    ----------
    checkpoint : mapping
        An original CGCNN checkpoint; its ``args`` (a dict) hold ``task``.

    Returns
    -------
    str
        ``"classification"`` or ``"regression"`` (the CGCNN code's default,
        also when the file stores no ``args``).
    """
    args = checkpoint.get("args")
    task = args.get("task") if isinstance(args, Mapping) else None
    return "classification" if task == "classification" else "regression"


def cgcnn_target_scaler_state(checkpoint: Mapping[str, Any]) -> dict:
    """The original CGCNN's target normaliser as crysk's fitted-state entries.

    Parameters
    ----------
    checkpoint : mapping
        An original CGCNN checkpoint (``state_dict`` and, when it was a
        regression, ``normalizer`` with ``mean`` and ``std``).

    Returns
    -------
    dict
        ``n_outputs``, ``y_ndim`` and ``target_scaler`` (a standard scaler,
        the identity when the file has no normaliser).
    """
    n_outputs = int(checkpoint["state_dict"]["fc_out.weight"].shape[0])
    norm = checkpoint.get("normalizer") or {"mean": 0.0, "std": 1.0}
    scaler = {"kind": "standard", "mean": [float(norm["mean"])] * n_outputs, "scale": [float(norm["std"])] * n_outputs}
    return {"n_outputs": n_outputs, "y_ndim": 1, "target_scaler": scaler}


def source_target_scaler(source: Any, n_outputs: int) -> Any:
    """The fitted target scaler of a warm-start source (``target_scaler="source"``).

    Continuing to train a model on more data of the **same** property must
    keep the source's scaling: a scaler refitted on the new targets would
    change what the transferred output layer's numbers mean, and the model
    would start from wrong predictions.

    Parameters
    ----------
    source : str, os.PathLike, fitted estimator or WeightSource
        What ``warm_start_from`` names: a fitted crysk regressor, a crysk
        regression checkpoint or pretrained model's name, or an original
        CGCNN regression checkpoint (its ``normalizer``).
    n_outputs : int
        Number of targets the new ``y`` has.

    Returns
    -------
    transformer
        A fitted scaler (a copy; the source is not changed).

    Raises
    ------
    CheckpointError
        If the source has no target scaler (a CrysAE, a classifier, the
        CrysXPP authors' files) or scales another number of targets.
    """
    import copy

    if hasattr(source, "target_scaler_") and hasattr(source, "n_outputs_"):
        scaler, found, where = copy.deepcopy(source.target_scaler_), int(source.n_outputs_), f"a fitted {type(source).__name__}"
    else:
        weights = read_weights(source)
        ckpt, where = weights.checkpoint or {}, weights.description
        if weights.kind == "crysk" and "target_scaler" in ckpt:
            state, found = ckpt["target_scaler"], int(ckpt["n_outputs"])
        elif weights.kind == "cgcnn" and weights.task == "regression":
            entries = cgcnn_target_scaler_state(ckpt)
            state, found = entries["target_scaler"], entries["n_outputs"]
        else:
            raise CheckpointError(
                f"target_scaler='source' takes the scaler of a regression model, but {where} has none "
                "(an autoencoder, a classifier or a file without a normaliser): use target_scaler='standard' "
                "(or 'tanh'), which learns the scaling from your targets"
            )
        scaler = scaler_from_state(state, found)
    if found != n_outputs:
        raise CheckpointError(
            f"target_scaler='source': {where} scales {found} target(s) but y has {n_outputs}; the source's "
            "scaling only applies to the same properties: use target_scaler='standard' for new ones"
        )
    return scaler


# --------------------------------------------------------------------------- target scalers
def scaler_state(scaler: Any) -> dict:
    """A weights-only description of a fitted target scaler.

    Parameters
    ----------
    scaler : fitted StandardScaler, TanhScaler or identity FunctionTransformer
        The estimator's ``target_scaler_``.

    Returns
    -------
    dict

    Raises
    ------
    CheckpointError
        For scalers that cannot be stored without pickling code.
    """
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from .targets import TanhScaler

    if isinstance(scaler, StandardScaler):
        return {
            "kind": "standard",
            "mean": scaler.mean_.tolist() if scaler.with_mean else None,
            "scale": scaler.scale_.tolist() if scaler.with_std else None,
        }
    if isinstance(scaler, TanhScaler):
        return {
            "kind": "tanh", "mean": scaler.mean_.tolist(), "std": scaler.std_.tolist(), "scale": scaler.scale,
            "out_mean": scaler.out_mean_.tolist(), "out_std": scaler.out_std_.tolist(),
        }
    if isinstance(scaler, FunctionTransformer) and scaler.func is None and scaler.inverse_func is None:
        return {"kind": "none"}
    raise CheckpointError(
        f"a {type(scaler).__name__} target scaler cannot be stored in a weights-only checkpoint; "
        "use target_scaler='standard', 'tanh' or None"
    )


def scaler_from_state(state: Mapping[str, Any], n_outputs: int) -> Any:
    """Rebuild a fitted target scaler from :func:`scaler_state`.

    Parameters
    ----------
    state : mapping
        What :func:`scaler_state` returned.
    n_outputs : int
        Number of targets the scaler handles.

    Returns
    -------
    transformer
    """
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from .targets import TanhScaler

    kind = state.get("kind")
    if kind == "standard":
        scaler = StandardScaler(with_mean=state["mean"] is not None, with_std=state["scale"] is not None)
        scaler.mean_ = None if state["mean"] is None else np.asarray(state["mean"], dtype=np.float64)
        scaler.scale_ = None if state["scale"] is None else np.asarray(state["scale"], dtype=np.float64)
        scaler.var_ = None if scaler.scale_ is None else scaler.scale_**2
        scaler.n_features_in_ = n_outputs
        scaler.n_samples_seen_ = 0
        return scaler
    if kind == "tanh":
        # checkpoints saved before TanhScaler standardized its output have no out_mean: they were trained
        # on eq. 6's values themselves
        standardized = state.get("out_mean") is not None
        scaler = TanhScaler(scale=state["scale"], standardize=standardized)
        scaler.mean_ = np.asarray(state["mean"], dtype=np.float64)
        scaler.std_ = np.asarray(state["std"], dtype=np.float64)
        scaler.out_mean_ = np.asarray(state["out_mean"] if standardized else np.zeros(n_outputs), dtype=np.float64)
        scaler.out_std_ = np.asarray(state["out_std"] if standardized else np.ones(n_outputs), dtype=np.float64)
        scaler.n_features_in_ = n_outputs
        return scaler
    if kind == "none":
        return FunctionTransformer(validate=False).fit(np.zeros((1, n_outputs)))
    raise CheckpointError(f"unknown target scaler {kind!r} in checkpoint")

