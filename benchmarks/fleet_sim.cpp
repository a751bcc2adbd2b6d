// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe-fleet-sim: a load generator that plays N hosts' flushers against
// one redis-server or a Redis Cluster, without shared memory. Each simulated
// flush of a host sends exactly what a flusher sends for C changed counters:
// FCALL procsafe_flush_1 on its stripe's keys (totals, wm:REPORTER,
// reporters), its reporter id and info, mode "i", then (field, expected
// watermark, new cumulative value, delta) tuples, at most --batch a call.
// The watermarks are real: each host keeps what Redis accepted and sends
// it as the expected value; a conflict is a failure. The hosts' calls are
// grouped by the master of their stripe's slot and pipelined per master
// (--depth hosts a window, every master's window in flight at once).
//
// Each run: a first flush of every host (all counters, and the objects'
// metadata, as a flusher's first flush; not measured), then rounds (every
// host once a round) for --seconds, then the check: read_fleet() of every
// namespace must equal the sum of what the hosts sent, exactly.
//
// Measured: flushes/s and field changes/s; Redis CPU (used_cpu_sys +
// used_cpu_user of INFO cpu, summed over the masters, and over the
// replicas) per field change; each master's share of that CPU; the
// latency of a host's flush (its window sent to its last reply read);
// memory per reporter (INFO used_memory around the first flush, MEMORY
// USAGE of a wm: hash); read_fleet()'s time.
//
//   procsafe-fleet-sim (--redis H:P | --redis-cluster H:P,...) [--hosts N]
//       [--counters C] [--namespaces M] [--stripes K] [--seconds T]
//       [--changed FRACTION] [--rate FLUSHES_PER_S] [--batch B] [--depth D]
//       [--wait-replicas R [--wait-timeout MS]] [--runs N] [--label TEXT]
//       [--ns-prefix P] [--function procsafe|batched]
#include "cluster.hpp"
#include "common.hpp"
#include "connection.hpp"

#include <procsafe/redis.hpp>

#include <hiredis.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace {

namespace pr = procsafe::redis;
namespace pd = procsafe::redis::detail;

struct options {
    pr::connection_options conn;
    std::size_t hosts = 1000, counters = 100, namespaces = 1;
    std::uint32_t stripes = 1;
    double seconds = 10, changed = 1.0, rate = 0, interval = 10;
    std::size_t batch = 2000, depth = 8;
    int wait_replicas = 0, wait_timeout_ms = 1000, runs = 1;
    std::string label = "run", ns_prefix = "sim";
    bool batched = false;  // --function batched: the experiment below, not procsafe's function
};

// An experiment, not what procsafe sends: procsafe_flush_1's rules with
// fewer commands inside the function (one HMGET of the watermarks and one
// HSET of them per 1,000 fields, where procsafe_flush_1 calls HGET and HSET
// once a field), to measure what the function's shape costs.
constexpr std::string_view batched_library = R"lua(#!lua name=procsafe_sim_batched
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
local function flush(keys, args)
  local n = #args
  if #keys ~= 3 or n < 3 or (n - 3) % 4 ~= 0 then return redis.error_reply('ERR procsafe_sim_batched_flush: arguments') end
  local totals, marks, reporters = keys[1], keys[2], keys[3]
  local m = (n - 3) / 4
  local conflicts = {}
  for c = 1, m, 1000 do
    local last = math.min(m, c + 999)
    local names = {}
    for j = c, last do names[#names + 1] = args[4 * j] end
    local got = redis.call('HMGET', marks, unpack(names))
    for j = c, last do
      local mark = got[j - c + 1]
      if not mark then mark = '' end
      if mark ~= args[4 * j + 1] then conflicts[#conflicts + 1] = args[4 * j] end
    end
  end
  if #conflicts > 0 then return {'conflict', conflicts} end
  local failed, sets = {}, {}
  for i = 4, n, 4 do
    local r = redis.pcall('HINCRBY', totals, args[i], args[i + 3])
    if type(r) == 'table' and r.err then
      failed[#failed + 1] = args[i]
      failed[#failed + 1] = r.err
    else
      sets[#sets + 1] = args[i]
      sets[#sets + 1] = args[i + 2]
    end
  end
  for c = 1, #sets, 1000 do redis.call('HSET', marks, unpack(sets, c, math.min(#sets, c + 999))) end
  redis.call('HSET', reporters, args[1], now_ms() .. ' ' .. args[2])
  return {'ok', failed}
end
redis.register_function('procsafe_sim_batched_flush', flush)
)lua";

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "procsafe-fleet-sim: %s\n"
                 "usage: procsafe-fleet-sim (--redis H:P | --redis-cluster H:P,...) [--hosts N] [--counters C]\n"
                 "       [--namespaces M] [--stripes K] [--seconds T] [--changed FRACTION] [--rate FLUSHES_PER_S]\n"
                 "       [--batch B] [--depth D] [--wait-replicas R] [--wait-timeout MS] [--runs N] [--label TEXT]\n"
                 "       [--ns-prefix P] [--interval S] [--function procsafe|batched]\n",
                 why.c_str());
    std::exit(2);
}

double number(const std::string& opt, const char* text, double lo, double hi) {
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(v >= lo && v <= hi)) {
        usage(opt + ": '" + text + "' is not a number from " + std::to_string(lo) + " to " + std::to_string(hi));
    }
    return v;
}

options parse(int argc, char** argv) {
    options o;
    o.conn.connect_timeout = 2;
    o.conn.command_timeout = 60;  // read_fleet of a large namespace, WAIT
    bool where = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") usage("help");
        if (i + 1 >= argc) usage(a + ": a value expected");
        const char* v = argv[++i];
        try {
            if (a == "--redis") o.conn.redis = pr::endpoint::parse(v), where = true;
            else if (a == "--redis-cluster") o.conn.cluster = pr::endpoint::parse_list(v), where = true;
            else if (a == "--hosts") o.hosts = static_cast<std::size_t>(number(a, v, 1, 1e7));
            else if (a == "--counters") o.counters = static_cast<std::size_t>(number(a, v, 1, 1e6));
            else if (a == "--namespaces") o.namespaces = static_cast<std::size_t>(number(a, v, 1, 1e5));
            else if (a == "--stripes") o.stripes = static_cast<std::uint32_t>(number(a, v, 1, pr::keys::max_stripes));
            else if (a == "--seconds") o.seconds = number(a, v, 0, 86400);
            else if (a == "--changed") o.changed = number(a, v, 0, 1);
            else if (a == "--rate") o.rate = number(a, v, 0, 1e9);
            else if (a == "--batch") o.batch = static_cast<std::size_t>(number(a, v, 1, 1e6));
            else if (a == "--depth") o.depth = static_cast<std::size_t>(number(a, v, 1, 1e5));
            else if (a == "--wait-replicas") o.wait_replicas = static_cast<int>(number(a, v, 0, 100));
            else if (a == "--wait-timeout") o.wait_timeout_ms = static_cast<int>(number(a, v, 0, 60000));
            else if (a == "--runs") o.runs = static_cast<int>(number(a, v, 1, 100));
            else if (a == "--interval") o.interval = number(a, v, 0.01, 86400);
            else if (a == "--label") o.label = v;
            else if (a == "--ns-prefix") o.ns_prefix = v;
            else if (a == "--function") {
                if (std::string(v) != "procsafe" && std::string(v) != "batched") usage("--function: procsafe or batched");
                o.batched = std::string(v) == "batched";
            }
            else usage("unknown option " + a);
        } catch (const std::invalid_argument& e) {
            usage(a + ": " + e.what());
        }
    }
    if (!where) usage("--redis or --redis-cluster is required");
    if (o.namespaces > o.hosts) usage("--namespaces: more namespaces than hosts");
    return o;
}

double now() { return pd::now_seconds(); }

double own_cpu() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double percentile(std::vector<double>& sorted, double p) {
    if (sorted.empty()) return NAN;
    const auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size()))) - 1;
    return sorted[std::min(i, sorted.size() - 1)];
}

/// A value of INFO's "name:value" lines.
double info_field(const std::string& info, const std::string& name) {
    const std::string key = name + ":";
    std::size_t at = 0;
    while ((at = info.find(key, at)) != std::string::npos) {
        if (at == 0 || info[at - 1] == '\n') return std::atof(info.c_str() + at + key.size());
        at += key.size();
    }
    return NAN;
}

/// A field of a command's line in INFO commandstats: "cmdstat_exec:calls=3,usec=1234,...".
double cmdstat(const std::string& info, const std::string& command, const std::string& field) {
    const std::string key = "cmdstat_" + command + ":";
    const auto at = info.find(key);
    if (at == std::string::npos) return 0;
    const auto end = info.find('\n', at);
    const std::string line = info.substr(at, end == std::string::npos ? std::string::npos : end - at);
    const auto f = line.find(field + "=");
    return f == std::string::npos ? 0 : std::atof(line.c_str() + f + field.size() + 1);
}

/// A node whose CPU and memory are sampled, on a connection of its own.
struct node_probe {
    std::string where;
    bool master = true;
    std::unique_ptr<pd::connection> c;
    std::string info(const char* section) { return pd::text_of(*c->must({"INFO", section})); }
    double cpu() {
        const std::string s = info("cpu");
        return info_field(s, "used_cpu_sys") + info_field(s, "used_cpu_user");
    }
    /// Its forks' (an AOF rewrite's), once they have exited.
    double children_cpu() {
        const std::string s = info("cpu");
        return info_field(s, "used_cpu_sys_children") + info_field(s, "used_cpu_user_children");
    }
    double memory() { return info_field(info("memory"), "used_memory"); }
    /// Bytes of the replication stream (what a replica and the AOF receive); 0 without replicas.
    double repl_offset() { return info_field(info("replication"), "master_repl_offset"); }
};

pd::connection* open_node(const options& o, const pr::endpoint& e) {
    pr::connection_options co = o.conn;
    co.redis = e;
    co.cluster.clear();
    return new pd::connection(co);
}

/// Every node: the masters (the router's), and on a cluster the replicas
/// CLUSTER NODES names.
std::vector<node_probe> probes_of(const options& o, pd::router& net) {
    std::vector<node_probe> out;
    for (const auto& e : net.masters()) {
        node_probe p;
        p.where = e.str();
        p.c.reset(open_node(o, e));
        out.push_back(std::move(p));
    }
    if (!net.clustered()) return out;
    const std::string nodes = pd::text_of(*out.front().c->must({"CLUSTER", "NODES"}));
    std::size_t at = 0;
    while (at < nodes.size()) {
        const std::size_t end = std::min(nodes.find('\n', at), nodes.size());
        const std::string line = nodes.substr(at, end - at);
        at = end + 1;
        // ID HOST:PORT@BUS[,HOSTNAME] FLAGS MASTER ...
        std::vector<std::string> f;
        std::size_t p = 0;
        while (p < line.size() && f.size() < 3) {
            const std::size_t sp = std::min(line.find(' ', p), line.size());
            f.push_back(line.substr(p, sp - p));
            p = sp + 1;
        }
        if (f.size() < 3 || f[2].find("slave") == std::string::npos || f[2].find("fail") != std::string::npos) continue;
        const std::string addr = f[1].substr(0, f[1].find('@'));
        node_probe n;
        n.where = addr;
        n.master = false;
        n.c.reset(open_node(o, pr::endpoint::parse(addr)));
        out.push_back(std::move(n));
    }
    return out;
}

struct host {
    std::string reporter, info, ns;
    std::string totals, marks, reporters, meta;
    std::size_t nsi = 0, node = 0;
    std::uint64_t flushes = 0;
    std::vector<std::uint64_t> value, mark;  // the segment's values; the watermarks Redis holds (0: none)
};

/// One command of a window, and what it answers.
struct sent_cmd {
    enum kind_t { meta, fcall, wait } kind;
    std::size_t host;
    std::vector<std::string> args;
    std::vector<std::uint32_t> fields;  // fcall: the counters it carries
};

struct xorshift {
    std::uint64_t s;
    std::uint64_t operator()() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
};

struct run_result {
    std::string scenario;
    std::size_t masters = 0, replicas = 0, hosts = 0, counters = 0, namespaces = 0;
    std::uint32_t stripes = 1;
    double changed = 1, seconds = 0, warmup_seconds = 0;
    std::uint64_t flushes = 0, changes = 0, fcalls = 0, redirects = 0, wait_short = 0;
    double flushes_s = 0, changes_s = 0, us_per_change = 0, replica_us_per_change = 0, max_share = 0, max_util = 0;
    double client_us_per_change = 0, children_us_per_change = 0, repl_bytes_per_change = 0, p50_ms = 0, p99_ms = 0;
    std::vector<double> shares;
    double memory_per_reporter = 0, wm_hash_bytes = 0, reporters_hash_bytes = 0;
    double read_seconds = 0, read_bytes = 0, read_exec_ms = 0;
    std::uint64_t read_fields = 0;
    bool exact = false;
    std::string problem;
};

class simulation {
public:
    simulation(const options& o, int run) : o_(o), net_(o.conn, [](pd::connection& c) {
        for (const std::string_view lib : {pr::function_library(), batched_library}) {
            auto r = c.run({"FUNCTION", "LOAD", std::string(lib)});
            if (pd::is_error(*r) && pd::text_of(*r).find("already exists") == std::string::npos)
                throw pd::command_failure(c.where() + ": FUNCTION LOAD: " + pd::text_of(*r));
        }
    }) {
        for (std::size_t i = 0; i < o.counters; ++i) names_.push_back("sim_requests{index=\"" + std::to_string(i) + "\"}");
        for (std::size_t m = 0; m < o.namespaces; ++m) {
            std::string ns = o.ns_prefix + "-r" + std::to_string(run);
            if (o.namespaces > 1) ns += "-" + std::to_string(m);
            nss_.push_back(ns);
        }
        rng_.s = 0x9e3779b97f4a7c15ULL ^ static_cast<std::uint64_t>(run);
        const long pid = static_cast<long>(::getpid());
        hosts_.resize(o.hosts);
        for (std::size_t i = 0; i < o.hosts; ++i) {
            host& h = hosts_[i];
            char name[32];
            std::snprintf(name, sizeof name, "simhost-%06zu", i);
            h.nsi = i % o.namespaces;
            h.ns = nss_[h.nsi];
            const std::uint64_t incarnation = rng_();
            h.reporter = pr::keys::reporter(name, "sim", incarnation);
            char inc[17];
            std::snprintf(inc, sizeof inc, "%016" PRIx64, incarnation);
            char ttl[32];
            std::snprintf(ttl, sizeof ttl, "%g", std::max(5 * o.interval, 2.0));
            char iv[32];
            std::snprintf(iv, sizeof iv, "%g", o.interval);
            h.info = std::string("{\"gauge_ttl\":") + ttl + ",\"host\":\"" + name + "\",\"incarnation\":\"" + inc +
                     "\",\"interval\":" + iv + ",\"pid\":" + std::to_string(pid) + ",\"segment\":\"sim\"}";
            const std::uint32_t stripe = pr::keys::stripe_of(h.reporter, o.stripes);
            h.totals = pr::keys::totals(h.ns, stripe);
            h.marks = pr::keys::watermarks(h.ns, h.reporter, stripe);
            h.reporters = pr::keys::reporters(h.ns, stripe);
            h.meta = pr::keys::meta(h.ns, stripe);
            h.value.assign(o.counters, 0);
            h.mark.assign(o.counters, 0);
        }
    }

    run_result go() {
        run_result r;
        r.scenario = o_.label;
        r.hosts = o_.hosts;
        r.counters = o_.counters;
        r.namespaces = o_.namespaces;
        r.stripes = o_.stripes;
        r.changed = o_.changed;
        record_namespaces();
        auto probes = probes_of(o_, net_);
        for (const auto& p : probes) (p.master ? r.masters : r.replicas)++;
        // The hosts by the master of their stripe's slot.
        std::map<pd::connection*, std::size_t> index;
        for (auto& h : hosts_) {
            pd::connection* c = &net_.node_for(h.totals);
            const auto it = index.emplace(c, conns_.size()).first;
            if (it->second == conns_.size()) conns_.push_back(c), groups_.emplace_back();
            h.node = it->second;
            groups_[h.node].push_back(static_cast<std::size_t>(&h - hosts_.data()));
        }

        // The first flush of every host: all counters, and the metadata.
        double mem0 = 0, mem1 = 0;
        for (auto& p : probes)
            if (p.master) mem0 += p.memory();
        const double w0 = now();
        round(true, 0);
        r.warmup_seconds = now() - w0;
        for (auto& p : probes)
            if (p.master) mem1 += p.memory();
        r.memory_per_reporter = (mem1 - mem0) / static_cast<double>(o_.hosts);
        {
            const host& h = hosts_.front();
            r.wm_hash_bytes = static_cast<double>(net_.run(h.totals, {"MEMORY", "USAGE", h.marks, "SAMPLES", "0"})->integer);
            r.reporters_hash_bytes = static_cast<double>(net_.run(h.totals, {"MEMORY", "USAGE", h.reporters, "SAMPLES", "0"})->integer);
        }
        flushes_ = changes_ = fcalls_ = 0;
        latencies_.clear();

        // The measured rounds.
        std::vector<double> cpu0;
        double kids0 = 0, kids1 = 0, repl0 = 0, repl1 = 0;
        for (auto& p : probes) {
            cpu0.push_back(p.cpu());
            if (p.master) kids0 += p.children_cpu(), repl0 += p.repl_offset();
        }
        const double c0 = own_cpu();
        t0_ = now();
        while (!done_) round(false, o_.seconds);
        const double wall = now() - t0_;
        const double c1 = own_cpu();
        std::vector<double> used;
        double masters_cpu = 0, replicas_cpu = 0;
        for (std::size_t i = 0; i < probes.size(); ++i) {
            used.push_back(probes[i].cpu() - cpu0[i]);
            (probes[i].master ? masters_cpu : replicas_cpu) += used.back();
            if (probes[i].master) kids1 += probes[i].children_cpu(), repl1 += probes[i].repl_offset();
        }
        r.seconds = wall;
        r.flushes = flushes_;
        r.changes = changes_;
        r.fcalls = fcalls_;
        r.redirects = redirects_;
        r.wait_short = wait_short_;
        r.flushes_s = static_cast<double>(flushes_) / wall;
        r.changes_s = static_cast<double>(changes_) / wall;
        const double per = changes_ > 0 ? 1e6 / static_cast<double>(changes_) : NAN;
        r.us_per_change = masters_cpu * per;
        r.replica_us_per_change = replicas_cpu * per;
        r.client_us_per_change = (c1 - c0) * per;
        r.children_us_per_change = (kids1 - kids0) * per;
        r.repl_bytes_per_change = r.replicas > 0 ? (repl1 - repl0) / static_cast<double>(changes_) : NAN;
        for (std::size_t i = 0; i < probes.size(); ++i) {
            if (!probes[i].master) continue;
            const double share = masters_cpu > 0 ? used[i] / masters_cpu : 0;
            r.shares.push_back(share);
            r.max_share = std::max(r.max_share, share);
            r.max_util = std::max(r.max_util, used[i] / wall);
        }
        std::sort(latencies_.begin(), latencies_.end());
        r.p50_ms = percentile(latencies_, 0.5) * 1e3;
        r.p99_ms = percentile(latencies_, 0.99) * 1e3;
        // read_fleet(): each stripe is one MULTI/EXEC on its master, which
        // serves nothing else meanwhile.
        double exec_usec = 0, exec_calls = 0;
        for (auto& p : probes) {
            if (!p.master) continue;
            const std::string st = p.info("commandstats");
            exec_usec -= cmdstat(st, "exec", "usec"), exec_calls -= cmdstat(st, "exec", "calls");
        }
        verify(r);
        for (auto& p : probes) {
            if (!p.master) continue;
            const std::string st = p.info("commandstats");
            exec_usec += cmdstat(st, "exec", "usec"), exec_calls += cmdstat(st, "exec", "calls");
        }
        r.read_exec_ms = exec_calls > 0 ? exec_usec / exec_calls / 1e3 : NAN;
        return r;
    }

private:
    /// The namespaces' stripes, recorded as the flusher records them, and
    /// the index of namespaces. A namespace that exists already is refused
    /// (its watermarks are not ours: every call would conflict).
    void record_namespaces() {
        for (const auto& ns : nss_) {
            const std::string config = pr::keys::config(ns);
            if (!pd::is_nil(*net_.run(config, {"HGET", config, "stripes"})) ||
                net_.run(config, {"EXISTS", pr::keys::reporters(ns)})->integer != 0) {
                throw std::runtime_error("namespace '" + ns + "' exists already: another --ns-prefix, or FLUSHALL");
            }
            auto r = net_.run(config, {"HSET", config, "stripes", std::to_string(o_.stripes)});
            if (pd::is_error(*r)) throw std::runtime_error("HSET " + config + ": " + pd::text_of(*r));
            r = net_.run(pr::keys::namespaces, {"SADD", std::string(pr::keys::namespaces), ns});
            if (pd::is_error(*r)) throw std::runtime_error("SADD: " + pd::text_of(*r));
        }
    }

    /// One host's flush: its commands. `first`: every counter, as a first
    /// flush (cold: nothing in Redis yet), and the objects' metadata.
    void build(std::size_t hi, bool first, std::vector<sent_cmd>& out) {
        host& h = hosts_[hi];
        const std::size_t c = o_.counters;
        std::vector<std::uint32_t> changed;
        if (first) {
            out.push_back({sent_cmd::meta, hi,
                           {"HSET", h.meta, "sim_requests",
                            R"({"help":"simulated requests","kind":"counter_array","label":"index","metric":"counter","type":"int64_t","unit":""})"},
                           {}});
            for (std::size_t i = 0; i < c; ++i) {
                h.value[i] = 1 + rng_() % 1'000'000'000;
                changed.push_back(static_cast<std::uint32_t>(i));
            }
        } else {
            const auto n = static_cast<std::size_t>(std::llround(o_.changed * static_cast<double>(c)));
            const std::size_t start = static_cast<std::size_t>((h.flushes * n) % c);
            for (std::size_t k = 0; k < n; ++k) {
                const std::size_t i = (start + k) % c;
                h.value[i] += 1 + rng_() % 1000;
                changed.push_back(static_cast<std::uint32_t>(i));
            }
        }
        // As the flusher: at least one call a flush (it records the flush time).
        for (std::size_t at = 0; at < changed.size() || at == 0; at += o_.batch) {
            const std::size_t end = std::min(changed.size(), at + o_.batch);
            const std::string function = o_.batched ? "procsafe_sim_batched_flush" : std::string(pr::flush_function);
            sent_cmd s{sent_cmd::fcall, hi, {"FCALL", function, "3", h.totals, h.marks, h.reporters, h.reporter, h.info, "i"}, {}};
            s.args.reserve(s.args.size() + 4 * (end - at));
            for (std::size_t k = at; k < end; ++k) {
                const std::uint32_t i = changed[k];
                s.args.push_back(names_[i]);
                s.args.push_back(h.mark[i] == 0 ? std::string() : std::to_string(h.mark[i]));
                s.args.push_back(std::to_string(h.value[i]));
                s.args.push_back(std::to_string(h.value[i] - h.mark[i]));
                s.fields.push_back(i);
            }
            out.push_back(std::move(s));
            if (changed.empty()) break;
        }
        if (o_.wait_replicas > 0) {
            out.push_back({sent_cmd::wait, hi, {"WAIT", std::to_string(o_.wait_replicas), std::to_string(o_.wait_timeout_ms)}, {}});
        }
    }

    /// Every host once (or until `seconds` of the measured phase are over).
    /// Per master, windows of --depth hosts, two in flight: the next one is
    /// built and sent while the master works on the one before. A host is
    /// in one window a round, so its watermarks are always Redis' when its
    /// next flush is built.
    void round(bool first, double seconds) {
        struct window {
            std::vector<sent_cmd> cmds;
            double sent_at = 0;
        };
        constexpr std::size_t in_flight = 2;
        std::vector<std::size_t> cursor(groups_.size(), 0);
        std::vector<std::deque<window>> flying(groups_.size());
        bool stopping = false;
        for (;;) {
            if (o_.rate > 0 && !first) {  // no faster than --rate flushes/s
                for (;;) {
                    const double ahead = static_cast<double>(flushes_) / o_.rate - (now() - t0_);
                    if (ahead <= 0) break;
                    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(ahead, 0.05)));
                }
            }
            bool any = false;
            for (std::size_t n = 0; n < groups_.size(); ++n) {
                while (!stopping && flying[n].size() < in_flight && cursor[n] < groups_[n].size()) {
                    window w;
                    for (std::size_t k = 0; k < o_.depth && cursor[n] < groups_[n].size(); ++k) build(groups_[n][cursor[n]++], first, w.cmds);
                    for (const auto& s : w.cmds) conns_[n]->append(s.args);
                    conns_[n]->send();
                    w.sent_at = now();
                    flying[n].push_back(std::move(w));
                }
                any = any || !flying[n].empty();
            }
            if (!any) return;
            // The oldest window of each master.
            for (std::size_t n = 0; n < groups_.size(); ++n) {
                if (flying[n].empty()) continue;
                window& w = flying[n].front();
                for (std::size_t i = 0; i < w.cmds.size(); ++i) {
                    sent_cmd& s = w.cmds[i];
                    pd::reply rep = conns_[n]->next_reply();
                    if (pd::is_redirect(*rep)) {
                        ++redirects_;
                        rep = net_.settle(std::move(rep), hosts_[s.host].totals, s.args);
                    }
                    accept(s, *rep);
                    if (i + 1 == w.cmds.size() || w.cmds[i + 1].host != s.host) {
                        ++hosts_[s.host].flushes;
                        if (!first) {
                            ++flushes_;
                            latencies_.push_back(now() - w.sent_at);
                        }
                    }
                }
                flying[n].pop_front();
            }
            if (!first && now() - t0_ >= seconds) {
                // No new window; the ones in flight are read (their hosts'
                // watermarks must be known for the check).
                stopping = true;
                done_ = true;
            }
        }
    }

    void accept(const sent_cmd& s, const redisReply& r) {
        host& h = hosts_[s.host];
        if (pd::is_error(r)) throw std::runtime_error(h.reporter + ": " + s.args.front() + ": " + pd::text_of(r));
        switch (s.kind) {
            case sent_cmd::meta: break;
            case sent_cmd::wait:
                if (r.type != REDIS_REPLY_INTEGER) throw std::runtime_error("WAIT: not an integer");
                if (r.integer < o_.wait_replicas) ++wait_short_;
                break;
            case sent_cmd::fcall: {
                ++fcalls_;
                if (pd::elements(r) < 2) throw std::runtime_error(h.reporter + ": FCALL: an unexpected reply");
                const std::string status = pd::text_of(pd::element(r, 0));
                if (status != "ok" || pd::elements(pd::element(r, 1)) != 0) {
                    throw std::runtime_error(h.reporter + ": FCALL: " + status + " (" +
                                             std::to_string(pd::elements(pd::element(r, 1))) +
                                             " fields): the simulation's watermarks are not Redis'");
                }
                for (const std::uint32_t i : s.fields) h.mark[i] = h.value[i];
                changes_ += s.fields.size();
                break;
            }
        }
    }

    /// Every namespace's totals, read as `fleet show` reads them, against
    /// the sum of what the hosts sent; each reporter's watermarks too.
    void verify(run_result& r) {
        r.exact = true;
        const double t = now();
        std::vector<pr::fleet_snapshot> snaps;
        for (const auto& ns : nss_) snaps.push_back(pr::read_fleet(o_.conn, ns));
        r.read_seconds = now() - t;
        auto fail = [&](const std::string& why) {
            if (r.exact) r.problem = why;
            r.exact = false;
        };
        for (std::size_t m = 0; m < nss_.size(); ++m) {
            const auto& f = snaps[m];
            std::vector<std::uint64_t> want(o_.counters, 0);
            std::map<std::string, const host*> mine;
            for (const auto& h : hosts_) {
                if (h.nsi != m) continue;
                mine.emplace(h.reporter, &h);
                for (std::size_t i = 0; i < o_.counters; ++i) want[i] += h.mark[i];
            }
            if (f.stripes != o_.stripes) fail(nss_[m] + ": " + std::to_string(f.stripes) + " stripes read");
            if (f.totals.size() != o_.counters) fail(nss_[m] + ": " + std::to_string(f.totals.size()) + " totals read");
            for (std::size_t i = 0; i < o_.counters; ++i) {
                const auto it = f.totals.find(names_[i]);
                const std::string got = it == f.totals.end() ? "(none)" : it->second;
                if (got != std::to_string(want[i])) fail(nss_[m] + ": " + names_[i] + " = " + got + ", sent " + std::to_string(want[i]));
            }
            if (f.reporters.size() != mine.size()) fail(nss_[m] + ": " + std::to_string(f.reporters.size()) + " reporters read");
            for (const auto& rep : f.reporters) {
                r.read_bytes += static_cast<double>(rep.id.size());
                const auto it = mine.find(rep.id);
                if (it == mine.end()) {
                    fail(nss_[m] + ": an unknown reporter " + rep.id);
                    continue;
                }
                for (std::size_t i = 0; i < o_.counters; ++i) {
                    const auto w = rep.watermarks.find(names_[i]);
                    if (w == rep.watermarks.end() || w->second != std::to_string(it->second->mark[i])) {
                        fail(rep.id + ": watermark of " + names_[i]);
                        break;
                    }
                }
                for (const auto& [k, v] : rep.watermarks) {
                    // As RESP carries them: $LEN\r\nTEXT\r\n each.
                    r.read_bytes += static_cast<double>(k.size() + v.size() + 2 * (5 + std::to_string(k.size()).size()));
                    ++r.read_fields;
                }
            }
        }
    }

    const options& o_;
    pd::router net_;
    std::vector<std::string> names_, nss_;
    std::vector<host> hosts_;
    std::vector<pd::connection*> conns_;
    std::vector<std::vector<std::size_t>> groups_;
    xorshift rng_{1};
    double t0_ = 0;
    bool done_ = false;
    std::uint64_t flushes_ = 0, changes_ = 0, fcalls_ = 0, redirects_ = 0, wait_short_ = 0;
    std::vector<double> latencies_;
};

std::string json_of(const run_result& r, const char* kind) {
    char buf[2048];
    std::string shares = "[";
    for (std::size_t i = 0; i < r.shares.size(); ++i) {
        char s[32];
        std::snprintf(s, sizeof s, "%s%.3f", i ? "," : "", r.shares[i]);
        shares += s;
    }
    shares += "]";
    std::snprintf(buf, sizeof buf,
                  "{\"kind\":\"%s\",\"scenario\":\"%s\",\"masters\":%zu,\"replicas\":%zu,\"hosts\":%zu,\"counters\":%zu,"
                  "\"namespaces\":%zu,\"stripes\":%u,\"changed\":%g,\"seconds\":%.3f,\"flushes\":%" PRIu64 ",\"field_changes\":%" PRIu64
                  ",\"fcalls\":%" PRIu64 ",\"redirects\":%" PRIu64 ",\"wait_short\":%" PRIu64
                  ",\"flushes_per_s\":%.1f,\"field_changes_per_s\":%.0f,\"redis_cpu_us_per_change\":%.4f,"
                  "\"replicas_cpu_us_per_change\":%.4f,\"replication_bytes_per_change\":%.1f,\"aof_rewrite_cpu_us_per_change\":%.4f,\"generator_cpu_us_per_change\":%.4f,\"max_master_share\":%.3f,"
                  "\"max_master_cpu_utilization\":%.3f,\"master_shares\":%s,\"flush_latency_p50_ms\":%.3f,\"flush_latency_p99_ms\":%.3f,"
                  "\"first_flush_seconds\":%.3f,\"memory_per_reporter_bytes\":%.0f,\"wm_hash_bytes\":%.0f,\"reporters_hash_bytes\":%.0f,"
                  "\"read_fleet_seconds\":%.3f,\"read_fleet_exec_ms\":%.3f,\"read_fleet_watermarks\":%" PRIu64 ",\"read_fleet_bytes\":%.0f,\"exact\":%s,\"problem\":\"%s\"}",
                  kind, r.scenario.c_str(), r.masters, r.replicas, r.hosts, r.counters, r.namespaces, r.stripes, r.changed, r.seconds,
                  r.flushes, r.changes, r.fcalls, r.redirects, r.wait_short, r.flushes_s, r.changes_s, r.us_per_change,
                  r.replica_us_per_change, r.repl_bytes_per_change, r.children_us_per_change, r.client_us_per_change, r.max_share, r.max_util, shares.c_str(), r.p50_ms, r.p99_ms,
                  r.warmup_seconds, r.memory_per_reporter, r.wm_hash_bytes, r.reporters_hash_bytes, r.read_seconds, r.read_exec_ms, r.read_fields,
                  r.read_bytes, r.exact ? "true" : "false", r.problem.c_str());
    // A figure that could not be measured (no replicas, no flush) is null, not nan.
    std::string out = buf;
    for (const std::string bad : {":-nan", ":nan", ":-inf", ":inf"}) {
        for (std::size_t at; (at = out.find(bad)) != std::string::npos;) out.replace(at, bad.size(), ":null");
    }
    return out;
}

void print_header() {
    std::printf("%-22s %-6s %5s %6s %5s %4s %5s %6s %10s %12s %9s %9s %6s %6s %8s %8s %5s\n", "scenario", "run", "nodes", "hosts", "ctrs",
                "ns", "K", "chg", "flushes/s", "changes/s", "us/chg", "repl_us", "share", "util", "p50_ms", "p99_ms", "exact");
}

void print_line(const run_result& r, const std::string& run) {
    std::printf("%-22s %-6s %2zu+%-2zu %6zu %5zu %4zu %5u %6.2f %10.0f %12.0f %9.3f %9.3f %6.2f %6.2f %8.2f %8.2f %5s\n", r.scenario.c_str(),
                run.c_str(), r.masters, r.replicas, r.hosts, r.counters, r.namespaces, r.stripes, r.changed, r.flushes_s, r.changes_s,
                r.us_per_change, r.replica_us_per_change, r.max_share, r.max_util, r.p50_ms, r.p99_ms, r.exact ? "yes" : "NO");
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    std::vector<run_result> results;
    print_header();
    try {
        for (int run = 1; run <= o.runs; ++run) {
            simulation sim(o, run);
            results.push_back(sim.go());
            const auto& r = results.back();
            print_line(r, std::to_string(run));
            std::printf("JSON %s\n", json_of(r, "run").c_str());
            if (!r.exact) std::fprintf(stderr, "procsafe-fleet-sim: %s: NOT EXACT: %s\n", r.scenario.c_str(), r.problem.c_str());
            std::fflush(stdout);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe-fleet-sim: %s: %s\n", o.label.c_str(), e.what());
        return 1;
    }
    // The median of each figure over the runs (the first run's sizes).
    run_result m = results.front();
    auto med = [&](double run_result::*f) {
        std::vector<double> v;
        for (const auto& r : results) v.push_back(r.*f);
        m.*f = median(v);
    };
    for (auto f : {&run_result::flushes_s, &run_result::changes_s, &run_result::us_per_change, &run_result::replica_us_per_change,
                   &run_result::client_us_per_change, &run_result::children_us_per_change, &run_result::repl_bytes_per_change, &run_result::max_share, &run_result::max_util, &run_result::p50_ms, &run_result::p99_ms,
                   &run_result::warmup_seconds, &run_result::memory_per_reporter, &run_result::read_seconds, &run_result::read_exec_ms, &run_result::read_bytes,
                   &run_result::seconds})
        med(f);
    auto med_count = [&](std::uint64_t run_result::*f) {
        std::vector<double> v;
        for (const auto& r : results) v.push_back(static_cast<double>(r.*f));
        m.*f = static_cast<std::uint64_t>(std::llround(median(v)));
    };
    for (auto f : {&run_result::flushes, &run_result::changes, &run_result::fcalls, &run_result::redirects, &run_result::wait_short}) med_count(f);
    bool exact = true;
    for (const auto& r : results) exact = exact && r.exact;
    m.exact = exact;
    if (o.runs > 1) {
        print_line(m, "median");
        std::printf("JSON %s\n", json_of(m, "median").c_str());
    }
    // The summary line fleet_sim.sh collects (the median when --runs > 1).
    std::printf("TABLE %-18s %6zu %5zu %5zu %4u %5.2f %10.0f %12.0f %8.3f %8.3f %6.2f %6.2f %8.2f %8.2f %5s\n", m.scenario.c_str(), m.hosts,
                m.counters, m.namespaces, m.stripes, m.changed, m.flushes_s, m.changes_s, m.us_per_change, m.replica_us_per_change,
                m.max_share, m.max_util, m.p50_ms, m.p99_ms, exact ? "yes" : "NO");
    std::printf("RESULT %s exact=%s\n", o.label.c_str(), exact ? "yes" : "no");
    return exact ? 0 : 3;
}
