// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Kill tests: processes SIGKILLed at random points, while holding a lock,
// inside construct, several at once. Nothing hangs (every wait is bounded
// and a timeout fails the test), no completed increment is lost.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <csignal>
#include <cstdint>
#include <random>

using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::start_barrier;
using namespace std::chrono_literals;

namespace {

std::mt19937& rng() {
    static std::mt19937 r(std::random_device{}());
    return r;
}
long random_between(long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(rng()); }

/// Spins until pred() holds, at most `limit`.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::yield();
    }
    return true;
}

struct progress_record {
    static constexpr int max = 16;
    procsafe::atomic_counter<std::int64_t> done[max];  // each child's own count of completed increments
    procsafe::atomic_counter<int> holding;
    std::int64_t sum() const {
        std::int64_t s = 0;
        for (const auto& d : done) s += d.value();
        return s;
    }
};

}  // namespace

TEST_CASE("crash: a process killed while holding a mutex_counter's lock is recovered within 1 s",
          "[crash][multiprocess]") {
    for (int round = 0; round < 10; ++round) {
        auto seg = procsafe::segment::anonymous(256 * 1024);
        auto& c = seg.construct<procsafe::mutex_counter<std::int64_t>>("c");
        auto& rec = seg.construct<progress_record>("progress");
        const long before = random_between(0, 5000);  // the kill point
        INFO("round " << round << ": killed after " << before << " increments");
        const auto pids = fork_children(1, [&](int) {
            for (long k = 0; k < before; ++k) {
                c.increment();
                rec.done[0].store(k + 1);
            }
            c.with_lock([&](std::int64_t& v) {
                v += 1'000'000;  // never committed: the owner dies first
                rec.holding.store(1);
                wait_until([] { return false; });  // hold the lock until killed (bounded)
            });
            return 3;
        });
        REQUIRE(wait_until([&] { return rec.holding.value() == 1; }));
        ::kill(pids[0], SIGKILL);
        join_children(pids);

        const auto start = std::chrono::steady_clock::now();
        const std::int64_t after = c.increment();  // takes the dead owner's lock
        REQUIRE(std::chrono::steady_clock::now() - start < 1s);
        REQUIRE(after == before + 1);  // the last completed update, plus ours
        REQUIRE(c.recoveries() == 1);

        // Later updates are exact.
        auto& barrier = seg.construct<start_barrier>("barrier");
        const auto more = fork_children(4, [&](int) {
            if (!barrier.arrive_and_wait()) return 2;
            for (int k = 0; k < 10'000; ++k) c.increment();
            return 0;
        });
        REQUIRE(barrier.release_when(4));
        REQUIRE(join_children(more, 60s) == 4);
        REQUIRE(c.value() == before + 1 + 40'000);
    }
}

TEMPLATE_TEST_CASE("crash: several processes killed at once, at random points: survivors finish, nothing "
                   "completed is lost",
                   "[crash][multiprocess]", procsafe::atomic_counter<std::int64_t>,
                   procsafe::mutex_counter<std::int64_t>) {
    constexpr int victims = 4, survivors = 3, per_child = 100'000;
    for (int round = 0; round < 5; ++round) {
        auto seg = procsafe::segment::anonymous(256 * 1024);
        auto& c = seg.construct<TestType>("c");
        auto& rec = seg.construct<progress_record>("progress");
        auto& barrier = seg.construct<start_barrier>("barrier");
        const auto pids = fork_children(victims + survivors, [&](int i) {
            if (!barrier.arrive_and_wait()) return 2;
            for (int k = 0; k < per_child; ++k) {
                c.increment();
                rec.done[i].store(k + 1);
            }
            return 0;
        });
        // The victims form one process group, killed in one call (as a
        // supervisor or the OOM killer would).
        for (int i = 0; i < victims; ++i) ::setpgid(pids[static_cast<std::size_t>(i)], pids[0]);
        REQUIRE(barrier.release_when(victims + survivors));
        const long kill_at = random_between(1, per_child / 2);
        INFO("round " << round << ": group killed after " << kill_at << " increments of child 0");
        REQUIRE(wait_until([&] { return rec.done[0].value() >= kill_at; }));
        ::kill(-pids[0], SIGKILL);

        const std::vector<pid_t> victim_pids(pids.begin(), pids.begin() + victims);
        const std::vector<pid_t> survivor_pids(pids.begin() + victims, pids.end());
        join_children(victim_pids);
        REQUIRE(join_children(survivor_pids, 60s) == survivors);  // a hang would be killed and counted here
        for (int i = victims; i < victims + survivors; ++i) REQUIRE(rec.done[i].value() == per_child);
        const std::int64_t recorded = rec.sum();
        REQUIRE(c.value() >= recorded);
        REQUIRE(c.value() <= recorded + victims);  // at most one unrecorded increment per killed child
    }
}

namespace {
/// A user type whose constructor announces itself and then never returns
/// (until its process is killed).
struct slow_to_build {
    explicit slow_to_build(procsafe::atomic_counter<int>* started) {
        started->store(1);
        wait_until([] { return false; });
    }
};
}  // namespace

TEST_CASE("crash: a process killed inside construct: the others get owner_died at once, not a hang",
          "[crash][multiprocess]") {
    const auto name = procsafe_test::unique_name("ctor");
    auto seg = procsafe::segment::create(name, 256 * 1024);
    auto& started = seg.construct<procsafe::atomic_counter<int>>("started");
    const auto pids = fork_children(1, [&](int) {
        seg.construct<slow_to_build>("half", &started);
        return 3;
    });
    REQUIRE(wait_until([&] { return started.value() == 1; }));
    ::kill(pids[0], SIGKILL);
    join_children(pids);

    auto peer = procsafe::segment::open(name);
    for (int attempt = 0; attempt < 2; ++attempt) {
        const auto start = std::chrono::steady_clock::now();
        const auto e = procsafe_test::catch_error([&] {
            if (attempt == 0) peer.find<slow_to_build>("half");
            else peer.find_or_construct<slow_to_build>("half", &started);
        });
        REQUIRE(e.code() == procsafe::errc::owner_died);
        REQUIRE(e.object_name() == "half");
        REQUIRE(std::chrono::steady_clock::now() - start < peer.timeout());
    }
    // The rest of the segment still works.
    REQUIRE(peer.construct<procsafe::atomic_counter<int>>("fine", 1).increment() == 2);
}

TEST_CASE("crash: processes killed at random points of construct and find: the others never hang",
          "[crash][multiprocess]") {
    for (int round = 0; round < 10; ++round) {
        auto seg = procsafe::segment::anonymous(4 << 20);
        seg.set_timeout(500ms);
        auto& rec = seg.construct<progress_record>("progress");
        auto& barrier = seg.construct<start_barrier>("barrier");
        const auto pids = fork_children(3, [&](int i) {
            if (!barrier.arrive_and_wait()) return 2;
            for (int k = 0; k < 2000; ++k) {
                std::string name = procsafe_test::numbered("c", i);
                name += '_';
                name += std::to_string(k);
                auto& c = seg.find_or_construct<procsafe::atomic_counter<int>>(name);
                c.increment();
                seg.find<progress_record>("progress").done[i].increment();
            }
            return 0;
        });
        REQUIRE(barrier.release_when(3));
        const long kill_at = random_between(1, 500);
        REQUIRE(wait_until([&] { return rec.done[0].value() >= kill_at; }));
        for (pid_t pid : pids) ::kill(pid, SIGKILL);
        join_children(pids);

        // Whatever state the kills left: construct and find either work or
        // fail with a procsafe::error within the bound. Never a hang.
        const auto start = std::chrono::steady_clock::now();
        int worked = 0, refused = 0;
        for (int k = 0; k < 20; ++k) {
            try {
                seg.find_or_construct<procsafe::atomic_counter<int>>(procsafe_test::numbered("after", k)).increment();
                seg.find<procsafe::atomic_counter<int>>("c1_0");
                ++worked;
            } catch (const procsafe::error& e) {
                INFO(e.what());
                const auto code = e.code_value();
                REQUIRE((code == procsafe::errc::owner_died || code == procsafe::errc::timed_out ||
                         code == procsafe::errc::object_not_found));
                ++refused;
            }
        }
        REQUIRE(worked + refused == 20);
        REQUIRE(std::chrono::steady_clock::now() - start < 20 * 2 * seg.timeout() + 1s);
    }
}

TEST_CASE("mutex_counter held_lock: uncommitted changes vanish, commit publishes, a deadline bounds it, a dead holder recovered",
          "[crash][multiprocess]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& c = seg.construct<procsafe::mutex_counter<std::int64_t>>("c", 5);
    auto& rec = seg.construct<progress_record>("progress");
    {
        auto h = c.try_lock_until(std::chrono::steady_clock::time_point::min());  // free: taken at once
        REQUIRE(h);
        CHECK_FALSE(h->recovered());
        CHECK(h->value() == 5);
        h->value() = 7;
        CHECK(c.read_committed() == 5);  // lock-free readers see the last commit only
    }  // unlocked without commit: the 7 is gone
    CHECK(c.value() == 5);
    {
        auto h = c.try_lock_until(std::chrono::steady_clock::time_point::min());
        REQUIRE(h);
        h->value() += 10;
        const auto waiter = fork_children(1, [&](int) { return c.wait_at_least_for(15, 10s) ? 0 : 4; });
        h->commit();
        CHECK(c.read_committed() == 15);  // (value() would take the lock this thread holds)
        h->value() += 100;  // after the commit: a new copy, not published
        h.reset();
        REQUIRE(join_children(waiter, 30s) == 1);  // the waiter woke on the commit
    }
    CHECK(c.value() == 15);
    // Held by another process: a deadline bounds the wait; SIGKILLed while
    // holding it: the next locker recovers it with the last commit.
    const auto holder = fork_children(1, [&](int) {
        auto h = c.try_lock_until(std::chrono::steady_clock::time_point::max());
        if (!h) return 2;
        h->value() = 1'000'000;  // never committed
        rec.holding.store(1);
        wait_until([] { return false; });  // until killed (bounded)
        return 3;
    });
    REQUIRE(wait_until([&] { return rec.holding.value() == 1; }));
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(c.try_lock_until(start + 50ms));
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 50ms);
    CHECK(waited < 5s);
    ::kill(holder[0], SIGKILL);
    join_children(holder);
    auto h = c.try_lock_until(std::chrono::steady_clock::now() + 5s);
    REQUIRE(h);
    CHECK(h->recovered());
    CHECK(h->value() == 15);
    h->value() += 1;
    h->commit();
    h.reset();
    CHECK(c.value() == 16);
    CHECK(c.recoveries() == 1);
}
