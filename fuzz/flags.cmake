# Included by the root CMakeLists.txt when SKIPGRAD_FUZZ is ON, before any target exists: every object built after
# this (the library, the examples' library, the fuzz targets) gets libFuzzer's coverage instrumentation and
# ASan + UBSan, so a fuzz input that reaches undefined behaviour anywhere is a crash.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "SKIPGRAD_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++")
endif()
# -Wno-pass-failed: the coverage counters in every loop keep clang from vectorising a loop marked `omp simd` (the
# rotary kernel's), and it warns that it could not; the plain clang and GCC builds vectorise it.
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer -g -Wno-pass-failed)
add_link_options(-fsanitize=address,undefined)
