# tests: shared test helpers.  Each component registers its own tests in its
# build.cmake; the tests' sources live under tests/<component>/.
#
# Labels: "slow" marks the longest end-to-end tests, which the sanitizer run
# leaves out.  Benchmarks are built (FERRY_BENCHMARKS) but never registered
# as tests.
set(FERRY_NETNS_RUN "${CMAKE_SOURCE_DIR}/tests/netns-run.sh")
