// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "common.hpp"

#include <procsafe/prometheus.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <ctime>
#include <limits>
#include <sstream>
#include <variant>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

namespace procsafe::cli {

std::string command_name;

void print_error(std::string_view line) {
    // A message may quote what a segment holds: never a control sequence on a terminal.
    const std::string text =
        fmt::format("procsafe{}{}: {}\n", command_name.empty() ? "" : " ", command_name, terminal_safe(line));
    std::fputs(text.c_str(), stderr);
}

std::string describe(const procsafe::error& e) {
    const std::string& seg = e.segment_name();
    switch (e.code_value()) {
        case errc::segment_not_found: return fmt::format("segment '{}' not found", seg);
        case errc::permission_denied: return fmt::format("segment '{}': permission denied ({})", seg, e.detail());
        case errc::bad_magic:
            // A FIFO, a link...: say what it is (the wrong magic number needs no more words).
            if (e.detail().rfind("not a procsafe segment", 0) == 0) return fmt::format("'{}' is not a procsafe segment", seg);
            return fmt::format("'{}' is not a procsafe segment: {}", seg, e.detail());
        case errc::incompatible_layout: return fmt::format("segment '{}': incompatible or damaged: {}", seg, e.detail());
        case errc::timed_out: return fmt::format("segment '{}' is not initialized: {}", seg, e.detail());
        case errc::invalid_name:
            return e.object_name().empty() ? fmt::format("'{}' is not a valid segment name: {}", seg, e.detail())
                                           : std::string(e.what());
        default: return e.what();
    }
}

procsafe::segment_view open_view(std::string_view name) {
    try {
        return procsafe::segment_view::open(name);
    } catch (const procsafe::error& e) {
        throw failure(describe(e));
    }
}

std::string terminal_safe(std::string_view s) {
    std::string out;
    auto escape = [&](unsigned char c) { out += fmt::format("\\x{:02x}", c); };
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) escape(c);
        else if (c < 0x80) out += static_cast<char>(c);
        else {
            // Whole UTF-8 characters pass, but not the C1 controls (U+0080 to
            // U+009F: U+009B is a CSI to some terminals) and no stray byte.
            std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            const std::string_view ch = s.substr(i, n);
            const bool c1 = c == 0xC2 && ch.size() == 2 && static_cast<unsigned char>(ch[1]) < 0xA0;
            if (ch.size() == n && !c1 && procsafe::detail::valid_utf8(ch)) {
                out += ch;
                i += n - 1;
            } else {
                escape(c);
            }
        }
    }
    return out;
}

std::string counted(std::uint64_t n, std::string_view noun) {
    return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
}

std::string human_bytes(std::uint64_t bytes) {
    if (bytes < 1024) return fmt::format("{} B", bytes);
    static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(bytes) / 1024;
    std::size_t u = 0;
    while (v >= 1024 && u + 1 < std::size(units)) {
        v /= 1024;
        ++u;
    }
    return v < 10 ? fmt::format("{:.1f} {}", v, units[u]) : fmt::format("{:.0f} {}", v, units[u]);
}

std::string local_time(std::uint64_t ns) {
    const std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000u);
    std::tm tm{};
    if (::localtime_r(&t, &tm) == nullptr) return "?";
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::string user_name(std::uint32_t uid) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(4096);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) return pw.pw_name;
    return std::to_string(uid);
}

std::string group_name(std::uint32_t gid) {
    group gr{};
    group* found = nullptr;
    std::vector<char> buf(4096);
    if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) return gr.gr_name;
    return std::to_string(gid);
}

std::string mode_string(std::uint32_t mode) { return fmt::format("{:04o}", mode & 07777); }

std::string kind_name(procsafe::detail::object_kind k) { return procsafe::to_string(k); }

std::string metric_name(procsafe::metric_type m) {
    switch (m) {
        case procsafe::metric_type::counter: return "counter";
        case procsafe::metric_type::gauge: return "gauge";
        case procsafe::metric_type::histogram: return "histogram";
        case procsafe::metric_type::automatic:
        case procsafe::metric_type::none: break;
    }
    return "-";
}

std::string status_name(procsafe::object_status s) {
    switch (s) {
        case procsafe::object_status::ready: return "ready";
        case procsafe::object_status::constructing: return "constructing";
        case procsafe::object_status::constructor_died: return "constructor_died";
        case procsafe::object_status::corrupt: return "corrupt";
    }
    return "unknown";
}

namespace {
bool is_array(const procsafe::object_info& o) {
    return o.kind == procsafe::detail::object_kind::atomic_counter_array ||
           o.kind == procsafe::detail::object_kind::mutex_counter_array;
}
}  // namespace

std::string element_label(const procsafe::object_info& o, std::size_t i) {
    const std::string label = o.label.empty() ? "index" : o.label;
    const std::string value = i < o.label_values.size() ? o.label_values[i] : std::to_string(i);
    return label + "=\"" + procsafe::prometheus_exposition::escape_label(value) + "\"";
}

std::vector<series> series_of(const procsafe::object_info& o) {
    std::vector<series> out;
    if (o.status != procsafe::object_status::ready) return out;
    if (o.histogram) {
        out.push_back({o.name + "_count", o.histogram->count});
        out.push_back({o.name + "_sum", o.histogram->sum});
        return out;
    }
    if (is_array(o)) {
        for (std::size_t i = 0; i < o.values.size(); ++i) out.push_back({o.name + "{" + element_label(o, i) + "}", o.values[i]});
        return out;
    }
    if (!o.values.empty()) out.push_back({o.name, o.values[0]});
    return out;
}

double as_double(const procsafe::number& n) {
    return std::visit(
        [](auto v) -> double {
            if constexpr (std::is_same_v<decltype(v), std::monostate>) return std::numeric_limits<double>::quiet_NaN();
            else return static_cast<double>(v);
        },
        n);
}

nlohmann::ordered_json json_of(const procsafe::number& n) {
    if (const auto* i = std::get_if<std::int64_t>(&n)) return *i;
    if (const auto* u = std::get_if<std::uint64_t>(&n)) return *u;
    if (const auto* d = std::get_if<double>(&n)) {
        if (std::isfinite(*d)) return *d;
        return procsafe::to_string(n);  // JSON has no NaN or infinity: "NaN", "+Inf", "-Inf"
    }
    return nullptr;
}

nlohmann::ordered_json json_of(const procsafe::segment_info& i) {
    return {
        {"name", i.name},
        {"size", i.size},
        {"bytes_used", i.object_bytes},
        {"objects", i.objects},
        {"uid", i.uid},
        {"user", user_name(i.uid)},
        {"gid", i.gid},
        {"group", group_name(i.gid)},
        {"mode", mode_string(i.mode)},
        {"creator_pid", i.creator_pid},
        {"creator_alive", i.creator_alive},
        {"created", local_time(i.created_ns)},
        {"created_ns", i.created_ns},
        {"incarnation", i.incarnation},
    };
}

nlohmann::ordered_json json_of(const procsafe::object_info& o) {
    nlohmann::ordered_json j = {
        {"name", o.name},
        {"kind", kind_name(o.kind)},
        {"type", o.type},
        {"metric", metric_name(o.metric)},
        {"status", status_name(o.status)},
        {"help", o.help},
        {"unit", o.unit},
    };
    if (o.status != procsafe::object_status::ready) j["constructor_pid"] = o.constructor_pid;
    if (o.histogram) {
        const auto& h = *o.histogram;
        nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < h.counts.size(); ++b) {
            cumulative += h.counts[b];
            buckets.push_back({{"le", b < h.bounds.size() ? json_of(procsafe::number{h.bounds[b]}) : "+Inf"},
                               {"count", h.counts[b]},
                               {"cumulative", cumulative}});
        }
        j["histogram"] = {{"buckets", buckets}, {"sum", json_of(procsafe::number{h.sum})}, {"count", h.count}};
    } else if (is_array(o)) {
        j["label"] = o.label.empty() ? "index" : o.label;
        nlohmann::ordered_json elements = nlohmann::ordered_json::array();
        for (std::size_t i = 0; i < o.values.size(); ++i) {
            elements.push_back({{"label_value", i < o.label_values.size() ? o.label_values[i] : std::to_string(i)},
                                {"value", json_of(o.values[i])}});
        }
        j["elements"] = elements;
    } else if (!o.values.empty()) {
        j["value"] = json_of(o.values[0]);
    }
    if (!o.details.empty()) {
        nlohmann::ordered_json d = nlohmann::ordered_json::object();
        for (const auto& [k, v] : o.details) d[k] = json_of(v);
        j["details"] = d;
    }
    j["bytes"] = o.bytes;
    if (!o.note.empty()) j["note"] = o.note;
    return j;
}

table::table(std::vector<std::string> header, std::vector<bool> right_aligned) : right_(std::move(right_aligned)) {
    right_.resize(header.size(), false);
    rows_.push_back(std::move(header));
}

void table::add(std::vector<std::string> row) {
    row.resize(right_.size());
    for (auto& cell : row) cell = terminal_safe(cell);
    rows_.push_back(std::move(row));
}

void table::add_line(std::string line) { rows_.push_back({terminal_safe(line)}); }

std::vector<std::string> table::lines() const {
    std::vector<std::size_t> width(right_.size(), 0);
    auto whole_line = [&](const std::vector<std::string>& r) { return r.size() == 1 && right_.size() > 1; };
    for (const auto& r : rows_) {
        if (whole_line(r)) continue;
        for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
    }
    std::vector<std::string> out;
    for (const auto& r : rows_) {
        if (whole_line(r)) {
            out.push_back(r[0]);
            continue;
        }
        std::string line;
        for (std::size_t c = 0; c < r.size(); ++c) {
            if (c > 0) line += "  ";
            const bool last = c + 1 == r.size();
            const std::size_t pad = width[c] - r[c].size();
            if (right_[c]) line.append(pad, ' ');
            line += r[c];
            if (!right_[c] && !last) line.append(pad, ' ');
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out.push_back(std::move(line));
    }
    return out;
}

std::string table::str() const {
    std::string s;
    for (const auto& l : lines()) s += l + '\n';
    return s;
}

}  // namespace procsafe::cli
