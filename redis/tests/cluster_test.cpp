// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe::redis against a Redis Cluster of the test's own (redis_cluster.hpp):
//   - routing: three namespaces over 8 stripes each add up exactly, their
//     stripes' keys are on more than one master, every master written to
//     has the function library, a namespace keeps the stripes of its first
//     flush;
//   - failover, exact totals: four hosts count (a worker process each)
//     while their flushers flush every few ms; the master of a slot holding
//     a stripe is SIGKILLed and its replica takes over (cut off first: it
//     lacks the last flushes), a master is added (its function library
//     deleted) and slots resharded to it in the background, one stripe's slot is
//     moved step by step with a flush forced between the steps (ASK,
//     TRYAGAIN, MOVED); at the end every fleet total equals the sum of what
//     the hosts counted, exactly;
//   - the command line: flush --redis-cluster --once, fleet show --json and
//     fleet export through the cluster.
// Each test starts its own cluster (3 masters, 3 replicas) and removes it.
#include "cli_run.hpp"
#include "redis_cluster.hpp"
#include "workload.hpp"

#include "support/process.hpp"
#include "support/skip.hpp"

#include "catch.hpp"

#include <procsafe/procsafe.hpp>
#include <procsafe/redis.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using procsafe_test::redis_cluster;
using procsafe_test::unique_name;
namespace pr = procsafe::redis;
using clock_type = std::chrono::steady_clock;

using i64_array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
using namespace procsafe_test::workload;
// No gauge; the workers pause more: 6 or 7 nodes and the flushers share the CPUs.
constexpr shape cluster_shape{false, 64, 500};

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

struct removed_at_exit {
    std::string name;
    ~removed_at_exit() { procsafe::segment::remove(name); }
};

/// Log lines of flushers, kept for a failure's message.
struct log_lines {
    std::mutex m;
    std::vector<std::string> lines;
    pr::log_function fn(std::string who) {
        return [this, who](std::string_view l) {
            std::lock_guard<std::mutex> g(m);
            lines.push_back(who + ": " + std::string(l));
        };
    }
    std::string all() {
        std::lock_guard<std::mutex> g(m);
        std::string s;
        const std::size_t from = lines.size() > 200 ? lines.size() - 200 : 0;  // the last 200
        for (std::size_t i = from; i < lines.size(); ++i) s += lines[i] + "\n";
        return s;
    }
};

pr::connection_options cluster_connection(const redis_cluster& c) {
    pr::connection_options o;
    o.cluster = pr::endpoint::parse_list(c.seeds());
    o.connect_timeout = 0.5;
    o.command_timeout = 1.0;
    return o;
}

pr::flush_options options_for(const redis_cluster& c, std::vector<std::string> segments, std::string host, std::string ns,
                              std::uint32_t stripes, log_lines& log) {
    pr::flush_options o;
    o.connection = cluster_connection(c);
    o.segments = std::move(segments);
    o.log = log.fn(host);
    o.host_id = std::move(host);
    o.fleet_namespace = std::move(ns);
    o.stripes = stripes;
    o.interval = 0.01;
    return o;
}

/// The hash slot of a key, as the cluster computes it.
int slot_of(const redis_cluster& c, const std::string& key) {
    return static_cast<int>(c.command(c.ports().front(), {"CLUSTER", "KEYSLOT", key}).integer);
}

/// The slot of a namespace's stripe (its keys' hash tag).
int stripe_slot(const redis_cluster& c, const std::string& ns, std::uint32_t stripe) {
    return slot_of(c, pr::keys::totals(ns, stripe));
}

/// Flushes until a flush succeeds (30 s at most); the last result.
pr::flush_result flush_until_ok(pr::flusher& f) {
    const auto deadline = clock_type::now() + std::chrono::seconds(30);
    pr::flush_result r = f.flush_once();
    while (!r.ok && clock_type::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        r = f.flush_once();
    }
    return r;
}

}  // namespace

TEST_CASE("redis cluster: three namespaces over 8 stripes add up exactly, spread over the masters", "[redis][cluster]") {
    PROCSAFE_NEED_REDIS_CLUSTER();
    const auto t0 = clock_type::now();
    redis_cluster cluster;
    log_lines log;
    const std::vector<std::string> namespaces{"alpha", "beta", "gamma"};
    std::vector<removed_at_exit> cleanup;
    cleanup.reserve(16);  // never moved: a moved-from one would remove ""
    std::vector<procsafe::segment> segments;
    std::vector<pr::flusher> flushers;
    std::map<std::string, std::map<std::string, i128>> expected;  // ns -> field -> total
    for (std::size_t n = 0; n < namespaces.size(); ++n) {
        std::vector<std::string> names;
        for (int i = 0; i < 4; ++i) {
            const auto name = unique_name("rcl");
            cleanup.push_back({name});
            names.push_back(name);
            auto& seg = segments.emplace_back(procsafe::segment::create(name, 1 << 16));
            const auto requests = static_cast<std::int64_t>(100 * (n + 1) + static_cast<std::size_t>(i));
            const std::uint64_t bytes = (1ULL << 53) + 1 + static_cast<std::uint64_t>(i);
            seg.construct<procsafe::sharded_counter<std::int64_t>>("requests").increment(requests);
            seg.construct<procsafe::atomic_counter<std::uint64_t>>("bytes").store(bytes);
            expected[namespaces[n]]["requests"] += requests;
            expected[namespaces[n]]["bytes"] += bytes;
        }
        flushers.emplace_back(options_for(cluster, names, "host-" + namespaces[n], namespaces[n], 8, log));
    }
    for (auto& f : flushers) {
        const auto r = f.flush_once();
        INFO(r.error << "\n" << log.all());
        REQUIRE(r.ok);
        CHECK(r.segments == 4);
        CHECK(r.fields == 8);
    }
    const auto conn = cluster_connection(cluster);
    CHECK(pr::fleet_namespaces(conn) == namespaces);
    std::set<int> masters_with_reporters;
    for (const auto& ns : namespaces) {
        const auto fleet = pr::read_fleet(conn, ns);
        CHECK(fleet.stripes == 8);
        CHECK(fleet.totals.at("requests") == text(expected[ns]["requests"]));
        CHECK(fleet.totals.at("bytes") == text(expected[ns]["bytes"]));
        CHECK(fleet.totals.size() == 2);
        REQUIRE(fleet.reporters.size() == 4);
        for (const auto& r : fleet.reporters) {
            CHECK(r.stripe == pr::keys::stripe_of(r.id, 8));
            // The reporter's watermarks are where its stripe's slot is.
            const int slot = stripe_slot(cluster, ns, r.stripe);
            const int master = cluster.master_of_slot(slot);
            masters_with_reporters.insert(master);
            CHECK(cluster.command(master, {"EXISTS", pr::keys::watermarks(ns, r.id, r.stripe)}).integer == 1);
            CHECK(cluster.command(master, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}).integer >= 2);
        }
        // K is recorded with stripe 0.
        const int slot0 = stripe_slot(cluster, ns, 0);
        CHECK(cluster.command(cluster.master_of_slot(slot0), {"HGET", pr::keys::config(ns), "stripes"}).str == "8");
    }
    // The stripes' keys are on more than one master; every master the
    // flushers wrote to has the library (the flusher loads it on each
    // connection it opens; a master none of these stripes maps to is never
    // connected, so whether it has the library depends on the names drawn).
    int masters_with_keys = 0;
    for (int m : cluster.master_ports()) {
        if (cluster.command(m, {"DBSIZE"}).integer == 0) continue;
        ++masters_with_keys;
        const auto lib = cluster.command(m, {"FUNCTION", "LIST", "LIBRARYNAME", "procsafe_1"});
        INFO("master " << m);
        CHECK(lib.elements.size() == 1);
    }
    CHECK(masters_with_keys >= 2);
    CHECK(masters_with_reporters.size() >= 2);

    // A flusher proposing 4 stripes for alpha: the 8 of its first flush win.
    const auto late = unique_name("rcl");
    cleanup.push_back({late});
    segments.emplace_back(procsafe::segment::create(late, 1 << 16)).construct<procsafe::sharded_counter<std::int64_t>>("requests").increment(7);
    pr::flusher four(options_for(cluster, {late}, "late", "alpha", 4, log));
    {
        const auto r = four.flush_once();
        INFO(r.error << "\n" << log.all());
        REQUIRE(r.ok);
    }
    auto alpha = pr::read_fleet(conn, "alpha");
    CHECK(alpha.stripes == 8);
    CHECK(alpha.totals.at("requests") == text(expected["alpha"]["requests"] + 7));
    REQUIRE(alpha.reporters.size() == 5);
    for (const auto& r : alpha.reporters) CHECK(r.stripe == pr::keys::stripe_of(r.id, 8));

    // More counts, flushed again: exact; nothing changed: nothing sent.
    segments[0].find<procsafe::sharded_counter<std::int64_t>>("requests").increment(1000);
    REQUIRE(flushers[0].flush_once().ok);
    const auto again = flushers[0].flush_once();
    REQUIRE(again.ok);
    CHECK(again.fields == 0);
    CHECK(pr::read_fleet(conn, "alpha").totals.at("requests") == text(expected["alpha"]["requests"] + 7 + 1000));
    std::printf("cluster routing: 3 namespaces x 8 stripes, 13 reporters on %zu masters (keys on %d of %zu), %.1f s\n",
                masters_with_reporters.size(), masters_with_keys, cluster.master_ports().size(), seconds_since(t0));
    std::fflush(stdout);
}

TEST_CASE("redis cluster: a master killed, a master added, a reshard, a slot moved under load: totals exact",
          "[redis][cluster]") {
    PROCSAFE_NEED_REDIS_CLUSTER();
    const auto t0 = clock_type::now();
    redis_cluster cluster;
    const double cluster_up = seconds_since(t0);
    // "orders": with the slots redis-cli gives 3 masters, its stripes 0, 2 and 6
    // are among the first 200 slots of the second master (a short reshard
    // moves them); the test finds its slots itself all the same.
    const std::string ns = "orders";
    const std::uint32_t stripes = 8;
    log_lines log;

    struct host {
        std::string id, segment;
        std::optional<procsafe::segment> seg;
        pid_t worker = -1;
        std::optional<pr::flusher> flusher;
        std::uint32_t stripe = 0;
        int slot = 0;
        // Written by its flusher thread.
        std::atomic<std::uint64_t> ok{0}, failed{0}, redirects{0};
        std::mutex m;
        std::string last_error;
    };
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& stop_workers = control.construct<procsafe::atomic_counter<int>>("stop");
    std::vector<host> hosts(4);  // hosts[3] is flushed by this thread only, between a slot's migration steps
    struct cleanup_t {
        std::vector<host>& hosts;
        ~cleanup_t() {
            for (auto& h : hosts) {
                if (h.worker > 0) ::kill(h.worker, SIGKILL), ::waitpid(h.worker, nullptr, 0);
                h.seg.reset();
                procsafe::segment::remove(h.segment);
            }
        }
    } cleanup{hosts};
    for (int i = 0; i < 4; ++i) {
        auto& h = hosts[static_cast<std::size_t>(i)];
        h.id = "host" + std::to_string(i);
        h.segment = unique_name("rclf");
        procsafe::segment::remove(h.segment);
        h.seg.emplace(procsafe::segment::create(h.segment, 1 << 20));
        construct_objects(*h.seg, cluster_shape);
        const auto reporter = pr::keys::reporter(h.id, h.segment, procsafe::segment_view::open(h.segment).incarnation());
        h.stripe = pr::keys::stripe_of(reporter, stripes);
        h.slot = stripe_slot(cluster, ns, h.stripe);
    }
    for (int i = 0; i < 4; ++i) {
        auto& h = hosts[static_cast<std::size_t>(i)];
        h.worker = start_worker(*h.seg, stop_workers, i, cluster_shape);
        REQUIRE(h.worker > 0);
        auto o = options_for(cluster, {h.segment}, h.id, ns, stripes, log);
        o.connection.command_timeout = 0.5;
        h.flusher.emplace(o);
    }

    // Three flusher threads, flushing every 5 ms.
    std::atomic<bool> stop_flushing{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i)
        threads.emplace_back([&h = hosts[static_cast<std::size_t>(i)], &stop_flushing] {
            while (!stop_flushing.load()) {
                const auto r = h.flusher->flush_once();
                (r.ok ? h.ok : h.failed).fetch_add(1);
                h.redirects.fetch_add(r.redirects);
                if (!r.ok) {
                    std::lock_guard<std::mutex> g(h.m);
                    h.last_error = r.error;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
        });
    struct join_t {
        std::vector<std::thread>& threads;
        std::atomic<bool>& stop;
        ~join_t() {
            stop = true;
            for (auto& t : threads)
                if (t.joinable()) t.join();
        }
    } joiner{threads, stop_flushing};

    // Every flusher thread flushes `n` more times successfully (30 s at most).
    auto progress = [&](std::uint64_t n, const char* after) {
        std::vector<std::uint64_t> base;
        for (int i = 0; i < 3; ++i) base.push_back(hosts[static_cast<std::size_t>(i)].ok.load());
        const auto deadline = clock_type::now() + std::chrono::seconds(30);
        for (;;) {
            bool all = true;
            for (int i = 0; i < 3; ++i) all = all && hosts[static_cast<std::size_t>(i)].ok.load() >= base[static_cast<std::size_t>(i)] + n;
            if (all) return;
            if (clock_type::now() > deadline) {
                std::string why;
                for (int i = 0; i < 3; ++i) {
                    auto& h = hosts[static_cast<std::size_t>(i)];
                    std::lock_guard<std::mutex> g(h.m);
                    why += h.id + ": " + std::to_string(h.ok.load()) + " ok, last error: " + h.last_error + "\n";
                }
                FAIL("the flushers did not flush " << n << " times in 30 s after " << after << ":\n" << why << log.all()
                                                    << cluster.views());
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    };
    {
        const auto r = flush_until_ok(*hosts[3].flusher);
        INFO(r.error << "\n" << log.all());
        REQUIRE(r.ok);
    }
    progress(5, "the start");

    // 1. The master of host0's stripe is SIGKILLed: its replica takes over,
    //    without host0's last flushes. Its replica is stopped and its link cut
    //    first: the two flushes host0 then makes reach the master only (as
    //    Redis' asynchronous replication may leave them); the totals and the
    //    watermarks go back together, the flusher sends the difference again.
    const auto t1 = clock_type::now();
    const int victim = cluster.master_of_slot(hosts[0].slot);
    const int replica = cluster.replica_of(victim);
    const std::string host0_marks = pr::keys::watermarks(
        ns, pr::keys::reporter(hosts[0].id, hosts[0].segment, procsafe::segment_view::open(hosts[0].segment).incarnation()),
        hosts[0].stripe);
    cluster.stop(replica);
    REQUIRE(cluster.command(victim, {"CLIENT", "KILL", "TYPE", "replica"}).integer == 1);
    {
        const auto base = hosts[0].ok.load();
        const auto deadline = clock_type::now() + std::chrono::seconds(5);
        while (hosts[0].ok.load() < base + 2 && clock_type::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const std::string acknowledged = cluster.command(victim, {"HGET", host0_marks, "requests"}).str;
    cluster.kill9(victim);
    cluster.resume(replica);
    std::string kept;  // what the replica has, read before its promotion (a node timeout away) lets a flush in
    {
        procsafe_test::raw_client r(replica);
        REQUIRE(r.run({"READONLY"}).str == "OK");
        kept = r.hget(host0_marks, "requests");
    }
    const int promoted = cluster.wait_failover(hosts[0].slot);
    const double failover_s = seconds_since(t1);
    CHECK(promoted == replica);
    const int promotions = promoted == replica ? 1 : 0;
    INFO("host0's watermark of requests: " << acknowledged << " on the old master, " << kept << " on the replica promoted");
    REQUIRE(!acknowledged.empty());
    CHECK((kept.empty() ? 0 : std::stoll(kept)) < std::stoll(acknowledged));  // writes lost with the master
    progress(5, "the failover");
    const double recovered_s = seconds_since(t1);

    // 2. A master added; the lowest slots of a master, a stripe's slot among
    //    them, resharded to it in the background while the flushers go on.
    const auto t2 = clock_type::now();
    const int added = cluster.add_master();
    // redis-cli add-node copies the functions; a node joined otherwise
    // (CLUSTER MEET) has none: the flusher loads the library where it goes.
    REQUIRE(cluster.command(added, {"FUNCTION", "DELETE", "procsafe_1"}).str == "OK");
    int from = 0, moved = 0, resharded_stripe_slot = -1;
    {
        // redis-cli moves a source's lowest slots first: of the stripes with
        // keys (stripe 0, the hosts'), the slot nearest the start of its master's.
        std::set<std::uint32_t> used{0};
        for (const auto& h : hosts) used.insert(h.stripe);
        int best = 1 << 20;
        for (std::uint32_t s : used) {
            const int slot = stripe_slot(cluster, ns, s);
            const int owner = cluster.master_of_slot(slot);
            int before = 0;
            for (const auto& e : cluster.nodes_of(owner))
                if (e.port == owner)
                    for (const auto& [lo, hi] : e.slots) before += slot > hi ? hi - lo + 1 : (slot >= lo ? slot - lo : 0);
            if (before < best) best = before, from = owner, resharded_stripe_slot = slot;
        }
        moved = std::clamp(best + 1, 200, 1500);
        if (best + 1 > moved) resharded_stripe_slot = -1;
    }
    cluster.reshard_async(from, added, moved);
    progress(3, "the reshard's start");
    cluster.wait_reshard();
    const double reshard_s = seconds_since(t2);
    if (resharded_stripe_slot >= 0) CHECK(cluster.master_of_slot(resharded_stripe_slot) == added);
    progress(5, "the reshard");

    // 3. host3's stripe's slot moved step by step, host3 flushed between the steps.
    const auto t3 = clock_type::now();
    const int mig_from = cluster.master_of_slot(hosts[3].slot);
    int mig_to = added;
    if (mig_to == mig_from)
        for (int m : cluster.master_ports())
            if (m != mig_from) mig_to = m;
    struct forced {
        std::string step;
        pr::flush_result r;
        std::string keys;  // of the slot, on the source and the target, when the flush failed
    };
    std::vector<forced> forced_flushes;
    auto keys_in_slot = [&](int port) {
        std::string k;
        for (const auto& e : cluster.command(port, {"CLUSTER", "GETKEYSINSLOT", std::to_string(hosts[3].slot), "20"}).elements)
            k += (k.empty() ? "" : " ") + e.str;
        return k;
    };
    cluster.migrate_slot(hosts[3].slot, mig_to, [&](std::string_view step) {
        forced f{std::string(step), hosts[3].flusher->flush_once(), {}};
        if (!f.r.ok) f.keys = "source " + std::to_string(mig_from) + ": [" + keys_in_slot(mig_from) + "], target " +
                              std::to_string(mig_to) + ": [" + keys_in_slot(mig_to) + "]";
        forced_flushes.push_back(std::move(f));
    });
    const double migrate_s = seconds_since(t3);
    CHECK(cluster.master_of_slot(hosts[3].slot) == mig_to);
    {
        const auto r = flush_until_ok(*hosts[3].flusher);
        INFO(r.error << "\n" << log.all());
        REQUIRE(r.ok);
    }
    progress(5, "the slot's migration");

    // The end: the workers stop; the flushers flush until a flush succeeds.
    stop_workers.store(1);
    for (auto& h : hosts) {
        CHECK(procsafe_test::exited_ok(procsafe_test::wait_bounded(h.worker, std::chrono::seconds(30))));
        h.worker = -1;
    }
    stop_flushing = true;
    for (auto& t : threads) t.join();
    std::uint64_t rounds = 0, failed_rounds = 0, redirects = 0, fields = 0, connects = 0, conflicts = 0;
    for (auto& h : hosts) {
        const auto r = flush_until_ok(*h.flusher);
        INFO(h.id << ": " << r.error << "\n" << log.all());
        REQUIRE(r.ok);
        const auto& s = h.flusher->stats();
        rounds += s.rounds, failed_rounds += s.failed_rounds, redirects += s.redirects, fields += s.fields;
        connects += s.connects, conflicts += s.conflicts;
    }

    std::map<std::string, i128> expected;
    double latency_sum = 0;
    for (auto& h : hosts) add_local(h.segment, expected, latency_sum);
    const auto fleet = pr::read_fleet(cluster_connection(cluster), ns);

    std::printf("cluster failover test (3+3 nodes up in %.1f s): %llu flushes (%llu failed rounds), %llu redirects, %llu "
                "connects, %llu conflicts, %llu fields sent; 1 master SIGKILLed, %d replica promoted in %.1f s (flushing "
                "again %.1f s after the kill; host0's watermark of requests went back from %s to %s); add-node + a %d-slot "
                "reshard%s in %.1f s; slot %d moved step by step in %.1f s\n",
                cluster_up, static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(failed_rounds),
                static_cast<unsigned long long>(redirects), static_cast<unsigned long long>(connects),
                static_cast<unsigned long long>(conflicts), static_cast<unsigned long long>(fields), promotions, failover_s,
                recovered_s, acknowledged.c_str(), kept.empty() ? "(none)" : kept.c_str(), moved, resharded_stripe_slot >= 0 ? " (a stripe's slot among them)" : "", reshard_s,
                hosts[3].slot, migrate_s);
    std::size_t forced_ok = 0, forced_redirected = 0;
    for (const auto& f : forced_flushes) {
        std::printf("  flush forced after '%s': %s, %zu fields, %zu redirects%s%s\n", f.step.c_str(), f.r.ok ? "ok" : "failed",
                    f.r.fields, f.r.redirects, f.r.ok ? "" : ": ", f.r.ok ? "" : f.r.error.c_str());
        if (!f.keys.empty()) std::printf("    the slot's keys then: %s\n", f.keys.c_str());
        forced_ok += f.r.ok ? 1 : 0;
        forced_redirected += f.r.redirects > 0 ? 1 : 0;
    }
    std::printf("  %zu of %zu forced flushes ok, %zu redirected\n", forced_ok, forced_flushes.size(), forced_redirected);
    std::printf("  %-32s %24s %24s\n", "field", "fleet total", "sum of the hosts");
    std::size_t exact = 0;
    for (const auto& [field, want] : expected) {
        const auto it = fleet.totals.find(field);
        const std::string got = it == fleet.totals.end() ? "(none)" : it->second;
        std::printf("  %-32s %24s %24s %s\n", field.c_str(), got.c_str(), text(want).c_str(), got == text(want) ? "exact" : "WRONG");
        CHECK(got == text(want));
        exact += got == text(want) ? 1 : 0;
    }
    const double got_sum = fleet.totals.count("latency_sum") != 0 ? std::stod(fleet.totals.at("latency_sum")) : -1;
    std::printf("  %-32s %24.6f %24.6f (floating point: HINCRBYFLOAT)\n", "latency_sum", got_sum, latency_sum);
    std::printf("  %zu of %zu integer fields exact; %zu reporters; %.1f s in all\n", exact, expected.size(), fleet.reporters.size(),
                seconds_since(t0));
    std::fflush(stdout);
    CHECK(got_sum == Approx(latency_sum).epsilon(1e-9));
    CHECK(fleet.totals.size() == expected.size() + 1);
    CHECK(fleet.reporters.size() == 4);
    CHECK(fleet.stripes == stripes);
    CHECK(redirects > 0);
    // Every master holding a reporter's watermarks (FCALLs went there since
    // they moved there) has the library: the flusher loads it on
    // connecting, the added master included (its copy was deleted).
    int masters_with_reporters = 0;
    for (int m : cluster.master_ports()) {
        const auto scan = cluster.command(m, {"SCAN", "0", "MATCH", "*:wm:*", "COUNT", "100000"});
        REQUIRE(scan.elements.size() == 2);
        if (scan.elements[1].elements.empty() && m != mig_to) continue;
        ++masters_with_reporters;
        INFO("master " << m << (m == added ? " (added)" : ""));
        CHECK(cluster.command(m, {"FUNCTION", "LIST", "LIBRARYNAME", "procsafe_1"}).elements.size() == 1);
    }
    CHECK(masters_with_reporters >= 1);  // the spread over masters: the routing test
    // Every key of the slot on the target, the slot still open: the source
    // answers ASK, the flush follows it.
    const auto at_moved = std::find_if(forced_flushes.begin(), forced_flushes.end(), [](const forced& f) { return f.step == "moved"; });
    REQUIRE(at_moved != forced_flushes.end());
    CHECK(at_moved->r.ok);
    CHECK(at_moved->r.redirects > 0);
    CHECK(forced_redirected >= 2);
}

// The record of a namespace's stripes (stripe 0's config hash) could be
// lost in a failover while the stripes it placed reporters in, on other
// masters, are not; the next first flush would record its own proposal and a
// restarted flusher would move its reporter to another stripe: counted twice
// (requests 2006 for 1006 before the flusher waited for the record to reach a
// replica). Now no reporter uses a record that is on no replica.
TEST_CASE("redis cluster: the stripes recorded, lost in a failover, then proposed otherwise: totals exact",
          "[redis][cluster]") {
    PROCSAFE_NEED_REDIS_CLUSTER();
    redis_cluster cluster;
    const std::string ns = "orders";
    log_lines log;
    const int slot0 = stripe_slot(cluster, ns, 0);
    const int m0 = cluster.master_of_slot(slot0);
    // Host a: its reporter's stripe of 8 on a master other than stripe 0's,
    // its stripe of 16 another one (stripe_of(r, 16) is s or s + 8).
    const auto a_seg = unique_name("rcls");
    removed_at_exit a_cleanup{a_seg};
    auto a = procsafe::segment::create(a_seg, 1 << 16);
    auto& a_requests = a.construct<procsafe::atomic_counter<std::int64_t>>("requests");
    const auto incarnation = procsafe::segment_view::open(a_seg).incarnation();
    std::string a_host;
    std::uint32_t s8 = 0, s16 = 0;
    for (int i = 0; i < 10000 && a_host.empty(); ++i) {
        const std::string h = "a" + std::to_string(i);
        const auto r = pr::keys::reporter(h, a_seg, incarnation);
        s8 = pr::keys::stripe_of(r, 8), s16 = pr::keys::stripe_of(r, 16);
        if (s16 != s8 && cluster.master_of_slot(stripe_slot(cluster, ns, s8)) != m0) a_host = h;
    }
    REQUIRE(!a_host.empty());
    // a creates the namespace with 8 stripes while stripe 0's master has its
    // replica cut off: the record of 8 reaches that master only.
    const int replica = cluster.replica_of(m0);
    cluster.stop(replica);
    REQUIRE(cluster.command(m0, {"CLIENT", "KILL", "TYPE", "replica"}).integer == 1);
    pr::flusher fa(options_for(cluster, {a_seg}, a_host, ns, 8, log));
    a_requests.store(1000);
    {
        const auto r = fa.flush_once();
        INFO(r.error << "\n" << log.all());
        CHECK_FALSE(r.ok);  // the record is on the master alone: nothing is flushed under it
        CHECK(r.error.find("namespace '" + ns + "': the record of its stripes is on none of its master's 1 replica") != std::string::npos);
    }
    cluster.kill9(m0);
    cluster.resume(replica);
    cluster.wait_failover(slot0);
    const auto conn = cluster_connection(cluster);
    CHECK(cluster.command(cluster.master_of_slot(slot0), {"HGET", pr::keys::config(ns), "stripes"}).str.empty());  // lost
    const auto between = pr::read_fleet(conn, ns);
    INFO("with the record lost, read_fleet sees " << between.stripes << " stripe(s), requests "
                                                  << (between.totals.count("requests") != 0 ? between.totals.at("requests") : "(none)"));
    // Host b, with the default stripes (16 on a cluster), flushes first.
    const auto b_seg = unique_name("rcls");
    removed_at_exit b_cleanup{b_seg};
    auto b = procsafe::segment::create(b_seg, 1 << 16);
    b.construct<procsafe::atomic_counter<std::int64_t>>("requests").store(5);
    pr::flusher fb(options_for(cluster, {b_seg}, "b", ns, 0, log));
    {
        const auto r = flush_until_ok(fb);
        INFO(r.error << "\n" << log.all());
        REQUIRE(r.ok);
    }
    // a's flusher restarts (as it may at any moment), with its 8 stripes.
    a_requests.store(1001);
    pr::flusher fa2(options_for(cluster, {a_seg}, a_host, ns, 8, log));
    {
        const auto r = flush_until_ok(fa2);
        INFO(r.error << "\n" << log.all());
        REQUIRE(r.ok);
    }
    const auto fleet = pr::read_fleet(conn, ns);
    std::printf("stripes lost: a's reporter on stripe %u of 8, %u of 16; the record lost with stripe 0's master; read_fleet "
                "then: %u stripe(s), requests %s; after b (default stripes) flushed and a's flusher restarted: %u stripes, requests %s "
                "(want 1006)\n",
                s8, s16, between.stripes, between.totals.count("requests") != 0 ? between.totals.at("requests").c_str() : "(none)",
                fleet.stripes, fleet.totals.count("requests") != 0 ? fleet.totals.at("requests").c_str() : "(none)");
    for (const auto& r : fleet.reporters)
        std::printf("  reporter %s on stripe %u: watermark %s\n", r.id.c_str(), r.stripe,
                    r.watermarks.count("requests") != 0 ? r.watermarks.at("requests").c_str() : "(none)");
    for (const auto& w : fleet.warnings) std::printf("  read_fleet's warning: %s\n", w.c_str());
    for (std::uint32_t st : {s8, s16}) {
        const auto t = cluster.command(cluster.master_of_slot(stripe_slot(cluster, ns, st)), {"HGET", pr::keys::totals(ns, st), "requests"});
        std::printf("  stripe %u's total of requests: %s\n", st, t.str.empty() ? "(none)" : t.str.c_str());
    }
    std::fflush(stdout);
    INFO(log.all());
    CHECK(fleet.totals.at("requests") == "1006");
    std::set<std::string> ids;
    for (const auto& r : fleet.reporters) CHECK(ids.insert(r.id).second);  // each reporter on one stripe
}

#if defined(PROCSAFE_REDIS_CLI)
using procsafe_test::run_program;

TEST_CASE("redis cluster cli: flush --redis-cluster --once, fleet show --json, fleet export", "[redis][cluster]") {
    PROCSAFE_NEED_REDIS_CLUSTER();
    redis_cluster cluster;
    std::vector<std::string> programs{PROCSAFE_REDIS_CLI};
#if defined(PROCSAFE_CLI)
    programs.push_back(PROCSAFE_CLI);
#endif
    const auto name = unique_name("rclcli");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& orders = seg.construct<procsafe::atomic_counter<std::uint64_t>>("orders", procsafe::metadata{.help = "Orders."});
    orders.store((1ULL << 53) + 1);
    // A seed that does not answer first: any node that answers is enough.
    const std::string seeds = "127.0.0.1:" + std::to_string(procsafe_test::free_port()) + "," + cluster.seeds();
    for (std::size_t p = 0; p < programs.size(); ++p) {
        const std::string& program = programs[p];
        const std::string ns = "shop" + std::to_string(p);
        INFO("program: " << program);
        auto r = run_program(program, cluster.dir(),
                             {"flush", name, "--redis-cluster", seeds, "--host-id", "h1", "--namespace", ns, "--stripes", "4", "--once"});
        INFO(r.out << r.err);
        REQUIRE(r.status == 0);
        orders.increment(2);
        r = run_program(program, cluster.dir(), {"flush", name, "--redis-cluster", seeds, "--host-id", "h1", "--namespace", ns, "--once"});
        REQUIRE(r.status == 0);

        r = run_program(program, cluster.dir(), {"fleet", "show", "--redis-cluster", seeds, "--namespace", ns, "--json"});
        REQUIRE(r.status == 0);
        const auto j = nlohmann::json::parse(r.out);
        REQUIRE(j["namespaces"].size() == 1);
        const auto& fleet = j["namespaces"][0];
        CHECK(fleet["namespace"] == ns);
        CHECK(fleet["totals"]["orders"].get<std::uint64_t>() == orders.value());
        REQUIRE(fleet["reporters"].size() == 1);
        CHECK(fleet["reporters"][0]["host"] == "h1");
        CHECK(fleet["objects"]["orders"]["help"] == "Orders.");
        CHECK(pr::read_fleet(cluster_connection(cluster), ns).stripes == 4);

        r = run_program(program, cluster.dir(), {"fleet", "export", "--redis-cluster", seeds, "--namespace", ns});
        REQUIRE(r.status == 0);
        CHECK(r.out.find("orders_total{namespace=\"" + ns + "\"} " + std::to_string(orders.value()) + "\n") != std::string::npos);
        orders.increment(1);  // the next program's namespace starts from its own first flush
    }
    // fleet show of every namespace through the cluster.
    const auto r = run_program(programs[0], cluster.dir(), {"fleet", "show", "--redis-cluster", seeds, "--json"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(nlohmann::json::parse(r.out)["namespaces"].size() == programs.size());
}
#endif
