"""Loaders for crystal data sets: CGCNN folders, tables of CIF text, Matbench.

Every loader returns a :class:`Dataset`: validated pymatgen structures and
their targets, both indexed by the record id, plus the records that could not
be used. Structures are parsed by :func:`crysk.structures.as_structure`, so a
data set that loads is one the featurizer and the estimators accept.

A broken record raises a :class:`~crysk.structures.CrystalInputError` that
names its id. With ``errors="skip"`` it is left out, listed in
:attr:`Dataset.skipped` and reported in a warning; records are never dropped
silently. Targets are loaded as they are: a missing target stays ``NaN``
(the estimators refuse NaN targets, see :meth:`Dataset.dropna`).
"""

from .dataset import Dataset
from .cgcnn_folder import load_cgcnn_folder
from .tables import load_table
from .matbench import load_matbench
from .experimental import load_experimental_formation_enthalpy

__all__ = [
    "Dataset",
    "load_cgcnn_folder",
    "load_experimental_formation_enthalpy",
    "load_matbench",
    "load_table",
]
