"""Warnings that point at the user's line, not at crysk's or skorch's internals."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn_user"]


def _internal_dirs() -> tuple[str, ...]:
    # the packages whose frames sit between a user's call and crysk's warning
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    for name in ("skorch", "sklearn", "joblib"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(os.path.abspath(module.__file__)))
    return tuple(d + os.sep for d in dirs)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with the location of the first caller outside crysk, skorch, scikit-learn and joblib.

    A fixed ``stacklevel`` cannot do this: the same crysk code is reached
    through ``fit``, ``Pipeline.fit``, ``GridSearchCV`` and skorch's
    ``initialize``, each at a different depth.

    Parameters
    ----------
    message : str
        The warning text.
    category : type of Warning, default=UserWarning
        The warning class.
    """
    internal = _internal_dirs()
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)
