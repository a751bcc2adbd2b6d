// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The flusher. One round, for each segment:
//   1. read the segment (segment_view: read-only, no lock);
//   2. know this reporter's watermarks: from what Redis accepted last time
//      (a cache), or, when cold (a new process, a conflict, a lost reply),
//      read them (HMGET) and read the segment again, so that the values
//      sent were read after the watermarks they are compared with;
//   3. send, for each field that changed, (field, expected watermark, new
//      value, delta) to the function, the delta computed here, exactly;
//   4. record what the function accepted. A conflict (another flusher moved
//      a watermark first) changed nothing: read again and resend.
// A connection lost anywhere in between leaves the cache cold: whatever
// Redis applied or not, the next round reads the watermarks it holds.
#include "cluster.hpp"
#include "common.hpp"
#include "connection.hpp"
#include "fields.hpp"

#include <procsafe/redis.hpp>
#include <procsafe/segment_view.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <unistd.h>

namespace procsafe::redis {

namespace {

using detail::i128;

struct segment_state {
    std::string name, ns;
    std::optional<segment_view> view;
    std::uint64_t incarnation = 0;
    std::string reporter, info;       // of the current incarnation
    std::uint32_t stripe = 0;         // the reporter's stripe (known once the namespace's stripes are)
    std::string problem;              // the segment's last logged problem; empty: fine
    std::string refused;              // what Redis last refused of its commands; empty: nothing
    bool announced = false;
    std::unordered_map<std::string, std::string> marks;  // field -> watermark Redis holds ("" none)
    bool warm = false;
    std::unordered_set<std::string> logged;              // objects and fields already reported
    std::unordered_set<std::string> meta_sent;  // objects whose metadata Redis has
    std::string old_reporter;         // a previous incarnation, whose gauge hash is to be deleted
    bool registered = false;          // in the namespaces set
};

/// What each pipelined reply answers.
enum class expect { meta, hmget, flush, gauges };

struct pending {
    expect what;
    segment_state* s = nullptr;
    std::vector<const detail::field*> fields;          // flush, gauges
    std::vector<std::string> names;                    // hmget, meta
    std::vector<std::string> args;                     // the command, sent again if a cluster redirects it
};


std::string stamp_now() {
    timespec t{};
    ::clock_gettime(CLOCK_REALTIME, &t);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%020llu",
                  static_cast<unsigned long long>(t.tv_sec) * 1'000'000'000ULL + static_cast<unsigned long long>(t.tv_nsec));
    return buf;
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g s", s);
    return buf;
}

}  // namespace

struct flusher::impl {
    flush_options o;
    std::string host;
    double gauge_ttl = 0;
    std::vector<segment_state> segments;
    std::unique_ptr<detail::router> net;
    detail::connection* conn = nullptr;  // the node of the segment being flushed
    std::map<std::string, std::uint32_t> ns_stripes;  // namespace -> its recorded stripes, for the process's life
    std::unordered_set<std::string> stripes_logged;
    std::uint32_t proposed_stripes = 1;
    flush_stats stats;
    bool ever_flushed = false, failing = false;
    std::uint64_t failed_attempts = 0;
    double failing_since = 0;
    std::string last_error;
    std::string load_refused;  // logged once
    std::mt19937_64 rng{std::random_device{}()};

    explicit impl(flush_options options) : o(std::move(options)) {
        if (o.segments.empty()) throw std::invalid_argument("no segment to flush");
        if (!(o.interval > 0) || !std::isfinite(o.interval)) throw std::invalid_argument("the interval must be > 0 seconds");
        if (o.batch == 0) throw std::invalid_argument("the batch must hold at least one field");
        if (!(o.max_backoff > 0)) throw std::invalid_argument("max_backoff must be > 0 seconds");
        host = o.host_id.empty() ? detail::host_name() : o.host_id;
        detail::check_id("host id", host);
        if (!o.fleet_namespace.empty()) detail::check_id("namespace", o.fleet_namespace);
        gauge_ttl = o.gauge_ttl > 0 ? o.gauge_ttl : std::max(5 * o.interval, 2.0);
        if (o.stripes > keys::max_stripes) {
            throw std::invalid_argument("stripes: " + std::to_string(o.stripes) + " is more than " + std::to_string(keys::max_stripes));
        }
        proposed_stripes = o.stripes != 0 ? o.stripes : o.connection.cluster.empty() ? 1 : 16;
        for (const auto& name : o.segments) {
            procsafe::detail::check_segment_name(name);
            segment_state s;
            s.name = name;
            s.ns = o.fleet_namespace.empty() ? name : o.fleet_namespace;
            detail::check_id("namespace", s.ns);
            segments.push_back(std::move(s));
        }
    }

    void log(const std::string& line) const {
        if (o.log) {
            o.log(line);
        } else {
            std::fprintf(stderr, "procsafe flush: %s\n", line.c_str());
            std::fflush(stderr);
        }
    }
    void hook(std::string_view point) const {
        if (o.test_hook) o.test_hook(point);
    }
    std::string where() const { return net ? net->where() : "redis " + o.connection.redis.str(); }

    /// Every new connection (to the server, or to a master of the cluster:
    /// the first, one promoted, one that joined) loads the function library.
    void on_connect(detail::connection& c) {
        ++stats.connects;
        for (auto& s : segments) s.warm = false;  // it may be another server, or one restored from elsewhere
        // FUNCTION LOAD without REPLACE: the versioned library is loaded
        // once and persists; a user without the right to load it relies on
        // an administrator having loaded it (docs/redis.md).
        auto r = c.run({"FUNCTION", "LOAD", std::string(function_library())});
        if (detail::is_error(*r)) {
            const std::string why = detail::text_of(*r);
            if (why.find("already exists") == std::string::npos && why != load_refused) {
                log(c.where() + ": FUNCTION LOAD refused (" + why + "); FCALL works only if procsafe_1 is loaded");
                load_refused = why;
            }
        }
    }

    void connect() {
        if (!net) net = std::make_unique<detail::router>(o.connection, [this](detail::connection& c) { on_connect(c); });
    }

    /// The stripes of s's namespace (asked once per namespace since the
    /// last reset), and s's stripe among them.
    void place(segment_state& s) {
        auto it = ns_stripes.find(s.ns);
        if (it == ns_stripes.end()) {
            const std::uint32_t k = stripes_of(s.ns);
            replicated(s.ns);
            it = ns_stripes.emplace(s.ns, k).first;
        }
        s.stripe = keys::stripe_of(s.reporter, it->second);
    }

    /// The record of the namespace's stripes is on a replica (when its
    /// master has any) before a reporter uses it: replication is
    /// asynchronous, and a record lost in a failover would let another
    /// flusher record another number, under which reporters would move to
    /// other stripes and count again. Once per namespace and process.
    void replicated(const std::string& ns) {
        const std::string config = keys::config(ns);
        std::size_t replicas = 0;
        if (net->clustered()) {  // the replicas the cluster knows, connected or not (a cut off one loses the record too)
            const auto id = net->run(config, {"CLUSTER", "MYID"});
            if (detail::is_error(*id)) throw detail::command_failure(where() + ": CLUSTER MYID: " + detail::text_of(*id));
            const auto r = net->run(config, {"CLUSTER", "REPLICAS", detail::text_of(*id)});
            if (detail::is_error(*r)) throw detail::command_failure(where() + ": CLUSTER REPLICAS: " + detail::text_of(*r));
            replicas = detail::elements(*r);
        } else {  // one server: the replicas connected to it
            const auto role = net->run(config, {"ROLE"});
            if (detail::is_error(*role) || detail::elements(*role) < 3 || detail::text_of(detail::element(*role, 0)) != "master") return;
            replicas = detail::elements(detail::element(*role, 2));
        }
        if (replicas == 0) return;
        const auto ms = std::to_string(std::max(1L, std::lround(o.connection.command_timeout * 500)));
        auto r = net->run(config, {"WAIT", "1", ms});
        if (detail::is_error(*r)) throw detail::command_failure(where() + ": WAIT: " + detail::text_of(*r));
        if (detail::text_of(*r) == "0") {
            throw detail::command_failure(where() + ": namespace '" + ns + "': the record of its stripes is on none of its master's " +
                                          std::to_string(replicas) + " replica" + (replicas == 1 ? "" : "s") + " after " + ms +
                                          " ms (WAIT); not flushed until it is");
        }
    }

    /// Logs a line about a namespace once (and puts it in this round's
    /// warnings: `--once` prints those).
    void note(const std::string& ns, const std::string& line) {
        if (!stripes_logged.insert(ns).second) return;
        log(line);
        if (warnings != nullptr) warnings->push_back(line);
    }

    /// The stripes namespace `ns` recorded, recording them first if none
    /// are: the proposed number, or 1 for a namespace flushed before
    /// stripes (its stripe-0 reporters hash exists, nothing recorded), so
    /// no reporter of it moves to another stripe and counts again. HSETNX:
    /// the first flusher's number wins. Known for this process's life (a
    /// reporter never changes stripe while its flusher runs).
    std::uint32_t stripes_of(const std::string& ns) {
        const std::string config = keys::config(ns);
        auto recorded = [&](const redisReply& r) -> std::uint32_t {
            const auto k = detail::parse_integer(detail::text_of(r));
            if (!k || *k < 1 || *k > keys::max_stripes) {
                throw detail::command_failure(where() + ": namespace '" + ns + "' records " + detail::text_of(r).substr(0, 64) +
                                              " stripes (" + config + "): not 1 to " + std::to_string(keys::max_stripes));
            }
            return static_cast<std::uint32_t>(*k);
        };
        auto asked = [&](std::uint32_t k) {
            if (o.stripes != 0 && k != o.stripes) {
                note(ns, "namespace '" + ns + "' is spread over " + std::to_string(k) + " stripes since its first flush; " +
                             std::to_string(o.stripes) + " asked for, " + std::to_string(k) + " used (docs/redis.md: changing them)");
            }
            return k;
        };
        auto r = net->run(config, {"HGET", config, "stripes"});
        if (detail::is_error(*r)) throw detail::command_failure(where() + ": HGET " + config + ": " + detail::text_of(*r));
        if (!detail::is_nil(*r)) return asked(recorded(*r));
        std::string why;
        r = net->run(config, {"EXISTS", keys::reporters(ns)});
        if (detail::is_error(*r)) {
            why = "EXISTS: " + detail::text_of(*r);
        } else {
            const std::string k = detail::text_of(*r) == "1" ? "1" : std::to_string(proposed_stripes);
            r = net->run(config, {"HSETNX", config, "stripes", k});
            if (detail::is_error(*r)) {
                why = "HSETNX: " + detail::text_of(*r);
            } else {
                r = net->run(config, {"HGET", config, "stripes"});
                if (detail::is_error(*r)) throw detail::command_failure(where() + ": HGET " + config + ": " + detail::text_of(*r));
                if (!detail::is_nil(*r)) return asked(recorded(*r));
                why = "deleted as soon as recorded";
            }
        }
        // A user without +exists +hsetnx (the ACL of flushers before
        // stripes): one stripe, not recorded, the layout before stripes. A
        // later first flush that can record sees this one's reporters and
        // records 1; the reader flags a reporter found off its stripe.
        note(ns, "namespace '" + ns + "': its stripes cannot be recorded (" + why +
                     "); flushing to 1 stripe (docs/redis.md: the flusher's ACL)");
        return 1;
    }

    /// Replies of a pipeline sent to one node: redirections followed.
    void settle(std::vector<detail::reply>& replies, std::vector<pending>& sent, const std::string& key, flush_result& res) {
        for (std::size_t i = 0; i < sent.size(); ++i) {
            if (!detail::is_redirect(*replies[i])) continue;
            ++res.redirects;
            ++stats.redirects;
            replies[i] = net->settle(std::move(replies[i]), key, sent[i].args);
        }
    }

    // --- one segment -----------------------------------------------------

    /// Logs a segment's problem when it changes. procsafe::error's text
    /// names the segment already: not twice.
    void segment_problem(segment_state& s, std::string why) {
        const std::string named = "procsafe: segment '" + s.name + "': ";
        if (why.rfind(named, 0) == 0) why.erase(0, named.size());
        if (s.problem != why) log("segment '" + s.name + "': " + why);
        s.problem = why;
    }

    bool open(segment_state& s) {
        try {
            if (!s.view) s.view = segment_view::open(s.name);
            const std::uint64_t inc = s.view->incarnation();
            if (inc != s.incarnation || s.reporter.empty()) {
                const std::string before = s.reporter;
                if (!before.empty()) s.old_reporter = before;
                s.incarnation = inc;
                s.reporter = keys::reporter(host, s.name, inc);
                nlohmann::json info = {{"host", host},
                                       {"segment", s.name},
                                       {"incarnation", s.reporter.substr(s.reporter.rfind('|') + 1)},
                                       {"pid", static_cast<std::int64_t>(::getpid())},
                                       {"interval", o.interval},
                                       {"gauge_ttl", gauge_ttl}};
                s.info = info.dump();
                s.marks.clear();
                s.warm = false;
                s.logged.clear();
                s.meta_sent.clear();
                if (before.empty()) {
                    log("segment '" + s.name + "': flushing to namespace '" + s.ns + "' as reporter " + s.reporter);
                } else {
                    log("segment '" + s.name + "': a new incarnation, reporter " + s.reporter +
                        " (counts from zero; " + before + "'s last values stay counted)");
                }
            }
            if (!s.problem.empty()) log("segment '" + s.name + "': readable again");
            s.problem.clear();
            return true;
        } catch (const std::exception& e) {
            s.view.reset();
            segment_problem(s, e.what());
            return false;
        }
    }

    std::vector<std::string>* warnings = nullptr;  // this round's result's

    /// Reports an object or a field it cannot flush, the first time only.
    void once_per(segment_state& s, const std::string& key, const std::string& line) {
        if (!s.logged.insert(key).second) return;
        const std::string text = "segment '" + s.name + "': " + line;
        log(text);
        if (warnings != nullptr) warnings->push_back(text);
    }

    /// HMGET the watermarks of `names` into s.marks.
    flush_result* warnings_result = nullptr;  // this round's result (redirects counted there)

    void read_marks(segment_state& s, const std::vector<std::string>& names) {
        if (names.empty()) return;
        const std::string key = keys::watermarks(s.ns, s.reporter, s.stripe);
        std::vector<pending> sent;
        for (std::size_t at = 0; at < names.size(); at += o.batch) {
            const std::size_t end = std::min(names.size(), at + o.batch);
            std::vector<std::string> args{"HMGET", key};
            args.insert(args.end(), names.begin() + static_cast<std::ptrdiff_t>(at), names.begin() + static_cast<std::ptrdiff_t>(end));
            conn->append(args);
            pending p{expect::hmget, &s, {}, {}, {}};
            p.names.assign(names.begin() + static_cast<std::ptrdiff_t>(at), names.begin() + static_cast<std::ptrdiff_t>(end));
            p.args = std::move(args);
            sent.push_back(std::move(p));
        }
        conn->send();
        std::vector<detail::reply> replies;
        for (std::size_t i = 0; i < sent.size(); ++i) replies.push_back(conn->next_reply());
        flush_result ignored;
        settle(replies, sent, key, warnings_result != nullptr ? *warnings_result : ignored);
        for (std::size_t i = 0; i < sent.size(); ++i) {
            const auto& r = *replies[i];
            if (detail::is_error(r)) throw detail::command_failure(where() + ": HMGET: " + detail::text_of(r));
            if (detail::elements(r) != sent[i].names.size()) throw detail::command_failure(where() + ": HMGET: a short reply");
            for (std::size_t k = 0; k < sent[i].names.size(); ++k) {
                s.marks[sent[i].names[k]] = detail::text_of(detail::element(r, k));
            }
        }
    }

    /// One attempt at one segment; returns the batches that conflicted.
    std::size_t attempt(segment_state& s, flush_result& res) {
        using detail::rule;
        place(s);
        const std::string tag = keys::totals(s.ns, s.stripe);  // every key of this attempt is in its slot
        conn = &net->node_for(tag);
        // Once per namespace and connection, outside the pipeline (its own
        // slot on a cluster): the index of namespaces.
        if (!s.registered) {
            auto r = net->run(keys::namespaces, {"SADD", std::string(keys::namespaces), s.ns});
            if (detail::is_error(*r)) throw detail::command_failure(where() + ": SADD: " + detail::text_of(*r));
            s.registered = true;
        }
        if (!s.old_reporter.empty()) {  // a previous incarnation's gauges stop counting now
            const std::string old = keys::gauges(s.ns, s.old_reporter, keys::stripe_of(s.old_reporter, ns_stripes[s.ns]));
            auto r = net->run(old, {"DEL", old});
            if (detail::is_error(*r)) throw detail::command_failure(where() + ": DEL: " + detail::text_of(*r));
            s.old_reporter.clear();
        }
        conn = &net->node_for(tag);
        const auto with_meta = [&s](const std::string& name) { return s.meta_sent.count(name) == 0; };
        detail::collected c = detail::collect(s.view->objects(), with_meta);
        auto counted = [](const detail::field& f) { return f.how != rule::gauge; };
        if (!s.warm) {
            std::vector<std::string> names;
            for (const auto& f : c.fields)
                if (counted(f)) names.push_back(f.name);
            s.marks.clear();
            read_marks(s, names);
            s.warm = true;
            // The values compared with these watermarks are read after them:
            // a flusher racing with another on one segment never sends a
            // value older than the watermark it replaces.
            c = detail::collect(s.view->objects(), with_meta);
        }
        for (const auto& k : c.skipped) once_per(s, "o:" + k.object, "object '" + k.object + "' not flushed: " + k.why);
        {
            std::vector<std::string> missing;
            for (const auto& f : c.fields)
                if (counted(f) && s.marks.find(f.name) == s.marks.end()) missing.push_back(f.name);
            read_marks(s, missing);
        }
        hook("watermarks.read");

        // The tuples: what changed since the watermark.
        struct tuple {
            const detail::field* f;
            std::string delta;
        };
        std::vector<tuple> ints, reals;
        std::vector<const detail::field*> gauges;
        for (const auto& f : c.fields) {
            if (f.how == rule::gauge) {
                gauges.push_back(&f);
                continue;
            }
            const std::string& mark = s.marks[f.name];
            if (mark == f.text) continue;
            if (f.how == rule::integer) {
                const auto before = mark.empty() ? std::optional<i128>(0) : detail::parse_integer(mark);
                if (!before) {
                    once_per(s, "f:" + f.name, "field '" + f.name + "': its watermark '" + mark + "' is not an integer: not flushed");
                    continue;
                }
                const i128 delta = f.integer - *before;
                if (delta > std::numeric_limits<std::int64_t>::max() || delta < std::numeric_limits<std::int64_t>::min()) {
                    once_per(s, "f:" + f.name, "field '" + f.name + "': a change of " + detail::to_text(delta) +
                                                   " does not fit Redis' 64-bit integers: not flushed");
                    continue;
                }
                ints.push_back({&f, detail::to_text(delta)});
            } else {
                const auto before = mark.empty() ? std::optional<double>(0.0) : detail::parse_real(mark);
                if (!before) {
                    once_per(s, "f:" + f.name, "field '" + f.name + "': its watermark '" + mark + "' is not a number: not flushed");
                    continue;
                }
                reals.push_back({&f, detail::to_text(f.real - *before)});
            }
        }

        // The pipeline.
        std::vector<pending> sent;
        {
            std::vector<std::string> args{"HSET", keys::meta(s.ns, s.stripe)};
            pending p{expect::meta, &s, {}, {}, {}};
            for (const auto& [name, json] : c.meta) {
                args.push_back(name);
                args.push_back(json);
                p.names.push_back(name);
            }
            if (!p.names.empty()) {
                conn->append(args);
                p.args = std::move(args);
                sent.push_back(std::move(p));
            }
        }
        const std::string totals = keys::totals(s.ns, s.stripe), marks = keys::watermarks(s.ns, s.reporter, s.stripe),
                          reporters = keys::reporters(s.ns, s.stripe);
        auto flush_batches = [&](const std::vector<tuple>& tuples, const char* mode, bool even_if_empty) {
            for (std::size_t at = 0; at < tuples.size() || (even_if_empty && at == 0); at += o.batch) {
                const std::size_t end = std::min(tuples.size(), at + o.batch);
                std::vector<std::string> args{"FCALL", std::string(flush_function), "3", totals, marks, reporters,
                                              s.reporter, s.info, mode};
                args.reserve(args.size() + 4 * (end - at));
                pending p{expect::flush, &s, {}, {}, {}};
                for (std::size_t i = at; i < end; ++i) {
                    const auto& t = tuples[i];
                    args.push_back(t.f->name);
                    args.push_back(s.marks[t.f->name]);
                    args.push_back(t.f->text);
                    args.push_back(t.delta);
                    p.fields.push_back(t.f);
                }
                conn->append(args);
                p.args = std::move(args);
                sent.push_back(std::move(p));
                ++res.fcalls;
                if (tuples.empty()) break;
            }
        };
        // At least one call a round: it records the reporter's flush time.
        flush_batches(ints, "i", reals.empty() && gauges.empty());
        flush_batches(reals, "f", false);
        if (!gauges.empty()) {
            const std::string g = keys::gauges(s.ns, s.reporter, s.stripe), stamp = stamp_now(),
                              ttl = std::to_string(static_cast<long long>(std::ceil(gauge_ttl * 1000)));
            for (std::size_t at = 0; at < gauges.size(); at += o.batch) {
                const std::size_t end = std::min(gauges.size(), at + o.batch);
                std::vector<std::string> args{"FCALL", std::string(gauges_function), "2", g, reporters,
                                              s.reporter, s.info, ttl, stamp};
                pending p{expect::gauges, &s, {}, {}, {}};
                for (std::size_t i = at; i < end; ++i) {
                    args.push_back(gauges[i]->name);
                    args.push_back(gauges[i]->text);
                    p.fields.push_back(gauges[i]);
                }
                conn->append(args);
                p.args = std::move(args);
                sent.push_back(std::move(p));
                ++res.fcalls;
            }
        }
        conn->send();
        hook("fcall.sent");
        std::vector<detail::reply> replies;
        replies.reserve(sent.size());
        for (std::size_t i = 0; i < sent.size(); ++i) replies.push_back(conn->next_reply());
        const std::size_t redirected = res.redirects;
        settle(replies, sent, tag, res);
        // The slot moved (a resharding, a failover by takeover): what this
        // flusher remembers of the watermarks may be of the old master's
        // data: read them again next time.
        const bool moved = res.redirects != redirected;

        // What Redis accepted.
        std::size_t conflicts = 0;
        std::string error;
        for (std::size_t i = 0; i < sent.size(); ++i) {
            const auto& r = *replies[i];
            auto& p = sent[i];
            if (detail::is_error(r)) {
                if (error.empty()) error = where() + ": " + detail::text_of(r);
                continue;
            }
            switch (p.what) {
                case expect::meta:
                    for (std::size_t k = 0; k < p.names.size(); ++k) s.meta_sent.insert(p.names[k]);
                    break;
                case expect::hmget: break;
                case expect::flush: {
                    if (detail::elements(r) < 1) {
                        if (error.empty()) error = where() + ": " + std::string(flush_function) + ": an unexpected reply";
                        break;
                    }
                    const std::string status = detail::text_of(detail::element(r, 0));
                    if (status == "conflict") {
                        ++conflicts;
                        s.warm = false;
                        break;
                    }
                    std::unordered_map<std::string, std::string> failed;
                    if (detail::elements(r) > 1) {
                        const auto& f = detail::element(r, 1);
                        for (std::size_t k = 0; k + 1 < detail::elements(f); k += 2)
                            failed[detail::text_of(detail::element(f, k))] = detail::text_of(detail::element(f, k + 1));
                    }
                    for (const detail::field* f : p.fields) {
                        if (const auto it = failed.find(f->name); it != failed.end()) {
                            once_per(s, "f:" + f->name, "field '" + f->name + "': not added: " + it->second);
                            continue;
                        }
                        s.marks[f->name] = f->text;
                        ++res.fields;
                    }
                    break;
                }
                case expect::gauges: res.gauges += p.fields.size(); break;
            }
        }
        if (moved) s.warm = false;
        if (!error.empty()) throw detail::command_failure(error);
        return conflicts;
    }

    // --- a round ---------------------------------------------------------

    flush_result round() {
        const double t0 = detail::now_seconds();
        flush_result res;
        warnings = &res.warnings;
        warnings_result = &res;
        ++stats.rounds;
        bool redis_failed = false;
        try {
            connect();
            for (auto& s : segments) {
                if (!open(s)) {
                    if (res.error.empty()) res.error = "segment '" + s.name + "': " + s.problem;
                    continue;
                }
                bool stale = false;
                try {
                    stale = s.view->is_stale();
                } catch (...) {
                }
                bool done = false;
                for (int a = 0; a < 8 && !done; ++a) {
                    std::size_t conflicts = 0;
                    try {
                        conflicts = attempt(s, res);
                    } catch (const procsafe::error& e) {  // the segment, not Redis: no reply is pending then
                        s.view.reset();
                        segment_problem(s, e.what());
                        if (res.error.empty()) res.error = "segment '" + s.name + "': " + s.problem;
                        break;
                    } catch (const detail::command_failure& e) {
                        // Redis refused this segment's commands (its slot
                        // stuck in a migration, OOM, a function missing):
                        // every reply was read, the connection is sound;
                        // the other segments go on.
                        s.warm = false;
                        if (s.refused != e.what()) log("segment '" + s.name + "': " + e.what());
                        s.refused = e.what();
                        if (res.error.empty()) res.error = e.what();
                        break;
                    }
                    res.conflicts += conflicts;
                    stats.conflicts += conflicts;
                    done = conflicts == 0;
                }
                if (!done) {
                    if (res.error.empty() && s.problem.empty()) {
                        res.error = "segment '" + s.name + "': its watermarks kept changing (another flusher on it?)";
                    }
                    continue;
                }
                ++res.segments;
                if (!s.refused.empty()) log("segment '" + s.name + "': flushing again");
                s.refused.clear();
                if (stale) {  // its last values are flushed: the name is another segment now, or none
                    log("segment '" + s.name + "': removed or recreated; its last values flushed, opening it again");
                    s.view.reset();
                }
            }
        } catch (const std::exception& e) {
            // The connection's state is unknown (a reply lost, a pipeline
            // half read): drop it; what Redis holds is read again.
            if (net) net->reset();
            conn = nullptr;
            for (auto& s : segments) s.warm = false, s.registered = false;
            redis_failed = true;
            res.error = e.what();
        }
        warnings = nullptr;
        warnings_result = nullptr;
        res.ok = !redis_failed && res.segments == segments.size();
        res.reached_redis = !redis_failed;
        res.seconds = detail::now_seconds() - t0;
        stats.fields += res.fields;
        stats.fcalls += res.fcalls;
        if (!res.ok) ++stats.failed_rounds;
        if (redis_failed) {
            if (!failing || res.error != last_error) {
                if (!failing) failing_since = t0;
                log(res.error + (failing ? "" : "; retrying with backoff (up to " + seconds_text(o.max_backoff) + ")"));
            }
            failing = true;
            ++failed_attempts;
            last_error = res.error;
        } else {
            if (failing) {
                log(where() + ": flushing again after " + std::to_string(failed_attempts) + " failed attempt" +
                    (failed_attempts == 1 ? "" : "s") + " in " + seconds_text(detail::now_seconds() - failing_since));
            } else if (!ever_flushed) {
                log(where() + ": connected; host '" + host + "', " + std::to_string(segments.size()) + " segment" +
                    (segments.size() == 1 ? "" : "s") + ", every " + seconds_text(o.interval));
            }
            ever_flushed = true;
            failing = false;
            failed_attempts = 0;
            last_error.clear();
        }
        return res;
    }

    bool reached_redis() const { return !failing; }

    /// Sleeps `seconds`, waking early when `stop` becomes true.
    static void nap(double seconds, const std::atomic<bool>& stop) {
        const double end = detail::now_seconds() + seconds;
        for (;;) {
            if (stop.load(std::memory_order_relaxed)) return;
            const double left = end - detail::now_seconds();
            if (left <= 0) return;
            std::this_thread::sleep_for(std::chrono::duration<double>(std::min(left, 0.02)));
        }
    }

    void run(const std::atomic<bool>& stop) {
        double next = detail::now_seconds();
        int backoff_step = 0;
        std::uniform_real_distribution<double> jitter(0.8, 1.2);
        while (!stop.load(std::memory_order_relaxed)) {
            round();
            const double now = detail::now_seconds();
            double wait;
            if (reached_redis()) {
                backoff_step = 0;
                next += o.interval;
                if (next < now) next = now;  // a slow round: no burst to catch up
                wait = next - now;
            } else {
                wait = std::min(o.max_backoff, 0.1 * std::pow(2.0, backoff_step)) * jitter(rng);
                backoff_step = std::min(backoff_step + 1, 30);
                next = now + wait;
            }
            nap(wait, stop);
        }
        round();  // what was counted since the last round
    }
};

flusher::flusher(flush_options options) : impl_(std::make_unique<impl>(std::move(options))) {}
flusher::~flusher() = default;
flusher::flusher(flusher&&) noexcept = default;
flusher& flusher::operator=(flusher&&) noexcept = default;

flush_result flusher::flush_once() {
    try {
        return impl_->round();
    } catch (const std::exception& e) {  // round() catches what Redis and segments throw; this is allocation
        flush_result r;
        r.error = e.what();
        return r;
    }
}

void flusher::run(const std::atomic<bool>& stop) {
    try {
        impl_->run(stop);
    } catch (...) {
    }
}

const flush_stats& flusher::stats() const noexcept { return impl_->stats; }

}  // namespace procsafe::redis
