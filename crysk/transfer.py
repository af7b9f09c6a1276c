"""Transfer of weights between models: matching by name and shape, and ``freeze=``.

Where the weights come from (crysk checkpoints, the original CGCNN and CrysAE
files, fitted estimators) is :mod:`crysk.checkpoints`' business;
:func:`transfer_weights` copies what fits into a new model and reports what
was transferred and what was initialised afresh, and :func:`resolve_freeze`
and :func:`resolve_tensors` turn ``freeze=`` and ``warm_start_include=``
specifications into tensor names.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .checkpoints import CheckpointError, WeightSource
from .featurizer import settings_differences

logger = logging.getLogger("crysk")

__all__ = ["TransferReport", "transfer_weights", "without_head", "resolve_freeze", "resolve_tensors", "encoder_shape",
           "ENCODER_PARAMS"]

#: the hyperparameters that shape the encoder (embedding and convolutions) of every crysk network
ENCODER_PARAMS = ("atom_fea_len", "n_conv")

# BatchNorm's counter is absent from old checkpoints and carries no knowledge
_IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclass
class TransferReport:
    """What a warm start did.

    Parameters
    ----------
    source : str
        Where the weights came from.
    loaded : list of str
        Target tensors copied from the source.
    initialized : list of str
        Target tensors left freshly initialised (absent from the source, or
        of another shape), with the reason in ``reasons``.
    unused : list of str
        Source tensors with no place in the target.
    reasons : dict of str to str
        Why each of ``initialized`` started fresh.
    adopted : dict of str to int
        Encoder hyperparameters taken from the source instead of the
        estimator's defaults (e.g. ``{"n_conv": 4}``).
    """

    source: str
    loaded: list = field(default_factory=list)
    initialized: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)
    adopted: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True if every tensor on both sides found its counterpart."""
        return not self.initialized and not self.unused

    def summary(self) -> str:
        """One paragraph for logs and errors."""
        lines = [f"warm start from {self.source}: {len(self.loaded)} tensors loaded"]
        if self.adopted:
            lines.append("encoder built like the source's: " + ", ".join(f"{k}={v}" for k, v in self.adopted.items()))
        if self.initialized:
            lines.append(
                "initialised afresh: " + ", ".join(f"{n} ({self.reasons.get(n, '')})" for n in self.initialized)
            )
        if self.unused:
            lines.append("not used from the source: " + ", ".join(self.unused))
        return "; ".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _ignored(name: str) -> bool:
    return name.endswith(_IGNORED_SUFFIXES)


def transfer_weights(
    module: torch.nn.Module,
    source: WeightSource,
    strict: bool = False,
    expected_settings: dict | None = None,
    include: Any = None,
) -> TransferReport:
    """Copy tensors from ``source`` into ``module`` where name and shape agree.

    Parameters
    ----------
    module : torch.nn.Module
        The freshly initialised target.
    source : WeightSource
        The weights to copy, as returned by :func:`read_weights`; tensors it
        marks as ``skipped`` are never loaded.
    strict : bool, default=False
        Raise instead of leaving any tensor on either side unmatched.
    expected_settings : dict, optional
        The target's graph settings; a source made with others is refused.
    include : None, str or list of str, default=None
        Which of the target's tensors may be loaded, in the language of
        ``freeze=`` (see :func:`resolve_tensors`): ``"embedding"``,
        ``"convs"``, ``"convs[:k]"``, ``"all-but-head"``, name prefixes or
        patterns. A spec covers a layer's buffers too (batch-norm
        statistics). ``None`` loads everything that matches.

    Returns
    -------
    TransferReport
        ``loaded`` lists the target tensors copied; ``initialized`` those
        left as initialised (not in the source, another shape, left out by
        ``include``, or skipped by the source); ``unused`` the source tensors
        that were not copied.

    Raises
    ------
    CheckpointError
        If the graph settings differ, or, with ``strict``, if anything does
        not match (the message lists every difference).
    ValueError
        If an ``include`` entry names no tensor of ``module``.
    """
    if expected_settings is not None:
        diffs = settings_differences(source.graph_settings, expected_settings)
        if diffs:
            raise CheckpointError(
                f"{source.description} was made with other featurizer settings (checkpoint "
                f"{', '.join(diffs)} for this model): "
                "its weights expect other graphs. Use the same radius/max_num_nbr as the checkpoint"
            )
    target = module.state_dict()
    allowed = None if include is None else set(resolve_tensors(module, include, "warm_start_include"))
    report = TransferReport(source.description)
    update = {}
    for name, tensor in target.items():
        if allowed is not None and name not in allowed:
            if not _ignored(name):
                report.initialized.append(name)
                report.reasons[name] = "left out by warm_start_include"
            continue
        if _ignored(name):
            if name in source.state_dict:
                update[name] = source.state_dict[name]
            continue
        if name in source.skipped:
            report.initialized.append(name)
            report.reasons[name] = source.skipped[name]
            continue
        if name not in source.state_dict:
            report.initialized.append(name)
            report.reasons[name] = "not in the source"
            continue
        src = source.state_dict[name]
        if tuple(src.shape) != tuple(tensor.shape):
            report.initialized.append(name)
            report.reasons[name] = f"shape {tuple(src.shape)} in the source, {tuple(tensor.shape)} here"
            continue
        update[name] = src
        report.loaded.append(name)
    report.unused = [n for n in source.state_dict if n not in update and not _ignored(n)]
    for name in report.unused:
        if name in source.skipped:
            report.reasons.setdefault(name, source.skipped[name])
    if strict and not report.complete:
        raise CheckpointError(f"warm_start_strict=True and the weights do not match exactly: {report.summary()}")
    if not report.loaded:
        raise CheckpointError(f"nothing in {source.description} fits this model: {report.summary()}")
    with torch.no_grad():
        for name, src in update.items():
            target[name].copy_(src.to(dtype=target[name].dtype))
    logger.info(report.summary())
    return report


def encoder_shape(state_dict: dict) -> dict[str, int]:
    """The encoder hyperparameters that a set of weights was made with, read from the tensor shapes.

    Every crysk network (and the original CGCNN and CrysXPP ones) names its
    element embedding ``embedding`` and its convolutions ``convs.<i>``.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        The weights.

    Returns
    -------
    dict
        ``atom_fea_len`` and ``n_conv``, for those the weights show.
    """
    out: dict[str, int] = {}
    emb = state_dict.get("embedding.weight")
    if emb is not None and getattr(emb, "ndim", 0) == 2:
        out["atom_fea_len"] = int(emb.shape[0])
    convs = {k.split(".")[1] for k in state_dict if k.startswith("convs.") and k.split(".")[1].isdigit()}
    if convs:
        out["n_conv"] = len(convs)
    return out


def without_head(source: WeightSource, module: torch.nn.Module, reason: str) -> WeightSource:
    """``source`` with its output layer marked as skipped, so that only the encoder transfers.

    A regression head and a classification head may have the same name and
    shape (two targets, two classes) but mean different things.

    Parameters
    ----------
    source : WeightSource
        The weights to transfer.
    module : torch.nn.Module
        The target model (it names its last layer in ``module.output_layer``).
    reason : str
        Why, for the transfer report.

    Returns
    -------
    WeightSource
        A copy whose ``skipped`` also lists the output layer's tensors.
    """
    head = getattr(module, "output_layer", "fc_out")
    skipped = {n: reason for n in source.state_dict if n == head or n.startswith(head + ".")}
    return dataclasses.replace(source, skipped={**source.skipped, **skipped})


# --------------------------------------------------------------------------- freezing
_SLICE = re.compile(r"^(\w+)\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\]$")


def resolve_freeze(module: torch.nn.Module, spec: Any) -> list[str]:
    """Turn a ``freeze=`` specification into the names of the parameters to freeze.

    Parameters
    ----------
    module : torch.nn.Module
        A crysk model (it names its last layer in ``module.output_layer``).
    spec : None, str or list of str
        ``None``; ``"embedding"``; ``"convs"``; ``"convs[:k]"`` (the first
        ``k`` convolutions; any Python slice works); ``"all-but-head"``
        (everything but the output layer: the paper's layer freezing); or a
        list of such names, parameter-name prefixes (``"convs.0"``) and
        shell-style patterns (``"convs.*.bn1.*"``).

    Returns
    -------
    list of str
        Parameter names, in the module's order.

    Raises
    ------
    ValueError
        If an entry matches no parameter; the message lists the valid names.
    """
    return resolve_tensors(module, spec, "freeze", buffers=False)


def resolve_tensors(module: torch.nn.Module, spec: Any, option: str = "freeze", buffers: bool = True) -> list[str]:
    """Turn a layer specification (``freeze=``, ``warm_start_include=``) into tensor names.

    Parameters
    ----------
    module : torch.nn.Module
        A crysk model (it names its last layer in ``module.output_layer``).
    spec : None, str or list of str
        As for :func:`resolve_freeze`.
    option : str, default="freeze"
        The parameter the spec came from, for error messages.
    buffers : bool, default=True
        Match the module's state-dict entries (parameters and buffers, such
        as batch-norm statistics) rather than its parameters only.

    Returns
    -------
    list of str
        Names in the module's order (its ``state_dict`` order with
        ``buffers``, else its ``named_parameters`` order).

    Raises
    ------
    ValueError
        If an entry matches nothing; the message lists the valid names.
    """
    if spec is None:
        return []
    entries = [spec] if isinstance(spec, str) else list(spec)
    names = list(module.state_dict()) if buffers else [n for n, _ in module.named_parameters()]
    chosen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"{option} entries must be strings, got {entry!r}")
        matched = _match_freeze_entry(module, names, entry.strip())
        if not matched:
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(
                f"{option}={entry!r} matches no {'tensor' if buffers else 'parameter'}. Use 'embedding', 'convs', "
                f"'convs[:k]', 'all-but-head', a prefix among {tops} (e.g. 'convs.0') or a pattern like "
                "'convs.*.bn1.*'"
            )
        chosen.update(matched)
    return [n for n in names if n in chosen]


def _match_freeze_entry(module, names: list[str], entry: str) -> list[str]:
    if entry == "all-but-head":
        head = getattr(module, "output_layer", "fc_out")
        return [n for n in names if not (n == head or n.startswith(head + "."))]
    m = _SLICE.match(entry)
    if m:
        block, lo, hi = m.group(1), m.group(2), m.group(3)
        children = getattr(module, block, None)
        if not isinstance(children, torch.nn.ModuleList):
            return []
        for bound in (lo, hi):
            if bound and int(bound) > len(children):
                raise ValueError(
                    f"freeze={entry!r} asks for {block} up to {int(bound)}, but this model has {len(children)} "
                    f"{block}; use {block}[:{len(children)}] or fewer (or change n_conv)"
                )
        idx = range(len(children))[slice(int(lo) if lo else None, int(hi) if hi else None)]
        prefixes = [f"{block}.{i}." for i in idx]
        return [n for n in names if n.startswith(tuple(prefixes))]
    if any(ch in entry for ch in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, entry)]
    return [n for n in names if n == entry or n.startswith(entry + ".")]
