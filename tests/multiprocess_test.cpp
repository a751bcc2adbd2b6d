// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Exact totals across processes: forked (anonymous and named segments) and
// spawned by name. Children meet at a start barrier so their loops overlap.
#include "catch.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdint>

using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::start_barrier;
using procsafe_test::unique_name;

namespace {

template <class Counter>
void ten_by_hundred_thousand(procsafe::segment& seg) {
    constexpr int processes = 10, per_process = 100'000;
    auto& c = seg.construct<Counter>("counter");
    auto& barrier = seg.construct<start_barrier>("barrier");
    const auto pids = fork_children(processes, [&](int) {
        if (!barrier.arrive_and_wait()) return 2;
        for (int k = 0; k < per_process; ++k) c.increment();
        return 0;
    });
    REQUIRE(pids.size() == processes);
    REQUIRE(barrier.release_when(processes));
    REQUIRE(join_children(pids) == processes);
    REQUIRE(c.value() == processes * per_process);
}

}  // namespace

TEMPLATE_TEST_CASE("fork: 10 processes x 100,000 increments = 1,000,000", "[multiprocess]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    SECTION("anonymous segment") {
        auto seg = procsafe::segment::anonymous(64 * 1024);
        ten_by_hundred_thousand<TestType>(seg);
    }
    SECTION("named segment") {
        auto seg = procsafe::segment::create(unique_name("fork10"), 64 * 1024);
        ten_by_hundred_thousand<TestType>(seg);
    }
}

TEMPLATE_TEST_CASE("fork: one adder and one subtractor x 100,000 = 0", "[multiprocess]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("balance");
    auto& barrier = seg.construct<start_barrier>("barrier");
    const auto pids = fork_children(2, [&](int i) {
        if (!barrier.arrive_and_wait()) return 2;
        for (int k = 0; k < 100'000; ++k) {
            if (i == 0) c.increment();
            else c.decrement();
        }
        return 0;
    });
    REQUIRE(barrier.release_when(2));
    REQUIRE(join_children(pids) == 2);
    REQUIRE(c.value() == 0);
}

TEST_CASE("fork: children find counters by name in a named segment", "[multiprocess]") {
    const auto name = unique_name("findfork");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    seg.construct<procsafe::mutex_counter<std::int64_t>>("m");
    auto& barrier = seg.construct<start_barrier>("barrier");
    const auto pids = fork_children(4, [&](int) {
        auto mine = procsafe::segment::open(name);  // a fresh mapping, as an unrelated process would
        auto& m = mine.find<procsafe::mutex_counter<std::int64_t>>("m");
        auto& a = mine.find_or_construct<procsafe::atomic_counter<std::int64_t>>("a");
        if (!barrier.arrive_and_wait()) return 2;
        for (int k = 0; k < 10'000; ++k) {
            m.increment();
            a.increment();
        }
        return 0;
    });
    REQUIRE(barrier.release_when(4));
    REQUIRE(join_children(pids) == 4);
    REQUIRE(seg.find<procsafe::mutex_counter<std::int64_t>>("m").value() == 40'000);
    REQUIRE(seg.find<procsafe::atomic_counter<std::int64_t>>("a").value() == 40'000);
}

TEMPLATE_TEST_CASE("spawn: 4 spawned processes open the segment by name, 4 x 100,000 = 400,000",
                   "[multiprocess][spawn]", procsafe::atomic_counter<std::int64_t>,
                   procsafe::mutex_counter<std::int64_t>) {
    constexpr int processes = 4;
    const auto name = unique_name("spawn");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    auto& c = seg.construct<TestType>("counter");
    auto& barrier = seg.construct<start_barrier>("barrier");
    const char* kind = std::is_same_v<typename TestType::sync_type, procsafe::atomic_sync> ? "atomic" : "mutex";
    std::vector<pid_t> pids;
    for (int i = 0; i < processes; ++i) {
        pids.push_back(procsafe_test::spawn(PROCSAFE_TEST_CHILD, {name, "counter", kind, "100000"}));
        REQUIRE(pids.back() > 0);
    }
    REQUIRE(barrier.release_when(processes));
    REQUIRE(join_children(pids) == processes);
    REQUIRE(c.value() == processes * 100'000);
}

TEST_CASE("a process that dies holding a mutex counter's lock: the next locker recovers", "[multiprocess][crash]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<procsafe::mutex_counter<std::int64_t>>("counter", 10);
    auto& reached = seg.construct<procsafe::atomic_counter<int>>("reached");
    // The child dies inside with_lock, after changing the value but before
    // the update is committed: the lock is held by a dead process.
    const auto pids = fork_children(1, [&](int) {
        c.increment();  // 11, committed
        c.with_lock([&](std::int64_t& v) {
            v = 999;  // never committed
            reached.increment();
            ::_exit(0);
        });
        return 1;
    });
    REQUIRE(join_children(pids) == 1);
    REQUIRE(reached.value() == 1);
    REQUIRE(c.recoveries() == 0);
    REQUIRE(c.increment() == 12);  // the last completed update was 11
    REQUIRE(c.recoveries() == 1);
    REQUIRE(c.value() == 12);
}
