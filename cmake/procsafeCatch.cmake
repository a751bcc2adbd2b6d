# The test framework for procsafe's test programs (tests/, tests/tools,
# redis/tests): sets _catch_main, what a test program links for Catch2 and
# its main. Catch2 v3 brings Catch2::Catch2WithMain; with v2 (Debian 12)
# tests/main.cpp is compiled once, as the object library
# procsafe_catch_main, for every test program of the build.
macro(procsafe_catch)
  find_package(Catch2 3 QUIET)
  if(Catch2_FOUND)
    set(_catch_main Catch2::Catch2WithMain)
  else()
    find_package(Catch2 2.13 REQUIRED)
    if(NOT TARGET procsafe_catch_main)
      add_library(procsafe_catch_main OBJECT ${PROJECT_SOURCE_DIR}/tests/main.cpp)
      target_link_libraries(procsafe_catch_main PUBLIC Catch2::Catch2)
      # The tests' standard: Catch's string_view support (C++17) in main too,
      # or clang (C++14 by default) leaves its StringMaker undefined.
      target_compile_features(procsafe_catch_main PUBLIC cxx_std_20)
      procsafe_warnings(procsafe_catch_main)
    endif()
    set(_catch_main procsafe_catch_main)
  endif()
  include(Catch)
endmacro()
