// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Forced interleavings: for every protocol of several steps in shared memory
// (object construction, barrier arrival and drop, slot takeover, lock
// recovery, segment creation and removal), a process is held at a test hook
// between two steps while another runs, so the dangerous interleaving happens
// on every run instead of once in 50,000. Each protocol also has one stress
// test without hooks. Label: race (ctest -L race --repeat until-fail:50).
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/pause.hpp"
#include "support/process.hpp"
#include "support/skip.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

using procsafe::errc;
using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::pause_board;
using namespace std::chrono_literals;

namespace {

using array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;

/// What a child saw, reported through shared memory.
struct outcome {
    std::atomic<std::int64_t> value{-1};
    std::atomic<int> code{-1};  // 0: no error; otherwise the procsafe::errc
    std::atomic<int> done{0};
    std::atomic<std::int64_t> address{0};
};

template <class F>
void report(outcome& out, F&& f) {
    try {
        f();
        out.code.store(0);
    } catch (const procsafe::error& e) {
        out.code.store(static_cast<int>(e.code_value()));
    }
    out.done.store(1);
}

/// A segment with a pause board and A's and B's outcomes.
struct arena {
    procsafe::segment seg = procsafe::segment::anonymous(1 << 20);
    pause_board& board = seg.construct<pause_board>("board");
    outcome& a_out = seg.construct<outcome>("a");
    outcome& b_out = seg.construct<outcome>("b");
};

/// Holds A at `a_point`, lets B run to one of B's points, then releases B;
/// once B has finished or has started waiting for A, releases A.
struct two_step {
    pause_board& board;
    int a_slot = -1;

    template <class A>
    pid_t hold_a(const char* a_point, A&& a) {
        a_slot = board.arm(a_point);
        const pid_t pid = fork_children(1, [&](int) {
            board.use();
            a();
            return 0;
        })[0];
        REQUIRE(board.wait_reached(a_slot));
        return pid;
    }
    template <class B>
    pid_t run_b(outcome& b_out, B&& b) {
        // B stops where it got hold of the block (old: "allocated"; now: "found").
        const int b1 = board.arm("object.allocated");
        const int b2 = board.arm("object.found");
        const int waiting = board.arm("object.waiting", -1, 0, pause_board::signal_only);
        const pid_t pid = fork_children(1, [&](int) {
            board.use();
            b();
            return 0;
        })[0];
        const int held = board.wait_any({b1, b2});
        REQUIRE(held >= 0);
        board.set_pid(waiting, pid);
        board.disarm(held == b1 ? b2 : b1);
        board.release(held);
        REQUIRE(pause_board::wait_for([&] { return b_out.done.load() == 1 || board.is_reached(waiting); }, 30s));
        board.release(a_slot);
        return pid;
    }
};

}  // namespace

TEST_CASE("race: find_or_construct of another type between a peer's allocation and construction: type_mismatch, block left alone",
          "[race][multiprocess]") {
    arena r;
    two_step t{r.board};
    const pid_t a = t.hold_a("object.allocated", [&] {
        report(r.a_out, [&] { r.a_out.value.store(r.seg.find_or_construct<procsafe::atomic_counter<int>>("x", 5).value()); });
    });
    const pid_t b = t.run_b(r.b_out, [&] {
        report(r.b_out, [&] { r.seg.find_or_construct<procsafe::mutex_counter<std::int64_t>>("x", 7); });
    });
    REQUIRE(join_children({a, b}) == 2);
    INFO("A got code " << r.a_out.code.load() << ", B got code " << r.b_out.code.load());
    REQUIRE(r.a_out.code.load() == 0);
    REQUIRE(r.a_out.value.load() == 5);
    REQUIRE(r.b_out.code.load() == static_cast<int>(errc::type_mismatch));
    REQUIRE(r.seg.find<procsafe::atomic_counter<int>>("x").value() == 5);
}

TEST_CASE("race: find_or_construct of a bigger array of the same type never writes past the block: it gets the existing array",
          "[race][multiprocess]") {
    arena r;
    two_step t{r.board};
    const pid_t a = t.hold_a("object.allocated", [&] {
        report(r.a_out, [&] { r.a_out.value.store(static_cast<std::int64_t>(r.seg.find_or_construct<array>("arr", 1).size())); });
    });
    // Neighbours allocated after the array's block: an overrun would zero them.
    for (int i = 0; i < 8; ++i) r.seg.construct<procsafe::atomic_counter<std::int64_t>>(procsafe_test::numbered("canary", i), 12345 + i);
    const pid_t b = t.run_b(r.b_out, [&] {
        report(r.b_out, [&] { r.b_out.value.store(static_cast<std::int64_t>(r.seg.find_or_construct<array>("arr", 64).size())); });
    });
    REQUIRE(join_children({a, b}) == 2);
    INFO("A got code " << r.a_out.code.load() << ", B got code " << r.b_out.code.load());
    for (int i = 0; i < 8; ++i)
        REQUIRE(r.seg.find<procsafe::atomic_counter<std::int64_t>>(procsafe_test::numbered("canary", i)).value() == 12345 + i);
    REQUIRE(r.a_out.code.load() == 0);
    REQUIRE(r.b_out.code.load() == 0);
    REQUIRE(r.a_out.value.load() == 1);
    REQUIRE(r.b_out.value.load() == 1);  // documented: the same type with other arguments finds the existing object
    REQUIRE(r.seg.find<array>("arr").size() == 1);
}

TEST_CASE("race: construct and find_or_construct of the same name: construct's arguments win, both get "
          "one object",
          "[race][multiprocess]") {
    arena r;
    two_step t{r.board};
    const pid_t a = t.hold_a("object.allocated", [&] {
        report(r.a_out, [&] {
            auto& c = r.seg.construct<procsafe::atomic_counter<int>>("y", 5);
            r.a_out.value.store(c.value());
            r.a_out.address.store(reinterpret_cast<std::intptr_t>(&c));
        });
    });
    const pid_t b = t.run_b(r.b_out, [&] {
        report(r.b_out, [&] {
            auto& c = r.seg.find_or_construct<procsafe::atomic_counter<int>>("y", 7);
            r.b_out.value.store(c.value());
            r.b_out.address.store(reinterpret_cast<std::intptr_t>(&c));
        });
    });
    REQUIRE(join_children({a, b}) == 2);
    REQUIRE(r.a_out.code.load() == 0);
    REQUIRE(r.b_out.code.load() == 0);
    REQUIRE(r.a_out.value.load() == 5);
    REQUIRE(r.b_out.value.load() == 5);
    REQUIRE(r.a_out.address.load() == r.b_out.address.load());
}

TEST_CASE("race: a peer saw the object constructing, and its constructor then finished and exited: the peer gets "
          "the object, never owner_died",
          "[race][multiprocess]") {
    arena r;
    // A: held after claiming the block, before running the constructor.
    const int a_slot = r.board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        r.board.use();
        report(r.a_out, [&] { r.a_out.value.store(r.seg.find_or_construct<procsafe::atomic_counter<int>>("z", 5).value()); });
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(a_slot));
    // B: held once it has copied the block's header ("constructing, by A").
    const int b_slot = r.board.arm("object.found");
    const pid_t b = fork_children(1, [&](int) {
        r.board.use();
        report(r.b_out, [&] { r.b_out.value.store(r.seg.find<procsafe::atomic_counter<int>>("z").value()); });
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(b_slot));
    // A constructs, publishes, exits and is reaped: gone, and its object ready.
    r.board.release(a_slot);
    REQUIRE(join_children({a}) == 1);
    REQUIRE(r.a_out.code.load() == 0);
    r.board.release(b_slot);
    REQUIRE(join_children({b}) == 1);
    INFO("B got code " << r.b_out.code.load());
    REQUIRE(r.b_out.code.load() == 0);
    REQUIRE(r.b_out.value.load() == 5);
}

TEST_CASE("race: a process killed while the storage of the object it claimed is zeroed: that name alone is "
          "owner_died, the directory still takes new objects",
          "[race][crash][multiprocess]") {
    arena r;
    // A live_gauge of 4,096 slots: half a MiB to zero, the longest such window.
    const int held = r.board.arm("object.zeroing");
    const pid_t a = fork_children(1, [&](int) {
        r.board.use();
        r.seg.construct<procsafe::live_gauge<long>>("big", std::size_t{4096});
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(held));
    ::kill(a, SIGKILL);
    REQUIRE(join_children({a}) == 0);
    // A held the directory lock: recovered, and the directory is not poisoned.
    CHECK(r.seg.construct<procsafe::atomic_counter<long>>("after", 5).value() == 5);
    CHECK(r.seg.find_or_construct<procsafe::live_gauge<long>>("big2", std::size_t{128}).value() == 0);
    int code = -1;
    try {
        (void)r.seg.find<procsafe::live_gauge<long>>("big");
    } catch (const procsafe::error& e) {
        code = static_cast<int>(e.code_value());
    }
    CHECK(code == static_cast<int>(errc::owner_died));
}

TEST_CASE("race: the export switch of an object whose constructor still runs is refused (the block is freed if "
          "it throws)",
          "[race][multiprocess]") {
    arena r;
    const int held = r.board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        r.board.use();
        report(r.a_out, [&] { r.seg.construct<procsafe::atomic_counter<int>>("t", 1); });
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(held));
    int code = 0;
    try {
        (void)r.seg.export_switch_of("t");
    } catch (const procsafe::error& e) {
        code = static_cast<int>(e.code_value());
    }
    r.board.release(held);
    REQUIRE(join_children({a}) == 1);
    CHECK(code == static_cast<int>(errc::object_not_found));
    CHECK(r.seg.export_switch_of("t").exported());  // constructed now: its switch exists
}

namespace {
struct maybe_throws {
    explicit maybe_throws(bool fail) {
        if (fail) throw std::runtime_error("constructor refused");
    }
    std::int64_t v = 42;
};
}  // namespace

TEST_CASE("race: a constructor throws while a peer waits: the peer gets object_not_found, never an object reusing the block",
          "[race][multiprocess]") {
    arena r;
    const int a_slot = r.board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        r.board.use();
        try {
            r.seg.construct<maybe_throws>("t", true);
        } catch (const std::runtime_error&) {
            r.a_out.code.store(1);
        }
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(a_slot));
    const int b_slot = r.board.arm("object.waiting");
    const pid_t b = fork_children(1, [&](int) {
        r.board.use();
        report(r.b_out, [&] { r.b_out.value.store(r.seg.find<maybe_throws>("t").v); });
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(b_slot));  // B holds a pointer to the block and is about to wait on it
    r.board.release(a_slot);                // A's constructor throws; the block is freed
    REQUIRE(join_children({a}) == 1);
    REQUIRE(r.a_out.code.load() == 1);
    auto& reuse = r.seg.construct<maybe_throws>("t2", false);  // same size: best fit reuses the freed block
    REQUIRE(reuse.v == 42);
    r.board.release(b_slot);
    REQUIRE(join_children({b}) == 1);
    INFO("B got code " << r.b_out.code.load() << " value " << r.b_out.value.load());
    REQUIRE(r.b_out.code.load() == static_cast<int>(errc::object_not_found));
    REQUIRE_FALSE(r.seg.contains("t"));
}

TEST_CASE("race: natural find_or_construct races with CPU hogs: no block is ever constructed by anyone "
          "but its allocator",
          "[race][multiprocess][stress]") {
    constexpr int names = 50'000;
    auto seg = procsafe::segment::anonymous(96 << 20);
    struct shared_t {
        procsafe_test::start_barrier start;
        std::atomic<int> stop{0};
        std::atomic<int> mismatches[2]{};
        std::atomic<int> errors{0};
    };
    auto& sh = seg.construct<shared_t>("shared");
    // Two CPU hogs keep both CPUs busy, so the racers are preempted at random points.
    const auto hogs = fork_children(2, [&](int) {
        while (sh.stop.load(std::memory_order_relaxed) == 0) {}
        return 0;
    });
    const auto racers = fork_children(2, [&](int me) {
        if (!sh.start.arrive_and_wait()) return 2;
        for (int k = 0; k < names; ++k) {
            const std::string name = procsafe_test::numbered("n", k);
            try {
                if (k % 2 == 0) {
                    // Same type, different sizes: both get the array that was built, whole.
                    auto& a = seg.find_or_construct<array>(name, me == 0 ? 1 : 4);
                    a[0].increment();
                } else if (me == 0) {
                    seg.find_or_construct<procsafe::atomic_counter<std::int64_t>>(name, 1);
                } else {
                    seg.find_or_construct<procsafe::mutex_counter<std::int64_t>>(name, 2);
                }
            } catch (const procsafe::error& e) {
                if (e.code_value() == errc::type_mismatch) sh.mismatches[me].fetch_add(1);
                else sh.errors.fetch_add(1);
            }
        }
        return 0;
    });
    REQUIRE(sh.start.release_when(2));
    const int finished = join_children(racers, 300s);
    sh.stop.store(1);
    join_children(hogs);
    REQUIRE(finished == 2);
    REQUIRE(sh.errors.load() == 0);
    // Every odd name went to exactly one type; the other racer was refused.
    REQUIRE(sh.mismatches[0].load() + sh.mismatches[1].load() == names / 2);
    int atomics = 0, mutexes = 0;
    for (int k = 0; k < names; ++k) {
        const std::string name = procsafe_test::numbered("n", k);
        if (k % 2 == 0) {
            auto& a = seg.find<array>(name);
            REQUIRE((a.size() == 1 || a.size() == 4));
            REQUIRE(a[0].value() == 2);
            for (std::size_t i = 1; i < a.size(); ++i) REQUIRE(a[i].value() == 0);
        } else {
            std::int64_t atomic_value = -1;
            errc code{};
            try {
                atomic_value = seg.find<procsafe::atomic_counter<std::int64_t>>(name).value();
            } catch (const procsafe::error& e) {
                code = e.code_value();
            }
            if (atomic_value == -1) {
                REQUIRE(code == errc::type_mismatch);
                REQUIRE(seg.find<procsafe::mutex_counter<std::int64_t>>(name).value() == 2);
                ++mutexes;
            } else {
                REQUIRE(atomic_value == 1);
                ++atomics;
            }
        }
    }
    REQUIRE(atomics == sh.mismatches[1].load());
    REQUIRE(mutexes == sh.mismatches[0].load());
}

TEST_CASE("race: arrive_and_drop while another arrival is between its steps: phase 0 completes only "
          "with all three arrivals",
          "[race][multiprocess][barrier]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& board = seg.construct<pause_board>("board");
    auto& b = seg.construct<procsafe::barrier>("b", 3);
    struct progress_t {
        std::atomic<int> arrived2{0};
        std::atomic<int> phases_waited[2]{};
    };
    auto& progress = seg.construct<progress_t>("progress");
    // P1 arrives and is held between reading the barrier and counting itself.
    const int held = board.arm("barrier.arrive");
    const pid_t p1 = fork_children(1, [&](int) {
        board.use();
        for (int phase = 0; phase < 2; ++phase) {
            if (!b.wait_for(b.arrive(), 20s)) return 1;
            progress.phases_waited[0].fetch_add(1);
        }
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    // P3 arrives and drops in phase 0; P2 arrives.
    REQUIRE(join_children(fork_children(1, [&](int) {
                b.arrive_and_drop();
                return 0;
            })) == 1);
    const pid_t p2 = fork_children(1, [&](int) {
        for (int phase = 0; phase < 2; ++phase) {
            const auto token = b.arrive();
            if (phase == 0) progress.arrived2.store(1);
            if (!b.wait_for(token, 20s)) return 1;
            progress.phases_waited[1].fetch_add(1);
        }
        return 0;
    })[0];
    REQUIRE(pause_board::wait_for([&] { return progress.arrived2.load() == 1; }, 20s));
    // Two of the three arrivals of phase 0 are in; P1's is not: the phase must not complete.
    INFO("phase after P2 and P3 arrived, P1 held: " << b.phase());
    REQUIRE(b.phase() == 0);
    board.release(held);
    REQUIRE(join_children({p1, p2}) == 2);
    REQUIRE(progress.phases_waited[0].load() == 2);
    REQUIRE(progress.phases_waited[1].load() == 2);
    REQUIRE(b.phase() == 2);  // phase 1 expected the two who stayed
}

TEST_CASE("race: four processes drop while a fifth arrives and waits, 300 trials: each phase completes "
          "exactly once",
          "[race][multiprocess][barrier][stress]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    struct trial_t {
        procsafe_test::start_barrier start;
        std::atomic<int> errors{0};
    };
    for (int trial = 0; trial < 300; ++trial) {
        INFO("trial " << trial);
        auto& b = seg.construct<procsafe::barrier>(procsafe_test::numbered("b", trial), 5);
        auto& t = seg.construct<trial_t>(procsafe_test::numbered("t", trial));
        const auto pids = fork_children(5, [&](int i) {
            if (!t.start.arrive_and_wait()) return 2;
            try {
                if (i < 4) {
                    b.arrive_and_drop();
                    return 0;
                }
                if (!b.wait_for(b.arrive(), 20s)) return 3;  // phase 0: all five
                if (!b.wait_for(b.arrive(), 20s)) return 4;  // phase 1: the fifth alone
            } catch (const procsafe::error&) {
                t.errors.fetch_add(1);
                return 5;
            }
            return 0;
        });
        REQUIRE(t.start.release_when(5));
        REQUIRE(join_children(pids, 30s) == 5);
        REQUIRE(t.errors.load() == 0);
        REQUIRE(b.phase() == 2);
    }
}

TEST_CASE("race: a segment removed and recreated while its old owner removes it: the new one survives",
          "[race][multiprocess][segment]") {
    const auto name = procsafe_test::unique_name("rmrace");
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& ready = control.construct<std::atomic<int>>("ready", 0);
    const int held = board.arm("segment.remove.checked");
    const pid_t owner = fork_children(1, [&](int) {
        board.use();
        {
            auto seg = procsafe::segment::create(name, 4096);
            ready.store(1);
        }  // the owner's destructor removes "its" segment
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));  // checked the name is still its own, not yet removed
    REQUIRE(ready.load() == 1);
    // Meanwhile somebody removes the name (to create a segment of their own
    // under it): they wait for the old owner's check-and-unlink to finish,
    // instead of removing the name from under it.
    const int waiting = board.arm("segment.remove.waiting", 0, 0, pause_board::signal_only);
    const pid_t remover = fork_children(1, [&](int) {
        board.use();
        return procsafe::segment::remove(name) ? 10 : 11;  // 11: the old owner had removed it
    })[0];
    const bool remover_waited = board.wait_any({waiting}, 10s) == waiting;
    // The old owner, held between its check and its unlink, is never without
    // its name: a worker opening it meanwhile finds it.
    REQUIRE_NOTHROW(procsafe::segment::open(name, 100ms));
    board.release(held);
    REQUIRE(join_children({owner}) == 1);
    const int status = procsafe_test::wait_bounded(remover, 20s);
    INFO("remover exit status " << status);
    REQUIRE(remover_waited);
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 11));
    auto theirs = procsafe::segment::create(name, 4096);
    theirs.construct<procsafe::atomic_counter<int>>("mine", 7);
    struct stat st {};
    REQUIRE(::stat(("/dev/shm/" + name).c_str(), &st) == 0);
    REQUIRE(procsafe::segment::open(name).find<procsafe::atomic_counter<int>>("mine").value() == 7);
}

TEST_CASE("race: procsafe's removers take turns: one held between its check and its unlink makes another "
          "wait, within its timeout",
          "[race][multiprocess][segment]") {
    const auto name = procsafe_test::unique_name("rmturn");
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    const int held = board.arm("segment.remove.checked");
    const pid_t owner = fork_children(1, [&](int) {
        board.use();
        { auto seg = procsafe::segment::create(name, 4096); }
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    // A remover whose timeout ends while the other holds the lock: timed_out,
    // naming the segment; nothing removed.
    const auto e = procsafe_test::catch_error([&] { procsafe::segment::remove(name, 200ms); });
    board.release(held);
    REQUIRE(join_children({owner}) == 1);
    INFO(e.what());
    REQUIRE(e.code() == errc::timed_out);
    REQUIRE(std::string(e.what()).find(name) != std::string::npos);
    REQUIRE_FALSE(procsafe::segment::remove(name));  // the owner removed its own
}

TEST_CASE("race: a sharded slot taken over at the moment its dead owner's thread id is reused: no "
          "update is lost",
          "[race][multiprocess][sharded]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to choose the next pid (/proc/sys/kernel/ns_last_pid)");
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& board = seg.construct<pause_board>("board");
    constexpr int per_writer = 5'000'000;  // long enough for the two writers to overlap
    auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c", 1);  // one slot
    auto& go = seg.construct<procsafe_test::start_barrier>("go");
    // 1. A writer owns the only slot, and dies.
    const pid_t dead = fork_children(1, [&](int) {
        c.increment();
        return 0;
    })[0];
    REQUIRE(join_children({dead}) == 1);
    // 2. C sees the owner gone and is held before its takeover compare-and-swap.
    const int held = board.arm("sharded.takeover");
    const pid_t taker = fork_children(1, [&](int) {
        board.use();
        c.increment();  // takes over the slot
        if (!go.arrive_and_wait()) return 2;
        for (int k = 0; k < per_writer; ++k) c.increment();
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    // 3. A new process gets the dead owner's id (the kernel hands out ns_last_pid + 1).
    pid_t reused = -1;
    for (int attempt = 0; attempt < 20 && reused != dead; ++attempt) {
        std::ofstream("/proc/sys/kernel/ns_last_pid") << dead - 1;
        reused = fork_children(1, [&](int) {
            if (::getpid() != dead) return 9;
            c.increment();  // its first write: is the dead owner's slot "its own"?
            if (!go.arrive_and_wait()) return 2;
            for (int k = 0; k < per_writer; ++k) c.increment();
            return 0;
        })[0];
        if (reused != dead) join_children({reused});
    }
    if (reused != dead) {
        board.release(held);
        join_children({taker});
        PROCSAFE_SKIP("could not get pid " << dead << " again");
    }
    board.release(held);
    REQUIRE(go.release_when(2));
    REQUIRE(join_children({taker, reused}) == 2);
    INFO("dead pid " << dead << ", reused " << reused << ", owned slots " << c.owned_slots());
    // Two writers that both believed the slot theirs (plain load + store) lose updates.
    REQUIRE(c.sum() == 1 + 1 + 1 + 2 * per_writer);
}

TEST_CASE("race: a locker killed while recovering a dead owner's mutex: the next recovers it, the value is the last committed",
          "[race][multiprocess][crash]") {
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& board = seg.construct<pause_board>("board");
    auto& c = seg.construct<procsafe::mutex_counter<std::int64_t>>("c", 10);
    auto& holding = seg.construct<std::atomic<int>>("holding", 0);
    // The owner dies holding the lock, its update uncommitted.
    const pid_t owner = fork_children(1, [&](int) {
        c.increment();  // 11, committed
        c.with_lock([&](std::int64_t& v) {
            v = 999;
            holding.store(1);
            pause_board::wait_for([] { return false; }, 60s);
        });
        return 3;
    })[0];
    REQUIRE(pause_board::wait_for([&] { return holding.load() == 1; }, 20s));
    ::kill(owner, SIGKILL);
    join_children({owner});
    // The first locker gets EOWNERDEAD and is killed before it makes the mutex consistent.
    const int held = board.arm("mutex.recovering");
    const pid_t recoverer = fork_children(1, [&](int) {
        board.use();
        c.increment();
        return 3;
    })[0];
    REQUIRE(board.wait_reached(held));
    ::kill(recoverer, SIGKILL);
    join_children({recoverer});
    REQUIRE(c.increment() == 12);
    REQUIRE(c.recoveries() >= 1);
    REQUIRE(c.value() == 12);
}

TEST_CASE("race: creation held between its steps: open waits within its bound, then works; a creator killed there: refused in bound",
          "[race][multiprocess][segment]") {
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    for (const char* point : {"segment.created", "segment.initializing"}) {
        INFO(point);
        const auto name = procsafe_test::unique_name("creating");
        const int held = board.arm(point);
        const pid_t creator = fork_children(1, [&](int) {
            board.use();
            auto seg = procsafe::segment::create(name, 4096);
            seg.disown();
            seg.construct<procsafe::atomic_counter<int>>("n", 1);
            return 0;
        })[0];
        REQUIRE(board.wait_reached(held));
        auto start = std::chrono::steady_clock::now();
        auto e = procsafe_test::catch_error([&] { (void)procsafe::segment::open(name, 200ms); });
        REQUIRE(e.code_value() == errc::timed_out);
        REQUIRE(e.segment_name() == name);
        REQUIRE(std::chrono::steady_clock::now() - start < 2s);
        board.release(held);
        REQUIRE(join_children({creator}) == 1);
        REQUIRE(procsafe::segment::open(name).find<procsafe::atomic_counter<int>>("n").value() == 1);
        REQUIRE(procsafe::segment::remove(name));

        // Killed at the same point: refused within the bound, every time.
        const int again = board.arm(point);
        const pid_t doomed = fork_children(1, [&](int) {
            board.use();
            procsafe::segment::create(name, 4096).disown();
            return 0;
        })[0];
        REQUIRE(board.wait_reached(again));
        ::kill(doomed, SIGKILL);
        join_children({doomed});
        start = std::chrono::steady_clock::now();
        e = procsafe_test::catch_error([&] { (void)procsafe::segment::open_or_create(name, 4096, 0600, 200ms); });
        REQUIRE(e.code_value() == errc::timed_out);
        REQUIRE(std::chrono::steady_clock::now() - start < 2s);
        procsafe::segment::remove(name);
    }
}

TEST_CASE("race: open_or_create by 4 processes at once, 200 rounds: exactly one owner, everyone attached",
          "[race][multiprocess][segment][stress]") {
    auto control = procsafe::segment::anonymous(256 * 1024);
    struct round_t {
        procsafe_test::start_barrier start;
        std::atomic<int> owners{0};
        std::atomic<int> failed{0};
    };
    for (int round = 0; round < 200; ++round) {
        const auto name = procsafe_test::unique_name("ooc");
        auto& r = control.construct<round_t>(procsafe_test::numbered("r", round));
        const auto pids = fork_children(4, [&](int) {
            if (!r.start.arrive_and_wait()) return 2;
            try {
                auto seg = procsafe::segment::open_or_create(name, 4096);
                if (seg.is_owner()) {
                    r.owners.fetch_add(1);
                    seg.disown();
                }
                seg.find_or_construct<procsafe::atomic_counter<int>>("n").increment();
            } catch (const procsafe::error& e) {
                std::fprintf(stderr, "%s\n", e.what());
                r.failed.fetch_add(1);
            }
            return 0;
        });
        REQUIRE(r.start.release_when(4));
        REQUIRE(join_children(pids) == 4);
        REQUIRE(r.failed.load() == 0);
        REQUIRE(r.owners.load() == 1);
        REQUIRE(procsafe::segment::open(name).find<procsafe::atomic_counter<int>>("n").value() == 4);
        REQUIRE(procsafe::segment::remove(name));
    }
}

TEST_CASE("race: the directory lock held by a stopped process: find is refused with timed_out within the "
          "segment's timeout",
          "[race][multiprocess][segment]") {
    const auto name = procsafe_test::unique_name("dirstop");
    auto seg = procsafe::segment::create(name, 256 * 1024);
    seg.construct<procsafe::atomic_counter<int>>("n", 1);
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    const int held = board.arm("directory.locked");
    const pid_t holder = fork_children(1, [&](int) {
        board.use();
        auto mine = procsafe::segment::open(name);
        mine.construct<procsafe::atomic_counter<int>>("other");
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    ::kill(holder, SIGSTOP);
    // The find runs in a child with a bound, so a hang fails the test instead of hanging it.
    auto& out = control.construct<outcome>("out");
    const pid_t finder = fork_children(1, [&](int) {
        auto peer = procsafe::segment::open(name);
        peer.set_timeout(300ms);
        const auto start = std::chrono::steady_clock::now();
        report(out, [&] { peer.find<procsafe::atomic_counter<int>>("n"); });
        out.value.store(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
        return 0;
    })[0];
    const int status = procsafe_test::wait_bounded(finder, 10s);
    ::kill(holder, SIGCONT);
    board.release(held);
    join_children({holder});
    REQUIRE(procsafe_test::exited_ok(status));
    REQUIRE(out.code.load() == static_cast<int>(errc::timed_out));
    REQUIRE(out.value.load() < 2000);
}

TEST_CASE("race: a live_gauge slot taken over at the moment its dead owner's pid is reused: both live "
          "processes keep their own",
          "[race][multiprocess][live_gauge]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root for a PID namespace and ns_last_pid");
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& board = seg.construct<pause_board>("board");
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 2);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    auto& release = seg.construct<procsafe::latch>("release", 1);
    auto& seen = seg.construct<std::atomic<std::int64_t>>("seen", -1);
    auto& live = seg.construct<std::atomic<std::int64_t>>("live", -1);
    // In a PID namespace of its own (with its /proc), where the test chooses pids.
    std::fflush(nullptr);
    const pid_t middle = fork_children(1, [&](int) {
        if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
            return 77;
        const pid_t init = fork_children(1, [&](int) {
            if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) return 77;
            // 1. D owns slot 0 and dies.
            const pid_t dead = fork_children(1, [&](int) {
                g.add(1);
                return 0;
            })[0];
            if (join_children({dead}) != 1) return 10;
            // Start times have a clock tick's resolution: let two pass, so that
            // the pid reused below names another process (bounded spin).
            const long tick_ns = 1'000'000'000L / ::sysconf(_SC_CLK_TCK);
            timespec t0{}, t{};
            ::clock_gettime(CLOCK_BOOTTIME, &t0);
            do ::clock_gettime(CLOCK_BOOTTIME, &t);
            while ((t.tv_sec - t0.tv_sec) * 1'000'000'000L + (t.tv_nsec - t0.tv_nsec) < 3 * tick_ns);
            // 2. C judges D's slot free to take, and is held before taking it.
            const int held = board.arm("live_gauge.takeover");
            const pid_t c = fork_children(1, [&](int) {
                board.use();
                g.add(5);
                holding.increment();
                return release.wait_for(30s) ? 0 : 1;
            })[0];
            if (!board.wait_reached(held)) return 11;
            // 3. N gets D's pid again, and takes the slot first.
            std::ofstream("/proc/sys/kernel/ns_last_pid") << dead - 1;
            const pid_t n = fork_children(1, [&](int) {
                g.add(7);
                holding.increment();
                return release.wait_for(30s) ? 0 : 1;
            })[0];
            if (n != dead) return 78;
            if (!holding.wait_at_least_for(1, 30s)) return 12;
            // 4. C goes on: its takeover must fail, N's slot is N's.
            board.release(held);
            if (!holding.wait_at_least_for(2, 30s)) return 13;
            seen.store(g.value());
            live.store(static_cast<std::int64_t>(g.live_processes()));
            release.count_down();
            return join_children({c, n}) == 2 ? 0 : 14;
        })[0];
        const int status = procsafe_test::wait_bounded(init, 60s);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 98;
    })[0];
    const int status = procsafe_test::wait_bounded(middle, 90s);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) PROCSAFE_SKIP("no PID namespaces here (needs CAP_SYS_ADMIN)");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 78) PROCSAFE_SKIP("could not get the dead pid again");
    INFO("exit status " << status);
    REQUIRE(procsafe_test::exited_ok(status));
    CHECK(live.load() == 2);
    REQUIRE(seen.load() == 12);  // N's 7 and C's 5: neither zeroed by the other's claim
}

namespace {
/// A segment whose creator was SIGKILLed while it held it: what a crashed
/// server leaves behind.
void leave_orphan(const std::string& name, int value) {
    const pid_t creator = fork_children(1, [&](int) {
        auto seg = procsafe::segment::create(name, 64 * 1024);
        seg.construct<procsafe::atomic_counter<int>>("n", value);
        ::raise(SIGKILL);
        return 1;
    })[0];
    procsafe_test::wait_bounded(creator, 20s);
}
}  // namespace

TEST_CASE("create(replace_orphan): a segment whose creator was killed is replaced; a live creator's, a foreign "
          "object's never",
          "[race][multiprocess][segment]") {
    const auto name = procsafe_test::unique_name("orphan");
    leave_orphan(name, 7);
    const auto e = procsafe_test::catch_error([&] { (void)procsafe::segment::create(name, 64 * 1024); });
    REQUIRE(e.code() == errc::segment_exists);  // what a restart met before
    {
        auto seg = procsafe::segment::create(name, 64 * 1024, 0600, procsafe::create_mode::replace_orphan);
        REQUIRE(seg.is_owner());
        REQUIRE(seg.find_or_construct<procsafe::atomic_counter<int>>("n").value() == 0);  // a new segment
        // Its creator (this process) runs: never replaced.
        const auto live = procsafe_test::catch_error(
            [&] { (void)procsafe::segment::create(name, 64 * 1024, 0600, procsafe::create_mode::replace_orphan); });
        INFO(live.what());
        REQUIRE(live.code() == errc::segment_exists);
        REQUIRE(std::string(live.what()).find("still runs") != std::string::npos);
        REQUIRE_FALSE(seg.is_stale());
    }
    // Not procsafe's: never removed.
    const auto foreign = procsafe_test::unique_name("foreign");
    {
        const int fd = ::open(("/dev/shm/" + foreign).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, "not a procsafe segment, some bytes", 34) == 34);
        ::close(fd);
    }
    const auto f = procsafe_test::catch_error(
        [&] { (void)procsafe::segment::create(foreign, 64 * 1024, 0600, procsafe::create_mode::replace_orphan); });
    CHECK(f.code() == errc::bad_magic);
    struct stat st {};
    CHECK(::stat(("/dev/shm/" + foreign).c_str(), &st) == 0);
    ::unlink(("/dev/shm/" + foreign).c_str());
}

TEST_CASE("create(replace_orphan) by two restarting processes at once: one replaces the orphan, the other finds "
          "the new segment's creator alive",
          "[race][multiprocess][segment]") {
    const auto name = procsafe_test::unique_name("restart");
    leave_orphan(name, 7);
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& results = control.construct<std::atomic<int>>("results", 0);  // bit 0: created; bit 1: segment_exists
    auto& release = control.construct<procsafe::latch>("release", 1);
    auto restart = [&](int) {
        board.use();
        try {
            auto seg = procsafe::segment::create(name, 64 * 1024, 0600, procsafe::create_mode::replace_orphan);
            results.fetch_or(1);
            return release.wait_for(30s) ? 0 : 2;  // holds it, as a server would
        } catch (const procsafe::error& e) {
            if (e.code() != errc::segment_exists) return 3;
            results.fetch_or(2);
        }
        return 0;
    };
    // A judged the segment an orphan and is held before removing it (under the lock).
    const int held = board.arm("segment.replace.judged");
    const pid_t a = fork_children(1, restart)[0];
    REQUIRE(board.wait_reached(held));
    // B comes meanwhile: it waits for A's removal and creation, and then
    // finds A's segment, whose creator runs.
    const int waiting = board.arm("segment.remove.waiting", 0, 0, pause_board::signal_only);
    const pid_t b = fork_children(1, restart)[0];
    REQUIRE(board.wait_any({waiting}, 20s) == waiting);
    board.release(held);
    REQUIRE(procsafe_test::exited_ok(procsafe_test::wait_bounded(b, 30s)));
    REQUIRE(results.load() == 3);  // one created, one refused
    release.count_down();
    REQUIRE(join_children({a}) == 1);
    REQUIRE_FALSE(procsafe::segment::remove(name));  // A's owner removed its own
}

TEST_CASE("race: a child forked while another thread holds the removal lock does not keep it", "[race][multiprocess][segment]") {
    const auto name = procsafe_test::unique_name("lockfork");
    const auto other = procsafe_test::unique_name("lockother");
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& release = control.construct<procsafe::latch>("release", 1);
    auto& forked = control.construct<std::atomic<int>>("forked", 0);
    const int held = board.arm("segment.remove.checked");
    const pid_t p = fork_children(1, [&](int) {
        board.use();
        std::thread remover([&] { auto seg = procsafe::segment::create(name, 4096); });  // its destructor holds the lock
        if (!board.wait_reached(held)) return 2;
        const pid_t child = fork_children(1, [&](int) { return release.wait_for(30s) ? 0 : 1; })[0];  // never execs
        forked.store(child);
        board.release(held);
        remover.join();
        return join_children({child}, 60s) == 1 ? 0 : 3;
    })[0];
    REQUIRE(board.wait_reached(held));
    REQUIRE(board.wait_for([&] { return forked.load() != 0; }, 30s));
    { auto seg = procsafe::segment::create(other, 4096); seg.disown(); }
    // The remover's thread is done; its process's child lives on, and must not hold the lock.
    REQUIRE(board.wait_for([&] { struct stat st {}; return ::stat(("/dev/shm/" + name).c_str(), &st) != 0; }, 30s));
    std::string failure;
    bool removed = false;
    try {
        removed = procsafe::segment::remove(other, 2s);
    } catch (const procsafe::error& e) {
        failure = e.what();
    }
    release.count_down();
    REQUIRE(join_children({p}) == 1);
    INFO(failure);
    REQUIRE(failure.empty());
    REQUIRE(removed);
}

TEST_CASE("race: family::remove() between a peer's labels() finding the child and showing it: the child is shown, "
          "and what the peer counts is exported",
          "[race][multiprocess][family]") {
    arena r;
    procsafe::family<procsafe::atomic_counter<std::int64_t>> jobs(r.seg, "jobs", {"queue"});
    jobs.labels({"a"}) += 3;
    const int found = r.board.arm("family.labels.found");
    const pid_t a = fork_children(1, [&](int) {
        r.board.use();
        report(r.a_out, [&] { jobs.labels({"a"}) += 1; });
        return 0;
    })[0];
    REQUIRE(r.board.wait_reached(found));  // A found the child, has not set its flag yet
    REQUIRE(jobs.remove({"a"}));  // B removes it meanwhile
    REQUIRE_FALSE(r.seg.exported("jobs{queue=\"a\"}"));
    r.board.release(found);
    REQUIRE(join_children({a}) == 1);
    REQUIRE(r.a_out.code.load() == 0);
    // A's labels() came last: shown, with every count (B's remove() hides, it does not reset).
    REQUIRE(r.seg.exported("jobs{queue=\"a\"}"));
    procsafe::prometheus_exposition t;
    t.add(procsafe::segment_view::of(r.seg));
    INFO(t.str());
    REQUIRE(t.str().find("jobs_total{segment=\"(anonymous)\",queue=\"a\"} 4\n") != std::string::npos);
}
