"""Input coercion and validation: the one place crysk parses crystal inputs.

Everything that accepts crystals (the featurizer, the estimators, the dataset
loaders) goes through :func:`as_structure`, so every input format and every
validation rule lives here.

:mod:`.errors` holds :class:`CrystalInputError`, :mod:`.cif` the fast CIF reader (gemmi),
:mod:`.coerce` the coercion and validation of every input form.
"""

from .cif import CIF_PARSER
from .coerce import (
    as_sequence,
    as_structure,
    as_structure_list,
    atomic_numbers,
    input_ids,
    quiet_warnings,
    structure_and_numbers,
    too_close_error,
)
from .errors import MIN_DISTANCE, CrystalInputError, describe

__all__ = [
    "CrystalInputError",
    "as_structure",
    "as_structure_list",
    "as_sequence",
    "atomic_numbers",
    "describe",
    "too_close_error",
    "quiet_warnings",
    "MIN_DISTANCE",
]
