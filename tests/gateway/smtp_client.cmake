# The plain ESMTP client (gateway/smtp_client.{h,cc}, issue 6/7).
#
# Its source goes into ferry_gateway by pattern (gateway/build.cmake) and
# its tests, tests/gateway/unit/smtp_client_test.cc (a real `exim -bs` over
# a socketpair; no daemon, no network), into gateway_unit_tests by
# pattern too, with that binary's TIMEOUT.
#
# The end-to-end test through ferryd (tests/gateway/e2e/mta_delivery_test.py:
# ferryd delivering to a private Postfix over loopback in the netns) needs
# the call manager to start run_smtp_client() for [peer NAME] protocol =
# smtp; it is registered here when it exists.
if(FERRY_TESTS AND TARGET ferryd
   AND EXISTS ${CMAKE_SOURCE_DIR}/tests/gateway/e2e/mta_delivery_test.py)
  find_program(FERRY_PYTHON3 NAMES python3 HINTS /usr/bin)
  add_test(NAME gateway_e2e_mta_delivery
           COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3}
                   ${CMAKE_SOURCE_DIR}/tests/gateway/e2e/mta_delivery_test.py)
  set_tests_properties(gateway_e2e_mta_delivery PROPERTIES
    TIMEOUT 180
    LABELS "e2e;slow"
    ENVIRONMENT "FERRYD=$<TARGET_FILE:ferryd>;FERRY_SHARED_DIR=${FERRY_SHARED_DIR};FERRY_SOURCE_DIR=${CMAKE_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1")
endif()
