# Cross-compiling procsafe for Windows with Debian's mingw-w64 (posix threads),
# and running what it builds under wine64:
#   cmake -S . -B build/windows -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake
#   cmake --build build/windows && ctest --test-dir build/windows
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# One self-contained .exe each: wine needs no mingw DLLs.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
# ctest runs the .exe files through wine.
set(CMAKE_CROSSCOMPILING_EMULATOR /usr/lib/wine/wine64)

# Boost and Catch2 are header-only: stage their host include folders alone,
# so the host's C library headers never reach the Windows compiler.
set(PROCSAFE_HOST_HEADERS "${CMAKE_BINARY_DIR}/host-headers" CACHE PATH "Boost and Catch2 headers for the Windows build")
file(MAKE_DIRECTORY "${PROCSAFE_HOST_HEADERS}")
foreach(_lib boost catch2)
  if(NOT EXISTS "${PROCSAFE_HOST_HEADERS}/${_lib}" AND EXISTS "/usr/include/${_lib}")
    file(CREATE_LINK "/usr/include/${_lib}" "${PROCSAFE_HOST_HEADERS}/${_lib}" SYMBOLIC)
  endif()
endforeach()
set(Boost_INCLUDE_DIR "${PROCSAFE_HOST_HEADERS}" CACHE PATH "")
