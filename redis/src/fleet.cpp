// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// Reading the fleet: totals, gauges, objects and reporters of a namespace in
// one MULTI/EXEC; the Prometheus text and the JSON of them.
#include "cluster.hpp"
#include "common.hpp"
#include "connection.hpp"

#include <procsafe/metadata.hpp>
#include <procsafe/prometheus.hpp>
#include <procsafe/redis.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cmath>
#include <optional>
#include <set>

namespace procsafe::redis {

namespace {

using detail::i128;

std::vector<std::pair<std::string, std::string>> pairs_of(const redisReply& r) {
    std::vector<std::pair<std::string, std::string>> out;
    const std::size_t n = detail::elements(r);
    for (std::size_t i = 0; i + 1 < n; i += 2)
        out.emplace_back(detail::text_of(detail::element(r, i)), detail::text_of(detail::element(r, i + 1)));
    return out;
}

std::string json_string(const nlohmann::json& j, const char* key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
double json_double(const nlohmann::json& j, const char* key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

/// A sum of values (gauges; a field's totals over stripes): exact while
/// every value is an integer.
struct gauge_sum {
    i128 integer = 0;
    double real = 0;
    bool any_real = false;
    std::string only;  // the one value added, as Redis holds it
    int n = 0;
    void add(const std::string& v) {
        if (n++ == 0) only = v;
        if (const auto i = detail::parse_integer(v)) integer += *i;
        else if (const auto d = detail::parse_real(v)) real += *d, any_real = true;
    }
    std::string text() const {
        if (n == 1) return only;
        return any_real ? detail::to_text(real + static_cast<double>(integer)) : detail::to_text(integer);
    }
};

}  // namespace

std::vector<std::string> fleet_namespaces(const connection_options& o) {
    detail::router net(o);
    const auto r = net.run(keys::namespaces, {"SMEMBERS", std::string(keys::namespaces)});
    if (detail::is_error(*r)) throw detail::command_failure(net.where() + ": SMEMBERS: " + detail::text_of(*r));
    std::vector<std::string> out;
    for (std::size_t i = 0; i < detail::elements(*r); ++i) out.push_back(detail::text_of(detail::element(*r, i)));
    std::sort(out.begin(), out.end());
    return out;
}

namespace {

/// One stripe's read: its parts of the snapshot, from one MULTI/EXEC.
struct stripe_read {
    std::int64_t server_time_ms = 0;
    std::vector<std::pair<std::string, std::string>> totals, meta, seen;
    std::vector<std::string> ids;
    std::vector<std::vector<std::pair<std::string, std::string>>> marks, gauges;  // by id
};

/// Reads stripe `stripe` of `ns` in one transaction on its master. A
/// cluster that moves the slot meanwhile (MOVED, ASK, TRYAGAIN) is asked
/// again, bounded.
stripe_read read_stripe(detail::router& net, const std::string& ns, std::uint32_t stripe) {
    const std::string tag = keys::totals(ns, stripe);
    std::string last;
    std::optional<endpoint> asked;  // an ASK's node: the transaction goes there, after ASKING
    for (int attempt = 0; attempt < 20; ++attempt) {
        stripe_read out;
        const auto hk = net.run(tag, {"HKEYS", keys::reporters(ns, stripe)});
        if (detail::is_error(*hk)) throw detail::command_failure(net.where() + ": reading namespace '" + ns + "': " + detail::text_of(*hk));
        for (std::size_t i = 0; i < detail::elements(*hk); ++i) out.ids.push_back(detail::text_of(detail::element(*hk, i)));
        std::sort(out.ids.begin(), out.ids.end());
        // One transaction: the totals and the watermarks they came from
        // agree. (ASKING holds for a whole MULTI ... EXEC.)
        detail::connection& c = asked ? net.connection_to(*asked) : net.node_for(tag);
        if (asked) c.append({"ASKING"});
        c.append({"MULTI"});
        c.append({"TIME"});
        c.append({"HGETALL", keys::totals(ns, stripe)});
        c.append({"HGETALL", keys::meta(ns, stripe)});
        c.append({"HGETALL", keys::reporters(ns, stripe)});
        for (const auto& id : out.ids) {
            c.append({"HGETALL", keys::watermarks(ns, id, stripe)});
            c.append({"HGETALL", keys::gauges(ns, id, stripe)});
        }
        c.append({"EXEC"});
        c.send();
        const std::size_t queued = 4 + 2 * out.ids.size();
        if (asked) c.next_reply();  // ASKING's +OK (an error shows in what follows)
        std::vector<detail::reply> replies;
        for (std::size_t i = 0; i < queued + 2; ++i) replies.push_back(c.next_reply());  // +OK, +QUEUED each, EXEC
        std::string error;
        const redisReply* redirect = nullptr;
        for (const auto& r : replies) {  // EXEC included: a slot that moved since the commands were queued
            if (!detail::is_error(*r)) continue;
            if (error.empty()) error = detail::text_of(*r);
            if (detail::is_redirect(*r)) {
                redirect = r.get();
                error = detail::text_of(*r);
                break;
            }
        }
        const auto& exec = *replies.back();
        if (error.empty() && (detail::is_error(exec) || detail::elements(exec) != queued)) {
            error = "the transaction failed" + (detail::is_error(exec) ? ": " + detail::text_of(exec) : std::string());
        }
        for (std::size_t i = 0; error.empty() && i < queued; ++i)
            if (detail::is_error(detail::element(exec, i))) error = detail::text_of(detail::element(exec, i));
        if (redirect != nullptr && net.clustered()) {
            // The slot moves (a resharding, a failover): MOVED, learn the
            // map again; ASK, read on the importing node; TRYAGAIN, a slot
            // half migrated, settles within seconds.
            last = error;
            std::uint16_t slot = 0;
            endpoint to;
            const std::string here = asked ? asked->host : net.host_of(tag);
            if (error.rfind("ASK ", 0) == 0 && detail::parse_redirect(error, slot, to, here)) {
                asked = to;
            } else {
                asked.reset();
                if (error.rfind("MOVED ", 0) == 0 || error.rfind("CLUSTERDOWN", 0) == 0) net.reset();
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            continue;
        }
        if (!error.empty()) {
            std::string why = c.where();
            why += ": reading namespace '" + ns + "': ";
            why += error;
            throw detail::command_failure(why);
        }
        auto part = [&](std::size_t i) -> const redisReply& { return detail::element(exec, i); };
        {
            const auto& t = part(0);
            if (detail::elements(t) == 2) {
                const auto sec = detail::parse_integer(detail::text_of(detail::element(t, 0)));
                const auto usec = detail::parse_integer(detail::text_of(detail::element(t, 1)));
                if (sec && usec) out.server_time_ms = static_cast<std::int64_t>(*sec * 1000 + *usec / 1000);
            }
        }
        out.totals = pairs_of(part(1));
        out.meta = pairs_of(part(2));
        out.seen = pairs_of(part(3));
        for (std::size_t i = 0; i < out.ids.size(); ++i) {
            out.marks.push_back(pairs_of(part(4 + 2 * i)));
            out.gauges.push_back(pairs_of(part(5 + 2 * i)));
        }
        return out;
    }
    throw detail::command_failure(net.where() + ": reading namespace '" + ns + "' stripe " + std::to_string(stripe) +
                                  ": the cluster kept redirecting (last: " + last.substr(0, 200) + ")");
}

}  // namespace

fleet_snapshot read_fleet(const connection_options& o, const std::string& ns) {
    detail::check_id("namespace", ns);
    detail::router net(o);
    fleet_snapshot f;
    f.fleet_namespace = ns;
    {
        const auto r = net.run(keys::config(ns), {"HGET", keys::config(ns), "stripes"});
        if (detail::is_error(*r)) throw detail::command_failure(net.where() + ": reading namespace '" + ns + "': " + detail::text_of(*r));
        if (!detail::is_nil(*r)) {  // none: flushed before stripes existed, or never: one stripe
            const auto k = detail::parse_integer(detail::text_of(*r));
            if (!k || *k < 1 || *k > keys::max_stripes) {
                throw detail::command_failure(net.where() + ": namespace '" + ns + "' records " + detail::text_of(*r) + " stripes (" +
                                              keys::config(ns) + "): not 1 to " + std::to_string(keys::max_stripes));
            }
            f.stripes = static_cast<std::uint32_t>(*k);
        }
    }
    std::map<std::string, gauge_sum> totals, sums;
    for (std::uint32_t stripe = 0; stripe < f.stripes; ++stripe) {
        stripe_read part = read_stripe(net, ns, stripe);
        if (stripe == 0) f.server_time_ms = part.server_time_ms;
        for (const auto& [k, v] : part.totals) totals[k].add(v);
        for (auto& [name, text] : part.meta) {
            if (f.objects.count(name) != 0) continue;
            fleet_object obj;
            obj.name = name;
            const auto j = nlohmann::json::parse(text, nullptr, false);
            if (!j.is_discarded() && j.is_object()) {
                obj.kind = json_string(j, "kind");
                obj.type = json_string(j, "type");
                obj.metric = json_string(j, "metric");
                obj.help = json_string(j, "help");
                obj.unit = json_string(j, "unit");
                obj.label = json_string(j, "label");
            }
            f.objects.emplace(name, std::move(obj));
        }
        std::map<std::string, std::string> seen(part.seen.begin(), part.seen.end());
        for (std::size_t i = 0; i < part.ids.size(); ++i) {
            fleet_reporter r;
            r.id = part.ids[i];
            r.stripe = stripe;
            const auto bar1 = r.id.find('|'), bar2 = r.id.rfind('|');
            if (bar1 != std::string::npos && bar2 != bar1) {
                r.host = r.id.substr(0, bar1);
                r.segment = r.id.substr(bar1 + 1, bar2 - bar1 - 1);
                r.incarnation = std::strtoull(r.id.c_str() + bar2 + 1, nullptr, 16);
            }
            if (const auto it = seen.find(r.id); it != seen.end()) {
                const auto space = it->second.find(' ');
                if (const auto ms = detail::parse_integer(it->second.substr(0, space))) r.last_flush_ms = static_cast<std::int64_t>(*ms);
                if (space != std::string::npos) {
                    const auto j = nlohmann::json::parse(it->second.substr(space + 1), nullptr, false);
                    if (!j.is_discarded() && j.is_object()) {
                        r.pid = static_cast<std::int64_t>(json_double(j, "pid"));
                        r.interval = json_double(j, "interval");
                        r.gauge_ttl = json_double(j, "gauge_ttl");
                    }
                }
            }
            r.age_seconds = static_cast<double>(part.server_time_ms - r.last_flush_ms) / 1000.0;
            for (auto& [k, v] : part.marks[i]) r.watermarks.emplace(std::move(k), std::move(v));
            for (auto& [k, v] : part.gauges[i]) {
                if (!k.empty() && k[0] == '\0') continue;  // the read stamp
                r.gauges.emplace(std::move(k), std::move(v));
            }
            // A reporter's gauges count while its gauge hash lives (Redis
            // expires it gauge_ttl after its last flush).
            r.live = !r.gauges.empty() || (r.gauge_ttl > 0 && r.age_seconds <= r.gauge_ttl);
            // A reporter lives in one stripe, stripe_of(id, K). Found in
            // another, or in two, its counts may be in the totals twice:
            // K was changed or lost under it (docs/redis.md).
            if (const auto home = keys::stripe_of(r.id, f.stripes); home != stripe) {
                f.warnings.push_back("reporter '" + procsafe::detail::escape_bytes(r.id) + "' found in stripe " + std::to_string(stripe) + ", not in its stripe " +
                                     std::to_string(home) + " of " + std::to_string(f.stripes) +
                                     ": the namespace's stripes changed under it; its counts may be in the totals twice");
            }
            for (const auto& [k, v] : r.gauges) sums[k].add(v);
            f.reporters.push_back(std::move(r));
        }
    }
    std::sort(f.reporters.begin(), f.reporters.end(), [](const fleet_reporter& a, const fleet_reporter& b) { return a.id < b.id; });
    for (std::size_t i = 1; i < f.reporters.size(); ++i) {
        if (f.reporters[i].id == f.reporters[i - 1].id) {
            f.warnings.push_back("reporter '" + procsafe::detail::escape_bytes(f.reporters[i].id) + "' found in stripes " +
                                 std::to_string(f.reporters[i - 1].stripe) + " and " + std::to_string(f.reporters[i].stripe) +
                                 ": its counts are in the totals twice");
        }
    }
    for (const auto& [k, s] : totals) f.totals.emplace(k, s.text());
    for (const auto& [k, s] : sums) f.gauges.emplace(k, s.text());
    return f;
}

// ---------------------------------------------------------------------------
// Prometheus text.

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
    return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

struct family {
    std::string name, type, help, samples;
};

class exposition {
public:
    family* family_for(const std::string& name, const std::string& type, const std::string& help) {
        if (const auto it = index_.find(name); it != index_.end()) {
            family& f = families_[it->second];
            return f.type == type ? &f : nullptr;
        }
        index_.emplace(name, families_.size());
        families_.push_back({name, type, help, {}});
        return &families_.back();
    }
    void comment(const std::string& line) { comments_ += "# procsafe: " + line + "\n"; }
    std::string str() const {
        std::string out = comments_;
        for (const auto& f : families_) {
            if (f.samples.empty()) continue;
            out += "# HELP " + f.name + ' ' + prometheus_exposition::escape_help(f.help) + '\n';
            out += "# TYPE " + f.name + ' ' + f.type + '\n';
            out += f.samples;
        }
        return out;
    }

private:
    std::vector<family> families_;
    std::map<std::string, std::size_t> index_;
    std::string comments_;
};

/// The fields of `values` that belong to object `o`, by the flusher's
/// naming (see fields.hpp); marks them used.
std::vector<std::pair<std::string, const std::string*>> fields_of(const fleet_object& o,
                                                                   const std::map<std::string, std::string>& values,
                                                                   std::set<std::string>& used) {
    std::vector<std::pair<std::string, const std::string*>> out;  // (remainder, value)
    for (auto it = values.lower_bound(o.name); it != values.end() && starts_with(it->first, o.name); ++it) {
        const std::string rest = it->first.substr(o.name.size());
        bool mine = false;
        if (o.metric == "histogram") {
            mine = rest == "_sum" || rest == "_count" || (starts_with(rest, "_bucket{le=\"") && ends_with(rest, "\"}"));
        } else if (!o.label.empty()) {
            mine = starts_with(rest, "{") && ends_with(rest, "\"}") && rest.find("=\"") != std::string::npos;
        } else {
            mine = rest.empty();
        }
        if (mine && used.insert(it->first).second) out.emplace_back(rest, &it->second);
    }
    return out;
}

double le_of(const std::string& rest) {  // _bucket{le="X"}
    const std::string x = rest.substr(12, rest.size() - 14);
    if (x == "+Inf") return INFINITY;
    const auto d = detail::parse_real(x);
    return d ? *d : NAN;
}

/// Appends METRIC SUFFIX{NS_LABEL[,LABELS} VALUE (labels: `name="value"}`, as
/// the field names carry them).
void sample(std::string& out, const std::string& metric, std::string_view suffix, const std::string& ns_label,
            std::string_view labels, const std::string& value) {
    out += metric;
    out += suffix;
    out += '{';
    out += ns_label;
    if (labels.empty()) {
        out += '}';
    } else {
        out += ',';
        out += labels;
    }
    out += ' ';
    out += value;
    out += '\n';
}

void add_fleet(exposition& text, const fleet_snapshot& f) {
    const std::string ns_label = "namespace=\"" + prometheus_exposition::escape_label(f.fleet_namespace) + "\"";
    std::set<std::string> used_totals, used_gauges;
    for (const auto& [name, o] : f.objects) {
        const bool gauge = o.metric == "gauge", histogram = o.metric == "histogram";
        std::string metric = prometheus_exposition::metric_name(o.name);
        if (!o.unit.empty() && !ends_with(metric, "_" + o.unit) && !ends_with(metric, "_" + o.unit + "_total")) {
            metric += "_" + o.unit;
        }
        if (!gauge && !histogram && !ends_with(metric, "_total")) metric += "_total";
        const std::string type = histogram ? "histogram" : gauge ? "gauge" : "counter";
        const std::string help = o.help.empty() ? "procsafe fleet " + std::string(gauge ? "sum of the live hosts' " : "total of ") +
                                                      (o.type.empty() ? o.kind : o.type) + " '" + o.name + "'"
                                                : o.help;
        auto parts = fields_of(o, gauge ? f.gauges : f.totals, gauge ? used_gauges : used_totals);
        if (parts.empty()) continue;
        family* fam = text.family_for(metric, type, help);
        if (fam == nullptr) {
            text.comment("namespace '" + f.fleet_namespace + "': object '" + o.name + "': its metric " + metric +
                         " is another type elsewhere: left out");
            continue;
        }
        std::string& out = fam->samples;
        if (histogram) {
            std::vector<std::pair<double, const std::string*>> buckets;
            const std::string *sum = nullptr, *count = nullptr;
            std::vector<std::string> les;
            for (const auto& [rest, v] : parts) {
                if (rest == "_sum") sum = v;
                else if (rest == "_count") count = v;
                else buckets.emplace_back(le_of(rest), v), les.push_back(rest.substr(7));  // {le="X"}
            }
            std::vector<std::size_t> order(buckets.size());
            for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
            std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return buckets[a].first < buckets[b].first; });
            for (std::size_t i : order) sample(out, metric, "_bucket", ns_label, les[i].substr(1), *buckets[i].second);
            if (sum != nullptr) sample(out, metric, "_sum", ns_label, {}, *sum);
            if (count != nullptr) sample(out, metric, "_count", ns_label, {}, *count);
            continue;
        }
        for (const auto& [rest, v] : parts) sample(out, metric, {}, ns_label, rest.empty() ? rest : rest.substr(1), *v);
    }
    for (const auto& [field, v] : f.totals) {
        if (used_totals.count(field) == 0) {
            text.comment("namespace '" + f.fleet_namespace + "': field '" + prometheus_exposition::escape_help(field) +
                         "' has no object metadata: left out");
        }
    }
}

}  // namespace

std::string prometheus_text(const std::vector<fleet_snapshot>& fleets) {
    exposition text;
    for (const auto& f : fleets) {
        for (const auto& w : f.warnings) text.comment("namespace '" + f.fleet_namespace + "': " + w);
        add_fleet(text, f);
    }
    return text.str();
}

// ---------------------------------------------------------------------------
// JSON.

namespace {

/// An exact integer as a JSON integer, a fraction as a JSON number, else a string.
nlohmann::json json_value(const std::string& v) {
    if (const auto i = detail::parse_integer(v)) {
        if (*i >= 0 && *i <= static_cast<i128>(UINT64_MAX)) return static_cast<std::uint64_t>(*i);
        if (*i < 0 && *i >= static_cast<i128>(INT64_MIN)) return static_cast<std::int64_t>(*i);
    }
    if (const auto d = detail::parse_real(v); d && std::isfinite(*d)) return *d;
    return v;
}

nlohmann::json json_map(const std::map<std::string, std::string>& m) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : m) j[k] = json_value(v);
    return j;
}

}  // namespace

std::string json_text(const std::vector<fleet_snapshot>& fleets) {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& f : fleets) {
        nlohmann::json objects = nlohmann::json::object();
        for (const auto& [name, o] : f.objects) {
            objects[name] = {{"kind", o.kind}, {"type", o.type}, {"metric", o.metric}, {"help", o.help},
                             {"unit", o.unit}, {"label", o.label}};
        }
        nlohmann::json reporters = nlohmann::json::array();
        for (const auto& r : f.reporters) {
            char hex[17];
            std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r.incarnation));
            reporters.push_back({{"id", r.id},
                                 {"host", r.host},
                                 {"segment", r.segment},
                                 {"incarnation", hex},
                                 {"pid", r.pid},
                                 {"last_flush_ms", r.last_flush_ms},
                                 {"age_seconds", r.age_seconds},
                                 {"interval", r.interval},
                                 {"gauge_ttl", r.gauge_ttl},
                                 {"live", r.live},
                                 {"watermarks", json_map(r.watermarks)},
                                 {"gauges", json_map(r.gauges)}});
        }
        all.push_back({{"namespace", f.fleet_namespace},
                       {"server_time_ms", f.server_time_ms},
                       {"totals", json_map(f.totals)},
                       {"gauges", json_map(f.gauges)},
                       {"objects", objects},
                       {"reporters", reporters},
                       {"warnings", f.warnings}});
    }
    return nlohmann::json{{"namespaces", all}}.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace procsafe::redis
