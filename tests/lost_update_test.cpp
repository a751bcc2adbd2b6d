// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The lost update, made deterministic: two processes forced by a handshake in
// shared memory to interleave read, read, write, write lose exactly one
// update, every time. No test here depends on the racy variant happening to
// lose updates; this one makes it happen.
#include "catch.hpp"
#include "support/process.hpp"

#include "../examples/support.hpp"  // the racy read and write the examples use

#include <procsafe/procsafe.hpp>

#include <atomic>

namespace {

struct handshake {
    std::atomic<int> step{0};
    /// Spins until the step is `s` (bounded): false if the peer never got there.
    bool wait_for(int s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (step.load(std::memory_order_acquire) != s) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::yield();
        }
        return true;
    }
    void advance_to(int s) { step.store(s, std::memory_order_release); }
};

}  // namespace

TEST_CASE("lost update: read, read, write, write loses exactly one update", "[multiprocess][lost-update]") {
    auto seg = procsafe::segment::anonymous(16 * 1024);
    auto& value = seg.construct<std::int64_t>("value", 41);
    auto& turn = seg.construct<handshake>("turn");
    // Process 0 does its steps at 0 and 2, process 1 at 1 and 3.
    const auto pids = procsafe_test::fork_children(2, [&](int me) {
        if (!turn.wait_for(me)) return 2;
        const std::int64_t seen = example::racy_read(value);
        turn.advance_to(me + 1);
        if (!turn.wait_for(me + 2)) return 2;
        example::racy_write(value, seen + 1);
        turn.advance_to(me + 3);
        return 0;
    });
    REQUIRE(procsafe_test::join_children(pids, std::chrono::seconds(60)) == 2);
    REQUIRE(turn.step.load() == 4);
    // Two increments of 41; both read 41, both wrote 42: one update lost.
    REQUIRE(example::racy_read(value) == 42);
}

TEST_CASE("lost update: the same interleaving cannot split an atomic increment", "[multiprocess][lost-update]") {
    auto seg = procsafe::segment::anonymous(16 * 1024);
    auto& counter = seg.construct<procsafe::atomic_counter<std::int64_t>>("counter", 41);
    auto& turn = seg.construct<handshake>("turn");
    const auto pids = procsafe_test::fork_children(2, [&](int me) {
        if (!turn.wait_for(me)) return 2;
        counter.increment();  // read and write are one step: there is no "between"
        turn.advance_to(me + 1);
        return 0;
    });
    REQUIRE(procsafe_test::join_children(pids, std::chrono::seconds(60)) == 2);
    REQUIRE(counter.value() == 43);
}
