# Included by the root CMakeLists.txt with -DSKIPGRAD_CUDA_EMULATOR=ON: the CUDA backend (backends/cuda/*.cu)
# compiled as host C++ and run on the CPU (docs/cuda.md, "The CUDA emulator"). Each .cu is copied into the build
# folder with its <<<...>>> launches rewritten (rewrite_launches.cpp); this folder's cuda_runtime.h, cuda_runtime_api.h,
# cublas_v2.h and cublasLt.h stand in for the CUDA Toolkit's, so nothing of CUDA is linked.
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  message(FATAL_ERROR "SKIPGRAD_CUDA_EMULATOR: the emulator's fiber switch is x86-64 assembly")
endif()
add_executable(rewrite_launches ${CMAKE_CURRENT_LIST_DIR}/rewrite_launches.cpp)
file(GLOB _skipgrad_cu CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/backends/cuda/*.cu)
set(_skipgrad_emulated "")
foreach(cu ${_skipgrad_cu})
  get_filename_component(name ${cu} NAME_WE)
  set(cpp ${PROJECT_BINARY_DIR}/cuda_emulated/${name}.cpp)
  add_custom_command(OUTPUT ${cpp} COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/cuda_emulated
                     COMMAND rewrite_launches ${cu} ${cpp} DEPENDS rewrite_launches ${cu}
                     COMMENT "rewrite_launches ${name}.cu" VERBATIM)
  list(APPEND _skipgrad_emulated ${cpp})
endforeach()
# #pragma unroll is nvcc's; GCC and clang would warn on every one.
set_source_files_properties(${_skipgrad_emulated} PROPERTIES COMPILE_OPTIONS "-Wno-unknown-pragmas")
target_sources(skipgrad PRIVATE ${_skipgrad_emulated} ${CMAKE_CURRENT_LIST_DIR}/emulator.cpp
               ${CMAKE_CURRENT_LIST_DIR}/runtime.cpp ${CMAKE_CURRENT_LIST_DIR}/cublaslt.cpp)
target_include_directories(skipgrad BEFORE PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(skipgrad PUBLIC SKIPGRAD_WITH_CUDA=1 SKIPGRAD_CUDA_EMULATED=1)
