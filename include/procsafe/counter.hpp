// procsafe/counter.hpp: counter<T, Sync>: atomic_counter and mutex_counter in shared memory.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/detail/arith.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/robust_mutex.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/wait.hpp>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <utility>
#include <type_traits>

namespace procsafe {

/// Synchronization policy: every operation is one lock-free atomic
/// instruction on the value (std::atomic_ref<T>).
struct atomic_sync {};
/// Synchronization policy: every operation runs under a process-shared mutex
/// that survives the death of its owner (robust on POSIX).
struct mutex_sync {};

/// A value type an atomic counter can hold: an integer (not bool) or a
/// floating-point type.
template <class T>
concept atomic_counter_value =
    (std::integral<T> && !std::same_as<std::remove_cv_t<T>, bool>) || std::floating_point<T>;

/// A value type a mutex counter can hold: anything trivially copyable (it is
/// copied byte for byte between processes). Arithmetic needs + and - too.
template <class T>
concept mutex_counter_value = std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>;

template <class T>
concept addable = requires(const T a, const T b) {
    { a + b } -> std::convertible_to<T>;
    { a - b } -> std::convertible_to<T>;
};

namespace detail {
/// Where a counter keeps its wait word. compact: right beside the value
/// (array elements, small). split: on the other 64-byte half of the
/// counter's 128-byte block, so the notifier's check of "is anybody
/// waiting?" reads a line nobody writes, instead of the hot line another
/// process may steal between the update and the check.
struct compact_layout {};
struct split_layout {};
}  // namespace detail

/// The counter's operations without the line padding: what counter_array
/// hands out for its elements (packed or padded). Use counter<T, Sync> for a
/// counter of its own. Same operations, same guarantees.
template <class T, class Sync, class Layout = detail::compact_layout>
class basic_counter {
    static_assert(std::is_same_v<Sync, atomic_sync> || std::is_same_v<Sync, mutex_sync>,
                  "procsafe::counter: Sync must be procsafe::atomic_sync or procsafe::mutex_sync");
};

/// Lock-free operations on a T (see counter<T, atomic_sync>).
template <class T, class Layout>
class basic_counter<T, atomic_sync, Layout> : public waitable<basic_counter<T, atomic_sync, Layout>, T> {
    friend class waitable<basic_counter, T>;
    static_assert(atomic_counter_value<T>,
                  "procsafe::atomic_counter<T>: T must be an integer (not bool) or floating-point type");
    static_assert(std::atomic_ref<T>::is_always_lock_free,
                  "procsafe::atomic_counter<T>: std::atomic_ref<T> is not always lock-free here; "
                  "its fallback lock table is private to each process, so it cannot be shared. "
                  "Use mutex_counter<T>.");

public:
    using value_type = T;
    using sync_type = atomic_sync;

    explicit basic_counter(T initial = T{}) noexcept { storage_.value = initial; }
    basic_counter(const basic_counter&) = delete;
    basic_counter& operator=(const basic_counter&) = delete;

    /// Adds n; returns the new value.  Process-safe. Lock-free. Never allocates.
    /// An integer wraps around at its limits, as std::atomic does.
    T increment(T n = T{1}) noexcept { return detail::wrapping_add(fetch_add(n), n); }
    /// Subtracts n; returns the new value.  Process-safe. Lock-free. Never allocates.
    T decrement(T n = T{1}) noexcept { return detail::wrapping_sub(fetch_sub(n), n); }

    // mimic: std::atomic<T>::fetch_add
    /// Adds n; returns the value before.  Process-safe. Lock-free. Never allocates.
    T fetch_add(T n, std::memory_order order = std::memory_order_seq_cst) noexcept {
        const T old = ref().fetch_add(n, order);
        this->notify(order);
        return old;
    }
    // mimic: std::atomic<T>::fetch_sub
    /// Subtracts n; returns the value before.  Process-safe. Lock-free. Never allocates.
    T fetch_sub(T n, std::memory_order order = std::memory_order_seq_cst) noexcept {
        const T old = ref().fetch_sub(n, order);
        this->notify(order);
        return old;
    }
    // mimic: std::atomic<T>::exchange
    /// Stores v; returns the value before.  Process-safe. Lock-free. Never allocates.
    T exchange(T v, std::memory_order order = std::memory_order_seq_cst) noexcept {
        const T old = ref().exchange(v, order);
        this->notify(order);
        return old;
    }
    // mimic: std::atomic<T>::compare_exchange_strong
    /// If the value equals expected, stores desired and returns true; otherwise
    /// loads the value into expected and returns false.
    /// Process-safe. Lock-free. Never allocates.
    bool compare_exchange(T& expected, T desired,
                          std::memory_order order = std::memory_order_seq_cst) noexcept {
        const bool exchanged = ref().compare_exchange_strong(expected, desired, order);
        if (exchanged) this->notify(order);
        return exchanged;
    }
    /// The current value.  Process-safe. Lock-free. Never allocates.
    T value(std::memory_order order = std::memory_order_seq_cst) const noexcept {
        return ref().load(order);
    }
    /// Stores v.  Process-safe. Lock-free. Never allocates.
    void store(T v, std::memory_order order = std::memory_order_seq_cst) noexcept {
        ref().store(v, order);
        this->notify(order);
    }
    /// Stores zero.  Process-safe. Lock-free. Never allocates.
    void reset() noexcept { store(T{}); }

    T operator++() noexcept { return increment(); }                // new value
    T operator--() noexcept { return decrement(); }                // new value
    T operator++(int) noexcept { return fetch_add(T{1}); }         // old value, as std::atomic
    T operator--(int) noexcept { return fetch_sub(T{1}); }         // old value, as std::atomic
    T operator+=(T n) noexcept { return increment(n); }            // new value
    T operator-=(T n) noexcept { return decrement(n); }            // new value

private:
    std::atomic_ref<T> ref() const noexcept { return std::atomic_ref<T>(storage_.value); }
    std::optional<T> value_until(detail::wait_clock::time_point) const noexcept { return value(); }
    detail::wait_state& wait_state_ref() const noexcept { return storage_.wait; }

    struct compact {
        // Aligned for atomic_ref (required_alignment).
        alignas(std::atomic_ref<T>::required_alignment) T value;
        detail::wait_state wait;
    };
    struct split {
        alignas(std::atomic_ref<T>::required_alignment) T value;
        alignas(64) detail::wait_state wait;
    };
    // The split layout is the performance claim: the notifier's check of the
    // wait word reads a line no update writes.
    static_assert(offsetof(split, wait) - offsetof(split, value) == 64,
                  "the split layout keeps the wait word on the other 64-byte half of the block");
    mutable std::conditional_t<std::is_same_v<Layout, detail::split_layout>, split, compact> storage_;
};

/// Operations under a robust mutex on any trivially copyable T (see counter<T, mutex_sync>).
template <class T, class Layout>
class basic_counter<T, mutex_sync, Layout> : public waitable<basic_counter<T, mutex_sync, Layout>, T> {
    friend class waitable<basic_counter, T>;
    static_assert(mutex_counter_value<T>,
                  "procsafe::mutex_counter<T>: T must be trivially copyable and default constructible "
                  "(it is shared byte for byte between processes)");

public:
    using value_type = T;
    using sync_type = mutex_sync;

    /// Throws: procsafe::error if the OS cannot initialize the mutex.
    explicit basic_counter(detail::in_param<T> initial = T{}) {
        slots_[0] = initial;
        slots_[1] = initial;
    }
    basic_counter(const basic_counter&) = delete;
    basic_counter& operator=(const basic_counter&) = delete;

    /// Runs f(T&) under the lock on the value and returns what f returns; the
    /// change is committed when f returns, and rolled back if f throws.
    /// The analogue of Python's `with value.get_lock():`.
    /// Process-safe. Blocks. Never allocates.
    /// Requires: f does not call this counter (the lock is not recursive).
    template <class F>
    decltype(auto) with_lock(F&& f) {
        if constexpr (std::is_void_v<std::invoke_result_t<F, T&>>) {
            locked_update(std::forward<F>(f));
            this->notify();  // after the unlock: a woken waiter can take the lock at once
        } else {
            auto result = locked_update(std::forward<F>(f));
            this->notify();
            return result;
        }
    }

    /// The lock on the value, held until unlock() or destruction: for a
    /// critical section that is not a C++ function (a binding's `with`
    /// block, whose body runs between two calls). value() is a copy of the
    /// committed value to change; commit() publishes it as with_lock does
    /// when f returns (one 4-byte store; later changes start from it);
    /// unlocking drops what was not committed. Belongs to the thread that
    /// took it: a robust mutex is unlocked by its owner only.
    class held_lock {
    public:
        held_lock(held_lock&& o) noexcept
            : c_(std::exchange(o.c_, nullptr)), generation_(o.generation_), recovered_(o.recovered_), committed_(o.committed_) {}
        held_lock& operator=(held_lock&&) = delete;
        ~held_lock() { unlock(); }
        /// The value being changed (not yet seen by anyone).  Never allocates.
        T& value() noexcept { return c_->slots_[(generation_ + 1u) & 1u]; }
        /// Publishes value(): readers and waiters see it from now on.  Never allocates.
        void commit() noexcept {
            ++generation_;
            c_->current_.store(generation_, std::memory_order_release);
            committed_ = true;
            prepare();
        }
        /// True when the previous owner died holding the lock (the value is its last commit).
        bool recovered() const noexcept { return recovered_; }
        /// Unlocks (once), then wakes waiters if anything was committed.  Never allocates.
        void unlock() noexcept {
            if (c_ == nullptr) return;
            basic_counter* c = std::exchange(c_, nullptr);
            c->mutex_.unlock();
            if (committed_) c->notify();
        }

    private:
        friend class basic_counter;
        held_lock(basic_counter& c, bool recovered) noexcept : c_(&c), generation_(c.committed()), recovered_(recovered) { prepare(); }
        // As locked_update: a lock-free reader that sees the copy also sees the commit before it.
        void prepare() noexcept {
            std::atomic_thread_fence(std::memory_order_release);
            c_->slots_[(generation_ + 1u) & 1u] = c_->slots_[generation_ & 1u];
        }
        basic_counter* c_;
        std::uint32_t generation_;
        bool recovered_;
        bool committed_ = false;
    };
    /// Takes the lock, waiting at most until `deadline` (time_point::min():
    /// only if it is free now). nullopt when the deadline passed first.
    /// Process-safe. Blocks at most until the deadline. Never allocates.
    /// Throws: procsafe::error (system_error) if the mutex is unusable.
    std::optional<held_lock> try_lock_until(std::chrono::steady_clock::time_point deadline) {
        const detail::lock_result r = mutex_.lock_until(deadline);
        if (r == detail::lock_result::timed_out) return std::nullopt;
        return held_lock(*this, r == detail::lock_result::recovered);
    }

    /// Adds n; returns the new value.  Process-safe. Blocks. Never allocates.
    T increment(detail::in_param<T> n) requires addable<T> {
        return with_lock([&](T& v) { return v = detail::wrapping_add(v, n); });
    }
    /// Subtracts n; returns the new value.  Process-safe. Blocks. Never allocates.
    T decrement(detail::in_param<T> n) requires addable<T> {
        return with_lock([&](T& v) { return v = detail::wrapping_sub(v, n); });
    }
    /// Adds one (arithmetic T only: a struct has no "one").
    T increment() requires std::is_arithmetic_v<T> { return increment(T{1}); }
    /// Subtracts one (arithmetic T only).
    T decrement() requires std::is_arithmetic_v<T> { return decrement(T{1}); }
    // mimic: std::atomic<T>::fetch_add
    /// Adds n; returns the value before.  Process-safe. Blocks. Never allocates.
    T fetch_add(detail::in_param<T> n) requires addable<T> {
        return with_lock([&](T& v) { T old = v; v = detail::wrapping_add(v, n); return old; });
    }
    // mimic: std::atomic<T>::fetch_sub
    /// Subtracts n; returns the value before.  Process-safe. Blocks. Never allocates.
    T fetch_sub(detail::in_param<T> n) requires addable<T> {
        return with_lock([&](T& v) { T old = v; v = detail::wrapping_sub(v, n); return old; });
    }
    // mimic: std::atomic<T>::exchange
    /// Stores v; returns the value before.  Process-safe. Blocks. Never allocates.
    T exchange(detail::in_param<T> nv) {
        return with_lock([&](T& v) { T old = v; v = nv; return old; });
    }
    // mimic: std::atomic<T>::compare_exchange_strong
    /// If the value equals expected, stores desired and returns true; otherwise
    /// copies the value into expected and returns false.
    /// Process-safe. Blocks. Never allocates.
    bool compare_exchange(T& expected, detail::in_param<T> desired) requires std::equality_comparable<T> {
        return with_lock([&](T& v) {
            if (v == expected) {
                v = desired;
                return true;
            }
            expected = v;
            return false;
        });
    }
    /// A consistent copy of the value.  Process-safe. Blocks (takes the lock). Never allocates.
    T value() const {
        detail::robust_lock<detail::robust_mutex> guard(mutex_);
        return slots_[committed() & 1u];
    }
    /// The last committed value, read without the lock, the way a seqlock
    /// reader reads: copy the committed slot, then check that no update
    /// committed meanwhile (the next update writes the other slot; only the
    /// one after it can touch this one). For monitors that must not make an
    /// update wait, or that map the segment read-only (segment_view).
    /// nullopt when updates kept committing under it for `tries` attempts.
    /// Process-safe. Lock-free. Never waits, never writes.
    std::optional<T> read_committed(int tries = 64) const noexcept {
        for (int i = 0; i < tries; ++i) {
            const std::uint32_t before = current_.load(std::memory_order_acquire);
            const T copy = copy_of(slots_[before & 1u]);
            std::atomic_thread_fence(std::memory_order_acquire);
            if (current_.load(std::memory_order_relaxed) == before) return copy;
        }
        return std::nullopt;
    }
    /// Stores v.  Process-safe. Blocks. Never allocates.
    void store(detail::in_param<T> nv) {
        with_lock([&](T& v) { v = nv; });
    }
    /// Stores T{}.  Process-safe. Blocks. Never allocates.
    void reset() { store(T{}); }

    T operator++() requires std::is_arithmetic_v<T> { return increment(); }        // new value
    T operator--() requires std::is_arithmetic_v<T> { return decrement(); }        // new value
    T operator++(int) requires std::is_arithmetic_v<T> { return fetch_add(T{1}); }  // old value
    T operator--(int) requires std::is_arithmetic_v<T> { return fetch_sub(T{1}); }  // old value
    T operator+=(detail::in_param<T> n) requires addable<T> { return increment(n); }  // new value
    T operator-=(detail::in_param<T> n) requires addable<T> { return decrement(n); }  // new value

    /// How many times a process found the lock's owner dead and recovered it.
    /// The value is then the last update that owner completed.
    /// Process-safe. Lock-free. Never allocates.
    std::uint32_t recoveries() const noexcept { return mutex_.recoveries(); }

private:
    /// f on a copy of the committed value; commit = one 4-byte store of the
    /// next generation (its low bit names the slot that holds the value).
    template <class F>
    decltype(auto) locked_update(F&& f) {
        detail::robust_lock<detail::robust_mutex> guard(mutex_);
        const std::uint32_t generation = committed();
        // A lock-free reader (read_committed) that sees a write below also
        // sees the commit made before this lock was taken, and retries.
        std::atomic_thread_fence(std::memory_order_release);
        T& next = slots_[(generation + 1u) & 1u];
        next = slots_[generation & 1u];
        PROCSAFE_TEST_HOOK("counter.locked");
        if constexpr (std::is_void_v<std::invoke_result_t<F, T&>>) {
            std::invoke(std::forward<F>(f), next);
            current_.store(generation + 1u, std::memory_order_release);
        } else {
            auto result = std::invoke(std::forward<F>(f), next);
            current_.store(generation + 1u, std::memory_order_release);
            return result;
        }
    }

    std::uint32_t committed() const noexcept { return current_.load(std::memory_order_relaxed); }

    /// A copy made with atomic loads (a writer may be storing into it).
    static T copy_of(const T& slot) noexcept {
        if constexpr (std::is_arithmetic_v<T> && std::atomic_ref<T>::is_always_lock_free &&
                      alignof(T) >= std::atomic_ref<T>::required_alignment) {
            return std::atomic_ref<T>(const_cast<T&>(slot)).load(std::memory_order_relaxed);
        } else {
            unsigned char bytes[sizeof(T)];
            auto* from = reinterpret_cast<unsigned char*>(const_cast<T*>(&slot));
            for (std::size_t i = 0; i < sizeof(T); ++i)
                bytes[i] = std::atomic_ref<unsigned char>(from[i]).load(std::memory_order_relaxed);
            T out;
            std::memcpy(static_cast<void*>(&out), bytes, sizeof(T));
            return out;
        }
    }

    detail::wait_state& wait_state_ref() const noexcept { return wait_; }

    /// The value for a bounded waiter: nullopt when the lock could not be
    /// taken by the deadline (its holder is stopped, or slow).
    std::optional<T> value_until(detail::wait_clock::time_point deadline) const {
        const detail::lock_result r = mutex_.lock_until(deadline);
        if (r == detail::lock_result::timed_out) return std::nullopt;
        const T v = slots_[committed() & 1u];
        mutex_.unlock();
        return v;
    }

    mutable detail::robust_mutex mutex_;
    std::atomic<std::uint32_t> current_{0};  // the committed generation; slot current_ & 1 holds the value
    T slots_[2]{};
    alignas(std::is_same_v<Layout, detail::split_layout> ? 64 : alignof(detail::wait_state))
        mutable detail::wait_state wait_;
};

/// A counter shared by every process that maps its segment.
///
/// Place it with segment::construct / find / find_or_construct; each process
/// gets a reference to the same object. `Sync` is atomic_sync (lock-free) or
/// mutex_sync (a robust process-shared lock). Any process may block until the
/// value says so (wait_at_least, wait_equal, wait; procsafe/wait.hpp). The object fills whole 128-byte
/// lines, so two counters never share a cache line. It holds no pointer, and
/// is neither copyable nor movable: its address is its identity.
///
/// atomic_sync: every operation is one atomic instruction.
/// Memory ordering: like std::atomic, every operation defaults to seq_cst.
/// Crash behaviour: an update is one instruction, so a process killed at any
/// point has either made its update or not; nothing is ever torn or locked.
///
/// mutex_sync: every operation is a critical section (acquire/release).
/// Crash behaviour: the value is double-buffered and an update is committed by
/// one 4-byte store, so a process killed while holding the lock leaves the last
/// completed update; the next locker recovers the mutex (POSIX: EOWNERDEAD and
/// pthread_mutex_consistent) and recoveries() counts it. An exception thrown by
/// the function given to with_lock rolls the update back.
///
/// ```
/// auto seg = procsafe::segment::create("jobs", 1 << 20);
/// auto& done = seg.construct<procsafe::atomic_counter<std::int64_t>>("done");
/// for (int i = 0; i < 4; ++i)
///     if (fork() == 0) {
///         for (int k = 0; k < 1000; ++k) ++done;
///         _exit(0);
///     }
/// while (wait(nullptr) > 0) {}
/// std::printf("%lld\n", (long long)done.value());  // 4000, every time
///
/// struct stats { std::int64_t requests, bytes; };
/// auto& s = seg.find_or_construct<procsafe::mutex_counter<stats>>("stats");
/// s.with_lock([&](stats& v) { v.requests += 1; v.bytes += 512; });  // atomic as a whole
/// ```
template <class T, class Sync>
class alignas(alignof(basic_counter<T, Sync, detail::split_layout>) > cache_line
                  ? alignof(basic_counter<T, Sync, detail::split_layout>)
                  : cache_line) counter : public basic_counter<T, Sync, detail::split_layout> {
public:
    using basic_counter<T, Sync, detail::split_layout>::basic_counter;
};

/// Lock-free counter of T (integer or floating point).
template <class T>
using atomic_counter = counter<T, atomic_sync>;
/// Counter of any trivially copyable T under a robust process-shared mutex.
template <class T>
using mutex_counter = counter<T, mutex_sync>;

namespace detail {
template <class T, class Sync>
struct object_traits<counter<T, Sync>> {
    static_assert(sizeof(counter<T, Sync>) % cache_line == 0, "a counter fills whole lines");
    static constexpr type_facts facts() {
        return value_facts<T>(std::is_same_v<Sync, atomic_sync> ? object_kind::atomic_counter : object_kind::mutex_counter,
                              sizeof(counter<T, Sync>), alignof(counter<T, Sync>));
    }
};
}  // namespace detail

}  // namespace procsafe
