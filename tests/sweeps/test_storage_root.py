"""The storage root and the tracking URI a sweep is bound to: refused where they would split or leak state."""

from __future__ import annotations

import json
import time

import pytest

from sweep.errors import InputError
from sweep.tune.runner import SweepInfo, resume_sweep, runs_root


def test_object_store_roots_are_refused_and_file_uris_accepted(tmp_path):
    with pytest.raises(InputError, match="s3://bucket/runs: runs-dir: object stores are not supported"):
        runs_root("s3://bucket/runs")
    assert runs_root(f"file://{tmp_path}") == tmp_path


def test_credentials_in_the_tracking_uri_are_refused(monkeypatch, tmp_path):
    from sweep.integrations.mlflow import tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tm23:hunter2hunter2@head:5000")
    with pytest.raises(InputError, match="MLFLOW_TRACKING_URI: tracking URI: credentials in the URI"):
        tracking_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert tracking_uri(tmp_path) == "http://head:5000"


def _fake_sweep(root, name: str, uri: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "space.yaml").write_text("elements: [Cu]\nstudies: [{model: flare}]\n")
    info = SweepInfo(name=name, space_source="x.yaml", space_digest="0", store=str(root / "store"),
                     created=time.time(), tracking_uri=uri)
    (folder / "sweep.json").write_text(info.model_dump_json())


def test_resume_refuses_another_tracking_store(monkeypatch, tmp_path):
    _fake_sweep(tmp_path, "s", "http://head:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    with pytest.raises(InputError, match="sqlite:///elsewhere.db differs from http://head:5000, where sweep 's'"):
        resume_sweep("s", runs_dir=tmp_path)
    assert not (tmp_path / "s" / "ledger").exists()  # nothing started


def test_analysis_reads_the_tracking_uri_saved_with_the_sweeps(monkeypatch, tmp_path):
    from sweep.analysis.runs import tracking_uri_for

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _fake_sweep(tmp_path, "a-grid", "http://head:5000")
    _fake_sweep(tmp_path, "a-final", "http://head:5000")
    assert tracking_uri_for(tmp_path, None, ["a-grid", "a-final"]) == "http://head:5000"
    assert tracking_uri_for(tmp_path, "sqlite:///x.db", ["a-grid"]) == "sqlite:///x.db"  # explicit wins
    _fake_sweep(tmp_path, "b", "sqlite:////somewhere/mlruns.db")
    with pytest.raises(InputError, match="the sweeps log to different stores"):
        tracking_uri_for(tmp_path, None, ["a-grid", "b"])
    # no sweep.json: what a new sweep would use
    assert tracking_uri_for(tmp_path, None, ["nope"]) == f"sqlite:///{tmp_path}/mlruns.db"


def test_a_trial_on_a_node_without_the_sweep_folder_fails_with_one_line(tmp_path):
    from sweep.tune.trainable import SweepContext, check_sweep_visible

    context = SweepContext(name="s", sweep_dir=str(tmp_path / "s"), tracking_uri="", experiment_id="",
                           loaded=None, resources={})
    with pytest.raises(InputError, match="does not see the sweep folder"):
        check_sweep_visible(context)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({}))
    check_sweep_visible(context)


@pytest.mark.parametrize("name", ["../x", "/etc", "a/b", ".hidden", ""])
def test_resume_takes_a_name_never_a_path(tmp_path, name):
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "sweep.json").write_text("{}")  # a foreign folder that resume must not open
    with pytest.raises(InputError, match="resume: name: unusable sweep name"):
        resume_sweep(name, runs_dir=tmp_path / "runs")


def test_credentials_never_reach_files_others_read(tmp_path):
    from sweep.integrations.mlflow import TrialRun, redact_uri

    assert redact_uri("http://tm23:secret@head:5000/x") == "http://head:5000/x"
    assert redact_uri("sqlite:////a/b.db") == "sqlite:////a/b.db"
    # what a trial leaves when the server is down is its owner's alone
    run = TrialRun("http://127.0.0.1:9", "1", {"config_hash": "h"}, "r", pending_file=tmp_path / "p.json")
    run.log_metrics({"m": 1.0}, step=1)
    assert run.close(retry_s=0.0) is False
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o600
