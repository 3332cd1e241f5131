#!/usr/bin/env python3
"""The system packages a make target needs, and where they come from (standard library only).

``check`` decides the FLARE build's toolchain and makes sure the rest is there:

- every package of the target present: the ``debian`` toolchain;
- as root: missing packages installed with apt-get, then ``debian``;
- without root: the missing build packages that PyPI has come from PyPI (the ``pypi`` toolchain),
  and any other missing package stops make with one line naming it and how to get it.

The toolchain is written to ``--out``; ``requirements`` prints what the ``pypi`` toolchain installs.
The package list is ``setup/system-packages.toml``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

TOOLCHAINS = ("auto", "debian", "pypi")
SCOPES = {"build": ("build",), "test": ("build", "test")}


def load(path: Path) -> dict[str, dict]:
    """The package table of ``path``: Debian name to its ``for``, ``pypi`` and ``otherwise`` entries."""
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SystemExit(f"[setup] {path}: cannot be read: {err}")
    for name, entry in table.items():
        if entry.get("for") not in SCOPES:
            raise SystemExit(f"[setup] {path}: [{name}] for: must be 'build' or 'test', not {entry.get('for')!r}")
    return table


def installed(package: str) -> bool:
    """Whether dpkg lists ``package`` as installed (False where there is no dpkg)."""
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and "install ok installed" in result.stdout


def pypi_requirements(table: dict[str, dict]) -> list[str]:
    """Every pinned requirement of the ``pypi`` toolchain, in the table's order."""
    return [req for entry in table.values() for req in entry.get("pypi", [])]


def choose(table: dict[str, dict], scope: str, toolchain: str, root: bool, present) -> tuple[str, list[str]]:
    """The toolchain, and the packages that must still come from the system, for ``scope``."""
    needed = [name for name, entry in table.items() if entry["for"] in SCOPES[scope]]
    missing = [name for name in needed if not present(name)]
    if toolchain == "auto":
        replaceable = [name for name in missing if "pypi" in table[name] and table[name]["for"] == "build"]
        toolchain = "pypi" if replaceable and not root else "debian"
    if toolchain == "pypi":
        missing = [name for name in missing if "pypi" not in table[name]]
    return toolchain, missing


def stop_line(table: dict[str, dict], missing: list[str]) -> str:
    """The one line that stops a set-up without root: each missing package, and how to get it."""
    each = ", ".join(f"{name} ({table[name]['otherwise']})" for name in missing)
    return (f"[setup] missing system packages: {each}; without root ask an administrator for "
            f"'apt-get install {' '.join(missing)}' or load them as modules, then run make again")


def check(args: argparse.Namespace) -> int:
    """``check``: make sure the scope's packages are there and write the chosen toolchain."""
    table = load(args.list)
    root = os.geteuid() == 0
    toolchain, missing = choose(table, args.scope, args.toolchain, root, installed)
    if missing and not root:
        print(stop_line(table, missing), file=sys.stderr)
        return 1
    if missing:
        print(f"[setup] apt-get install {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    else:
        print(f"[setup] {args.scope} system packages present ({toolchain} toolchain)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(toolchain + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: ``check`` or ``requirements``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", type=Path, default=Path(__file__).with_name("system-packages.toml"))
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="make sure a target's packages are there; write the toolchain")
    checking.add_argument("--scope", choices=sorted(SCOPES), required=True)
    checking.add_argument("--toolchain", choices=TOOLCHAINS, default="auto")
    checking.add_argument("--out", type=Path)
    commands.add_parser("requirements", help="print the pypi toolchain's pinned requirements")
    args = parser.parse_args(argv)
    if args.command == "requirements":
        print("\n".join(pypi_requirements(load(args.list))))
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
