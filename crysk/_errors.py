"""Exceptions shared by modules that must not import each other (:mod:`crysk.checkpoints`, :mod:`crysk.pretrained`)."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe or incompatible.

    The message says what differs or what is wrong, and what to do. An
    unknown pretrained model name raises it too, listing the names there are.
    """
