"""CrystalInputError: a structure crysk cannot use, named by position and id."""

from __future__ import annotations

from typing import Any

__all__ = ["CrystalInputError", "describe", "MIN_DISTANCE"]


#: Two atoms closer than this (in Å) are taken as a broken structure.
MIN_DISTANCE = 0.5


class CrystalInputError(ValueError):
    """A crystal input that crysk cannot use.

    The message names the structure (its position in the input and, when
    known, its id) and says what to change.

    Parameters
    ----------
    reason : str
        What is wrong and what to do about it.
    index : int, optional
        Position of the structure in the input collection.
    id : object, optional
        Identifier of the structure (e.g. a Materials Project id).
    """

    def __init__(self, reason: str, index: int | None = None, id: Any = None):
        self.reason = reason
        self.index = index
        self.id = id
        super().__init__(f"{describe(index, id)}: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason, self.index, self.id))


def describe(index: int | None = None, id: Any = None) -> str:
    """Name a structure for an error message.

    Parameters
    ----------
    index : int, optional
        Position in the input.
    id : object, optional
        Identifier.

    Returns
    -------
    str
        e.g. ``"structure #3 (id 'mp-149')"``.
    """
    if index is None and id is None:
        return "structure"
    if id is None:
        return f"structure #{index}"
    if index is None:
        return f"structure {id!r}"
    return f"structure #{index} (id {id!r})"
