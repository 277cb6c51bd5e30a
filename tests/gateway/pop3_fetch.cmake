# POP3 multidrop collection from the provider (issue 7).  The library part
# is gateway/pop3_fetch.cc (ferry_gateway by pattern) and its unit tests
# tests/gateway/unit/pop3_fetch_test.cc (gateway_unit_tests by pattern).
# Here: the end-to-end test against a real Dovecot POP3 server
# (dovecot-pop3d), run inside a loopback-only network namespace.  It skips
# itself when dovecot or the corpus is missing.
if(TARGET ferry_gateway AND FERRY_TESTS)
  add_executable(pop3_fetch_e2e_test
                 ${CMAKE_SOURCE_DIR}/tests/gateway/e2e/pop3_fetch_test.cc)
  target_link_libraries(pop3_fetch_e2e_test PRIVATE ferry_gateway
                        GTest::gtest_main)
  target_compile_definitions(pop3_fetch_e2e_test PRIVATE
                             FERRY_SHARED_DIR="${FERRY_SHARED_DIR}")
  # One ctest entry: the whole binary runs in one namespace (each test
  # starts its own Dovecot on a port of that namespace's loopback).
  add_test(NAME gateway_e2e_pop3_fetch
           COMMAND ${FERRY_NETNS_RUN} $<TARGET_FILE:pop3_fetch_e2e_test>)
  set_tests_properties(gateway_e2e_pop3_fetch PROPERTIES
    TIMEOUT 240
    LABELS "e2e;slow")
endif()
