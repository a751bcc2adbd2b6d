// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The Windows test leg's helpers: CreateProcess children (no fork on
// Windows), a start line in the segment, bounded waits.

#include "../support/start_barrier.hpp"

#include <procsafe/procsafe.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <windows.h>  // (procsafe's headers already set WIN32_LEAN_AND_MEAN and NOMINMAX)

namespace wintest {

/// Children arrive, then spin until the parent lets them all go at once.
using start_line = procsafe_test::start_barrier;

/// Children report here.
struct board {
    std::atomic<int> holding{0};
    std::atomic<int> about_to_wait{0};
};

}  // namespace wintest
