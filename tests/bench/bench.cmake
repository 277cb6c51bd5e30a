# tests/bench: the line-efficiency benchmark (issue 6).  A program, never a
# test: tests/bench/line_efficiency.sh runs two of it over linesim.py.
if(FERRY_BENCHMARKS AND TARGET ferry_gateway)
  add_executable(ferry-link-bench ${CMAKE_SOURCE_DIR}/tests/bench/link_bench.cc)
  target_link_libraries(ferry-link-bench PRIVATE ferry_gateway)
endif()
