"""Bad input, tried systematically: one clear line naming file and field, exit non-zero, nothing changed."""

from __future__ import annotations

import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.corpus import (
    CORPUS,
    RESOURCE_CASES,
    TARGET,
    BadInput,
    judge,
    make_workspace,
    run_cli,
    snapshot,
    truncation_offset,
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("bad-inputs"))


def test_corpus_is_large_and_covers_every_kind():
    kinds = {c.kind for c in CORPUS + RESOURCE_CASES}
    assert len(CORPUS + RESOURCE_CASES) >= 30 and kinds == {"archive", "space", "cli"}
    assert len({(c.kind, c.name) for c in CORPUS + RESOURCE_CASES}) == len(CORPUS + RESOURCE_CASES)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.kind}-{c.name}")
def test_bad_input_is_refused_clearly(case: BadInput, workspace, tmp_path):
    outcome = judge(case, workspace, tmp_path / case.name)
    assert outcome.clear, (outcome.problems, outcome.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("case", RESOURCE_CASES, ids=lambda c: c.name)
def test_impossible_resources_are_refused_before_ray_waits(case: BadInput, workspace, tmp_path):
    outcome = judge(case, workspace, tmp_path / case.name)
    assert outcome.code == 2 and not [p for p in outcome.problems if not p.startswith("changed")], outcome.problems
    assert not outcome.changed, outcome.changed  # the refused sweep's folder is removed again


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_any_truncation_inside_a_frame_is_refused(workspace, tmp_path_factory, fraction):
    collection = tmp_path_factory.mktemp("trunc") / "archive"
    shutil.copytree(workspace.pristine, collection)
    path = collection / TARGET
    data = path.read_bytes()
    path.write_bytes(data[:truncation_offset(data, fraction)])
    before = snapshot([workspace.store])
    code, err = run_cli(["data", "ingest", str(collection), "--store", str(workspace.store)])
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: "), err
    assert snapshot([workspace.store]) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True),
       value=st.one_of(st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=3)),
       where=st.sampled_from(["top", "study", "resources", "search"]))
def test_unknown_keys_anywhere_in_a_space_are_named(workspace, tmp_path_factory, key, value, where):
    import yaml

    from sweep.tune.space import SearchSpace, Resources, SearchSettings, Study

    known = {"top": SearchSpace, "study": Study, "resources": Resources, "search": SearchSettings}[where]
    if key in known.model_fields or any(f.alias == key for f in known.model_fields.values()):
        return
    space = {"studies": [{"model": "flare", "elements": ["Cu"], "resources": {"cpus": 1}}], "search": {"algorithm": "grid"}}
    target = {"top": space, "study": space["studies"][0], "resources": space["studies"][0]["resources"],
              "search": space["search"]}[where]
    target[key] = value
    path = tmp_path_factory.mktemp("space") / "fuzz.yaml"
    path.write_text(yaml.safe_dump(space))
    before = snapshot([workspace.runs])
    code, err = run_cli(["run", str(path), "--store", str(workspace.store), "--runs-dir", str(workspace.runs), "--no-live"])
    prefix = {"top": "", "study": "studies[0].", "resources": "studies[0].resources.", "search": "search."}[where]
    assert code == 2 and err == f"error: {path}: {prefix}{key}: unknown key\n", err
    assert snapshot([workspace.runs]) == before


def test_seeded_random_bytes_never_crash_ingest(workspace, tmp_path):
    rng = random.Random(20260101)
    for i in range(10):
        collection = tmp_path / f"a{i}" / "archive"
        shutil.copytree(workspace.pristine, collection)
        data = bytearray((collection / TARGET).read_bytes())
        for _ in range(rng.randint(1, 8)):  # flip characters into digits, letters, NULs or newlines
            data[rng.randrange(len(data))] = rng.choice(b"0x\x00\n-e")
        (collection / TARGET).write_bytes(bytes(data))
        code, err = run_cli(["data", "ingest", str(collection), "--store", str(workspace.store)])
        # a flip may land in a digit and leave a valid file; anything else is one clear line
        assert code in (0, 2) and (code == 0 or (err.count("\n") == 1 and err.startswith("error: "))), err
