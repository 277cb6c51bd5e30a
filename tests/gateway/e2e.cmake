# gateway end-to-end tests: a real ferryd, started by Python test scripts
# inside a loopback-only network namespace (${FERRY_NETNS_RUN}), talked to
# by real clients (swaks, smtplib) and raw sockets.  Included from
# gateway/build.cmake when FERRY_TESTS is on.
if(TARGET ferryd)
  find_program(FERRY_PYTHON3 NAMES python3 HINTS /usr/bin)
  set(_e2e ${CMAKE_SOURCE_DIR}/tests/gateway/e2e)
  set(_e2e_env
      FERRYD=$<TARGET_FILE:ferryd>
      FERRY_SENDMAIL=$<TARGET_FILE:ferry-sendmail>
      FERRYCTL=$<TARGET_FILE:ferryctl>
      FERRY_MODEMSIM=$<TARGET_FILE:ferry-modemsim>
      FERRY_SHARED_DIR=${FERRY_SHARED_DIR}
      FERRY_SOURCE_DIR=${CMAKE_SOURCE_DIR}
      PYTHONDONTWRITEBYTECODE=1)
  # Exim is only unpacked (tools/install-deps.sh), not on PATH.
  find_program(FERRY_EXIM NAMES exim4
               PATHS /usr/local/lib/ferry/exim4/usr/sbin NO_DEFAULT_PATH)
  if(FERRY_EXIM)
    list(APPEND _e2e_env FERRY_EXIM=${FERRY_EXIM})
  endif()

  # name | script and arguments | timeout | labels
  function(ferry_gateway_e2e name timeout labels)
    add_test(NAME ${name}
             COMMAND ${FERRY_NETNS_RUN} ${FERRY_PYTHON3} ${ARGN})
    set_tests_properties(${name} PROPERTIES
                         TIMEOUT ${timeout}
                         LABELS "${labels}"
                         ENVIRONMENT "${_e2e_env}")
  endfunction()

  ferry_gateway_e2e(gateway_e2e_ferryd_cli 60 "e2e"
                    ${_e2e}/ferryd_cli_test.py)
  ferry_gateway_e2e(gateway_e2e_smtp_clients 180 "e2e"
                    ${_e2e}/smtp_clients_test.py)
  ferry_gateway_e2e(gateway_e2e_smtp_refusals 180 "e2e"
                    ${_e2e}/smtp_refusals_test.py
                    RefusalsTest SessionLimitTest GreetingPauseTest)
  ferry_gateway_e2e(gateway_e2e_smtp_timeouts 120 "e2e;slow"
                    ${_e2e}/smtp_refusals_test.py TimeoutTest)
  ferry_gateway_e2e(gateway_e2e_smtp_corpus 300 "e2e"
                    ${_e2e}/smtp_corpus_test.py)
  # Real MTAs (Postfix, Exim) relaying to ferryd; Exim's client uses BDAT.
  ferry_gateway_e2e(gateway_e2e_mta_interop 240 "e2e"
                    ${_e2e}/mta_interop_test.py)
  ferry_gateway_e2e(gateway_e2e_relay_tricks 60 "e2e"
                    ${_e2e}/relay_tricks_test.py)
  ferry_gateway_e2e(gateway_e2e_local_rules 60 "e2e"
                    ${_e2e}/local_rules_test.py)
  # POP3 from ferryd's [pop3] listener; ferry-sendmail picked up by ferryd.
  ferry_gateway_e2e(gateway_e2e_daily_use 90 "e2e"
                    ${_e2e}/daily_use_test.py)
  # Two ferryd processes calling each other over ferry-modemsim.
  ferry_gateway_e2e(gateway_e2e_calls 300 "e2e"
                    ${_e2e}/calls_test.py SchedulerCallTest StrangerTest
                    AnyFreeModemTest
                    DirectLineTest)
  # Several peers for one domain: failover to the backup and back.
  ferry_gateway_e2e(gateway_e2e_failover 240 "e2e"
                    ${_e2e}/failover_test.py)
  # The route exec: a's calls to b run through a command (socat).
  ferry_gateway_e2e(gateway_e2e_exec_route 120 "e2e"
                    ${_e2e}/exec_route_test.py)
  # The field laptop: ferryctl dial --wait in a real terminal (tmux).
  ferry_gateway_e2e(gateway_e2e_laptop 180 "e2e"
                    ${_e2e}/laptop_test.py)
  # The provider's MTA (a real Exim in -bs mode) answering a call.
  ferry_gateway_e2e(gateway_e2e_smarthost 180 "e2e"
                    ${_e2e}/smarthost_test.py)
  ferry_gateway_e2e(gateway_e2e_calls_faults 500 "e2e;slow"
                    ${_e2e}/calls_test.py BusyTest DropTest NeverAnswersTest
                    ModemResetTest)
endif()
