// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// A test that cannot run here (not root, a server missing) says so and
// returns: ctest reports it as skipped (the tests carry
// SKIP_REGULAR_EXPRESSION "SKIPPED:"), never as passed. Catch2 2.13, which
// Debian 12 ships, has no SKIP of its own.

#include <cstdio>
#include <sstream>

#define PROCSAFE_SKIP(...)                                               \
    do {                                                                 \
        std::ostringstream procsafe_skip_why;                            \
        procsafe_skip_why << __VA_ARGS__;                                \
        std::printf("SKIPPED: %s\n", procsafe_skip_why.str().c_str());  \
        std::fflush(stdout);                                             \
        return;                                                          \
    } while (false)
