# The call scheduler (issue 7): the ferry-simulate program and its script
# test.  The scheduler, DSN and simulation sources are gateway/*.cc and go
# into ferry_gateway by pattern; their unit tests are
# tests/gateway/unit/{schedule,dsn,simulate}_test.cc (gateway_unit_tests).
if(TARGET ferry_gateway)
  add_executable(ferry-simulate
                 ${CMAKE_SOURCE_DIR}/gateway/ferry_simulate_main.cc)
  target_link_libraries(ferry-simulate PRIVATE ferry_gateway)
  install(TARGETS ferry-simulate DESTINATION ${CMAKE_INSTALL_BINDIR})

  if(FERRY_TESTS)
    # A week of an office's traffic through the real program: it must run,
    # deliver mail, bounce nothing (the peer is offline by schedule at the
    # weekend), and report waits.  The inputs are written into the build
    # tree so that the test needs no fixed path.
    set(_sim_dir ${CMAKE_CURRENT_BINARY_DIR}/sched-sim)
    file(WRITE ${_sim_dir}/week.conf
"[simulation]
start = 2026-12-07T00:00:00Z
days = 9
seed = 7
[modem]
busy = 0.2
no_answer = 0.05
script = busy busy ok
[schedule]
lifetime = 2d
lifetime_missed = 3
warn_after = 4h
[peer isp]
windows = Mon-Fri 18:00-07:30
zone = UTC
routes = 5551234 5559876
min_messages = 5
max_age = 4h
poll = 08:00 17:30
")
    file(WRITE ${_sim_dir}/week.trace
"# time peer bytes priority
9h isp 12K
9h30m isp 40K
5d10h isp 8K      # Saturday 10:00: waits over the weekend
5d11h isp 2K 1
")
    add_test(NAME ferry_simulate_week
             COMMAND ferry-simulate --trace ${_sim_dir}/week.trace
                     ${_sim_dir}/week.conf)
    set_tests_properties(ferry_simulate_week PROPERTIES TIMEOUT 60
      PASS_REGULAR_EXPRESSION "messages: 4, 4 delivered, 0 bounced")
  endif()
endif()
