# Included by the root CMakeLists.txt: `cmake --install <build> --prefix <dir>` puts the library, its headers and a
# CMake package into <dir>, so another project can write
#     find_package(skipgrad CONFIG REQUIRED)            # with -DCMAKE_PREFIX_PATH=<dir>
#     target_link_libraries(app PRIVATE skipgrad::skipgrad)
# and `#include "skipgrad.h"` as the examples do (docs/using.md). tests/consumer/ is such a project; CTest builds
# it against a fresh install (test `consumer_find_package`).
include(CMakePackageConfigHelpers)

# Headers keep their folders (tensor/, autograd/, nn/, ...) under include/skipgrad, the include root of the target.
install(FILES ${PROJECT_SOURCE_DIR}/skipgrad.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/skipgrad)
foreach(dir tensor autograd backends backends/cpu nn nn/topologies analysis)
  file(GLOB _headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${dir}/*.h)
  install(FILES ${_headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/skipgrad/${dir})
endforeach()
if(SKIPGRAD_CUDA)
  install(FILES ${PROJECT_SOURCE_DIR}/backends/cuda/cuda_backend.h
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/skipgrad/backends/cuda)
endif()

install(TARGETS skipgrad EXPORT skipgrad-targets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
set(SKIPGRAD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/skipgrad)
install(EXPORT skipgrad-targets NAMESPACE skipgrad:: DESTINATION ${SKIPGRAD_CMAKE_DIR})
# The package config finds again what the library's interface links: OpenMP, OpenBLAS through pkg-config unless
# the OpenMP build was linked by its full path, and the CUDA Toolkit when the CUDA backend is in.
if(SKIPGRAD_OPENBLAS_LINKED_BY_PATH)
  set(SKIPGRAD_PACKAGE_NEEDS_PKGCONFIG_OPENBLAS OFF)
else()  # the interface names PkgConfig::SKIPGRAD_OPENBLAS (root CMakeLists.txt)
  set(SKIPGRAD_PACKAGE_NEEDS_PKGCONFIG_OPENBLAS ON)
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/skipgrad-config.cmake.in
                              ${PROJECT_BINARY_DIR}/skipgrad-config.cmake INSTALL_DESTINATION ${SKIPGRAD_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/skipgrad-config-version.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/skipgrad-config.cmake ${PROJECT_BINARY_DIR}/skipgrad-config-version.cmake
        DESTINATION ${SKIPGRAD_CMAKE_DIR})
