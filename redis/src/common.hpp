// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// What the flusher and the readers share: exact integers as text, names.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace procsafe::redis::detail {

// Counter values are int64 or uint64; their differences need 65 bits.
// (__extension__: -Wpedantic knows __int128 is GCC's and clang's, not ISO's.)
__extension__ typedef __int128 i128;

/// A decimal integer ("-12", "18446744073709551615"): exact, or nothing.
std::optional<i128> parse_integer(std::string_view s);
std::string to_text(i128 v);
/// A double in the shortest text that reads back exactly.
std::string to_text(double v);
/// A decimal number (integer or fraction), or nothing.
std::optional<double> parse_real(std::string_view s);

/// Throws std::invalid_argument unless `s` can be a host id or a namespace:
/// 1 to 200 printable bytes, none of space, '|', '{', '}'.
void check_id(std::string_view what, std::string_view s);

/// The host's name (gethostname), or "localhost".
std::string host_name();

/// Seconds, monotonic.
double now_seconds();

}  // namespace procsafe::redis::detail
