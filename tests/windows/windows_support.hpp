// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The Windows test leg's helpers: CreateProcess children (no fork on
// Windows), a start line in the segment, bounded waits.

#include <procsafe/procsafe.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <windows.h>  // (procsafe's headers already set WIN32_LEAN_AND_MEAN and NOMINMAX)

namespace wintest {

/// Children arrive, then spin until the parent lets them all go at once.
struct start_line {
    std::atomic<int> arrived{0};
    std::atomic<int> go{0};
    bool arrive_and_wait() {
        arrived.fetch_add(1);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (go.load(std::memory_order_acquire) == 0) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::yield();
        }
        return true;
    }
    bool release_when(int n) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (arrived.load() < n) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::yield();
        }
        go.store(1, std::memory_order_release);
        return true;
    }
};

/// Children report here.
struct board {
    std::atomic<int> holding{0};
    std::atomic<int> about_to_wait{0};
};

}  // namespace wintest
