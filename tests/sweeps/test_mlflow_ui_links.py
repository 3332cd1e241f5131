"""The MLflow UI opens sweeps as model training: the experiment-kind tag, and every printed link's view."""

from __future__ import annotations

import socket
import time

import numpy as np
from urllib.parse import parse_qs, urlsplit

from sweep.integrations.mlflow import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, client, ensure_experiment,
                                       experiment_ids, ui_link)

WORKFLOW = {"workflowType": ["machine_learning"]}


def _query(link: str) -> dict:
    # the UI routes after '#': its query is the fragment's
    return parse_qs(urlsplit(urlsplit(link).fragment).query)


def test_new_experiment_is_tagged_as_model_development(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    exp = ensure_experiment(uri, "s", tmp_path / "art")
    assert client(uri).get_experiment(exp).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_existing_experiment_gets_the_tag_and_a_chosen_kind_is_kept(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    c = client(uri)
    plain = c.create_experiment("plain", artifact_location=(tmp_path / "a1").as_uri())
    guessed = c.create_experiment("guessed", artifact_location=(tmp_path / "a2").as_uri(),
                                  tags={EXPERIMENT_KIND_TAG: "custom_model_development_inferred"})
    chosen = c.create_experiment("chosen", artifact_location=(tmp_path / "a3").as_uri(),
                                 tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert ensure_experiment(uri, "plain", tmp_path / "art") == plain
    assert ensure_experiment(uri, "guessed", tmp_path / "art") == guessed
    assert ensure_experiment(uri, "chosen", tmp_path / "art") == chosen
    assert c.get_experiment(plain).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert c.get_experiment(guessed).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert c.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # the user's, untouched
    c.delete_experiment(plain)
    assert ensure_experiment(uri, "plain", tmp_path / "art") == plain  # restored, still tagged
    assert c.get_experiment(plain).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_links_open_the_model_training_view():
    local = "sqlite:////r/mlruns.db"
    assert ui_link(local) == "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
    assert ui_link(local, "7") == "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    assert ui_link(local, "7", "abc") == "http://127.0.0.1:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    assert ui_link(local, "7", host="0.0.0.0", port=5123).startswith("http://127.0.0.1:5123/#/experiments/7?")
    assert ui_link(local, host="::1", port=6000).startswith("http://[::1]:6000/#/")
    # a tracking server serves its own UI; credentials never reach a printed link
    served = ui_link("https://alice:secret@mlflow.example.org:8443/", "12")
    assert served == "https://mlflow.example.org:8443/#/experiments/12?workflowType=machine_learning"
    for link in (ui_link(local), ui_link(local, "7", "abc"), served):
        assert _query(link) == WORKFLOW


def test_experiment_ids_never_create_a_store_nor_wait_for_a_dead_server(tmp_path):
    missing = tmp_path / "nothing.db"
    assert experiment_ids(f"sqlite:///{missing}", ["s"]) == {}
    assert not missing.exists()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert experiment_ids(f"http://127.0.0.1:{port}", ["s"]) == {}
    assert time.monotonic() - started < 5
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    exp = ensure_experiment(uri, "s", tmp_path / "art")
    assert experiment_ids(uri, ["s", "other"]) == {"s": exp}


def test_ui_command_lists_each_sweeps_link(tmp_path):
    from sweep.cli.sweeps import ui_links

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    exp = ensure_experiment(uri, "s", tmp_path / "art")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text("{}")  # list_sweeps finds sweeps by this file
    (tmp_path / "not-logged-yet").mkdir()
    (tmp_path / "not-logged-yet" / "sweep.json").write_text("{}")
    assert ui_links(tmp_path, uri, "127.0.0.1", 5001) == [
        "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning",
        f"s: http://127.0.0.1:5001/#/experiments/{exp}?workflowType=machine_learning"]


def test_dashboard_links_each_sweep_in_the_model_training_view(tmp_path):
    from sweep.analysis.report import build_report
    from sweep.analysis.runs import load_runs
    from tests.analysis.synthetic import SyntheticSweep, flare_params, scores

    synthetic = SyntheticSweep(tmp_path / "mlflow")
    rng = np.random.default_rng(0)
    for r_cut, l_max in ((4.5, 2), (5.0, 3)):
        synthetic.log("Cu", "flare", "grid", flare_params(r_cut, l_max), scores("Cu", "flare", 1.0, rng),
                      artifacts=False)
    result = build_report(load_runs(synthetic.name, tracking_uri=synthetic.uri), tmp_path / "dash")
    link = ui_link(synthetic.uri, synthetic.experiment_id)
    assert f'<a href="{link}">{synthetic.name} in the MLflow UI</a>' in result.page.read_text()
