"""spinedx: decision support for benign vs malignant vertebral fractures on MRI.

Implements Yeh, Zhang, Chen et al., "Deep learning-based decision support for
benign and malignant vertebral fractures on MRI", Eur Spine J 2022;31:2022-2030.

Research use only, not for clinical decisions.
"""

__version__ = "0.1.0"

RESEARCH_USE_ONLY = "research use only, not for clinical decisions"
