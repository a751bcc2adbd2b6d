// procsafe/metadata.hpp: monitoring metadata (help, unit, labels, metric type) stored with an object.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/error.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
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
    none = 4,       ///< not exported (its name then need not be a metric name)
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
/// kind's metric type, a help text naming its type and the object, e.g.
/// "procsafe atomic_counter<int64> 'jobs'"; the segment is a label).
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

/// True when s is well-formed UTF-8 (no overlong forms, no surrogates,
/// nothing above U+10FFFF): what Prometheus and JSON consumers require.
inline bool valid_utf8(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n = 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (s.size() - i - 1 < n) return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return false;
        }
        i += n + 1;
    }
    return true;
}

/// The bytes as printable ASCII: a control character, DEL, a byte above
/// 0x7F and a backslash as \xHH (\\ for a backslash). For naming what a
/// hostile segment holds in a message, a terminal or a log.
inline std::string escape_bytes(std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\\') out += "\\\\";
        else if (c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += ch;
        }
    }
    return out;
}

/// name made a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*:
/// other characters become '_', a leading digit gets a '_' before it).
inline std::string metric_name(std::string_view name) {
    std::string out;
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
        out += ok ? c : '_';
    }
    if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out.insert(out.begin(), '_');
    return out;
}

/// Why `name` cannot be exported as given as a Prometheus metric name
/// ([a-zA-Z_:][a-zA-Z0-9_:]*), or nullptr. client_python raises for such a
/// name and prometheus-cpp refuses it; procsafe refuses it at construction
/// rather than export it rewritten.
inline const char* metric_name_problem(std::string_view name) noexcept {
    if (name.empty()) return "a metric name must not be empty";
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                        (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return "an exported object's name is a Prometheus metric name, [a-zA-Z_:][a-zA-Z0-9_:]* (it would be "
                   "exported rewritten); use '_' for '-' and '.', or metric_type::none to keep it out of the export";
        }
    }
    return nullptr;
}

/// The label names of a label set, as a family's children store them in
/// their metadata's label: "method,code" (a label name has no ',').
inline std::vector<std::string_view> split_labels(std::string_view label) {
    std::vector<std::string_view> out;
    if (label.empty()) return out;
    for (std::size_t at = 0;;) {
        const auto comma = label.find(',', at);
        out.push_back(label.substr(at, comma == std::string_view::npos ? std::string_view::npos : comma - at));
        if (comma == std::string_view::npos) return out;
        at = comma + 1;
    }
}

/// The object name of a family's child: the series as Prometheus writes it,
/// family{method="GET",code="503"}, each value escaped (backslash, double
/// quote, newline, and a tab as \t, so that the name stays printable).
/// Deterministic: every process finds the same child for the same values.
template <class Name, class Value>
std::string series_name(std::string_view family, const std::vector<Name>& names, const std::vector<Value>& values) {
    std::string out(family);
    out += '{';
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) out += ',';
        out += std::string_view(names[i]);
        out += "=\"";
        for (const char c : std::string_view(i < values.size() ? std::string_view(values[i]) : std::string_view{})) {
            if (c == '\\') out += "\\\\";
            else if (c == '"') out += "\\\"";
            else if (c == '\n') out += "\\n";
            else if (c == '\t') out += "\\t";
            else out += c;
        }
        out += '"';
    }
    out += '}';
    return out;
}

/// The family an object is exported in: the part of a child's name before
/// its label set (see series_name), or the whole name.
inline std::string_view family_of(std::string_view name, std::string_view label, bool is_array) noexcept {
    if (is_array || label.empty()) return name;
    const auto brace = name.find('{');
    return brace == std::string_view::npos ? name : name.substr(0, brace);
}

/// The names an object is exported under in the Prometheus text format:
/// its family's name first (the name made valid, the unit appended unless
/// the name ends with it, "_total" for a counter), then every series name
/// its samples use (a histogram's family X has X_bucket, X_sum, X_count).
/// `metric` is the resolved type: counter, gauge or histogram.
inline std::vector<std::string> exported_names(std::string_view object, std::string_view unit, metric_type metric) {
    auto ends_with = [](std::string_view s, std::string_view suffix) {
        return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
    };
    std::string name = metric_name(object);
    if (!unit.empty()) {
        const std::string u = "_" + std::string(unit);
        if (!ends_with(name, u) && !ends_with(name, u + "_total")) name += u;
    }
    if (metric == metric_type::counter && !ends_with(name, "_total")) name += "_total";
    if (metric == metric_type::histogram) return {name, name + "_bucket", name + "_sum", name + "_count"};
    return {name};
}

/// A value that appears twice in `values`, if any. Cost: a sorted copy.
template <class String>
std::optional<std::string_view> repeated_value(const std::vector<String>& values) {
    std::vector<std::string_view> sorted(values.begin(), values.end());
    std::sort(sorted.begin(), sorted.end());
    const auto it = std::adjacent_find(sorted.begin(), sorted.end());
    if (it == sorted.end()) return std::nullopt;
    return *it;
}

/// Why these strings cannot be an object's metadata (help, unit, label
/// name, label values), or nothing: the rules construct() applies, and a
/// reader applies again to what it reads from a segment.
template <class String>
std::optional<std::string> metadata_problem(std::string_view help, std::string_view unit, std::string_view label,
                                            const std::vector<String>& label_values) {
    if (help.size() > max_help) return "help text longer than 1024 bytes";
    for (char c : help)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "help text with a control character";
    if (!valid_utf8(help)) return "help text that is not valid UTF-8";
    if (unit.size() > max_unit) return "unit longer than 32 bytes";
    for (char c : unit)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return "a unit has only [a-z0-9_]";
    // One label name (a counter_array's), or a family child's label set
    // "method,code" with one value per name.
    if (label.size() > max_label) return "label names longer than 64 bytes";
    const std::vector<std::string_view> names = split_labels(label);
    for (const std::string_view name : names) {
        if (name.empty()) return "a label name is [a-zA-Z_][a-zA-Z0-9_]*";
        for (std::size_t i = 0; i < name.size(); ++i) {
            const char c = name[i];
            const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
            if (!letter && !(i > 0 && c >= '0' && c <= '9')) return "a label name is [a-zA-Z_][a-zA-Z0-9_]*";
        }
        if (name.substr(0, 2) == "__") return "label names starting with __ are reserved (Prometheus)";
        if (name == "segment" || name == "le") return "the label names segment and le are the exporter's own";
    }
    if (const auto dup = repeated_value(names)) return "the label name '" + std::string(*dup) + "' repeated";
    if (names.size() > 1 && label_values.size() != names.size()) return "a label set needs one value per label name";
    if (label.empty() && !label_values.empty()) return "label values without a label name";
    for (std::string_view v : label_values) {
        if (v.size() > max_label_value) return "a label value longer than 128 bytes";
        for (char c : v)
            if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') return "a label value with a control character";
        if (!valid_utf8(v)) return "a label value that is not valid UTF-8";
    }
    // Two elements under one label value are one series twice: Prometheus
    // refuses the scrape, a Redis total takes each in turn.
    if (names.size() > 1) return std::nullopt;  // a label set: two labels may have one value
    if (const auto dup = repeated_value(label_values)) {
        return "the label value '" + escape_bytes(*dup) + "' repeated: each element needs its own";
    }
    return std::nullopt;
}

/// Throws invalid_argument naming the object when the metadata is malformed.
PROCSAFE_DECL void check_metadata(const metadata& m, std::string_view segment, std::string_view object);
#if PROCSAFE_OUT_OF_LINE
PROCSAFE_DECL void check_metadata(const metadata& m, std::string_view segment, std::string_view object) {
    auto bad = [&](const std::string& why) { throw error(errc::invalid_argument, segment, object, "metadata: " + why); };
    if (m.type != metric_type::automatic && m.type != metric_type::counter && m.type != metric_type::gauge &&
        m.type != metric_type::histogram && m.type != metric_type::none) {
        bad("unknown metric type");
    }
    if (const auto why = metadata_problem(m.help, m.unit, m.label, m.label_values)) bad(*why);
}
#endif

}  // namespace detail
}  // namespace procsafe
