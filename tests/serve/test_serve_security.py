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
