// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Waiting across processes: on state, never on a message; bounded; woken.
#include "catch.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <csignal>
#include <cstdint>
#include <thread>

using procsafe_test::fork_children;
using procsafe_test::join_children;
using namespace std::chrono_literals;

namespace {
/// Children tell the parent they are about to wait (they may not be asleep
/// yet: the protocol must wake them either way).
struct waiting_room {
    procsafe::atomic_counter<int> about_to_wait;
    procsafe::atomic_counter<int> woken;
};
}  // namespace

TEMPLATE_TEST_CASE("wait: a waiter that starts after the value was reached returns at once", "[wait]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("c");
    c.increment(5);  // the "notification" happened before anybody waited
    const auto start = std::chrono::steady_clock::now();
    c.wait_at_least(5);
    c.wait_equal(5);
    c.wait([](std::int64_t v) { return v % 5 == 0; });
    REQUIRE(c.wait_at_least_for(3, 10s));
    REQUIRE(c.wait_equal_until(5, std::chrono::system_clock::now() + 10s));
    REQUIRE(std::chrono::steady_clock::now() - start < 1s);
}

TEMPLATE_TEST_CASE("wait: timeouts return false within a bounded time", "[wait]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("c");
    auto start = std::chrono::steady_clock::now();
    REQUIRE_FALSE(c.wait_at_least_for(1, 50ms));
    auto took = std::chrono::steady_clock::now() - start;
    REQUIRE(took >= 50ms);
    REQUIRE(took < 2s);
    start = std::chrono::steady_clock::now();
    REQUIRE_FALSE(c.wait_equal_until(7, std::chrono::steady_clock::now() + 30ms));
    REQUIRE_FALSE(c.wait_for([](std::int64_t v) { return v < 0; }, 0ms));
    REQUIRE(std::chrono::steady_clock::now() - start < 2s);
}

TEMPLATE_TEST_CASE("wait: a waiter that starts before is woken (forked peers), wake", "[wait][multiprocess]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("c");
    auto& room = seg.construct<waiting_room>("room");
    const auto pids = fork_children(1, [&](int) {
        room.about_to_wait.increment();
        const bool got = c.wait_at_least_for(3, 20s);
        return got && c.value() >= 3 ? 0 : 1;
    });
    REQUIRE(room.about_to_wait.wait_at_least_for(1, 20s));
    c.increment();
    c.increment();
    c.increment();  // the third reaches the condition
    REQUIRE(join_children(pids, 30s) == 1);
}

TEST_CASE("wait: a spawned peer waiting by name is woken, wake", "[wait][multiprocess][spawn]") {
    const auto name = procsafe_test::unique_name("waitspawn");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("counter");
    auto& barrier = seg.construct<procsafe_test::start_barrier>("barrier");
    const pid_t pid = procsafe_test::spawn(PROCSAFE_TEST_CHILD, {name, "counter", "wait", "10"});
    REQUIRE(pid > 0);
    REQUIRE(barrier.release_when(1));  // the child found the counter and is about to wait
    for (int i = 0; i < 10; ++i) c.increment();
    REQUIRE(procsafe_test::exited_ok(procsafe_test::wait_bounded(pid, 30s)));
}

TEST_CASE("wait: 8 waiters all wake on one increment, wake", "[wait][multiprocess]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<procsafe::atomic_counter<int>>("c");
    auto& room = seg.construct<waiting_room>("room");
    const auto pids = fork_children(8, [&](int) {
        room.about_to_wait.increment();
        if (!c.wait_at_least_for(1, 20s)) return 1;
        room.woken.increment();
        return 0;
    });
    REQUIRE(room.about_to_wait.wait_at_least_for(8, 20s));
    c.increment();
    REQUIRE(room.woken.wait_at_least_for(8, 20s));
    REQUIRE(join_children(pids, 30s) == 8);
}

TEST_CASE("wait: a waiter killed while waiting does not break the others", "[wait][multiprocess][crash]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<procsafe::mutex_counter<std::int64_t>>("c");
    auto& room = seg.construct<waiting_room>("room");
    const auto doomed = fork_children(1, [&](int) {
        room.about_to_wait.increment();
        c.wait_at_least(1'000'000);  // never satisfied: killed while asleep
        return 1;
    });
    REQUIRE(room.about_to_wait.wait_at_least_for(1, 20s));
    ::kill(doomed[0], SIGKILL);
    join_children(doomed);
    const auto survivor = fork_children(1, [&](int) {
        room.about_to_wait.increment();
        return c.wait_at_least_for(2, 20s) ? 0 : 1;
    });
    REQUIRE(room.about_to_wait.wait_at_least_for(2, 20s));
    REQUIRE(c.increment() == 1);
    REQUIRE(c.increment() == 2);
    REQUIRE(join_children(survivor, 30s) == 1);
    REQUIRE(c.value() == 2);  // (the doomed waiter may even have died inside value(), holding the lock)
}

TEST_CASE("wait: threads wait too", "[wait][threads]") {
    procsafe::atomic_counter<int> c;
    std::thread waiter([&] { REQUIRE(c.wait_at_least_for(100, 20s)); });
    for (int i = 0; i < 100; ++i) c.increment();
    waiter.join();
    REQUIRE(c.value() == 100);
}

TEST_CASE("latch: N processes count down, the parent waits, a late waiter returns at once", "[latch][multiprocess]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& ready = seg.construct<procsafe::latch>("ready", 6);
    REQUIRE_FALSE(ready.try_wait());
    const auto pids = fork_children(4, [&](int) {
        ready.count_down();
        return ready.wait_for(20s) ? 0 : 1;  // arrive, then wait for all: arrive_and_wait with a bound
    });
    ready.count_down(2);
    REQUIRE(ready.wait_for(20s));
    REQUIRE(ready.try_wait());
    REQUIRE(join_children(pids, 30s) == 4);
    ready.wait();  // already open: returns at once
    REQUIRE_THROWS_AS(ready.count_down(), procsafe::error);
    REQUIRE_THROWS_AS(seg.construct<procsafe::latch>("bad", -1), procsafe::error);
    REQUIRE(&seg.find<procsafe::latch>("ready") == &ready);
}

TEST_CASE("barrier: 4 processes x 1,000 phases, nobody runs ahead", "[barrier][multiprocess]") {
    constexpr int processes = 4, phases = 1000;
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& step = seg.construct<procsafe::barrier>("step", processes);
    struct progress_t {
        procsafe::atomic_counter<int> done[processes];
        procsafe::atomic_counter<int> violations;
    };
    auto& progress = seg.construct<progress_t>("progress");
    const auto pids = fork_children(processes, [&](int me) {
        for (int k = 0; k < phases; ++k) {
            progress.done[me].store(k + 1);
            const auto token = step.arrive();
            if (!step.wait_for(token, 20s)) return 1;
            // Past barrier k: everyone finished phase k, nobody is past k + 1.
            for (auto& d : progress.done) {
                const int v = d.value();
                if (v < k + 1 || v > k + 2) progress.violations.increment();
            }
        }
        return 0;
    });
    REQUIRE(join_children(pids, 120s) == processes);
    REQUIRE(progress.violations.value() == 0);
    REQUIRE(step.phase() == phases);
}

TEST_CASE("barrier: bad arrivals are errors", "[barrier][error]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    REQUIRE_THROWS_AS(seg.construct<procsafe::barrier>("zero", 0), procsafe::error);
    auto& b = seg.construct<procsafe::barrier>("one", 1);
    b.arrive_and_wait();  // a barrier of one never blocks
    REQUIRE(b.phase() == 1);
    REQUIRE_THROWS_AS(b.arrive(2), procsafe::error);
}
