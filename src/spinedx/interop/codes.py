"""The coded concepts of spinedx's DICOM results, and why each was chosen.

Code systems (PS3.16): standard codes wherever DICOM's own tables hold a concept that fits, all checked against
the copy of PS3.16 that pydicom ships (``pydicom.sr.codedict.codes``), so none is recalled from memory:

* SNOMED CT 278201002 "Classification" names the qualitative evaluation; its value is SNOMED CT 21594007
  "Malignant" or 30807003 "Benign" (both in CID 6063). (DCM 121071 "Finding" is taken: TID 1419 uses it for the
  finding type.)
* DCM 111047 "Probability of cancer" (CID 6048) names the probability; the unit is UCUM ``1`` "no units"
  (CID 7181), so the value is the probability itself in [0, 1].
* SNOMED CT 51282000 "Vertebra" is the finding site, 363679005 "Imaging procedure" the procedure reported, and
  the fold-model spread uses the CID 7464 derivations Standard Deviation, Minimum and Maximum.

PS3.16's SNOMED subset holds no concept for a vertebral fracture (benign or malignant), and a SNOMED CT code
that cannot be checked here would be a silent wrong code. The finding type is therefore a private code,
``99SPINEDX`` (PS3.3 8.2.1: designators beginning with "99" are private), declared in the SR's Coding Scheme
Identification Sequence (PS3.3 C.12.1.1.6).
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
PROBABILITY = CodedConcept(*codes.DCM.ProbabilityOfCancer)
NO_UNITS = CodedConcept(*codes.UCUM.NoUnits)
VERTEBRA = CodedConcept(*codes.SCT.Vertebra)
IMAGING_PROCEDURE = CodedConcept(*codes.SCT.ImagingProcedure)
STD = CodedConcept(*codes.SCT.StandardDeviation)
MINIMUM = CodedConcept(*codes.SCT.Minimum)
MAXIMUM = CodedConcept(*codes.SCT.Maximum)
VERTEBRAL_FRACTURE = CodedConcept("VFX", PRIVATE_SCHEME, "Vertebral fracture")

#: The qualitative value of each call.
CALL_CODES = {"malignant": MALIGNANT, "benign": BENIGN}


def private_scheme_item() -> Dataset:
    """The Coding Scheme Identification Sequence item declaring :data:`PRIVATE_SCHEME` (PS3.3 C.12.1.1.6)."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "spinedx private codes"
    item.CodingSchemeResponsibleOrganization = "spinedx project"
    return item
