# Injected into FLARE's CMake project with -DCMAKE_PROJECT_flare_INCLUDE=<this file>.
# FLARE downloads Eigen 3.3.7 with ExternalProject_Add(eigen_project URL ...), which fails
# offline. This redefinition turns that one call into a target whose SOURCE_DIR is
# Debian's Eigen; every other ExternalProject_Add passes through unchanged.
include(ExternalProject)

function(ExternalProject_Add name)
  if(name STREQUAL "eigen_project")
    add_custom_target(eigen_project)
    set_property(TARGET eigen_project PROPERTY _EP_SOURCE_DIR /usr/include/eigen3)
    message(STATUS "[tm23-sweep] eigen_project -> /usr/include/eigen3 (Debian libeigen3-dev)")
  else()
    _ExternalProject_Add(${name} ${ARGN})
  endif()
endfunction()
