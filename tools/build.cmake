# tools: the command-line programs of ferry and their tests (included from
# the root CMakeLists.txt).  One block per tool; add new tools below.

# ---------------------------------------------------------------------------
# ferry-modemsim: Hayes modem emulator on PTYs (issue 5).  It is an
# independent implementation of HAYES.md and must never link ferry_modem.
add_executable(ferry-modemsim
  ${CMAKE_SOURCE_DIR}/tools/modemsim/main.cc
  ${CMAKE_SOURCE_DIR}/tools/modemsim/modem.cc
  ${CMAKE_SOURCE_DIR}/tools/modemsim/sim.cc)
target_include_directories(ferry-modemsim PRIVATE ${CMAKE_SOURCE_DIR})
target_link_libraries(ferry-modemsim PRIVATE Boost::program_options)
install(TARGETS ferry-modemsim DESTINATION ${CMAKE_INSTALL_BINDIR})

if(FERRY_TESTS)
  # The AT layer with strings and a recording host.
  add_executable(modemsim_unit_tests
    ${CMAKE_SOURCE_DIR}/tests/modemsim/modem_test.cc
    ${CMAKE_SOURCE_DIR}/tools/modemsim/modem.cc)
  target_include_directories(modemsim_unit_tests PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(modemsim_unit_tests PRIVATE GTest::gtest_main)
  gtest_discover_tests(modemsim_unit_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 60)

  find_program(FERRY_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  # Each scenario script starts its own emulator in a fresh temporary
  # directory; the fidelity tests drive it with programs we did not write
  # (pyserial, picocom, pppd's chat).  They run in a loopback-only network
  # namespace because some start TCP services for the routes.
  set(FERRY_MODEMSIM_TESTS
    command_layer calls faults chat transcripts lines manpage)
  foreach(t IN LISTS FERRY_MODEMSIM_TESTS)
    add_test(NAME modemsim.${t}
      COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3}
              ${CMAKE_SOURCE_DIR}/tests/modemsim/test_${t}.py
              $<TARGET_FILE:ferry-modemsim> ${CMAKE_SOURCE_DIR})
    set_tests_properties(modemsim.${t} PROPERTIES TIMEOUT 180
                         SKIP_RETURN_CODE 77)
  endforeach()
  set_tests_properties(modemsim.calls PROPERTIES LABELS slow)
endif()

if(FERRY_BENCHMARKS)
  # Throughput against line rate; run by hand, never registered as a test.
  configure_file(${CMAKE_SOURCE_DIR}/tests/bench/modemsim_bench.py
                 ${CMAKE_BINARY_DIR}/modemsim_bench.py COPYONLY)
endif()

# ---------------------------------------------------------------------------
# ferry-sendmail: the sendmail(8) command line; stores into the spool with
# route "pickup", which ferryd's gateway/pickup.cc delivers (issue 8).
add_executable(ferry-sendmail ${CMAKE_SOURCE_DIR}/tools/sendmail_main.cc)
target_link_libraries(ferry-sendmail PRIVATE ferry_gateway)
install(TARGETS ferry-sendmail DESTINATION ${CMAKE_INSTALL_SBINDIR})

if(FERRY_TESTS)
  find_program(FERRY_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  # Uses the program the way scripts use /usr/sbin/sendmail (by path; it
  # is never installed), with a spool and Maildirs in a temporary
  # directory.  No daemon is started, so no network namespace is needed;
  # the full-spool case makes its own mount namespace with a tiny tmpfs.
  # The helper dumps a spool and runs ferryd's pickup on it.
  add_executable(sendmail_spool_helper
    ${CMAKE_SOURCE_DIR}/tests/tools/sendmail_spool_helper.cc)
  target_link_libraries(sendmail_spool_helper PRIVATE ferry_gateway)
  add_test(NAME sendmail.cli
    COMMAND ${FERRY_PYTHON3} ${CMAKE_SOURCE_DIR}/tests/tools/sendmail_test.py
            $<TARGET_FILE:ferry-sendmail>
            $<TARGET_FILE:sendmail_spool_helper>)
  set_tests_properties(sendmail.cli PROPERTIES TIMEOUT 240
                       SKIP_RETURN_CODE 77)
  # The manual page renders without warnings and names every option.
  add_test(NAME sendmail.manpage
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/tools/sendmail_manpage.sh
            ${CMAKE_SOURCE_DIR}/man/ferry-sendmail.8
            ${CMAKE_SOURCE_DIR}/tools/sendmail_main.cc)
  set_tests_properties(sendmail.manpage PROPERTIES TIMEOUT 60
                       SKIP_RETURN_CODE 77)
endif()

# ---------------------------------------------------------------------------
# ferryctl: ferryd's control-socket client (issue 8).  The server side is
# gateway/control.{h,cc}; its unit tests are tests/gateway/unit/control_*.
add_executable(ferryctl ${CMAKE_SOURCE_DIR}/tools/ferryctl_main.cc)
target_link_libraries(ferryctl PRIVATE ferry_gateway)
target_compile_definitions(ferryctl PRIVATE FERRY_VERSION="${PROJECT_VERSION}")
install(TARGETS ferryctl DESTINATION ${CMAKE_INSTALL_BINDIR})

if(FERRY_TESTS AND TARGET ferryd)
  find_program(FERRY_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  # ferryctl against a live ferryd (in a loopback-only namespace): every
  # command, human and --json output, socket permissions (a non-root user
  # through setpriv), ferryd not running; and the manual page.  The
  # emulator gives one test a call in progress.
  add_test(NAME ferryctl.cli
    COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3}
            ${CMAKE_SOURCE_DIR}/tests/tools/ferryctl_test.py
            $<TARGET_FILE:ferryctl> $<TARGET_FILE:ferryd>
            ${CMAKE_SOURCE_DIR} $<TARGET_FILE:ferry-modemsim>)
  set_tests_properties(ferryctl.cli PROPERTIES TIMEOUT 240
                       SKIP_RETURN_CODE 77)
endif()

if(FERRY_TESTS)
  find_program(FERRY_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  # ferryctl keygen (issue 6): link keys, certificates and PSK files made
  # by the real binary in a temporary directory, checked with the openssl
  # command.  Local files only: no ferryd, no network namespace needed.
  add_test(NAME ferryctl.keygen
    COMMAND ${FERRY_PYTHON3}
            ${CMAKE_SOURCE_DIR}/tests/tools/ferryctl_keygen_test.py
            $<TARGET_FILE:ferryctl> ${CMAKE_SOURCE_DIR})
  set_tests_properties(ferryctl.keygen PROPERTIES TIMEOUT 120
                       SKIP_RETURN_CODE 77)
endif()
