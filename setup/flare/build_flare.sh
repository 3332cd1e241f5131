#!/usr/bin/env bash
# Builds mir-flare 1.4.0 from its PyPI sdist with no network access beyond PyPI, into the venv $1.
#   $2  toolchain: "debian" (CMake, Ninja, Eigen, nlohmann-json, googletest and OpenBLAS from Debian)
#       or "pypi" (the pinned wheels of $3 installed into the venv; FLARE's C++ tests not built)
#   $3  the pypi toolchain's requirements, one per line
# The recipe is measured in ../shared/notes/dependencies.md.
set -euo pipefail
venv=$(cd "$1" && pwd)
toolchain=${2:-debian}
here=$(cd "$(dirname "$0")" && pwd)
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)
pybind_dir=$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')
flags="-DFETCHCONTENT_FULLY_DISCONNECTED=ON -DFETCHCONTENT_TRY_FIND_PACKAGE_MODE=ALWAYS
 -Dpybind11_DIR=$pybind_dir -DFETCHCONTENT_SOURCE_DIR_JSON=$here/nlohmann_json
 -DCMAKE_PROJECT_flare_INCLUDE=$here/offline_deps.cmake -DPython_EXECUTABLE=$py"
install=(--force-reinstall --no-deps --no-build-isolation --no-binary mir-flare "mir-flare==1.4.0")
case "$toolchain" in
  debian)
    flags="$flags -DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest -DBUILD_GMOCK=OFF -DINSTALL_GTEST=OFF"
    ;;
  pypi)
    mapfile -t requirements <<< "${3:?the pypi toolchain needs its requirements}"
    "${pip[@]}" install -q "${requirements[@]}"
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    flags="$flags -DTM23_EIGEN_INCLUDE=$site/cmeel.prefix/include/eigen3 -DTM23_JSON_INCLUDE=$site/nlohmann_json/include
 -DTM23_SKIP_FLARE_CTESTS=ON -DBLA_VENDOR=OpenBLAS -DCMAKE_PREFIX_PATH=$site/cmeel.prefix"
    # FLARE's setup.py runs `cmake` and looks for `ninja` on PATH: the venv's wheels.
    export PATH="$venv/bin:$PATH"
    # pip's wheel cache would hand back a FLARE linked against another toolchain's BLAS.
    install=(--no-cache-dir "${install[@]}")
    ;;
  *) echo "[setup] build_flare.sh: toolchain must be debian or pypi, not '$toolchain'" >&2; exit 2 ;;
esac
export FLARE_CMAKE_FLAGS="${flags//$'\n'/}"
# --force-reinstall: a FLARE already in the venv may come from the other toolchain.
# --no-deps: FLARE's metadata pins numpy<1.23 and ase==3.22, which it runs fine without.
# --no-build-isolation: build against the venv's setuptools<81 and pybind11>=2.13.
"${pip[@]}" install "${install[@]}"
"$py" -c 'import flare.bffs.sgp._C_flare as c; print("FLARE built:", c.__file__)'
