// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/counter.hpp>
#include <procsafe/detail/config.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/error.hpp>

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
/// Memory ordering: everything a process did before arriving is visible to
/// every process after the phase completes (seq_cst). Crash behaviour: a
/// process that dies without arriving stalls its phase; wait_for bounds the
/// wait, and arrive_and_drop() is how a leaving process stops being expected.
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

    /// Throws: procsafe::error (invalid_argument) unless 0 < expected.
    explicit barrier(std::ptrdiff_t expected) : expected_(checked(expected)) {}
    barrier(const barrier&) = delete;
    barrier& operator=(const barrier&) = delete;

    static constexpr std::ptrdiff_t max() noexcept { return std::numeric_limits<std::int32_t>::max(); }

    /// Arrives n times in the current phase; returns its token. The last
    /// arrival completes the phase and releases the waiters.
    /// Process-safe. Lock-free. Throws: procsafe::error (invalid_argument) if
    /// n < 1 or more arrivals are made than the phase expects.
    arrival_token arrive(std::ptrdiff_t n = 1) {
        const arrival_token phase = phase_.value();
        complete_if_last(phase, n, expected_.value());
        return phase;
    }
    /// Blocks until the phase of `token` has completed.  Process-safe. Blocks.
    void wait(arrival_token token) const {
        phase_.wait([token](std::uint32_t p) { return p != token; });
    }
    /// As wait(token), at most d; returns whether the phase completed.
    template <class Rep, class Period>
    bool wait_for(arrival_token token, const std::chrono::duration<Rep, Period>& d) const {
        return phase_.wait_for([token](std::uint32_t p) { return p != token; }, d);
    }
    /// arrive(), then wait() for that phase.
    void arrive_and_wait() { wait(arrive()); }
    /// Arrives in the current phase and is no longer expected in later ones.
    void arrive_and_drop() {
        const arrival_token phase = phase_.value();
        const std::int64_t still_expected = expected_.decrement();
        complete_if_last(phase, 1, still_expected + 1);
    }
    /// The number of completed phases (modulo 2^32).
    std::uint32_t phase() const noexcept { return phase_.value(); }

private:
    void complete_if_last(arrival_token phase, std::ptrdiff_t n, std::int64_t expected) {
        if (n < 1) throw error(errc::invalid_argument, {}, {}, "barrier: arrive(n) with n < 1");
        const std::int64_t arrived = arrived_.increment(n);
        if (arrived > expected) {
            throw error(errc::invalid_argument, {}, {},
                        "barrier: " + std::to_string(arrived) + " arrivals in a phase that expects " +
                            std::to_string(expected));
        }
        if (arrived == expected) {
            arrived_.fetch_sub(expected);  // reset first: a released process may arrive again at once
            phase_.store(phase + 1);       // releases the waiters of `phase`
        }
    }
    static std::int64_t checked(std::ptrdiff_t expected) {
        if (expected < 1 || expected > max()) throw error(errc::invalid_argument, {}, {}, "barrier: expected must be 1 or more");
        return static_cast<std::int64_t>(expected);
    }

    basic_counter<std::int64_t, atomic_sync> expected_;
    basic_counter<std::int64_t, atomic_sync> arrived_;
    basic_counter<std::uint32_t, atomic_sync> phase_;
};

namespace detail {
template <>
struct object_traits<barrier> {
    static constexpr type_facts facts() {
        return {object_kind::barrier, value_category::unsigned_integer, 4, 4, sizeof(barrier), alignof(barrier), 0, 0};
    }
};
}  // namespace detail

}  // namespace procsafe
