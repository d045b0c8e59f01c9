#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# Installs Debian's dicom3tools (dciodvfy), dcm2niix, dcmtk (dsrdump), orthanc, orthanc-dicomweb and
# chromium (and npm) when missing, creates .venv when missing, installs spinedx with its test extras, fetches
# the OHIF viewer (npm pack @ohif/app, cached in ~/.cache/spinedx/), runs the linters (ruff, mypy; configured
# in pyproject.toml) and then pytest (all tests, slow ones too).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v dcm2niix >/dev/null 2>&1 || need+=(dcm2niix)
command -v dsrdump >/dev/null 2>&1 || need+=(dcmtk)
# Orthanc and its DICOMweb plugin: the PACS the interop tests start on a free loopback port (tests/interop/orthanc.py)
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
dpkg -s orthanc-dicomweb >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the workstation's browser tests (Playwright)
command -v npm >/dev/null 2>&1 || need+=(npm)  # fetches the OHIF viewer for tests/interop/test_ohif.py
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[test,ray]'
# OHIF v3 (npm pack @ohif/app) for the viewer test, fetched once into ~/.cache/spinedx/ and reused afterwards
.venv/bin/python tests/interop/ohif.py >/dev/null
.venv/bin/python -m ruff check src tests benchmarks
.venv/bin/python -m mypy
.venv/bin/lint-imports  # the import layers ([tool.importlinter] in pyproject.toml, docs/architecture.md)
exec .venv/bin/python -m pytest "$@"
