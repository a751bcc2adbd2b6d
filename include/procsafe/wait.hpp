// procsafe/wait.hpp: waiting across processes for a counter's value (wait, wait_at_least, wait_equal).
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

// Waiting across processes for a counter's value: wait(pred),
// wait_at_least(n), wait_equal(v), each with _for and _until. Every atomic
// and mutex counter, and every element of a counter_array, has them (the
// latch and the barrier are built on them).
//
// Wait on the counter's state, not on a message: a waiter that starts after
// the value got there returns at once, so no wake-up can be missed. Waking is
// process-shared: a futex on a 32-bit word beside the value on Linux
// (detail/futex.hpp), bounded polling elsewhere. An update makes no system
// call unless a waiter has announced itself. A waiter sleeps in slices of at
// most 1 s and re-checks by itself; a waiter killed while waiting costs the
// others at most one extra wake-up.
//
// ```
// auto& ready = seg.construct<procsafe::atomic_counter<int>>("ready");
// // in each of 4 workers, once set up:
// ready.increment();
// // in the parent:
// if (!ready.wait_at_least_for(4, std::chrono::seconds(5))) { /* a worker died or hung */ }
// ```

#include <procsafe/detail/arith.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/futex.hpp>

#include <chrono>
#include <concepts>
#include <optional>
#include <utility>

namespace procsafe {

/// The waiting operations every counter shares (mixed in with CRTP; the
/// derived class keeps a wait_state, hands it out by wait_state_ref(),
/// calls notify() after every change of its value, and reads the value for
/// a waiter with value_until(deadline), which returns nullopt when it could
/// not read it in time: a mutex counter whose lock is held past the deadline).
template <class Derived, class T>
class waitable {
public:
    /// Blocks until pred(value()) is true. Waits on the value's state, not on
    /// a message: a waiter that starts after the value got there returns at
    /// once. Process-safe. Blocks (a futex on Linux, polling elsewhere).
    template <class Pred>
    void wait(Pred pred) const {
        (void)wait_until_deadline(std::move(pred), detail::wait_clock::time_point::max());
    }
    /// As wait(pred), for at most d. Returns whether pred held. Any duration
    /// type works (a narrow Rep too); zero, negative and NaN durations do not
    /// wait. Returns false by the deadline also when the value could not be
    /// read (a mutex counter whose lock another process holds).
    /// Process-safe. Blocks at most d (plus scheduling).
    template <class Pred, class Rep, class Period>
    [[nodiscard]] bool wait_for(Pred pred, const std::chrono::duration<Rep, Period>& d) const {
        return wait_until_deadline(std::move(pred), detail::deadline_after(d));
    }
    /// As wait(pred), until tp at most (any clock). Returns whether pred held,
    /// as wait_for.  Process-safe. Blocks at most until tp (plus scheduling).
    template <class Pred, class Clock, class Duration>
    [[nodiscard]] bool wait_until(Pred pred, const std::chrono::time_point<Clock, Duration>& tp) const {
        return wait_until_deadline(std::move(pred), detail::deadline_at(tp));
    }

    // The predicates below capture by reference (the wait returns before n
    // goes): a closure holding an over-aligned T, passed by value, would
    // bring back GCC's ABI note that detail::in_param avoids.
    /// Blocks until value() >= n (a parent waiting for n workers to report).
    void wait_at_least(detail::in_param<T> n) const requires std::totally_ordered<T> {
        wait([&n](const T& v) { return !(v < n); });
    }
    template <class Rep, class Period>
    [[nodiscard]] bool wait_at_least_for(detail::in_param<T> n, const std::chrono::duration<Rep, Period>& d) const
        requires std::totally_ordered<T> {
        return wait_for([&n](const T& v) { return !(v < n); }, d);
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool wait_at_least_until(detail::in_param<T> n, const std::chrono::time_point<Clock, Duration>& tp) const
        requires std::totally_ordered<T> {
        return wait_until([&n](const T& v) { return !(v < n); }, tp);
    }

    /// Blocks until value() == v.
    void wait_equal(detail::in_param<T> v) const requires std::equality_comparable<T> {
        wait([&v](const T& x) { return x == v; });
    }
    template <class Rep, class Period>
    [[nodiscard]] bool wait_equal_for(detail::in_param<T> v, const std::chrono::duration<Rep, Period>& d) const
        requires std::equality_comparable<T> {
        return wait_for([&v](const T& x) { return x == v; }, d);
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool wait_equal_until(detail::in_param<T> v, const std::chrono::time_point<Clock, Duration>& tp) const
        requires std::equality_comparable<T> {
        return wait_until([&v](const T& x) { return x == v; }, tp);
    }

protected:
    waitable() = default;
    /// After every change of the value: wakes waiters, if there are any.
    void notify(std::memory_order order = std::memory_order_seq_cst) const noexcept {
        self().wait_state_ref().notify(order);
    }

private:
    const Derived& self() const noexcept { return static_cast<const Derived&>(*this); }

    template <class Pred>
    bool wait_until_deadline(Pred pred, detail::wait_clock::time_point deadline) const {
        return self().wait_state_ref().wait_until(
            [&] {
                const auto v = self().value_until(deadline);
                return v.has_value() && static_cast<bool>(pred(*v));
            },
            deadline);
    }
};

}  // namespace procsafe
