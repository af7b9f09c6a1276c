"""scikit-learn estimators (skorch) of crysk."""

from .base import CrystalNetRegressor
from .callbacks import SaveBestCheckpoint
from .cgcnn import CGCNNRegressor

__all__ = ["CrystalNetRegressor", "CGCNNRegressor", "SaveBestCheckpoint"]
