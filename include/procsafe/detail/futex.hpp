// procsafe/detail/futex.hpp: waiting across processes on a 32-bit word in shared memory.
// SPDX-License-Identifier: MIT
#pragma once

// Waiting across processes on a 32-bit word in shared memory (the public
// waiting API built on it is procsafe/wait.hpp).
//
// std::atomic<T>::wait cannot do it: libstdc++ 12 keeps its waiters in a
// table private to each process. On Linux this is a raw FUTEX_WAIT without
// FUTEX_PRIVATE_FLAG, so the kernel keys the wait by the shared page, not by
// the process's address. Elsewhere it is bounded polling (1 us growing to
// 1 ms), which is correct, only slower to wake.
//
// The protocol (wait_state below) wakes no one and makes no system call
// unless a waiter announced itself; a waiter that dies leaves at most one
// extra wake-up behind.

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>

#include <atomic>
#include <chrono>
#include <climits>
#include <concepts>
#include <cstdint>
#include <thread>
#include <optional>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <ctime>
#endif

namespace procsafe::detail {

/// Sleeps while *word == expected, at most until `deadline`; may return early.
inline void wait_on_word(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                         wait_clock::time_point deadline) noexcept {
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    auto left = deadline - wait_clock::now();
    if (left <= wait_clock::duration::zero()) return;
#if defined(__linux__)
    // Slices of at most 1 s: a waiter re-checks by itself now and then.
    if (left > std::chrono::seconds(1)) left = std::chrono::seconds(1);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec rel{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &rel, nullptr, 0);
#else
    // Portable fallback: poll with a growing pause.
    auto pause = std::chrono::microseconds(1);
    while (word.load(std::memory_order_acquire) == expected && wait_clock::now() < deadline) {
        std::this_thread::sleep_for(pause);
        if (pause < std::chrono::milliseconds(1)) pause *= 2;
    }
#endif
}

/// Wakes every process and thread sleeping on the word.
inline void wake_all_on_word(std::atomic<std::uint32_t>& word) noexcept {
#if defined(__linux__)
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
#else
    (void)word;  // pollers see the change by themselves
#endif
}

/// The waiting half of a counter: a sequence word the waiters sleep on and
/// a flag saying that someone may be asleep.
///
/// Waiter: read seq, set the flag, check the condition, sleep while seq is
/// unchanged. Notifier (after changing the value): if the flag is set,
/// clear it, bump seq, wake all. With all four accesses sequentially
/// consistent, either the notifier sees the flag, or the waiter sees the new
/// value: no wake-up is missed. The flag is cleared by the notifier, so a
/// waiter that died does not make every later update pay a system call.
///
/// An update made with a weaker order than seq_cst (a relaxed store, say)
/// may become visible after the notifier's check of the flag, and a waiter
/// would then sleep through its slice: notify(order) puts a seq_cst fence
/// between the two for those orders only. The default seq_cst update needs
/// none (its order is a compile-time constant, so the branch disappears).
/// An update made under a lock needs none either: the waiter reads the
/// value under the same lock after setting the flag.
struct wait_state {
    std::atomic<std::uint32_t> seq{0};
    std::atomic<std::uint32_t> waiting{0};

    /// After every change of the value, made with `order`. No system call
    /// unless a waiter is there.
    void notify(std::memory_order order = std::memory_order_seq_cst) noexcept {
        if (order != std::memory_order_seq_cst) std::atomic_thread_fence(std::memory_order_seq_cst);
        if (waiting.load(std::memory_order_seq_cst) != 0 && waiting.exchange(0, std::memory_order_seq_cst) != 0) {
            seq.fetch_add(1, std::memory_order_seq_cst);
            wake_all_on_word(seq);
        }
    }

    /// Blocks until holds() returns true or the deadline passes; returns
    /// whether it held. holds() reads the value (atomically or under a lock).
    template <class Holds>
    bool wait_until(Holds holds, wait_clock::time_point deadline) {
        for (;;) {
            const std::uint32_t s = seq.load(std::memory_order_seq_cst);
            waiting.store(1, std::memory_order_seq_cst);
            if (holds()) return true;
            if (wait_clock::now() >= deadline) return false;
            wait_on_word(seq, s, deadline);
        }
    }
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

}  // namespace procsafe::detail
