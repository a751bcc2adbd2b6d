// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Spawned by the spawn-model tests: opens a segment by name, finds a counter,
// meets the others at the start barrier, increments.
//   procsafe_test_child SEGMENT COUNTER atomic|mutex COUNT
//   procsafe_test_child SEGMENT COUNTER wait N     (waits until the atomic counter reaches N)
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {
template <class Counter>
int run(procsafe::segment& seg, const char* name, long count) {
    auto& c = seg.find<Counter>(name);
    auto& barrier = seg.find<procsafe_test::start_barrier>("barrier");
    if (!barrier.arrive_and_wait()) return 2;
    for (long k = 0; k < count; ++k) c.increment();
    return 0;
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s SEGMENT COUNTER atomic|mutex|wait COUNT\n", argv[0]);
        return 64;
    }
    try {
        auto seg = procsafe::segment::open(argv[1]);
        const long count = std::strtol(argv[4], nullptr, 10);
        if (std::strcmp(argv[3], "wait") == 0) {
            auto& c = seg.find<procsafe::atomic_counter<std::int64_t>>(argv[2]);
            auto& barrier = seg.find<procsafe_test::start_barrier>("barrier");
            if (!barrier.arrive_and_wait()) return 2;
            return c.wait_at_least_for(count, std::chrono::seconds(20)) ? 0 : 3;
        }
        if (std::strcmp(argv[3], "atomic") == 0) return run<procsafe::atomic_counter<std::int64_t>>(seg, argv[2], count);
        return run<procsafe::mutex_counter<std::int64_t>>(seg, argv[2], count);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe_test_child: %s\n", e.what());
        return 1;
    }
}
