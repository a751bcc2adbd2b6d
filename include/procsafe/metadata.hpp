// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace procsafe {

/// What an object means to a monitoring system (Prometheus' metric types).
enum class metric_type : std::uint8_t {
    automatic = 0,  ///< from the object's kind: counters count, a live_gauge and a latch are gauges
    counter = 1,    ///< only goes up (exported with a _total suffix)
    gauge = 2,      ///< goes up and down
    histogram = 3,  ///< a procsafe::histogram
};

/// Monitoring metadata, given at construction and stored with the object in
/// the segment, where `procsafe show`, `procsafe export` and
/// procsafe::segment_view read it:
///
/// ```
/// seg.construct<procsafe::sharded_counter<std::int64_t>>(
///     "requests", procsafe::metadata{.help = "Requests handled.", .type = procsafe::metric_type::counter});
/// seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>(
///     "responses", procsafe::metadata{.help = "Responses by status code.", .label = "code",
///                                     .label_values = {"200", "404", "500"}},
///     3);
/// ```
///
/// An object constructed without metadata is exported with defaults (its
/// kind's metric type, a help text naming the object and its segment).
struct metadata {
    // Every member has a default initializer, so that a designated
    // initializer may name only some (and -Wextra stays quiet).
    std::string_view help{};  ///< one line of text (at most 1,024 bytes, no control characters)
    std::string_view unit{};  ///< "seconds", "bytes"...: [a-z0-9_], at most 32 bytes
    metric_type type = metric_type::automatic;
    /// A counter_array's label name ("code"), [a-zA-Z_][a-zA-Z0-9_]*, at most
    /// 64 bytes; its elements are told apart by it when exported.
    std::string_view label{};
    /// One value per element (at most 128 bytes each); empty: the index.
    std::vector<std::string_view> label_values{};
};

namespace detail {

/// True when the first of Args is a metadata (construct's overload with
/// metadata takes it; the one without must not).
template <class... Args>
inline constexpr bool metadata_first = false;
template <class First, class... Rest>
inline constexpr bool metadata_first<First, Rest...> = std::is_same_v<std::remove_cvref_t<First>, metadata>;

inline constexpr std::size_t max_help = 1024, max_unit = 32, max_label = 64, max_label_value = 128;

/// Throws invalid_argument naming the object when the metadata is malformed.
inline void check_metadata(const metadata& m, std::string_view segment, std::string_view object) {
    auto bad = [&](const std::string& why) { throw error(errc::invalid_argument, segment, object, "metadata: " + why); };
    if (m.help.size() > max_help) bad("help text longer than 1024 bytes");
    for (char c : m.help)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) bad("help text with a control character");
    if (m.unit.size() > max_unit) bad("unit longer than 32 bytes");
    for (char c : m.unit)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) bad("a unit has only [a-z0-9_]");
    if (m.type != metric_type::automatic && m.type != metric_type::counter && m.type != metric_type::gauge &&
        m.type != metric_type::histogram) {
        bad("unknown metric type");
    }
    if (m.label.size() > max_label) bad("label name longer than 64 bytes");
    for (std::size_t i = 0; i < m.label.size(); ++i) {
        const char c = m.label[i];
        const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!letter && !(i > 0 && c >= '0' && c <= '9')) bad("a label name is [a-zA-Z_][a-zA-Z0-9_]*");
    }
    if (m.label.substr(0, 2) == "__") bad("label names starting with __ are reserved (Prometheus)");
    if (m.label == "segment" || m.label == "le") bad("the label names segment and le are the exporter's own");
    if (m.label.empty() && !m.label_values.empty()) bad("label values without a label name");
    for (std::string_view v : m.label_values) {
        if (v.size() > max_label_value) bad("a label value longer than 128 bytes");
        for (char c : v)
            if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') bad("a label value with a control character");
    }
}

}  // namespace detail
}  // namespace procsafe
