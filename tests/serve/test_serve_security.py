"""Safe by default: loopback unless a token, bearer token, roots, body limit, CSP, logs without names."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.cohort import load_manifest, write_manifest
from spinedx.errors import SpinedxError
from spinedx.serve import ServeSettings, create_app, is_loopback

TOKEN = "s3cret-token-for-tests-only"


def test_non_loopback_host_needs_a_token(manifest: Path, settings_for) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(SpinedxError, match="without --token"):
        create_app(settings_for(manifest, host="0.0.0.0"))
    with pytest.raises(SpinedxError, match="shorter than 16"):
        create_app(settings_for(manifest, host="0.0.0.0", token="short"))
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--host", "0.0.0.0", "--port", "1"])
    assert res.exit_code == 2 and "error:" in res.output and "without --token" in res.output
    assert "Traceback" not in res.output
    create_app(settings_for(manifest, host="0.0.0.0", token=TOKEN))  # accepted with a token


def test_bearer_token_enforced(manifest: Path, settings_for) -> None:
    with TestClient(create_app(settings_for(manifest, token=TOKEN))) as client:
        assert client.get("/api/cases").status_code == 401
        assert client.get("/api/cases", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = client.get("/api/cases", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and len(r.json()) == 8
        assert client.put("/api/cases/x/annotation", json={}).status_code == 401
        assert client.get("/").status_code == 200  # the page itself holds no data


def test_paths_outside_the_roots_are_404(manifest: Path, settings_for, tmp_path: Path) -> None:
    cohort = load_manifest(manifest, draft=True)
    outside = tmp_path / "outside"
    os.symlink(cohort.cases[0].t2, outside)  # a symlink inside the manifest folder escaping it
    link_in = manifest.parent / "escape"
    os.symlink(cohort.cases[0].t2, link_in)
    cases = cohort.cases
    cases[0].t2 = link_in
    cases[1].t2 = Path("/etc")  # absolute path elsewhere
    write_manifest(cases, manifest)
    with TestClient(create_app(ServeSettings(cohort=manifest))) as client:  # no DICOM root: manifest folder only
        assert client.get(f"/api/cases/{cases[0].patient_id}/t2/0.png").status_code == 404
        assert client.get(f"/api/cases/{cases[1].patient_id}/t2/0.png").status_code == 404
        for path in ("/static/..%2F..%2F..%2Fcohort.py", "/static/%2Fetc%2Fpasswd", "/static//etc/passwd",
                     "/static/../app.py", "/api/cases/..%2F..%2Fetc/t2/0.png", "/static/nonexistent.js"):
            r = client.get(path)
            assert r.status_code == 404, path


def test_static_symlink_escaping_is_404(tmp_path: Path, monkeypatch) -> None:
    from spinedx.serve.datastore import NotFound
    from spinedx.serve.routers import page

    (tmp_path / "static").mkdir()
    (tmp_path / "secret.js").write_text("x")
    (tmp_path / "static" / "ok.js").write_text("y")
    os.symlink(tmp_path / "secret.js", tmp_path / "static" / "link.js")
    monkeypatch.setattr(page, "STATIC", tmp_path / "static")
    assert str(page.static_file("ok.js").path).endswith("ok.js")
    for name in ("link.js", "../secret.js", str(tmp_path / "secret.js")):
        with pytest.raises(NotFound):
            page.static_file(name)


def test_body_size_limit(client, manifest: Path) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    r = client.put(f"/api/cases/{pid}/annotation", content=b"{" + b" " * 100_000 + b"}",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_security_headers_everywhere(client) -> None:
    for path in ("/", "/api/health", "/api/cases/NOPE", "/static/app.js", "/favicon.ico"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp, path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"


def test_logs_and_responses_carry_no_patient_names(client, manifest: Path, caplog) -> None:
    import pydicom

    cohort = load_manifest(manifest, draft=True)
    rec = cohort.cases[0]
    name = str(pydicom.dcmread(next(rec.t2.glob("*.dcm")), stop_before_pixels=True).PatientName)
    assert name.startswith("SYNTHETIC^")
    with caplog.at_level(logging.INFO, logger="spinedx.serve"):
        texts = [client.get("/api/cases").text, client.get(f"/api/cases/{rec.patient_id}").text,
                 client.put(f"/api/cases/{rec.patient_id}/annotation", json={"box": "1,2"}).text,
                 client.put(f"/api/cases/{rec.patient_id}/annotation", json={"label": rec.label}).text]
    lines = [r.getMessage() for r in caplog.records if r.name == "spinedx.serve"]
    assert len(lines) == 4
    assert all(line.split()[0] in ("GET", "PUT") and line.split()[1].startswith("/api/") for line in lines)
    joined = "\n".join(lines + texts + [(manifest.parent / "cohort.audit.jsonl").read_text()
                                        if (manifest.parent / "cohort.audit.jsonl").exists() else ""])
    assert name not in joined and "SYNTHETIC^" not in joined
    assert str(rec.t2) not in "\n".join(lines)  # no file paths in the log


# -- logs that cannot be forged ----------------------------------------------------------------------------------

def test_access_log_escapes_control_characters(client, caplog) -> None:
    """A CR/LF in the path (percent-encoded, decoded before the app sees it) used to start a forged log line."""
    with caplog.at_level(logging.INFO, logger="spinedx.serve"):
        r = client.get("/api/cases/x%0d%0a12:00:00 GET /api/cases 200 1ms%1b[2J%e2%80%a8")
    assert r.status_code == 404
    (line,) = [rec.getMessage() for rec in caplog.records if rec.name == "spinedx.serve"]
    assert line == "GET /api/cases/x\\r\\n12:00:00 GET /api/cases 200 1ms\\x1b[2J\\u2028 404 " + line.split()[-1]
    assert not any(ch in line for ch in "\r\n\x1b\u2028")


async def _call(app, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_raw_control_characters_in_method_and_path_are_escaped(caplog) -> None:
    """A server that passes raw bytes on (the ASGI scope as given) gets one escaped line as well."""
    import asyncio

    from spinedx.serve.security import SecurityMiddleware

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = SecurityMiddleware(app, token=None, max_body_bytes=10)
    scope = {"type": "http", "method": "GET\n", "path": "/p\r\nINJECTED\u0085\\x", "headers": []}
    with caplog.at_level(logging.INFO, logger="spinedx.serve"):
        sent = asyncio.run(_call(mw, scope))
    assert sent[0]["status"] == 204
    (line,) = [rec.getMessage() for rec in caplog.records if rec.name == "spinedx.serve"]
    assert line.startswith("GET\\n /p\\r\\nINJECTED\\x85\\\\x 204 ")


def test_safe_formatter_keeps_every_record_on_its_lines() -> None:
    """uvicorn's and spinedx's records as the server writes them: a message with a newline stays one line, and a
    traceback's lines (an exception message holding a newline included) are indented under their record."""
    from spinedx.serve.logsafe import SafeFormatter

    fmt = SafeFormatter("%(levelname)s %(message)s")
    rec = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "bad %s", ("a\r\nINFO forged",), None)
    assert fmt.format(rec) == "ERROR bad a\\r\\nINFO forged"
    try:
        raise ValueError("x\nINFO forged too")
    except ValueError:
        import sys

        rec = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = fmt.format(rec).split("\n")
    assert lines[0] == "ERROR failed" and len(lines) > 3
    assert all(line.startswith("    ") for line in lines[1:])
    assert "    INFO forged too" in lines


# -- tokens ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("token", "message"), [
    (" " * 16, "the token is blank"),
    ("\t \u00a0" * 6, "the token is blank"),
    ("correct horse battery staple", "holds spaces, control or non-ASCII characters"),
    ("s3cret-token-for-tests-\u00e9", "holds spaces, control or non-ASCII characters"),
    ("short", "shorter than 16"),
])
def test_blank_or_unsendable_tokens_are_refused(manifest: Path, settings_for, token: str, message: str) -> None:
    """A token of 16 spaces used to be accepted (and a header can never carry it: HTTP trims it away)."""
    from spinedx.serve.security import SecurityMiddleware

    with pytest.raises(SpinedxError, match=message):
        settings_for(manifest, token=token).check()
    with pytest.raises(SpinedxError, match=message):  # also for an app built around a prebuilt state
        SecurityMiddleware(None, token=token, max_body_bytes=1)
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--token", token, "--port", "0"])
    assert res.exit_code == 2 and res.output.startswith("error: --token: ") and message in res.output
    assert "spinedx workstation" not in res.output


def test_blank_bearer_is_401_and_spaces_before_the_token_are_allowed(manifest: Path, settings_for) -> None:
    """A blank bearer never matches (refused before the comparison); RFC 9110 allows several spaces after the scheme,
    which used to be compared as part of the token."""
    with TestClient(create_app(settings_for(manifest, token=TOKEN))) as client:
        for auth in ("Bearer", "Bearer ", "Bearer " + " " * 20, "Bearer \t"):
            assert client.get("/api/cases", headers={"Authorization": auth}).status_code == 401, repr(auth)
        assert client.get("/api/cases", headers={"Authorization": f"Bearer  {TOKEN}"}).status_code == 200


# -- starting and stopping ----------------------------------------------------------------------------------------

def test_port_in_use_is_one_error_line(manifest: Path) -> None:
    """A busy port used to print the URL, then uvicorn's ERROR, then exit 3 (the user's next request reached the
    other program)."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--port", str(port)])
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == [
        f"error: --port: port {port} on 127.0.0.1 is already in use (another spinedx serve or another program "
        f"listens there); stop that program, or choose another port with --port (e.g. --port {port + 1}, or --port 0 "
        "for any free port)"]
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--port", "70000"])
    assert res.exit_code == 2 and res.output.startswith("error: --port: port 70000 is not a TCP port")


def _read_line(proc, deadline: float) -> str:
    """One line of the process's stdout, read without blocking past ``deadline``."""
    import select
    import time

    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no line from spinedx serve ({buf!r})"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            assert chunk, f"spinedx serve closed its output ({buf!r})"
            buf += chunk
    return buf.decode()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), [("SIGINT", 130, "interrupted (Ctrl-C)"),
                                                   ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_serve_stops_with_130_or_143_and_a_safe_log(manifest: Path, sig: str, code: int, word: str) -> None:
    """A real ``spinedx serve`` (uvicorn on a free loopback port): a request with CR/LF in its path leaves one
    escaped log line; SIGINT/SIGTERM stop it with exit 130/143 and one ``error:`` line (it used to exit 0)."""
    import re
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "spinedx", "serve", "--cohort", str(manifest), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(proc, time.monotonic() + 120)
        url = re.fullmatch(r"spinedx workstation: (http://127\.0\.0\.1:\d+/)\n", line).group(1)
        with urllib.request.urlopen(url + "api/health", timeout=30) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "api/x%0d%0a00:00:00%20GET%20/api/cases%20200%201ms", timeout=30)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err.decode()
    lines = err.decode().splitlines()
    assert lines[-1] == (f"error: {word}; the workstation stopped (every save was written when it was made; nothing "
                         "is pending)")
    assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:]
    log = lines[:-1]
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d GET /api/health 200 \d+ms", ln) for ln in log), log
    assert any(ln.endswith("GET /api/x\\r\\n00:00:00 GET /api/cases 200 1ms 404 " + ln.split()[-1]) for ln in log), log
    assert all(re.match(r"\d\d:\d\d:\d\d \S", ln) for ln in log), log  # every line is a record
    assert not any(ln.startswith("00:00:00") for ln in log), log  # and none of them the forged one
    assert b"Traceback" not in err
