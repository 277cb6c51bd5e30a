# gateway: ferryd's library (SMTP server and client, config, rules, router,
# local delivery, ...) and the ferryd program.
#
# Sources are picked up by pattern so that engineers adding separate files
# do not edit this list: every gateway/*.cc except the program entry points
# (*_main.cc) goes into ferry_gateway.
file(GLOB FERRY_GATEWAY_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/gateway/*.cc)
list(FILTER FERRY_GATEWAY_SOURCES EXCLUDE REGEX "_main\\.cc$")
add_library(ferry_gateway STATIC ${FERRY_GATEWAY_SOURCES})
target_include_directories(ferry_gateway PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(ferry_gateway PUBLIC Boost::program_options
                      OpenSSL::SSL OpenSSL::Crypto Threads::Threads)
if(TARGET ferry_queue)
  target_link_libraries(ferry_gateway PUBLIC ferry_queue)
endif()
if(TARGET ferry_modem)
  target_link_libraries(ferry_gateway PUBLIC ferry_modem)
endif()

if(EXISTS ${CMAKE_SOURCE_DIR}/gateway/ferryd_main.cc)
  add_executable(ferryd ${CMAKE_SOURCE_DIR}/gateway/ferryd_main.cc)
  target_link_libraries(ferryd PRIVATE ferry_gateway)
  target_compile_definitions(ferryd PRIVATE
                             FERRY_VERSION="${PROJECT_VERSION}")
  install(TARGETS ferryd DESTINATION ${CMAKE_INSTALL_SBINDIR})
endif()

# Unit tests: every tests/gateway/unit/*_test.cc in one binary.
if(FERRY_TESTS)
  file(GLOB FERRY_GATEWAY_UNIT_TESTS CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/tests/gateway/unit/*_test.cc)
  if(FERRY_GATEWAY_UNIT_TESTS)
    add_executable(gateway_unit_tests ${FERRY_GATEWAY_UNIT_TESTS})
    target_link_libraries(gateway_unit_tests PRIVATE ferry_gateway
                          GTest::gtest_main)
    target_compile_definitions(gateway_unit_tests PRIVATE
      FERRY_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
      FERRY_SHARED_DIR="${FERRY_SHARED_DIR}")
    gtest_discover_tests(gateway_unit_tests DISCOVERY_MODE PRE_TEST
                         PROPERTIES TIMEOUT 120)
  endif()
  # End-to-end tests: registered in tests/gateway/e2e.cmake (owned by the
  # SMTP server engineer), included when present.
  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/gateway/e2e.cmake)
    include(${CMAKE_SOURCE_DIR}/tests/gateway/e2e.cmake)
  endif()
endif()
