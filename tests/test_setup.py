"""The set-up as a user without root: a missing Debian package stops make with one line naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp_path():
    """A fresh folder that ``nobody`` may write (pytest's own sit under a root-only folder)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="tm23-nonroot-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(tmp_path: Path, packages: list[str]) -> subprocess.CompletedProcess:
    """The Makefile's ``.stamps/apt`` for ``packages``, run as ``nobody`` with an empty home and stamps in ``tmp_path``."""
    listing = tmp_path / "apt-packages.txt"
    listing.write_text("# test list\n" + "\n".join(packages) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    # the Makefile copied where nobody can read it: the checkout may sit in a folder only root enters
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(REPO / "Makefile", project / "Makefile")
    os.chmod(tmp_path, 0o777)
    for path in (listing, home, project, project / "Makefile"):
        shutil.chown(path, "nobody")
    command = ["runuser", "-u", "nobody", "--", "env", f"HOME={home}", "make", "-s", "-C", str(project),
               f"STAMPS={tmp_path / 'stamps'}", f"APT_LIST={listing}", f"{tmp_path / 'stamps'}/apt"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to become nobody")


def test_a_missing_package_stops_a_non_root_set_up_with_one_line(tmp_path):
    result = _as_nobody(tmp_path, ["make", "tm23-no-such-package"])
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("[setup]")]
    assert len(lines) == 1 and "missing Debian packages: tm23-no-such-package;" in lines[0], result.stderr
    assert "apt-get install tm23-no-such-package" in lines[0] and "make," not in lines[0]
    assert not (tmp_path / "stamps" / "apt").exists()


def test_present_packages_need_no_root(tmp_path):
    lines = (REPO / "setup" / "apt-packages.txt").read_text().splitlines()
    packages = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    result = _as_nobody(tmp_path, packages)
    assert result.returncode == 0, result.stderr
    assert "apt packages present" in result.stdout and (tmp_path / "stamps" / "apt").is_file()
