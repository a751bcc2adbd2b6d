// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Catch2 v3 where it is installed, v2 (Debian 12's catch2 2.13) otherwise.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#elif __has_include(<catch2/catch.hpp>)
#include <catch2/catch.hpp>
#else
#error "procsafe's tests need Catch2 (v2 or v3)"
#endif
