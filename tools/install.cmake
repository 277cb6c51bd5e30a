# Installing for real (issue 9): everything `cmake --install` puts on a
# machine besides the programs, and the tests of the installed result.
# Included last from the root CMakeLists.txt.
#
# The programs' own rules stay beside their targets: ferryd
# (gateway/build.cmake) and ferry-sendmail go to sbin, ferryctl and
# ferry-modemsim to bin (tools/build.cmake).  This file adds:
#   man pages         share/man/man1, man5, man8
#   samples           share/doc/ferry/ (ferry.conf, etc/*.sample,
#                     README.md), and the same samples in
#                     SYSCONFDIR/ferry/ as ferry.conf.sample and *.sample,
#                     names ferryd never reads, so that an install never
#                     overwrites or activates a live configuration
#   systemd           lib/systemd/system/ferryd.service and
#                     ferryd-control.socket, lib/sysusers.d/ferry.conf,
#                     lib/tmpfiles.d/ferry.conf
#
# Paths that depend on the prefix are decided when installing, not when
# configuring, so `cmake --install build --prefix P` is honoured:
#   SYSCONFDIR is /etc for the system prefixes /usr and /usr/local (the
#   programs' compiled-in default is /etc/ferry/ferry.conf), else P/etc;
#   the unit's ExecStart names P/sbin/ferryd and SYSCONFDIR/ferry/ferry.conf.
# DESTDIR is honoured as usual (packaging, tests).

option(FERRY_INSTALL_SYSTEMD
       "Install the systemd units, sysusers.d and tmpfiles.d files" ON)

# Man pages, by section.
file(GLOB FERRY_MAN_PAGES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/man/*.[158])
foreach(page IN LISTS FERRY_MAN_PAGES)
  string(REGEX MATCH "[158]$" section "${page}")
  install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()

# Samples for reading: ferry.conf and every etc/*.sample (users, aliases,
# peers).
file(GLOB FERRY_SAMPLES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/etc/*.sample)
install(FILES ${CMAKE_SOURCE_DIR}/etc/ferry.conf ${FERRY_SAMPLES}
              ${CMAKE_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# Prefix-dependent files, written at install time (the rewritten units
# are staged in BUILD/install-stage first).  The first block hands the
# configure-time values to the install script; the second reads them.
install(CODE "set(FERRY_SAMPLES \"${FERRY_SAMPLES}\")
set(FERRY_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")
set(FERRY_STAGE_DIR \"${CMAKE_BINARY_DIR}/install-stage\")
set(FERRY_SBINDIR \"${CMAKE_INSTALL_SBINDIR}\")
set(FERRY_INSTALL_SYSTEMD \"${FERRY_INSTALL_SYSTEMD}\")")
install(CODE [[
  # SYSCONFDIR: /etc for system prefixes, else inside the prefix.
  if(CMAKE_INSTALL_PREFIX MATCHES "^/usr(/local)?/?$")
    set(ferry_sysconfdir "/etc")
  else()
    set(ferry_sysconfdir "${CMAKE_INSTALL_PREFIX}/etc")
  endif()

  # Samples next to the live configuration, under names ferryd never reads.
  file(INSTALL DESTINATION "${ferry_sysconfdir}/ferry" TYPE FILE
       FILES ${FERRY_SAMPLES})
  file(INSTALL DESTINATION "${ferry_sysconfdir}/ferry" TYPE FILE
       RENAME ferry.conf.sample FILES "${FERRY_SOURCE_DIR}/etc/ferry.conf")

  if(FERRY_INSTALL_SYSTEMD)
    # The units as shipped name /usr/sbin/ferryd and /etc/ferry; point
    # them at this prefix.
    foreach(unit ferryd.service ferryd-control.socket)
      file(READ "${FERRY_SOURCE_DIR}/etc/systemd/${unit}" text)
      string(REPLACE "/usr/sbin/ferryd"
             "${CMAKE_INSTALL_PREFIX}/${FERRY_SBINDIR}/ferryd" text "${text}")
      string(REPLACE "/etc/ferry/ferry.conf"
             "${ferry_sysconfdir}/ferry/ferry.conf" text "${text}")
      file(WRITE "${FERRY_STAGE_DIR}/${unit}" "${text}")
      file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
           TYPE FILE FILES "${FERRY_STAGE_DIR}/${unit}")
    endforeach()
    file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/sysusers.d"
         TYPE FILE FILES "${FERRY_SOURCE_DIR}/etc/sysusers.d/ferry.conf")
    file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/tmpfiles.d"
         TYPE FILE FILES "${FERRY_SOURCE_DIR}/etc/tmpfiles.d/ferry.conf")
  endif()
]])

# ---------------------------------------------------------------------------
# Tests: the privilege drop, socket activation, and an install into a
# temporary DESTDIR from this build tree.
if(FERRY_TESTS)
  add_executable(sd_listen_probe
    ${CMAKE_SOURCE_DIR}/tests/install/sd_listen_probe.cc)
  target_link_libraries(sd_listen_probe PRIVATE ferry_gateway)

  add_executable(install_unit_tests
    ${CMAKE_SOURCE_DIR}/tests/install/privdrop_test.cc
    ${CMAKE_SOURCE_DIR}/tests/install/sd_listen_test.cc)
  target_link_libraries(install_unit_tests PRIVATE ferry_gateway
                        GTest::gtest_main)
  target_compile_definitions(install_unit_tests PRIVATE
    FERRY_SD_LISTEN_PROBE="$<TARGET_FILE:sd_listen_probe>")
  add_dependencies(install_unit_tests sd_listen_probe)
  gtest_discover_tests(install_unit_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 60)

  # Installs this build tree twice into a temporary directory (DESTDIR
  # with prefix /usr, and a plain prefix) and checks what landed where,
  # that the man pages render, the units verify, and that sysusers.d and
  # tmpfiles.d make the layout in a scratch root.  Needs every installed
  # program built (the default `all` target).
  add_test(NAME install.layout
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/install/install_test.sh
            ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
  set_tests_properties(install.layout PROPERTIES TIMEOUT 180
                       SKIP_RETURN_CODE 77)
endif()
