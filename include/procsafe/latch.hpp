// procsafe/latch.hpp: latch: a count down to zero that processes wait on.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/counter.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/object_names.hpp>
#include <procsafe/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

namespace procsafe {

// mimic: std::latch
/// A single-use countdown across processes: N processes count down, any
/// number wait for zero. Place it in a segment.
///
/// Memory ordering: count_down is a release, a wait that returns is an
/// acquire (both seq_cst). Crash behaviour: a process that dies before it
/// counts down leaves the latch short forever; wait_for / wait_until bound the
/// wait for such cases.
///
/// ```
/// auto& ready = seg.construct<procsafe::latch>("ready", 4);
/// // in each of 4 workers, after setting up:
/// ready.count_down();
/// // in the parent:
/// if (!ready.wait_for(std::chrono::seconds(5))) { /* a worker died or hung */ }
/// ```
class alignas(cache_line) latch {
public:
    /// Throws: procsafe::error (invalid_argument) if expected < 0.
    explicit latch(std::ptrdiff_t expected) : count_(checked(expected)) {}
    latch(const latch&) = delete;
    latch& operator=(const latch&) = delete;

    static constexpr std::ptrdiff_t max() noexcept { return std::numeric_limits<std::int64_t>::max(); }

    /// Counts down by n and wakes the waiters when it reaches zero.
    /// Process-safe. Lock-free. Throws: procsafe::error (invalid_argument) if
    /// n < 0 or n is more than what is left (std::latch leaves that undefined).
    void count_down(std::ptrdiff_t n = 1) {
        std::int64_t left = count_.value();
        do {
            if (n < 0 || n > left) {
                throw detail::object_error(errc::invalid_argument, this,
                                           "latch: count_down(" + std::to_string(n) + ") with " + std::to_string(left) + " left");
            }
        } while (!count_.compare_exchange(left, left - n));
    }
    /// True once the count is zero.  Process-safe. Lock-free.
    bool try_wait() const noexcept { return count_.value() == 0; }
    /// The count left (a snapshot: other processes may count down at once).
    /// Process-safe. Lock-free.
    std::ptrdiff_t count() const noexcept { return static_cast<std::ptrdiff_t>(count_.value()); }
    /// Blocks until the count is zero.  Process-safe. Blocks.
    void wait() const { count_.wait_equal(0); }
    /// As wait(), at most d; returns whether the count reached zero.
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(const std::chrono::duration<Rep, Period>& d) const {
        return count_.wait_equal_for(0, d);
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool wait_until(const std::chrono::time_point<Clock, Duration>& tp) const {
        return count_.wait_equal_until(0, tp);
    }
    /// count_down(n), then wait().
    void arrive_and_wait(std::ptrdiff_t n = 1) {
        count_down(n);
        wait();
    }

private:
    static std::int64_t checked(std::ptrdiff_t expected) {
        if (expected < 0) throw error(errc::invalid_argument, {}, {}, "latch: a negative count");
        return static_cast<std::int64_t>(expected);
    }
    basic_counter<std::int64_t, atomic_sync> count_;
};

namespace detail {
template <>
struct object_traits<latch> {
    static constexpr type_facts facts() {
        return value_facts<std::int64_t>(object_kind::latch, sizeof(latch), alignof(latch));  // the count
    }
};
}  // namespace detail

}  // namespace procsafe
