// procsafe/sharded_counter.hpp: sharded_counter<T>: a slot per writer thread, summed on read.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/detail/arith.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/detail/thread_cache.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <bit>
#include <concepts>
#include <cstdint>
#include <string>
#include <thread>
#include <type_traits>

#include <procsafe/detail/platform.hpp>

// add()'s fast path is a few instructions: inlined even into a large caller
// (GCC otherwise keeps it a call in a big function, and the call costs as
// much as the add); its slow path stays a call, so the caller keeps its
// registers. Undefined at the end of this header.
#if defined(__GNUC__) || defined(__clang__)
#define PROCSAFE_SHARDED_INLINE [[gnu::always_inline]] inline
#define PROCSAFE_SHARDED_OUT_OF_LINE [[gnu::noinline]]
#elif defined(_MSC_VER)
#define PROCSAFE_SHARDED_INLINE __forceinline
#define PROCSAFE_SHARDED_OUT_OF_LINE __declspec(noinline)
#else
#define PROCSAFE_SHARDED_INLINE inline
#define PROCSAFE_SHARDED_OUT_OF_LINE
#endif

namespace procsafe {

/// How a sharded_counter picks the slot a writer adds to.
enum class shard_strategy : std::uint32_t {
    /// Each writer thread owns a slot and updates it with a plain load + store
    /// (no lock prefix: the single-writer line). Ownership is taken by
    /// compare-and-swap and taken over from a dead owner; writers beyond the
    /// slots share an overflow line with fetch_add. The default: measured
    /// fastest (see README, Benchmarks).
    owned_slot = 0,
    /// Slot of the CPU the writer runs on (sched_getcpu), with fetch_add.
    per_cpu = 1,
    /// Slot chosen by a hash of the writer's pid, with fetch_add.
    per_process = 2,
};

/// A counter split into slots, one 128-byte line each, so that writers stop
/// fighting over one cache line (Java's LongAdder, Linux's percpu_counter).
///
/// increment / decrement / add write only the caller's slot; sum() adds the
/// slots up. Like LongAdder::sum(), sum() is not an atomic snapshot while
/// writers run (it may miss updates made while it sums), and it is exact once
/// they stop. reset() is exact only when no writer runs.
///
/// Memory ordering: relaxed; sum() orders nothing. Crash behaviour: with
/// owned slots, a process killed in the middle of an increment loses at most
/// that increment (its slot holds everything it finished); its slot is taken
/// over by a later writer once the owner is gone. A forked child never writes
/// its parent's slot: it takes its own. Writers must share one PID namespace
/// (slot owners are thread ids).
///
/// A trap from the single-writer slot (a plain load and store, no lock
/// prefix): not async-signal-safe. An add made from a signal handler that
/// interrupted the same thread between its load and its store is lost (the
/// interrupted add stores over it); and a thread's first add claims its
/// slot and registers a fork handler, neither of them safe in a handler. In
/// a signal handler use an atomic_counter.
///
/// Forks: add()/increment() and writers check their slot against a page the
/// kernel wipes in every child (fork(), _Fork(), clone(), before any atfork
/// handler runs), so a child never writes its parent's slot.
///
/// ```
/// auto seg = procsafe::segment::create("web", 1 << 20);
/// auto& requests = seg.construct<procsafe::sharded_counter<std::int64_t>>("requests");
/// // in each worker process, as often as you like:
/// requests.increment();
/// // in the monitor:
/// std::int64_t total = requests.sum();  // exact once the workers stop
/// ```
template <class T>
class alignas(cache_line) sharded_counter {
    static_assert(std::integral<T> && !std::is_same_v<std::remove_cv_t<T>, bool>,
                  "procsafe::sharded_counter<T>: T must be an integer type");
    static_assert(std::atomic_ref<T>::is_always_lock_free, "procsafe::sharded_counter<T>: T must be lock-free");
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

    struct alignas(cache_line) slot {
        // The writer: its thread id (low 32 bits) and a number drawn when the
        // thread first wrote (high 32 bits), so that a thread that inherits
        // a dead writer's id does not inherit its slot. 0: free; overflow:
        // the shared overflow line.
        std::atomic<std::uint64_t> owner;
        T value;
    };
    static constexpr std::uint64_t overflow = ~std::uint64_t{0};

    // Only a segment constructs one: the storage after the object comes
    // from the segment (procsafe_extra_bytes).
    friend struct detail::object_access;

public:
    using value_type = T;
    /// The most slots a counter may have.
    static constexpr std::size_t max_slots = 4096;

    /// Default slot count: enough for this machine's CPUs, and at least 64
    /// (owned slots go one per writer thread, and writers usually outnumber
    /// CPUs), rounded up to a power of two.
    static std::size_t default_slots() {
        const std::size_t cpus = std::thread::hardware_concurrency();
        return std::bit_ceil(std::max<std::size_t>(64, 2 * cpus));
    }

    sharded_counter(const sharded_counter&) = delete;
    sharded_counter& operator=(const sharded_counter&) = delete;

    /// Adds n to the caller's slot; an integer wraps around at its limits.
    /// Cost: when this thread's last add went to this counter's owned slot,
    /// about a writer's add (9 instructions, inlined: two compares, the
    /// slot's address, load, add, store); otherwise a call (another counter
    /// than last time, the first add after a fork or an unmap, the overflow
    /// line, per_cpu, per_process).
    /// Process-safe. Lock-free. Never allocates. Not async-signal-safe (see
    /// the class comment).
    PROCSAFE_SHARDED_INLINE void add(T n) noexcept {
        // last_slot only ever holds a slot this thread owns (exclusive): no
        // test of a flag here, a plain load + store.
        const detail::slot_cache_entry& e = detail::last_slot;
        if (e.owner != this || e.generation != detail::fork_generation() ||
            e.incarnation != incarnation_.load(std::memory_order_relaxed)) [[unlikely]]
            return add_slow(n);
        std::atomic_ref<T> v(static_cast<slot*>(e.slot)->value);
        v.store(detail::wrapping_add(v.load(std::memory_order_relaxed), n), std::memory_order_relaxed);
    }
    /// Adds n (default 1).  Process-safe. Lock-free. Never allocates.
    PROCSAFE_SHARDED_INLINE void increment(T n = T{1}) noexcept { add(n); }
    /// Subtracts n (default 1).  Process-safe. Lock-free. Never allocates.
    PROCSAFE_SHARDED_INLINE void decrement(T n = T{1}) noexcept { add(detail::wrapping_sub(T{}, n)); }
    PROCSAFE_SHARDED_INLINE sharded_counter& operator++() noexcept { add(T{1}); return *this; }
    PROCSAFE_SHARDED_INLINE sharded_counter& operator--() noexcept { decrement(); return *this; }
    PROCSAFE_SHARDED_INLINE sharded_counter& operator+=(T n) noexcept { add(n); return *this; }
    PROCSAFE_SHARDED_INLINE sharded_counter& operator-=(T n) noexcept { decrement(n); return *this; }

    /// This thread's own line into the counter: the fastest way to add from a
    /// hot loop (the slot is looked up once, not at every add). An add costs
    /// what a single-writer line costs: load, test, load, store.
    ///
    /// In a fork child a writer looks up a slot of the child's own (the fork
    /// handler clears the slot pointer of every writer of the forking thread).
    /// Requires: created, used and destroyed by one thread, while the
    /// counter's segment is mapped. Not copyable, not movable.
    class writer : private detail::writer_base {
    public:
        explicit writer(sharded_counter& c) noexcept : counter_(&c) {
            refresh();
            detail::link_writer(this);
        }
        ~writer() { detail::unlink_writer(this); }
        writer(const writer&) = delete;
        writer& operator=(const writer&) = delete;

        /// Adds n to this thread's slot.  Lock-free. Never allocates. Not
        /// async-signal-safe (see the class comment).
        PROCSAFE_SHARDED_INLINE void add(T n) noexcept {
            T* p = static_cast<T*>(value_);
            if (p == nullptr || generation_ != detail::fork_generation()) [[unlikely]] p = refresh();
            std::atomic_ref<T> v(*p);
            if (exclusive_) v.store(detail::wrapping_add(v.load(std::memory_order_relaxed), n), std::memory_order_relaxed);
            else v.fetch_add(n, std::memory_order_relaxed);
        }
        PROCSAFE_SHARDED_INLINE void increment(T n = T{1}) noexcept { add(n); }
        PROCSAFE_SHARDED_INLINE void decrement(T n = T{1}) noexcept { add(detail::wrapping_sub(T{}, n)); }
        PROCSAFE_SHARDED_INLINE writer& operator++() noexcept { add(T{1}); return *this; }
        PROCSAFE_SHARDED_INLINE writer& operator+=(T n) noexcept { add(n); return *this; }

    private:
        // Out of line: the hot add() stays small enough to inline everywhere
        // (with it inline, g++ -O2 stopped inlining add() at two call sites).
        PROCSAFE_SHARDED_OUT_OF_LINE T* refresh() noexcept {
            const detail::slot_cache_entry& e = counter_->attach(detail::slot_cache_for(counter_));
            slot* s = static_cast<slot*>(e.slot);
            value_ = &s->value;
            generation_ = e.generation;
            exclusive_ = e.exclusive;
            return &s->value;
        }
        sharded_counter* counter_;
    };

    /// A writer for the calling thread: `auto w = counter.local();` (see writer).
    /// Lock-free. Never allocates.
    writer local() noexcept { return writer(*this); }

    // mimic: java.util.concurrent.atomic.LongAdder::sum (folly's readFull)
    /// The sum of all slots: exact when no writer runs; otherwise it may miss
    /// updates made while it sums (not an atomic snapshot).
    /// Process-safe. Lock-free. Never allocates. Cost: one load per slot,
    /// slots() + 1 of them (about 50 ns for the default 64, 600 ns for 1,024).
    T sum() const noexcept {
        // Locals, not members: the atomic loads would otherwise make the
        // compiler reload slots_ and recompute each line's address.
        const slot* line = lines();
        const std::uint32_t n = slots_;
        T total{};
        for (std::uint32_t i = 0; i <= n; ++i) {
            total = detail::wrapping_add(total, std::atomic_ref<T>(const_cast<T&>(line[i].value)).load(std::memory_order_relaxed));
        }
        return total;
    }
    /// Zeroes every slot. Exact only when no writer runs (a writer that read
    /// its slot before the reset writes its old value plus one back).
    void reset() noexcept {
        for (std::uint32_t i = 0; i <= slots_; ++i) std::atomic_ref<T>(lines()[i].value).store(T{}, std::memory_order_relaxed);
    }

    /// Number of slots (the overflow line not counted).
    std::size_t slots() const noexcept { return slots_; }
    shard_strategy strategy() const noexcept { return strategy_; }
    /// Slots that a writer thread owns now (alive or not yet taken over).
    std::size_t owned_slots() const noexcept {
        std::size_t n = 0;
        for (std::uint32_t i = 0; i < slots_; ++i) n += lines()[i].owner.load(std::memory_order_relaxed) != 0;
        return n;
    }

    // For segment: the storage after the object, and its validation on find.
    static std::size_t procsafe_extra_bytes(std::size_t slots = default_slots(),
                                            shard_strategy strategy = shard_strategy::owned_slot) {
        return (checked(slots, strategy) + 1) * sizeof(slot);
    }
    bool procsafe_fits(std::size_t bytes_after) const noexcept {
        return slots_ >= 1 && slots_ <= max_slots && std::has_single_bit(slots_) &&
               bytes_after >= (std::size_t{slots_} + 1) * sizeof(slot);
    }

private:
    /// Constructed by segment::construct<sharded_counter<T>>(name, slots, strategy):
    /// `slots` is rounded up to a power of two.
    /// Throws: procsafe::error (invalid_argument) for 0 or more than max_slots.
    explicit sharded_counter(std::size_t slots = default_slots(), shard_strategy strategy = shard_strategy::owned_slot)
        : slots_(static_cast<std::uint32_t>(checked(slots, strategy))), strategy_(strategy) {
        for (std::uint32_t i = 0; i <= slots_; ++i) {
            ::new (static_cast<void*>(&lines()[i])) slot{{0}, T{}};
        }
        lines()[slots_].owner.store(overflow, std::memory_order_relaxed);
        incarnation_.store(detail::draw_object_incarnation(this), std::memory_order_relaxed);
    }

    static std::size_t checked(std::size_t slots, shard_strategy strategy) {
        if (slots == 0 || slots > max_slots) {
            throw error(errc::invalid_argument, {}, {},
                        "a sharded_counter has 1 to " + std::to_string(max_slots) + " slots, not " +
                            std::to_string(slots));
        }
        if (strategy != shard_strategy::owned_slot && strategy != shard_strategy::per_cpu &&
            strategy != shard_strategy::per_process) {
            throw error(errc::invalid_argument, {}, {}, "unknown shard_strategy");
        }
        return std::bit_ceil(slots);
    }

    slot* lines() const noexcept {
        // The slots follow the object (segment allocates procsafe_extra_bytes).
        return reinterpret_cast<slot*>(const_cast<sharded_counter*>(this) + 1);
    }
    std::uint32_t mask() const noexcept { return slots_ - 1; }

    std::uint32_t cpu_index() const noexcept { return detail::current_cpu() & mask(); }

    static std::uint32_t thread_of(std::uint64_t owner) noexcept { return static_cast<std::uint32_t>(owner); }

    /// add() past last_slot: the hashed cache. Its rarer paths are tail
    /// calls, so that a hit saves no register and keeps nothing on the stack.
    PROCSAFE_SHARDED_OUT_OF_LINE void add_slow(T n) noexcept {
        if (strategy_ == shard_strategy::per_cpu) return add_on_cpu(n);
        detail::slot_cache_entry& e = detail::slot_cache_for(this);
        if (e.owner != this || e.generation != detail::fork_generation() ||
            e.incarnation != incarnation_.load(std::memory_order_relaxed)) [[unlikely]]
            return add_attached(e, n);
        add_to(e, n);
    }
    PROCSAFE_SHARDED_OUT_OF_LINE void add_attached(detail::slot_cache_entry& e, T n) noexcept { add_to(attach(e), n); }
    PROCSAFE_SHARDED_OUT_OF_LINE void add_on_cpu(T n) noexcept {
        // Never cached: the thread may run on another CPU at its next add.
        std::atomic_ref<T>(lines()[cpu_index()].value).fetch_add(n, std::memory_order_relaxed);
    }
    static void add_to(const detail::slot_cache_entry& e, T n) noexcept {
        std::atomic_ref<T> v(static_cast<slot*>(e.slot)->value);
        if (e.exclusive) {
            // Only an owned slot goes to the inlined path, which stores with
            // no lock prefix; a shared line (the overflow line, per_process)
            // costs a fetch_add anyway. The generation copied is the one e
            // was filled under: a fork since leaves both stale.
            detail::last_slot = e;
            v.store(detail::wrapping_add(v.load(std::memory_order_relaxed), n), std::memory_order_relaxed);
        } else {
            v.fetch_add(n, std::memory_order_relaxed);
        }
    }

    /// The slowest path: find this thread's slot and remember it in e.
    PROCSAFE_SHARDED_OUT_OF_LINE const detail::slot_cache_entry& attach(detail::slot_cache_entry& e) noexcept {
        detail::watch_forks();  // for writers
        const std::uint64_t generation = detail::current_generation();
        const std::uint64_t incarnation = own_incarnation();
        slot* s = nullptr;
        bool exclusive = false;
        if (strategy_ == shard_strategy::per_process) {
            const std::uint32_t pid = detail::current_pid();
            s = &lines()[(pid * 2654435761u) & mask()];
        } else if (strategy_ == shard_strategy::per_cpu) {
            // Only a writer gets here: it keeps the slot of the CPU it was made
            // on (fetch_add keeps that exact if the thread migrates).
            s = &lines()[cpu_index()];
        } else {
            s = claim(exclusive);
        }
        e = {this, generation, incarnation, s, exclusive};
        return e;
    }

    slot* claim(bool& exclusive) noexcept {
        const std::uint64_t me = detail::writer_identity();
        slot* all = lines();
        exclusive = true;
        // 1. A slot this thread already owns (cache evicted, or a second mapping).
        for (std::uint32_t i = 0; i < slots_; ++i)
            if (all[i].owner.load(std::memory_order_acquire) == me) return &all[i];
        // 2. A free slot, starting at a spot that spreads writers out.
        const std::uint32_t start = (thread_of(me) * 2654435761u) & mask();
        for (std::uint32_t k = 0; k < slots_; ++k) {
            slot& s = all[(start + k) & mask()];
            std::uint64_t expected = 0;
            if (s.owner.load(std::memory_order_relaxed) == 0 &&
                s.owner.compare_exchange_strong(expected, me, std::memory_order_acquire))
                return &s;
        }
        // 3. A slot whose owner is gone: its count stays, we continue it. The
        // compare-and-swap is on the whole owner word: if the dead owner's
        // thread id was reused meanwhile, the new thread does not match it
        // (another number), so it cannot believe the slot its own.
        for (std::uint32_t i = 0; i < slots_; ++i) {
            std::uint64_t owner = all[i].owner.load(std::memory_order_relaxed);
            if (owner == 0 || owner == overflow || !detail::thread_gone(thread_of(owner))) continue;
            PROCSAFE_TEST_HOOK("sharded.takeover");
            if (all[i].owner.compare_exchange_strong(owner, me, std::memory_order_acquire)) return &all[i];
        }
        // 4. More live writers than slots: the shared overflow line.
        exclusive = false;
        return &all[slots_];
    }

    /// This object's incarnation (an object of an older layout has none: the
    /// first process to look gives it one).
    std::uint64_t own_incarnation() noexcept {
        std::uint64_t i = incarnation_.load(std::memory_order_relaxed);
        if (i == 0) {
            const std::uint64_t drawn = detail::draw_object_incarnation(this);
            i = incarnation_.compare_exchange_strong(i, drawn, std::memory_order_relaxed) ? drawn : i;
        }
        return i;
    }

    std::uint32_t slots_;
    shard_strategy strategy_;
    // Drawn at construction: a thread's cached slot is valid only for the
    // object it was found in, not for another mapped later at the same address.
    std::atomic<std::uint64_t> incarnation_{0};
};

namespace detail {
template <class T>
struct object_traits<sharded_counter<T>> {
    static_assert(sizeof(sharded_counter<T>) % cache_line == 0);
    static constexpr type_facts facts() {
        return value_facts<T>(object_kind::sharded_counter, sizeof(sharded_counter<T>), alignof(sharded_counter<T>));
    }
};
}  // namespace detail

}  // namespace procsafe

#undef PROCSAFE_SHARDED_INLINE
#undef PROCSAFE_SHARDED_OUT_OF_LINE
