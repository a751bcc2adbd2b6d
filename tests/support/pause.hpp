// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Forcing an interleaving across processes: a board of pause points in
// shared memory, driven through the library's test hooks (PROCSAFE_TEST_HOOK,
// compiled in because the tests define PROCSAFE_TEST_HOOKS).
//
//   auto& board = seg.construct<pause_board>("board");
//   const int a = board.arm("object.allocated");      // before forking
//   fork: child installs board.use(), runs the protocol, stops at the point
//   board.wait_reached(a);    // the child is held between two steps
//   ... run another process's steps ...
//   board.release(a);         // the child takes its next step
//
// Every wait here is bounded: a test that never reaches its point fails
// instead of hanging.

#include <procsafe/detail/test_hook.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <thread>

#include <unistd.h>

#if !defined(PROCSAFE_TEST_HOOKS)
#error "tests/support/pause.hpp needs PROCSAFE_TEST_HOOKS (the test targets define it)"
#endif

namespace procsafe_test {

using namespace std::chrono_literals;

struct pause_board;
inline pause_board* active_board = nullptr;  // process-local: who this process reports to

/// Pause points in shared memory. Process-safe.
struct pause_board {
    enum state : int { idle = 0, armed = 1, reached = 2, released = 3 };
    enum mode : int { hold = 0, signal_only = 1 };
    struct slot {
        char point[48]{};
        std::atomic<int> pid{0};    // who stops here; 0: any process that uses the board
        std::atomic<int> skip{0};   // hits to let pass before this one
        std::atomic<int> how{hold};
        std::atomic<int> state{idle};
        std::atomic<int> hit_by{0};  // the pid that reached it
    };
    static constexpr int slots = 16;
    slot slot_[slots];

    /// Arms a free slot for `point`; returns its index. Before the process runs.
    int arm(const char* point, int pid = 0, int skip = 0, mode how = hold) {
        for (int i = 0; i < slots; ++i) {
            int expected = idle;
            if (slot_[i].state.load() != idle) continue;
            std::strncpy(slot_[i].point, point, sizeof slot_[i].point - 1);
            slot_[i].pid.store(pid);
            slot_[i].skip.store(skip);
            slot_[i].how.store(how);
            if (slot_[i].state.compare_exchange_strong(expected, armed)) return i;
        }
        return -1;
    }
    /// Re-targets an armed slot at a process that exists now.
    void set_pid(int i, int pid) { slot_[i].pid.store(pid); }

    bool wait_reached(int i, std::chrono::milliseconds limit = 30s) const {
        return wait_for([&] { return slot_[i].state.load() >= reached; }, limit);
    }
    /// Waits until one of `indexes` is reached; returns it, or -1.
    int wait_any(std::initializer_list<int> indexes, std::chrono::milliseconds limit = 30s) const {
        int which = -1;
        wait_for(
            [&] {
                for (int i : indexes)
                    if (slot_[i].state.load() >= reached) return (which = i), true;
                return false;
            },
            limit);
        return which;
    }
    bool is_reached(int i) const { return slot_[i].state.load() >= reached; }
    void release(int i) { slot_[i].state.store(released); }
    /// A slot's holder may go on without ever stopping there again.
    void disarm(int i) {
        int expected = armed;
        if (!slot_[i].state.compare_exchange_strong(expected, released)) release(i);
    }

    /// Makes this process report to the board (call in the child, or in the
    /// parent before forking).
    void use() {
        active_board = this;
        procsafe::detail::test_hook.store(&on_hook);
    }

    template <class Pred>
    static bool wait_for(Pred pred, std::chrono::milliseconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!pred()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::yield();
        }
        return true;
    }

private:
    static void on_hook(const char* point) {
        pause_board* b = active_board;
        if (b == nullptr) return;
        const int me = static_cast<int>(::getpid());
        for (auto& s : b->slot_) {
            if (s.state.load() != armed || std::strcmp(s.point, point) != 0) continue;
            const int pid = s.pid.load();
            if (pid != 0 && pid != me) continue;
            if (s.skip.load() > 0 && s.skip.fetch_sub(1) > 0) continue;
            int expected = armed;
            if (!s.state.compare_exchange_strong(expected, reached)) continue;
            s.hit_by.store(me);
            if (s.how.load() == signal_only) return;
            // Held here until released (bounded: a test that forgets fails, never hangs).
            wait_for([&] { return s.state.load() == released; }, 60s);
            return;
        }
    }
};

}  // namespace procsafe_test
