"""The MLflow UI on a real sweep, in headless Chromium.

A tiny real FLARE sweep (Cu, 4 configurations over r_cut, n_max and l_max) logs to its sqlite
store; a real ``mlflow server`` serves that store on 127.0.0.1; the browser opens the link that
``tm23-sweep status`` prints (on the test server's port) and must land in the model-training
view, show every run with its metric columns, and compare the runs on r_cut / n_max / l_max
against val_forces_mae in a parallel-coordinates chart. Screenshots of the table and of the
chart are saved in the test's temporary folder, and with ``TM23_UPDATE_SCREENSHOTS=1`` as
``dashboards/mlflow_runs_table.png`` and ``dashboards/mlflow_parallel_coordinates.png`` (a test run never
rewrites checked-in files unless asked).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.analysis import mlflow_ui_page as page
from tests.sweeps.conftest import REPO, cli_command, cli_env, write_space

pytestmark = pytest.mark.slow

NAME = "ui-sweep"
PARAMS = ["r_cut", "n_max", "l_max"]
METRIC = "val_forces_mae"
TABLE_COLUMNS = ["val_forces_mae", "test_forces_mae", "test_energy_mae", *PARAMS]

@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where screenshots go: ``dashboards/`` with ``TM23_UPDATE_SCREENSHOTS=1``, else a temporary folder."""
    import os

    return REPO / "dashboards" if os.environ.get("TM23_UPDATE_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("shots")

#: 4 FLARE trials of 1 CPU on Cu; r_cut, n_max and l_max all vary (n_max follows l_max)
SPACE = """
elements: [Cu]
task: full
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params:
      r_cut: {grid: [4.0, 4.8]}
      l_max: {grid: [1, 2]}
      n_max: {from: l_max, map: {1: 4, 2: 3}}
      zeta: 2
      sparse_per_frame: 6
      block_size: 8
      optimize_every: 8
      maxiter: 30
"""
TRIALS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(sweep_store, tmp_path_factory):
    """A finished tiny sweep, a real ``mlflow server`` on its store (free loopback port) and headless
    Chromium with a fresh profile. The server and the browser start, and the browser loads the UI's
    scripts, while the sweep runs."""
    if page.browser_missing():
        pytest.skip(page.browser_missing())
    pytest.importorskip("selenium")
    from mlflow.tracking import MlflowClient

    from sweep.cli.sweeps import stop_process_group
    from sweep.integrations.mlflow import experiment_ids, find_runs

    root = tmp_path_factory.mktemp("ui")
    runs = root / "runs"
    runs.mkdir()
    uri = f"sqlite:///{runs.absolute() / 'mlruns.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # the schema, made once, before two processes open it
    space = write_space(root, SPACE)
    ray_tmp = tempfile.mkdtemp(prefix="ray-ui-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, ray_tmp, ignore_errors=True)
        sweep_log = open(root / "sweep.log", "w")
        cleanup.callback(sweep_log.close)
        sweep = subprocess.Popen(cli_command("run", str(space), "--store", sweep_store, "--name", NAME,
                                             "--runs-dir", str(runs), "--num-cpus", "2", "--no-live"),
                                 cwd=REPO, env=cli_env({"RAY_TMPDIR": ray_tmp}), stdout=sweep_log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        cleanup.callback(stop_process_group, sweep)  # a no-op once it has ended
        server_log = open(root / "server.log", "w")
        cleanup.callback(server_log.close)
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
        cleanup.callback(stop_process_group, server)  # the server and the huey consumers it starts
        driver = page.start_browser(root / "profile", root / "chromedriver.log")
        cleanup.callback(driver.quit)
        _wait_healthy(port, server, root / "server.log")
        driver.get(f"http://127.0.0.1:{port}/#/")  # parse the UI's scripts now; the link below changes only the route
        assert sweep.wait(timeout=300) == 0, (root / "sweep.log").read_text()[-3000:]
        experiment_id = experiment_ids(uri, [NAME])[NAME]
        found = {r.info.run_name: r for r in find_runs(uri, experiment_id)}
        assert len(found) == TRIALS and all(r.info.status == "FINISHED" for r in found.values())
        assert MlflowClient(tracking_uri=uri).get_experiment(experiment_id).tags["mlflow.experimentKind"] \
            == "custom_model_development"
        yield SimpleNamespace(runs=runs, uri=uri, experiment_id=experiment_id, found=found, port=port,
                              driver=driver)


@pytest.fixture(scope="module")
def opened(stack):
    """The experiment page, opened from the link `tm23-sweep status` prints, moved to the test server's port."""
    from sweep.cli.status import mlflow_link
    from sweep.integrations.mlflow import ui_link
    from sweep.results import open_sweep

    printed = mlflow_link(open_sweep(NAME, stack.runs))
    assert printed == f"http://127.0.0.1:5000/#/experiments/{stack.experiment_id}?workflowType=machine_learning"
    link = ui_link(stack.uri, stack.experiment_id, port=stack.port)
    assert link == printed.replace(":5000/", f":{stack.port}/")
    browser = stack.driver
    browser.get(link)
    page.wait_for(browser, lambda d: len(page.runs_table(d)) == TRIALS, f"{TRIALS} rows in the runs table")
    page.close_assistant(browser)
    return browser


def test_the_printed_link_opens_the_model_training_view(opened, stack):
    experiment_id = stack.experiment_id
    where = urlsplit(opened.current_url)
    route = urlsplit(where.fragment)
    # the UI sends a model-training experiment to its runs; the GenAI view would show its overview
    assert route.path == f"/experiments/{experiment_id}/runs", opened.current_url
    assert parse_qs(route.query)["workflowType"] == ["machine_learning"]
    nav = opened.execute_script("return document.body.innerText")
    assert "Model training" in nav and "Sessions" not in nav and "Judges" not in nav
    # by the link alone: the fresh profile remembers no view of its own
    assert opened.execute_script("return localStorage.getItem('mlflow.workflowType')") is None


def test_runs_table_shows_every_run_with_metric_columns(opened, stack, screenshots):
    found = stack.found
    page.choose_columns(opened, ["Dataset", "Source", "Models", *TABLE_COLUMNS])
    wanted = {f"metrics.`{m}`" for m in TABLE_COLUMNS[:3]} | {f"params.`{p}`" for p in PARAMS}
    page.wait_for(opened, lambda d: wanted <= set(page.header_ids(d)), "the metric and param columns")
    rows = page.runs_table(opened)
    assert len(rows) == TRIALS
    by_name = {row["attributes.`Run Name`"].split("\n")[-1]: row for row in rows}
    assert set(by_name) == set(found)
    for name, run in found.items():
        row = by_name[name]
        for metric in TABLE_COLUMNS[:3]:
            shown = float(row[f"metrics.`{metric}`"])
            assert math.isclose(shown, run.data.metrics[metric], rel_tol=1e-9), (name, metric)
        for param in PARAMS:
            assert float(row[f"params.`{param}`"]) == float(run.data.params[param]), (name, param)
    page.autosize_columns(opened, "metrics.")
    page.wait_for(opened, lambda d: page.columns_fit(d, "metrics."), "the metric columns to show whole values")
    shot = page.save_screenshot(opened, screenshots / "mlflow_runs_table.png")
    assert shot.stat().st_size > 20_000


def test_parallel_coordinates_compare_the_runs(opened, stack, screenshots):
    found = stack.found
    page.show_charts(opened)
    page.add_parallel_coordinates(opened, PARAMS, [METRIC])
    chart = page.open_chart_fullscreen(opened, "Parallel Coordinates")
    axes = page.chart_axes(opened, chart)
    assert [label for label, _ in axes] == [*PARAMS, METRIC]
    for label, ticks in axes:
        values = [float(r.data.params[label]) if label in PARAMS else r.data.metrics[label] for r in found.values()]
        ticks = [float(t.replace(",", "")) for t in ticks]
        assert len(ticks) >= 2 and min(values) - 1e-9 <= ticks[0] < ticks[-1] <= max(values) + 1e-9, (label, ticks)
        if label in PARAMS:  # the axis spans exactly the grid's values
            assert (ticks[0], ticks[-1]) == (min(values), max(values)), (label, ticks)
    assert page.inked_pixels(opened, chart) > 2_000  # the runs' lines are drawn
    shot = page.save_screenshot(opened, screenshots / "mlflow_parallel_coordinates.png")
    assert shot.stat().st_size > 20_000
