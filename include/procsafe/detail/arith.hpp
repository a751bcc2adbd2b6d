// procsafe/detail/arith.hpp: wrapping arithmetic and parameter passing for counter values.
// SPDX-License-Identifier: MIT
#pragma once

// Arithmetic around a counter's atomic step. C++20 defines fetch_add on a
// signed integer to wrap (two's complement), but `old + n` computed after it
// is signed overflow, undefined behaviour: a counter of int passing INT_MAX
// must wrap as its atomic does. So integers are added in their unsigned type.

#include <cstddef>
#include <type_traits>

namespace procsafe::detail {

/// How a T parameter is passed: by value, or by const reference when T is
/// aligned beyond std::max_align_t (a SIMD block in a mutex_counter): GCC
/// passes those by value differently since 4.6 and notes it at every such
/// function, in every build of a user who has one.
template <class T>
using in_param = std::conditional_t<(alignof(T) > alignof(std::max_align_t)), const T&, T>;

/// a + b; integers wrap around as the atomic fetch_add does.
template <class T>
constexpr T wrapping_add(const T& a, const T& b) noexcept(noexcept(a + b)) {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<std::remove_cv_t<T>, bool>) {
        using U = std::make_unsigned_t<T>;
        return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
    } else {
        return static_cast<T>(a + b);
    }
}

/// a - b; integers wrap around as the atomic fetch_sub does.
template <class T>
constexpr T wrapping_sub(const T& a, const T& b) noexcept(noexcept(a - b)) {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<std::remove_cv_t<T>, bool>) {
        using U = std::make_unsigned_t<T>;
        return static_cast<T>(static_cast<U>(static_cast<U>(a) - static_cast<U>(b)));
    } else {
        return static_cast<T>(a - b);
    }
}

}  // namespace procsafe::detail
