// procsafe/detail/deadline.hpp: any duration or time point as a deadline on one clock, without overflow.
// SPDX-License-Identifier: MIT
#pragma once

// Turning any caller's duration or time point into a deadline on one clock,
// for every Rep, Period and Clock, without overflow.
//
// The obvious arithmetic is wrong at the edges: converting
// `time_point::max() - now` into a caller's `duration<short, milli>` wraps
// (a 50 ms wait became "forever"), `tp - Clock::now()` overflows for
// `time_point::min()`, and a NaN or infinite floating duration has no integer
// value. So the comparison is made in long double nanoseconds, which hold
// every 64-bit count exactly (x86's 80-bit long double; elsewhere the few
// nanoseconds of rounding are harmless), and the result saturates: anything
// beyond the clock's range is "no deadline", anything not positive is "now".

#include <chrono>
#include <cmath>
#include <cstdint>
#include <thread>
#include <type_traits>

namespace procsafe::detail {

using wait_clock = std::chrono::steady_clock;
using wide_nanoseconds = std::chrono::duration<long double, std::nano>;

/// d in long double nanoseconds, from Period's num and den (a duration_cast
/// would compute the ratio to nano in intmax_t, which overflows for exa).
template <class Rep, class Period>
constexpr long double to_wide_ns(const std::chrono::duration<Rep, Period>& d) noexcept {
    return static_cast<long double>(d.count()) * static_cast<long double>(Period::num) * 1e9L /
           static_cast<long double>(Period::den);
}

/// now + d, saturated to [now, wait_clock::time_point::max()]. A NaN or
/// non-positive d is now; +infinity and anything past the clock's range is max().
template <class Rep, class Period>
wait_clock::time_point deadline_after(const std::chrono::duration<Rep, Period>& d,
                                      wait_clock::time_point now = wait_clock::now()) noexcept {
    const long double ns = to_wide_ns(d);
    if (!(ns > 0)) return now;  // also NaN
    const long double room =
        static_cast<long double>((wait_clock::time_point::max() - now).count()) *
        (static_cast<long double>(wait_clock::period::num) * 1e9L / static_cast<long double>(wait_clock::period::den));
    if (!(ns < room)) return wait_clock::time_point::max();  // also +infinity
    const auto ticks = std::chrono::ceil<wait_clock::duration>(wide_nanoseconds(std::ceil(ns)));
    return now + ticks;
}

/// The wait_clock deadline for a time point of any clock: the time left
/// until tp, measured on tp's clock, after now on wait_clock.
template <class Clock, class Duration>
wait_clock::time_point deadline_at(const std::chrono::time_point<Clock, Duration>& tp) noexcept {
    const auto steady_now = wait_clock::now();
    const long double target = to_wide_ns(tp.time_since_epoch());
    const long double clock_now = std::is_same_v<Clock, wait_clock> ? to_wide_ns(steady_now.time_since_epoch())
                                                                     : to_wide_ns(Clock::now().time_since_epoch());
    return deadline_after(wide_nanoseconds(target - clock_now), steady_now);
}

/// Polls `ready` until it returns true or `deadline` passes; returns whether
/// it did. Backs off from yielding to 1 ms sleeps: only set-up paths (open,
/// find) wait here, never a counter.
template <class Ready>
bool poll_until(wait_clock::time_point deadline, Ready ready) {
    for (int round = 0;; ++round) {
        if (ready()) return true;
        if (wait_clock::now() >= deadline) return ready();
        if (round < 64) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace procsafe::detail
