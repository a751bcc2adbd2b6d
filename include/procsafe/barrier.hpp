// procsafe/barrier.hpp: barrier: processes step through phases together.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/detail/futex.hpp>
#include <procsafe/detail/object_names.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

namespace procsafe {

// mimic: std::barrier (without the completion function)
/// A reusable barrier for processes: each phase completes when `expected`
/// arrivals have been made; then every waiter of that phase is released and
/// the next phase starts. Place it in a segment.
///
/// The whole state is one 64-bit word (phase, expected count, arrivals still
/// missing), changed by one compare-and-swap per arrival or drop: the arrival
/// that completes a phase is decided exactly once, and an arrival or a drop
/// racing with it lands either in the phase it completes or in the next
/// one, never half in each (libstdc++'s and folly's barriers keep each
/// decision on one word too).
///
/// Memory ordering: everything a process did before arriving is visible to
/// every process after the phase completes (seq_cst). Crash behaviour: a
/// process that dies without arriving stalls its phase; wait_for bounds the
/// wait, and arrive_and_drop() is how a leaving process stops being expected.
/// A refused call (an error) changes nothing.
///
/// ```
/// auto& step = seg.construct<procsafe::barrier>("step", 4);
/// // in each of 4 processes:
/// for (int phase = 0; phase < 1000; ++phase) {
///     compute(phase);
///     step.arrive_and_wait();  // nobody starts phase + 1 before all finished phase
/// }
/// ```
class alignas(cache_line) barrier {
public:
    using arrival_token = std::uint32_t;  ///< the phase an arrival belongs to

    /// Throws: procsafe::error (invalid_argument) unless 0 < expected <= max().
    explicit barrier(std::ptrdiff_t expected) {
        const auto e = static_cast<std::uint64_t>(checked(expected));
        std::atomic_ref<std::uint64_t>(word_).store(e << expected_shift | e, std::memory_order_relaxed);
    }
    barrier(const barrier&) = delete;
    barrier& operator=(const barrier&) = delete;

    /// The most participants a barrier takes (16 bits of its word each count).
    static constexpr std::ptrdiff_t max() noexcept { return 0xFFFF; }

    /// Arrives n times in the current phase; returns its token. The arrival
    /// that makes the last missing one completes the phase and releases the
    /// waiters. Process-safe. Lock-free.
    /// Throws: procsafe::error (invalid_argument) if n < 1 or n is more than
    /// the phase still misses; nothing is counted then.
    arrival_token arrive(std::ptrdiff_t n = 1) {
        return step(n, /*drop=*/false);
    }
    /// Blocks until the phase of `token` has completed.  Process-safe. Blocks.
    void wait(arrival_token token) const {
        (void)wait_.wait_until([&] { return phase_of(load()) != token; }, detail::wait_clock::time_point::max());
    }
    /// As wait(token), at most d; returns whether the phase completed.
    /// Process-safe. Blocks at most d.
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(arrival_token token, const std::chrono::duration<Rep, Period>& d) const {
        return wait_.wait_until([&] { return phase_of(load()) != token; }, detail::deadline_after(d));
    }
    /// arrive(), then wait() for that phase.
    void arrive_and_wait() { wait(arrive()); }
    /// Arrives in the current phase and is no longer expected in later ones
    /// (std::barrier's meaning: at any moment, concurrently with other
    /// arrivals). Process-safe. Lock-free.
    /// Throws: procsafe::error (invalid_argument) if nobody is expected any
    /// more; nothing changes then.
    void arrive_and_drop() { (void)step(1, /*drop=*/true); }
    /// The number of completed phases (modulo 2^32).  Process-safe. Lock-free.
    std::uint32_t phase() const noexcept { return phase_of(load()); }
    /// Participants expected in later phases (drops lower it). A snapshot.
    std::ptrdiff_t expected() const noexcept { return static_cast<std::ptrdiff_t>(expected_of(load())); }
    /// Arrivals the current phase still misses. A snapshot.
    std::ptrdiff_t missing() const noexcept { return static_cast<std::ptrdiff_t>(missing_of(load())); }

private:
    // word_: phase (bits 32-63) | expected in later phases (16-31) | arrivals still missing now (0-15)
    static constexpr unsigned expected_shift = 16, phase_shift = 32;
    static constexpr std::uint64_t mask16 = 0xFFFF;
    static std::uint32_t phase_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> phase_shift); }
    static std::uint64_t expected_of(std::uint64_t w) noexcept { return (w >> expected_shift) & mask16; }
    static std::uint64_t missing_of(std::uint64_t w) noexcept { return w & mask16; }

    std::uint64_t load() const noexcept {
        return std::atomic_ref<std::uint64_t>(word_).load(std::memory_order_seq_cst);
    }

    arrival_token step(std::ptrdiff_t n, bool drop) {
        auto word = std::atomic_ref<std::uint64_t>(word_);
        std::uint64_t w = word.load(std::memory_order_seq_cst);
        for (;;) {
            const std::uint64_t missing = missing_of(w), expected = expected_of(w);
            if (n < 1 || static_cast<std::uint64_t>(n) > missing) {
                throw detail::object_error(errc::invalid_argument, this,
                            std::string("barrier: ") + (drop ? "arrive_and_drop()" : "arrive(" + std::to_string(n) + ")") +
                                " in a phase that misses " + std::to_string(missing) + " arrivals");
            }
            const std::uint64_t later = drop ? expected - 1 : expected;
            const std::uint64_t left = missing - static_cast<std::uint64_t>(n);
            // The completing arrival starts the next phase in the same step.
            const std::uint64_t next = left == 0
                                           ? (std::uint64_t{phase_of(w) + 1u} << phase_shift) | later << expected_shift | later
                                           : (w & ~(mask16 << expected_shift | mask16)) | later << expected_shift | left;
            PROCSAFE_TEST_HOOK("barrier.arrive");
            if (word.compare_exchange_weak(w, next, std::memory_order_seq_cst)) {
                if (left == 0) wait_.notify();
                return phase_of(w);
            }
        }
    }

    static std::int64_t checked(std::ptrdiff_t expected) {
        if (expected < 1 || expected > max()) {
            throw error(errc::invalid_argument, {}, {},
                        "barrier: expected must be 1 to " + std::to_string(max()) + ", not " + std::to_string(expected));
        }
        return static_cast<std::int64_t>(expected);
    }

    alignas(8) mutable std::uint64_t word_;
    alignas(64) mutable detail::wait_state wait_;  // the other half of the line: waiters' checks do not disturb arrivals
};

namespace detail {
template <>
struct object_traits<barrier> {
    static constexpr type_facts facts() {
        return value_facts<std::uint64_t>(object_kind::barrier, sizeof(barrier), alignof(barrier));  // the state word
    }
};
}  // namespace detail

}  // namespace procsafe
