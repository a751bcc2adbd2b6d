// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The fault test: three hosts (three segments, a worker process counting in
// each, a procsafe-redis flusher process for each, one namespace), while
//   - the flushers are SIGKILLed at random moments and restarted (100+ times),
//   - redis-server is SIGKILLed and restarted from its append-only file (6 times),
//   - redis-server is SIGSTOPped for 2 to 3 seconds (a partition), twice,
//   - one host's segment is removed and recreated (a server restart: a new
//     incarnation counting from zero).
// At the end, after a final --once flush of every host, every fleet total
// must equal the sum of the hosts' local totals exactly (the old
// incarnation's final values included): nothing lost, nothing twice.
//
// PROCSAFE_FAULT_SECONDS sets the chaos phase's length (default 45).
#include "redis_server.hpp"
#include "workload.hpp"

#include "support/process.hpp"
#include "support/skip.hpp"

#include "catch.hpp"

#include <procsafe/procsafe.hpp>
#include <procsafe/redis.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using procsafe_test::redis_server;
using procsafe_test::unique_name;
namespace pr = procsafe::redis;

using clock_type = std::chrono::steady_clock;
using namespace procsafe_test::workload;

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

/// One host: its segment (this process created it), its worker, its flusher.
struct host {
    std::string id, segment, log;
    std::optional<procsafe::segment> seg;
    pid_t worker = -1, flusher = -1;
};

pid_t spawn_flusher(const std::string& cli, const std::vector<std::string>& args, const std::string& log,
                    const std::string& password) {
    std::vector<std::string> all{cli};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_strings{"PROCSAFE_REDIS_PASSWORD=" + password, "PATH=/usr/bin:/bin"};
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, cli.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

int wait_exit(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/// Adds up N of "flushing again after N failed attempts" in a flusher log,
/// and counts the failure episodes ("retrying with backoff").
void read_log(const std::string& path, long& retries, long& episodes) {
    std::ifstream in(path);
    const std::regex again("flushing again after ([0-9]+) failed attempt");
    for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (std::regex_search(line, m, again)) retries += std::stol(m[1].str());
        if (line.find("retrying with backoff") != std::string::npos) ++episodes;
    }
}

}  // namespace

TEST_CASE("redis fault: flushers killed 100+ times, Redis killed and stopped, a segment recreated: totals exact",
          "[redis][fault]") {
    PROCSAFE_NEED_REDIS();
#if !defined(PROCSAFE_REDIS_CLI)
    if (procsafe_test::redis_required()) FAIL("procsafe-redis was not built (CLI11 missing)");
    PROCSAFE_SKIP("procsafe-redis was not built (CLI11 missing)");
#else
    const std::string cli = PROCSAFE_REDIS_CLI;
    double chaos_seconds = 45;
    if (const char* s = std::getenv("PROCSAFE_FAULT_SECONDS")) chaos_seconds = std::max(5.0, std::atof(s));
    const std::string password = "fault-" + std::to_string(::getpid());
    redis_server server({"--requirepass", password});
    std::mt19937_64 rng(std::random_device{}());
    auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };

    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& stop = control.construct<procsafe::atomic_counter<int>>("stop");
    std::vector<host> hosts(3);
    for (int i = 0; i < 3; ++i) {
        auto& h = hosts[static_cast<std::size_t>(i)];
        h.id = "host" + std::to_string(i);
        h.segment = unique_name("fault");
        h.log = server.dir() + "/" + h.id + ".log";
        procsafe::segment::remove(h.segment);
        h.seg.emplace(procsafe::segment::create(h.segment, 1 << 20));
        construct_objects(*h.seg);
        h.worker = start_worker(*h.seg, stop, i);
        REQUIRE(h.worker > 0);
    }
    struct cleanup_t {
        std::vector<host>& hosts;
        ~cleanup_t() {
            for (auto& h : hosts) {
                if (h.flusher > 0) ::kill(h.flusher, SIGKILL), ::waitpid(h.flusher, nullptr, 0);
                if (h.worker > 0) ::kill(h.worker, SIGKILL), ::waitpid(h.worker, nullptr, 0);
                h.seg.reset();
                procsafe::segment::remove(h.segment);
            }
        }
    } cleanup{hosts};

    auto flusher_args = [&](const host& h, bool once) {
        std::vector<std::string> a{"flush", h.segment, "--redis", server.address(), "--host-id", h.id, "--namespace",
                                   "fleet", "--connect-timeout", "0.5", "--command-timeout", "0.5", "--max-backoff", "0.5"};
        if (once) a.insert(a.end(), {"--once", "--retry-for", "30"});
        else a.insert(a.end(), {"--interval", "0.05"});
        return a;
    };
    auto start_flusher = [&](host& h) {
        h.flusher = spawn_flusher(cli, flusher_args(h, false), h.log, password);
        REQUIRE(h.flusher > 0);
    };
    auto flush_once = [&](host& h) {
        const pid_t p = spawn_flusher(cli, flusher_args(h, true), h.log, password);
        REQUIRE(p > 0);
        return wait_exit(p);
    };
    for (auto& h : hosts) start_flusher(h);

    // The chaos, on a schedule: Redis killed at 1/7 .. 6/7 of the phase,
    // stopped at 0.3 and 0.75, host2's segment recreated at 0.5; a flusher
    // killed every (length - 5 s) / 140, +-50 %.
    std::vector<double> redis_kills;
    for (int k = 1; k <= 6; ++k) redis_kills.push_back(chaos_seconds * k / 7.0 + uniform(-0.5, 0.5));
    std::vector<double> redis_stops{chaos_seconds * 0.3, chaos_seconds * 0.75};
    bool recreated = false;
    std::map<std::string, i128> old_incarnation;  // host2's values before its segment was recreated
    double old_latency_sum = 0;
    int flusher_kills = 0, redis_restarts = 0, redis_pauses = 0;
    const auto t0 = clock_type::now();
    // About 140 flusher kills outside the pauses, whatever the phase's length.
    const double kill_gap = std::max(0.05, (chaos_seconds - 5.0) / 140.0);
    double next_kill = uniform(0.5, 1.5) * kill_gap;
    while (seconds_since(t0) < chaos_seconds) {
        const double now = seconds_since(t0);
        if (now >= next_kill) {
            host& h = hosts[std::uniform_int_distribution<std::size_t>(0, 2)(rng)];
            ::kill(h.flusher, SIGKILL);
            ::waitpid(h.flusher, nullptr, 0);
            ++flusher_kills;
            std::this_thread::sleep_for(std::chrono::duration<double>(uniform(0, 0.05)));
            start_flusher(h);
            next_kill = now + uniform(0.5, 1.5) * kill_gap;
        }
        if (!redis_kills.empty() && now >= redis_kills.front()) {
            redis_kills.erase(redis_kills.begin());
            server.kill9();
            std::this_thread::sleep_for(std::chrono::duration<double>(uniform(0, 0.5)));
            server.start();  // from its append-only file
            ++redis_restarts;
        }
        if (!redis_stops.empty() && now >= redis_stops.front()) {
            redis_stops.erase(redis_stops.begin());
            server.stop();
            const double pause = uniform(2, 3);
            const auto paused = clock_type::now();
            // Flushers go on being killed meanwhile.
            while (seconds_since(paused) < pause) {
                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                host& h = hosts[std::uniform_int_distribution<std::size_t>(0, 2)(rng)];
                ::kill(h.flusher, SIGKILL);
                ::waitpid(h.flusher, nullptr, 0);
                ++flusher_kills;
                start_flusher(h);
            }
            server.resume();
            ++redis_pauses;
        }
        if (!recreated && now >= chaos_seconds * 0.5) {
            // host2's server restarts: its worker ends, a last flush carries
            // its counts, the segment is removed and created again, empty.
            recreated = true;
            host& h = hosts[2];
            stop.store(1);  // all workers stop for a moment (one flag), then the others go on
            for (auto& w : hosts) wait_exit(w.worker), w.worker = -1;
            stop.store(0);
            REQUIRE(flush_once(h) == 0);
            add_local(h.segment, old_incarnation, old_latency_sum);
            h.seg.reset();  // removes it (this process created it)
            h.seg.emplace(procsafe::segment::create(h.segment, 1 << 20));
            construct_objects(*h.seg);
            for (int i = 0; i < 3; ++i) hosts[static_cast<std::size_t>(i)].worker = start_worker(*hosts[static_cast<std::size_t>(i)].seg, stop, i);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    // The end: the workers stop, the flushers are killed one last time, and
    // a --once flush of every host carries what is left.
    stop.store(1);
    for (auto& h : hosts) {
        REQUIRE(wait_exit(h.worker) == 0);
        h.worker = -1;
    }
    for (auto& h : hosts) {
        ::kill(h.flusher, SIGKILL);
        ::waitpid(h.flusher, nullptr, 0);
        h.flusher = -1;
        ++flusher_kills;
    }
    for (auto& h : hosts) REQUIRE(flush_once(h) == 0);

    std::map<std::string, i128> expected = old_incarnation;
    double latency_sum = old_latency_sum;
    for (auto& h : hosts) add_local(h.segment, expected, latency_sum);
    pr::connection_options c;
    c.redis = pr::endpoint::parse(server.address());
    c.auth.password = password;
    const auto fleet = pr::read_fleet(c, "fleet");
    long retries = 0, episodes = 0;
    for (auto& h : hosts) read_log(h.log, retries, episodes);

    std::printf("fault test, %.0f s of chaos: %d flusher SIGKILLs (and restarts), %d redis-server SIGKILLs and restarts "
                "from its AOF, %d SIGSTOPs of 2-3 s, 1 segment recreated; flushers logged %ld failure episodes and %ld "
                "failed attempts (retries) before flushing again; %zu reporters\n",
                chaos_seconds, flusher_kills, redis_restarts, redis_pauses, episodes, retries, fleet.reporters.size());
    std::printf("  %-32s %24s %24s\n", "field", "fleet total", "sum of the hosts");
    std::size_t exact = 0;
    for (const auto& [field, want] : expected) {
        const auto it = fleet.totals.find(field);
        const std::string got = it == fleet.totals.end() ? "(none)" : it->second;
        std::printf("  %-32s %24s %24s %s\n", field.c_str(), got.c_str(), text(want).c_str(), got == text(want) ? "exact" : "WRONG");
        CHECK(got == text(want));
        exact += got == text(want) ? 1 : 0;
    }
    const double got_sum = std::stod(fleet.totals.at("latency_sum"));
    std::printf("  %-32s %24.6f %24.6f (floating point: HINCRBYFLOAT)\n", "latency_sum", got_sum, latency_sum);
    std::printf("  %zu of %zu integer fields exact\n", exact, expected.size());
    std::fflush(stdout);
    CHECK(got_sum == Approx(latency_sum).epsilon(1e-9));
    CHECK(fleet.totals.size() == expected.size() + 1);
    CHECK(flusher_kills >= 100);
    CHECK(redis_restarts >= 5);
    CHECK(fleet.reporters.size() == 4);  // 3 hosts, one of them in 2 incarnations
#endif
}
