// procsafe/tests/compile_fail/cxx17.cpp: the umbrella header under C++17.
// SPDX-License-Identifier: MIT
// Must not compile, and the first error must say that C++20 is required
// (not a page of errors from a detail header).
#include <procsafe/procsafe.hpp>

int main() {}
