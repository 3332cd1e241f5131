# Injected into FLARE's CMake project with -DCMAKE_PROJECT_flare_INCLUDE=<this file>.
# FLARE downloads Eigen 3.3.7 with ExternalProject_Add(eigen_project URL ...), which fails
# offline. This redefinition turns that one call into a target whose SOURCE_DIR is
# TM23_EIGEN_INCLUDE (Debian's /usr/include/eigen3, or cmeel-eigen's headers in the venv);
# every other ExternalProject_Add passes through unchanged.
include(ExternalProject)

if(NOT TM23_EIGEN_INCLUDE)
  set(TM23_EIGEN_INCLUDE /usr/include/eigen3)
endif()

function(ExternalProject_Add name)
  if(name STREQUAL "eigen_project")
    add_custom_target(eigen_project)
    set_property(TARGET eigen_project PROPERTY _EP_SOURCE_DIR ${TM23_EIGEN_INCLUDE})
    message(STATUS "[tm23-sweep] eigen_project -> ${TM23_EIGEN_INCLUDE}")
  else()
    _ExternalProject_Add(${name} ${ARGN})
  endif()
endfunction()

# FLARE's own C++ unit tests (ctests/) link googletest, which PyPI does not carry; the PyPI
# toolchain builds the Python module without them.
if(TM23_SKIP_FLARE_CTESTS)
  function(add_subdirectory dir)
    if(dir STREQUAL "ctests")
      message(STATUS "[tm23-sweep] FLARE's C++ tests (ctests/) not built: no googletest")
    else()
      _add_subdirectory(${dir} ${ARGN})
    endif()
  endfunction()
endif()
