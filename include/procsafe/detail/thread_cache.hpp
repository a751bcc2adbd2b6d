// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Per-thread memory of "which slot of which sharded counter is mine".
//
// A cached slot is only valid in the process and the mapping it was found
// in. A global epoch, bumped in every fork child (pthread_atfork) and
// whenever procsafe unmaps a segment, invalidates every entry at once: a
// forked child never writes its parent's owned slot, and a new mapping at a
// recycled address never inherits a stale pointer. The check on the hot path
// is one relaxed load and two compares.

#include <procsafe/detail/config.hpp>

#include <atomic>
#include <cstdint>

#if defined(PROCSAFE_POSIX)
#include <pthread.h>
#endif

namespace procsafe::detail {

inline std::atomic<std::uint64_t> cache_epoch{1};

inline void bump_cache_epoch() noexcept { cache_epoch.fetch_add(1, std::memory_order_relaxed); }

/// Registers the fork handler once per process; called on every slow path,
/// i.e. before any cache entry can be valid.
inline void watch_forks() noexcept {
#if defined(PROCSAFE_POSIX)
    static const bool registered = [] {
        ::pthread_atfork(nullptr, nullptr, &bump_cache_epoch);
        return true;
    }();
    (void)registered;
#endif
}

struct slot_cache_entry {
    const void* owner = nullptr;  // the sharded counter, at this mapping's address
    std::uint64_t epoch = 0;
    void* slot = nullptr;
    bool exclusive = false;  // true: this thread is the slot's only writer
};

inline constexpr std::size_t slot_cache_size = 8;
inline thread_local slot_cache_entry slot_cache[slot_cache_size];

inline slot_cache_entry& slot_cache_for(const void* counter) noexcept {
    return slot_cache[(reinterpret_cast<std::uintptr_t>(counter) >> 7) & (slot_cache_size - 1)];
}

}  // namespace procsafe::detail
