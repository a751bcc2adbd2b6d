// procsafe/detail/cli_options.hpp: option checks shared by the procsafe command and procsafe-redis.
// SPDX-License-Identifier: MIT
#pragma once

// What the procsafe command and procsafe-redis share about their options.
//
// The one check of every command-line option that is a number of seconds
// (the procsafe command's watch --interval, flush's and fleet's intervals and
// timeouts): finite, within [min, max]. A NaN slips through a range check
// written as `v < min || v > max`, and 1e300 seconds overflows whatever
// counts it in milliseconds or a timeval, so both are refused here, before
// anything runs. Header-only and free of CLI11: seconds_option() takes any
// CLI11 option, usage_line() any CLI11 app.

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <system_error>
#include <string>
#include <string_view>

namespace procsafe::detail {

/// v in the shortest text that reads back: "0.01", "86400".
inline std::string seconds_text(double v) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

/// Why `text` is not a number of seconds from min to max (both included),
/// or "" when it is. Requires: 0 <= min <= max, both finite.
/// Never throws but std::bad_alloc.
inline std::string seconds_problem(const std::string& text, double min, double max) {
    // Decimal only, the whole text (no blanks, no hexadecimal, no sign but -).
    double v = std::nan("");
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v, std::chars_format::general);
    const bool number = !text.empty() && r.ec == std::errc{} && r.ptr == text.data() + text.size();
    if (number && std::isfinite(v) && v >= min && v <= max) return {};
    return "must be seconds from " + seconds_text(min) + " to " + seconds_text(max) + ", not '" + text + "'";
}

/// Adds the check to a CLI11 option and its range to the option's help:
/// `seconds_option(app.add_option("--interval", v, "seconds between refreshes"), 0.01, 86400)`.
template <class Option>
Option* seconds_option(Option* option, double min, double max) {
    option->description(option->get_description() + " (seconds from " + seconds_text(min) + " to " + seconds_text(max) + ")");
    option->check([min, max](const std::string& text) { return seconds_problem(text, min, max); });
    return option;
}

/// A usage error in one line, naming the subcommands parsed and, in CLI11's
/// words, the option: "procsafe watch: --interval: must be seconds ...".
template <class App>
std::string usage_line(const App& app, std::string_view what) {
    std::string line = "procsafe";
    for (const App* sub = &app; !sub->get_subcommands().empty();) {
        sub = sub->get_subcommands().front();
        line += " " + sub->get_name();
    }
    return line + ": " + std::string(what) + "\n";
}

}  // namespace procsafe::detail
