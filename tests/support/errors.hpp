// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Catching procsafe::error in tests (POSIX and Windows legs alike).

#include "../catch.hpp"

#include <procsafe/error.hpp>

#include <stdexcept>

namespace procsafe_test {

/// Runs f; requires that it throws a procsafe::error, and returns it.
template <class F>
procsafe::error catch_error(F&& f) {
    try {
        f();
    } catch (const procsafe::error& e) {
        return e;
    }
    FAIL("no procsafe::error thrown");
    throw std::logic_error("unreachable");
}

}  // namespace procsafe_test
