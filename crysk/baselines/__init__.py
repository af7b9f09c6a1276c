"""Baseline models of the TL-CGCNN paper: element descriptors and SOAP kernel ridge.

The paper compares its networks with PLS, LASSO, SVR (RBF kernel) and random
forests on the 132 Magpie element descriptors computed by matminer, with
hyperparameters chosen by 5-fold cross-validation on the training and
validation crystals (625 of them), and with ridge regression on a SOAP kernel
(DScribe). :func:`make_baseline` builds those models as scikit-learn
pipelines that take the same inputs as the graph networks: structures (any
form :func:`crysk.structures.as_structure` accepts) or ``CrystalGraphs``.

matminer is imported on first use, DScribe only by :class:`SOAPKernelRidge`
(``pip install crysk[soap]``).
"""

from .descriptors import ElementDescriptor
from .pipelines import BASELINE_GRIDS, make_baseline
from .soap import SOAPKernelRidge

__all__ = [
    "BASELINE_GRIDS",
    "ElementDescriptor",
    "SOAPKernelRidge",
    "make_baseline",
]
