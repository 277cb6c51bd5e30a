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
