"""Torch modules of crysk. This package never imports scikit-learn or skorch."""

from .cgcnn import CGCNN, GraphEncoder
from .layers import ConvLayer, GaussianExpansion, mean_pool

__all__ = ["CGCNN", "GraphEncoder", "ConvLayer", "GaussianExpansion", "mean_pool"]
