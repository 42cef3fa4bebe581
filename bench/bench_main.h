// main() of the Google Benchmark suites: takes --threads=N out of argv and applies it to OpenMP and OpenBLAS
// together, records the run's settings in the benchmark context, registers the suite's benchmarks and runs them.
#pragma once
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"

namespace bench {

inline int bench_main(int argc, char** argv, void (*register_benchmarks)()) {
  std::vector<char*> args;
  for (int i = 0; i < argc; i++) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0)
      set_threads(std::atoi(argv[i] + 10));
    else
      args.push_back(argv[i]);
  }
  int n = (int)args.size();
  benchmark::AddCustomContext("openblas_corename", blas_corename());
  benchmark::AddCustomContext("openblas_threads", std::to_string(blas_threads()));
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_threads()));
  benchmark::AddCustomContext("runtime", runtime_info());
  register_benchmarks();
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
