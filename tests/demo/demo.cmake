# The two-office demo (issue 9): tools/demo/demo.py driven by
# tests/demo/demo_test.py.  Included at the end of the root CMakeLists.txt,
# so every program target already exists.
#
#   demo.parts         the driver's pieces, no daemon (re-addressing, the
#                      Maildir check, the corpus selection, the samples)
#   demo.configs       both offices' keys, users and configs pass
#                      `ferryd --check-config`
#   demo.flow          the whole flow, line sped up, then a second run in
#                      the same folder
#   demo.carrier_drop  a carrier drop in the first call; the scheduler's
#                      next call finishes the exchange (slow)
if(FERRY_TESTS AND TARGET ferryd AND TARGET ferryctl AND TARGET ferry-modemsim)
  find_program(FERRY_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  set(_demo_test ${CMAKE_SOURCE_DIR}/tests/demo/demo_test.py)
  set(_demo_env
      FERRYD=$<TARGET_FILE:ferryd>
      FERRYCTL=$<TARGET_FILE:ferryctl>
      FERRY_MODEMSIM=$<TARGET_FILE:ferry-modemsim>
      FERRY_SHARED_DIR=${FERRY_SHARED_DIR}
      PYTHONDONTWRITEBYTECODE=1)

  add_test(NAME demo.parts
           COMMAND ${FERRY_PYTHON3} ${_demo_test} PartsTest)
  add_test(NAME demo.configs
           COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3} ${_demo_test}
                   ConfigTest)
  add_test(NAME demo.flow
           COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3} ${_demo_test}
                   FlowTest)
  add_test(NAME demo.carrier_drop
           COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3} ${_demo_test}
                   DropTest)
  set_tests_properties(demo.parts PROPERTIES TIMEOUT 60
                       ENVIRONMENT "${_demo_env}")
  set_tests_properties(demo.configs PROPERTIES TIMEOUT 120
                       LABELS "e2e" ENVIRONMENT "${_demo_env}")
  set_tests_properties(demo.flow PROPERTIES TIMEOUT 420
                       LABELS "e2e" ENVIRONMENT "${_demo_env}")
  set_tests_properties(demo.carrier_drop PROPERTIES TIMEOUT 480
                       LABELS "e2e;slow" ENVIRONMENT "${_demo_env}")
endif()
