// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe-bench-redis: what the Redis flusher (procsafe::redis) costs, and
// what it saves, against a redis-server it starts on 127.0.0.1 (a free
// port, a temporary directory, appendonly yes, appendfsync always) and stops.
//   1. writers: their throughput while a flusher process flushes their
//      segment every 100 ms, against no flusher (runs interleaved; judged on
//      the writers' CPU time per operation when there is no CPU to spare,
//      as procsafe-bench's scrape section does);
//   2. flush: the time of one flush of 10,000 counters (cold, all changed,
//      none changed; 10,000 objects, and one array of 10,000);
//   3. events: 2 processes x N events, one synchronous Redis INCR per event
//      (what users do today) against procsafe + a flusher at 100 ms; events
//      per second per host, and both totals checked in Redis.
//   procsafe-bench-redis [--quick] [--pairs N] [--run-seconds S] [--writers W]
//                        [--incr-events N] [--only 1|2|3] [--check]
#include "../redis/tests/redis_server.hpp"

#include <procsafe/bench/harness.hpp>
#include <procsafe/procsafe.hpp>
#include <procsafe/redis.hpp>

#include <hiredis.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace pr = procsafe::redis;
using procsafe::bench::detail::cpu_seconds;
using procsafe::bench::detail::now_seconds;
using i64_array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;

double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string segment_name(const char* what) {
    return std::string("procsafe-bench-redis-") + what + "-" + std::to_string(::getpid());
}

struct remove_at_exit {
    std::string name;
    ~remove_at_exit() { procsafe::segment::remove(name); }
};

bool reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// CPU seconds (user + system) of another process, from /proc/PID/stat.
double process_cpu(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = s.rfind(')');
    if (close == std::string::npos) return NAN;
    std::istringstream rest(s.substr(close + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::atof(field.c_str());
        if (i == 15) stime = std::atof(field.c_str());
    }
    return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

pr::flush_options flush_options_for(const procsafe_test::redis_server& server, const std::string& segment,
                                    const std::string& ns, double interval) {
    pr::flush_options o;
    o.connection.redis = pr::endpoint::parse(server.address());
    o.segments = {segment};
    o.host_id = "bench";
    o.fleet_namespace = ns;
    o.interval = interval;
    o.log = [](std::string_view) {};
    return o;
}

/// In shared memory: the start line, the stop flag, the figures children report.
struct control {
    explicit control(int processes) : ready(processes) {}
    procsafe::latch ready;
    std::atomic<int> go{0};
    std::atomic<bool> stop{false};
    std::atomic<int> failed{0};
    double finished[8]{}, cpu[8]{};
    double flusher_cpu = 0;
    std::uint64_t rounds = 0, failed_rounds = 0;
};
void store(double& d, double v) { std::atomic_ref<double>(d).store(v, std::memory_order_relaxed); }
double load(double& d) { return std::atomic_ref<double>(d).load(std::memory_order_relaxed); }

/// A flusher process: flushes `segment` every `interval` until ctl.stop,
/// then once more; reports its CPU time and rounds.
pid_t start_flusher(control& ctl, const pr::flush_options& o) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    int rc = 0;
    bool counted = false;
    try {
        pr::flusher f(o);
        ctl.ready.count_down();
        counted = true;
        while (ctl.go.load(std::memory_order_acquire) == 0) std::this_thread::yield();
        const double cpu0 = cpu_seconds();
        f.run(ctl.stop);
        store(ctl.flusher_cpu, cpu_seconds() - cpu0);
        std::atomic_ref<std::uint64_t>(ctl.rounds).store(f.stats().rounds);
        std::atomic_ref<std::uint64_t>(ctl.failed_rounds).store(f.stats().failed_rounds);
    } catch (...) {
        if (!counted) ctl.ready.count_down();
        ctl.failed.fetch_add(1);
        rc = 1;
    }
    ::_exit(rc);
}

// ---------------------------------------------------------------------------
// 1. Writers with and without a flusher.

struct writer_run {
    double seconds = 0, cpu_ns_per_op = 0, wall_ns_per_op = 0, flusher_cpu = 0, redis_cpu = 0;
    std::uint64_t rounds = 0;
    bool exact = true;
};

struct workload {
    const char* name;
    const char* what;
    std::function<void(procsafe::segment&)> setup;  // constructs the objects
    std::function<void(procsafe::segment&, long, int)> writer;  // writer p runs `ops` operations
    std::function<std::int64_t(procsafe::segment&)> total;
};

writer_run run_writers(const workload& w, int writers, long ops, bool with_flusher,
                       const procsafe_test::redis_server& server, int serial) {
    const std::string name = segment_name("writers");
    procsafe::segment::remove(name);
    remove_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, std::size_t{4} << 20);
    w.setup(seg);
    auto ctl_seg = procsafe::segment::anonymous(std::size_t{64} * 1024);
    auto& ctl = ctl_seg.construct<control>("control", writers + (with_flusher ? 1 : 0));
    std::vector<pid_t> pids;
    std::fflush(nullptr);
    for (int p = 0; p < writers; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            int rc = 0;
            try {
                ctl.ready.count_down();
                while (ctl.go.load(std::memory_order_acquire) == 0) {}
                const double cpu0 = cpu_seconds();
                w.writer(seg, ops, p);
                store(ctl.finished[p], now_seconds());
                store(ctl.cpu[p], cpu_seconds() - cpu0);
            } catch (...) {
                ctl.failed.fetch_add(1);
                rc = 1;
            }
            ::_exit(rc);
        }
        pids.push_back(pid);
    }
    pid_t flusher = -1;
    if (with_flusher) {
        flusher = start_flusher(ctl, flush_options_for(server, name, "writers" + std::to_string(serial), 0.1));
    }
    ctl.ready.wait();
    const double redis0 = process_cpu(server.pid());
    const double start = now_seconds();
    ctl.go.store(1, std::memory_order_release);
    bool ok = true;
    for (pid_t pid : pids) ok = reap(pid) && ok;
    const double redis1 = process_cpu(server.pid());
    ctl.stop.store(true);
    if (flusher > 0) ok = reap(flusher) && ok;
    if (!ok || ctl.failed.load() != 0) throw std::runtime_error("procsafe-bench-redis: a writer or the flusher failed");
    writer_run r;
    double end = start, cpu = 0;
    for (int p = 0; p < writers; ++p) {
        end = std::max(end, load(ctl.finished[p]));
        cpu += load(ctl.cpu[p]);
    }
    const double all = static_cast<double>(ops) * writers;
    r.seconds = end - start;
    r.cpu_ns_per_op = cpu * 1e9 / all;
    r.wall_ns_per_op = r.seconds * 1e9 / all;
    r.flusher_cpu = load(ctl.flusher_cpu);
    r.redis_cpu = redis1 - redis0;
    r.rounds = std::atomic_ref<std::uint64_t>(ctl.rounds).load();
    r.exact = w.total(seg) == static_cast<std::int64_t>(ops) * writers;
    return r;
}

struct under_flusher {
    const workload* w;
    long ops = 0;
    std::vector<writer_run> with, without;
    std::vector<double> cpu_ratios, wall_ratios;
};

under_flusher measure_writers(const workload& w, int writers, int pairs, double run_seconds,
                              const procsafe_test::redis_server& server) {
    under_flusher u;
    u.w = &w;
    long ops = 100'000;
    static int serial = 0;
    for (;;) {  // calibrate: a run of about run_seconds
        const auto probe = run_writers(w, writers, ops, false, server, serial++);
        if (probe.seconds >= run_seconds / 4 || ops > (1L << 40)) {
            ops = std::max(10'000L, static_cast<long>(static_cast<double>(ops) *
                                                      std::clamp(run_seconds / std::max(probe.seconds, 1e-6), 0.1, 10.0)));
            break;
        }
        ops *= 10;
    }
    u.ops = ops;
    for (int i = 0; i < pairs; ++i) {
        const bool flusher_first = i % 2 == 0;
        auto a = run_writers(w, writers, ops, flusher_first, server, serial++);
        auto b = run_writers(w, writers, ops, !flusher_first, server, serial++);
        auto& with = flusher_first ? a : b;
        auto& without = flusher_first ? b : a;
        u.cpu_ratios.push_back(without.cpu_ns_per_op / with.cpu_ns_per_op);
        u.wall_ratios.push_back(without.wall_ns_per_op / with.wall_ns_per_op);
        u.with.push_back(with);
        u.without.push_back(without);
    }
    return u;
}

// ---------------------------------------------------------------------------
// 2. One flush of 10,000 counters.

struct flush_row {
    std::string what;
    double cold_ms = NAN, changed_ms = NAN, unchanged_ms = NAN, restart_ms = NAN;
    std::size_t fcalls = 0;
    bool exact = false;
};

flush_row measure_flush(bool objects, int repeat, const procsafe_test::redis_server& server) {
    flush_row row;
    row.what = objects ? "10,000 atomic_counter<int64> objects" : "1 counter_array<int64> of 10,000";
    const std::string name = segment_name(objects ? "flush-objects" : "flush-array");
    procsafe::segment::remove(name);
    remove_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, std::size_t{24} << 20);
    std::vector<procsafe::atomic_counter<std::int64_t>*> counters;
    i64_array* arr = nullptr;
    if (objects) {
        for (int i = 0; i < 10'000; ++i) {
            std::string name_i("c");  // not "c" + to_string(i): GCC 12 -O3's -Wrestrict false positive (bug 105329)
            name_i += std::to_string(i);
            counters.push_back(&seg.construct<procsafe::atomic_counter<std::int64_t>>(name_i));
        }
    } else {
        arr = &seg.construct<i64_array>("arr", 10'000);
    }
    auto bump = [&] {
        if (objects) for (auto* c : counters) c->increment(3);
        else for (std::size_t i = 0; i < 10'000; ++i) (*arr)[i].increment(3);
    };
    const std::string ns = name;
    auto o = flush_options_for(server, name, ns, 1.0);
    std::size_t fcalls = 0;
    auto once = [&](pr::flusher& f, std::size_t want_fields) {
        const auto r = f.flush_once();
        if (!r.ok || r.fields != want_fields) throw std::runtime_error("procsafe-bench-redis: a flush failed: " + r.error);
        fcalls = r.fcalls;
        return r.seconds * 1e3;
    };
    pr::flusher f(o);
    bump();
    row.cold_ms = once(f, 10'000);
    std::vector<double> changed, unchanged, restart;
    for (int i = 0; i < repeat; ++i) {
        bump();
        changed.push_back(once(f, 10'000));
        row.fcalls = fcalls;  // of a flush of 10,000 changed counters
        unchanged.push_back(once(f, 0));
        bump();
        pr::flusher fresh(o);  // a flusher restarted: reads the watermarks first
        restart.push_back(once(fresh, 10'000));
        once(f, 0);  // f's cache is stale now: it finds out (a conflict) and re-reads
    }
    row.changed_ms = median(changed);
    row.unchanged_ms = median(unchanged);
    row.restart_ms = median(restart);
    const auto fleet = pr::read_fleet(o.connection, ns);
    const std::string want = std::to_string(3 * (1 + 2 * repeat));
    row.exact = fleet.totals.size() == 10'000 &&
                std::all_of(fleet.totals.begin(), fleet.totals.end(), [&](const auto& kv) { return kv.second == want; });
    return row;
}

// ---------------------------------------------------------------------------
// 3. An INCR per event against procsafe + a flusher.

struct events_row {
    std::string what;
    long events = 0;  // per process
    int processes = 2;
    double seconds = 0;
    double per_second() const { return static_cast<double>(events) * processes / seconds; }
    std::string redis_total;
    bool exact = false;
};

events_row measure_incr(long events, const procsafe_test::redis_server& server) {
    events_row row;
    row.what = "a synchronous INCR per event (hiredis, 127.0.0.1)";
    row.events = events;
    const std::string key = "bench:incr:" + std::to_string(::getpid());
    auto ctl_seg = procsafe::segment::anonymous(std::size_t{64} * 1024);
    auto& ctl = ctl_seg.construct<control>("control", row.processes);
    std::vector<pid_t> pids;
    std::fflush(nullptr);
    for (int p = 0; p < row.processes; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            int rc = 0;
            redisContext* c = redisConnect("127.0.0.1", server.port());
            ctl.ready.count_down();
            while (ctl.go.load(std::memory_order_acquire) == 0) {}
            for (long i = 0; i < events && rc == 0; ++i) {
                auto* r = static_cast<redisReply*>(redisCommand(c, "INCR %s", key.c_str()));
                if (r == nullptr || r->type != REDIS_REPLY_INTEGER) rc = 1;
                if (r != nullptr) freeReplyObject(r);
            }
            store(ctl.finished[p], now_seconds());
            redisFree(c);
            ::_exit(rc);
        }
        pids.push_back(pid);
    }
    ctl.ready.wait();
    const double start = now_seconds();
    ctl.go.store(1, std::memory_order_release);
    bool ok = true;
    for (pid_t pid : pids) ok = reap(pid) && ok;
    double end = start;
    for (int p = 0; p < row.processes; ++p) end = std::max(end, load(ctl.finished[p]));
    row.seconds = end - start;
    procsafe_test::raw_client redis(server.port());
    row.redis_total = redis.run({"GET", key}).str;
    row.exact = ok && row.redis_total == std::to_string(events * row.processes);
    return row;
}

events_row measure_procsafe_events(long events, const procsafe_test::redis_server& server) {
    events_row row;
    row.what = "procsafe sharded_counter ++ per event, a flusher at 100 ms";
    row.events = events;
    const std::string name = segment_name("events");
    procsafe::segment::remove(name);
    remove_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, std::size_t{1} << 20);
    auto& hits = seg.construct<procsafe::sharded_counter<std::int64_t>>("events");
    auto ctl_seg = procsafe::segment::anonymous(std::size_t{64} * 1024);
    auto& ctl = ctl_seg.construct<control>("control", row.processes + 1);
    std::vector<pid_t> pids;
    std::fflush(nullptr);
    for (int p = 0; p < row.processes; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ctl.ready.count_down();
            while (ctl.go.load(std::memory_order_acquire) == 0) {}
            for (long i = 0; i < events; ++i) hits.increment();
            store(ctl.finished[p], now_seconds());
            ::_exit(0);
        }
        pids.push_back(pid);
    }
    const pid_t flusher = start_flusher(ctl, flush_options_for(server, name, name, 0.1));
    ctl.ready.wait();
    const double start = now_seconds();
    ctl.go.store(1, std::memory_order_release);
    bool ok = true;
    for (pid_t pid : pids) ok = reap(pid) && ok;
    double end = start;
    for (int p = 0; p < row.processes; ++p) end = std::max(end, load(ctl.finished[p]));
    row.seconds = end - start;
    ctl.stop.store(true);  // its last round carries the last counts
    ok = reap(flusher) && ok;
    procsafe_test::raw_client redis(server.port());
    row.redis_total = redis.hget(pr::keys::totals(name), "events");
    row.exact = ok && row.redis_total == std::to_string(events * row.processes);
    return row;
}

std::string machine() {
    std::string cpu = "?";
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("model name", 0) == 0) {
            cpu = line.substr(line.find(':') + 2);
            break;
        }
    }
    utsname u{};
    ::uname(&u);
    return cpu + ", " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs, " + u.sysname + " " + u.release;
}

/// The workloads of section 1.
std::vector<workload> writer_workloads() {
    return {
        {"sharded_counter<int64>", "each writer: increment() on one sharded counter",
         [](procsafe::segment& s) { s.construct<procsafe::sharded_counter<std::int64_t>>("hits"); },
         [](procsafe::segment& s, long ops, int) {
             auto& c = s.find<procsafe::sharded_counter<std::int64_t>>("hits");
             for (long i = 0; i < ops; ++i) c.increment();
         },
         [](procsafe::segment& s) { return s.find<procsafe::sharded_counter<std::int64_t>>("hits").sum(); }},
        {"counter_array<int64> x 1,000", "each increment to an element picked at random (xorshift): 1,000 fields change per flush",
         [](procsafe::segment& s) { s.construct<i64_array>("series", 1000); },
         [](procsafe::segment& s, long ops, int p) {
             auto& a = s.find<i64_array>("series");
             std::uint64_t x = 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(p + 1);
             for (long i = 0; i < ops; ++i) {
                 x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                 a[static_cast<std::size_t>(((x & 0xffffffffu) * 1000) >> 32)].increment();
             }
         },
         [](procsafe::segment& s) {
             auto& a = s.find<i64_array>("series");
             std::int64_t t = 0;
             for (std::size_t i = 0; i < 1000; ++i) t += a[i].value();
             return t;
         }},
    };
}

/// Section 1; false when the target (cpu x >= 0.98) is missed.
bool section_writers(const procsafe_test::redis_server& server, int writers, int pairs, double run_seconds) {
    std::printf("\n1. writers: %d writer processes, with a flusher process flushing their segment every 100 ms to Redis\n"
                "   against none; %d pair%s of runs of about %.2f s, the order flipped every pair; medians\n",
                writers, pairs, pairs == 1 ? "" : "s", run_seconds);
    std::printf("%-30s %11s %10s %10s %8s %8s %7s %9s %9s  %s\n", "writers' counter", "ops/writer", "cpu ns/op",
                "(flushed)", "cpu x", "wall x", "flushes", "flusher%", "redis%", "total");
    bool met = true;
    for (const auto& w : writer_workloads()) {
        const auto u = measure_writers(w, writers, pairs, run_seconds, server);
        std::vector<double> cw, cwo, fl, rd, rounds;
        bool exact = true;
        for (const auto& r : u.with) {
            cw.push_back(r.cpu_ns_per_op);
            fl.push_back(r.flusher_cpu / r.seconds);
            rd.push_back(r.redis_cpu / r.seconds);
            rounds.push_back(static_cast<double>(r.rounds));
            exact = exact && r.exact;
        }
        for (const auto& r : u.without) cwo.push_back(r.cpu_ns_per_op), exact = exact && r.exact;
        const double ratio = median(u.cpu_ratios);
        met = met && ratio >= 0.98;
        std::printf("%-30s %11ld %10.3f %10.3f %8.3f %8.3f %7.0f %8.1f%% %8.1f%%  %s\n", w.name, u.ops, median(cwo),
                    median(cw), ratio, median(u.wall_ratios), median(rounds), 100 * median(fl), 100 * median(rd),
                    exact ? "exact" : "LOST");
        std::printf("   %s; cpu x per pair:", w.what);
        for (double r : u.cpu_ratios) std::printf(" %.3f", r);
        std::printf("\n");
    }
    std::printf("   cpu x: the writers' CPU time per operation without the flusher over with it (1: the flusher costs\n"
                "   them nothing; target >= 0.98). With %ld CPUs and %d writers there is no CPU to spare for the flusher\n"
                "   and redis-server: their CPU time (flusher%%, redis%%: of one CPU, over the runs' wall time) is taken\n"
                "   from whatever runs, so wall x falls by about their share / CPUs whatever the flusher does; the\n"
                "   target is judged on cpu x, what an operation costs the writer itself. flushes: rounds per run.\n",
                ::sysconf(_SC_NPROCESSORS_ONLN), writers);
    std::fflush(stdout);
    return met;
}

void section_flush(const procsafe_test::redis_server& server, int repeat) {
    std::printf("\n2. flush: one flush_once() of 10,000 counters to Redis (median of %d)\n", repeat);
    std::printf("%-38s %9s %11s %13s %12s %7s  %s\n", "segment", "cold ms", "changed ms", "unchanged ms", "restart ms",
                "FCALLs", "totals");  // FCALLs: of the "changed" flush
    for (bool objects : {true, false}) {
        const auto r = measure_flush(objects, repeat, server);
        std::printf("%-38s %9.1f %11.1f %13.1f %12.1f %7zu  %s\n", r.what.c_str(), r.cold_ms, r.changed_ms,
                    r.unchanged_ms, r.restart_ms, r.fcalls, r.exact ? "exact" : "WRONG");
    }
    std::printf("   cold: the first flush (every field new, every object's metadata written); changed: all 10,000\n"
                "   changed since the last flush; unchanged: none changed (one FCALL records the flush); restart: all\n"
                "   changed, a new flusher (after a kill: it reads the watermarks first, HMGET, then the segment\n"
                "   again). Batches of 2,000 fields per FCALL, pipelined; the time includes reading the segment.\n");
    std::fflush(stdout);
}

bool section_events(const procsafe_test::redis_server& server, long incr_events, long procsafe_events) {
    procsafe_test::redis_server everysec({"--appendfsync", "everysec"});  // Redis' usual setting
    auto incr_always = measure_incr(incr_events, server);
    incr_always.what += ", appendfsync always";
    auto incr_everysec = measure_incr(incr_events, everysec);
    incr_everysec.what += ", appendfsync everysec";
    auto ours = measure_procsafe_events(procsafe_events, server);
    std::printf("\n3. events: 2 processes x N events each, counted in Redis\n");
    std::printf("%-66s %11s %8s %15s %20s  %s\n", "how", "N/process", "seconds", "events/s (host)", "Redis total", "");
    for (const events_row* r : {&incr_always, &incr_everysec, &ours}) {
        std::printf("%-66s %11ld %8.3f %15.0f %20s  %s\n", r->what.c_str(), r->events, r->seconds, r->per_second(),
                    r->redis_total.c_str(), r->exact ? "exact" : "WRONG");
    }
    std::printf("   procsafe + flusher: %.0fx the events per second of an INCR per event (appendfsync everysec), %.0fx\n"
                "   (always). An INCR waits a round trip per event; procsafe's counts reach Redis at the next flush\n"
                "   (within 100 ms; the seconds stop when the writers do, the flusher's last round checked after).\n",
                ours.per_second() / incr_everysec.per_second(), ours.per_second() / incr_always.per_second());
    std::fflush(stdout);
    return incr_always.exact && incr_everysec.exact && ours.exact;
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false, check = false;
    int pairs = 5, writers = 2, only = 0;
    double run_seconds = 1.0;
    long incr_events = 5'000;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto next = [&] { return i + 1 < argc ? argv[++i] : throw std::invalid_argument(a + " needs a value"); };
            if (a == "--quick") quick = true;
            else if (a == "--check") check = true;
            else if (a == "--pairs") pairs = std::max(1, std::atoi(next()));
            else if (a == "--run-seconds") run_seconds = std::atof(next());
            else if (a == "--writers") writers = std::clamp(std::atoi(next()), 1, 8);
            else if (a == "--incr-events") incr_events = std::atol(next());
            else if (a == "--only") only = std::atoi(next());
            else throw std::invalid_argument("unknown option " + a);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe-bench-redis: %s\nusage: procsafe-bench-redis [--quick] [--pairs N] [--run-seconds S] "
                             "[--writers W] [--incr-events N] [--only 1|2|3] [--check]\n", e.what());
        return 2;
    }
    if (quick) pairs = 1, run_seconds = 0.25, incr_events = 2'000;
    if (procsafe_test::find_redis_server().empty()) {
        std::printf("SKIPPED: redis-server not found (apt-get install redis-server)\n");
        return 0;
    }
    std::printf("procsafe-bench-redis: %s; %s\n", machine().c_str(), PROCSAFE_BENCH_FLAGS);
    std::printf("redis-server %s on 127.0.0.1, appendonly yes, appendfsync always (unless said); hiredis %d.%d.%d\n",
                "7", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    std::fflush(stdout);
    try {
        procsafe_test::redis_server server;
        bool met = true, exact = true;
        if (only == 0 || only == 1) met = section_writers(server, writers, pairs, run_seconds);
        if (only == 0 || only == 2) section_flush(server, quick ? 1 : 5);
        if (only == 0 || only == 3) exact = section_events(server, incr_events, quick ? 20'000'000 : 200'000'000);
        if (check && !quick && !met) {
            std::printf("check: the writers' cpu ratio with a flusher fell below 0.98\n");
            return 1;
        }
        return exact ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe-bench-redis: %s\n", e.what());
        return 1;
    }
}
