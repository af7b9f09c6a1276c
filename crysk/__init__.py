"""crysk: scikit-learn compatible crystal graph neural networks with transfer learning."""

from ._version import __version__

from .estimators import CGCNNClassifier, CGCNNRegressor, CrysAE, CrysXPPClassifier, CrysXPPRegressor
from .featurizer import CrystalGraphFeaturizer
from .graphs import CrystalGraphs, concatenate
from .structures import CrystalInputError, as_structure
from .checkpoints import CheckpointError
from .estimators import load

__all__ = [
    "__version__",
    "CGCNNClassifier",
    "CGCNNRegressor",
    "CrysAE",
    "CrysXPPClassifier",
    "CrysXPPRegressor",
    "CheckpointError",
    "CrystalGraphFeaturizer",
    "CrystalGraphs",
    "CrystalInputError",
    "as_structure",
    "concatenate",
    "load",
]

from .baselines import ElementDescriptor, SOAPKernelRidge, make_baseline
from .datasets import Dataset, load_cgcnn_folder, load_matbench, load_table
from .evaluation import (
    RepeatedSubsample,
    compare,
    equivalent_training_size,
    learning_curve,
    markdown_table,
    paired_ttest,
    summarize,
)

__all__ += [
    "Dataset",
    "ElementDescriptor",
    "RepeatedSubsample",
    "SOAPKernelRidge",
    "compare",
    "equivalent_training_size",
    "learning_curve",
    "load_cgcnn_folder",
    "load_matbench",
    "load_table",
    "make_baseline",
    "markdown_table",
    "paired_ttest",
    "summarize",
]
