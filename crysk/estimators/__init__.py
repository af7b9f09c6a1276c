"""scikit-learn estimators (skorch) of crysk, their shared machinery and the registry behind :func:`load`."""

from .base import CrystalNet
from .callbacks import NonFiniteLossError, SaveBestCheckpoint
from .cgcnn import CGCNNClassifier, CGCNNRegressor
from .classifier import CrystalNetClassifier
from .crysae import CrysAE
from .crysxpp import CrysXPPClassifier, CrysXPPRegressor
from .registry import load, register_estimator
from .regressor import CrystalNetRegressor

__all__ = [
    "CrystalNet",
    "CrystalNetClassifier",
    "CrystalNetRegressor",
    "CGCNNClassifier",
    "CGCNNRegressor",
    "CrysAE",
    "CrysXPPClassifier",
    "CrysXPPRegressor",
    "SaveBestCheckpoint",
    "NonFiniteLossError",
    "load",
    "register_estimator",
]
