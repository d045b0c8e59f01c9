"""Reader studies: planning a blinded study, the append-only store of its reads, exporting them for analysis.

Modules: :mod:`spinedx.readers.plan` (``spinedx readers plan``: the study folder, reading lists, tokens),
:mod:`spinedx.readers.store` (the reads, what a reader reads next), :mod:`spinedx.readers.reads`
(``spinedx readers export``: READS and TRUTH tables). Research use only, not for clinical decisions.
"""
