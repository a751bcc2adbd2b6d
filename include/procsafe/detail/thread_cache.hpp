// procsafe/detail/thread_cache.hpp: per-thread cache of the slot a thread owns in a sharded counter or live gauge.
// SPDX-License-Identifier: MIT
#pragma once

// Per-thread memory of "which slot of which sharded counter or live gauge
// is mine", for increment() (the last counter used, then a small hashed
// cache) and for writers (a list).
//
// A cached slot is valid only for the object it was found in, in the process
// that found it. Each entry is checked against both, with no process-wide
// state to keep in step (a shared library built with -fvisibility=hidden, or
// a plugin dlopen()ed by a program without -rdynamic, has its own copy of
// every variable here):
// - the object's incarnation, a number drawn when it was constructed and
//   kept in the object: an unmap followed by a new mapping at the same
//   address puts another object (another incarnation) there, and the entry
//   no longer matches; the same object mapped again at the same address
//   still matches, and its slot is still the thread's;
// - the fork generation, a word on a page the kernel wipes in every child
//   (MADV_WIPEONFORK, Linux 4.14): in a child, fork(), _Fork() or clone()
//   alike, it reads 0 before any code of the child runs (pthread_atfork
//   handlers included), so no entry of the parent matches. Where the kernel
//   lacks it (or pages are larger than 4 KiB), a pthread_atfork handler
//   registered at the first slow path zeroes it instead.
// The check on the hot path is a few loads and three compares.
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
#include <sys/mman.h>
#endif

namespace procsafe::detail {

/// The word every entry is checked against, alone on a page of its own in
/// the program's zero-initialized data: the kernel wipes that page in every
/// child (MADV_WIPEONFORK, set up by the first slow path), and the hot path
/// reaches it as it reaches any global, with no pointer to follow.
struct alignas(4096) fork_generation_page {
    std::atomic<std::uint64_t> generation;
    unsigned char rest[4096 - sizeof(std::atomic<std::uint64_t>)];
};
inline constinit fork_generation_page fork_page{};
/// The last generation this process (or the parent it was forked from)
/// handed out: ordinary memory, so a child starts past its parent's.
inline constinit std::atomic<std::uint64_t> generation_source{0};

inline void wipe_generation_in_child() noexcept { fork_page.generation.store(0, std::memory_order_relaxed); }

/// The generation entries are checked against on the hot path: 0 until this
/// process's first slow path, and again in a fork child until its first.
inline std::uint64_t fork_generation() noexcept { return fork_page.generation.load(std::memory_order_relaxed); }

/// The current generation, set up (or renewed, in a fork child) if need be.
/// For slow paths only.
inline std::uint64_t current_generation() noexcept {
#if defined(PROCSAFE_POSIX)
    static const bool set_up = [] {
        bool wiped = false;
#if defined(MADV_WIPEONFORK)
        // EINVAL where the page is not one of its own (pages over 4 KiB) or
        // not anonymous memory: then the fork handler below wipes it.
        wiped = ::madvise(&fork_page, sizeof fork_page, MADV_WIPEONFORK) == 0;
#endif
        if (!wiped) ::pthread_atfork(nullptr, nullptr, &wipe_generation_in_child);
        return true;
    }();
    (void)set_up;
#endif
    std::uint64_t g = fork_page.generation.load(std::memory_order_acquire);
    if (g == 0) {  // first use, or a fork child: a generation no entry of this process holds
        const std::uint64_t fresh = generation_source.fetch_add(1, std::memory_order_relaxed) + 1;
        if (fork_page.generation.compare_exchange_strong(g, fresh, std::memory_order_acq_rel)) g = fresh;
    }
    return g;
}

/// A number for a new object's incarnation: never 0, distinct from any other
/// object's for all practical purposes (64 mixed bits of time, process,
/// address and a serial).
inline std::uint64_t draw_object_incarnation(const void* where) noexcept {
    static std::atomic<std::uint64_t> serial{0};
    std::uint64_t x = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                      (static_cast<std::uint64_t>(current_pid()) << 40) ^
                      static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(where)) ^
                      (serial.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull);
    x = mix64(x);
    return x != 0 ? x : 1;
}

/// What a sharded_counter::writer keeps, and the list of a thread's live
/// writers. A fork child's only thread is the one that forked, so the fork
/// handler can reach every writer the child may use and clear its slot
/// pointer: the writer's hot path then tests only the pointer it loads anyway.
struct writer_base {
    void* value_ = nullptr;  // the thread's slot value; nullptr: look it up again
    std::uint64_t generation_ = 0;  // fork_generation() when value_ was found
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
    x = mix64(x);
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
    for (writer_base* w = thread_writers; w != nullptr; w = w->next_) w->value_ = nullptr;
}

/// Registers the writers' fork handler once per process; called when a writer
/// first looks up its slot, i.e. before any writer can be valid.
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
    const void* owner = nullptr;     // the object, at this mapping's address
    std::uint64_t generation = 0;    // fork_generation() when filled; 0: never valid
    std::uint64_t incarnation = 0;   // the object's incarnation when filled
    void* slot = nullptr;
    bool exclusive = false;  // true: this thread is the slot's only writer
};
static_assert(std::is_trivially_destructible_v<slot_cache_entry>,
              "a thread_local with a destructor is reached through a TLS wrapper call");

/// The counter this thread added to last, and its slot: what increment()
/// tests first (the counter's address, the generation, the incarnation), so
/// that `++requests` in a loop costs what a writer's add costs. A miss goes
/// to slot_cache, then to the counter's slots.
inline thread_local constinit slot_cache_entry last_slot{};

inline constexpr std::size_t slot_cache_size = 8;
inline thread_local constinit slot_cache_entry slot_cache[slot_cache_size]{};

inline slot_cache_entry& slot_cache_for(const void* counter) noexcept {
    return slot_cache[(reinterpret_cast<std::uintptr_t>(counter) >> 7) & (slot_cache_size - 1)];
}

}  // namespace procsafe::detail
