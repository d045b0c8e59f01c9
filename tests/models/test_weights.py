"""ImageNet weights: cache, download from a (loopback) server with checksum, clean offline error, `spinedx weights`.

No test touches the internet: downloads come from a local HTTP server through ``SPINEDX_WEIGHTS_MIRROR``.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import WeightsError
from spinedx.models import build_model
from spinedx.models.weights import MIRROR_ENV, cache_dir, default_url, download_imagenet


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # let get_dir() follow TORCH_HOME
    return tmp_path / "torch"


@pytest.fixture()
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """A loopback HTTP server serving ``tmp_path/served``; yields (folder, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(served), **k)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/models")
    (served / "models").mkdir()
    try:
        yield served / "models", requests
    finally:
        server.shutdown()
        server.server_close()


def _resnet18_file(folder: Path, corrupt: bool = False) -> Path:
    """A genuine torchvision resnet18 state dict saved under the file name torchvision expects."""
    name = default_url("resnet18").rsplit("/", 1)[-1]
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = folder / name
    torch.save(state, path)
    if corrupt:
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    return path


def test_imagenet_downloads_once_with_checksum(torch_home: Path, mirror: tuple[Path, list[str]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder, requests = mirror
    src = _resnet18_file(folder)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    # the served file's real hash prefix stands in the name torchvision's check compares against
    monkeypatch.setattr("spinedx.models.weights._HASH", __import__("re").compile(r"(?!)"))
    model, info = build_model("resnet18", "imagenet", progress=False)
    assert info.source == "imagenet-download"
    cached = cache_dir() / src.name
    assert cached.is_file() and info.sha256 == digest
    assert torch.equal(model.backbone.conv1.weight, torch.load(src, weights_only=True)["conv1.weight"])
    n = len(requests)
    _, info2 = build_model("resnet18", "imagenet", progress=False)  # second time: from the cache, no request
    assert info2.source == "imagenet-cache" and len(requests) == n


def test_checksum_mismatch_is_a_clean_error(torch_home: Path, mirror: tuple[Path, list[str]]) -> None:
    folder, _ = mirror
    src = _resnet18_file(folder)
    # torchvision's name carries the real file's sha256 prefix; our file differs, so the check must fail
    assert not hashlib.sha256(src.read_bytes()).hexdigest().startswith(src.stem.rsplit("-", 1)[1])
    with pytest.raises(WeightsError, match="checksum"):
        download_imagenet("resnet18", progress=False)
    assert not (cache_dir() / src.name).exists()
    assert not cache_dir().exists() or not any(cache_dir().iterdir())  # no partial file left


def test_offline_is_a_clean_error_within_the_timeout(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused, like an offline machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}/models")
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        build_model("resnet50", "imagenet", progress=False)
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "resnet50-11ad3fa6.pth" in msg and "--pretrained none" in msg and str(cache_dir()) in msg


def test_auto_never_touches_the_network(torch_home: Path, mirror: tuple[Path, list[str]]) -> None:
    folder, requests = mirror
    _resnet18_file(folder)
    with pytest.warns(UserWarning, match="from scratch"):
        _, info = build_model("resnet18", "auto")
    assert info.source == "fallback-none" and requests == []


def test_weights_command_lists_cache_state(torch_home: Path) -> None:
    target = cache_dir() / default_url("resnet18").rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), target)
    res = CliRunner().invoke(app, ["weights", "-b", "resnet18", "-b", "resnet50"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(ln.startswith("resnet18") and "present" in ln and str(target) in ln for ln in lines)
    assert any(ln.startswith("resnet50") and "absent" in ln for ln in lines)
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in res.output
