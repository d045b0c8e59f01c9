"""The coded concepts of spinedx's DICOM results, and why each was chosen.

Code systems (PS3.16): standard codes wherever DICOM's own tables hold a concept that fits, all checked against
the copy of PS3.16 that pydicom ships (``pydicom.sr.codedict.codes``), so none is recalled from memory:

* The decision is the finding (DCM 121071 "Finding") of every measurement group and the value of SNOMED CT
  278201002 "Classification": SNOMED CT 21594007 "Malignant", 30807003 "Benign" or 280416009 "Indeterminate
  result" (a referral), all three in CID 6063.
* DCM 111047 "Probability of cancer" (CID 6048) names the probability, once per measurement group; the unit is
  UCUM ``%`` "Percent" (CID 7181): a viewer prints the unit's code after the value (OHIF v3: ``52.59 %``), and
  ``1`` "no units" printed as ``0.53 1``.
* DCM 121106 "Comment" holds the decision in words (a TEXT qualitative evaluation, TID 1501 row 12): the one text
  item OHIF v3 prints on the image.
* SNOMED CT 51282000 "Vertebra" is the finding site, 363679005 "Imaging procedure" the procedure reported.

PS3.16 holds no concept for a vertebral fracture (benign or malignant), for the spread of an ensemble's
probabilities or for a reason to refer, and a SNOMED CT code that cannot be checked here would be a silent wrong
code. Those are private codes, ``99SPINEDX`` (PS3.3 8.2.1: designators beginning with "99" are private), declared in
the SR's Coding Scheme Identification Sequence (PS3.3 C.12.1.1.6), each with a meaning a viewer can print. Every
standard code here is checked against the copy of PS3.16 that pydicom ships (``pydicom.sr.codedict.codes``).
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

#: Private coding scheme of spinedx (PS3.3 8.2.1).
PRIVATE_SCHEME = "99SPINEDX"

CLASSIFICATION = CodedConcept(*codes.SCT.Classification)
MALIGNANT = CodedConcept(*codes.SCT.Malignant)
BENIGN = CodedConcept(*codes.SCT.Benign)
INDETERMINATE = CodedConcept(*codes.SCT.IndeterminateResult)
PROBABILITY = CodedConcept(*codes.DCM.ProbabilityOfCancer)
PERCENT = CodedConcept(*codes.UCUM.Percent)
COMMENT = CodedConcept(*codes.DCM.Comment)
VERTEBRA = CodedConcept(*codes.SCT.Vertebra)
IMAGING_PROCEDURE = CodedConcept(*codes.SCT.ImagingProcedure)
VERTEBRAL_FRACTURE = CodedConcept("VFX", PRIVATE_SCHEME, "Vertebral fracture")
#: The spread of the fold models' patient probabilities: its own concepts, never another "Probability of cancer".
FOLD_SD = CodedConcept("FOLDSD", PRIVATE_SCHEME, "Fold-model SD")
#: The ensemble mean before calibration, when the stated probability is calibrated.
UNCALIBRATED = CodedConcept("PUNCAL", PRIVATE_SCHEME, "Uncalibrated probability")
#: Why a prediction refers (``prediction.json`` ``refer_reasons``), a qualitative evaluation per reason.
REFER_REASON = CodedConcept("REFERWHY", PRIVATE_SCHEME, "Reason to refer")
REASON_CODES = {
    "outside_training_data": CodedConcept("OOD", PRIVATE_SCHEME, "Outside the training data"),
    "conformal_ambiguous": CodedConcept("CONFBOTH", PRIVATE_SCHEME, "Both calls plausible (conformal)"),
    "conformal_empty": CodedConcept("CONFNONE", PRIVATE_SCHEME, "Neither call plausible (conformal)"),
    "models_disagree": CodedConcept("DISAGREE", PRIVATE_SCHEME, "Fold models disagree"),
}

#: The coded value of each decision.
DECISION_CODES = {"malignant": MALIGNANT, "benign": BENIGN, "refer": INDETERMINATE}


def private_scheme_item() -> Dataset:
    """The Coding Scheme Identification Sequence item declaring :data:`PRIVATE_SCHEME` (PS3.3 C.12.1.1.6)."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "spinedx private codes"
    item.CodingSchemeResponsibleOrganization = "spinedx project"
    return item
