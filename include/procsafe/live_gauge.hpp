// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/arith.hpp>
#include <procsafe/detail/config.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/thread_cache.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace procsafe {

/// A gauge that is the sum of every live process's own contribution: "in
/// flight" requests, open connections, busy workers. A process adds to and
/// sets its own contribution; when it dies, SIGKILL included, its
/// contribution drops out of value() by itself (client_python's "livesum"
/// without mark_process_dead, whose forgotten call leaves the gauges of
/// killed workers up for good).
///
/// Each process owns a slot (a 128-byte line) named by its pid and its start
/// time, so a pid reused by a later process is not taken for the dead one
/// (start times have the kernel's resolution, a clock tick of 10 ms: the pid
/// space would have to wrap within it).
/// value() adds up the slots whose owner still runs; a process that finds a
/// dead owner's slot takes it over, zeroed. More live processes than slots:
/// the rest share an overflow slot whose contributions do not drop out.
///
/// Memory ordering: relaxed; value() is not an atomic snapshot. Crash
/// behaviour: a process's contribution lives exactly as long as the process
/// (as seen by its pid and start time).
///
/// ```
/// auto& busy = seg.construct<procsafe::live_gauge<std::int64_t>>(
///     "busy_workers", procsafe::metadata{.help = "Workers handling a request."});
/// busy.add(1);  // in a worker, around each request
/// // ... handle it ...
/// busy.sub(1);
/// std::int64_t now = busy.value();  // killed workers do not count
/// ```
template <class T>
class alignas(cache_line) live_gauge {
    static_assert(std::integral<T> && !std::is_same_v<std::remove_cv_t<T>, bool>,
                  "procsafe::live_gauge<T>: T must be an integer type");
    static_assert(std::atomic_ref<T>::is_always_lock_free);
    friend struct detail::object_access;  // the slots live after the object, in storage the segment allocates

    struct alignas(cache_line) slot {
        // The owner's pid; 0: free; claiming | pid: being taken over by pid
        // (a claimer killed mid-way leaves it to the next one).
        std::atomic<std::uint32_t> pid;
        std::uint32_t reserved;
        std::atomic<std::uint64_t> start;  // the owner's start time
        T value;
    };
    static constexpr std::uint32_t claiming = 0x8000'0000u;
    static bool is_claiming(std::uint32_t pid) noexcept { return (pid & claiming) != 0; }

public:
    using value_type = T;
    /// The most slots a gauge may have.
    static constexpr std::size_t max_slots = 4096;
    static constexpr std::size_t default_slots = 128;

    live_gauge(const live_gauge&) = delete;
    live_gauge& operator=(const live_gauge&) = delete;

    /// Adds n to this process's contribution.  Process-safe. Lock-free.
    void add(T n) noexcept { std::atomic_ref<T>(mine().value).fetch_add(n, std::memory_order_relaxed); }
    /// Subtracts n from this process's contribution.  Process-safe. Lock-free.
    void sub(T n) noexcept { add(detail::wrapping_sub(T{}, n)); }
    void increment() noexcept { add(T{1}); }
    void decrement() noexcept { sub(T{1}); }
    /// Sets this process's contribution to v (for "this process holds v").
    /// Process-safe. Lock-free.
    void set(T v) noexcept { std::atomic_ref<T>(mine().value).store(v, std::memory_order_relaxed); }
    /// This process's contribution.  Process-safe. Lock-free.
    T contribution() noexcept { return std::atomic_ref<T>(mine().value).load(std::memory_order_relaxed); }

    /// The contributions of the processes that still run, added up.
    /// Process-safe. Lock-free; never writes. Cost: a system call per slot in
    /// use (is its owner alive?), and a read of /proc/PID/stat per owner.
    T value() const noexcept {
        T sum{};
        const slot* all = lines();
        for (std::uint32_t i = 0; i <= slots_; ++i) {
            const std::uint32_t pid = all[i].pid.load(std::memory_order_acquire);
            if (pid == 0 || is_claiming(pid)) continue;
            if (i < slots_ && !detail::process_alive(pid, all[i].start.load(std::memory_order_relaxed))) continue;
            sum = detail::wrapping_add(sum, std::atomic_ref<T>(const_cast<T&>(all[i].value)).load(std::memory_order_relaxed));
        }
        return sum;
    }
    /// Slots of live processes (the overflow slot not counted).  Cost: as value().
    std::size_t live_processes() const noexcept {
        std::size_t n = 0;
        for (std::uint32_t i = 0; i < slots_; ++i) {
            const std::uint32_t pid = lines()[i].pid.load(std::memory_order_acquire);
            n += pid != 0 && !is_claiming(pid) && detail::process_alive(pid, lines()[i].start.load(std::memory_order_relaxed));
        }
        return n;
    }
    std::size_t slots() const noexcept { return slots_; }

    // For segment: the storage after the object, and its validation on find.
    static std::size_t procsafe_extra_bytes(std::size_t slots = default_slots) {
        return (checked(slots) + 1) * sizeof(slot);
    }
    bool procsafe_fits(std::size_t bytes_after) const noexcept {
        return slots_ >= 1 && slots_ <= max_slots && bytes_after >= (std::size_t{slots_} + 1) * sizeof(slot);
    }

private:
    /// Constructed by segment::construct<live_gauge<T>>(name, slots).
    /// Throws: procsafe::error (invalid_argument) for 0 or more than max_slots.
    explicit live_gauge(std::size_t slots = default_slots) : slots_(static_cast<std::uint32_t>(checked(slots))) {
        for (std::uint32_t i = 0; i <= slots_; ++i) ::new (static_cast<void*>(&lines()[i])) slot{{0}, 0, {0}, T{}};
        lines()[slots_].pid.store(1, std::memory_order_relaxed);  // the overflow slot: always "alive"
    }

    static std::size_t checked(std::size_t slots) {
        if (slots == 0 || slots > max_slots) {
            throw error(errc::invalid_argument, {}, {},
                        "a live_gauge has 1 to " + std::to_string(max_slots) + " slots, not " + std::to_string(slots));
        }
        return slots;
    }

    slot* lines() const noexcept { return reinterpret_cast<slot*>(const_cast<live_gauge*>(this) + 1); }

    /// This process's slot: cached per thread (invalidated by fork and unmap,
    /// as the sharded counter's), found or claimed on the slow path.
    slot& mine() noexcept {
        auto& e = detail::slot_cache_for(this);
        if (e.owner == this && e.epoch == detail::cache_epoch.load(std::memory_order_relaxed)) [[likely]]
            return *static_cast<slot*>(e.slot);
        detail::watch_forks();
        const std::uint64_t epoch = detail::cache_epoch.load(std::memory_order_relaxed);
        slot* s = claim();
        e = {this, epoch, s, false};
        return *s;
    }

    slot* claim() noexcept {
        const std::uint32_t me = detail::current_pid();
        const std::uint64_t start = detail::own_start_time();
        slot* all = lines();
        for (std::uint32_t i = 0; i < slots_; ++i)  // already ours (another thread of this process claimed it)
            if (all[i].pid.load(std::memory_order_acquire) == me && all[i].start.load(std::memory_order_relaxed) == start)
                return &all[i];
        for (std::uint32_t i = 0; i < slots_; ++i) {
            std::uint32_t pid = all[i].pid.load(std::memory_order_acquire);
            const bool takeable = pid == 0 ||
                                  (is_claiming(pid) ? detail::process_gone(pid & ~claiming)
                                                    : !detail::process_alive(pid, all[i].start.load(std::memory_order_relaxed)));
            if (!takeable) continue;
            // Free, or its owner (or claimer) is gone: take it, zero it, then say whose it is.
            if (!all[i].pid.compare_exchange_strong(pid, claiming | me, std::memory_order_acq_rel)) continue;
            std::atomic_ref<T>(all[i].value).store(T{}, std::memory_order_relaxed);
            all[i].start.store(start, std::memory_order_relaxed);
            all[i].pid.store(me, std::memory_order_release);
            return &all[i];
        }
        return &all[slots_];  // more live processes than slots
    }

    std::uint32_t slots_;
};

namespace detail {
template <class T>
struct object_traits<live_gauge<T>> {
    static_assert(sizeof(live_gauge<T>) % cache_line == 0);
    static constexpr type_facts facts() {
        return value_facts<T>(object_kind::live_gauge, sizeof(live_gauge<T>), alignof(live_gauge<T>));
    }
};
}  // namespace detail

}  // namespace procsafe
