"""Parameter checks shared by every crysk estimator, featurizer and splitter.

Estimators store their constructor arguments unchanged and check them when
they are used (``fit``, ``transform``, ``split``), with one message format:
``"<name> must be <what>, got <value>"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["check_number", "check_option"]


def _describe(integer: bool, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    kind = "an integer" if integer else "a number"
    if low == 0 and high is None:
        kind = ("a positive " if low_open else "a non-negative ") + ("integer" if integer else "number")
    elif low == 1 and high is None and integer and not low_open:
        kind = "a positive integer"
    elif low is not None or high is not None:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        kind += f" in {lo or '(-inf'}, {hi or 'inf)'}"
    return kind


def check_number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """Check that ``value`` is a finite number (or integer) within bounds.

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : object
        The value to check. Booleans are not numbers here.
    integer : bool, default=False
        Require an integer.
    low, high : float, optional
        Bounds; ``None`` leaves that side open.
    low_open, high_open : bool, default=False
        Exclude the bound itself.
    allow_none : bool, default=False
        Accept ``None``.
    hint : str, default=""
        Appended to the message (e.g. what the value means).

    Returns
    -------
    object
        ``value``, unchanged.

    Raises
    ------
    ValueError
        ``"<name> must be <what>, got <value>"``.
    """
    if value is None and allow_none:
        return value
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        what = _describe(integer, low, high, low_open, high_open) + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}{hint}")
    return value


def check_option(name: str, value: Any, options: Iterable[Any], *, hint: str = "") -> Any:
    """Check that ``value`` is one of ``options``.

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : object
        The value to check.
    options : iterable
        The accepted values.
    hint : str, default=""
        Appended to the message.

    Returns
    -------
    object
        ``value``, unchanged.

    Raises
    ------
    ValueError
        ``"<name> must be one of [...], got <value>"``.
    """
    options = list(options)
    try:
        ok = value in options
    except (TypeError, ValueError):  # arrays and incomparable values are never options
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {options}, got {value!r}{hint}")
    return value
