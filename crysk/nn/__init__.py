"""Torch modules of crysk. This package never imports scikit-learn or skorch."""

from .cgcnn import CGCNN, GraphEncoder
from .crysae import CrysAENet
from .crysxpp import CrysXPPNet, FeatureSelector
from .layers import ConvLayer, GaussianExpansion, mean_pool

__all__ = [
    "CGCNN",
    "GraphEncoder",
    "CrysAENet",
    "CrysXPPNet",
    "FeatureSelector",
    "ConvLayer",
    "GaussianExpansion",
    "mean_pool",
]
