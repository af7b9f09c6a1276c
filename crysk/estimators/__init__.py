"""scikit-learn estimators (skorch) of crysk."""

from .base import CrystalNet, CrystalNetRegressor
from .callbacks import NonFiniteLossError, SaveBestCheckpoint
from .cgcnn import CGCNNRegressor
from .crysae import CrysAE
from .crysxpp import CrysXPPRegressor

__all__ = ["CrystalNet", "CrystalNetRegressor", "CGCNNRegressor", "CrysAE", "CrysXPPRegressor", "SaveBestCheckpoint", "NonFiniteLossError"]
