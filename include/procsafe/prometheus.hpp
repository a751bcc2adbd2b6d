// procsafe/prometheus.hpp: the Prometheus text exposition of segments.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/metadata.hpp>
#include <procsafe/segment_view.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <map>
#include <set>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

namespace procsafe {

/// The Prometheus text exposition (format 0.0.4) of segments, for a program
/// that serves its own /metrics from its own HTTP stack, or writes a file for
/// node_exporter's textfile collector (the `procsafe export` and `procsafe
/// serve` commands use it too).
///
/// One family per metric name, its # HELP and # TYPE before its samples,
/// however many segments hold it; every sample carries the label
/// segment="NAME". Names are made valid ([a-zA-Z_:][a-zA-Z0-9_:]*: other
/// characters become '_'), a unit is appended unless the name ends with it,
/// counters end in _total; an array's elements are told apart by its label
/// (metadata, or "index"); a histogram gives _bucket{le=...} (cumulative,
/// +Inf equal to _count), _sum and _count. Label values and help texts are
/// escaped. No timestamps (node_exporter's textfile collector skips a whole
/// file that has one). An object taken out of the exposition
/// (segment::set_exported, family::remove) is left out without a warning.
/// Objects not ready, user types and values that cannot
/// be read are left out, and said so in warnings(); so is an object whose
/// name maps onto a family of another type, or whose series names are
/// another family's (a gauge lat_sum beside a histogram lat), or whose
/// strings break construct()'s rules (not UTF-8, control characters,
/// repeated label values: a segment's owner may rewrite them), so that the
/// text is always one a Prometheus server accepts whole.
///
/// ```
/// procsafe::prometheus_exposition text;
/// text.add(procsafe::segment_view::open("web"));
/// std::string body = text.str();  // Content-Type: text/plain; version=0.0.4
/// ```
class prometheus_exposition {
public:
    /// The Content-Type to serve str() with.
    static constexpr std::string_view content_type = "text/plain; version=0.0.4";

    /// Adds every object of the segment, read now.
    /// Throws: what segment_view::objects() throws.
    void add(const segment_view& view) { add(view.name(), view.objects()); }

    /// Adds objects read from the segment named `segment`.
    void add(std::string_view segment, const std::vector<object_info>& objects) {
        for (const auto& o : objects) add_object(segment, o);
    }

    /// The exposition, families in the order they were first met.
    std::string str() const {
        std::string out;
        for (const auto& f : families_) {
            out += "# HELP " + f.name + ' ' + escape_help(f.help) + '\n';
            out += "# TYPE " + f.name + ' ' + f.type + '\n';
            out += f.samples;
        }
        return out;
    }

    /// What was left out, and why (one line each).
    const std::vector<std::string>& warnings() const noexcept { return warnings_; }

    /// name, made a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).
    static std::string metric_name(std::string_view name) { return detail::metric_name(name); }
    /// A label value, escaped: backslash, double quote, newline.
    static std::string escape_label(std::string_view v) {
        std::string out;
        for (char c : v) {
            if (c == '\\') out += "\\\\";
            else if (c == '"') out += "\\\"";
            else if (c == '\n') out += "\\n";
            else out += c;
        }
        return out;
    }
    /// A bucket bound as the Prometheus clients write `le`: client_python's
    /// floatToGoString (Python's shortest repr: 0.0005, 1.0, 100000.0,
    /// 1e-05; positive values of 7 to 10 integer digits as Go writes them,
    /// 1e+06, 2.5e+07), "+Inf", "-Inf", "NaN". The same bound thus gives
    /// the same `le` in procsafe's and client_python's expositions, and
    /// `sum by (le)` across them does not split buckets. (From 1e10 to
    /// 1e16 client_python writes "1e+010"; procsafe writes Go's "1e+10".)
    /// Never throws except bad_alloc.
    static std::string format_le(double d) {
        if (std::isnan(d)) return "NaN";
        if (std::isinf(d)) return d > 0 ? "+Inf" : "-Inf";
        char buf[40];
        // Shortest round-trip digits, as Python's repr chooses them.
        const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
        std::string_view sci(buf, static_cast<std::size_t>(r.ptr - buf));
        std::string out;
        if (sci.front() == '-') {
            out += '-';
            sci.remove_prefix(1);
        }
        const auto e_at = sci.find('e');
        std::string digits;
        for (char c : sci.substr(0, e_at))
            if (c != '.') digits += c;
        int exp = 0;
        std::from_chars(sci.data() + e_at + 1 + (sci[e_at + 1] == '+'), sci.data() + sci.size(), exp);
        auto exponent = [&](std::string mantissa, int e) {
            std::string t = std::move(mantissa);
            t += e < 0 ? "e-" : "e+";
            const int a = e < 0 ? -e : e;
            if (a < 10) t += '0';
            t += std::to_string(a);
            return t;
        };
        const std::string mantissa = digits.size() == 1 ? digits : digits.substr(0, 1) + "." + digits.substr(1);
        if (exp < -4 || exp >= 16) return out + exponent(mantissa, exp);  // Python's repr
        if (d > 0 && exp >= 6) return out + exponent(mantissa, exp);      // Go's exponent, as floatToGoString
        if (exp < 0) return out + "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
        const auto whole = static_cast<std::size_t>(exp) + 1;
        if (digits.size() <= whole) return out + digits + std::string(whole - digits.size(), '0') + ".0";
        return out + digits.substr(0, whole) + "." + digits.substr(whole);
    }
    /// A help text, escaped: backslash, newline.
    static std::string escape_help(std::string_view v) {
        std::string out;
        for (char c : v) {
            if (c == '\\') out += "\\\\";
            else if (c == '\n') out += "\\n";
            else out += c;
        }
        return out;
    }

private:
    struct family {
        std::string name, type, help, samples;
    };

    static bool ends_with(std::string_view s, std::string_view suffix) {
        return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
    }

    family* family_for(const std::string& name, const char* type, const std::string& help) {
        const auto it = index_.find(name);
        if (it != index_.end()) {
            family& f = families_[it->second];
            return f.type == type ? &f : nullptr;
        }
        index_.emplace(name, families_.size());
        families_.push_back({name, type, help, {}});
        return &families_.back();
    }

    void add_object(std::string_view segment, const object_info& o) {
        auto skip = [&](const std::string& why) {
            warnings_.push_back("segment '" + std::string(segment) + "': object '" + o.name + "': " + why);
        };
        if (o.status == object_status::corrupt) return skip(o.note);
        if (o.status != object_status::ready) return skip("not constructed (yet): left out");
        if (!o.exported) return;  // removed (segment::set_exported): left out, as the clients' remove() does
        if (o.metric == metric_type::automatic) {
            return skip(o.kind == detail::object_kind::user ? "a user type: left out"
                                                            : "not exported (metric_type::none): left out");
        }
        if (o.values.empty() && !o.histogram) return skip("no value to export (" + o.note + ")");
        // Whoever filled o (a segment's owner can rewrite its strings): the
        // rules construct() applies, checked again before a byte is emitted.
        if (const char* why = detail::object_name_problem(o.name)) return skip(std::string(why) + ": left out");
        if (const auto why = detail::metadata_problem(o.help, o.unit, o.label, o.label_values)) {
            return skip("metadata: " + *why + ": left out");
        }
        const bool counter = o.metric == metric_type::counter;
        // A family's child (procsafe::family): exported in its family, its
        // label set after the segment label. Its name must be the series
        // its labels make, or someone rewrote one of them.
        const bool array = detail::is_array_kind(o.kind);
        const std::string_view family_name = detail::family_of(o.name, o.label, array);
        const bool child = family_name.size() != o.name.size();
        std::string label_set;
        if (!array && !o.label.empty()) {
            const auto label_names = detail::split_labels(o.label);
            if (!child || label_names.size() != o.label_values.size() ||
                detail::series_name(family_name, label_names, o.label_values) != o.name) {
                return skip("its label set disagrees with its name: left out");
            }
            for (std::size_t i = 0; i < label_names.size(); ++i) {
                label_set += ',';
                label_set += label_names[i];
                label_set += "=\"";
                label_set += escape_label(o.label_values[i]);
                label_set += '"';
            }
        }
        const bool per_pid = o.aggregation == gauge_aggregation::liveall || o.aggregation == gauge_aggregation::all;
        if (per_pid && !counter && !array) {
            for (const auto l : detail::split_labels(o.label)) {
                if (l == "pid") return skip("its label set has a pid label, which its aggregation adds: left out");
            }
        }
        const std::vector<std::string> names = detail::exported_names(family_name, o.unit, o.metric);
        const std::string& name = names.front();
        // A series name of one family that is another's (a histogram lat's
        // lat_sum and a gauge lat_sum): promtool refuses the text, a
        // Prometheus server drops one of them.
        for (const auto& n : names) {
            const auto it = series_.find(n);
            if (it != series_.end() && it->second != name) {
                return skip("its series " + n + " is the family " + it->second + "'s: left out");
            }
        }
        const std::string help = o.help.empty() ? "procsafe " + o.type + " '" + std::string(family_name) + "'" : o.help;
        const char* type = o.metric == metric_type::histogram ? "histogram" : counter ? "counter" : "gauge";
        family* f = family_for(name, type, help);
        if (f == nullptr) return skip("its metric " + name + " is another type elsewhere: left out");
        // Each segment's samples of a family come from one object: another
        // would repeat its series (Prometheus refuses a scrape with those).
        // (A family's children are told apart by their label sets.)
        if (!sources_.emplace(name, std::string(segment) + (child ? '\0' + o.name : std::string{})).second) {
            return skip("its metric " + name + " is another object's in this segment: left out");
        }
        for (const auto& n : names) series_.emplace(n, name);
        // Every sample is appended in place: a scrape of 100,000 series is
        // 100,000 of these lines.
        std::string& out = f->samples;
        const std::string segment_label = "segment=\"" + escape_label(segment) + "\"" + label_set;
        auto open = [&](std::string_view suffix) {
            out += name;
            out += suffix;
            out += '{';
            out += segment_label;
        };
        if (o.histogram) {
            const auto& h = *o.histogram;
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < h.counts.size(); ++b) {
                cumulative += h.counts[b];
                open("_bucket");
                out += ",le=\"";
                if (b < h.bounds.size()) out += format_le(h.bounds[b]);
                else out += "+Inf";
                out += "\"} ";
                append_number(out, cumulative);
                out += '\n';
            }
            open("_sum");
            out += "} ";
            append_number(out, h.sum);
            out += '\n';
            open("_count");
            out += "} ";
            append_number(out, h.count);
            out += '\n';
            return;
        }
        if (array) {
            const std::string label = "," + (o.label.empty() ? std::string("index") : o.label) + "=\"";
            char index[24];
            for (std::size_t i = 0; i < o.values.size(); ++i) {
                if (std::holds_alternative<std::monostate>(o.values[i])) continue;
                if (counter && below_zero(o.values[i])) {
                    skip("element " + std::to_string(i) + negative_counter);
                    continue;
                }
                open({});
                out += label;
                if (i < o.label_values.size()) out += escape_label(o.label_values[i]);
                else out.append(index, std::to_chars(index, index + sizeof index, i).ptr);
                out += "\"} ";
                append_number(out, o.values[i]);
                out += '\n';
            }
            return;
        }
        if (o.aggregation && *o.aggregation != gauge_aggregation::livesum && !counter) {
            // A live_gauge read as client_python's multiprocess mode says:
            // a sample per process (labelled pid), or their min or max.
            const gauge_aggregation how = *o.aggregation;
            const bool live_only = how == gauge_aggregation::liveall || how == gauge_aggregation::livemin ||
                                   how == gauge_aggregation::livemax;
            const bool is_min = how == gauge_aggregation::livemin || how == gauge_aggregation::min;
            const number* best = nullptr;
            char pid[16];
            // One sample per pid: a pid met in two slots (a dead process's
            // slot, and a new process that got the same pid and another
            // slot; or slots forged by the segment's owner) keeps the live
            // one, else the first, in pid order.
            std::vector<const object_info::process_value*> chosen;
            if (per_pid) {
                for (const auto& p : o.processes)
                    if (!live_only || p.alive) chosen.push_back(&p);
                std::stable_sort(chosen.begin(), chosen.end(), [](const auto* a, const auto* b) {
                    return a->pid != b->pid ? a->pid < b->pid : a->alive && !b->alive;
                });
                chosen.erase(std::unique(chosen.begin(), chosen.end(), [](const auto* a, const auto* b) { return a->pid == b->pid; }),
                             chosen.end());
            }
            for (const auto* q : chosen) {
                open({});
                out += ",pid=\"";
                out.append(pid, std::to_chars(pid, pid + sizeof pid, q->pid).ptr);
                out += "\"} ";
                append_number(out, q->value);
                out += '\n';
            }
            for (const auto& p : o.processes) {
                if (per_pid || (live_only && !p.alive)) continue;
                if (best == nullptr || (is_min ? as_double(p.value) < as_double(*best) : as_double(p.value) > as_double(*best))) {
                    best = &p.value;
                }
            }
            if (best != nullptr) {
                open({});
                out += "} ";
                append_number(out, *best);
                out += '\n';
            }
            return;
        }
        if (counter && below_zero(o.values[0])) return skip(std::string("its value") + negative_counter);
        open({});
        out += "} ";
        append_number(out, o.values[0]);
        out += '\n';
    }

    // A counter below zero is not a counter (Prometheus reads every fall as
    // a reset, and rate() then counts the whole value again): its sample is
    // left out, and said so, rather than exported as a counter or quietly
    // turned into a gauge (a family's type cannot change from scrape to
    // scrape). An object that goes down is declared metric_type::gauge.
    static constexpr const char* negative_counter =
        " is below zero, and exported as a counter: sample left out (declare it metric_type::gauge if it goes "
        "down)";
    static double as_double(const number& n) noexcept {
        if (const auto* i = std::get_if<std::int64_t>(&n)) return static_cast<double>(*i);
        if (const auto* u = std::get_if<std::uint64_t>(&n)) return static_cast<double>(*u);
        if (const auto* d = std::get_if<double>(&n)) return *d;
        return 0;
    }
    static bool below_zero(const number& n) noexcept {
        if (const auto* i = std::get_if<std::int64_t>(&n)) return *i < 0;
        if (const auto* d = std::get_if<double>(&n)) return *d < 0;
        return false;
    }

    std::vector<family> families_;
    std::map<std::string, std::size_t> index_;
    std::set<std::pair<std::string, std::string>> sources_;  // (family, segment) already given samples
    std::map<std::string, std::string> series_;  // series name -> the family that emits it
    std::vector<std::string> warnings_;
};

}  // namespace procsafe
