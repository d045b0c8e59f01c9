"""The workstation's speed: index, slice, case open and prediction, against a local ``spinedx predict`` call.

Makes a synthetic cohort (``spinedx.synth``, default 6 patients) and a run folder of ``--folds`` randomly
initialised fold models (default 10 x resnet50, the paper's ensemble; weights do not change the cost), serves them
with uvicorn on 127.0.0.1 and measures over HTTP (one keep-alive client):

* ``index``: ``spinedx.studyindex.index_tree`` over the cohort's DICOM files (files per second);
* ``open``: ``GET /api/cases/{case}`` of a case not yet opened (both series decoded; goal < 1 s);
* ``slice``: ``GET /api/cases/{case}/t2/{k}.raw`` (the 16-bit pixels the page windows itself; fetched once per
  slice) and ``.png`` (windowed by the server), after the first, every slice of the opened case (goal < 50 ms);
* ``predict with heatmaps``: ``POST /api/cases/{case}/explain``, what the page's Predict sends: the probability,
  the decision, the heatmap overlays (PNG) and the DICOM results (SR, Parametric Map, Secondary Captures), with the
  models loaded once (goal <= 2 s for 10 x ResNet50 on 2 idle cores); the first one after the start is shown apart;
* ``predict``: ``POST .../predict`` (the probabilities and the SR only);
* the baseline: ``spinedx predict`` on the same case in a fresh process (loads the models, writes the same
  outputs: what a user runs without the server).

    python benchmarks/serve.py [--patients 6] [--folds 10] [--backbone resnet50] [--repeats 5]

The start is timed twice, as ``spinedx serve`` starts: until the app answers (models loaded, the torch engine
ready; goal < 5 s) and until the ONNX Runtime engine, built in a background thread, has taken over (and the
first DICOM result's tables are loaded). The temporary cohort and run folder are removed at the end.

Ends with ``RESULT serve_predict_heatmaps_ms <median milliseconds of POST /explain>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path


def _run_folder(root: Path, folds: int, backbone: str) -> Path:
    """A run folder as ``spinedx cv`` writes it (read by the strict run-folder reader), with randomly initialised
    fold models: the cost of loading and predicting does not depend on the weights."""
    import numpy as np
    import torch

    from spinedx.common import CHANNEL_NAMES
    from spinedx.models import build_model, save_fold_model
    from spinedx.preprocess import ExtractConfig
    from spinedx.provenance import provenance, sha256_file
    from spinedx.runfolder import RunFolder, RunRecord, WeightsRecord, load_patches
    from spinedx.training.config import CVConfig

    patches = root / "patches"
    patches.mkdir()
    x = np.zeros((2 * folds, 6, 64, 64), np.float32)
    np.savez(patches / "patches.npz", x=x, patient_id=np.array([f"P{i}" for i in range(2 * folds)]),
             slice_index=np.zeros(2 * folds, np.int64), label=np.arange(2 * folds) % 2, synthetic=np.array(True))
    (patches / "extract.json").write_text(json.dumps({"config": ExtractConfig().to_dict(),
                                                      "channel_names": list(CHANNEL_NAMES), "synthetic": True,
                                                      "patches_sha256": sha256_file(patches / "patches.npz")}))
    config = CVConfig.from_profile("cpu", folds=folds, backbone=backbone, pretrained="none")
    rf = RunFolder(root / "run")
    rf.path.mkdir()
    rf.write_record(RunRecord(config=config, patches=load_patches(patches).info(),
                              weights=WeightsRecord("none", None, None, "benchmark: random weights"),
                              device={"type": "cpu", "name": "cpu", "threads": 1, "bf16": False, "compile": False,
                                      "channels_last": True},
                              channel_names=CHANNEL_NAMES, provenance=provenance()))
    for k in range(folds):
        torch.manual_seed(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model(backbone, pretrained="none")
        with rf.fold_writer(k) as tmp:
            save_fold_model(model.eval(), tmp / "model.pt", k)
            for name in ("history.csv", "curves.png", "predictions.csv"):
                (tmp / name).write_text("")  # never read by predict or serve
            (tmp / "done.json").write_text(json.dumps({"fold": k, "model_sha256": sha256_file(tmp / "model.pt")}))
    return rf.path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="spinedx_bench_serve_"))
    try:
        _measure(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ten fold models: about 1 GB


def _measure(tmp: Path, args: argparse.Namespace) -> None:
    import httpx
    import uvicorn

    from spinedx.cohort import load_manifest
    from spinedx.serve import ServeSettings, create_app
    from spinedx.serve.server import freeze_loaded_objects
    from spinedx.studyindex import index_tree
    from spinedx.synth import generate_cohort

    generate_cohort(tmp / "cohort", n_patients=args.patients, n_malignant=max(1, args.patients // 3), seed=1,
                    progress=False)
    run = _run_folder(tmp, args.folds, args.backbone)
    cohort = load_manifest(tmp / "cohort" / "cohort.csv")

    t0 = time.perf_counter()
    idx = index_tree(tmp / "cohort" / "dicom", progress=False)
    t_index = time.perf_counter() - t0
    print(f"index: {idx.n_files} files in {t_index:.2f} s = {idx.n_files / t_index:.0f} files/s "
          f"({len(idx.complete)}/{len(idx.studies)} studies with T1W and T2W)")

    t0 = time.perf_counter()
    port = _free_port()
    app = create_app(ServeSettings(cohort=tmp / "cohort" / "cohort.csv", model=run, port=port))
    freeze_loaded_objects()  # as spinedx serve does once the app is built
    t_start = time.perf_counter() - t0
    print(f"server start (manifest + {args.folds} x {args.backbone} loaded once): {t_start:.2f} s (goal < 5 s: "
          f"{'met' if t_start < 5 else 'NOT met'})")
    predictor = app.state.ws.predictor
    predictor.wait_ready()
    print(f"ONNX Runtime engine ready {time.perf_counter() - t0:.2f} s after the start began (built in a background "
          f"thread; the torch engine answers until then): {predictor.describe()['engine']}")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            keys = {c["patient_id"]: c["case"] for c in client.get("/api/cases").raise_for_status().json()}
            case = cohort.cases[0]
            key = keys[case.patient_id]
            t0 = time.perf_counter()
            client.post(f"/api/cases/{key}/explain").raise_for_status()
            first = time.perf_counter() - t0
            opens: list[float] = []
            slices: dict[str, list[float]] = {"raw": [], "png": []}
            for c in cohort.cases:
                k = keys[c.patient_id]
                t0 = time.perf_counter()
                doc = client.get(f"/api/cases/{k}").raise_for_status().json()
                opens.append(time.perf_counter() - t0)
                n = doc["t2"]["slices"]
                for ext, times in slices.items():
                    client.get(f"/api/cases/{k}/t2/0.{ext}").raise_for_status()  # the first
                    for j in range(1, n):
                        t0 = time.perf_counter()
                        client.get(f"/api/cases/{k}/t2/{j}.{ext}").raise_for_status()
                        times.append(time.perf_counter() - t0)
            print(f"open a case (cold: both series decoded): median {1e3 * statistics.median(opens):.0f} ms, "
                  f"max {1e3 * max(opens):.0f} ms over {len(opens)} cases")
            for ext, times in slices.items():
                what = "16-bit pixels (.raw, the page's)" if ext == "raw" else "8-bit PNG (.png)"
                print(f"slice {what} after the first: median {1e3 * statistics.median(times):.1f} ms, 95th "
                      f"percentile {1e3 * sorted(times)[int(0.95 * (len(times) - 1))]:.1f} ms over {len(times)}")
            preds, explains = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                client.post(f"/api/cases/{key}/explain").raise_for_status()
                explains.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                client.post(f"/api/cases/{key}/predict").raise_for_status()
                preds.append(time.perf_counter() - t0)
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    cli = []
    for i in range(max(1, args.repeats // 3)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spinedx", "predict", "--model", str(run), "--t1", str(case.t1),
                        "--t2", str(case.t2), "--lesion-slices", ";".join(map(str, case.lesion_slices)),
                        "--box", ",".join(map(str, case.box)), "--out", str(tmp / f"cli{i}")],
                       check=True, capture_output=True)
        cli.append(time.perf_counter() - t0)
    p_ms, c_ms = 1e3 * statistics.median(preds), 1e3 * statistics.median(cli)
    e_ms = 1e3 * statistics.median(explains)
    print(f"predict with heatmaps ({args.folds} x {args.backbone}, {len(case.lesion_slices)} slices, registration as "
          f"the run; POST /explain, the page's Predict): median {e_ms:.0f} ms (min {1e3 * min(explains):.0f}, max "
          f"{1e3 * max(explains):.0f}) over {len(explains)}; the first after the start {1e3 * first:.0f} ms; goal "
          f"<= 2000 ms: {'met' if e_ms <= 2000 else 'NOT met'}")
    print(f"predict without heatmaps (POST /predict): median {p_ms:.0f} ms (min {1e3 * min(preds):.0f})")
    print(f"baseline spinedx predict (fresh process, loads the models, the same outputs) median {c_ms:.0f} ms; "
          f"ratio to POST /explain {c_ms / e_ms:.1f}x, to POST /predict {c_ms / p_ms:.1f}x")
    print(f"RESULT serve_predict_heatmaps_ms {e_ms:.1f}")


if __name__ == "__main__":
    main()
