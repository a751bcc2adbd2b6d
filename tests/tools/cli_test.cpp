// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The procsafe command, run as a real process on segments made here: its
// output, its JSON read back, its expositions through promtool, its exit
// statuses and messages on bad input, its server through real HTTP.
#include "../catch.hpp"
#include "../support/shm_files.hpp"
#include "../support/skip.hpp"
#include "cli_support.hpp"

#include <procsafe/procsafe.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <regex>

#include <pty.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/un.h>

using namespace procsafe_test;
using json = nlohmann::json;

namespace {

/// Lines of text.
std::size_t line_count(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }

/// How many times the regex matches in text.
std::ptrdiff_t matches(const std::string& text, const std::string& regex) {
    const std::regex re(regex);
    return std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator());
}

bool has_line(const std::string& text, const std::string& regex) {
    return std::regex_search(text, std::regex("(^|\n)" + regex + "(\n|$)"));
}

/// promtool, or empty (the tests that need it skip).
std::string promtool() { return find_program("promtool"); }

/// Every exposition a test makes passes promtool check metrics (when it is installed).
void check_exposition(const std::string& text) {
    const std::string tool = promtool();
    if (tool.empty()) {
        WARN("promtool not installed (Debian package prometheus): exposition not checked");
        return;
    }
    const auto r = promtool_check(tool, text);
    INFO("promtool check metrics:\n" << r.out << r.err << "\non:\n" << text);
    CHECK(r.status == 0);
}

/// A failure: status 1 and one line on stderr that matches `regex`, nothing
/// on stdout, no stack trace.
void check_failure(const run_result& r, const std::string& regex) {
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.status == 1);
    CHECK(line_count(r.err) == 1);
    CHECK(std::regex_search(r.err, std::regex(regex)));
    CHECK(r.out.empty());
}

json find_named(const json& array, const std::string& name) {
    for (const auto& o : array)
        if (o.at("name") == name) return o;
    FAIL("no entry named " << name);
    return {};
}

}  // namespace

TEST_CASE("procsafe --help is a manual page, for the command and each subcommand", "[tools]") {
    auto r = cli({"--help"});
    CHECK(r.status == 0);
    for (const char* section : {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXAMPLES", "EXIT STATUS"}) {
        CHECK(has_line(r.out, section));
    }
    for (const char* sub : {"list", "show", "watch", "export", "serve", "rm"}) {
        INFO(sub);
        r = cli({sub, "--help"});
        CHECK(r.status == 0);
        CHECK(has_line(r.out, std::string("    procsafe ") + sub + " - .*"));
        CHECK(has_line(r.out, "SYNOPSIS"));
        CHECK(has_line(r.out, "DESCRIPTION"));
        CHECK(has_line(r.out, "OPTIONS"));
        CHECK(has_line(r.out, "EXAMPLES"));
        CHECK(std::regex_search(r.out, std::regex("\n    procsafe " + std::string(sub))));
    }
    // serve listens on 127.0.0.1 by default: its prometheus.yml example scrapes that.
    r = cli({"serve", "--help"});
    CHECK(r.out.find("host1:9464") == std::string::npos);
    CHECK(r.out.find("targets: ['127.0.0.1:9464']") != std::string::npos);
#if defined(PROCSAFE_CLI_REDIS)
    for (const auto& sub : std::vector<std::vector<std::string>>{{"flush", "--help"}, {"fleet", "--help"}, {"fleet", "show", "--help"}}) {
        INFO(sub[0] << " " << sub[1]);
        r = cli(sub);
        CHECK(r.status == 0);
        CHECK(has_line(r.out, "    procsafe " + sub[sub.size() - 2] + " - .*"));
    }
    CHECK(std::regex_search(cli({"--help"}).out, std::regex("\n    flush +carry segments")));
#else
    r = cli({"flush", "x"});
    CHECK(r.status == 1);
    CHECK(std::regex_search(r.err, std::regex("^procsafe: 'flush' needs procsafe::redis")));
#endif
    r = cli({"--version"});
    CHECK(r.status == 0);
    CHECK(std::regex_search(r.out, std::regex("^procsafe [0-9]+\\.[0-9]+\\.[0-9]+")));
}

TEST_CASE("Usage errors exit 2 with CLI11's message", "[tools]") {
    struct usage_case {
        std::vector<std::string> args;
        const char* regex;
    };
    const std::vector<usage_case> cases = {
        {{}, "subcommand is required"},
        {{"frobnicate"}, "unknown command 'frobnicate'"},
        {{"show"}, "SEGMENT is required"},
        {{"show", "a", "b"}, "not expected"},
        {{"list", "--bogus"}, "bogus"},
        {{"watch", "x", "--interval", "0"}, "--interval"},
        {{"watch", "x", "--interval", "soon"}, "--interval"},
        {{"watch", "x", "--count", "-1"}, "--count"},
        {{"export"}, "SEGMENT is required"},
    };
    for (const auto& c : cases) {
        const auto r = cli(c.args);
        INFO("args: " << (c.args.empty() ? "(none)" : c.args[0]) << " ...\nstderr: " << r.err);
        CHECK(r.status == 2);
        CHECK(std::regex_search(r.err, std::regex(c.regex)));
        CHECK(r.err.find("terminate") == std::string::npos);
    }
}

TEST_CASE("Usage errors: one line naming the option, exit 2", "[tools]") {
    struct usage_case {
        std::vector<std::string> args;
        std::string line;  // all of stderr
    };
    const std::string seconds = "must be seconds from 0.01 to 86400, not ";
    std::vector<usage_case> cases = {
        {{"watch", "x", "--interval", "nan"}, "procsafe watch: --interval: " + seconds + "'nan'"},
        {{"watch", "x", "--interval", "1e300"}, "procsafe watch: --interval: " + seconds + "'1e300'"},
        {{"watch", "x", "--interval", "-inf"}, "procsafe watch: --interval: " + seconds + "'-inf'"},
        {{"watch", "x", "--interval", "0"}, "procsafe watch: --interval: " + seconds + "'0'"},
        {{"watch", "x", "--interval", "0x10"}, "procsafe watch: --interval: " + seconds + "'0x10'"},
        {{"watch", "x", "--interval", "0x1p3"}, "procsafe watch: --interval: " + seconds + "'0x1p3'"},
        {{"watch", "x", "--interval", " 1"}, "procsafe watch: --interval: " + seconds + "' 1'"},
        {{"export", "x", "--output", ""}, "procsafe export: --output: must name a file (- or no --output: stdout)"},
        {{"list", "--bogus"}, "procsafe list: The following argument was not expected: --bogus"},
        {{"show"}, "procsafe show: SEGMENT is required"},
    };
#if defined(PROCSAFE_CLI_REDIS)
    const std::vector<usage_case> redis_cases = {
        {{"flush", "x", "--gauge-ttl", "1e300"}, "procsafe flush: --gauge-ttl: must be seconds from 0.001 to 604800, not '1e300'"},
        {{"flush", "x", "--command-timeout", "1e300"}, "procsafe flush: --command-timeout: must be seconds from 0.001 to 60, not '1e300'"},
        {{"flush", "x", "--connect-timeout", "inf"}, "procsafe flush: --connect-timeout: must be seconds from 0.001 to 60, not 'inf'"},
        {{"flush", "x", "--interval", "nan"}, "procsafe flush: --interval: " + seconds + "'nan'"},
        {{"flush", "x", "--max-backoff", "0"}, "procsafe flush: --max-backoff: must be seconds from 0.001 to 3600, not '0'"},
        {{"flush", "x", "--retry-for", "nan"}, "procsafe flush: --retry-for: must be seconds from 0 to 86400, not 'nan'"},
        {{"flush", "x", "--host-id", "h\xe9"}, "procsafe flush: --host-id: 'h\\xe9': not valid UTF-8"},
        {{"flush", "x", "--namespace", "a b"}, "procsafe flush: --namespace: 'a b': printable characters only, no space"},
        {{"fleet", "show", "--command-timeout", "nan"}, "procsafe fleet show: --command-timeout: must be seconds from 0.001 to 60, not 'nan'"},
    };
    cases.insert(cases.end(), redis_cases.begin(), redis_cases.end());
#endif
    for (const auto& c : cases) {
        const auto r = cli(c.args);
        INFO("args: " << c.args[0] << " " << (c.args.size() > 1 ? c.args.back() : "") << "\nstderr: " << r.err);
        CHECK(r.status == 2);
        CHECK(r.err == c.line + "\n");
        CHECK(r.out.empty());
    }
    // The bounds are in --help.
    CHECK(std::regex_search(cli({"watch", "--help"}).out, std::regex("seconds\\s+from\\s+0\\.01\\s+to\\s+86400")));
#if defined(PROCSAFE_CLI_REDIS)
    CHECK(std::regex_search(cli({"flush", "--help"}).out, std::regex("--gauge-ttl[^\\n]*\\n?[^-]*seconds\\s+from\\s+0\\.001\\s+to\\s+604800")));
    // A bad segment name: a failure (1), said once, without a second prefix.
    const auto r = cli({"flush", "bad name", "--once", "--redis", "127.0.0.1:1"});
    INFO(r.err);
    CHECK(r.status == 1);
    CHECK(r.err == "procsafe flush: segment 'bad name': a segment name has only letters, digits, '_', '-' and '.': invalid name\n");
#endif
}

TEST_CASE("Bad input: one line on stderr naming the segment or argument, exit 1", "[tools]") {
    const std::string missing = unique_name("missing");
    for (const char* cmd : {"show", "watch", "export"}) {
        INFO(cmd);
        check_failure(cli({cmd, missing}), "^procsafe " + std::string(cmd) + ": segment '" + missing + "' not found\n$");
    }
    check_failure(cli({"show", "no/slash"}), "'no/slash' is not a valid segment name");
    check_failure(cli({"show", "9lives"}), "'9lives' is not a valid segment name");

    const std::string foreign = unique_name("foreign");
    raw_shm(foreign, 4096, 0xab);
    check_failure(cli({"show", foreign}), "^procsafe show: '" + foreign + "' is not a procsafe segment\n$");
    check_failure(cli({"export", foreign}), "'" + foreign + "' is not a procsafe segment");
    check_failure(cli({"rm", foreign}), "is not a procsafe segment: not removed \\(--force");
    CHECK(std::filesystem::exists("/dev/shm/" + foreign));
    CHECK(cli({"rm", "--force", foreign}).status == 0);
    CHECK_FALSE(std::filesystem::exists("/dev/shm/" + foreign));
    check_failure(cli({"rm", missing}), "segment '" + missing + "' not found");

    sample_segment s(unique_name("badin"));
    check_failure(cli({"export", s.name, "--format", "openmetrics"}), "unknown --format 'openmetrics' \\(known: prometheus\\)");
    check_failure(cli({"export", s.name, missing}), "segment '" + missing + "' not found");
    check_failure(cli({"export", s.name, "--output", "/nonexistent-dir/x.prom"}), "cannot write '/nonexistent-dir/x.prom'");
    for (const char* listen : {"127.0.0.1", "127.0.0.1:99999", "127.0.0.1:http", ":9464", "::1:9464", "no-such-host.invalid:9464"}) {
        INFO(listen);
        check_failure(cli({"serve", s.name, "--listen", listen}), "bad --listen address '" + std::regex_replace(listen, std::regex("[.]"), "\\.") + "'");
    }
    check_failure(cli({"serve", "bad name"}), "'bad name' is not a valid segment name");

    // A port in use: bound and listened on here (SO_REUSEADDR only, as the server does).
    const int sock = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(sock, 1) == 0);
    REQUIRE(::getsockname(sock, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    const std::string busy = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    check_failure(cli({"serve", s.name, "--listen", busy}, 10s), "cannot listen on " + busy + ": Address already in use");
    ::close(sock);
}

TEST_CASE("procsafe show: every object, its value(s), help and unit", "[tools]") {
    sample_segment s(unique_name("show"));
    const auto r = cli({"show", s.name});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());
    CHECK(std::regex_search(r.out, std::regex("^segment " + s.name + ": 1\\.0 MiB, 8 objects using [0-9.]+ KiB, owner [^ ]+ 0600, created [0-9-]+ [0-9:]+ by pid " +
                                              std::to_string(::getpid()) + " \\(alive\\)\n\n")));
    CHECK(has_line(r.out, "NAME +TYPE +METRIC +VALUE +UNIT +HELP"));
    CHECK(has_line(r.out, "requests +sharded_counter<int64> +counter +1000 +Requests handled\\."));
    CHECK(has_line(r.out, "responses +atomic_counter_array<int64> +counter +Responses by status code\\."));
    CHECK(has_line(r.out, "  code=\"200\" +900"));
    CHECK(has_line(r.out, "  code=\"404\" +90"));
    CHECK(has_line(r.out, "  code=\"500\" +10"));
    CHECK(has_line(r.out, "request_seconds +histogram +histogram +seconds +Request latency\\."));
    CHECK(has_line(r.out, "  le=\"0\\.01\" +3"));
    CHECK(has_line(r.out, "  le=\"0\\.1\" +5"));
    CHECK(has_line(r.out, "  le=\"1\" +5"));
    CHECK(has_line(r.out, "  le=\"\\+Inf\" +6"));
    CHECK(has_line(r.out, "  sum +4\\.1484375"));
    CHECK(has_line(r.out, "  count +6"));
    CHECK(has_line(r.out, "jobs +mutex_counter<int64> +counter +7 +Jobs run\\."));
    CHECK(has_line(r.out, "  recoveries +0"));
    CHECK(has_line(r.out, "sent +atomic_counter<uint64> +counter +1500 +bytes +Bytes sent\\."));
    CHECK(has_line(r.out, "busy +live_gauge<int64> +gauge +2 +Workers busy\\."));
    CHECK(has_line(r.out, "  live_processes +1"));
    CHECK(has_line(r.out, "ready +latch +gauge +3 +Workers still starting\\."));
    CHECK(has_line(r.out, "temperature +atomic_counter<float64> +gauge +21\\.5 +celsius +Room temperature\\."));
}

TEST_CASE("procsafe show: the object count in words, singular for one", "[tools]") {
    const std::string name = unique_name("count");
    auto seg = procsafe::segment::create(name, 1 << 16);  // its owner removes it
    seg.construct<procsafe::atomic_counter<long>>("only");
    const auto r = cli({"show", name});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(std::regex_search(r.out, std::regex("^segment " + name + ": [0-9]+ KiB, 1 object using ")));
}

TEST_CASE("procsafe show --json reads back with the exact values", "[tools]") {
    sample_segment s(unique_name("showjson"));
    const auto r = cli({"show", s.name, "--json"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    const json j = json::parse(r.out);
    CHECK(j.at("segment").at("name") == s.name);
    CHECK(j.at("segment").at("objects") == 8);
    CHECK(j.at("segment").at("mode") == "0600");
    CHECK(j.at("segment").at("creator_pid") == ::getpid());
    CHECK(j.at("segment").at("creator_alive") == true);
    const json& objects = j.at("objects");
    REQUIRE(objects.size() == 8);
    CHECK(find_named(objects, "requests").at("value") == 1000);
    CHECK(find_named(objects, "requests").at("kind") == "sharded_counter");
    CHECK(find_named(objects, "requests").at("status") == "ready");
    CHECK(find_named(objects, "requests").at("help") == "Requests handled.");
    const json responses = find_named(objects, "responses");
    CHECK(responses.at("label") == "code");
    REQUIRE(responses.at("elements").size() == 3);
    CHECK(responses.at("elements")[1].at("label_value") == "404");
    CHECK(responses.at("elements")[1].at("value") == 90);
    const json h = find_named(objects, "request_seconds").at("histogram");
    CHECK(h.at("count") == 6);
    CHECK(h.at("sum") == 4.1484375);
    REQUIRE(h.at("buckets").size() == 4);
    CHECK(h.at("buckets")[0].at("le") == 0.01);
    CHECK(h.at("buckets")[0].at("count") == 3);
    CHECK(h.at("buckets")[3].at("le") == "+Inf");
    CHECK(h.at("buckets")[3].at("cumulative") == 6);
    CHECK(find_named(objects, "request_seconds").at("unit") == "seconds");
    CHECK(find_named(objects, "jobs").at("details").at("recoveries") == 0);
    CHECK(find_named(objects, "sent").at("value") == 1500u);
    CHECK(find_named(objects, "busy").at("value") == 2);
    CHECK(find_named(objects, "ready").at("metric") == "gauge");
    CHECK(find_named(objects, "temperature").at("value") == 21.5);
}

namespace {
/// An object whose constructor never returns: its process is killed in it.
struct never_constructed {
    never_constructed() {
        for (;;) ::pause();
    }
    int value = 0;
};
}  // namespace

TEST_CASE("procsafe show: an object being constructed, and one whose constructor died", "[tools]") {
    sample_segment s(unique_name("status"));
    const auto pids = fork_children(1, [&](int) {
        s.seg.construct<never_constructed>("stuck");
        return 0;
    });
    REQUIRE(pids.size() == 1);
    auto status_of_stuck = [&] {
        const auto r = cli({"show", s.name, "--json"});
        if (r.status != 0) return std::string("show failed: ") + r.err;
        const json j = json::parse(r.out);
        for (const auto& o : j.at("objects"))
            if (o.at("name") == "stuck") return o.at("status").get<std::string>();
        return std::string("absent");
    };
    std::string status;
    for (auto deadline = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < deadline;) {
        if ((status = status_of_stuck()) == "constructing") break;
        std::this_thread::sleep_for(10ms);
    }
    CHECK(status == "constructing");
    CHECK(has_line(cli({"show", s.name}).out, "stuck +user type \\([0-9]+ bytes\\) +- +\\(constructing\\)"));
    ::kill(pids[0], SIGKILL);
    wait_bounded(pids[0], 10s);
    CHECK(status_of_stuck() == "constructor_died");
    const auto r = cli({"show", s.name});
    INFO(r.out);
    CHECK(has_line(r.out, "stuck +user type \\([0-9]+ bytes\\) +- +\\(constructor died\\)"));
    CHECK(has_line(r.out, "requests +sharded_counter<int64> +counter +1000 +Requests handled\\."));  // the others as before
    const auto e = cli({"export", s.name});
    CHECK(e.status == 0);
    CHECK(std::regex_search(e.err, std::regex("object 'stuck': not constructed \\(yet\\): left out")));
}

TEST_CASE("procsafe list: the segments and their facts, foreign objects only with --all", "[tools]") {
    sample_segment s(unique_name("list"), 0640);
    const std::string foreign = unique_name("listforeign");
    raw_shm(foreign, 8192, 0x5a);
    struct cleanup {
        std::string name;
        ~cleanup() { ::shm_unlink(("/" + name).c_str()); }
    } rm_foreign{foreign};

    auto r = cli({"list"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(has_line(r.out, "SEGMENT +STATUS +SIZE +USED +OBJECTS +OWNER +MODE +CREATOR +CREATED"));
    CHECK(has_line(r.out, s.name + " +ok +1\\.0 MiB +[0-9.]+ KiB +8 +[a-z0-9]+:[a-z0-9]+ +0640 +" + std::to_string(::getpid()) + " \\(alive\\) +[0-9-]+ [0-9:]+"));
    CHECK(r.out.find(foreign) == std::string::npos);

    r = cli({"list", "--all"});
    CHECK(r.status == 0);
    CHECK(has_line(r.out, foreign + " +not procsafe +8\\.0 KiB .*"));

    r = cli({"list", "--json", "--all"});
    REQUIRE(r.status == 0);
    const json j = json::parse(r.out);
    const json mine = find_named(j, s.name);
    CHECK(mine.at("status") == "ok");
    CHECK(mine.at("objects") == 8);
    CHECK(mine.at("size") == s.seg.size());
    CHECK(mine.at("bytes_used").get<std::size_t>() > 0);
    CHECK(mine.at("bytes_used").get<std::size_t>() < s.seg.size());
    CHECK(mine.at("mode") == "0640");
    CHECK(mine.at("uid") == ::geteuid());
    CHECK(mine.at("creator_pid") == ::getpid());
    CHECK(mine.at("creator_alive") == true);
    const json other = find_named(j, foreign);
    CHECK(other.at("status") == "not_procsafe");
    CHECK(other.at("error").get<std::string>().find("not a procsafe segment") != std::string::npos);
}

TEST_CASE("procsafe export: the Prometheus text format, passing promtool", "[tools]") {
    sample_segment a(unique_name("expa"));
    sample_segment b(unique_name("expb"), 0600, 24);
    b.seg.construct<std::array<int, 4>>("opaque");  // a user type: left out, with a warning

    const auto r = cli({"export", a.name, b.name, "--format", "prometheus"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    const std::string& t = r.out;
    // One family per metric, both segments' samples in it.
    CHECK(std::count(t.begin(), t.end(), '#') == 2 * 8);
    CHECK(has_line(t, "# HELP requests_total Requests handled\\."));
    CHECK(has_line(t, "# TYPE requests_total counter"));
    CHECK(has_line(t, "requests_total\\{segment=\"" + a.name + "\"\\} 1000"));
    CHECK(has_line(t, "requests_total\\{segment=\"" + b.name + "\"\\} 24"));
    CHECK(has_line(t, "responses_total\\{segment=\"" + a.name + "\",code=\"404\"\\} 90"));
    CHECK(has_line(t, "# TYPE request_seconds histogram"));
    CHECK(has_line(t, "request_seconds_bucket\\{segment=\"" + a.name + "\",le=\"0\\.1\"\\} 5"));
    CHECK(has_line(t, "request_seconds_bucket\\{segment=\"" + a.name + "\",le=\"\\+Inf\"\\} 6"));
    CHECK(has_line(t, "request_seconds_sum\\{segment=\"" + a.name + "\"\\} 4\\.1484375"));
    CHECK(has_line(t, "request_seconds_count\\{segment=\"" + a.name + "\"\\} 6"));
    CHECK(has_line(t, "jobs_total\\{segment=\"" + a.name + "\"\\} 7"));
    CHECK(has_line(t, "sent_bytes_total\\{segment=\"" + a.name + "\"\\} 1500"));
    CHECK(has_line(t, "# TYPE busy gauge"));
    CHECK(has_line(t, "temperature_celsius\\{segment=\"" + a.name + "\"\\} 21\\.5"));
    CHECK(t.find("opaque") == std::string::npos);
    // No timestamps: every sample line is NAME{LABELS} VALUE.
    for (const auto& line : [&] {
             std::vector<std::string> v;
             std::istringstream in(t);
             for (std::string l; std::getline(in, l);) v.push_back(l);
             return v;
         }()) {
        if (line.empty() || line[0] == '#') continue;
        CHECK(std::regex_match(line, std::regex("[a-z_]+\\{[^}]*\\} [^ ]+")));
    }
    CHECK(line_count(r.err) == 1);
    CHECK(std::regex_search(r.err, std::regex("^procsafe export: warning: segment '" + b.name + "': object 'opaque': a user type: left out\n$")));
    check_exposition(t);

    // A segment named twice is exported once (its series twice would be invalid).
    const auto twice = cli({"export", a.name, a.name});
    CHECK(twice.status == 0);
    CHECK(matches(twice.out, "requests_total\\{segment=\"" + a.name + "\"\\} 1000\n") == 1);

    // --allow-missing: a missing segment is left out, with a warning.
    const std::string missing = unique_name("expmissing");
    const auto m = cli({"export", a.name, missing, "--allow-missing"});
    CHECK(m.status == 0);
    CHECK(has_line(m.out, "requests_total\\{segment=\"" + a.name + "\"\\} 1000"));
    CHECK(std::regex_search(m.err, std::regex("warning: segment '" + missing + "' not found: left out")));
    check_exposition(m.out);
}

TEST_CASE("procsafe export --output: the file appears by rename, never partly written", "[tools]") {
    sample_segment s(unique_name("atomic"));
    temp_dir dir;
    const std::string file = dir / "procsafe.prom";
    write_file(file, "# an older file\n");
    struct stat before {};
    REQUIRE(::stat(file.c_str(), &before) == 0);

    // inotify sees every step made in the directory: the target's name must
    // only ever arrive by a rename (IN_MOVED_TO), never be created, opened
    // for writing or written in place.
    const int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    REQUIRE(in >= 0);
    REQUIRE(::inotify_add_watch(in, dir.path().c_str(), IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_OPEN) >= 0);
    constexpr int exports = 5;
    for (int i = 0; i < exports; ++i) REQUIRE(cli({"export", s.name, "--output", file}).status == 0);

    int renamed_in = 0, touched_in_place = 0, temporaries = 0;
    alignas(inotify_event) char buf[65536];
    for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;) {
        for (char* p = buf; p < buf + n;) {
            const auto* ev = reinterpret_cast<const inotify_event*>(p);
            const std::string name = ev->len > 0 ? ev->name : "";
            if (name == "procsafe.prom") {
                if (ev->mask & IN_MOVED_TO) ++renamed_in;
                if (ev->mask & (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE)) ++touched_in_place;
            } else if (ev->mask & IN_CREATE) {
                ++temporaries;
                CHECK(name.rfind(".procsafe.prom.", 0) == 0);  // a dot file next to it
            }
            p += sizeof(inotify_event) + ev->len;
        }
    }
    ::close(in);
    CHECK(renamed_in == exports);
    CHECK(touched_in_place == 0);
    CHECK(temporaries == exports);

    // Nothing left behind but the file; another inode than before; readable
    // by the collector (0644 under the usual umask); what stdout gets.
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) names.push_back(e.path().filename().string());
    CHECK(names == std::vector<std::string>{"procsafe.prom"});
    struct stat after {};
    REQUIRE(::stat(file.c_str(), &after) == 0);
    CHECK(after.st_ino != before.st_ino);
    const mode_t mask = ::umask(0);
    ::umask(mask);
    CHECK((after.st_mode & 0777) == (0666 & ~mask));
    CHECK(read_file(file) == cli({"export", s.name}).out);
    check_exposition(read_file(file));
}

TEST_CASE("procsafe watch: values and rates as plain lines, a bounded number of refreshes", "[tools]") {
    sample_segment s(unique_name("watch"));
    const auto r = cli({"watch", s.name, "--interval", "0.05", "--count", "3"}, 20s);
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(has_line(r.out, "# procsafe watch " + s.name + ": time, series, value, rate per second"));
    const std::string t = "[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}";
    // The first refresh has no rate yet; the next ones do.
    CHECK(std::regex_search(r.out, std::regex(t + " +requests +1000 +-\n")));
    CHECK(std::regex_search(r.out, std::regex(t + " +requests +1000 +0\\.0\n")));
    CHECK(std::regex_search(r.out, std::regex(t + " +responses\\{code=\"404\"\\} +90 +0\\.0\n")));
    CHECK(std::regex_search(r.out, std::regex(t + " +request_seconds_count +6 +0\\.0\n")));
    CHECK(std::regex_search(r.out, std::regex(t + " +request_seconds_sum +4\\.1484375 +0\\.0\n")));
    CHECK(matches(r.out, "requests +1000") == 3);
}

TEST_CASE("procsafe watch: rates follow the increments", "[tools]") {
    sample_segment s(unique_name("rate"));
    auto& requests = s.seg.find<procsafe::sharded_counter<std::int64_t>>("requests");
    temp_dir dir;
    background w({procsafe_cli, "watch", s.name, "--interval", "0.3"}, dir / "watch");
    REQUIRE(w.wait_for("requests +1000 +-\n"));
    requests.add(600);
    REQUIRE(w.wait_for("requests +1600 +[0-9.]+\n"));
    CHECK(w.stop(SIGINT) == 0);

    // The rate is the change over the time between the two refreshes, as
    // their own time stamps say (to the millisecond).
    const std::regex line("([0-9]{2}):([0-9]{2}):([0-9]{2}\\.[0-9]{3}) +requests +([0-9]+) +([-0-9.]+)\n");
    const std::string out = w.out();
    double previous_time = -1;
    bool checked = false;
    for (auto it = std::sregex_iterator(out.begin(), out.end(), line); it != std::sregex_iterator(); ++it) {
        const auto& m = *it;
        const double t = std::stod(m[1]) * 3600 + std::stod(m[2]) * 60 + std::stod(m[3]);
        if (m[4] == "1600" && !checked) {
            REQUIRE(previous_time >= 0);
            const double expected = 600 / (t - previous_time);
            INFO(out << "expected about " << expected);
            CHECK(std::abs(std::stod(m[5]) - expected) <= 0.05 * expected + 1);
            checked = true;
        }
        previous_time = t;
    }
    CHECK(checked);
}

TEST_CASE("procsafe watch follows its segment through removal and recreation", "[tools]") {
    const std::string name = unique_name("rewatch");
    std::optional<sample_segment> s(std::in_place, name);
    temp_dir dir;
    background w({procsafe_cli, "watch", name, "--interval", "0.05"}, dir / "watch");
    REQUIRE(w.wait_for("requests +1000 +"));

    s.reset();  // its creator removes it
    REQUIRE(w.wait_for("# [0-9:.]+ segment '" + name + "' is missing \\(removed\\); waiting for it to come back\n"));
    // Not synchronization: a window in which watch refreshes (every 50 ms)
    // while the segment is missing, to show it says so once however many
    // refreshes pass. Any length keeps the test correct; a shorter one tests less.
    std::this_thread::sleep_for(300ms);
    s.emplace(name, 0600, 77);
    const auto back = w.wait_for("# [0-9:.]+ segment '" + name + "' was recreated: re-attached \\(values and rates start over\\)\n");
    REQUIRE(back);
    REQUIRE(w.wait_for("requests +77 +-\n"));  // the new segment's value, its rate started over
    REQUIRE(w.wait_for("requests +77 +0\\.0\n"));
    const std::string out = w.out();
    CHECK(std::count(out.begin(), out.end(), '#') == 3);  // the header, missing once, re-attached once
    CHECK(w.stop(SIGTERM) == 0);
}

TEST_CASE("procsafe watch on a terminal redraws its table in place", "[tools]") {
    sample_segment s(unique_name("tty"));
    int master = -1;
    winsize ws{};
    ws.ws_row = 40;
    ws.ws_col = 100;
    std::fflush(nullptr);
    const pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const std::string interval = "0.05";
        ::execl(procsafe_cli.c_str(), procsafe_cli.c_str(), "watch", s.name.c_str(), "--interval", interval.c_str(), "--count", "3",
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    std::string screen;
    char buf[4096];
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
        pollfd p{master, POLLIN, 0};
        if (std::chrono::steady_clock::now() > deadline || ::poll(&p, 1, 1000) < 0) break;
        if (p.revents == 0) continue;
        const ssize_t n = ::read(master, buf, sizeof buf);
        if (n <= 0) break;  // EIO: the child closed the terminal
        screen.append(buf, static_cast<std::size_t>(n));
    }
    ::close(master);
    CHECK(exited_ok(wait_bounded(pid, 10s)));
    INFO(screen);
    CHECK(screen.rfind("\x1b[2J\x1b[H", 0) == 0);  // cleared once
    CHECK(matches(screen, "\x1b\\[H") == 3);  // then each refresh drawn over the last
    CHECK(screen.find("procsafe watch " + s.name) != std::string::npos);
    CHECK(std::regex_search(screen, std::regex("NAME +VALUE +RATE/s")));
    CHECK(std::regex_search(screen, std::regex("requests +1000 +0\\.0\x1b\\[K")));
    CHECK(screen.find("# procsafe watch") == std::string::npos);  // not the plain form
}

TEST_CASE("procsafe serve: /metrics per scrape, segments that come, go and come back", "[tools]") {
    sample_segment present(unique_name("srv"));
    const std::string later = unique_name("srvlater");
    temp_dir dir;
    background srv({procsafe_cli, "serve", present.name, later, "--listen", "127.0.0.1:0"}, dir / "serve");
    const auto listening = srv.wait_for("^listening on 127\\.0\\.0\\.1:([0-9]+)\n");
    REQUIRE(listening);
    const int port = std::stoi((*listening)[1]);
    REQUIRE(srv.wait_for("segment '" + later + "' not found \\(yet\\): left out of /metrics until it appears", 10s, true));

    auto res = http_get(port, "/metrics");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Content-Type") == procsafe::prometheus_exposition::content_type);
    CHECK(res->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(has_line(res->body, "requests_total\\{segment=\"" + present.name + "\"\\} 1000"));
    // The one that cannot be read is named, in a comment, not in a sample.
    CHECK(has_line(res->body, "# procsafe serve: segment '" + later + "' left out: not found"));
    CHECK(matches(res->body, later) == 1);
    check_exposition(res->body);

    res = http_get(port, "/");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->body.find("/metrics") != std::string::npos);
    CHECK(line_count(res->body) == 1);
    res = http_get(port, "/nothing-here");
    REQUIRE(res);
    CHECK(res->status == 404);

    {
        // Appears after the exporter started: picked up at the next scrape.
        sample_segment l(later, 0600, 5);
        res = http_get(port, "/metrics");
        REQUIRE(res);
        CHECK(has_line(res->body, "requests_total\\{segment=\"" + later + "\"\\} 5"));
        check_exposition(res->body);
    }  // removed
    res = http_get(port, "/metrics");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(has_line(res->body, "# procsafe serve: segment '" + later + "' left out: not found"));
    CHECK(has_line(res->body, "requests_total\\{segment=\"" + present.name + "\"\\} 1000"));
    {
        sample_segment l(later, 0600, 6);  // recreated, as by a restarted server
        res = http_get(port, "/metrics");
        REQUIRE(res);
        CHECK(has_line(res->body, "requests_total\\{segment=\"" + later + "\"\\} 6"));
    }
    const std::string log = srv.err();
    INFO(log);
    CHECK(has_line(log, "procsafe serve: segment '" + present.name + "': serving it"));
    CHECK(has_line(log, "procsafe serve: segment '" + later + "': serving it"));
    CHECK(has_line(log, "procsafe serve: segment '" + later + "' was removed: left out of /metrics until it is back"));
    CHECK(has_line(log, "procsafe serve: segment '" + later + "' was recreated: serving the new one"));
    CHECK(srv.stop(SIGTERM) == 0);
}

TEST_CASE("procsafe serve: logs a warning once, and past its bound says once that the rest are not logged", "[tools]") {
    const std::string name = unique_name("warn");
    auto seg = procsafe::segment::create(name, 32 << 20, 0600);  // removed when it goes
    constexpr int objects = 10'005;  // each a user type: a warning at each scrape
    for (int i = 0; i < objects; ++i) seg.construct<std::array<int, 2>>("opaque" + std::to_string(i));
    temp_dir dir;
    background srv({procsafe_cli, "serve", name, "--listen", "127.0.0.1:0"}, dir / "serve");
    const auto listening = srv.wait_for("^listening on 127\\.0\\.0\\.1:([0-9]+)\n");
    REQUIRE(listening);
    const int port = std::stoi((*listening)[1]);
    for (int scrape = 0; scrape < 3; ++scrape) {
        const auto res = http_get(port, "/metrics");  // the server logs before it answers
        REQUIRE(res);
        CHECK(res->status == 200);
    }
    const std::string log = srv.err();
    CHECK(matches(log, "\nprocsafe serve: warning: segment '" + name + "': object 'opaque[0-9]+': a user type: left out") == 10'000);
    CHECK(matches(log, "\nprocsafe serve: warning: 10000 distinct warnings logged: further ones are not logged\n") == 1);
    CHECK(srv.stop(SIGTERM) == 0);
}

namespace {

/// A client of the server under test that holds a connection: it dribbles
/// a request's head one byte every 0.9 s, or sends a whole request and then
/// stays idle, or never sends anything. closed() says whether the server
/// hung up on it.
class slow_client {
public:
    enum class kind { dribble, keep_alive, idle, no_body };

    slow_client(int port, kind k) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        if (!connected_) return;
        if (k == kind::keep_alive || k == kind::no_body) {
            const std::string request = k == kind::keep_alive
                                            ? "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                                            : "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n";  // no body, ever
            connected_ = ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size());
        }
        if (k == kind::dribble) thread_ = std::thread([this] { dribble(); });
    }
    ~slow_client() {
        {
            const std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
        ::close(fd_);
    }
    slow_client(const slow_client&) = delete;
    slow_client& operator=(const slow_client&) = delete;

    bool connected() const { return connected_; }
    bool closed() const { return closed_.load(); }

private:
    void dribble() {
        const std::string head = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(200, 'a');
        for (std::size_t i = 0;; i = (i + 1) % head.size()) {
            if (::send(fd_, &head[i], 1, MSG_NOSIGNAL) != 1) break;
            // The pace of the attack, not synchronization: 0.9 s between
            // bytes (below the server's old 1 s read timeout), cut short
            // when the test ends.
            std::unique_lock lock(mutex_);
            if (wake_.wait_for(lock, 900ms, [&] { return stop_; })) return;
            lock.unlock();
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 0) > 0) {  // the server answered (408, 400) or hung up: either ends the attack
                char buf[256];
                while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) > 0) {
                }
                break;
            }
        }
        closed_ = true;
    }

    int fd_;
    bool connected_ = false;
    std::atomic<bool> closed_{false};
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
};

}  // namespace

TEST_CASE("procsafe serve: a scrape is answered while slow, idle and bodiless clients hold connections", "[tools]") {
    sample_segment s(unique_name("slow"));
    temp_dir dir;
    background srv({procsafe_cli, "serve", s.name, "--listen", "127.0.0.1:0"}, dir / "serve");
    const auto listening = srv.wait_for("^listening on 127\\.0\\.0\\.1:([0-9]+)\n");
    REQUIRE(listening);
    const int port = std::stoi((*listening)[1]);

    // Connected first, so that they are accepted first: more dribblers than
    // the server once had worker threads (4), keep-alive connections, idle ones.
    std::vector<std::unique_ptr<slow_client>> clients;
    for (int i = 0; i < 6; ++i) clients.push_back(std::make_unique<slow_client>(port, slow_client::kind::dribble));
    for (int i = 0; i < 8; ++i) clients.push_back(std::make_unique<slow_client>(port, slow_client::kind::keep_alive));
    for (int i = 0; i < 100; ++i) clients.push_back(std::make_unique<slow_client>(port, slow_client::kind::idle));
    // Whole heads that announce a body they never send (twice the workers).
    for (int i = 0; i < 16; ++i) clients.push_back(std::make_unique<slow_client>(port, slow_client::kind::no_body));
    for (const auto& c : clients) REQUIRE(c->connected());

    for (int scrape = 0; scrape < 3; ++scrape) {
        const auto start = std::chrono::steady_clock::now();
        const auto res = http_get(port, "/metrics");  // gives up after 5 s
        const auto took = std::chrono::steady_clock::now() - start;
        INFO("scrape " << scrape << " took " << std::chrono::duration<double>(took).count() << " s");
        REQUIRE(res);
        CHECK(res->status == 200);
        CHECK(has_line(res->body, "requests_total\\{segment=\"" + s.name + "\"\\} 1000"));
        CHECK(took < 5s);
    }
    // A request's head has a deadline: the dribblers are hung up on.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    bool all_closed = false;
    while (!all_closed && std::chrono::steady_clock::now() < deadline) {
        all_closed = std::all_of(clients.begin(), clients.begin() + 6, [](const auto& c) { return c->closed(); });
        pollfd none{-1, 0, 0};
        ::poll(&none, 1, 50);  // a bounded poll of the clients' state, not synchronization
    }
    CHECK(all_closed);
    clients.clear();
    CHECK(srv.stop(SIGTERM) == 0);
}

TEST_CASE("procsafe rm removes a segment, processes that map it keep it", "[tools]") {
    sample_segment s(unique_name("rm"));
    const auto r = cli({"rm", s.name});
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    CHECK(r.err.empty());
    CHECK_THROWS_AS(procsafe::segment_view::open(s.name), procsafe::error);
    CHECK(s.seg.find<procsafe::sharded_counter<std::int64_t>>("requests").sum() == 1000);
    CHECK(s.seg.is_stale());
}

TEST_CASE("procsafe show and list as another user: read permission is enough, and its absence is said", "[tools][root]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to run the command as another user");
    const run_as nobody{65534, 65534};
    sample_segment open_to_all(unique_name("world"), 0644);
    sample_segment mine_only(unique_name("private"), 0600);

    auto r = run({procsafe_cli, "show", open_to_all.name}, 30s, {}, nobody);
    INFO(r.out << r.err);
    CHECK(r.status == 0);
    CHECK(has_line(r.out, "requests +sharded_counter<int64> +counter +1000 +Requests handled\\."));

    r = run({procsafe_cli, "show", mine_only.name}, 30s, {}, nobody);
    check_failure(r, "^procsafe show: segment '" + mine_only.name + "': permission denied");

    r = run({procsafe_cli, "list"}, 30s, {}, nobody);
    CHECK(r.status == 0);
    CHECK(has_line(r.out, open_to_all.name + " +ok .*"));
    CHECK(has_line(r.out, mine_only.name + " +no permission +1\\.0 MiB .* root:root +0600 .*"));

    r = run({procsafe_cli, "rm", open_to_all.name}, 30s, {}, nobody);  // /dev/shm is sticky: only its owner removes it
    check_failure(r, "segment '" + open_to_all.name + "': permission denied");
}

TEST_CASE("A FIFO, a socket or a link under /dev/shm: list, show, export and rm answer at once, naming it", "[tools][hostile]") {
    planted fifo(unique_name("fifo"));
    REQUIRE(::mkfifo(("/dev/shm/" + fifo.name).c_str(), 0666) == 0);
    // A Unix socket, as any user can bind one there (open() of it fails, ENXIO).
    planted sock(unique_name("sock"));
    const int sock_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(sock_fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string sock_path = "/dev/shm/" + sock.name;
    REQUIRE(sock_path.size() < sizeof addr.sun_path);
    std::copy(sock_path.begin(), sock_path.end(), addr.sun_path);
    REQUIRE(::bind(sock_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_sock{sock_fd};
    sample_segment target(unique_name("linked"));
    planted link(unique_name("link"));
    REQUIRE(::symlink(("/dev/shm/" + target.name).c_str(), ("/dev/shm/" + link.name).c_str()) == 0);

    // A command that blocks in open() is killed at the limit (status -1): a failure, not a hung test.
    const auto listed = cli({"list"}, 10s);
    INFO("list: " << listed.out << listed.err);
    CHECK(listed.status == 0);
    CHECK(std::regex_search(listed.err, std::regex("'" + fifo.name + "' is not a procsafe segment: a FIFO, not a shared memory object.*skipped")));
    CHECK(std::regex_search(listed.err, std::regex("'" + sock.name + "' is not a procsafe segment: a socket, not a shared memory object.*skipped")));
    CHECK(std::regex_search(listed.err, std::regex("'" + link.name + "' is not a procsafe segment: a symbolic link.*skipped")));
    CHECK(listed.err.find("shm_open") == std::string::npos);
    CHECK(has_line(listed.out, target.name + " +ok .*"));
    // Skipped: no row, with --all or --json either.
    for (const auto& args : {std::vector<std::string>{"list"}, std::vector<std::string>{"list", "--all"}}) {
        const auto r = cli(args, 10s);
        for (const auto* p : {&fifo, &sock, &link}) CHECK(r.out.find(p->name) == std::string::npos);
    }
    for (const auto& args : {std::vector<std::string>{"list", "--json"}, std::vector<std::string>{"list", "--json", "--all"}}) {
        const auto r = cli(args, 10s);
        INFO(r.out << r.err);
        REQUIRE(r.status == 0);
        for (const auto& e : json::parse(r.out)) {
            CHECK(e.at("name") != fifo.name);
            CHECK(e.at("name") != sock.name);
            CHECK(e.at("name") != link.name);
        }
    }
    for (const auto* p : {&fifo, &sock, &link}) {
        const std::string what = p == &fifo ? "a FIFO" : p == &sock ? "a socket" : "a symbolic link";
        for (const char* cmd : {"show", "export", "rm"}) {
            INFO(cmd << " " << p->name);
            const auto r = cli({cmd, p->name}, 10s);
            check_failure(r, "^procsafe " + std::string(cmd) + ": '" + p->name + "' is not a procsafe segment: " + what);
        }
    }
    CHECK(std::filesystem::is_symlink("/dev/shm/" + link.name));  // rm refused it
    CHECK(std::filesystem::is_socket("/dev/shm/" + sock.name));
    CHECK(cli({"show", target.name}, 10s).status == 0);
}

TEST_CASE("procsafe show and export of a segment whose owner rewrote its strings: escaped, left out, valid JSON",
          "[tools][hostile]") {
    const std::string attack = "\x1b[2J\x1b]0;pwned\x07";
    sample_segment s(unique_name("rewritten"));
    s.seg.construct<procsafe::atomic_counter<int>>(std::string(attack.size(), 'n'), 5);
    s.seg.construct<procsafe::atomic_counter<int>>("helped", procsafe::metadata{.help = "HELPHELP"}, 6);
    rewrite(s.seg, std::string(attack.size(), 'n'), attack);
    rewrite(s.seg, "HELPHELP", "HE\xff\xfeHELP");

    const auto shown = cli({"show", s.name});
    INFO(shown.out << shown.err);
    CHECK(shown.status == 0);
    CHECK(shown.out.find('\x1b') == std::string::npos);
    CHECK(shown.out.find('\x07') == std::string::npos);
    CHECK(shown.out.find("\\x1b[2J\\x1b]0;pwned\\x07") != std::string::npos);
    CHECK(shown.out.find("(corrupt)") != std::string::npos);
    CHECK(shown.out.find("\xff") == std::string::npos);
    // The note (the object's offset and why) is a line of its own: the NAME
    // column stays as wide as the names (it was padded to the note's width).
    CHECK(has_line(shown.out, "  note: the object at offset [0-9]+ has a corrupt name or metadata .*"));
    const auto header = shown.out.find("\nNAME ");
    REQUIRE(header != std::string::npos);
    CHECK(shown.out.find("TYPE", header) - header < 40);

    const auto js = cli({"show", "--json", s.name});
    INFO(js.out << js.err);
    REQUIRE(js.status == 0);
    const json j = json::parse(js.out);
    CHECK(find_named(j.at("objects"), "helped").at("status") == "corrupt");
    CHECK(find_named(j.at("objects"), "requests").at("status") == "ready");

    const auto exp = cli({"export", s.name});
    INFO(exp.out << exp.err);
    CHECK(exp.status == 0);
    CHECK(exp.out.find("helped") == std::string::npos);
    CHECK(exp.out.find("pwned") == std::string::npos);
    CHECK(has_line(exp.out, "requests_total\\{segment=\"" + s.name + "\"\\} 1000"));
    CHECK(exp.err.find('\x1b') == std::string::npos);
    CHECK(exp.err.find("corrupt name or metadata") != std::string::npos);
    check_exposition(exp.out);
}

TEST_CASE("procsafe serve: 503 while none of its segments can be read, naming each; 200 once one can", "[tools]") {
    const std::string a = unique_name("srvnone"), b = unique_name("srvnone2");
    temp_dir dir;
    background srv({procsafe_cli, "serve", a, b, "--listen", "127.0.0.1:0"}, dir / "serve");
    const auto listening = srv.wait_for("^listening on 127\\.0\\.0\\.1:([0-9]+)\n");
    REQUIRE(listening);
    const int port = std::stoi((*listening)[1]);

    // Prometheus's `up` must go to 0: an error status, not an empty 200.
    auto res = http_get(port, "/metrics");
    REQUIRE(res);
    CHECK(res->status == 503);
    CHECK(has_line(res->body, "# procsafe serve: segment '" + a + "' left out: not found"));
    CHECK(has_line(res->body, "# procsafe serve: segment '" + b + "' left out: not found"));
    CHECK(line_count(res->body) == 2);
    {
        sample_segment s(a, 0600, 3);
        res = http_get(port, "/metrics");
        REQUIRE(res);
        CHECK(res->status == 200);
        CHECK(has_line(res->body, "requests_total\\{segment=\"" + a + "\"\\} 3"));
        CHECK(has_line(res->body, "# procsafe serve: segment '" + b + "' left out: not found"));
        CHECK(res->body.find("segment '" + a + "' left out") == std::string::npos);
        check_exposition(res->body);
    }
    res = http_get(port, "/metrics");
    REQUIRE(res);
    CHECK(res->status == 503);
    const std::string log = srv.err();
    INFO(log);
    CHECK(has_line(log, "procsafe serve: segment '" + b + "' not found \\(yet\\): left out of /metrics until it appears"));
    CHECK(has_line(log, "procsafe serve: segment '" + a + "' was removed: left out of /metrics until it is back"));
    CHECK(srv.stop(SIGTERM) == 0);
}

TEST_CASE("procsafe serve of two segments, one truncated by its owner: the other is served, the truncated one "
          "reported",
          "[tools][hostile]") {
    sample_segment good(unique_name("srvgood"));
    sample_segment bad(unique_name("srvtrunc"), 0600, 7);
    temp_dir dir;
    background srv({procsafe_cli, "serve", good.name, bad.name, "--listen", "127.0.0.1:0"}, dir / "serve");
    const auto listening = srv.wait_for("^listening on 127\\.0\\.0\\.1:([0-9]+)\n");
    REQUIRE(listening);
    const int port = std::stoi((*listening)[1]);
    REQUIRE(srv.wait_for("segment '" + bad.name + "': serving it", 10s, true));

    // Its owner truncates it under the server's mapping.
    const int fd = ::open(("/dev/shm/" + bad.name).c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);

    const auto res = http_get(port, "/metrics");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(has_line(res->body, "requests_total\\{segment=\"" + good.name + "\"\\} 1000"));
    CHECK(has_line(res->body, "# procsafe serve: segment '" + bad.name + "' left out: .*truncated to 4096 bytes.*"));
    CHECK(res->body.find("segment=\"" + bad.name) == std::string::npos);  // no sample of it
    check_exposition(res->body);
    CHECK(srv.running());
    CHECK(srv.wait_for("segment '" + bad.name + "': incompatible or damaged: truncated to 4096 bytes", 10s, true));
    CHECK(srv.stop(SIGTERM) == 0);
}

TEST_CASE("procsafe export and show as root of a segment another user owns and rewrites after construction: no "
          "series injected, no escape reaches the terminal",
          "[tools][root][hostile]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to act as another user");
    const std::string inject = "a=\"1\"} 666\nnode_load1 1e9\n# x";
    const std::string escape = "\x1b[2J\x1b]0;pwned\x07";
    const std::string label(inject.size(), 'l'), object(escape.size(), 'o');
    planted seg_name(unique_name("otheruid"));
    // The other user (nobody, as `setpriv --reuid 65534` would make it)
    // creates its own 0644 segment, then rewrites its strings in place.
    REQUIRE(create_as_nobody(seg_name.name, [&](procsafe::segment& seg) {
                seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>(
                    "codes", procsafe::metadata{.help = "Codes.", .label = label, .label_values = {"200", "500"}}, 2)[0].fetch_add(3);
                seg.construct<procsafe::atomic_counter<int>>(object, 1);
                seg.construct<procsafe::atomic_counter<int>>("fine_total", 4);
                rewrite(seg, label, inject);
                rewrite(seg, object, escape);
            }) == 0);
    struct stat st {};
    REQUIRE(::stat(("/dev/shm/" + seg_name.name).c_str(), &st) == 0);
    REQUIRE(st.st_uid == 65534u);

    const auto exp = cli({"export", seg_name.name});
    INFO(exp.out << exp.err);
    CHECK(exp.status == 0);
    CHECK(exp.out.find("node_load1") == std::string::npos);
    CHECK(exp.out.find("666") == std::string::npos);
    CHECK(has_line(exp.out, "fine_total\\{segment=\"" + seg_name.name + "\"\\} 4"));
    check_exposition(exp.out);
    const auto shown = cli({"show", seg_name.name});
    INFO(shown.out << shown.err);
    CHECK(shown.out.find('\x1b') == std::string::npos);
    CHECK(shown.err.find('\x1b') == std::string::npos);
    CHECK(shown.out.find('\x07') == std::string::npos);
}
