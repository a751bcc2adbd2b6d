// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Adversarial tests: each one broke a guarantee the library states, with a
// deterministic reproduction (a forced interleaving through the test hooks,
// a tampered segment, or a type the API accepts), and each failed before its
// fix. Tag: [adversary].
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/pause.hpp"
#include "support/process.hpp"
#include "support/shm_files.hpp"
#include "support/skip.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using procsafe::errc;
using procsafe_test::catch_error;
using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::pause_board;
using procsafe_test::tamper;
using procsafe_test::unique_name;
using namespace std::chrono_literals;

namespace {

/// What a child saw, reported through shared memory.
struct outcome {
    std::atomic<int> code{-1};  // 0: no error; otherwise the procsafe::errc
    std::atomic<int> named{0};  // the error named the segment
    std::atomic<long> took_ms{-1};
    std::atomic<int> done{0};
};

/// In a child that may crash: the default action, not Catch's handler (inherited through fork).
inline void default_crash_signals() {
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
}

template <class F>
void report(outcome& out, const std::string& segment, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    try {
        f();
        out.code.store(0);
    } catch (const procsafe::error& e) {
        out.code.store(static_cast<int>(e.code_value()));
        out.named.store(e.segment_name() == segment ? 1 : 0);
    }
    out.took_ms.store(static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count()));
    out.done.store(1);
}

bool file_exists(const std::string& name) {
    struct stat st {};
    return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------
// 4. The directory lock on a corrupted lock word.

TEST_CASE("adversary: a directory lock with its PI bit flipped and an owner that never existed: an error, not a glibc abort",
          "[adversary][hostile]") {
    const auto name = unique_name("advpi");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    seg.construct<procsafe::atomic_counter<int>>("n", 1);
    tamper(name, [](procsafe::detail::segment_header& h) {
        auto* m = reinterpret_cast<pthread_mutex_t*>(&h.directory);
        m->__data.__kind |= 32;          // glibc's PTHREAD_MUTEX_PRIO_INHERIT_NP: one bit
        m->__data.__lock = 0x3ffffff0;   // a thread id nobody has
    });
    auto control = procsafe::segment::anonymous(4096);
    auto& out = control.construct<outcome>("out");
    const pid_t pid = fork_children(1, [&](int) {
        default_crash_signals();
        report(out, name, [&] {
            auto peer = procsafe::segment::open(name, 300ms);
            peer.find<procsafe::atomic_counter<int>>("n");
        });
        return 0;
    })[0];
    const int status = procsafe_test::wait_bounded(pid, 10s);
    INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by signal " : " (")
                         << (WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status)) << ")");
    REQUIRE(procsafe_test::exited_ok(status));
    REQUIRE((out.code.load() == static_cast<int>(errc::timed_out) ||
             out.code.load() == static_cast<int>(errc::incompatible_layout)));
    REQUIRE(out.named.load() == 1);
}

// ---------------------------------------------------------------------------
// 3. Objects are type-checked: never a silent reinterpretation.

TEST_CASE("adversary: find<mutex_counter<bool>> of a mutex_counter<uint8_t> is type_mismatch, not a bool "
          "holding 2",
          "[adversary][error]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    seg.construct<procsafe::mutex_counter<std::uint8_t>>("flag", std::uint8_t{2});
    const auto e = catch_error([&] { (void)seg.find<procsafe::mutex_counter<bool>>("flag"); });
    REQUIRE(e.code() == errc::type_mismatch);
}

namespace {
struct tally {
    std::int64_t requests, bytes;
};
struct ratios {
    double hit, miss;
};
}  // namespace

TEST_CASE("adversary: find<mutex_counter<B>> of a mutex_counter<A>, two structs of one size and alignment, is "
          "type_mismatch",
          "[adversary][error]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    seg.construct<procsafe::mutex_counter<tally>>("stats", tally{3, 4});
    const auto e = catch_error([&] { (void)seg.find<procsafe::mutex_counter<ratios>>("stats"); });
    REQUIRE(e.code() == errc::type_mismatch);
}

// ---------------------------------------------------------------------------
// 3/7. A variable-size object gets the storage its constructor uses.

namespace {
/// A count that converts to size_t only when not const (a conversion
/// operator someone forgot to mark const).
struct how_many {
    std::size_t n;
    operator std::size_t() { return n; }  // NOLINT: implicit on purpose
};
}  // namespace

TEST_CASE("adversary: construct<counter_array> from a count convertible only when non-const allocates the elements it constructs",
          "[adversary]") {
    using array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
    auto seg = procsafe::segment::anonymous(1 << 20);
    const std::size_t before = seg.free_memory();
    auto& arr = seg.construct<array>("arr", how_many{64});
    const std::size_t taken = before - seg.free_memory();
    INFO("the array has " << arr.size() << " elements of 128 bytes; its block took " << taken << " bytes");
    REQUIRE(arr.size() == 64);
    REQUIRE(taken >= 64 * 128);  // otherwise its elements lie over the allocator's free blocks
}

// ---------------------------------------------------------------------------
// 4. open(): bounded by its timeout, whatever the timeout.

TEST_CASE("adversary: open(name, milliseconds::max()) waits for a creator still setting up; its deadline does not overflow",
          "[adversary][race][segment]") {
    const auto name = unique_name("advmax");
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& out = control.construct<outcome>("out");
    const int held = board.arm("segment.created");  // the object exists, 0 bytes
    const pid_t creator = fork_children(1, [&](int) {
        board.use();
        auto seg = procsafe::segment::create(name, 4096);
        seg.disown();
        seg.construct<procsafe::atomic_counter<int>>("n", 1);
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    const pid_t opener = fork_children(1, [&](int) {
        report(out, name, [&] { (void)procsafe::segment::open(name, std::chrono::milliseconds::max()); });
        return 0;
    })[0];
    // Still waiting after 500 ms (it used to give up at once).
    const bool done_early = pause_board::wait_for([&] { return out.done.load() == 1; }, 500ms);
    board.release(held);
    REQUIRE(join_children({creator}) == 1);
    REQUIRE(join_children({opener}, 10s) == 1);
    (void)procsafe::segment::remove(name);
    INFO("open with an unbounded timeout returned after " << out.took_ms.load() << " ms with code " << out.code.load());
    REQUIRE_FALSE(done_early);
    REQUIRE(out.code.load() == 0);
}

TEST_CASE("adversary: open() of a segment whose creator is held between its two steps is timed_out within one timeout, not two",
          "[adversary][race][segment]") {
    const auto name = unique_name("advtwice");
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& out = control.construct<outcome>("out");
    const int created = board.arm("segment.created");            // object exists, 0 bytes
    const int initializing = board.arm("segment.initializing");  // sized, magic not yet stored
    const pid_t creator = fork_children(1, [&](int) {
        board.use();
        procsafe::segment::create(name, 4096).disown();
        return 0;
    })[0];
    REQUIRE(board.wait_reached(created));
    constexpr auto timeout = 600ms;
    const pid_t opener = fork_children(1, [&](int) {
        report(out, name, [&] { (void)procsafe::segment::open(name, timeout); });
        return 0;
    })[0];
    // The opener waits for the size (it must not return yet)...
    REQUIRE_FALSE(pause_board::wait_for([&] { return out.done.load() == 1; }, 450ms));
    board.release(created);  // ...gets it, and waits again, for the magic
    REQUIRE(board.wait_reached(initializing));
    REQUIRE(join_children({opener}, 10s) == 1);
    board.release(initializing);
    REQUIRE(join_children({creator}) == 1);
    (void)procsafe::segment::remove(name);
    INFO("open(name, 600 ms) returned code " << out.code.load() << " after " << out.took_ms.load() << " ms");
    REQUIRE(out.code.load() == static_cast<int>(errc::timed_out));
    REQUIRE(out.took_ms.load() < 600 + 250);
}

// ---------------------------------------------------------------------------
// 3/4. A peer waiting for a constructor is bounded by the segment's timeout().

TEST_CASE("adversary: find() waiting for a peer's constructor returns within timeout(), even with a slow directory lock",
          "[adversary][race]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& board = seg.construct<pause_board>("board");
    auto& out = seg.construct<outcome>("out");
    auto& go = seg.construct<std::atomic<int>>("go", 0);
    // A allocates "x" and is held before its constructor runs.
    const int a_held = board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        board.use();
        seg.construct<procsafe::atomic_counter<int>>("x", 1);
        return 0;
    })[0];
    REQUIRE(board.wait_reached(a_held));
    // B waits for it, with a timeout of 800 ms.
    constexpr auto timeout = 800ms;
    const pid_t b = fork_children(1, [&](int) {
        seg.set_timeout(timeout);
        report(out, "(anonymous)", [&] { seg.find<procsafe::atomic_counter<int>>("x"); });
        return 0;
    })[0];
    REQUIRE_FALSE(pause_board::wait_for([&] { return out.done.load() == 1; }, 600ms));  // B waits
    // C takes the directory lock (a find of another name) and is held there, past B's timeout.
    const int c_held = board.arm("directory.locked", -1);
    const pid_t c = fork_children(1, [&](int) {
        board.use();
        while (go.load() == 0) std::this_thread::yield();
        try {
            (void)seg.find<procsafe::atomic_counter<int>>("unrelated");  // held at directory.locked, lock held
        } catch (const procsafe::error&) {
        }
        return 0;
    })[0];
    board.set_pid(c_held, c);
    go.store(1);
    REQUIRE(board.wait_reached(c_held));
    pause_board::wait_for([&] { return out.done.load() == 1; }, 1500ms);  // B gives up meanwhile
    board.release(c_held);
    REQUIRE(join_children({b}, 10s) == 1);
    board.release(a_held);
    REQUIRE(join_children({a, c}) == 2);
    INFO("find with a timeout of 800 ms returned code " << out.code.load() << " after " << out.took_ms.load() << " ms");
    REQUIRE(out.code.load() == static_cast<int>(errc::timed_out));
    REQUIRE(out.took_ms.load() < 800 + 250);
}

// ---------------------------------------------------------------------------
// 3. A process killed inside a constructor: peers get owner_died.

TEST_CASE("adversary: a constructor killed and not yet reaped by its parent: a peer gets owner_died, not "
          "timed_out",
          "[adversary][race][crash]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& board = seg.construct<pause_board>("board");
    const int held = board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        board.use();
        seg.construct<procsafe::atomic_counter<int>>("x", 1);
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    ::kill(a, SIGKILL);
    siginfo_t info{};
    REQUIRE(::waitid(P_PID, static_cast<id_t>(a), &info, WEXITED | WNOWAIT) == 0);  // dead; a zombie until reaped
    seg.set_timeout(500ms);
    const auto e = catch_error([&] { seg.find<procsafe::atomic_counter<int>>("x"); });
    join_children({a});
    INFO(e.what());
    REQUIRE(e.code() == errc::owner_died);
}

// ---------------------------------------------------------------------------
// Lifetime: the owner removes its segment on destruction.

TEST_CASE("adversary: the owner's destructor removes its segment even when the process is out of file "
          "descriptors",
          "[adversary][segment]") {
    const auto name = unique_name("advemfile");
    const pid_t pid = fork_children(1, [&](int) {
        auto seg = procsafe::segment::create(name, 4096);
        seg.construct<procsafe::atomic_counter<int>>("n", 1);
        while (::dup(0) >= 0) {}  // at RLIMIT_NOFILE, as a busy server may be
        return 0;                 // ~segment: "removes it on destruction"
    })[0];
    REQUIRE(join_children({pid}) == 1);
    const bool left = file_exists(name);
    (void)procsafe::segment::remove(name);
    REQUIRE_FALSE(left);
}

// ---------------------------------------------------------------------------
// 3. A peer that finds a block being constructed waits for it.

TEST_CASE("adversary: a peer in another PID namespace (a container) waits for a live constructor instead of declaring it dead",
          "[adversary][race]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& board = seg.construct<pause_board>("board");
    auto& out = seg.construct<outcome>("out");
    const int held = board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        board.use();
        seg.construct<procsafe::atomic_counter<int>>("x", 1);
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));  // A is alive, constructing
    const pid_t middle = fork_children(1, [&](int) {
        if (::unshare(CLONE_NEWPID) != 0) return 77;
        const pid_t peer = fork_children(1, [&](int) {  // pid 1 of the new namespace
            seg.set_timeout(300ms);
            report(out, "(anonymous)", [&] { seg.find<procsafe::atomic_counter<int>>("x"); });
            return 0;
        })[0];
        return join_children({peer}, 10s) == 1 ? 0 : 1;
    })[0];
    const int status = procsafe_test::wait_bounded(middle, 20s);
    board.release(held);
    REQUIRE(join_children({a}) == 1);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) PROCSAFE_SKIP("no PID namespaces here (needs CAP_SYS_ADMIN)");
    REQUIRE(procsafe_test::exited_ok(status));
    INFO("the peer got code " << out.code.load() << " after " << out.took_ms.load() << " ms, while the constructor lived");
    REQUIRE(out.code.load() == static_cast<int>(errc::timed_out));
}
