#!/usr/bin/env bash
# Builds mir-flare 1.4.0 from its PyPI sdist with no network access beyond PyPI,
# into the venv given as $1. The recipe is measured in ../shared/notes/dependencies.md.
set -euo pipefail
venv=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
py="$venv/bin/python"
pybind_dir=$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')
export FLARE_CMAKE_FLAGS="\
 -DFETCHCONTENT_FULLY_DISCONNECTED=ON -DFETCHCONTENT_TRY_FIND_PACKAGE_MODE=ALWAYS\
 -Dpybind11_DIR=$pybind_dir\
 -DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest -DBUILD_GMOCK=OFF -DINSTALL_GTEST=OFF\
 -DFETCHCONTENT_SOURCE_DIR_JSON=$here/nlohmann_json\
 -DCMAKE_PROJECT_flare_INCLUDE=$here/eigen_from_debian.cmake\
 -DPython_EXECUTABLE=$py"
# --no-deps: FLARE's metadata pins numpy<1.23 and ase==3.22, which it runs fine without.
# --no-build-isolation: build against the venv's setuptools<81 and pybind11>=2.13.
"$py" -m pip install --no-deps --no-build-isolation --no-binary mir-flare "mir-flare==1.4.0"
"$py" -c 'import flare.bffs.sgp._C_flare as c; print("FLARE built:", c.__file__)'
