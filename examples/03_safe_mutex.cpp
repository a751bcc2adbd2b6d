// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 3. Safe, with a lock (the tutorial's Value guarded by get_lock(): "the right way").
//
// mutex_counter holds the value and a process-shared mutex together in shared
// memory; every update is made under the lock, so none is lost: exactly
// processes x increments, every run. with_lock is the analogue of Python's
// `with value.get_lock():` for an update of several steps.
#include "support.hpp"

#include <cstdio>

int main(int argc, char** argv) {
    const example::counts counts = example::parse_counts(argc, argv);
    const int processes = counts.processes;  // (not a structured binding: clang 14 cannot capture one)
    const long increments = counts.increments;

    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& counter = seg.construct<procsafe::mutex_counter<std::int64_t>>("counter");
    const double seconds = example::run_processes(processes, [&](int) {
        for (long k = 0; k < increments; ++k) counter.increment();
    });
    const long expected = processes * increments;
    std::printf("mutex_counter: got %lld of %ld in %.3f s\n", static_cast<long long>(counter.value()),
                expected, seconds);

    // A compound update: read, decide, write, all under one lock. Every
    // process adds its id only if the running total is even, then one more.
    struct tally {
        std::int64_t total;
        std::int64_t updates;
    };
    auto& t = seg.construct<procsafe::mutex_counter<tally>>("tally");
    example::run_processes(processes, [&](int) {
        for (long k = 0; k < increments; ++k) {
            t.with_lock([](tally& v) {
                v.total += (v.total % 2 == 0) ? 2 : 1;  // never two processes in here at once
                v.updates += 1;
            });
        }
    });
    const tally end = t.value();
    std::printf("with_lock: %lld compound updates of %ld\n", static_cast<long long>(end.updates), expected);
    return counter.value() == expected && end.updates == expected ? 0 : 1;
}

// Build & run:
//   build/dev/examples/03_safe_mutex [processes] [increments]
// Expected output (time varies):
//   mutex_counter: got 1000000 of 1000000 in 0.081 s
//   with_lock: 1000000 compound updates of 1000000
