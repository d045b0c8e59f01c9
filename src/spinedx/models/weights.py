"""ImageNet weights as users expect them: torchvision's files in torch's standard cache.

* ``--pretrained imagenet``: the file in the cache (``torch.hub.get_dir()/checkpoints/<torchvision file>``)
  loads; absent and online, it is downloaded once with a progress bar, its sha256 checked against the prefix
  in torchvision's file name (``check_hash``); absent and offline, one clean error within ``timeout`` seconds
  saying where to put the file.
* ``--pretrained auto`` never touches the network (hospitals are often offline): the cache, else scratch with
  a warning.
* ``spinedx weights`` lists, per backbone, where the file is expected and whether it is there.

Sites behind a proxy or with an internal mirror of ``https://download.pytorch.org/models/`` set
``SPINEDX_WEIGHTS_MIRROR`` to the mirror's base URL (the file names stay torchvision's).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from spinedx.errors import WeightsError

TORCHVISION_BASE_URL = "https://download.pytorch.org/models/"
MIRROR_ENV = "SPINEDX_WEIGHTS_MIRROR"
#: Backbones ``spinedx weights`` lists by default (the paper's first).
LISTED_BACKBONES = ("resnet50", "resnet18", "resnet34", "resnet101")
_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX: the sha256 prefix in a torchvision file name


def default_url(backbone: str) -> str:
    """The URL of torchvision's default ImageNet weights for ``backbone`` (through the mirror when set)."""
    from torchvision.models import get_model_weights

    try:
        url = str(get_model_weights(backbone).DEFAULT.url)
    except (ValueError, KeyError):
        raise WeightsError(f"torchvision has no ImageNet weights for {backbone}; use --pretrained none",
                           where="--backbone") from None
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        url = mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    return url


def cache_dir() -> Path:
    """torch's standard cache of downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def download_imagenet(backbone: str, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download torchvision's default ImageNet file for ``backbone`` into the cache (sha256 prefix checked).

    Args:
        backbone: torchvision model name.
        progress: show torch.hub's progress bar.
        timeout: seconds a connection may stall before the download gives up.

    Returns:
        The cached file.

    Raises:
        WeightsError: offline, unreachable, HTTP error or checksum mismatch; says where to put the file.
    """
    import torch

    url = default_url(backbone)
    name = url.rsplit("/", 1)[-1]
    dest = cache_dir() / name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH.search(name)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=match.group(1) if match else None,
                                       progress=progress)
    except RuntimeError as exc:  # torch.hub: 'invalid hash value'
        raise WeightsError(f"downloaded file from {url} failed its checksum ({exc}); try again, or put a verified "
                           f"copy at {dest}", where=str(dest)) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, HTTP errors
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"could not download ImageNet weights for {backbone} from {url} ({reason}). Offline? Download that "
            f"file on a connected machine and put it at {dest}, or pass --weights PATH, or set {MIRROR_ENV} to a "
            "mirror, or train from scratch with --pretrained none", where=str(dest)) from None
    finally:
        socket.setdefaulttimeout(old)
    return dest


@dataclass(frozen=True)
class WeightsStatus:
    """Where one backbone's ImageNet file is expected and whether it is there."""

    backbone: str
    path: Path
    present: bool
    size_mb: float | None
    url: str


def weights_status(backbones: tuple[str, ...] = LISTED_BACKBONES) -> list[WeightsStatus]:
    """For each backbone: the cache path of torchvision's default file, whether present, its size, the URL."""
    out = []
    for b in backbones:
        url = default_url(b)
        path = cache_dir() / url.rsplit("/", 1)[-1]
        present = path.is_file()
        out.append(WeightsStatus(b, path, present, round(path.stat().st_size / 2**20, 1) if present else None, url))
    return out
