"""crysk: scikit-learn compatible crystal graph neural networks with transfer learning.

The public names are imported on first use (PEP 562 module ``__getattr__``):
``import crysk`` and ``crysk --help`` then start in a fraction of a second,
and featurization worker processes, which only need numpy and pymatgen,
never load torch or skorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> submodule that defines it
_LAZY = {
    "CGCNNRegressor": "estimators",
    "CGCNNClassifier": "estimators",
    "CrysXPPClassifier": "estimators",
    "CrysAE": "estimators",
    "CrysXPPRegressor": "estimators",
    "CheckpointError": "checkpoints",
    "DeepEnsemble": "ensemble",
    "load": "estimators",
    "CrystalGraphFeaturizer": "featurizer",
    "CrystalGraphs": "graphs",
    "concatenate": "graphs",
    "featurize_to_disk": "featurizer",
    "CrystalInputError": "structures",
    "as_structure": "structures",
    "ElementDescriptor": "baselines",
    "SOAPKernelRidge": "baselines",
    "make_baseline": "baselines",
    "Dataset": "datasets",
    "load_cgcnn_folder": "datasets",
    "load_matbench": "datasets",
    "load_table": "datasets",
    "RepeatedSubsample": "evaluation",
    "compare": "evaluation",
    "equivalent_training_size": "evaluation",
    "learning_curve": "evaluation",
    "markdown_table": "evaluation",
    "paired_ttest": "evaluation",
    "summarize": "evaluation",
}

# submodules reachable as attributes (``crysk.transfer.load_checkpoint``), as with eager imports
_SUBMODULES = {
    "baselines", "checkpoints", "cli", "correction", "datasets", "demo", "elements", "ensemble", "estimators", "evaluation", "featurizer",
    "graphs", "nn", "parallel", "plotting", "pretrained", "store", "structures", "targets", "transfer",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .baselines import ElementDescriptor, SOAPKernelRidge, make_baseline
    from .datasets import Dataset, load_cgcnn_folder, load_matbench, load_table
    from .estimators import CGCNNClassifier, CGCNNRegressor, CrysAE, CrysXPPClassifier, CrysXPPRegressor
    from .evaluation import (
        RepeatedSubsample,
        compare,
        equivalent_training_size,
        learning_curve,
        markdown_table,
        paired_ttest,
        summarize,
    )
    from .featurizer import CrystalGraphFeaturizer
    from .graphs import CrystalGraphs, concatenate
    from .featurizer import featurize_to_disk
    from .structures import CrystalInputError, as_structure
    from .checkpoints import CheckpointError
    from .ensemble import DeepEnsemble
    from .estimators import load


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crysk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
