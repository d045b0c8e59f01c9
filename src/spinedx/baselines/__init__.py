"""Baselines shown next to every model figure: radiomics features and a logistic regression on the run's folds.

* :mod:`spinedx.baselines.radiomics`: IBSI first-order, GLCM and GLRLM features of each patch channel.
* :mod:`spinedx.baselines.fit`: L2 logistic regression with C chosen inside the training folds, cross-validated
  on the run's own patient folds.
* :mod:`spinedx.baselines.compare`: DeLong's paired test of two AUCs on the same patients.

They know nothing of run folders: the baselines of a ``spinedx cv`` run, fitted on its folds and kept in its
``baselines/``, are :mod:`spinedx.evaluation.runbaselines`.
"""

from spinedx.baselines.compare import auc_variance, delong_test
from spinedx.baselines.fit import DEFAULT_CS, BaselineOOF, cross_validate, fit_predict
from spinedx.baselines.radiomics import FEATURES, N_BINS, radiomics_features

__all__ = ["DEFAULT_CS", "FEATURES", "N_BINS", "BaselineOOF", "auc_variance", "cross_validate", "delong_test",
           "fit_predict", "radiomics_features"]
