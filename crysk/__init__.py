"""crysk: scikit-learn compatible crystal graph neural networks with transfer learning."""

__version__ = "0.1.0"

from .estimators import CGCNNRegressor
from .featurizer import CrystalGraphFeaturizer
from .graphs import CrystalGraphs, concatenate
from .structures import CrystalInputError, as_structure
from .transfer import CheckpointError, load

__all__ = [
    "__version__",
    "CGCNNRegressor",
    "CheckpointError",
    "CrystalGraphFeaturizer",
    "CrystalGraphs",
    "CrystalInputError",
    "as_structure",
    "concatenate",
    "load",
]
