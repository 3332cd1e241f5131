"""An interpreter that has the venv's packages but not tm23-sweep: where an export must run on stock tools."""

from __future__ import annotations

import csv
import site
import subprocess
import sys
from pathlib import Path


def stock_python(root: Path) -> Path:
    """A fresh venv at ``root`` that sees this venv's site-packages as a plain path (no tm23-sweep).

    tm23-sweep is installed editable through a ``.pth`` file in site-packages; a folder named in
    another venv's ``.pth`` is put on ``sys.path`` without running the ``.pth`` files in it, so
    nequip, allegro and their dependencies import there and ``sweep`` does not.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    (target / "venv_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # shared libraries that wheels put into the venv's own lib/ (mpich's libmpi, which mpi4py,
    # imported by Lightning, looks for under sys.prefix)
    for entry in (Path(sys.prefix) / "lib").iterdir():
        if not (root / "lib" / entry.name).exists():
            (root / "lib" / entry.name).symlink_to(entry)
    hidden = subprocess.run([str(python), "-c", "import sweep"], cwd=root, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'sweep'" in hidden.stderr, "tm23-sweep is not hidden"
    return python


def nequip_train_one_epoch(python: Path, export: Path, out: Path) -> list[dict]:
    """``nequip-train`` on ``export/config.yaml`` for one epoch (into ``out``) in ``python``; the CSV log rows."""
    result = subprocess.run(
        [str(python), "-m", "nequip.scripts.train", "-cp", str(export), "-cn", "config",
         "trainer.max_epochs=1", "trainer.accelerator=cpu", f"hydra.run.dir={out}"],
        cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "csv" / "version_0" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def nequip_package(python: Path, checkpoint: Path, output: Path) -> Path:
    """``nequip-package build checkpoint output`` in ``python``."""
    result = subprocess.run([str(python), "-m", "nequip.scripts.package", "build", str(checkpoint), str(output)],
                            cwd=output.parent, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return output
