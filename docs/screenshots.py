"""Screenshots of what a user sees in MLflow's UI after a search (not part of `make test`).

    pip install playwright          # drives Debian's chromium (apt-get install chromium); no download
    python docs/screenshots.py      # a 12-trial digits search, `hyperflow ui`, three screenshots

It runs a short search into a temporary store (or `--store sqlite:///path/mlflow.db` of a finished
one), starts `hyperflow ui` on a free port, and saves docs/run_list.png (the study's run list, in
the view the study writes: its trials, the searched params and the metric as columns),
docs/trial.png (the best trial) and docs/compare.png (four trials in the compare view, their
weight histograms side by side). The UI is stopped by its process group when done.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
# The flags a sandboxed, offline machine needs (no background connections, no first-run pages).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1800, "height": 1100}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_search(folder: Path) -> str:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    budget = [
        "search.n_trials=12",
        "model.max_epochs=12",
        "search.space.max_epochs={low: 6, high: 15, type: int}",
    ]
    cmd = [str(BIN / "hyperflow"), "run", str(ROOT / "conf" / "digits.yaml"), "--set", f"tracking.uri={uri}"]
    for item in budget:
        cmd += ["--set", item]
    subprocess.run(cmd, cwd=folder, check=True, timeout=900)
    return uri


def wait_http(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {deadline_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", help="the tracking URI of a finished study (default: run one)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the PNGs go")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    from hyperflow.components.tracking import ui_command

    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="hyperflow-screenshots-") as tmp:
        uri = args.store or run_search(Path(tmp))
        client = MlflowClient(uri)
        (study,) = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`hyperflow.role` = 'study'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        exp = study.info.experiment_id
        trials = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{study.info.run_id}'")
        finished = [r for r in trials if r.data.tags.get("hyperflow.state") in ("completed", "pruned")]
        best_id = study.data.tags["hyperflow.best_run_id"]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ui = subprocess.Popen(
            [str(BIN / "hyperflow"), "ui", "--port", str(port)],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_http(f"{base}/health", 120)
            run_list = ui_command(uri, exp, study.info.run_id, port).split("then open ")[-1]
            compared = urllib.parse.quote(json.dumps([r.info.run_id for r in finished[:4]]))
            # page -> (address, a text that is there once it has loaded)
            pages = {
                "run_list.png": (run_list, "trial-"),
                "trial.png": (
                    f"{base}/#/experiments/{exp}/runs/{best_id}?workflowType=machine_learning",
                    "weights/",
                ),
                "compare.png": (
                    f"{base}/#/compare-runs?runs={compared}&experiments=%5B%22{exp}%22%5D&workflowType=machine_learning",
                    "weight_histograms.png",
                ),
            }
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name, (url, loaded) in pages.items():
                    page = browser.new_page(viewport=VIEWPORT)
                    page.goto(url)
                    page.get_by_text(loaded).first.wait_for(state="attached", timeout=60_000)
                    if name == "compare.png":
                        # The compare view lists the files the runs share at the left of its
                        # Artifacts section; selecting one shows it for every run side by side.
                        entry = page.get_by_text("weight_histograms.png").first
                        entry.scroll_into_view_if_needed()
                        entry.evaluate("e => e.click()")
                        page.locator("img").last.wait_for(timeout=60_000)
                        page.get_by_text("Artifacts", exact=True).first.scroll_into_view_if_needed()
                    page.wait_for_timeout(1500)  # let the charts draw (a render, not a wait for a result)
                    page.screenshot(path=str(out / name))
                    print(f"{out / name}: {url}")
                browser.close()
        finally:
            os.killpg(ui.pid, signal.SIGTERM)
            ui.wait(timeout=30)


if __name__ == "__main__":
    main()
