// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Waiting across processes: on state, never on a message; bounded; woken.
#include "catch.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <csignal>
#include <cstdint>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>

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

namespace {
/// Runs f in a child with a bound: a wait that never ends fails the test
/// instead of hanging it. Returns f's result (an exit code), or -1 if the
/// child had to be killed.
template <class F>
int in_child_within(std::chrono::milliseconds bound, F&& f) {
    const auto pids = fork_children(1, [&](int) { return f(); });
    const int status = procsafe_test::wait_bounded(pids[0], bound);
    return status < 0 ? -1 : WEXITSTATUS(status);
}

/// 0 when `wait` returned false after at least `d` and well within the bound.
template <class Wait, class D>
int times_out_on_time(Wait&& wait, D d) {
    const auto start = std::chrono::steady_clock::now();
    const bool got = wait(d);
    const auto took = std::chrono::steady_clock::now() - start;
    if (got) return 1;
    if (took < std::chrono::duration_cast<std::chrono::steady_clock::duration>(d) - 1ms) return 2;
    if (took > 2s) return 3;
    return 0;
}
}  // namespace

TEMPLATE_TEST_CASE("wait: narrow and odd duration types end at their deadline, never wait forever", "[wait]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("c");
    using namespace std::chrono;
    auto for_ = [&](auto d) { return c.wait_equal_for(42, d); };
    const int rc = in_child_within(30s, [&]() -> int {
        // 50 ms in every representation: a narrow Rep used to wrap while the
        // deadline was computed, and the wait never ended.
        int r = 0;
        if ((r = times_out_on_time(for_, duration<short, std::milli>(50))) != 0) return 10 + r;
        if ((r = times_out_on_time(for_, duration<int, std::micro>(50'000))) != 0) return 20 + r;
        if ((r = times_out_on_time(for_, duration<signed char, std::centi>(5))) != 0) return 30 + r;
        if ((r = times_out_on_time(for_, duration<unsigned short, std::milli>(50))) != 0) return 40 + r;
        if ((r = times_out_on_time(for_, duration<float, std::milli>(50.f))) != 0) return 50 + r;
        if ((r = times_out_on_time(for_, duration<double>(0.05))) != 0) return 60 + r;
        if ((r = times_out_on_time(for_, duration<long double, std::micro>(50'000))) != 0) return 70 + r;
        if ((r = times_out_on_time(for_, duration<std::int64_t, std::nano>(50'000'000))) != 0) return 80 + r;
        // Zero, negative and not-a-number durations do not wait at all.
        auto at_once = [&](auto d) {
            const auto start = steady_clock::now();
            return !c.wait_equal_for(42, d) && steady_clock::now() - start < 1s;
        };
        if (!at_once(duration<short, std::ratio<3600>>(0))) return 90;
        if (!at_once(duration<short, std::milli>(-5))) return 91;
        if (!at_once(duration<double>(std::numeric_limits<double>::quiet_NaN()))) return 92;
        if (!at_once(duration<float>(-std::numeric_limits<float>::infinity()))) return 93;
        // wait_until with other clocks and time_points at the ends of their range.
        auto until_at_once = [&](auto tp) {
            const auto start = steady_clock::now();
            return !c.wait_equal_until(42, tp) && steady_clock::now() - start < 1s;
        };
        if (!until_at_once(system_clock::time_point::min())) return 100;
        if (!until_at_once(steady_clock::time_point::min())) return 101;
        if (!until_at_once(time_point<system_clock, duration<int>>(duration<int>(0)))) return 102;
        if (!until_at_once(time_point<steady_clock, duration<short, std::milli>>::min())) return 103;
        // A time point in whole seconds of int, on the wall clock: ends at it, not before, not much after.
        const auto tp = ceil<duration<int>>(system_clock::now()) + duration<int>(1);
        if (c.wait_equal_until(42, tp)) return 110;
        if (system_clock::now() < tp) return 111;
        if (system_clock::now() > tp + 1s) return 112;
        // A huge bound with the value already there: true at once.
        c.store(42);
        if (!c.wait_equal_for(42, duration<std::int64_t, std::ratio<31556952>>::max())) return 120;
        if (!c.wait_equal_for(42, duration<float, std::ratio<31556952>>(1e30f))) return 121;
        if (!c.wait_equal_for(42, duration<double>(std::numeric_limits<double>::infinity()))) return 122;
        if (!c.wait_equal_until(42, system_clock::time_point::max())) return 123;
        if (!c.wait_equal_until(42, time_point<steady_clock, duration<std::int64_t, std::ratio<86400>>>::max())) return 124;
        return 0;
    });
    INFO("child exit code " << rc << " (-1: it never returned; see the returns above)");
    REQUIRE(rc == 0);
}

namespace {
/// A stopped process holds c's lock; bounded waits on c must still end by their deadline.
template <class Counter>
void bounded_wait_with_stopped_holder(procsafe::segment& seg, Counter& c) {
    auto& holding = seg.construct<std::atomic<int>>("holding", 0);
    const auto holder = fork_children(1, [&](int) {
        c.with_lock([&](std::int64_t& v) {
            v = 1;
            holding.store(1);
            // Held until this process is killed (bounded, as every wait here).
            const auto until = std::chrono::steady_clock::now() + 60s;
            while (std::chrono::steady_clock::now() < until) {}
        });
        return 0;
    });
    while (holding.load() == 0) std::this_thread::yield();
    ::kill(holder[0], SIGSTOP);  // a debugger, a page-fault storm, SIGSTOP: the holder does not move
    // A watchdog ends the holder after 3 s, so that a wait that ignores its
    // deadline shows up as a 3 s wait instead of a hung test.
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread watchdog([&] {
        std::unique_lock<std::mutex> lock(m);
        if (!cv.wait_for(lock, 3s, [&] { return done; })) ::kill(holder[0], SIGKILL);
    });
    auto start = std::chrono::steady_clock::now();
    const bool equal = c.wait_equal_for(42, 50ms);
    const auto took_for = std::chrono::steady_clock::now() - start;
    start = std::chrono::steady_clock::now();
    const bool at_least = c.wait_at_least_until(42, std::chrono::system_clock::now() + 50ms);
    const auto took_until = std::chrono::steady_clock::now() - start;
    {
        std::lock_guard<std::mutex> lock(m);
        done = true;
    }
    cv.notify_all();
    watchdog.join();
    ::kill(holder[0], SIGKILL);
    join_children(holder);
    INFO("wait_equal_for took " << std::chrono::duration<double>(took_for).count() << " s, wait_at_least_until "
                                << std::chrono::duration<double>(took_until).count() << " s");
    REQUIRE_FALSE(equal);  // documented: false when the value could not be read in time
    REQUIRE_FALSE(at_least);
    REQUIRE(took_for < 1s);
    REQUIRE(took_until < 1s);
    REQUIRE(c.increment() == 1);  // the dead holder's update was never committed; the lock is recovered
}
}  // namespace

TEST_CASE("wait: a bounded wait returns by its deadline while a stopped process holds the counter's lock",
          "[wait][multiprocess]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    SECTION("mutex_counter") {
        bounded_wait_with_stopped_holder(seg, seg.construct<procsafe::mutex_counter<std::int64_t>>("c"));
    }
    SECTION("an element of a mutex counter_array") {
        bounded_wait_with_stopped_holder(seg, seg.construct<procsafe::counter_array<std::int64_t, procsafe::mutex_sync>>("c", 2)[1]);
    }
}

TEST_CASE("wait: updates with every memory order wake a sleeping waiter at once, never after its 1 s slice",
          "[wait][multiprocess][stress]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    auto& room = seg.construct<waiting_room>("room");
    constexpr int rounds = 4000;
    // The waiter announces each wait; the notifier waits for the announcement,
    // then updates with a weak memory order. A missed wake-up would leave the
    // waiter asleep until its slice ends (1 s).
    const auto waiter = fork_children(1, [&](int) {
        for (int i = 1; i <= rounds; ++i) {
            room.about_to_wait.store(i);
            const auto start = std::chrono::steady_clock::now();
            if (!c.wait_at_least_for(i, 20s)) return 1;
            if (std::chrono::steady_clock::now() - start > 500ms) room.woken.increment();  // a late wake
        }
        return 0;
    });
    for (int i = 1; i <= rounds; ++i) {
        REQUIRE(room.about_to_wait.wait_equal_for(i, 20s));
        switch (i % 4) {
            case 0: c.store(i, std::memory_order_relaxed); break;
            case 1: c.store(i, std::memory_order_release); break;
            case 2: c.fetch_add(1, std::memory_order_relaxed); break;
            case 3: c.exchange(i, std::memory_order_acq_rel); break;
        }
    }
    REQUIRE(join_children(waiter, 60s) == 1);
    REQUIRE(room.woken.value() == 0);
}
