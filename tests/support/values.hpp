// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/counter.hpp>

#include <cstdint>
#include <string>
#include <type_traits>

namespace procsafe_test {

/// A user struct for mutex counters: trivially copyable, with + and -.
struct money {
    std::int64_t cents;
    std::int32_t entries;
    friend money operator+(money a, money b) { return {a.cents + b.cents, a.entries + b.entries}; }
    friend money operator-(money a, money b) { return {a.cents - b.cents, a.entries - b.entries}; }
    friend bool operator==(const money&, const money&) = default;
};

/// The value n of T (for money: n cents in n entries).
template <class T>
T val(long long n) {
    if constexpr (std::is_arithmetic_v<T>) return static_cast<T>(n);
    else return T{n, static_cast<std::int32_t>(n)};
}

}  // namespace procsafe_test

namespace procsafe_test {
/// "c0", "c1", ... (not "c" + std::to_string(i): GCC 12 at -O3 warns on it,
/// a -Wrestrict false positive, GCC bug 105329).
inline std::string numbered(const char* prefix, int i) {
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}
}  // namespace procsafe_test
