// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// latch and barrier across processes: the scenarios the standard libraries'
// own test suites run for std::latch and std::barrier (libstdc++'s
// 30_threads/latch and 30_threads/barrier, libc++'s thread.latch and
// thread.barrier), with processes instead of threads; then what std leaves
// undefined and procsafe refuses, and what a refusal leaves behind.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdint>

using procsafe_test::fork_children;
using procsafe_test::join_children;
using namespace std::chrono_literals;

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

TEST_CASE("latch: count_down, try_wait and wait, as the standard libraries test std::latch", "[latch][multiprocess]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    SECTION("count_down(1) twice opens a latch of 2; try_wait tells the state") {
        auto& l = seg.construct<procsafe::latch>("l", 2);
        REQUIRE_FALSE(l.try_wait());
        REQUIRE(join_children(fork_children(1, [&](int) {
                    l.count_down();
                    return 0;
                })) == 1);
        REQUIRE_FALSE(l.try_wait());
        l.count_down();
        REQUIRE(l.try_wait());
        l.wait();
    }
    SECTION("arrive_and_wait in a child and in the parent") {
        auto& l = seg.construct<procsafe::latch>("l", 2);
        const auto pids = fork_children(1, [&](int) {
            l.arrive_and_wait();
            return 0;
        });
        l.arrive_and_wait();
        REQUIRE(join_children(pids, 30s) == 1);
        REQUIRE(l.try_wait());
    }
    SECTION("a latch of 0 is open; count_down(n) counts n at once") {
        auto& zero = seg.construct<procsafe::latch>("zero", 0);
        REQUIRE(zero.try_wait());
        zero.wait();
        auto& l = seg.construct<procsafe::latch>("l", 5);
        l.count_down(5);
        REQUIRE(l.try_wait());
    }
    SECTION("max() is the largest count a latch takes") {
        static_assert(procsafe::latch::max() > 0);
        auto& l = seg.construct<procsafe::latch>("l", procsafe::latch::max());
        l.count_down(procsafe::latch::max() - 1);
        REQUIRE_FALSE(l.try_wait());
        l.count_down();
        REQUIRE(l.try_wait());
    }
}

TEST_CASE("latch: a refused count_down changes nothing", "[latch][error]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& l = seg.construct<procsafe::latch>("l", 2);
    for (std::ptrdiff_t bad : {std::ptrdiff_t{3}, std::ptrdiff_t{-1}}) {
        const auto e = procsafe_test::catch_error([&] { l.count_down(bad); });
        REQUIRE(e.code() == procsafe::errc::invalid_argument);
    }
    REQUIRE_FALSE(l.try_wait());
    l.count_down(2);  // the whole count is still there
    REQUIRE(l.try_wait());
    REQUIRE_THROWS_AS(seg.construct<procsafe::latch>("bad", -1), procsafe::error);
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

TEST_CASE("barrier: the standard libraries' std::barrier scenarios, across processes", "[barrier][multiprocess]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    SECTION("arrive: tokens, wait on them, and arrive(n) for n participants at once") {
        auto& b = seg.construct<procsafe::barrier>("b", 2);
        const auto token = b.arrive();
        REQUIRE(join_children(fork_children(1, [&](int) {
                    (void)b.arrive();
                    return 0;
                })) == 1);
        b.wait(token);
        const auto token2 = b.arrive(2);  // both arrivals of phase 1 at once
        b.wait(token2);
        REQUIRE(b.phase() == 2);
    }
    SECTION("arrive_and_wait 10 times in two processes") {
        auto& b = seg.construct<procsafe::barrier>("b", 2);
        const auto pids = fork_children(1, [&](int) {
            for (int i = 0; i < 10; ++i) b.arrive_and_wait();
            return 0;
        });
        for (int i = 0; i < 10; ++i) b.arrive_and_wait();
        REQUIRE(join_children(pids, 30s) == 1);
        REQUIRE(b.phase() == 10);  // one completion per phase (std's "completion" test)
    }
    SECTION("arrive_and_drop: the other participant leaves, the parent goes on alone") {
        auto& b = seg.construct<procsafe::barrier>("b", 2);
        const auto pids = fork_children(1, [&](int) {
            b.arrive_and_drop();
            return 0;
        });
        b.arrive_and_wait();
        b.arrive_and_wait();  // phase 1 expects the parent only
        REQUIRE(join_children(pids, 30s) == 1);
        REQUIRE(b.phase() == 2);
    }
    SECTION("n participants wait twice, then all but the parent drop while the parent goes on") {
        constexpr int n = 6;
        auto& b = seg.construct<procsafe::barrier>("b", n);
        auto& present = seg.construct<procsafe::atomic_counter<int>>("present");
        const auto pids = fork_children(n - 1, [&](int) {
            present.increment();
            b.arrive_and_wait();
            b.arrive_and_wait();
            present.decrement();
            b.arrive_and_drop();
            return 0;
        });
        b.arrive_and_wait();
        REQUIRE(present.value() == n - 1);
        b.arrive_and_wait();
        b.arrive_and_wait();  // the others drop in this phase
        REQUIRE(present.value() == 0);
        b.arrive_and_wait();  // alone now
        REQUIRE(join_children(pids, 30s) == n - 1);
        REQUIRE(b.phase() == 4);
    }
    SECTION("max() is the largest expected count a barrier takes") {
        static_assert(procsafe::barrier::max() > 0);
        auto& b = seg.construct<procsafe::barrier>("b", procsafe::barrier::max());
        const auto token = b.arrive(procsafe::barrier::max());
        b.wait(token);
        REQUIRE(b.phase() == 1);
    }
}

TEST_CASE("barrier: bad arrivals are errors", "[barrier][error]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    REQUIRE_THROWS_AS(seg.construct<procsafe::barrier>("zero", 0), procsafe::error);
    REQUIRE_THROWS_AS(seg.construct<procsafe::barrier>("huge", procsafe::barrier::max() + 1), procsafe::error);
    auto& b = seg.construct<procsafe::barrier>("one", 1);
    b.arrive_and_wait();  // a barrier of one never blocks
    REQUIRE(b.phase() == 1);
    REQUIRE_THROWS_AS(b.arrive(2), procsafe::error);
    REQUIRE_THROWS_AS(b.arrive(0), procsafe::error);
}

TEST_CASE("barrier: a refused arrival changes nothing: the phase still completes with the right arrivals",
          "[barrier][error]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& b = seg.construct<procsafe::barrier>("b", 2);
    for (std::ptrdiff_t bad : {std::ptrdiff_t{3}, std::ptrdiff_t{0}, std::ptrdiff_t{-1}}) {
        const auto e = procsafe_test::catch_error([&] { (void)b.arrive(bad); });
        REQUIRE(e.code() == procsafe::errc::invalid_argument);
        REQUIRE(b.phase() == 0);
    }
    const auto token = b.arrive();
    const auto e = procsafe_test::catch_error([&] { (void)b.arrive(2); });  // only one arrival is left
    REQUIRE(e.code() == procsafe::errc::invalid_argument);
    (void)b.arrive();
    REQUIRE(b.wait_for(token, 5s));
    REQUIRE(b.phase() == 1);
    // A barrier everyone dropped out of refuses arrivals instead of miscounting.
    auto& lone = seg.construct<procsafe::barrier>("lone", 1);
    lone.arrive_and_drop();
    REQUIRE(lone.phase() == 1);
    REQUIRE_THROWS_AS(lone.arrive(), procsafe::error);
    REQUIRE_THROWS_AS(lone.arrive_and_drop(), procsafe::error);
}
