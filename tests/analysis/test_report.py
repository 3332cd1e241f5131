"""The dashboard: built from a synthetic MLflow sweep, self-contained, rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from sweep.analysis.report import build_report
from sweep.analysis.runs import load_runs
from sweep.errors import InputError

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, headless, kept off the (closed) network: see shared/notes/dependencies.md
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ELEMENTS = ("Au", "Cu", "Os", "Ti")
FIGURES = (
    [f"heatmap_{m}_{label}_{stat}.png" for label in ("forces", "energy", "stress") for stat in ("pct", "mae")
     for m in ("flare", "nequip")]
    + [f"learning_curves_test_{label}_mae.png" for label in ("energy", "forces", "stress")]
    + [f"parity_{e}.png" for e in ELEMENTS]
    + [f"transfer_{label}_pct.png" for label in ("energy", "forces", "stress")]
)

# Appended to a copy of the page: after load it records each image's decoded size and the
# element cells' text, then clicks the trial table's test_forces_mae header twice and
# records the column's order after each click. --dump-dom prints the result.
PROBE = """
<script>
window.addEventListener("load", function () {
  var out = {images: [], sorts: []};
  Array.prototype.forEach.call(document.images, function (img) {
    out.images.push({file: img.getAttribute("data-file"), complete: img.complete, width: img.naturalWidth,
                     height: img.naturalHeight});
  });
  var table = document.getElementById("trial-table");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) { return th.textContent.trim() === "test_forces_mae"; });
  out.column = col;
  out.elements = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent; });
  for (var k = 0; k < 2; k++) {
    heads[col].click();
    out.sorts.push({state: heads[col].getAttribute("aria-sort"),
                    values: Array.prototype.map.call(table.tBodies[0].rows, function (r) {
                      return r.cells[col].getAttribute("data-v"); })});
  }
  out.text = document.body.innerText;
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


@pytest.fixture(scope="module")
def report(synthetic_sweep, tmp_path_factory):
    runs = load_runs(synthetic_sweep.name, tracking_uri=synthetic_sweep.uri)
    out = tmp_path_factory.mktemp("report") / "dashboard"
    return runs, build_report(runs, out)


def test_every_figure_is_written_as_a_png_beside_the_page(report):
    _, result = report
    out = result.page.parent
    assert result.page.name == "index.html"
    assert sorted(p.name for p in result.figures) == sorted(FIGURES)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(FIGURES)
    for name in FIGURES:
        image = imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300, name
    manifest = json.loads((out / "report.json").read_text())
    assert sorted(manifest["figures"]) == sorted(FIGURES) and manifest["notes"] == []


def test_page_is_self_contained(report):
    _, result = report
    html = result.page.read_text()
    # every figure embedded as a data URI, identical to the PNG beside the page
    import base64

    embedded = dict(re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-file="([^"]+)"', html))
    by_file = {name: data for data, name in embedded.items()}
    assert sorted(by_file) == sorted(FIGURES)
    for name, data in by_file.items():
        assert base64.b64decode(data) == (result.page.parent / name).read_bytes()
    # nothing to fetch: no external src/href, no stylesheet or script files; the one kind of outside
    # link is a plain <a> to each sweep's experiment in the MLflow UI (opened on a click, never fetched)
    from sweep.integrations.mlflow import experiment_ids, ui_link

    runs = report[0]
    mlflow_link = ui_link(runs.tracking_uri, experiment_ids(runs.tracking_uri, runs.names)[runs.names[0]])
    assert f'<a href="{mlflow_link}">' in html
    html = html.replace(f'<a href="{mlflow_link}">', "<a>")
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<link" not in html and "<script src" not in html and "http://" not in html and "https://" not in html


def test_page_renders_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (make installs it from setup/system-packages.toml)")
    runs, result = report
    page = tmp_path / "probe.html"
    page.write_text(result.page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run; stderr: {done.stderr[-2000:]}"
    import html as html_lib

    probe = json.loads(html_lib.unescape(found.group(1)))

    # every figure decoded to an image of the size of its PNG
    assert sorted(i["file"] for i in probe["images"]) == sorted(FIGURES)
    for image in probe["images"]:
        height, width = imread(result.page.parent / image["file"]).shape[:2]
        assert image["complete"] and (image["width"], image["height"]) == (width, height), image
    # element labels on the page: captions, tables
    for element in ELEMENTS:
        assert f"{element}: predicted vs reference" in probe["text"]
        assert element in probe["elements"]
    assert len(probe["elements"]) == len(runs.table)
    # a click sorts the trial table by the column, a second click reverses it
    assert probe["column"] > 0
    ascending, descending = ([float(v) for v in s["values"]] for s in probe["sorts"])
    assert [s["state"] for s in probe["sorts"]] == ["ascending", "descending"]
    assert ascending == sorted(runs.table["test_forces_mae"]) and descending == ascending[::-1]


@pytest.fixture(scope="module")
def grid_only(synthetic_sweep):
    """A second sweep: a FLARE grid for W, no full, transfer or learning-curve runs."""
    from .synthetic import flare_params, scores

    sweep = synthetic_sweep.sibling("report-grid-only")
    for r_cut in (4.0, 5.0):
        sweep.log("W", "flare", "grid", flare_params(r_cut, 2), scores("W", "flare"))
    return sweep


def test_a_sweep_without_learning_curves_or_transfer_still_reports(grid_only, tmp_path):
    result = build_report(load_runs(grid_only.name, tracking_uri=grid_only.uri), tmp_path / "dash")
    names = sorted(p.name for p in result.figures)
    assert names == sorted(f"heatmap_flare_{label}_{stat}.png" for label in ("forces", "energy", "stress")
                           for stat in ("pct", "mae")) + ["parity_W.png"]
    assert result.notes == ["This sweep has no learning-curve runs."]
    assert "This sweep has no learning-curve runs." in result.page.read_text()


def test_report_command_and_its_guard(grid_only, tmp_path):
    from typer.testing import CliRunner

    from sweep.cli.analysis import app

    out = tmp_path / "dash"
    for _ in range(2):  # a second report replaces the first
        cli = CliRunner().invoke(app, ["report", grid_only.name, "--tracking-uri", grid_only.uri, "--out", str(out)])
        assert cli.exit_code == 0, cli.output
    assert f"wrote {out / 'index.html'} and 7 figures" in " ".join(cli.output.split())
    assert "note: This sweep has no learning-curve runs." in cli.output
    stranger = tmp_path / "home"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a tm23-sweep report folder"):
        build_report(load_runs(grid_only.name, tracking_uri=grid_only.uri), stranger)
    assert (stranger / "notes.txt").read_text() == "mine"
