// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 9. The same story with threads (the tutorial's thread-unsafe and thread-safe counters).
//
// Threads share memory already, so there is no copy problem, but the racy
// read-then-write loses updates just the same. procsafe's counters are
// thread-safe too: the same types work for threads, processes, or both.
#include "support.hpp"

#include <cstdio>
#include <thread>
#include <vector>

template <class Work>
static void run_threads(int n, Work work) {
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) threads.emplace_back(work);
    for (auto& t : threads) t.join();
}

int main(int argc, char** argv) {
    const example::counts counts = example::parse_counts(argc, argv);
    const int threads = counts.processes;  // (not a structured binding: clang 14 cannot capture one)
    const long increments = counts.increments;

    std::int64_t racy = 0;
    procsafe::atomic_counter<std::int64_t> atomic;  // no segment needed for threads alone
    procsafe::mutex_counter<std::int64_t> locked;

    run_threads(threads, [&] {
        for (long k = 0; k < increments; ++k) example::racy_add(racy, 1, /*yield=*/false);
    });
    run_threads(threads, [&] {
        for (long k = 0; k < increments; ++k) ++atomic;
    });
    run_threads(threads, [&] {
        for (long k = 0; k < increments; ++k) ++locked;
    });

    const long expected = threads * increments;
    std::printf("threads racy:           got %lld of %ld\n", static_cast<long long>(racy), expected);
    std::printf("threads atomic_counter: got %lld of %ld\n", static_cast<long long>(atomic.value()), expected);
    std::printf("threads mutex_counter:  got %lld of %ld\n", static_cast<long long>(locked.value()), expected);
    return atomic.value() == expected && locked.value() == expected ? 0 : 1;
}

// Build & run:
//   build/dev/examples/09_threads [threads] [increments]
// Expected output (the racy count differs from run to run):
//   threads racy:           got 265310 of 1000000
//   threads atomic_counter: got 1000000 of 1000000
//   threads mutex_counter:  got 1000000 of 1000000
