"""A throwaway Orthanc PACS for tests: Debian's ``Orthanc`` with its DICOMweb plugin, on a free loopback port.

The server gets a temporary folder (storage, index, log, generated JSON configuration), no DICOM (DIMSE) port,
``RemoteAccessAllowed: false`` (it listens on every interface, so this keeps other hosts out; tests only talk to
127.0.0.1), and is ready when ``GET /system`` answers. :func:`orthanc_server` always stops it (SIGTERM, then
wait; SIGKILL only if it hangs) and removes its folder, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC = "/usr/sbin/Orthanc"


def dicomweb_plugin() -> str:
    """Path of the DICOMweb plugin shipped by Debian's ``orthanc-dicomweb`` (from ``dpkg -L``)."""
    out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True).stdout
    libs = [ln for ln in out.splitlines() if ln.endswith(".so") and "DicomWeb" in ln]
    assert libs, "orthanc-dicomweb installs no plugin .so (dpkg -L orthanc-dicomweb)"
    return libs[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running test server."""

    port: int
    folder: Path
    process: subprocess.Popen
    users: dict[str, str]

    @property
    def url(self) -> str:
        """REST root."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        """DICOMweb root."""
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic-auth credentials of the first registered user (None without users)."""
        return next(iter(self.users.items()), None)

    def upload(self, files: list[Path]) -> None:
        """Store files through the REST API (``POST /instances``)."""
        for f in files:
            r = requests.post(f"{self.url}/instances", data=Path(f).read_bytes(), auth=self.auth, timeout=30)
            r.raise_for_status()

    def get(self, path: str) -> object:
        """GET a REST resource as JSON."""
        r = requests.get(f"{self.url}{path}", auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def log(self) -> str:
        """The server's log so far."""
        p = self.folder / "orthanc.log"
        return p.read_text(errors="replace") if p.exists() else ""


def _config(folder: Path, port: int, users: dict[str, str]) -> dict:
    return {
        "Name": "spinedx-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users,
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StorageCompression": False,
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
    }


@contextlib.contextmanager
def orthanc_server(users: dict[str, str] | None = None, ready_timeout: float = 60.0) -> Iterator[Orthanc]:
    """Start Orthanc on a free loopback port; always stop it and remove its folder afterwards."""
    users = dict(users or {})
    folder = Path(tempfile.mkdtemp(prefix="spinedx-orthanc-"))
    proc: subprocess.Popen | None = None
    try:
        port = free_port()
        cfg = folder / "orthanc.json"
        cfg.write_text(json.dumps(_config(folder, port, users), indent=1))
        with open(folder / "orthanc.log", "wb") as log:
            proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        server = Orthanc(port, folder, proc, users)
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {proc.returncode} before it was ready:\n"
                                   f"{server.log()[-3000:]}")
            try:
                if requests.get(f"{server.url}/system", auth=server.auth, timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc not ready after {ready_timeout:g} s:\n{server.log()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
