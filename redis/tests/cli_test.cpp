// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The flush and fleet subcommands, run by both programs that take them: the
// procsafe command (when it is built) and procsafe-redis. Exit statuses, one line on stderr per error, passwords from the
// environment or a file, fleet show (text and JSON), fleet export.
#include "cli_run.hpp"
#include "redis_server.hpp"

#include "support/process.hpp"
#include "support/skip.hpp"

#include "catch.hpp"

#include <procsafe/procsafe.hpp>
#include <procsafe/redis.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(PROCSAFE_REDIS_CLI)

namespace {

using procsafe_test::redis_server;
using procsafe_test::unique_name;

using procsafe_test::cli_result;
using procsafe_test::slurp;

/// The programs that take flush and fleet.
std::vector<std::string> cli_programs() {
#if defined(PROCSAFE_CLI)
    return {PROCSAFE_REDIS_CLI, PROCSAFE_CLI};
#else
    return {PROCSAFE_REDIS_CLI};
#endif
}

/// The one a test case runs now (each runs once per program).
std::string program;

/// Runs `program` with `args` and exactly the environment `env`.
cli_result run_cli(const std::string& dir, std::vector<std::string> args, std::vector<std::string> env = {}) {
    return procsafe_test::run_program(program, dir, std::move(args), std::move(env));
}

struct removed_at_exit {
    std::string name;
    ~removed_at_exit() { procsafe::segment::remove(name); }
};

}  // namespace

TEST_CASE("redis cli: flush --once, fleet show, fleet export, and their errors", "[redis]") {
    PROCSAFE_NEED_REDIS();
    program = GENERATE(from_range(cli_programs()));
    INFO("program: " << program);
    redis_server server({"--requirepass", "cli-pw"});
    const auto name = unique_name("rcli");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    seg.construct<procsafe::atomic_counter<std::uint64_t>>("orders", procsafe::metadata{.help = "Orders."}).store((1ULL << 53) + 1);
    seg.construct<procsafe::latch>("ready", 1);
    const std::string dir = server.dir();
    const std::vector<std::string> flush{"flush", name, "--redis", server.address(), "--host-id", "h1", "--namespace", "shop", "--once"};

    // The password from the environment.
    auto r = run_cli(dir, flush, {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("flushed 1 segment to " + server.address() + ": 1 value") == 0);
    CHECK(r.err == "procsafe flush: segment '" + name + "': object 'ready' not flushed: a latch: no total (a count down, not a count)\n");

    // From a file.
    {
        std::ofstream(dir + "/pw") << "cli-pw\n";
        auto with_file = flush;
        with_file.insert(with_file.end(), {"--password-file", dir + "/pw"});
        seg.find<procsafe::atomic_counter<std::uint64_t>>("orders").increment(2);
        r = run_cli(dir, with_file);
        REQUIRE(r.status == 0);
    }

    // Errors: one line on stderr, exit 1.
    r = run_cli(dir, flush, {"PROCSAFE_REDIS_PASSWORD=wrong"});
    CHECK(r.status == 1);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find("procsafe flush: redis " + server.address() + ": AUTH refused: WRONGPASS") == 0);
    r = run_cli(dir, {"flush", name, "--redis", "127.0.0.1:" + std::to_string(procsafe_test::free_port()), "--once"});
    CHECK(r.status == 1);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find("Connection refused") != std::string::npos);
    r = run_cli(dir, {"flush", "no_such_segment_here", "--redis", server.address(), "--once"}, {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    CHECK(r.status == 1);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find("procsafe flush: segment 'no_such_segment_here'") == 0);
    r = run_cli(dir, {"flush", name, "--redis", "host:99999", "--once"});
    CHECK(r.status == 1);
    CHECK(r.err == "procsafe flush: 'host:99999': the port must be 1 to 65535\n");
    // Usage errors: one line naming the option, exit 2.
    r = run_cli(dir, {"flush", name, "--host-id", "a b", "--once"});
    CHECK(r.status == 2);
    CHECK(r.err == "procsafe flush: --host-id: 'a b': printable characters only, no space\n");
    r = run_cli(dir, {"flush", name, "--command-timeout", "1e300", "--once"});
    CHECK(r.status == 2);
    CHECK(r.err == "procsafe flush: --command-timeout: must be seconds from 0.001 to 60, not '1e300'\n");
    r = run_cli(dir, {"flush", name, "--redis-cluster", "", "--once"});
    CHECK(r.status == 2);
    CHECK(r.err == "procsafe flush: --redis-cluster: '': an empty HOST:PORT in the list\n");
    r = run_cli(dir, {"flush", name, "--redis-cluster", "a:1,b:0", "--once"});
    CHECK(r.status == 2);
    CHECK(r.err == "procsafe flush: --redis-cluster: 'b:0': the port must be 1 to 65535\n");
    r = run_cli(dir, {"flush", name, "--redis", "a:1", "--redis-cluster", "b:2", "--once"});
    CHECK(r.status == 2);
    CHECK(r.err == "procsafe flush: --redis excludes --redis-cluster\n");
    r = run_cli(dir, {"flush", name, "--stripes", "0", "--once"});
    CHECK(r.status == 2);
    CHECK(r.err == "procsafe flush: --stripes: Value 0 not in range 1 to 1024\n");
    r = run_cli(dir, {"fleet", "show", "--redis-cluster", "127.0.0.1:1", "--connect-timeout", "0.5"});
    CHECK(r.status == 1);
    CHECK(r.err == "procsafe fleet show: redis cluster 127.0.0.1:1: no node gave the slot map (last: redis 127.0.0.1:1: "
                   "Connection refused)\n");

    // fleet show: text and JSON.
    r = run_cli(dir, {"fleet", "show", "--redis", server.address()}, {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    REQUIRE(r.status == 0);
    CHECK(r.out.find("namespace 'shop' (redis " + server.address() + "): 1 reporter") == 0);
    CHECK(r.out.find("orders  9007199254740995") != std::string::npos);
    r = run_cli(dir, {"fleet", "show", "--redis", server.address(), "--namespace", "shop", "--json"},
                {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["namespaces"].size() == 1);
    const auto& ns = j["namespaces"][0];
    CHECK(ns["namespace"] == "shop");
    CHECK(ns["totals"]["orders"].get<std::uint64_t>() == (1ULL << 53) + 3);
    REQUIRE(ns["reporters"].size() == 1);
    CHECK(ns["reporters"][0]["host"] == "h1");
    CHECK(ns["reporters"][0]["watermarks"]["orders"].get<std::uint64_t>() == (1ULL << 53) + 3);
    CHECK(ns["reporters"][0]["age_seconds"].get<double>() < 60);
    CHECK(ns["objects"]["orders"]["help"] == "Orders.");

    // fleet export: stdout, or a file replaced whole.
    r = run_cli(dir, {"fleet", "export", "--redis", server.address()}, {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    REQUIRE(r.status == 0);
    CHECK(r.out == "# HELP orders_total Orders.\n# TYPE orders_total counter\norders_total{namespace=\"shop\"} 9007199254740995\n");
    r = run_cli(dir, {"fleet", "export", "--redis", server.address(), "--output", dir + "/fleet.prom"},
                {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    REQUIRE(r.status == 0);
    CHECK(slurp(dir + "/fleet.prom").find("orders_total{namespace=\"shop\"} 9007199254740995\n") != std::string::npos);
    r = run_cli(dir, {"fleet", "export", "--redis", server.address(), "--output", dir + "/no/such/dir/x.prom"},
                {"PROCSAFE_REDIS_PASSWORD=cli-pw"});
    CHECK(r.status == 1);
    CHECK(r.err_lines() == 1);
    r = run_cli(dir, {"fleet", "show", "--redis", server.address()});  // no password
    CHECK(r.status == 1);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find("procsafe fleet show: redis " + server.address() + ": SMEMBERS: NOAUTH") == 0);
}

TEST_CASE("redis cli: flush runs until SIGTERM, then flushes once more", "[redis]") {
    PROCSAFE_NEED_REDIS();
    program = GENERATE(from_range(cli_programs()));
    INFO("program: " << program);
    redis_server server;
    const auto name = unique_name("rcliterm");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    c.store(5);
    std::vector<std::string> args{program, "flush", name, "--redis", server.address(), "--interval", "10"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    REQUIRE(::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
    procsafe_test::raw_client redis(server.port());
    const auto totals = procsafe::redis::keys::totals(name);
    for (int i = 0; i < 200 && redis.hget(totals, "c") != "5"; ++i) ::usleep(20'000);
    REQUIRE(redis.hget(totals, "c") == "5");
    c.store(9);  // the next flush is 10 s away: only the one at SIGTERM carries this
    ::kill(pid, SIGTERM);
    const int status = procsafe_test::wait_bounded(pid, std::chrono::seconds(10));
    CHECK(procsafe_test::exited_ok(status));
    CHECK(redis.hget(totals, "c") == "9");
}

#endif
