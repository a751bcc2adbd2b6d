// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 5. An adder and a subtractor (the tutorial's race between an adding and a subtracting process).
//
// One process adds 1, the other subtracts 1, the same number of times: the
// balance must end at 0. With a racy read-then-write, each lost update
// leaves the balance off by one, in either direction; with an atomic counter
// (or a mutex counter) it is 0 every run.
#include "support.hpp"

#include <cstdio>

int main(int argc, char** argv) {
    long increments = 100'000;
    if (argc > 1) increments = std::atol(argv[1]);
    if (increments < 1) {
        std::fprintf(stderr, "usage: %s [increments >= 1]\n", argv[0]);
        return 2;
    }

    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& racy = seg.construct<std::int64_t>("racy", 0);
    auto& safe = seg.construct<procsafe::atomic_counter<std::int64_t>>("safe");

    // Process 0 adds, process 1 subtracts; both start together.
    example::run_processes(2, [&](int who) {
        const std::int64_t delta = who == 0 ? +1 : -1;
        for (long k = 0; k < increments; ++k) {
            example::racy_add(racy, delta, /*yield=*/false);
            safe += delta;
        }
    });

    std::printf("racy balance: %lld (0 only if no update was lost)\n",
                static_cast<long long>(example::racy_read(racy)));
    std::printf("safe balance: %lld\n", static_cast<long long>(safe.value()));
    return safe.value() == 0 ? 0 : 1;
}

// Build & run:
//   build/dev/examples/05_adder_subtractor [increments]
// Expected output (the racy balance differs from run to run):
//   racy balance: -14562 (0 only if no update was lost)
//   safe balance: 0
