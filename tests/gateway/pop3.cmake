# POP3 (issue 8, POP3 part): the test-only server program that runs the
# POP3 listener as a real process, and the end-to-end test that drives it
# with real clients (Python's poplib, curl) inside a loopback-only network
# namespace.  The parser, session, listener and Maildrop sources are
# gateway/pop3_*.cc and gateway/mailbox.cc (ferry_gateway by pattern);
# their unit tests are tests/gateway/unit/{pop3_*,mailbox}_test.cc
# (gateway_unit_tests).
if(TARGET ferry_gateway AND FERRY_TESTS)
  add_executable(pop3_test_server
                 ${CMAKE_SOURCE_DIR}/tests/gateway/pop3_test_server.cc)
  target_link_libraries(pop3_test_server PRIVATE ferry_gateway)

  find_program(FERRY_PYTHON3 NAMES python3 HINTS /usr/bin)
  add_test(NAME gateway_e2e_pop3
           COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3}
                   ${CMAKE_SOURCE_DIR}/tests/gateway/pop3_e2e.py)
  set_tests_properties(gateway_e2e_pop3 PROPERTIES
    TIMEOUT 180
    LABELS "e2e"
    ENVIRONMENT
      "POP3_TEST_SERVER=$<TARGET_FILE:pop3_test_server>;FERRY_SHARED_DIR=${FERRY_SHARED_DIR};PYTHONDONTWRITEBYTECODE=1")
endif()
