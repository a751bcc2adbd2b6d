// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The Prometheus text format (0.0.4) of segments: families, names, labels,
// escaping, histograms; every exposition here also passes
// `promtool check metrics` when promtool is installed.
#include "catch.hpp"
#include "support/process.hpp"
#include "support/promtool.hpp"
#include "support/skip.hpp"

#include <procsafe/procsafe.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <cstdio>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using procsafe_test::promtool_check;
using procsafe::prometheus_exposition;

namespace {

bool has_line(const std::string& text, const std::string& line) {
    return text.find(line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("prometheus: every kind of object, as the text format 0.0.4 spells it", "[prometheus]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    seg.construct<procsafe::sharded_counter<std::int64_t>>("requests", procsafe::metadata{.help = "Requests handled."}).increment(42);
    auto& codes = seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>(
        "responses", procsafe::metadata{.help = "Responses.", .label = "code", .label_values = {"200", "404"}}, 2);
    codes[0].increment(40);
    codes[1].increment(2);
    seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>("shards", 2)[1].increment(7);
    auto& h = seg.construct<procsafe::histogram>("request", procsafe::metadata{.help = "Latency.", .unit = "seconds"},
                                                 std::vector{0.1, 1.0});
    h.observe(0.05);
    h.observe(0.5);
    h.observe(0.5);
    h.observe(5.0);
    seg.construct<procsafe::live_gauge<std::int64_t>>("in_flight", procsafe::metadata{.help = "In flight."}).add(3);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("queue_depth", procsafe::metadata{.type = procsafe::metric_type::gauge}, -2);
    seg.construct<procsafe::atomic_counter<double>>("bytes", procsafe::metadata{.unit = "bytes"}, 1.5);

    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    const std::string out = text.str();
    INFO(out);
    REQUIRE(has_line(out, "# HELP requests_total Requests handled."));
    REQUIRE(has_line(out, "# TYPE requests_total counter"));
    REQUIRE(has_line(out, "requests_total{segment=\"(anonymous)\"} 42"));
    REQUIRE(has_line(out, "responses_total{segment=\"(anonymous)\",code=\"200\"} 40"));
    REQUIRE(has_line(out, "responses_total{segment=\"(anonymous)\",code=\"404\"} 2"));
    REQUIRE(has_line(out, "shards_total{segment=\"(anonymous)\",index=\"1\"} 7"));
    REQUIRE(has_line(out, "# TYPE request_seconds histogram"));
    REQUIRE(has_line(out, "request_seconds_bucket{segment=\"(anonymous)\",le=\"0.1\"} 1"));
    REQUIRE(has_line(out, "request_seconds_bucket{segment=\"(anonymous)\",le=\"1.0\"} 3"));  // as client_python
    REQUIRE(has_line(out, "request_seconds_bucket{segment=\"(anonymous)\",le=\"+Inf\"} 4"));  // equals _count
    REQUIRE(has_line(out, "request_seconds_count{segment=\"(anonymous)\"} 4"));
    REQUIRE(has_line(out, "request_seconds_sum{segment=\"(anonymous)\"} 6.05"));
    REQUIRE(has_line(out, "# TYPE in_flight gauge"));
    REQUIRE(has_line(out, "in_flight{segment=\"(anonymous)\"} 3"));
    REQUIRE(has_line(out, "queue_depth{segment=\"(anonymous)\"} -2"));
    REQUIRE(has_line(out, "bytes_total{segment=\"(anonymous)\"} 1.5"));
    REQUIRE(out.find(" # ") == std::string::npos);
    // One HELP and one TYPE per family.
    std::size_t types = 0;
    for (std::size_t at = out.find("# TYPE "); at != std::string::npos; at = out.find("# TYPE ", at + 1)) ++types;
    REQUIRE(types == 7);
    std::string promtool;
    const int rc = promtool_check(out, promtool);
    INFO(promtool);
    if (rc >= 0) REQUIRE(rc == 0);
}

TEST_CASE("prometheus: names made valid, label values and help escaped, families merged across segments",
          "[prometheus]") {
    const auto a_name = procsafe_test::unique_name("promA");
    const auto b_name = procsafe_test::unique_name("promB");
    auto a = procsafe::segment::create(a_name, 1 << 20);
    auto b = procsafe::segment::create(b_name, 1 << 20);
    // construct() refuses names that are not metric names; a segment made
    // before it did (or whose owner renamed an object in place, as here)
    // still has them: the exposition makes them valid.
    a.construct<procsafe::atomic_counter<int>>("jobsXdone", procsafe::metadata{.help = "Jobs \\ done well."}, 1);
    b.construct<procsafe::atomic_counter<int>>("jobsXdone", procsafe::metadata{.help = "Another help."}, 2);
    a.construct<procsafe::counter_array<int, procsafe::atomic_sync>>(
        "Xlives", procsafe::metadata{.label = "who", .label_values = {"a\"b", "c\\d\ne"}}, 2);
    b.construct<procsafe::atomic_counter<int>>("Xlives", procsafe::metadata{.type = procsafe::metric_type::gauge}, 3);
    auto rename = [](procsafe::segment& seg, std::string_view from, std::string_view to) {
        auto* base = static_cast<char*>(const_cast<void*>(seg.data()));
        const auto at = std::string_view(base, seg.size()).find(from, procsafe::detail::managed_offset);
        REQUIRE(at != std::string_view::npos);
        std::copy(to.begin(), to.end(), base + at);
    };
    for (auto* seg : {&a, &b}) {
        rename(*seg, "jobsXdone", "jobs done");
        rename(*seg, "Xlives", "9lives");
    }
    a.construct<procsafe::atomic_counter<int>>("half");  // constructed; "user" objects are left out:
    a.construct<procsafe::live_gauge<int>>("g");
    struct raw {
        int x;
    };
    a.construct<raw>("raw_struct");

    prometheus_exposition text;
    text.add(procsafe::segment_view::open(a_name));
    text.add(procsafe::segment_view::open(b_name));
    const std::string out = text.str();
    INFO(out);
    REQUIRE(prometheus_exposition::metric_name("jobs done") == "jobs_done");
    REQUIRE(prometheus_exposition::metric_name("9lives") == "_9lives");
    REQUIRE(prometheus_exposition::metric_name("a.b-c:d") == "a_b_c:d");
    // One family for both segments' "jobs done", with the first one's help.
    REQUIRE(has_line(out, "# HELP jobs_done_total Jobs \\\\ done well."));
    REQUIRE(out.find("Another help.") == std::string::npos);
    REQUIRE(has_line(out, "jobs_done_total{segment=\"" + a_name + "\"} 1"));
    REQUIRE(has_line(out, "jobs_done_total{segment=\"" + b_name + "\"} 2"));
    REQUIRE(out.find("jobs_done_total{segment=\"" + b_name) > out.find("jobs_done_total{segment=\"" + a_name));
    REQUIRE(out.find("# HELP jobs_done_total") == out.rfind("# HELP jobs_done_total"));
    REQUIRE(has_line(out, "_9lives_total{segment=\"" + a_name + "\",who=\"a\\\"b\"} 0"));
    REQUIRE(has_line(out, "_9lives_total{segment=\"" + a_name + "\",who=\"c\\\\d\\ne\"} 0"));
    REQUIRE(has_line(out, "_9lives{segment=\"" + b_name + "\"} 3"));  // a gauge: another family
    REQUIRE(out.find("raw_struct") == std::string::npos);
    bool warned = false;
    for (const auto& w : text.warnings()) warned = warned || w.find("raw_struct") != std::string::npos;
    REQUIRE(warned);
    std::string promtool;
    const int rc = promtool_check(out, promtool);
    INFO(promtool);
    if (rc >= 0) REQUIRE(rc == 0);
}

TEST_CASE("prometheus: two objects that map onto one series, or onto a family of another type: the second "
          "is left out and said so",
          "[prometheus]") {
    // construct() refuses such names (reader_test.cpp); a segment's owner
    // can still rename an object in place, as done here, after the fact.
    auto seg = procsafe::segment::anonymous(1 << 20);
    seg.construct<procsafe::atomic_counter<int>>("xx_total", 1);  // xx_total, a counter
    seg.construct<procsafe::atomic_counter<int>>("ww", 2);        // renamed xx: xx_total again, the same series
    seg.construct<procsafe::atomic_counter<int>>("qq", 3);        // qq_total, a counter
    seg.construct<procsafe::atomic_counter<int>>("rr_total", procsafe::metadata{.type = procsafe::metric_type::gauge}, 4);
    auto rename = [&](std::string_view from, std::string_view to) {
        auto* base = static_cast<char*>(const_cast<void*>(seg.data()));
        const auto at = std::string_view(base, seg.size()).find(from, procsafe::detail::managed_offset);
        REQUIRE(at != std::string_view::npos);
        std::copy(to.begin(), to.end(), base + at);
    };
    rename("ww", "xx");
    rename("rr_total", "qq_total");  // a gauge qq_total beside the counter qq's
    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    const std::string out = text.str();
    INFO(out);
    REQUIRE(has_line(out, "xx_total{segment=\"(anonymous)\"} 1"));
    REQUIRE(out.find("} 2\n") == std::string::npos);
    REQUIRE(has_line(out, "qq_total{segment=\"(anonymous)\"} 3"));
    REQUIRE(out.find("} 4\n") == std::string::npos);
    REQUIRE(text.warnings().size() == 2);
    std::string promtool;
    const int rc = promtool_check(out, promtool);
    INFO(promtool);
    if (rc < 0) PROCSAFE_SKIP("promtool not installed (Debian package prometheus)");
    REQUIRE(rc == 0);
}

TEST_CASE("prometheus: le written as client_python writes it, checked against prometheus_client itself",
          "[prometheus]") {
    // The bounds of the issue (5e-04, 1e+05 once) and the formats' edges:
    // Python's fixed/exponent switch at 1e-4 and 1e16, Go's at 1e6.
    const std::vector<double> bounds = {0.0005,   100000, 0.1,     1,      2.5,      0.25,    1e-4,   9.99e-5,
                                        1e-5,     0.005,  10,      999999, 1e6,      1234567, 2.5e7,  1e9,
                                        123456.5, 0.3,    1.0 / 3, -1,     -0.0005,  0,       -1e6,   1e16,
                                        1.5e17,   1e-300, 5e-324,  1e308,  0.1 + 0.2, 60,     3600.5, 86400};
    std::string script = "from prometheus_client.utils import floatToGoString\n";
    for (const double b : bounds) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.17g", b);
        script += std::string("print(floatToGoString(float('") + buf + "')))\n";
    }
    const std::string file = "/tmp/procsafe-le-" + std::to_string(::getpid()) + ".py";
    if (std::FILE* f = std::fopen(file.c_str(), "w")) {
        std::fputs(script.c_str(), f);
        std::fclose(f);
    }
    // Debian's python3 (another may come first on PATH), with its prometheus_client.
    std::FILE* p = ::popen(("/usr/bin/python3 " + file + " 2>/dev/null").c_str(), "r");
    std::vector<std::string> theirs;
    char line[128];
    while (p != nullptr && std::fgets(line, sizeof line, p) != nullptr) {
        std::string s(line);
        if (!s.empty() && s.back() == '\n') s.pop_back();
        theirs.push_back(s);
    }
    const int status = p != nullptr ? ::pclose(p) : -1;
    std::remove(file.c_str());
    // The two bounds, whatever is installed.
    CHECK(prometheus_exposition::format_le(0.0005) == "0.0005");
    CHECK(prometheus_exposition::format_le(100000) == "100000.0");
    CHECK(prometheus_exposition::format_le(1e6) == "1e+06");
    CHECK(prometheus_exposition::format_le(1e10) == "1e+10");  // client_python: "1e+010"; Go: "1e+10"
    CHECK(prometheus_exposition::format_le(std::numeric_limits<double>::infinity()) == "+Inf");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || theirs.size() != bounds.size()) {
        PROCSAFE_SKIP("/usr/bin/python3 with prometheus_client (Debian package python3-prometheus-client) not found: "
                      "le not compared with client_python's");
    }
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        INFO("bound " << i);
        CHECK(prometheus_exposition::format_le(bounds[i]) == theirs[i]);
    }
}

TEST_CASE("prometheus: a counter below zero is not exported as a counter: its sample is left out and said so",
          "[prometheus]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& jobs = seg.construct<procsafe::atomic_counter<std::int64_t>>("jobs", 3);
    auto& queue = seg.construct<procsafe::atomic_counter<std::int64_t>>(
        "queue", procsafe::metadata{.type = procsafe::metric_type::gauge}, 0);
    auto& codes = seg.construct<procsafe::counter_array<double, procsafe::atomic_sync>>(
        "codes", procsafe::metadata{.label = "code", .label_values = {"200", "500"}}, 2);
    codes[0].store(1.5);
    codes[1].store(-0.5);
    jobs.decrement(5);  // -2: Prometheus would read a reset, and rate() the whole value again
    queue.decrement(5);  // a gauge may go below zero
    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    const std::string out = text.str();
    INFO(out);
    CHECK(out.find("jobs_total{") == std::string::npos);
    CHECK(has_line(out, "queue{segment=\"(anonymous)\"} -5"));
    CHECK(has_line(out, "codes_total{segment=\"(anonymous)\",code=\"200\"} 1.5"));
    CHECK(out.find("code=\"500\"") == std::string::npos);
    std::vector<std::string> expected = {
        "segment '(anonymous)': object 'jobs': its value is below zero, and exported as a counter: sample left out "
        "(declare it metric_type::gauge if it goes down)",
        "segment '(anonymous)': object 'codes': element 1 is below zero, and exported as a counter: sample left out "
        "(declare it metric_type::gauge if it goes down)"};
    CHECK(text.warnings() == expected);
    jobs.store(4);  // back at or above zero: exported again
    prometheus_exposition again;
    again.add(procsafe::segment_view::of(seg));
    CHECK(has_line(again.str(), "jobs_total{segment=\"(anonymous)\"} 4"));
}

TEST_CASE("prometheus: a live_gauge of float64 as client_python's gauge modes: per pid, min, max, live or not",
          "[prometheus][live_gauge][multiprocess][crash]") {
    using procsafe::gauge_aggregation;
    using G = procsafe::live_gauge<double>;
    auto seg = procsafe::segment::anonymous(1 << 20);
    const std::vector<std::pair<const char*, gauge_aggregation>> modes = {
        {"g_livesum", gauge_aggregation::livesum}, {"g_liveall", gauge_aggregation::liveall},
        {"g_livemin", gauge_aggregation::livemin}, {"g_livemax", gauge_aggregation::livemax},
        {"g_all", gauge_aggregation::all},         {"g_min", gauge_aggregation::min},
        {"g_max", gauge_aggregation::max}};
    std::vector<G*> gauges;
    for (const auto& [name, how] : modes) gauges.push_back(&seg.construct<G>(name, std::size_t{8}, how));
    for (std::size_t i = 0; i < modes.size(); ++i) REQUIRE(gauges[i]->aggregation() == modes[i].second);
    auto& ready = seg.construct<procsafe::atomic_counter<int>>("ready");
    for (G* g : gauges) g->set(1.5);  // this process
    const std::vector<double> values = {2.25, 7.0, -3.5};
    const auto kids = procsafe_test::fork_children(3, [&](int i) {
        for (G* g : gauges) g->set(values[static_cast<std::size_t>(i)]);
        ready.increment();
        (void)ready.wait_at_least_for(1000, std::chrono::seconds(60));  // held until killed
        return 0;
    });
    REQUIRE(ready.wait_at_least_for(3, std::chrono::seconds(20)));
    ::kill(kids[1], SIGKILL);  // the 7.0: dead, its slot not taken over yet
    procsafe_test::join_children({kids[1]});
    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    const std::string out = text.str();
    INFO(out);
    auto pid = [](pid_t p) { return ",pid=\"" + std::to_string(p) + "\"}"; };
    const std::string s = "{segment=\"(anonymous)\"";
    CHECK(has_line(out, "g_livesum" + s + "} 0.25"));  // 1.5 + 2.25 - 3.5
    CHECK(has_line(out, "g_livemin" + s + "} -3.5"));
    CHECK(has_line(out, "g_livemax" + s + "} 2.25"));
    CHECK(has_line(out, "g_min" + s + "} -3.5"));
    CHECK(has_line(out, "g_max" + s + "} 7"));  // the dead process still holds its slot
    CHECK(has_line(out, "g_liveall" + s + pid(::getpid()) + " 1.5"));
    CHECK(has_line(out, "g_liveall" + s + pid(kids[0]) + " 2.25"));
    CHECK(out.find("g_liveall" + s + pid(kids[1])) == std::string::npos);
    CHECK(has_line(out, "g_all" + s + pid(kids[1]) + " 7"));
    CHECK(has_line(out, "g_all" + s + pid(kids[2]) + " -3.5"));
    CHECK(text.warnings().empty());
    std::string promtool;
    const int rc = procsafe_test::promtool_check(out, promtool);
    INFO(promtool);
    if (rc >= 0) CHECK(rc == 0);
    // A new process takes the dead one's slot, zeroed: all and max forget it (bounded by the slots).
    REQUIRE(procsafe_test::join_children(procsafe_test::fork_children(1, [&](int) {
                for (G* g : gauges) g->set(0.5);
                return 0;
            })) == 1);
    ::kill(kids[0], SIGKILL);
    ::kill(kids[2], SIGKILL);
    procsafe_test::join_children({kids[0], kids[2]});
    prometheus_exposition later;
    later.add(procsafe::segment_view::of(seg));
    const std::string after = later.str();
    INFO(after);
    CHECK(has_line(after, "g_max" + s + "} 2.25"));  // 7.0's slot taken; 2.25 and -3.5 dead, not yet taken
    CHECK(after.find("g_all" + s + pid(kids[1])) == std::string::npos);
    CHECK(has_line(after, "g_livesum" + s + "} 1.5"));
    CHECK(has_line(after, "g_livemax" + s + "} 1.5"));
    REQUIRE(gauges[0]->processes().size() <= 8);
}

TEST_CASE("prometheus: a per-pid gauge whose label set has pid, and an aggregation byte out of range, are left out",
          "[prometheus][live_gauge][hostile]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    procsafe::family<procsafe::live_gauge<double>> f(seg, "per_pid", {"pid"});
    f.labels({"1"}, std::size_t{4}, procsafe::gauge_aggregation::all).set(1);
    CHECK_THROWS_AS(seg.construct<procsafe::live_gauge<double>>("bad", std::size_t{4}, static_cast<procsafe::gauge_aggregation>(7)),
                    procsafe::error);
    auto& g = seg.construct<procsafe::live_gauge<double>>("g", std::size_t{4}, procsafe::gauge_aggregation::max);
    g.set(2);
    // A segment's owner rewrites the mode byte (it lies in the gauge's first line, after its three words).
    reinterpret_cast<unsigned char*>(&g)[16] = 9;
    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    INFO(text.str());
    CHECK(text.str().find("per_pid{") == std::string::npos);
    CHECK(text.str().find("g{") == std::string::npos);
    REQUIRE(text.warnings().size() == 2);
    CHECK(text.warnings()[0].find("pid label") != std::string::npos);
    CHECK(text.warnings()[1].find("unknown gauge aggregation 9") != std::string::npos);
}

TEST_CASE("prometheus: a pid in two slots of a per-pid gauge is one sample; histogram bounds rewritten by the segment's "
          "owner are refused, never repeated or unordered le",
          "[prometheus][live_gauge][hostile]") {
    using G = procsafe::live_gauge<double>;
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& g = seg.construct<G>("per_pid", std::size_t{4}, procsafe::gauge_aggregation::all);
    g.set(1);  // this process: slot 0
    // Slot 1 as the segment's owner (or a pid reused while its old slot was
    // not yet taken over) can make it: the same owner word, another value;
    // slot 2: the same pid with another start time (a dead process's slot).
    auto* slots = reinterpret_cast<unsigned char*>(&g) + sizeof(G);
    auto owner = [&](int i) { return reinterpret_cast<std::atomic<std::uint64_t>*>(slots + i * procsafe::cache_line); };
    auto value = [&](int i) { return reinterpret_cast<double*>(slots + i * procsafe::cache_line + 16); };
    std::memcpy(slots + procsafe::cache_line, slots, 16);
    *value(1) = 5;
    owner(2)->store(static_cast<std::uint64_t>(::getpid()) | (std::uint64_t{12345} << 32));
    *value(2) = 9;
    auto& h = seg.construct<procsafe::histogram>("lat", std::vector<double>{1, 2, 3});
    h.observe(1.5);
    auto& h2 = seg.construct<procsafe::histogram>("lat2", std::vector<double>{1, 2, 3});
    const std::vector<std::vector<double>> forged = {{1, 1, 3}, {3, 2, 1}, {1, std::nan(""), 3}, {1, 2, HUGE_VAL}};
    for (const auto& b : forged) {
        std::memcpy(const_cast<double*>(reinterpret_cast<const double*>(&h2 + 1)), b.data(), 3 * sizeof(double));
        prometheus_exposition text;
        text.add(procsafe::segment_view::of(seg));
        const std::string out = text.str();
        INFO(out);
        const std::string me = "pid=\"" + std::to_string(::getpid()) + "\"";
        std::size_t samples = 0;
        for (std::size_t at = out.find(me); at != std::string::npos; at = out.find(me, at + 1)) ++samples;
        CHECK(samples == 1);
        CHECK(has_line(out, "per_pid{segment=\"(anonymous)\"," + me + "} 1"));
        CHECK(has_line(out, "lat_count{segment=\"(anonymous)\"} 1"));
        CHECK(out.find("lat2_") == std::string::npos);
        REQUIRE(text.warnings().size() == 1);
        CHECK(text.warnings()[0].find("bucket bounds are not finite and strictly increasing") != std::string::npos);
        std::string promtool;
        const int rc = procsafe_test::promtool_check(out, promtool);
        INFO(promtool);
        if (rc >= 0) CHECK(rc == 0);
    }
}
