// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// histogram and live_gauge: exact across processes; a killed process's
// contribution to a live_gauge drops out by itself; bad arguments refused.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/skip.hpp"

#include <procsafe/procsafe.hpp>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <thread>

#include <functional>

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <limits>
#include <vector>

using procsafe::errc;
using procsafe_test::catch_error;
using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::start_barrier;
using namespace std::chrono_literals;

TEST_CASE("histogram: buckets by le, +Inf, NaN, sum and count", "[histogram]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& h = seg.construct<procsafe::histogram>("h", std::vector{1.0, 2.0, 5.0});
    REQUIRE(h.buckets() == 4);
    for (double v : {0.5, 1.0, 1.5, 2.0, 4.0, 5.0, 7.0, -3.0}) h.observe(v);
    h.observe(std::numeric_limits<double>::quiet_NaN());
    const auto s = h.read();
    REQUIRE(s.bounds == std::vector{1.0, 2.0, 5.0});
    REQUIRE(s.counts == std::vector<std::uint64_t>{3, 2, 2, 2});  // le=1: 0.5 1 -3; le=2: 1.5 2; le=5: 4 5; +Inf: 7 NaN
    REQUIRE(s.count == 9);
    REQUIRE(std::isnan(s.sum));
    auto& empty = seg.construct<procsafe::histogram>("only_inf", std::vector<double>{});
    empty.observe(42);
    REQUIRE(empty.read().counts == std::vector<std::uint64_t>{1});
    REQUIRE(procsafe::histogram::exponential(0.5, 2, 4) == std::vector{0.5, 1.0, 2.0, 4.0});
}

TEST_CASE("histogram: integer bounds are taken as doubles", "[histogram]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& h = seg.construct<procsafe::histogram>("ints", std::vector{1, 5, 10});
    auto& l = seg.construct<procsafe::histogram>("longs", std::vector<long>{100, 1000}, std::size_t{1});
    h.observe(3.0);
    h.observe(10.0);
    l.observe(5000.0);
    const auto s = h.read();
    CHECK(s.bounds == std::vector{1.0, 5.0, 10.0});
    CHECK(s.counts == std::vector<std::uint64_t>{0, 1, 1, 0});
    CHECK(l.read().bounds == std::vector{100.0, 1000.0});
    CHECK(l.read().counts == std::vector<std::uint64_t>{0, 0, 1});
    CHECK(catch_error([&] { seg.construct<procsafe::histogram>("bad", std::vector{5, 1}); }).code() == errc::invalid_argument);
}

TEST_CASE("histogram: bad bounds and rows are refused, naming the object", "[histogram][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    const std::vector<std::vector<double>> bad = {
        {2.0, 1.0}, {1.0, 1.0}, {std::numeric_limits<double>::infinity()}, {std::numeric_limits<double>::quiet_NaN()},
        std::vector<double>(200, 0.0)};
    for (const auto& b : bad) {
        const auto e = catch_error([&] { seg.construct<procsafe::histogram>("h", b); });
        REQUIRE(e.code() == errc::invalid_argument);
        REQUIRE(e.object_name() == "h");
    }
    REQUIRE(catch_error([&] { seg.construct<procsafe::histogram>("h", std::vector{1.0}, 0); }).code() ==
            errc::invalid_argument);
    REQUIRE(catch_error([&] { seg.construct<procsafe::histogram>("h", std::vector{1.0}, 1000); }).code() ==
            errc::invalid_argument);
    seg.construct<procsafe::histogram>("h", std::vector{1.0}, 3);  // rounded up to 4 rows
    REQUIRE(seg.find<procsafe::histogram>("h").rows() == 4);
}

TEST_CASE("histogram: 10 processes x 10,000 observations, every bucket exact", "[histogram][multiprocess]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& h = seg.construct<procsafe::histogram>("h", std::vector{10.0, 20.0, 30.0}, 2);
    auto& start = seg.construct<start_barrier>("start");
    const auto pids = fork_children(10, [&](int) {
        if (!start.arrive_and_wait()) return 2;
        for (int k = 0; k < 10'000; ++k) h.observe(static_cast<double>(k % 40));  // 0..39: 11, 10, 10, 9 per 40
        return 0;
    });
    REQUIRE(start.release_when(10));
    REQUIRE(join_children(pids) == 10);
    const auto s = h.read();
    REQUIRE(s.counts == std::vector<std::uint64_t>{27'500, 25'000, 25'000, 22'500});
    REQUIRE(s.count == 100'000);
    REQUIRE(s.sum == 10.0 * 250.0 * (39.0 * 40.0 / 2.0));  // small integers: exact in a double
}

TEST_CASE("live_gauge: contributions of live processes add up; a SIGKILLed process's drops out by itself",
          "[live_gauge][multiprocess][crash]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& busy = seg.construct<procsafe::live_gauge<std::int64_t>>("busy", 8);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    busy.add(1);  // the test process itself
    const auto workers = fork_children(4, [&](int i) {
        busy.add(10 + i);
        busy.sub(5);
        holding.increment();
        (void)holding.wait_at_least_for(1000, 60s);  // held until killed (bounded, should the test fail first)
        return 0;
    });
    REQUIRE(holding.wait_at_least_for(4, 20s));
    REQUIRE(busy.value() == 1 + (10 + 11 + 12 + 13) - 4 * 5);
    REQUIRE(busy.live_processes() == 5);
    ::kill(workers[0], SIGKILL);
    ::kill(workers[2], SIGKILL);
    join_children({workers[0], workers[2]});
    REQUIRE(busy.value() == 1 + (11 - 5) + (13 - 5));  // the dead workers' contributions are gone
    REQUIRE(busy.live_processes() == 3);
    REQUIRE(busy.contribution() == 1);
    busy.set(100);
    REQUIRE(busy.value() == 100 + 6 + 8);
    // A new process takes a dead one's slot, zeroed.
    REQUIRE(join_children(fork_children(1, [&](int) {
                busy.add(1);
                return busy.value() == 100 + 6 + 8 + 1 ? 0 : 1;
            })) == 1);
    ::kill(workers[1], SIGKILL);
    ::kill(workers[3], SIGKILL);
    join_children({workers[1], workers[3]});
    REQUIRE(busy.value() == 100);
    // Read from outside too.
    const auto o = procsafe::segment_view::of(seg).objects();
    for (const auto& x : o)
        if (x.name == "busy") REQUIRE(std::get<std::int64_t>(x.values.at(0)) == 100);
}

TEST_CASE("live_gauge: a dead process whose pid is reused does not count as alive", "[live_gauge][multiprocess]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to choose the next pid (/proc/sys/kernel/ns_last_pid)");
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 4);
    const pid_t dead = fork_children(1, [&](int) {
        g.add(5);
        return 0;
    })[0];
    REQUIRE(join_children({dead}) == 1);
    REQUIRE(g.value() == 0);
    // Start times have the kernel's resolution (a clock tick, 10 ms): a pid
    // reused within the same tick could not be told apart (in real life the
    // pid space must wrap first). Let the tick pass.
    const long tick_ns = 1'000'000'000L / ::sysconf(_SC_CLK_TCK);
    const auto boot_ticks = [&] {
        timespec t{};
        ::clock_gettime(CLOCK_BOOTTIME, &t);
        return (t.tv_sec * 1'000'000'000L + t.tv_nsec) / tick_ns;
    };
    const long first = boot_ticks();
    const auto deadline = std::chrono::steady_clock::now() + 1s;
    while (boot_ticks() < first + 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    pid_t reused = -1;
    for (int attempt = 0; attempt < 20 && reused != dead; ++attempt) {
        std::ofstream("/proc/sys/kernel/ns_last_pid") << dead - 1;
        reused = fork_children(1, [&](int) {  // a process that never touches the gauge
            holding.increment();
            (void)holding.wait_at_least_for(1000, 60s);  // held until killed (bounded)
            return 0;
        })[0];
        if (reused != dead) {
            ::kill(reused, SIGKILL);
            join_children({reused});
            holding.decrement();
        }
    }
    if (reused != dead) PROCSAFE_SKIP("could not get pid " << dead << " again");
    REQUIRE(holding.wait_at_least_for(1, 20s));
    REQUIRE(g.value() == 0);  // pid alive again, but another process: its start time differs
    ::kill(reused, SIGKILL);
    join_children({reused});
}

TEST_CASE("live_gauge: more live processes than slots share an overflow slot, exact while they live",
          "[live_gauge][multiprocess]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 2);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    auto& release = seg.construct<procsafe::latch>("release", 1);
    const auto pids = fork_children(5, [&](int) {
        g.add(3);
        holding.increment();
        return release.wait_for(20s) ? 0 : 1;
    });
    REQUIRE(holding.wait_at_least_for(5, 20s));
    REQUIRE(g.value() == 15);
    release.count_down();
    REQUIRE(join_children(pids) == 5);
    REQUIRE(catch_error([&] { seg.construct<procsafe::live_gauge<int>>("bad", 0); }).code() == errc::invalid_argument);
}

TEST_CASE("live_gauge: two threads of a process making their first add at once share one slot",
          "[live_gauge][multiprocess][threads]") {
    constexpr int processes = 40;
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 128);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    auto& release = seg.construct<procsafe::latch>("release", 1);
    const auto pids = fork_children(processes, [&](int) {
        std::atomic<int> ready{0};
        std::atomic<bool> go{false};
        auto first_add = [&] {
            ready.fetch_add(1);
            while (!go.load()) {}  // both threads released at once: their first adds race
            g.add(1);
        };
        std::thread a(first_add), b(first_add);
        while (ready.load() < 2) {}
        go.store(true);
        a.join();
        b.join();
        g.set(0);  // this process holds nothing now
        holding.increment();
        return release.wait_for(30s) ? 0 : 1;
    });
    REQUIRE(holding.wait_at_least_for(processes, 60s));
    CHECK(g.live_processes() == processes);  // one slot each
    CHECK(g.value() == 0);
    release.count_down();
    REQUIRE(join_children(pids) == processes);
}

namespace {
/// Runs body as pid 1 of a new PID namespace with its own /proc (as
/// `unshare --pid --fork --mount-proc`). Returns its wait status; exit code 77:
/// no namespaces here.
int in_new_pid_namespace(const std::function<int()>& body) {
    const pid_t middle = fork_children(1, [&](int) {
        if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
            return 77;
        const pid_t init = fork_children(1, [&](int) {
            if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) return 77;
            return body();
        })[0];
        const int status = procsafe_test::wait_bounded(init, 60s);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 98;
    })[0];
    return procsafe_test::wait_bounded(middle, 90s);
}
}  // namespace

TEST_CASE("live_gauge: writers in two PID namespaces (a container sharing the segment) both count; the other cannot find it",
          "[live_gauge][multiprocess]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 4);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    auto& release = seg.construct<procsafe::latch>("release", 1);
    auto& refused = seg.construct<std::atomic<int>>("refused", -1);
    std::fflush(nullptr);
    const pid_t container = ::fork();
    if (container == 0) {
        const int status = in_new_pid_namespace([&] {
            g.add(5);  // a process that found the gauge before it moved into the namespace
            refused.store(catch_error([&] { seg.find<procsafe::live_gauge<std::int64_t>>("g"); }).code().value());
            holding.increment();
            return release.wait_for(30s) ? 0 : 1;
        });
        ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 98);
    }
    // Bounded: the container process counts "holding" up, or exits (77: no namespaces).
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    int status = -2;
    while (holding.value() < 1 && std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(container, &status, WNOHANG) == container) break;
        std::this_thread::yield();
    }
    if (status != -2 && WIFEXITED(status) && WEXITSTATUS(status) == 77) PROCSAFE_SKIP("no PID namespaces here (needs CAP_SYS_ADMIN)");
    REQUIRE(holding.value() == 1);
    const pid_t host = fork_children(1, [&](int) {
        g.add(7);
        holding.increment();
        return release.wait_for(30s) ? 0 : 1;
    })[0];
    REQUIRE(holding.wait_at_least_for(2, 30s));
    CHECK(g.value() == 12);
    CHECK(g.live_processes() == 2);
    CHECK(refused.load() == static_cast<int>(errc::unsupported));
    release.count_down();
    REQUIRE(join_children({host}) == 1);
    REQUIRE(procsafe_test::exited_ok(procsafe_test::wait_bounded(container, 60s)));
}

TEST_CASE("live_gauge: a slot in the middle of a claim by a process of another PID namespace is never taken over",
          "[live_gauge][multiprocess]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 2);
    // Forged, as a claimer of another namespace leaves slot 0 between its
    // compare-and-swap and its publication (SIGSTOPped there): the claiming
    // bit, a pid that means nothing here (none runs with it), its namespace.
    const pid_t gone = fork_children(1, [](int) { return 0; })[0];
    REQUIRE(join_children({gone}) == 1);
    auto* slot0 = reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<char*>(&g) + sizeof g);
    const std::uint64_t other_ns = std::uint64_t{0x7ffffff0u};
    const std::uint64_t claiming = 0x8000'0000u | static_cast<std::uint32_t>(gone) | other_ns << 32;
    slot0->store(claiming);
    const pid_t writer = fork_children(1, [&](int) {
        g.add(5);
        return 0;
    })[0];
    REQUIRE(join_children({writer}) == 1);
    CHECK(slot0->load() == claiming);  // left to its claimer: its pid cannot be judged here
}

TEST_CASE("histogram: reset() zeroes every row's buckets and sum", "[histogram]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& h = seg.construct<procsafe::histogram>("h", std::vector{1.0}, std::size_t{4});
    const auto kids = fork_children(4, [&](int) {
        for (int k = 0; k < 100; ++k) h.observe(k % 2 ? 0.5 : 2.0);
        return 0;
    });
    REQUIRE(join_children(kids) == 4);
    REQUIRE(h.read().count == 400);
    h.reset();
    const auto s = h.read();
    CHECK(s.count == 0);
    CHECK(s.sum == 0.0);
    CHECK(s.counts == std::vector<std::uint64_t>{0, 0});
    h.observe(0.25);
    CHECK(h.read().counts == std::vector<std::uint64_t>{1, 0});
}
