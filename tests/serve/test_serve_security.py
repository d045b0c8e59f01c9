"""Safe by default: loopback unless a token, host names, origins, bearer tokens from a file or the environment, roots,
body limit, CSP, TLS, logs and audit without patient identifiers."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.cohort import load_manifest, write_manifest
from spinedx.errors import SpinedxError
from spinedx.serve import ServeSettings, create_app, is_loopback

from .conftest import BASE_URL, key_of

TOKEN = "s3cret-token-for-tests-only"


def test_non_loopback_host_needs_a_token(manifest: Path, settings_for) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(SpinedxError, match="without a token"):
        create_app(settings_for(manifest, host="0.0.0.0"))
    with pytest.raises(SpinedxError, match="shorter than 16"):
        create_app(settings_for(manifest, host="0.0.0.0", token="short"))
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--host", "0.0.0.0", "--port", "1"],
                             env={"SPINEDX_TOKEN": ""})
    assert res.exit_code == 2 and "error:" in res.output and "without a token" in res.output
    assert "Traceback" not in res.output
    create_app(settings_for(manifest, host="0.0.0.0", token=TOKEN))  # accepted with a token


def test_bearer_token_enforced(manifest: Path, settings_for) -> None:
    with TestClient(create_app(settings_for(manifest, token=TOKEN)), base_url=BASE_URL) as client:
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
    # no DICOM root: manifest folder only
    with TestClient(create_app(ServeSettings(cohort=manifest)), base_url=BASE_URL) as client:
        for rec in cases[:2]:
            for ext in ("png", "raw"):
                r = client.get(f"/api/cases/{key_of(client, rec.patient_id)}/t2/0.{ext}")
                assert r.status_code == 404 and "outside the folders this server reads" in r.json()["detail"]
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
    r = client.put(f"/api/cases/{key_of(client, pid)}/annotation", content=b"{" + b" " * 100_000 + b"}",
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
    key = key_of(client, rec.patient_id)
    other = "benign" if rec.label == "malignant" else "malignant"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spinedx.serve"):
        texts = [client.get("/api/cases").text, client.get(f"/api/cases/{key}").text,
                 client.put(f"/api/cases/{key}/annotation", json={"box": "1,2"}).text,
                 client.put(f"/api/cases/{key}/annotation", json={"label": other}).text]
    lines = [r.getMessage() for r in caplog.records if r.name == "spinedx.serve"]
    assert len(lines) == 4
    assert all(line.split()[0] in ("GET", "PUT") and line.split()[1].startswith("/api/") for line in lines)
    audit = (manifest.parent / "cohort.audit.jsonl").read_text()
    assert audit.count("\n") == 1
    # responses name the patient (the user asked for the case); the log and the audit log never do
    assert rec.patient_id in texts[1]
    assert rec.patient_id not in "\n".join(lines) + audit and key in lines[1] and key in audit
    joined = "\n".join(lines + texts + [audit])
    assert name not in joined and "SYNTHETIC^" not in joined
    assert str(rec.t2) not in "\n".join(lines)  # no file paths in the log


# -- logs that cannot be forged ----------------------------------------------------------------------------------------

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
    scope = {"type": "http", "method": "GET\n", "path": "/p\r\nINJECTED\u0085\\x",
             "headers": [(b"host", b"localhost:80")], "server": ("127.0.0.1", 80)}
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


# -- tokens ------------------------------------------------------------------------------------------------------------

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
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--port", "0"], env={"SPINEDX_TOKEN": token})
    assert res.exit_code == 2 and res.output.startswith("error: SPINEDX_TOKEN: ") and message in res.output
    assert "spinedx workstation" not in res.output


def test_blank_bearer_is_401_and_spaces_before_the_token_are_allowed(manifest: Path, settings_for) -> None:
    """A blank bearer never matches (refused before the comparison); RFC 9110 allows several spaces after the scheme,
    which used to be compared as part of the token."""
    with TestClient(create_app(settings_for(manifest, token=TOKEN)), base_url=BASE_URL) as client:
        for auth in ("Bearer", "Bearer ", "Bearer " + " " * 20, "Bearer \t"):
            assert client.get("/api/cases", headers={"Authorization": auth}).status_code == 401, repr(auth)
        assert client.get("/api/cases", headers={"Authorization": f"Bearer  {TOKEN}"}).status_code == 200


# -- starting and stopping ---------------------------------------------------------------------------------------------

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


# -- host names and origins --------------------------------------------------------------------------------------------

def test_dns_rebinding_host_is_refused(client, manifest: Path) -> None:
    """``curl -H "Host: rebind.attacker.example:PORT" .../api/cases`` used to answer 200, and a PUT with that Host
    changed a label: a page of another site could reach the loopback server through DNS rebinding."""
    rec = load_manifest(manifest, draft=True).cases[0]
    key = key_of(client, rec.patient_id)
    text = manifest.read_bytes()
    evil = {"Host": "rebind.attacker.example:8765"}
    for method, path, kw in (("GET", "/api/cases", {}), ("GET", f"/api/cases/{key}", {}), ("GET", "/", {}),
                             ("PUT", f"/api/cases/{key}/annotation", {"json": {"label": "benign"}}),
                             ("POST", f"/api/cases/{key}/predict", {})):
        r = client.request(method, path, headers=evil, **kw)
        assert r.status_code == 421, (method, path, r.status_code)
        assert r.json()["detail"] == (
            "this server does not answer to the host name 'rebind.attacker.example:8765' (it answers to "
            "127.0.0.1:8765, localhost:8765, [::1]:8765): open it by one of those names, or start spinedx serve with "
            "--allowed-host NAME for the name your clients use")
    assert manifest.read_bytes() == text
    for host, status in (("localhost:8765", 200), ("LOCALHOST:8765", 200), ("[::1]:8765", 200), ("127.0.0.1:8765", 200),
                         ("127.0.0.1:9999", 421), ("localhost", 421), ("127.0.0.1:8765.evil", 421),
                         ("127.0.0.1.evil.example:8765", 421), ("[::1", 421), ("", 421)):
        assert client.get("/api/health", headers={"Host": host}).status_code == status, host


def test_a_request_without_a_host_is_refused() -> None:
    import asyncio

    from spinedx.serve.security import SecurityMiddleware

    async def app(scope, receive, send) -> None:  # never reached
        raise AssertionError

    sent = asyncio.run(_call(SecurityMiddleware(app, max_body_bytes=10),
                             {"type": "http", "method": "GET", "path": "/api/cases", "headers": []}))
    assert sent[0]["status"] == 400


def test_allowed_hosts_are_added_not_substituted(manifest: Path, settings_for) -> None:
    settings = settings_for(manifest, allowed_hosts=("Spine.Hospital.example", "10.1.2.3:8443", "[fd00::5]"))
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        for host, status in (("spine.hospital.example", 200), ("spine.hospital.example:443", 200),
                             ("10.1.2.3:8443", 200), ("10.1.2.3:8765", 421), ("[fd00::5]:8765", 200),
                             ("localhost:8765", 200), ("hospital.example", 421)):
            assert client.get("/api/health", headers={"Host": host}).status_code == status, host
    for bad, message in (("*", "wildcard"), ("*.hospital.example", "wildcard"), ("two words", "not a host name"),
                         ("host:99999", "not a host name"), ("[zz::1]", "not a host name"), ("", "not a host name")):
        with pytest.raises(SpinedxError, match=message):
            settings_for(manifest, allowed_hosts=(bad,)).check()
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--allowed-host", "*", "--port", "0"])
    assert res.exit_code == 2 and res.output.startswith("error: --allowed-host *: a wildcard would let any web site")


def test_cross_origin_state_changes_are_refused(client, manifest: Path) -> None:
    """A form or script on another site may not save or predict (the token does not help a browser that holds it
    for another tab: only the origin tells)."""
    rec = load_manifest(manifest, draft=True).cases[0]
    key = key_of(client, rec.patient_id)
    other = "benign" if rec.label == "malignant" else "malignant"
    text = manifest.read_bytes()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://127.0.0.1:9999"}, {"Origin": "null"},
                    {"Origin": "http://localhost:8765"},  # the same server under another name is another origin
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "cross-site"}):
        r = client.put(f"/api/cases/{key}/annotation", json={"label": other}, headers=headers)
        assert r.status_code == 403, (headers, r.status_code)
        assert "may not change anything here" in r.json()["detail"]
        assert client.post(f"/api/cases/{key}/predict", headers=headers).status_code == 403
    assert manifest.read_bytes() == text
    # reads stay readable (a browser shows another site nothing of them: no CORS headers); the page's own requests
    # and scripts without browser headers are served
    assert client.get("/api/cases", headers={"Origin": "http://evil.example"}).status_code == 200
    for headers in ({"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}, {}):
        assert client.put(f"/api/cases/{key}/annotation", json={"label": other}, headers=headers).status_code == 200
        other = rec.label


# -- tokens: from a file or the environment, in the Authorization header only ------------------------------------------

def _token_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_token_never_from_a_url_or_a_cookie(manifest: Path, settings_for) -> None:
    with TestClient(create_app(settings_for(manifest, token=TOKEN)), base_url=BASE_URL) as client:
        for params in ({"token": TOKEN}, {"access_token": TOKEN}, {"authorization": f"Bearer {TOKEN}"}):
            assert client.get("/api/cases", params=params).status_code == 401
        client.cookies.set("token", TOKEN)
        client.cookies.set("Authorization", f"Bearer {TOKEN}")
        assert client.get("/api/cases").status_code == 401
        client.cookies.clear()
        assert client.get("/api/cases", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_token_on_the_command_line_is_refused(manifest: Path) -> None:
    """``--token VALUE`` used to be the way to give the token: every user of the machine saw it in ``ps``."""
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--token", TOKEN, "--port", "0"])
    assert res.exit_code == 2 and res.output.splitlines() == [
        "error: --token: a token on the command line can be read by every user of this machine (ps); put it in a "
        "file (--token-file FILE, one 'name:token' per line, chmod 600) or in the environment (SPINEDX_TOKEN)"]
    assert TOKEN not in res.output
    helptext = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--token-file" in helptext and "--token " not in helptext


def test_a_token_file_names_each_user_in_the_audit_log(manifest: Path, settings_for, tmp_path: Path) -> None:
    alice, bob = "alice-" + "a" * 20, "bob-" + "b" * 20
    tokens = _token_file(tmp_path / "tokens", f"# workstation users\nalice:{alice}\n\nbob:{bob}\n")
    rec = load_manifest(manifest, draft=True).cases[0]
    with TestClient(create_app(settings_for(manifest, token_file=tokens)), base_url=BASE_URL) as client:
        assert client.get("/api/cases").status_code == 401
        h = {"alice": {"Authorization": f"Bearer {alice}"}, "bob": {"Authorization": f"Bearer {bob}"}}
        key = {c["patient_id"]: c["case"] for c in client.get("/api/cases", headers=h["alice"]).json()}[rec.patient_id]
        for who, label in (("alice", "benign"), ("bob", "malignant")):
            r = client.put(f"/api/cases/{key}/annotation", json={"label": label}, headers=h[who])
            assert r.status_code == 200
        assert client.put(f"/api/cases/{key}/annotation", json={"label": "benign"},
                          headers={"Authorization": "Bearer alice"}).status_code == 401
    audit = [json.loads(line) for line in (manifest.parent / "cohort.audit.jsonl").read_text().splitlines()]
    changes = [(a["user"], a["action"], a["case"], a["changed"].get("label", {}).get("to")) for a in audit]
    first = "benign" if rec.label != "benign" else None
    assert changes[-1] == ("bob", "annotate", key, "malignant")
    assert all(u in ("alice", "bob") for u, *_ in changes) and (first is None or changes[0][0] == "alice")


@pytest.mark.parametrize(("text", "mode", "message"), [
    (f"alice:{TOKEN}\n", 0o644, "can be read by other users (mode 644); make it private: chmod 600"),
    (f"alice:{TOKEN}\nalice:{TOKEN}x\n", 0o600, ":2: the name 'alice' is given twice"),
    (f"alice:{TOKEN}\nbob:{TOKEN}\n", 0o600, ":2: this token is already another user's"),
    (f"{TOKEN}\nbob:{TOKEN}x\n", 0o600, "a file of several tokens names each one"),
    ("alice:short\n", 0o600, ":1: the token is shorter than 16 characters"),
    ("# nothing\n\n", 0o600, "the token file holds no token"),
])
def test_bad_token_files_are_refused(manifest: Path, settings_for, tmp_path: Path, text: str, mode: int,
                                     message: str) -> None:
    path = _token_file(tmp_path / "tokens", text, mode)
    with pytest.raises(SpinedxError, match=re.escape(message)):
        settings_for(manifest, token_file=path).check()
    res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--token-file", str(path), "--port", "0"])
    assert res.exit_code == 2 and res.output.startswith("error: ") and message in res.output, res.output
    assert TOKEN not in res.output


def test_one_bare_token_is_the_user_called_user(tmp_path: Path) -> None:
    from spinedx.serve.settings import load_token_file

    assert load_token_file(_token_file(tmp_path / "t", f"{TOKEN}\n")) == {TOKEN: "user"}
    assert load_token_file(_token_file(tmp_path / "u", f"dr.smith@ward-3:{TOKEN}\n")) == {TOKEN: "dr.smith@ward-3"}


# -- logs without patient identifiers ----------------------------------------------------------------------------------

def test_an_unhandled_error_is_logged_without_its_message(caplog) -> None:
    """A traceback's message may quote a patient's identifier: the log gets the type, where, and a reference."""
    import asyncio

    from spinedx.serve.security import SecurityMiddleware

    async def app(scope, receive, send) -> None:
        raise RuntimeError("cannot read /data/SYN0001/DOE^JANE/T2")

    scope = {"type": "http", "method": "GET", "path": "/api/cases/0123456789abcdef",
             "headers": [(b"host", b"localhost:80")], "server": ("127.0.0.1", 80)}
    with caplog.at_level(logging.INFO, logger="spinedx.serve"):
        sent = asyncio.run(_call(SecurityMiddleware(app, max_body_bytes=10), scope))
    assert sent[0]["status"] == 500
    body = json.loads(sent[1]["body"])
    ref = re.fullmatch(r"internal error \(reference ([0-9a-f]{8})\): the server's log says where it happened",
                       body["detail"]).group(1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"GET /api/cases/0123456789abcdef: unhandled RuntimeError (reference {ref}) at " in text
    assert "test_serve_security.py:" in text and "in app" in text
    assert "SYN0001" not in text and "DOE" not in text and "/data" not in text


def test_log_lines_name_case_keys_not_patients(client, manifest: Path, caplog) -> None:
    """A URL typed with a patient's identifier (an old bookmark) or a warning naming a patient's folder: the log
    shows the case key instead."""
    import warnings

    from spinedx.serve.logsafe import SafeFormatter

    rec = load_manifest(manifest, draft=True).cases[0]
    key = key_of(client, rec.patient_id)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spinedx.serve"):
        assert client.get(f"/api/cases/{rec.patient_id}").status_code == 404
    fmt = SafeFormatter("%(message)s")
    lines = [fmt.format(r) for r in caplog.records if r.name == "spinedx.serve"]
    assert lines == [f"GET /api/cases/{key} 404 " + lines[0].split()[-1]]
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="py.warnings"):
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # a serve() of an earlier test may have left it on, around another hook
        logging.captureWarnings(True)  # as spinedx.serve.server does (pytest records warnings otherwise)
        try:
            warnings.warn(f"padded pixel data in dicom/{rec.patient_id}/T2/IM0001.dcm", UserWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    warned = [fmt.format(r) for r in caplog.records if r.name == "py.warnings"]
    assert len(warned) == 1 and f"dicom/{key}/T2/IM0001.dcm" in warned[0] and rec.patient_id not in warned[0]


# -- TLS ---------------------------------------------------------------------------------------------------------------

def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key, made by the openssl command-line tool."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_unusable_certificates_are_one_line(manifest: Path, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cannot = "error: --ssl-certfile: cannot use this certificate and key"
    for args, start in ((["--ssl-certfile", str(junk)], cannot),
                        (["--ssl-certfile", str(cert), "--ssl-keyfile", str(junk)], cannot),
                        (["--ssl-keyfile", str(key)], "error: --ssl-keyfile: a key without a certificate"),
                        (["--ssl-certfile", str(tmp_path / "nope.pem")], f"error: --ssl-certfile {tmp_path}/nope.pem: "
                                                                          "file not found")):
        res = CliRunner().invoke(cli, ["serve", "--cohort", str(manifest), "--port", "0", *args])
        assert res.exit_code == 2 and res.output.startswith(start) and len(res.output.splitlines()) == 1, res.output


@pytest.mark.slow
def test_serve_speaks_https_with_a_certificate(manifest: Path, tmp_path: Path) -> None:
    import ssl
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    cert, key = _self_signed(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "spinedx", "serve", "--cohort", str(manifest), "--port", "0",
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(proc, time.monotonic() + 120)
        url = re.fullmatch(r"spinedx workstation: (https://127\.0\.0\.1:\d+/)\n", line).group(1)
        ctx = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(url + "api/health", timeout=30, context=ctx) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        with pytest.raises(OSError):  # plain HTTP on the TLS port gets no answer
            urllib.request.urlopen(url.replace("https://", "http://") + "api/health", timeout=30)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # clients check the certificate
            urllib.request.urlopen(url + "api/health", timeout=30, context=ssl.create_default_context())
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


# -- a whole session: no patient identifier in any log or audit line ---------------------------------------------------

@pytest.mark.slow
def test_a_session_leaves_no_patient_identifier_in_any_log(manifest: Path, ws_cohort: Path, ws_run: Path,
                                                           tmp_path: Path) -> None:
    """A real ``spinedx serve`` with two users: open, scroll, map, save, predict, explain, an old bookmark with a
    patient ID, a rebinding attempt; then every line it logged and every audit line is searched for the cohort's
    PatientIDs and PatientNames (the request paths and the audit log used to carry the PatientID)."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    import pydicom

    secrets_ = set()
    for f in (ws_cohort / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        secrets_ |= {str(ds.PatientID), str(ds.PatientName), *str(ds.PatientName).split("^")} - {"", "SYNTHETIC"}
    cohort = load_manifest(manifest, draft=True)
    secrets_ |= set(cohort.patient_ids)
    assert len(secrets_) >= 16
    alice, bob = "alice-" + "a" * 24, "bob-" + "b" * 24
    tokens = _token_file(tmp_path / "tokens", f"alice:{alice}\nbob:{bob}\n")
    proc = subprocess.Popen([sys.executable, "-m", "spinedx", "serve", str(ws_cohort / "dicom"), "--cohort",
                             str(manifest), "--model", str(ws_run), "--token-file", str(tokens), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(proc, time.monotonic() + 300)
        url = re.fullmatch(r"spinedx workstation: (http://127\.0\.0\.1:\d+/)  \(sign in .*\)\n", line).group(1)

        def call(path: str, token: str, method: str = "GET", body: dict | None = None,
                 headers: dict | None = None) -> bytes:
            head = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})}
            req = urllib.request.Request(url + path.lstrip("/"), method=method, headers=head,
                                         data=None if body is None else json.dumps(body).encode())
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.read()

        cases = json.loads(call("/api/cases", alice))
        rec = cohort.cases[0]
        key = next(c["case"] for c in cases if c["patient_id"] == rec.patient_id)
        doc = json.loads(call(f"/api/cases/{key}", alice))
        for k in range(doc["t2"]["slices"]):
            call(f"/api/cases/{key}/t2/{k}.raw", alice)
        box = ",".join(map(str, rec.box))
        call(f"/api/cases/{key}/mapping?k={rec.lesion_slices[1]}&box={box}&register=true", alice)
        other = "benign" if rec.label == "malignant" else "malignant"
        call(f"/api/cases/{key}/annotation", alice, "PUT", {"label": other})
        call(f"/api/cases/{key}/annotation", bob, "PUT", {"label": rec.label})
        call(f"/api/cases/{key}/predict", bob, "POST")
        call(f"/api/cases/{key}/explain", bob, "POST")
        for path, headers, code in ((f"/api/cases/{rec.patient_id}", {}, 404),
                                    ("/api/cases", {"Host": "rebind.attacker.example"}, 421)):
            with pytest.raises(urllib.error.HTTPError) as e:
                call(path, alice, headers=headers)
            assert e.value.code == code
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.decode()
    audit = (manifest.parent / "cohort.audit.jsonl").read_text()
    entries = [json.loads(a) for a in audit.splitlines()]
    assert [(a["user"], a["action"], a["case"]) for a in entries] == [
        ("alice", "annotate", key), ("bob", "annotate", key), ("bob", "predict", key), ("bob", "explain", key)]
    assert f"PUT /api/cases/{key}/annotation 200" in log and f"GET /api/cases/{key}/t2/0.raw 200" in log
    assert f"GET /api/cases/{key} 404" in log  # the bookmark with the patient's ID, logged with the key
    logs = [log, audit, *(p.read_text() for p in manifest.parent.rglob("*") if p.suffix in (".log", ".jsonl"))]
    for text in logs:
        for s in secrets_:
            assert s not in text, s
