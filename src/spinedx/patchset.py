"""The patches folder (from ``spinedx extract``): its one writer and its one reader.

* :func:`write_patches` writes ``patches.npz`` and ``extract.json`` together (temporary siblings, renamed with
  interrupts held back), so the folder holds the old pair or the new one, never a mix; ``extract`` calls it.
* :func:`load_patches` loads ``patches.npz`` with every check a model's input needs (and its ``extract.json``).
* :class:`PatchesInfo` is what a run records about the patches it was trained on (the run's ``config.yaml``).

Only the standard library and light spinedx modules are imported at module level (numpy inside the functions).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.common import CHANNEL_NAMES
from spinedx.errors import SpinedxError
from spinedx.records import is_int, read_json, strict_keys

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EXTRACT_JSON", "PATCHES_NPZ", "PatchSet", "PatchesInfo", "load_patches", "patches_file", "write_patches"]

#: The two files of a patches folder.
PATCHES_NPZ = "patches.npz"
EXTRACT_JSON = "extract.json"


@dataclass(frozen=True)
class PatchesInfo:
    """The patches a run was trained on, recorded in its ``config.yaml`` (``patches``).

    Attributes:
        path: ``patches.npz`` (absolute, as given to ``spinedx cv``).
        sha256: sha256 of that file at training time.
        n_patients: patients in it.
        n_slices: patches (slices) in it.
        patch_size: side of the square patches in pixels.
        channel_names: channel order of ``x``.
        extract: the ``config`` of the ``extract.json`` beside ``patches.npz`` at training time (patch size,
            margin, registration, z-score mode, ...), or None when there was no extract.json.
        synthetic: the patches come from a synthetic cohort (``patches.npz`` ``synthetic``).
        manifest: the cohort manifest recorded by that extract.json (``path``, ``sha256``), or None.
    """

    path: str
    sha256: str
    n_patients: int
    n_slices: int
    patch_size: int
    channel_names: tuple[str, ...]
    extract: dict[str, Any] | None
    synthetic: bool
    manifest: dict[str, str] | None

    def to_dict(self) -> dict[str, Any]:
        """Plain types for YAML."""
        return {"path": self.path, "sha256": self.sha256, "n_patients": self.n_patients, "n_slices": self.n_slices,
                "patch_size": self.patch_size, "channel_names": list(self.channel_names),
                "extract": None if self.extract is None else dict(self.extract), "synthetic": self.synthetic,
                "manifest": None if self.manifest is None else dict(self.manifest)}

    @classmethod
    def from_record(cls, data: Any, where: Path | str, remedy: str, *,
                    error: type[SpinedxError] = SpinedxError) -> PatchesInfo:
        """Strict reader of :meth:`to_dict`'s output (``error``: the class raised, the record owner's)."""
        d = strict_keys(data, ["path", "sha256", "n_patients", "n_slices", "patch_size", "channel_names", "extract",
                               "synthetic", "manifest"], "patches", where, remedy, error=error)
        bad = [k for k, ok in (
            ("path", isinstance(d["path"], str)),
            ("sha256", isinstance(d["sha256"], str) and len(d["sha256"]) == 64),
            ("n_patients", is_int(d["n_patients"])), ("n_slices", is_int(d["n_slices"])),
            ("patch_size", is_int(d["patch_size"])),
            ("channel_names", isinstance(d["channel_names"], list) and all(isinstance(c, str)
                                                                            for c in d["channel_names"])),
            ("extract", d["extract"] is None or isinstance(d["extract"], dict)),
            ("synthetic", isinstance(d["synthetic"], bool)),
            ("manifest", d["manifest"] is None or (isinstance(d["manifest"], dict)
                                                   and set(d["manifest"]) == {"path", "sha256"})),
        ) if not ok]
        if bad:
            raise error(f"patches: bad value of {', '.join(bad)}; {remedy}", where=str(where))
        return cls(d["path"], d["sha256"], d["n_patients"], d["n_slices"], d["patch_size"],
                   tuple(d["channel_names"]), d["extract"], d["synthetic"], d["manifest"])


@dataclass
class PatchSet:
    """A loaded, checked ``patches.npz`` (with its ``extract.json``, if any).

    Attributes:
        path: the file (absolute).
        x: (N, 6, P, P) float32, finite.
        patient_id: (N,) str.
        slice_index: (N,) int64.
        label: (N,) int64, 0 benign / 1 malignant.
        synthetic: the 0-d ``synthetic`` array of the file (False when absent).
        sha256: sha256 of the file.
        extract: the parsed ``extract.json`` beside the file, or None.
    """

    path: Path
    x: np.ndarray
    patient_id: np.ndarray
    slice_index: np.ndarray
    label: np.ndarray
    synthetic: bool
    sha256: str
    extract: dict[str, Any] | None = None

    @property
    def patch_size(self) -> int:
        """Side of the square patches."""
        return int(self.x.shape[-1])

    def info(self) -> PatchesInfo:
        """What a run records about these patches."""
        ex = self.extract or {}
        manifest = ex.get("manifest")
        man = ({"path": str(manifest["path"]), "sha256": str(manifest.get("sha256"))}
               if isinstance(manifest, dict) and isinstance(manifest.get("path"), str) else None)
        names = ex.get("channel_names")
        return PatchesInfo(
            path=str(self.path), sha256=self.sha256, n_patients=len(set(self.patient_id.tolist())),
            n_slices=len(self.label), patch_size=self.patch_size,
            channel_names=tuple(names) if isinstance(names, list) else CHANNEL_NAMES,
            extract=dict(ex["config"]) if isinstance(ex.get("config"), dict) else None,
            synthetic=self.synthetic, manifest=man)


def patches_file(path: str | Path) -> Path:
    """``patches.npz`` of a folder, or the file itself."""
    p = Path(path)
    return p / PATCHES_NPZ if p.is_dir() else p


def load_patches(path: str | Path) -> PatchSet:
    """Load ``patches.npz`` (a folder holding it, or the file) and refuse anything a model must not see.

    Checks: the file opens (a truncated or damaged zip is refused), the arrays ``x`` (N, 6, P, P),
    ``patient_id``, ``slice_index``, ``label`` are there with N entries each, labels are 0/1, every value of
    ``x`` is finite, the optional ``synthetic`` is a 0-d bool; and when ``extract.json`` lies beside it, that it
    parses and agrees with the file (its ``patches_sha256``, patch size and channel order).

    Raises:
        SpinedxError: one line naming the file and what to do.
    """
    import zipfile
    import zlib

    import numpy as np

    from spinedx.provenance import sha256_file

    path = patches_file(path)
    redo = "rerun spinedx extract"
    if not path.is_file():
        raise SpinedxError("patches.npz not found; run spinedx extract first and pass its output folder",
                           where=str(path))
    keys = ("x", "patient_id", "slice_index", "label")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in (*keys, "synthetic") if k in npz.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
        raise SpinedxError(f"cannot read patches: the file is damaged or truncated ({type(exc).__name__}: {exc}); "
                           f"{redo}", where=str(path)) from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise SpinedxError(f"missing arrays {', '.join(missing)}; {redo}", where=str(path))
    x = data["x"]
    n = x.shape[0] if x.ndim == 4 else -1
    if x.ndim != 4 or x.shape[1] != len(CHANNEL_NAMES) or x.shape[2] != x.shape[3] or \
            any(data[k].shape != (n,) for k in ("patient_id", "slice_index", "label")):
        raise SpinedxError(f"x must be (N, 6, P, P) with N patient ids, slice indices and labels; got x {x.shape}; "
                           f"{redo}", where=str(path))
    if n == 0:
        raise SpinedxError(f"no patches in the file; {redo}", where=str(path))
    if not np.issubdtype(x.dtype, np.floating) or not np.issubdtype(data["label"].dtype, np.integer):
        raise SpinedxError(f"x must hold floats and label integers (got {x.dtype}, {data['label'].dtype}); {redo}",
                           where=str(path))
    label = data["label"].astype(np.int64)
    if not np.isin(label, (0, 1)).all():
        raise SpinedxError(f"labels must be 0 (benign) or 1 (malignant); {redo} from a labelled manifest",
                           where=str(path))
    finite = np.isfinite(x).reshape(n, -1).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise SpinedxError(f"{int((~finite).sum())} patch(es) hold NaN or infinite values (first: patient "
                           f"{data['patient_id'][first]}, slice {int(data['slice_index'][first])}); {redo}",
                           where=str(path))
    synthetic = False
    if "synthetic" in data:
        s = data["synthetic"]
        if s.shape != () or s.dtype != np.bool_:
            raise SpinedxError(f"'synthetic' must be a 0-d bool array (got {s.dtype} {s.shape}); {redo}",
                               where=str(path))
        synthetic = bool(s)
    patches = PatchSet(path.resolve(), x.astype(np.float32, copy=False), data["patient_id"].astype(str),
                       data["slice_index"].astype(np.int64), label, synthetic, sha256_file(path))
    patches.extract = _read_extract_json(patches)
    return patches


def _read_extract_json(p: PatchSet) -> dict[str, Any] | None:
    path = p.path.parent / EXTRACT_JSON
    if not path.is_file():
        return None
    doc = read_json(path, EXTRACT_JSON, "rerun spinedx extract")
    if not isinstance(doc, dict):
        raise SpinedxError("expected a JSON object; rerun spinedx extract", where=str(path))
    recorded = doc.get("patches_sha256")
    if recorded is not None and recorded != p.sha256:
        raise SpinedxError("describes other patches than the patches.npz beside it (patches_sha256 differs); "
                           "rerun spinedx extract so that both come from one run", where=str(path))
    cfg = doc.get("config")
    if cfg is not None and (not isinstance(cfg, dict) or cfg.get("patch_size") != p.patch_size):
        raise SpinedxError(f"its config says patch_size {cfg.get('patch_size') if isinstance(cfg, dict) else cfg!r}, "
                           f"patches.npz holds {p.patch_size}x{p.patch_size}; rerun spinedx extract", where=str(path))
    names = doc.get("channel_names")
    if names is not None and tuple(names) != CHANNEL_NAMES:
        raise SpinedxError(f"channel order {names} is not spinedx's {list(CHANNEL_NAMES)}; rerun spinedx extract "
                           "with this spinedx version", where=str(path))
    if "synthetic" in doc and bool(doc["synthetic"]) != p.synthetic:
        raise SpinedxError("its 'synthetic' flag disagrees with patches.npz; rerun spinedx extract", where=str(path))
    return doc


def write_patches(folder: str | Path, arrays: Mapping[str, np.ndarray], doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write a patches folder: ``patches.npz`` (``arrays``, plain arrays only, so it loads with
    ``allow_pickle=False``) and ``extract.json`` (``doc``, its ``patches_sha256`` set here to the new file's).

    Both go into temporary siblings and are renamed with interrupts held back (``extract.json`` first, then
    ``patches.npz``, then a held Ctrl-C or SIGTERM is delivered), so the folder holds the earlier pair or this one,
    never a mix. An OS error (no space, file too large) names the final file and leaves no temporary file behind.

    Returns:
        The paths of ``patches.npz`` and ``extract.json``.
    """
    import numpy as np

    from spinedx.fsutil import DeferredSignals, atomic_path
    from spinedx.provenance import sha256_file

    folder = Path(folder)
    npz, js = folder / PATCHES_NPZ, folder / EXTRACT_JSON
    target = npz
    try:
        with DeferredSignals() as hold, atomic_path(npz) as tmp_npz:
            with open(tmp_npz, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, **arrays)  # type: ignore[arg-type]
            doc["patches_sha256"] = sha256_file(tmp_npz)
            target = js
            with atomic_path(js) as tmp_js:
                tmp_js.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
                hold.arm()  # exits: extract.json renamed, then patches.npz, then interrupts delivered
    except OSError as exc:
        if exc.filename is None or Path(str(exc.filename)).name.startswith("."):
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
        raise
    return npz, js
