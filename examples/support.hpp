// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// What every example needs and nobody needs to read twice: the counts from
// the command line, fork N workers that start together (a barrier in shared
// memory), and the two halves of a racy increment.

#include <procsafe/procsafe.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

namespace example {

struct counts {
    int processes = 10;
    long increments = 100'000;
};

/// `prog [processes] [increments]`, defaults 10 x 100,000 (the tutorial's workload).
inline counts parse_counts(int argc, char** argv) {
    counts c;
    if (argc > 1) c.processes = std::atoi(argv[1]);
    if (argc > 2) c.increments = std::atol(argv[2]);
    if (c.processes < 1 || c.processes > 1000 || c.increments < 1) {
        std::fprintf(stderr, "usage: %s [processes 1..1000] [increments >= 1]\n", argv[0]);
        std::exit(2);
    }
    return c;
}

/// Forks n workers that run work(i) together, then waits for all of them.
/// Returns the seconds from the start signal to the last exit. The workers
/// wait at a start line (two procsafe latches) until all have started, so
/// their loops really overlap (on 2 cores a 100,000-step loop can finish
/// before the next fork returns).
inline double run_processes(int n, const std::function<void(int)>& work) {
    auto start_segment = procsafe::segment::anonymous(64 * 1024);
    auto& ready = start_segment.construct<procsafe::latch>("ready", n);
    auto& go = start_segment.construct<procsafe::latch>("go", 1);
    std::fflush(nullptr);
    for (int i = 0; i < n; ++i) {
        if (::fork() == 0) {
            ready.count_down();
            while (!go.try_wait()) std::this_thread::yield();  // spin: all start within microseconds
            work(i);
            ::_exit(0);  // never run the parent's destructors or atexit handlers
        }
    }
    ready.wait();
    const auto start = std::chrono::steady_clock::now();
    go.count_down();
    while (::wait(nullptr) > 0) {}
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// The racy increment, in its two halves: a read, then a write of what was
/// read plus one. Each half is atomic (relaxed), so this is well-defined C++,
/// unlike `++*p` on shared memory; the pair is not, so updates are lost when
/// another process writes in between.
inline std::int64_t racy_read(std::int64_t& shared) {
    return std::atomic_ref<std::int64_t>(shared).load(std::memory_order_relaxed);
}
inline void racy_write(std::int64_t& shared, std::int64_t value) {
    std::atomic_ref<std::int64_t>(shared).store(value, std::memory_order_relaxed);
}
/// `yield` gives the CPU away between the halves, as the tutorial's sleep(0):
/// another process then runs inside the window, on any machine.
inline void racy_add(std::int64_t& shared, std::int64_t delta, bool yield) {
    const std::int64_t seen = racy_read(shared);
    if (yield) ::sched_yield();
    racy_write(shared, seen + delta);
}

}  // namespace example
