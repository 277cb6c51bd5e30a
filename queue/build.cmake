# queue: the spool library (ferry_queue), its tests and its benchmark.
add_library(ferry_queue STATIC
  ${CMAKE_SOURCE_DIR}/queue/spool.cc
  ${CMAKE_SOURCE_DIR}/queue/records.cc)
target_include_directories(ferry_queue PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(ferry_queue PUBLIC PkgConfig::LMDB PkgConfig::ZSTD
                      OpenSSL::Crypto Threads::Threads)

if(FERRY_TESTS)
  # A second process for the tests: torture child, submitter, lister.
  add_executable(spool_helper ${CMAKE_SOURCE_DIR}/tests/queue/spool_helper.cc)
  target_link_libraries(spool_helper PRIVATE ferry_queue)

  add_executable(spool_unit_tests ${CMAKE_SOURCE_DIR}/tests/queue/spool_test.cc)
  target_link_libraries(spool_unit_tests PRIVATE ferry_queue GTest::gtest_main)
  target_compile_definitions(spool_unit_tests PRIVATE
    FERRY_SHARED_DIR="${FERRY_SHARED_DIR}")
  gtest_discover_tests(spool_unit_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 120 LABELS queue)

  add_executable(spool_process_tests
    ${CMAKE_SOURCE_DIR}/tests/queue/spool_process_test.cc)
  target_link_libraries(spool_process_tests PRIVATE ferry_queue
                        GTest::gtest_main)
  target_compile_definitions(spool_process_tests PRIVATE
    FERRY_SPOOL_HELPER="$<TARGET_FILE:spool_helper>")
  add_dependencies(spool_process_tests spool_helper)
  gtest_discover_tests(spool_process_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 180 LABELS queue)
endif()

if(FERRY_BENCHMARKS)
  add_executable(ferry-spool-bench
    ${CMAKE_SOURCE_DIR}/tests/bench/spool_bench.cc)
  target_link_libraries(ferry-spool-bench PRIVATE ferry_queue)
endif()
