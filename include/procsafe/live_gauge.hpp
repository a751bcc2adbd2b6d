// procsafe/live_gauge.hpp: a gauge that is the sum of live processes' contributions.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/detail/arith.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/detail/thread_cache.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace procsafe {

/// How a reader (segment_view, the Prometheus exposition) combines a
/// live_gauge's per-process values: client_python's multiprocess modes of a
/// gauge. "live" modes count the processes that run; the others also count
/// a dead process whose slot no process has taken over yet (a new process
/// takes a dead one's slot, zeroed, so what they keep is bounded by the
/// slots). Stored in the gauge; a gauge made before it existed reads livesum.
enum class gauge_aggregation : std::uint8_t {
    livesum = 0,  ///< the live processes' values added up: value()
    liveall = 1,  ///< one sample per live process, labelled pid
    livemin = 2,
    livemax = 3,
    all = 4,  ///< one sample per process holding a slot, live or dead, labelled pid
    min = 5,
    max = 6,
};

/// The name client_python gives the mode ("livesum"...); nullptr for a value out of range.
constexpr const char* aggregation_name(gauge_aggregation a) noexcept {
    switch (a) {
        case gauge_aggregation::livesum: return "livesum";
        case gauge_aggregation::liveall: return "liveall";
        case gauge_aggregation::livemin: return "livemin";
        case gauge_aggregation::livemax: return "livemax";
        case gauge_aggregation::all: return "all";
        case gauge_aggregation::min: return "min";
        case gauge_aggregation::max: return "max";
    }
    return nullptr;
}

/// A gauge that is the sum of every live process's own contribution: "in
/// flight" requests, open connections, busy workers. A process adds to and
/// sets its own contribution; when it dies, SIGKILL included, its
/// contribution drops out of value() by itself (client_python's "livesum"
/// without mark_process_dead, whose forgotten call leaves the gauges of
/// killed workers up for good).
///
/// Each process owns a slot (a 128-byte line) named by one 64-bit word: its
/// pid and its start time, so a pid reused by a later process is not taken
/// for the dead one (start times have the kernel's resolution, a clock tick
/// of 10 ms: the pid space would have to wrap within it). A slot changes
/// hands by one compare-and-swap on that whole word, so two processes can
/// never both take over one dead owner's slot. All threads of a process share
/// its slot. value() adds up the slots whose owner still runs; a process that
/// finds a dead owner's slot takes it over, zeroed. More live processes than
/// slots: the rest share an overflow slot whose contributions do not drop out.
///
/// PID namespaces: pids name processes only within one PID namespace, so a
/// live_gauge is used from the namespace it was made in. find() from a
/// process of another namespace (a container sharing /dev/shm, say) is
/// refused (`unsupported`), rather than misjudging the other side's
/// processes dead. A slot whose owner is of another namespace (a process
/// that found the gauge, then moved its children into a new namespace) is
/// never judged dead nor taken over: it counts until a process of its own
/// namespace sees it gone.
///
/// Forks: the per-thread slot cache is checked against a page the kernel
/// wipes in every child, so a child (fork(), _Fork(), clone()) takes a slot
/// of its own before its first add, never writes its parent's.
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
    static_assert((std::integral<T> && !std::is_same_v<std::remove_cv_t<T>, bool>) || std::floating_point<T>,
                  "procsafe::live_gauge<T>: T must be an integer or a floating-point type");
    static_assert(std::atomic_ref<T>::is_always_lock_free);
    friend struct detail::object_access;  // the slots live after the object, in storage the segment allocates

    struct alignas(cache_line) slot {
        // The owner: pid (low 32 bits) and the low 32 bits of its start time
        // (high 32 bits); 0: free; with `claiming` set: being taken over by
        // that process (a claimer killed mid-way leaves it to the next one).
        std::atomic<std::uint64_t> owner;
        std::atomic<std::uint32_t> pidns;  // the owner's PID namespace (0: unknown)
        std::uint32_t reserved;
        T value;
    };
    static constexpr std::uint64_t claiming = 0x8000'0000u;  // above any pid (PID_MAX_LIMIT is 2^22)
    static constexpr std::uint64_t overflow_owner = 1;       // the overflow slot: always "alive"
    static bool is_claiming(std::uint64_t owner) noexcept { return (owner & claiming) != 0; }
    static std::uint32_t pid_of(std::uint64_t owner) noexcept { return static_cast<std::uint32_t>(owner & 0x7fff'ffffu); }

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
            if (i < slots_ && !counts(all[i])) continue;
            sum = detail::wrapping_add(sum, std::atomic_ref<T>(const_cast<T&>(all[i].value)).load(std::memory_order_relaxed));
        }
        return sum;
    }
    /// Slots of live processes (the overflow slot not counted).  Cost: as value().
    std::size_t live_processes() const noexcept {
        std::size_t n = 0;
        for (std::uint32_t i = 0; i < slots_; ++i) n += counts(lines()[i]);
        return n;
    }
    std::size_t slots() const noexcept { return slots_; }

    /// How readers combine the processes' values (given at construction).
    gauge_aggregation aggregation() const noexcept { return aggregation_; }

    /// A slot's process and its value, as processes() reads them.
    struct process_value {
        std::uint32_t pid;
        T value;
        bool alive;  ///< false: dead, its slot not yet taken over by a new process
    };
    /// The processes holding a slot: live ones, and dead ones whose slot no
    /// process has taken over yet (at most slots() in all). The overflow
    /// slot is not among them (see overflow()). Process-safe. Never writes.
    /// Cost: as value(), and a vector.
    std::vector<process_value> processes() const {
        std::vector<process_value> out;
        const slot* all = lines();
        for (std::uint32_t i = 0; i < slots_; ++i) {
            const std::uint64_t owner = all[i].owner.load(std::memory_order_acquire);
            if (owner == 0 || is_claiming(owner)) continue;
            const T v = std::atomic_ref<T>(const_cast<T&>(all[i].value)).load(std::memory_order_relaxed);
            out.push_back({pid_of(owner), v, foreign(all[i]) || owner_alive(owner)});
        }
        return out;
    }
    /// What processes beyond slots() share: their contributions added up.
    T overflow() const noexcept {
        return std::atomic_ref<T>(const_cast<T&>(lines()[slots_].value)).load(std::memory_order_relaxed);
    }

    // For segment: the storage after the object, and its validation on find.
    static std::size_t procsafe_extra_bytes(std::size_t slots = default_slots,
                                            gauge_aggregation how = gauge_aggregation::livesum) {
        checked(how);
        return (checked(slots) + 1) * sizeof(slot);
    }
    bool procsafe_fits(std::size_t bytes_after) const noexcept {
        return slots_ >= 1 && slots_ <= max_slots && bytes_after >= (std::size_t{slots_} + 1) * sizeof(slot);
    }
    /// For segment::find: why this process may not use the gauge ("" if it may).
    std::string procsafe_refusal() const {
        const std::uint32_t here = detail::pid_namespace();
        if (pidns_ == 0 || here == 0 || pidns_ == here) return {};
        return "a live_gauge tells live processes by pid, and pids name processes only within one PID namespace: "
               "it was made in PID namespace " + std::to_string(pidns_) + ", this process is in " +
               std::to_string(here) + " (a container sharing /dev/shm?); use a live_gauge per namespace";
    }

private:
    /// Constructed by segment::construct<live_gauge<T>>(name, slots, aggregation).
    /// Throws: procsafe::error (invalid_argument) for 0 or more than
    /// max_slots, or an aggregation out of range.
    explicit live_gauge(std::size_t slots = default_slots, gauge_aggregation how = gauge_aggregation::livesum)
        : slots_(static_cast<std::uint32_t>(checked(slots))), pidns_(detail::pid_namespace()), aggregation_(checked(how)) {
        for (std::uint32_t i = 0; i <= slots_; ++i) ::new (static_cast<void*>(&lines()[i])) slot{{0}, {0}, 0, T{}};
        lines()[slots_].owner.store(overflow_owner, std::memory_order_relaxed);
        incarnation_.store(detail::draw_object_incarnation(this), std::memory_order_relaxed);
    }

    static std::size_t checked(std::size_t slots) {
        if (slots == 0 || slots > max_slots) {
            throw error(errc::invalid_argument, {}, {},
                        "a live_gauge has 1 to " + std::to_string(max_slots) + " slots, not " + std::to_string(slots));
        }
        return slots;
    }

    static gauge_aggregation checked(gauge_aggregation how) {
        if (aggregation_name(how) == nullptr) {
            throw error(errc::invalid_argument, {}, {},
                        "a live_gauge's aggregation is livesum, liveall, livemin, livemax, all, min or max, not " +
                            std::to_string(static_cast<unsigned>(how)));
        }
        return how;
    }

    slot* lines() const noexcept { return reinterpret_cast<slot*>(const_cast<live_gauge*>(this) + 1); }

    /// The owner word of the calling process.
    static std::uint64_t own_word() noexcept {
        return std::uint64_t{detail::current_pid()} | (detail::own_start_time() & 0xffff'ffffu) << 32;
    }
    /// True while the process an owner word names runs (a start of 0,
    /// unknown, trusts the pid alone).
    static bool owner_alive(std::uint64_t owner) noexcept {
        const std::uint32_t pid = pid_of(owner);
        if (pid == 0 || detail::process_gone(pid)) return false;
        const std::uint64_t start = owner >> 32;
        if (start == 0) return true;
        const std::uint64_t now = detail::process_start_time(pid);
        return now == 0 || (now & 0xffff'ffffu) == start;
    }
    /// A slot's owner in another PID namespace than the caller's: its pid
    /// says nothing here.
    static bool foreign(const slot& s) noexcept {
        const std::uint32_t ns = s.pidns.load(std::memory_order_relaxed);
        const std::uint32_t here = detail::pid_namespace();
        return ns != 0 && here != 0 && ns != here;
    }
    /// Does this (non-overflow) slot's value count in value()?
    static bool counts(const slot& s) noexcept {
        const std::uint64_t owner = s.owner.load(std::memory_order_acquire);
        if (owner == 0 || is_claiming(owner)) return false;
        return foreign(s) || owner_alive(owner);  // never drop a process we cannot judge
    }

    /// This process's slot: cached per thread (checked against this gauge's
    /// incarnation and the fork generation, as the sharded counter's), found
    /// or claimed on the slow path.
    slot& mine() noexcept {
        auto& e = detail::slot_cache_for(this);
        if (e.owner == this && e.generation == detail::fork_generation() &&
            e.incarnation == incarnation_.load(std::memory_order_relaxed)) [[likely]]
            return *static_cast<slot*>(e.slot);
        const std::uint64_t generation = detail::current_generation();
        slot* s = claim();
        e = {this, generation, incarnation_.load(std::memory_order_relaxed), s, false};
        return *s;
    }

    /// One claim at a time per process, so that two threads making their
    /// first add at once end up on one slot. A spin lock holding the claiming
    /// process's pid: a fork child, whose parent's thread may have held it at
    /// the fork, sees another pid and takes it.
    struct claim_guard {
        static std::atomic<std::uint32_t>& word() noexcept {
            static std::atomic<std::uint32_t> w{0};
            return w;
        }
        claim_guard() noexcept {
            const std::uint32_t me = detail::current_pid();
            for (;;) {
                std::uint32_t held = word().load(std::memory_order_relaxed);
                if (held != me && word().compare_exchange_weak(held, me, std::memory_order_acquire)) return;
                std::this_thread::yield();  // another thread of this process is claiming: for microseconds
            }
        }
        ~claim_guard() { word().store(0, std::memory_order_release); }
    };

    /// The word of a slot being claimed by the calling process: the claiming
    /// bit, the pid, and (high 32 bits) its PID namespace, so that anyone
    /// judging a claimer knows at once whether its pid means anything to them.
    static std::uint64_t claiming_word(std::uint32_t ns) noexcept {
        return claiming | std::uint64_t{detail::current_pid()} | std::uint64_t{ns} << 32;
    }
    /// Is the claimer a claiming word names gone? Never, as far as a process
    /// of another namespace can tell.
    static bool claimer_gone(std::uint64_t word) noexcept {
        const auto ns = static_cast<std::uint32_t>(word >> 32);
        const std::uint32_t here = detail::pid_namespace();
        if (ns != 0 && here != 0 && ns != here) return false;
        return detail::process_gone(pid_of(word));
    }
    /// May a slot holding `owner` be taken (free, or its owner or claimer gone)?
    static bool takeable(const slot& s, std::uint64_t owner) noexcept {
        if (owner == 0) return true;
        if (is_claiming(owner)) return claimer_gone(owner);
        return !foreign(s) && !owner_alive(owner);
    }

    /// Another copy of this library in the process (a shared library with
    /// hidden visibility, a plugin) has its own claim_guard: its threads may
    /// claim at the same moment as ours. After taking slot `i` (claiming),
    /// look for another slot of this process: published, use it; being
    /// claimed at a lower index, give ours up and wait for it; at a higher
    /// index, wait until it is published (use it) or given up (keep ours).
    /// Returns the slot to use, or nullptr to keep slot i. Waits are for this
    /// process's own threads, bounded anyway.
    slot* settle(std::uint32_t i, std::uint64_t me, std::uint64_t mine_claiming) noexcept {
        slot* all = lines();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        for (std::uint32_t j = 0; j < slots_; ++j) {
            if (j == i) continue;
            for (;;) {
                const std::uint64_t w = all[j].owner.load(std::memory_order_seq_cst);
                if (w == me && !foreign(all[j])) return &all[j];
                if (w != mine_claiming) break;
                if (j < i) return &all[j];  // the caller gives its slot up and waits for j
                if (std::chrono::steady_clock::now() > deadline) break;
                std::this_thread::yield();
            }
        }
        return nullptr;
    }

    slot* claim() noexcept {
        const claim_guard one_at_a_time;
        const std::uint64_t me = own_word();
        const std::uint32_t ns = detail::pid_namespace();
        const std::uint64_t mine_claiming = claiming_word(ns);
        slot* all = lines();
        for (int round = 0; round < 8; ++round) {
            for (std::uint32_t i = 0; i < slots_; ++i)  // already ours (another thread of this process claimed it)
                if (all[i].owner.load(std::memory_order_acquire) == me && !foreign(all[i])) return &all[i];
            bool retry = false;
            for (std::uint32_t i = 0; i < slots_ && !retry; ++i) {
                std::uint64_t owner = all[i].owner.load(std::memory_order_acquire);
                if (!takeable(all[i], owner)) continue;
                // Free, or its owner (or claimer) is gone. The compare-and-swap is
                // on the whole word: if another process took the slot meanwhile
                // (even one with the dead owner's pid), it fails.
                PROCSAFE_TEST_HOOK("live_gauge.takeover");
                const std::uint64_t before = owner;
                if (!all[i].owner.compare_exchange_strong(owner, mine_claiming, std::memory_order_seq_cst)) continue;
                if (slot* other = settle(i, me, mine_claiming)) {
                    // Another thread of this process has a slot: give ours back as it was.
                    std::uint64_t ours = mine_claiming;
                    all[i].owner.compare_exchange_strong(ours, before, std::memory_order_seq_cst);
                    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                    for (;;) {
                        const std::uint64_t w = other->owner.load(std::memory_order_seq_cst);
                        if (w == me) return other;
                        if (w != mine_claiming || std::chrono::steady_clock::now() > deadline) break;
                        std::this_thread::yield();
                    }
                    retry = true;  // it gave its slot up too: look again
                    continue;
                }
                std::atomic_ref<T>(all[i].value).store(T{}, std::memory_order_relaxed);
                all[i].pidns.store(ns, std::memory_order_relaxed);
                std::uint64_t ours = mine_claiming;
                if (all[i].owner.compare_exchange_strong(ours, me, std::memory_order_seq_cst)) return &all[i];
                retry = true;  // taken from us (cannot happen while we run): look again
            }
            if (!retry) break;
        }
        return &all[slots_];  // more live processes than slots
    }

    std::uint32_t slots_;
    std::uint32_t pidns_;  // the PID namespace it was made in (0: unknown)
    // Drawn at construction: a thread's cached slot is valid only for the
    // object it was found in, not for another mapped later at the same address.
    std::atomic<std::uint64_t> incarnation_{0};
    // In the line's spare bytes: gauges of segments made before it read 0, livesum.
    gauge_aggregation aggregation_ = gauge_aggregation::livesum;
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
