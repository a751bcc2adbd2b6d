// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 10. Wait for the work, not for the workers.
//
// A parent that needs "N jobs done" does not have to join its workers: it
// waits until a shared counter reaches N (wait_at_least), with a bound, and
// can go on while the workers keep running or exit in their own time. A
// latch does the same for "every worker is ready".
#include "support.hpp"

#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
    const example::counts counts = example::parse_counts(argc, argv);
    const int workers = counts.processes;  // (not a structured binding: clang 14 cannot capture one)
    const long jobs = counts.increments;

    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& ready = seg.construct<procsafe::latch>("ready", workers);
    auto& done = seg.construct<procsafe::atomic_counter<long>>("done");
    auto& release = seg.construct<procsafe::latch>("release", 1);

    std::fflush(nullptr);
    for (int w = 0; w < workers; ++w) {
        if (::fork() == 0) {
            ready.count_down();
            for (long j = w; j < jobs; j += workers) done.increment();  // "process job j"
            (void)release.wait_for(std::chrono::seconds(10));  // linger; released or not, we exit
            ::_exit(0);
        }
    }

    const bool all_ready = ready.wait_for(std::chrono::seconds(10));
    const bool all_done = done.wait_at_least_for(jobs, std::chrono::seconds(30));
    std::printf("%d workers ready: %s; %ld of %ld jobs done: %s (no worker joined yet)\n", workers,
                all_ready ? "yes" : "no", done.value(), jobs, all_done ? "yes" : "no");
    release.count_down();  // now let them go
    while (::wait(nullptr) > 0) {}
    return all_ready && all_done && done.value() == jobs ? 0 : 1;
}

// Build & run:
//   build/dev/examples/10_wait_for_workers [workers] [jobs]
// Expected output:
//   10 workers ready: yes; 100000 of 100000 jobs done: yes (no worker joined yet)
