// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "fields.hpp"

#include <procsafe/prometheus.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <unordered_set>
#include <variant>

namespace procsafe::redis::detail {

namespace {

const char* metric_name_of(metric_type m) {
    switch (m) {
        case metric_type::counter: return "counter";
        case metric_type::gauge: return "gauge";
        case metric_type::histogram: return "histogram";
        default: return "none";
    }
}

const char* kind_name(procsafe::detail::object_kind k) { return procsafe::to_string(k); }

bool is_array(procsafe::detail::object_kind k) {
    return k == procsafe::detail::object_kind::atomic_counter_array ||
           k == procsafe::detail::object_kind::mutex_counter_array;
}

/// The field for a value, by its rule; false when the value is not a
/// number this round (not read), or cannot be sent (NaN, infinite).
bool make(field& f, const number& n, bool gauge) {
    if (const auto* i = std::get_if<std::int64_t>(&n)) {
        f.how = gauge ? rule::gauge : rule::integer;
        f.integer = *i;
        f.text = to_text(f.integer);
        return true;
    }
    if (const auto* u = std::get_if<std::uint64_t>(&n)) {
        f.how = gauge ? rule::gauge : rule::integer;
        f.integer = *u;
        f.text = to_text(f.integer);
        return true;
    }
    if (const auto* d = std::get_if<double>(&n)) {
        if (!std::isfinite(*d)) return false;
        f.how = gauge ? rule::gauge : rule::floating;
        f.real = *d;
        f.text = to_text(*d);
        return true;
    }
    return false;
}

}  // namespace

std::string element_field(std::string_view object, std::string_view label, std::string_view value) {
    std::string s(object);
    s += '{';
    s += label;
    s += "=\"";
    s += prometheus_exposition::escape_label(value);
    s += "\"}";
    return s;
}

collected collect(const std::vector<object_info>& objects, const std::function<bool(const std::string&)>& with_meta) {
    using procsafe::detail::object_kind;
    collected out;
    std::unordered_set<std::string> names;
    auto skip = [&](const object_info& o, std::string why) { out.skipped.push_back({o.name, std::move(why)}); };
    for (const auto& o : objects) {
        if (o.status == object_status::constructing) continue;  // next round
        if (o.status == object_status::constructor_died) {
            skip(o, "its constructor died: it never came to be");
            continue;
        }
        if (o.status == object_status::corrupt) {
            skip(o, o.note);
            continue;
        }
        switch (o.kind) {
            case object_kind::user: skip(o, "a user type: no total"); continue;
            case object_kind::latch: skip(o, "a latch: no total (a count down, not a count)"); continue;
            case object_kind::barrier: skip(o, "a barrier: no total (a phase, not a count)"); continue;
            default: break;
        }
        if (o.metric != metric_type::counter && o.metric != metric_type::gauge && o.metric != metric_type::histogram) {
            skip(o, "no metric type");
            continue;
        }
        if (o.values.empty() && !o.histogram && o.note.find("does not read") != std::string::npos) {
            skip(o, o.note);
            continue;
        }
        const bool gauge = o.metric == metric_type::gauge;
        std::vector<field> mine;
        if (o.histogram) {
            const auto& h = *o.histogram;
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < h.counts.size(); ++b) {
                cumulative += h.counts[b];
                field f;
                f.name = element_field(o.name + "_bucket", "le", b < h.bounds.size() ? to_text(h.bounds[b]) : "+Inf");
                make(f, number{cumulative}, false);
                mine.push_back(std::move(f));
            }
            field sum;
            sum.name = o.name + "_sum";
            if (make(sum, number{h.sum}, false)) mine.push_back(std::move(sum));
            field count;
            count.name = o.name + "_count";
            make(count, number{h.count}, false);
            mine.push_back(std::move(count));
        } else if (is_array(o.kind)) {
            const std::string label = o.label.empty() ? "index" : o.label;
            for (std::size_t i = 0; i < o.values.size(); ++i) {
                field f;
                f.name = element_field(o.name, label, i < o.label_values.size() ? o.label_values[i] : std::to_string(i));
                if (make(f, o.values[i], gauge)) mine.push_back(std::move(f));
            }
        } else if (!o.values.empty()) {
            field f;
            f.name = o.name;
            if (make(f, o.values[0], gauge)) mine.push_back(std::move(f));
        }
        bool clash = false;
        std::unordered_set<std::string_view> own;
        for (const auto& f : mine) {
            if (names.count(f.name) != 0) {
                skip(o, "its field '" + f.name + "' is another object's already");
                clash = true;
                break;
            }
            // Two elements under one label value: one field sent twice, and
            // the total would take each value in turn.
            if (!own.insert(f.name).second) {
                skip(o, "its field '" + f.name + "' is two of its elements (a label value repeated)");
                clash = true;
                break;
            }
        }
        if (clash) continue;
        for (auto& f : mine) {
            names.insert(f.name);
            out.fields.push_back(std::move(f));
        }
        if (with_meta && !with_meta(o.name)) continue;
        nlohmann::json m = {{"kind", kind_name(o.kind)}, {"type", o.type}, {"metric", metric_name_of(o.metric)}};
        if (!o.help.empty()) m["help"] = o.help;
        if (!o.unit.empty()) m["unit"] = o.unit;
        if (is_array(o.kind)) m["label"] = o.label.empty() ? "index" : o.label;
        out.meta.emplace_back(o.name, m.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    return out;
}

}  // namespace procsafe::redis::detail
