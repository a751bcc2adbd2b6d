// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The lost update, made deterministic. Two processes increment a counter
// that holds 41 on a forced schedule: the first is held between the steps of
// its increment (if it has steps), the second increments, the first goes on.
// The racy read-then-write then loses exactly one update, every time (42):
// the schedule catches a racy counter. procsafe's counters end at 43 under the
// same schedule: the atomic one has no "between", the mutex one makes the
// second process wait for the first.
#include "catch.hpp"
#include "support/pause.hpp"
#include "support/process.hpp"

#include "../examples/support.hpp"  // the racy read and write the examples use

#include <procsafe/procsafe.hpp>

#include <atomic>
#include <type_traits>

using procsafe_test::pause_board;
using namespace std::chrono_literals;

namespace {

/// The racy increment, with a test hook between its read and its write.
struct racy_counter {
    std::int64_t value;
    explicit racy_counter(std::int64_t v) : value(v) {}
    void increment() {
        const std::int64_t seen = example::racy_read(value);
        PROCSAFE_TEST_HOOK("increment.between");
        example::racy_write(value, seen + 1);
    }
    std::int64_t read() { return example::racy_read(value); }
};

template <class Counter>
struct adapter {
    Counter& c;
    void increment() { c.increment(); }
    std::int64_t read() {
        if constexpr (std::is_same_v<Counter, racy_counter>) return c.read();
        else return c.value();
    }
};

/// Runs the schedule on `counter` (which holds 41) and returns its value after.
template <class Ops>
std::int64_t two_increments_on_the_forced_schedule(procsafe::segment& seg, Ops counter) {
    auto& board = seg.construct<pause_board>("board");
    struct done_t {
        std::atomic<int> p0{0}, p1{0};
    };
    auto& done = seg.construct<done_t>("done");
    // P0 stops between the two steps of its increment: the racy counter's
    // read and write, or inside a mutex counter's lock. An atomic increment
    // is one step: P0 just finishes.
    const int between = board.arm("increment.between");
    const int locked = board.arm("counter.locked");
    const pid_t p0 = procsafe_test::fork_children(1, [&](int) {
        board.use();
        counter.increment();
        done.p0.store(1);
        return 0;
    })[0];
    REQUIRE(pause_board::wait_for(
        [&] { return board.is_reached(between) || board.is_reached(locked) || done.p0.load() == 1; }, 30s));
    // P1 increments; if it must wait for P0 (the lock), it says so. (P0
    // holds the lock already, so only P1 can block.)
    const int blocked = board.arm("mutex.blocked", 0, 0, pause_board::signal_only);
    const pid_t p1 = procsafe_test::fork_children(1, [&](int) {
        board.use();
        counter.increment();
        done.p1.store(1);
        return 0;
    })[0];
    REQUIRE(pause_board::wait_for([&] { return done.p1.load() == 1 || board.is_reached(blocked); }, 30s));
    board.release(between);
    board.release(locked);
    REQUIRE(procsafe_test::join_children({p0, p1}, 60s) == 2);
    REQUIRE(done.p0.load() + done.p1.load() == 2);
    return counter.read();
}

}  // namespace

TEST_CASE("lost update: the forced schedule makes a racy read-then-write lose exactly one update",
          "[multiprocess][lost-update]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& racy = seg.construct<racy_counter>("racy", 41);
    // Both read 41, both write 42: the schedule catches a racy counter, every time.
    REQUIRE(two_increments_on_the_forced_schedule(seg, adapter<racy_counter>{racy}) == 42);
}

TEMPLATE_TEST_CASE("lost update: procsafe's counters lose nothing on the same schedule", "[multiprocess][lost-update]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>) {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("counter", 41);
    REQUIRE(two_increments_on_the_forced_schedule(seg, adapter<TestType>{c}) == 43);
}
