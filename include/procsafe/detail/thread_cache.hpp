// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Per-thread memory of "which slot of which sharded counter is mine", for
// increment() (the last counter used, then a small hashed cache) and for
// writers (a list).
//
// A cached slot is only valid in the process and the mapping it was found
// in. A global epoch, bumped in every fork child (pthread_atfork) and by the
// segment whenever it unmaps (invalidate_slot_caches), invalidates every
// entry at once: a forked child never writes its parent's owned slot, and a
// new mapping at a recycled address never inherits a stale pointer. The
// check on the hot path is one relaxed load and two compares.
//
// Every thread_local here is constant-initialized (no constructor, no
// destructor): the compiler then reaches it by a direct %fs-relative access,
// with no TLS wrapper call (_ZTW..., __tls_init) to run its initializer.

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/platform.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#if defined(PROCSAFE_POSIX)
#include <pthread.h>
#endif

namespace procsafe::detail {

inline std::atomic<std::uint64_t> cache_epoch{1};

/// Every slot pointer any thread of this process cached is void from now on.
inline void invalidate_slot_caches() noexcept { cache_epoch.fetch_add(1, std::memory_order_relaxed); }

/// What a sharded_counter::writer keeps, and the list of a thread's live
/// writers. A fork child's only thread is the one that forked, so the fork
/// handler can reach every writer the child may use and clear its slot
/// pointer: the writer's hot path then tests only the pointer it loads anyway.
struct writer_base {
    void* value_ = nullptr;  // the thread's slot value; nullptr: look it up again
    bool exclusive_ = false;
    writer_base* prev_ = nullptr;
    writer_base* next_ = nullptr;
};

inline thread_local writer_base* thread_writers = nullptr;

// GCC 12's -Wdangling-pointer sees a writer on the stack stored in a
// thread_local once this is inlined into the writer's constructor; the
// writer's destructor unlinks it, which the warning cannot see.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
inline void link_writer(writer_base* w) noexcept {
    w->next_ = thread_writers;
    if (thread_writers != nullptr) thread_writers->prev_ = w;
    thread_writers = w;
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
inline void unlink_writer(writer_base* w) noexcept {
    if (w->prev_ != nullptr) w->prev_->next_ = w->next_;
    else thread_writers = w->next_;
    if (w->next_ != nullptr) w->next_->prev_ = w->prev_;
}

/// A number a thread draws when it first claims a slot: with its thread id
/// it names the writer, so that a thread which inherits the id of a dead
/// writer (ids are reused) is not taken for it.
inline thread_local std::uint32_t writer_nonce = 0;

inline std::uint32_t draw_nonce() noexcept {
    static std::atomic<std::uint64_t> serial{0};
    std::uint64_t x = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                      (static_cast<std::uint64_t>(current_tid()) << 21) ^
                      (serial.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull);
    x ^= x >> 30;  // splitmix64's finalizer
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    const auto n = static_cast<std::uint32_t>(x);
    return n != 0 ? n : 1u;
}

/// The calling thread as a slot owner: its id (low 32 bits) and its number
/// (high 32 bits). Never 0.
inline std::uint64_t writer_identity() noexcept {
    if (writer_nonce == 0) writer_nonce = draw_nonce();
    return (static_cast<std::uint64_t>(writer_nonce) << 32) | current_tid();
}

inline void after_fork_in_child() noexcept {
    writer_nonce = 0;  // the child's thread is another writer
    invalidate_slot_caches();
    for (writer_base* w = thread_writers; w != nullptr; w = w->next_) w->value_ = nullptr;
}

/// Registers the fork handler once per process; called on every slow path,
/// i.e. before any cache entry or writer can be valid.
inline void watch_forks() noexcept {
#if defined(PROCSAFE_POSIX)
    static const bool registered = [] {
        ::pthread_atfork(nullptr, nullptr, &after_fork_in_child);
        return true;
    }();
    (void)registered;
#endif
}

struct slot_cache_entry {
    const void* owner = nullptr;  // the sharded counter, at this mapping's address
    std::uint64_t epoch = 0;      // 0: never valid (cache_epoch starts at 1)
    void* slot = nullptr;
    bool exclusive = false;  // true: this thread is the slot's only writer
};
static_assert(std::is_trivially_destructible_v<slot_cache_entry>,
              "a thread_local with a destructor is reached through a TLS wrapper call");

/// The counter this thread added to last, and its slot: what increment()
/// tests first (one compare of the counter's address, one of the epoch), so
/// that `++requests` in a loop costs what a writer's add costs. A miss goes
/// to slot_cache, then to the counter's slots.
inline thread_local constinit slot_cache_entry last_slot{};

inline constexpr std::size_t slot_cache_size = 8;
inline thread_local constinit slot_cache_entry slot_cache[slot_cache_size]{};

inline slot_cache_entry& slot_cache_for(const void* counter) noexcept {
    return slot_cache[(reinterpret_cast<std::uintptr_t>(counter) >> 7) & (slot_cache_size - 1)];
}

}  // namespace procsafe::detail
