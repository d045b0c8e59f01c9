"""OHIF v3 (the prebuilt viewer of the npm package ``@ohif/app``) beside a test Orthanc, for the viewer tests.

* :func:`ohif_dist` gives the viewer's ``dist/`` folder: ``SPINEDX_OHIF_DIST`` when set, else a cached copy under
  ``~/.cache/spinedx/ohif-<version>/`` (``XDG_CACHE_HOME`` honoured), fetched once with ``npm pack`` (the npm
  registry must be reachable the first time; ``scripts/test.sh`` fetches it before the suite runs).
* :func:`ohif_server` serves ``dist/`` and the Orthanc's DICOMweb from one loopback origin (FIELD-NOTES: the build
  hard-codes ``/`` as its public URL, so Orthanc cannot serve it under a prefix; one origin also needs no CORS):
  ``/dicom-web/*`` is forwarded to Orthanc, ``/app-config.js`` is a configuration pointing the viewer there, any
  other path is a file of ``dist/`` or, for the viewer's own routes (``/viewer``), ``index.html``.

Run ``python tests/interop/ohif.py`` to fetch the viewer into the cache (prints the folder).
"""

from __future__ import annotations

import contextlib
import http.server
import mimetypes
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

OHIF_VERSION = "3.13.2"
ENV_DIST = "SPINEDX_OHIF_DIST"

#: The viewer's settings (``window.config``): one DICOMweb source, the forwarded Orthanc at this origin.
APP_CONFIG = """window.config = {
  routerBasename: null, extensions: [], modes: [], showStudyList: true, maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false, showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true, defaultDataSourceName: 'orthanc', investigationalUseDialog: {option: 'never'},
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'orthanc',
    configuration: {
      friendlyName: 'spinedx test Orthanc', name: 'orthanc',
      wadoUriRoot: '/dicom-web', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false, supportsReject: false, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true, staticWado: false,
      singlepart: 'bulkdata,video', omitQuotationForMultipartRequest: true,
      bulkDataURI: {enabled: true, relativeResolution: 'studies'},
    },
  }],
};
"""


def cache_root() -> Path:
    """Where fetched viewers are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spinedx"


def ohif_dist(version: str = OHIF_VERSION) -> Path:
    """The ``dist/`` folder of ``@ohif/app@version``, fetched with ``npm pack`` into the cache when absent.

    Raises:
        RuntimeError: npm is missing or the package cannot be fetched (the message says how to provide it).
    """
    given = os.environ.get(ENV_DIST)
    if given:
        dist = Path(given)
        if not (dist / "index.html").is_file():
            raise RuntimeError(f"{ENV_DIST}={given} holds no index.html (it must name OHIF's dist/ folder)")
        return dist
    folder = cache_root() / f"ohif-{version}"
    dist = folder / "package" / "dist"
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm not found: install Node.js (apt-get install npm) or set {ENV_DIST} to OHIF's dist/")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".ohif-{version}-", dir=folder.parent))
    try:
        proc = subprocess.run([npm, "pack", f"@ohif/app@{version}", "--pack-destination", str(tmp)],
                              capture_output=True, text=True, timeout=600, check=False)
        tgz = next(tmp.glob("*.tgz"), None)
        if proc.returncode != 0 or tgz is None:
            raise RuntimeError(f"npm pack @ohif/app@{version} failed (is the npm registry reachable?): "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        with tarfile.open(tgz) as tf:
            tf.extractall(tmp, filter="data")
        tgz.unlink()
        if not (tmp / "package" / "dist" / "index.html").is_file():
            raise RuntimeError(f"@ohif/app@{version} has no package/dist/index.html")
        if folder.exists():  # another process fetched it meanwhile
            return dist
        tmp.rename(folder)  # whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dist


class _Handler(http.server.BaseHTTPRequestHandler):
    dist: Path
    upstream: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the test asserts on the page, not on the proxy's log

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        import requests

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        keep = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type", "range")}
        r = requests.request(self.command, self.upstream + self.path, data=body, headers=keep, timeout=60)
        extra = {k: v for k, v in r.headers.items() if k.lower() in ("content-range",)}
        self._send(r.status_code, r.content, r.headers.get("Content-Type", "application/octet-stream"), extra)

    def _static(self) -> None:
        path = urlsplit(self.path).path
        if path == "/app-config.js":
            self._send(200, APP_CONFIG.encode(), "application/javascript")
            return
        target = (self.dist / path.lstrip("/")).resolve()
        if not target.is_file() or self.dist.resolve() not in target.parents:
            target = self.dist / "index.html"  # the viewer's own routes (/viewer?StudyInstanceUIDs=...)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            ctype = "application/wasm"
        self._send(200, target.read_bytes(), ctype)

    def _route(self) -> None:
        if self.path.startswith("/dicom-web"):
            self._forward()
        elif self.command in ("GET", "HEAD"):
            self._static()
        else:
            self._send(405, b"", "text/plain")

    do_GET = do_HEAD = do_POST = _route  # noqa: N815 - http.server's method names


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # the browser went away
            super().handle_error(request, client_address)


@contextlib.contextmanager
def ohif_server(dist: Path, orthanc_url: str) -> Iterator[str]:
    """Serve OHIF and forward ``/dicom-web`` to ``orthanc_url`` (its REST root) on a free loopback port.

    Yields:
        The origin, e.g. ``http://127.0.0.1:40123``.
    """
    handler = type("Handler", (_Handler,), {"dist": Path(dist), "upstream": orthanc_url.rstrip("/")})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


if __name__ == "__main__":
    print(ohif_dist(sys.argv[1] if len(sys.argv) > 1 else OHIF_VERSION))
