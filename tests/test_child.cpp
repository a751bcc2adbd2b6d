// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Spawned by the spawn-model tests: opens a segment by name, finds a counter,
// meets the others at the start barrier, increments.
//   procsafe_test_child SEGMENT COUNTER atomic|mutex COUNT
//   procsafe_test_child SEGMENT COUNTER wait N     (waits until the atomic counter reaches N)
//   procsafe_test_child SEGMENT - atfork 0
//       a fresh process (nothing of procsafe's registered yet) registers a
//       pthread_atfork child handler that adds to the sharded counter "c" and
//       the live gauge "g", then adds itself and forks: the child, after its
//       handler ran, counts "holding" up and waits for the latch "release".
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <pthread.h>

namespace {
procsafe::sharded_counter<std::int64_t>* fork_counter = nullptr;
procsafe::live_gauge<std::int64_t>* fork_gauge = nullptr;

int run_atfork(procsafe::segment& seg) {
    fork_counter = &seg.find<procsafe::sharded_counter<std::int64_t>>("c");
    fork_gauge = &seg.find<procsafe::live_gauge<std::int64_t>>("g");
    ::pthread_atfork(nullptr, nullptr, [] {  // registered before procsafe's first add
        fork_counter->increment();
        fork_gauge->add(5);
    });
    fork_counter->increment();
    fork_gauge->add(3);
    const pid_t child = ::fork();
    if (child == 0) {
        seg.find<procsafe::atomic_counter<int>>("holding").increment();
        ::_exit(seg.find<procsafe::latch>("release").wait_for(std::chrono::seconds(30)) ? 0 : 3);
    }
    return procsafe_test::exited_ok(procsafe_test::wait_bounded(child, std::chrono::seconds(60))) ? 0 : 4;
}

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
        if (std::strcmp(argv[3], "atfork") == 0) return run_atfork(seg);
        if (std::strcmp(argv[3], "atomic") == 0) return run<procsafe::atomic_counter<std::int64_t>>(seg, argv[2], count);
        return run<procsafe::mutex_counter<std::int64_t>>(seg, argv[2], count);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe_test_child: %s\n", e.what());
        return 1;
    }
}
