"""scikit-learn estimators (skorch) of crysk, their shared machinery and the registry behind :func:`load`."""

from .base import CrystalNet
from .callbacks import NonFiniteLossError, SaveBestCheckpoint
from .cgcnn import CGCNNRegressor
from .crysae import CrysAE
from .crysxpp import CrysXPPRegressor
from .registry import load, register_estimator
from .regressor import CrystalNetRegressor

__all__ = [
    "CrystalNet",
    "CrystalNetRegressor",
    "CGCNNRegressor",
    "CrysAE",
    "CrysXPPRegressor",
    "SaveBestCheckpoint",
    "NonFiniteLossError",
    "load",
    "register_estimator",
]
