// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The start line of every multi-process test (POSIX and Windows legs): the
// children arrive, then spin until the parent releases them all at once, so
// their loops overlap. Built on procsafe's own counter and latch; placed in
// shared memory; every wait is bounded.

#include <procsafe/counter.hpp>
#include <procsafe/latch.hpp>

#include <chrono>
#include <thread>

namespace procsafe_test {

struct start_barrier {
    procsafe::atomic_counter<int> arrived;
    procsafe::latch go{1};

    /// In a child: returns false if the parent never released it. Spins (a
    /// load per round) rather than sleeps, so all start within microseconds.
    bool arrive_and_wait(std::chrono::milliseconds limit = std::chrono::seconds(60)) {
        arrived.increment();
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!go.try_wait()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::yield();
        }
        return true;
    }
    /// In the parent: releases the children once n have arrived.
    bool release_when(int n, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
        if (!arrived.wait_at_least_for(n, limit)) return false;
        go.count_down();
        return true;
    }
};

}  // namespace procsafe_test
