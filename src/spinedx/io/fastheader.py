"""The one hand-made DICOM fast path of spinedx: a file's grouping keys read without pydicom.

Everything else reads DICOM through pydicom's public API (:mod:`spinedx.io.discovery`, :mod:`spinedx.io.pixels`).
This path stays because ``benchmarks/header.py`` measures it at least 2x faster where it is used: ``spinedx index``
groups every file of a tree by patient, study and series before it chooses anything, and pydicom spends 0.75-1.1 ms
per file on its general machinery (file meta, one object per element; ``specific_tags`` does not help, pydicom still
walks every element) where grouping needs five small elements near the start of the dataset; this reader takes
about 0.1 ms. Whole ``spinedx index`` runs (2 shared cores, median of 5 alternating pairs): 2.3x faster than with
pydicom alone on a clinical-like tree where 4 files in 5 are in series not chosen, 1.4x on the synthetic cohort,
where every file is in a chosen series and the reader's own parse of those series dominates (docs/workstation.md).

:func:`grouping_keys` walks the elements of the first bytes (PS3.5 7.1) for the two common little-endian
encodings and gives up (None) on anything else: big endian, deflate, an undefined-length sequence before the keys,
an element running past the bytes read, a file meta group whose length does not match. The caller then reads the
file with pydicom (``spinedx.studyindex.scan``): a file this reader does not follow is never guessed at, only read
more slowly. ``benchmarks/header.py`` checks that both paths give the same index, and
``tests/studyindex/test_index_tree.py`` checks this reader against pydicom on explicit and implicit VR files.
"""

from __future__ import annotations

import struct

__all__ = ["grouping_keys"]

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_IMPLICIT = "1.2.840.10008.1.2"
_EXCLUDED_SYNTAXES = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflated
_KEYS = {0x00100020: "PatientID", 0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
         0x00280008: "NumberOfFrames", 0x00080016: "SOPClassUID"}
_LAST_KEY = 0x00280008
_HEAD_BYTES = 16384  # headers are a few kB; longer ones fall back to pydicom


def grouping_keys(path: str) -> dict[str, str] | None:
    """PatientID, StudyInstanceUID, SeriesInstanceUID, NumberOfFrames and SOPClassUID of a DICOM file, as text.

    Args:
        path: the file.

    Returns:
        The keys that are present (SOPClassUID from the file meta's MediaStorageSOPClassUID when the dataset has
        none), or None when this reader cannot read the file: not a PS3.10 file (no ``DICM`` at byte 128), a
        transfer syntax other than explicit or implicit VR little endian, or any structure it does not follow.
        None means "read it with pydicom", never "not DICOM".
    """
    try:
        with open(path, "rb") as fh:
            buf = fh.read(_HEAD_BYTES)
    except OSError:
        return None
    if buf[128:132] != b"DICM":
        return None
    file_meta = _read_file_meta(buf)
    if file_meta is None:
        return None
    meta, pos = file_meta
    syntax = meta.get(0x0010, b"").rstrip(b"\x00 ").decode("ascii", "replace")
    if not syntax or syntax in _EXCLUDED_SYNTAXES:
        return None
    out: dict[str, str] = {"SOPClassUID": meta.get(0x0002, b"").rstrip(b"\x00 ").decode("ascii", "replace")}
    return _read_dataset_keys(buf, pos, syntax == _IMPLICIT, out)


def _explicit_vr_header(buf: bytes, pos: int, n: int) -> tuple[int, int] | None:
    """An explicit-VR little-endian element header at ``pos``: (value length, value start), or None when the header
    runs past the ``n`` bytes read (PS3.5 7.1.2: 4-byte lengths after 2 reserved bytes for the long VRs)."""
    if buf[pos + 4:pos + 6] in _LONG_VRS:
        if pos + 12 > n:
            return None
        return struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
    return struct.unpack_from("<H", buf, pos + 6)[0], pos + 8


def _read_file_meta(buf: bytes) -> tuple[dict[int, bytes], int] | None:
    """The file meta group's element values by element number, and the offset of the dataset after it.

    Args:
        buf: the file's first bytes, ``DICM`` at byte 128.

    Returns:
        ``(values, offset)``, or None when an element runs past ``buf`` or the group length (0002,0000) does not
        end where the group does.
    """
    pos, n = 132, len(buf)
    meta: dict[int, bytes] = {}
    meta_end = None
    while pos + 8 <= n:  # file meta: always explicit VR little endian (PS3.10 7.1)
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            break
        header = _explicit_vr_header(buf, pos, n)
        if header is None:
            return None
        length, start = header
        if start + length > n:
            return None  # a file cut short inside its file meta: ask pydicom (which refuses it, with a reason)
        if elem == 0x0000:
            meta_end = start + length + struct.unpack_from("<I", buf, start)[0]
        meta[elem] = buf[start:start + length]
        pos = start + length
    if meta_end is not None and meta_end != pos:
        return None
    return meta, pos


def _read_dataset_keys(buf: bytes, pos: int, implicit: bool, out: dict[str, str]) -> dict[str, str] | None:
    """Walk the dataset's elements from ``pos`` up to the last key, adding the keys found to ``out``.

    Args:
        buf: the file's first bytes.
        pos: the offset of the dataset's first element (just after the file meta group).
        implicit: True for implicit VR little endian, False for explicit VR little endian.
        out: the keys found so far (SOPClassUID from the file meta); filled in place.

    Returns:
        ``out`` once an element past the last key is reached, or None when the walk cannot go on in ``buf``
        (an undefined length, or an element running past the bytes read).
    """
    n = len(buf)
    while True:
        if pos + 8 > n:
            return None
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = (group << 16) | elem
        if tag > _LAST_KEY:
            return out
        if implicit:
            length = struct.unpack_from("<I", buf, pos + 4)[0]
            start = pos + 8
        else:
            header = _explicit_vr_header(buf, pos, n)
            if header is None:
                return None
            length, start = header
        if length == 0xFFFFFFFF or start + length > n:
            return None  # an undefined-length sequence, or the element runs past the bytes read: ask pydicom
        name = _KEYS.get(tag)
        if name is not None:
            out[name] = buf[start:start + length].rstrip(b"\x00 ").decode("latin-1").strip()
        pos = start + length
