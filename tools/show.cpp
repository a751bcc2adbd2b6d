// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// procsafe show: one segment's objects, their values and metadata.
#include "common.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>

namespace procsafe::cli {

namespace {

std::string value_text(const procsafe::number& n) {
    return std::holds_alternative<std::monostate>(n) ? "?" : procsafe::to_string(n);
}

/// The object's rows: its own, then one per element, bucket or detail
/// (indented under it).
void add_rows(table& t, const procsafe::object_info& o) {
    auto sub = [&](const std::string& name, const std::string& value) { t.add({"  " + name, "", "", value, "", ""}); };
    // A note (long: the object's offset and why) on a line of its own: the
    // NAME column keeps the width of the names.
    auto note = [&](const std::string& text) { t.add_line("  note: " + text); };
    std::string value;
    if (o.status != procsafe::object_status::ready) {
        value = o.status == procsafe::object_status::constructing       ? "(constructing)"
                : o.status == procsafe::object_status::constructor_died ? "(constructor died)"
                                                                         : "(corrupt)";
    } else if (!o.histogram && o.values.size() == 1 && o.kind != procsafe::detail::object_kind::atomic_counter_array &&
               o.kind != procsafe::detail::object_kind::mutex_counter_array) {
        value = value_text(o.values[0]);
    }
    t.add({o.name, o.type, metric_name(o.metric), value, o.unit, o.help});
    if (o.status == procsafe::object_status::corrupt) note(o.note);
    if (o.status != procsafe::object_status::ready) return;
    if (o.histogram) {
        const auto& h = *o.histogram;
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < h.counts.size(); ++b) {
            cumulative += h.counts[b];
            const std::string le = b < h.bounds.size() ? procsafe::to_string(procsafe::number{h.bounds[b]}) : "+Inf";
            sub("le=\"" + le + "\"", std::to_string(cumulative));
        }
        sub("sum", procsafe::to_string(procsafe::number{h.sum}));
        sub("count", std::to_string(h.count));
    } else if (o.kind == procsafe::detail::object_kind::atomic_counter_array ||
               o.kind == procsafe::detail::object_kind::mutex_counter_array) {
        for (std::size_t i = 0; i < o.values.size(); ++i) sub(element_label(o, i), value_text(o.values[i]));
    }
    for (const auto& [k, v] : o.details) sub(k, value_text(v));
    if (!o.note.empty()) note(o.note);
}

}  // namespace

int run_show(const show_options& opt) {
    const auto view = open_view(opt.segment);
    procsafe::segment_info info;
    std::vector<procsafe::object_info> objects;
    try {
        info = view.info();
        objects = view.objects();
    } catch (const procsafe::error& e) {
        throw failure(describe(e));
    }

    if (opt.json) {
        nlohmann::ordered_json out;
        out["segment"] = json_of(info);
        out["objects"] = nlohmann::ordered_json::array();
        for (const auto& o : objects) out["objects"].push_back(json_of(o));
        // replace: a string that is not UTF-8 (from a segment of another
        // build, or damaged) is printed with U+FFFD, never an exception.
        std::puts(out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
        return 0;
    }

    std::printf("segment %s: %s, %s using %s, owner %s:%s %s, created %s by pid %u (%s)\n\n", info.name.c_str(),
                human_bytes(info.size).c_str(), counted(info.objects, "object").c_str(), human_bytes(info.object_bytes).c_str(),
                user_name(info.uid).c_str(), group_name(info.gid).c_str(), mode_string(info.mode).c_str(),
                local_time(info.created_ns).c_str(), info.creator_pid, info.creator_alive ? "alive" : "gone");
    if (objects.empty()) {
        std::puts("(no objects)");
        return 0;
    }
    table t({"NAME", "TYPE", "METRIC", "VALUE", "UNIT", "HELP"}, {false, false, false, true, false, false});
    for (const auto& o : objects) add_rows(t, o);
    std::fputs(t.str().c_str(), stdout);
    return 0;
}

}  // namespace procsafe::cli
