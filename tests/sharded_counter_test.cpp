// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <csignal>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

using procsafe::shard_strategy;
using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::start_barrier;
using sharded = procsafe::sharded_counter<std::int64_t>;

namespace {

const shard_strategy all_strategies[] = {shard_strategy::owned_slot, shard_strategy::per_cpu,
                                         shard_strategy::per_process};

const char* name_of(shard_strategy s) {
    return s == shard_strategy::owned_slot ? "owned_slot" : s == shard_strategy::per_cpu ? "per_cpu" : "per_process";
}

/// n processes x k increments each, starting together; returns the total.
std::int64_t run(procsafe::segment& seg, sharded& c, int n, int k) {
    auto& barrier = seg.construct<start_barrier>(procsafe_test::unique_name("barrier"));
    const auto pids = fork_children(n, [&](int) {
        if (!barrier.arrive_and_wait()) return 2;
        for (int i = 0; i < k; ++i) c.increment();
        return 0;
    });
    REQUIRE(barrier.release_when(n));
    REQUIRE(join_children(pids) == n);
    return c.sum();
}

}  // namespace

TEST_CASE("sharded_counter conformance: the operations its contract has", "[sharded]") {
    for (shard_strategy strategy : all_strategies) {
        INFO(name_of(strategy));
        auto seg = procsafe::segment::anonymous(64 * 1024);
        auto& c = seg.construct<sharded>("c", 8, strategy);
        REQUIRE(c.sum() == 0);
        REQUIRE(c.slots() == 8);
        REQUIRE(c.strategy() == strategy);
        c.increment();
        c.increment(9);
        c.decrement();
        c.decrement(2);
        c.add(-3);
        ++c;
        --c;
        c += 5;
        c -= 1;
        REQUIRE(c.sum() == 8);
        c.reset();
        REQUIRE(c.sum() == 0);
        REQUIRE(reinterpret_cast<std::uintptr_t>(&c) % procsafe::cache_line == 0);
    }
}

TEST_CASE("sharded_counter: slot counts round up to a power of two, bad ones are refused", "[sharded][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    REQUIRE(seg.construct<sharded>("five", 5).slots() == 8);
    REQUIRE(seg.construct<sharded>("dflt").slots() == sharded::default_slots());
    REQUIRE(sharded::default_slots() >= std::thread::hardware_concurrency());
    for (std::size_t bad : {std::size_t{0}, sharded::max_slots + 1}) {
        const auto e = procsafe_test::catch_error([&] { seg.construct<sharded>("bad", bad); });
        REQUIRE(e.code() == procsafe::errc::invalid_argument);
        REQUIRE(e.object_name() == "bad");
        REQUIRE(e.segment_name() == "(anonymous)");
        REQUIRE_FALSE(seg.contains("bad"));
    }
    REQUIRE(procsafe_test::catch_error([&] { seg.find<procsafe::sharded_counter<int>>("five"); }).code() ==
            procsafe::errc::type_mismatch);
}

TEST_CASE("sharded_counter: 10 processes x 100,000 = 1,000,000 for every strategy", "[sharded][multiprocess]") {
    for (shard_strategy strategy : all_strategies) {
        INFO(name_of(strategy));
        auto seg = procsafe::segment::anonymous(256 * 1024);
        auto& c = seg.construct<sharded>("c", sharded::default_slots(), strategy);
        REQUIRE(run(seg, c, 10, 100'000) == 1'000'000);
    }
}

TEST_CASE("sharded_counter: more processes than slots is still exact", "[sharded][multiprocess]") {
    for (shard_strategy strategy : all_strategies) {
        INFO(name_of(strategy));
        auto seg = procsafe::segment::anonymous(256 * 1024);
        auto& c = seg.construct<sharded>("c", 2, strategy);
        REQUIRE(run(seg, c, 10, 100'000) == 1'000'000);
        if (strategy == shard_strategy::owned_slot) REQUIRE(c.owned_slots() <= 2);
    }
}

TEST_CASE("sharded_counter: threads each own a slot, exact", "[sharded][threads]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& c = seg.construct<sharded>("c");
    std::vector<std::thread> pool;
    for (int t = 0; t < 10; ++t) {
        pool.emplace_back([&c] {
            for (int k = 0; k < 100'000; ++k) c.increment();
        });
    }
    for (auto& t : pool) t.join();
    REQUIRE(c.sum() == 1'000'000);
    REQUIRE(c.owned_slots() >= 2);  // at least the writers alive at once held distinct slots
}

TEST_CASE("sharded_counter: a forked child takes its own slot, never its parent's", "[sharded][multiprocess]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& c = seg.construct<sharded>("c", 16);
    auto& barrier = seg.construct<start_barrier>("barrier");
    c.increment();  // the parent owns a slot (and has it cached) before forking
    REQUIRE(c.owned_slots() == 1);
    const auto pids = fork_children(4, [&](int) {
        if (!barrier.arrive_and_wait()) return 2;
        for (int k = 0; k < 100'000; ++k) c.increment();
        return 0;
    });
    for (int k = 0; k < 100'000; ++k) c.increment();  // the parent keeps writing its own slot meanwhile
    REQUIRE(barrier.release_when(4));
    REQUIRE(join_children(pids) == 4);
    REQUIRE(c.sum() == 1 + 5 * 100'000);
    REQUIRE(c.owned_slots() == 5);
}

TEST_CASE("sharded_counter: a dead owner's slot is taken over, its count kept", "[sharded][multiprocess]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<sharded>("c", 1);  // one slot: the second writer must take it over
    REQUIRE(join_children(fork_children(1, [&](int) {
                for (int k = 0; k < 1000; ++k) c.increment();
                return 0;
            })) == 1);
    REQUIRE(c.owned_slots() == 1);  // still marked as the dead child's
    REQUIRE(join_children(fork_children(1, [&](int) {
                for (int k = 0; k < 1000; ++k) c.increment();
                return c.owned_slots() == 1 ? 0 : 3;
            })) == 1);
    REQUIRE(c.sum() == 2000);
}

TEST_CASE("sharded_counter: a child SIGKILLed mid-loop loses at most its last increment",
          "[sharded][multiprocess][crash]") {
    constexpr int children = 4, per_child = 200'000, rounds = 5;
    std::mt19937 rng(std::random_device{}());
    for (int round = 0; round < rounds; ++round) {
        for (shard_strategy strategy : all_strategies) {
            INFO(name_of(strategy) << ", round " << round);
            auto seg = procsafe::segment::anonymous(256 * 1024);
            auto& c = seg.construct<sharded>("c", 4, strategy);
            struct progress_t {
                procsafe::atomic_counter<std::int64_t> done[children];
            };
            auto& progress = seg.construct<progress_t>("progress");
            auto& barrier = seg.construct<start_barrier>("barrier");
            const auto pids = fork_children(children, [&](int i) {
                if (!barrier.arrive_and_wait()) return 2;
                for (int k = 0; k < per_child; ++k) {
                    c.increment();
                    progress.done[i].store(k + 1, std::memory_order_release);  // the child's own record
                }
                return 0;
            });
            REQUIRE(barrier.release_when(children));
            // Kill child 0 once it has made a random amount of progress.
            const std::int64_t kill_at = std::uniform_int_distribution<std::int64_t>(1, per_child - 1)(rng);
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
            while (progress.done[0].value() < kill_at && std::chrono::steady_clock::now() < deadline)
                std::this_thread::yield();
            ::kill(pids[0], SIGKILL);
            join_children(pids);
            std::int64_t recorded = 0;
            for (auto& d : progress.done) recorded += d.value();
            // The victim may have incremented once more than it recorded; nothing finished is lost.
            REQUIRE(c.sum() >= recorded);
            REQUIRE(c.sum() <= recorded + 1);
            REQUIRE(progress.done[1].value() == per_child);
        }
    }
}

TEST_CASE("sharded_counter writer: exact across processes, and a fork child never writes its parent's slot",
          "[sharded][multiprocess]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& c = seg.construct<sharded>("c", 16);
    auto& barrier = seg.construct<start_barrier>("barrier");
    auto w = c.local();  // the parent's writer, made before the fork
    ++w;
    REQUIRE(c.owned_slots() == 1);
    const auto pids = fork_children(4, [&](int) {
        if (!barrier.arrive_and_wait()) return 2;
        for (int k = 0; k < 100'000; ++k) w.increment();  // the inherited writer: must move to a slot of its own
        return 0;
    });
    for (int k = 0; k < 100'000; ++k) w += 1;  // the parent keeps writing its slot meanwhile
    REQUIRE(barrier.release_when(4));
    REQUIRE(join_children(pids) == 4);
    REQUIRE(c.sum() == 1 + 5 * 100'000);
    REQUIRE(c.owned_slots() == 5);
}

TEST_CASE("sharded_counter writer: one per thread, exact", "[sharded][threads]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& c = seg.construct<sharded>("c", 4);  // fewer slots than threads: some share the overflow line
    std::vector<std::thread> pool;
    for (int t = 0; t < 10; ++t) {
        pool.emplace_back([&c] {
            auto w = c.local();
            for (int k = 0; k < 100'000; ++k) w.increment();
            w.decrement(10);
        });
    }
    for (auto& t : pool) t.join();
    REQUIRE(c.sum() == 10 * (100'000 - 10));
}
