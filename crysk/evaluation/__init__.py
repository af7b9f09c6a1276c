"""The papers' evaluation protocols: repeated subsampling, paired t-tests, learning curves.

The TL-CGCNN paper evaluates every model on 10 trials, each a fresh random
draw of 500 training, 125 validation and 125 test crystals. Networks use the
validation crystals to pick their best epoch; the baselines choose their
hyperparameters by 5-fold cross-validation on training + validation (625).
Models are compared by the mean test MAE over trials and by a paired t-test
on the per-trial MAEs. A learning curve of the network trained from scratch,
interpolated in log-log space, gives the "equivalent training-set size" of a
transfer-learned model (Table 2 of the paper).

:class:`RepeatedSubsample` draws the trials, :func:`compare` runs several
estimators on exactly the same trials and returns a tidy table,
:func:`paired_ttest`, :func:`summarize` and :func:`markdown_table` digest it,
and :func:`learning_curve` with :func:`equivalent_training_size` give Table 2.
"""

from .splits import RepeatedSubsample, _n_samples, _take
from .compare import accepts_validation, compare
from .statistics import PairedTTestResult, markdown_table, paired_ttest, summarize
from .learning_curve import equivalent_training_size, learning_curve

__all__ = [
    "PairedTTestResult",
    "RepeatedSubsample",
    "accepts_validation",
    "compare",
    "equivalent_training_size",
    "learning_curve",
    "markdown_table",
    "paired_ttest",
    "summarize",
]
