# modem: serial port, Hayes AT layer, dialler and answerer, UUCP locks
# (issue 4).  Knows nothing of the spool, the gateway or SMTP.
add_library(ferry_modem STATIC
  ${CMAKE_SOURCE_DIR}/modem/at_parser.cc
  ${CMAKE_SOURCE_DIR}/modem/error.cc
  ${CMAKE_SOURCE_DIR}/modem/lock.cc
  ${CMAKE_SOURCE_DIR}/modem/modem.cc
  ${CMAKE_SOURCE_DIR}/modem/port.cc)
target_include_directories(ferry_modem PUBLIC ${CMAKE_SOURCE_DIR})
target_include_directories(ferry_modem SYSTEM PUBLIC ${Boost_INCLUDE_DIRS})
target_link_libraries(ferry_modem PUBLIC PkgConfig::SERIALPORT
                      Threads::Threads)
# GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame (its
# frames have a class-specific operator new/delete pair that the warning
# does not match up); a false positive, silenced for our coroutine code.
set(FERRY_MODEM_CXX_FLAGS "")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(FERRY_MODEM_CXX_FLAGS -Wno-mismatched-new-delete)
endif()
target_compile_options(ferry_modem PRIVATE ${FERRY_MODEM_CXX_FLAGS})

# libFuzzer target for the result parser: needs clang, so it is built by an
# explicit command outside the g++ toolchain, only on request
# (`cmake --build B --target at_parser_fuzz`), never run by ctest.
find_program(FERRY_CLANGXX NAMES clang++ clang++-14)
if(FERRY_CLANGXX)
  add_custom_command(
    OUTPUT ${CMAKE_BINARY_DIR}/fuzz/at_parser_fuzz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/fuzz
    COMMAND ${FERRY_CLANGXX} -std=c++20 -O1 -g
            -fsanitize=fuzzer,address,undefined
            -I${CMAKE_SOURCE_DIR}
            ${CMAKE_SOURCE_DIR}/tests/fuzz/at_parser_fuzz.cc
            ${CMAKE_SOURCE_DIR}/modem/at_parser.cc
            -o ${CMAKE_BINARY_DIR}/fuzz/at_parser_fuzz
    DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/at_parser_fuzz.cc
            ${CMAKE_SOURCE_DIR}/modem/at_parser.cc
            ${CMAKE_SOURCE_DIR}/modem/at_parser.h
    COMMENT "Building the AT result parser fuzzer with clang")
  add_custom_target(at_parser_fuzz
                    DEPENDS ${CMAKE_BINARY_DIR}/fuzz/at_parser_fuzz)
endif()

if(FERRY_TESTS)
  # Unit tests: parser transcripts, locks, sequences against a scripted
  # fake modem on a PTY.
  add_executable(modem_unit_tests
    ${CMAKE_SOURCE_DIR}/tests/modem/at_parser_test.cc
    ${CMAKE_SOURCE_DIR}/tests/modem/lock_test.cc
    ${CMAKE_SOURCE_DIR}/tests/modem/sequence_test.cc)
  target_link_libraries(modem_unit_tests PRIVATE ferry_modem util
                        GTest::gtest_main)
  target_compile_options(modem_unit_tests PRIVATE ${FERRY_MODEM_CXX_FLAGS})
  gtest_discover_tests(modem_unit_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 120 LABELS modem)

  # Test-only LD_PRELOAD shim that lets stock libserialport open an
  # emulator PTY and routes TIOCM* to the emulator's PORT.ctl socket.
  add_library(ferry_serialport_shim SHARED
              ${CMAKE_SOURCE_DIR}/tests/shim/serialport_shim.c)
  target_link_libraries(ferry_serialport_shim PRIVATE dl)
  # Sanitizers are not wanted inside an interposer loaded before them.
  target_compile_options(ferry_serialport_shim PRIVATE -fno-sanitize=all)
  target_link_options(ferry_serialport_shim PRIVATE -fno-sanitize=all)

  # End-to-end tests against ferry-modemsim (tools/), over PTYs.  The
  # termios path in one binary, the libserialport path (under the shim) in
  # another, since LD_PRELOAD applies to a whole process.
  foreach(_t IN ITEMS modem_sim_tests modem_shim_tests)
    if(_t STREQUAL "modem_sim_tests")
      add_executable(${_t} ${CMAKE_SOURCE_DIR}/tests/modem/modemsim_test.cc)
    else()
      add_executable(${_t} ${CMAKE_SOURCE_DIR}/tests/modem/shim_test.cc)
    endif()
    target_link_libraries(${_t} PRIVATE ferry_modem util GTest::gtest_main)
    target_compile_options(${_t} PRIVATE ${FERRY_MODEM_CXX_FLAGS})
    target_compile_definitions(${_t} PRIVATE
      FERRY_BUILD_DIR="${CMAKE_BINARY_DIR}")
  endforeach()
  # TLS over the modem line (the stream under asio::ssl::stream).
  target_link_libraries(modem_sim_tests PRIVATE OpenSSL::SSL OpenSSL::Crypto)
  add_dependencies(modem_shim_tests ferry_serialport_shim)
  # tools/ is included after us: depend on the emulator once the whole tree
  # is read, if it exists by then.
  function(_ferry_modem_sim_dependency)
    if(TARGET ferry-modemsim)
      add_dependencies(modem_sim_tests ferry-modemsim)
      add_dependencies(modem_shim_tests ferry-modemsim)
    endif()
  endfunction()
  cmake_language(DEFER CALL _ferry_modem_sim_dependency)

  gtest_discover_tests(modem_sim_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 180 LABELS modem)
  # In the sanitizer build the ASan runtime must come first in the preload
  # list; LD_PRELOAD takes a colon-separated list.
  set(_ferry_shim_preload "$<TARGET_FILE:ferry_serialport_shim>")
  if(FERRY_SANITIZE)
    execute_process(
      COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libasan.so
      OUTPUT_VARIABLE _ferry_libasan OUTPUT_STRIP_TRAILING_WHITESPACE)
    set(_ferry_shim_preload "${_ferry_libasan}:${_ferry_shim_preload}")
  endif()
  set(_ferry_shim_env "LD_PRELOAD=${_ferry_shim_preload}")
  gtest_discover_tests(modem_shim_tests DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT 180 LABELS modem
                       ENVIRONMENT "${_ferry_shim_env}")
endif()
