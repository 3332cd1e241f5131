"""The set-up's system packages: as root they are installed, without root the build ones come from PyPI
and any other missing one stops make with one line naming it and how to get it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = REPO / "setup" / "system-packages.toml"


def _helper():
    spec = importlib.util.spec_from_file_location("system_packages", REPO / "setup" / "system_packages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


system_packages = _helper()
TABLE = system_packages.load(PACKAGES)


def _present_but(*absent: str):
    return lambda name: name not in absent


def test_without_root_the_build_packages_pypi_has_come_from_pypi():
    toolchain, missing = system_packages.choose(TABLE, "build", "auto", False,
                                                _present_but("cmake", "libeigen3-dev", "googletest"))
    assert (toolchain, missing) == ("pypi", [])


def test_as_root_missing_packages_are_installed_from_debian():
    toolchain, missing = system_packages.choose(TABLE, "test", "auto", True, _present_but("cmake", "chromium"))
    assert (toolchain, missing) == ("debian", ["cmake", "chromium"])


def test_a_compiler_has_no_pypi_equivalent():
    toolchain, missing = system_packages.choose(TABLE, "build", "auto", False,
                                                _present_but("build-essential", "cmake"))
    assert (toolchain, missing) == ("pypi", ["build-essential"])
    line = system_packages.stop_line(TABLE, missing)
    assert line.startswith("[setup] missing system packages: build-essential (a C++ compiler")
    assert "conda-forge cxx-compiler" in line and "'apt-get install build-essential'" in line


def test_the_debian_toolchain_asked_for_takes_nothing_from_pypi():
    toolchain, missing = system_packages.choose(TABLE, "build", "debian", False, _present_but("ninja-build"))
    assert (toolchain, missing) == ("debian", ["ninja-build"])


def test_the_demo_needs_no_test_package():
    toolchain, missing = system_packages.choose(TABLE, "build", "auto", False, _present_but("chromium", "postgresql"))
    assert (toolchain, missing) == ("debian", [])
    _, missing = system_packages.choose(TABLE, "test", "auto", False, _present_but("chromium", "postgresql"))
    assert missing == ["chromium", "postgresql"]


def test_every_package_says_how_to_get_it_and_the_pypi_pins_are_exact():
    assert all(entry["otherwise"] for entry in TABLE.values())
    requirements = system_packages.pypi_requirements(TABLE)
    assert requirements and all("==" in req for req in requirements)
    assert {"cmake", "ninja", "cmeel-eigen", "nlohmann-json", "cmeel-openblas"} == {r.split("==")[0] for r in requirements}


def test_a_bad_scope_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "packages.toml"
    bad.write_text('[cmake]\nfor = "demo"\notherwise = "conda-forge cmake"\n')
    with pytest.raises(SystemExit, match=rf"{bad}: \[cmake\] for: must be 'build' or 'test'"):
        system_packages.load(bad)


# ---- as a user without root, through make -----------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to become nobody")


@pytest.fixture
def nobody_dir():
    """A fresh folder that ``nobody`` may write (pytest's own sit under a root-only folder)."""
    path = Path(tempfile.mkdtemp(prefix="tm23-nonroot-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _copy_for_nobody(where: Path, files: list[str]) -> Path:
    """The checkout's ``files`` copied where ``nobody`` owns them (the checkout may sit in a folder only root enters)."""
    project = where / "project"
    for name in files:
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    subprocess.run(["chown", "-R", "nobody", str(project)], check=True)
    return project


def _make_as_nobody(where: Path, project: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    home = where / "home"
    home.mkdir(exist_ok=True)
    shutil.chown(home, "nobody")
    command = ["runuser", "-u", "nobody", "--", "env", "-i", f"HOME={home}", f"PATH={os.environ['PATH']}",
               "make", "-s", "-C", str(project), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _system_check(where: Path, table: str) -> subprocess.CompletedProcess:
    listing = where / "packages.toml"
    listing.write_text(table)
    shutil.chown(listing, "nobody")
    project = _copy_for_nobody(where, ["Makefile", "setup/system_packages.py"])
    return _make_as_nobody(where, project, f"STAMPS={where / 'stamps'}", f"SYSTEM_PACKAGES={listing}",
                           f"{where / 'stamps'}/system-build", timeout=60)


@needs_root
def test_a_missing_package_stops_a_non_root_set_up_with_one_line(nobody_dir):
    result = _system_check(nobody_dir, '[make]\nfor = "build"\notherwise = "conda-forge make"\n\n'
                                       '[tm23-no-such-package]\nfor = "build"\notherwise = "module load tm23"\n')
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("[setup]")]
    assert len(lines) == 1, result.stderr
    assert "missing system packages: tm23-no-such-package (module load tm23);" in lines[0]
    assert "'apt-get install tm23-no-such-package'" in lines[0]
    assert not (nobody_dir / "stamps" / "system-build").exists()


@needs_root
def test_a_missing_build_package_pypi_has_switches_to_the_pypi_toolchain(nobody_dir):
    result = _system_check(nobody_dir, '[make]\nfor = "build"\notherwise = "conda-forge make"\n\n'
                                       '[tm23-absent-cmake]\nfor = "build"\npypi = ["cmake==3.31.10"]\n'
                                       'otherwise = "conda-forge cmake"\n')
    assert result.returncode == 0, result.stderr
    assert (nobody_dir / "stamps" / "toolchain").read_text() == "pypi\n"
    assert "build system packages present (pypi toolchain)" in result.stdout


@needs_root
def test_present_packages_need_no_root(nobody_dir):
    result = _system_check(nobody_dir, PACKAGES.read_text())
    assert result.returncode == 0, result.stderr
    assert (nobody_dir / "stamps" / "toolchain").read_text() == "debian\n"


@needs_root
@pytest.mark.full_setup
def test_the_whole_set_up_without_root_on_the_pypi_toolchain(nobody_dir):
    """``make setup TOOLCHAIN=pypi`` as ``nobody`` with an empty home: FLARE builds on PyPI's CMake, Ninja,
    Eigen, nlohmann-json and OpenBLAS, and trains."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    project = _copy_for_nobody(nobody_dir, [name for name in files if (REPO / name).is_file()])
    start = time.monotonic()
    result = _make_as_nobody(nobody_dir, project, "TOOLCHAIN=pypi", "setup", timeout=1800)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pypi toolchain" in result.stdout
    python = project / ".venv" / "bin" / "python"
    module = subprocess.run([str(python), "-c", "import flare.bffs.sgp._C_flare as c; print(c.__file__)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    linked = subprocess.run(["ldd", module], capture_output=True, text=True, check=True).stdout
    assert "cmeel.prefix/lib/libopenblas.so" in linked, linked
    training = subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i", f"HOME={nobody_dir / 'home'}",
                               str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/trainers/test_contract_flare.py"],
                              cwd=project, capture_output=True, text=True, timeout=900)
    assert training.returncode == 0, training.stdout[-3000:]
    print(f"non-root set-up on the pypi toolchain: {elapsed:.0f} s; FLARE trainer tests: "
          f"{training.stdout.strip().splitlines()[-1]}", file=sys.stderr)
