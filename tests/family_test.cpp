// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// procsafe::family: label sets found or constructed at run time, one object
// each, exported as one family; the bound on a family's series; processes
// that label the same new values at once.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/promtool.hpp"
#include "support/start_barrier.hpp"

#include <procsafe/procsafe.hpp>

#include <algorithm>
#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using procsafe_test::promtool_check;
using procsafe::errc;
using procsafe::metadata;
using procsafe::prometheus_exposition;
using procsafe_test::catch_error;
using counter = procsafe::atomic_counter<std::int64_t>;

namespace {

bool has_line(const std::string& text, const std::string& line) {
    return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

std::size_t children_of(const procsafe::segment& seg, const std::string& family) {
    std::size_t n = 0;
    for (const auto& o : procsafe::segment_view::of(seg).objects()) n += o.name.rfind(family + "{", 0) == 0 ? 1 : 0;
    return n;
}

}  // namespace

TEST_CASE("family: label values met at run time, each set an object, exported as one family", "[family]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    procsafe::family<counter> requests(seg, "http_requests_total", {"method", "code"},
                                       metadata{.help = "Requests by method and code."});
    requests.labels({"GET", "200"}).increment(40);
    auto& unavailable = requests.labels({"GET", "503"});  // a code nobody listed
    unavailable += 2;
    CHECK(&requests.labels({"GET", "503"}) == &unavailable);  // found again, by name
    requests.labels({"POST", "200"}).increment();
    requests.labels({"we\"ird\\", "a\nb\tc"}).increment(7);  // escaped in the name and the text
    CHECK(requests.label_names() == std::vector<std::string>{"method", "code"});
    // A child is an ordinary object: any process finds it by its series name.
    CHECK(seg.find<counter>("http_requests_total{method=\"GET\",code=\"503\"}").value() == 2);

    procsafe::family<procsafe::histogram> latency(seg, "request_seconds", {"route"}, metadata{.help = "Latency."});
    latency.labels({"/api"}, std::vector{0.1, 1.0}).observe(0.05);
    latency.labels({"/"}, std::vector{0.1, 1.0}).observe(2.0);
    procsafe::family<procsafe::live_gauge<std::int64_t>> in_flight(seg, "in_flight", {"pool"});
    in_flight.labels({"db"}).add(3);

    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    const std::string out = text.str();
    INFO(out);
    for (const auto& w : text.warnings()) INFO(w);
    CHECK(text.warnings().empty());
    CHECK(count(out, "# HELP http_requests_total ") == 1);
    CHECK(count(out, "# TYPE http_requests_total counter") == 1);
    CHECK(has_line(out, "http_requests_total{segment=\"(anonymous)\",method=\"GET\",code=\"200\"} 40"));
    CHECK(has_line(out, "http_requests_total{segment=\"(anonymous)\",method=\"GET\",code=\"503\"} 2"));
    CHECK(has_line(out, "http_requests_total{segment=\"(anonymous)\",method=\"POST\",code=\"200\"} 1"));
    CHECK(has_line(out, "http_requests_total{segment=\"(anonymous)\",method=\"we\\\"ird\\\\\",code=\"a\\nb\tc\"} 7"));
    CHECK(count(out, "# TYPE request_seconds histogram") == 1);
    CHECK(has_line(out, "request_seconds_bucket{segment=\"(anonymous)\",route=\"/api\",le=\"0.1\"} 1"));
    CHECK(has_line(out, "request_seconds_bucket{segment=\"(anonymous)\",route=\"/\",le=\"+Inf\"} 1"));
    CHECK(has_line(out, "request_seconds_count{segment=\"(anonymous)\",route=\"/\"} 1"));
    CHECK(has_line(out, "in_flight{segment=\"(anonymous)\",pool=\"db\"} 3"));
    std::string promtool;
    const int rc = promtool_check(out, promtool);
    INFO(promtool);
    if (rc >= 0) CHECK(rc == 0);
}

TEST_CASE("family: bad names, labels and values are refused, saying why", "[family][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto refused = [&](auto&& f, const char* why) {
        const auto e = catch_error(f);
        INFO(e.what());
        CHECK(std::string(e.what()).find(why) != std::string::npos);
        return e.code();
    };
    using fam = procsafe::family<counter>;
    CHECK(refused([&] { fam(seg, "http-requests", {"code"}); }, "Prometheus metric name") == errc::invalid_name);
    CHECK(refused([&] { fam(seg, "r", {}); }, "at least one label name") == errc::invalid_argument);
    CHECK(refused([&] { fam(seg, "r", {"a-b"}); }, "[a-zA-Z_][a-zA-Z0-9_]*") == errc::invalid_argument);
    CHECK(refused([&] { fam(seg, "r", {"le"}); }, "exporter's own") == errc::invalid_argument);
    CHECK(refused([&] { fam(seg, "r", {"code", "code"}); }, "'code' repeated") == errc::invalid_argument);
    CHECK(refused([&] { fam(seg, "r", {"code"}, metadata{.label = "x"}); }, "not its metadata's label") ==
          errc::invalid_argument);
    CHECK(refused([&] { fam(seg, "r", {"code"}, {}, 0); }, "max_series") == errc::invalid_argument);
    fam r(seg, "r_total", {"method", "code"});
    CHECK(refused([&] { r.labels({"GET"}); }, "1 label values for the 2 label names (method,code)") ==
          errc::invalid_argument);
    CHECK(refused([&] { r.labels({"GET", "\xff"}); }, "not valid UTF-8") == errc::invalid_argument);
    CHECK(refused([&] { r.labels({std::string(100, 'x'), std::string(100, 'y')}); }, "an object name has at most 200") ==
          errc::invalid_argument);
    r.labels({"GET", "GET"}).increment();  // two labels may have one value
    // A family is one kind of series: another label set, type or kind under its name is refused.
    CHECK(refused([&] { fam(seg, "r_total", {"code"}).labels({"200"}); }, "the family 'r_total' has children") ==
          errc::invalid_argument);
    CHECK(refused([&] { procsafe::family<procsafe::sharded_counter<std::int64_t>>(seg, "r_total", {"method", "code"}).labels({"a", "b"}); },
                  "another type or object kind") == errc::invalid_argument);
    // ... and so is a plain object exported as the family's series, either way round.
    CHECK(refused([&] { seg.construct<counter>("r"); }, "exported as r_total") == errc::invalid_argument);
    seg.construct<counter>("plain_total");
    CHECK(refused([&] { fam(seg, "plain_total", {"code"}).labels({"1"}); }, "exported as plain_total") ==
          errc::invalid_argument);
    CHECK(children_of(seg, "r_total") == 1);
}

TEST_CASE("family: at most max_series label sets; the one past it is refused naming the family, the others still "
          "found",
          "[family][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    procsafe::family<counter> users(seg, "logins_total", {"user"}, {}, 3);
    for (const char* u : {"ann", "bob", "cy"}) users.labels({u}).increment();
    const auto e = catch_error([&] { users.labels({"dee"}); });
    INFO(e.what());
    CHECK(e.code() == errc::out_of_range);
    CHECK(std::string(e.what()).find("the family 'logins_total' has its 3 label sets (max_series)") != std::string::npos);
    CHECK(users.labels({"bob"}).increment() == 2);  // existing sets are found as ever
    CHECK(children_of(seg, "logins_total") == 3);
    // Another family is counted apart.
    procsafe::family<counter> other(seg, "logouts_total", {"user"}, {}, 1);
    other.labels({"dee"}).increment();
    CHECK(children_of(seg, "logouts_total") == 1);
}

TEST_CASE("family: processes that label the same new values at once get one object; the bound holds across "
          "processes",
          "[family][multiprocess]") {
    auto seg = procsafe::segment::anonymous(4 << 20);
    auto& start = seg.construct<procsafe_test::start_barrier>("start");
    constexpr int procs = 4, rounds = 2000, sets = 10;
    constexpr std::size_t bound = 25;
    const auto pids = procsafe_test::fork_children(procs, [&](int i) {
        procsafe::family<counter> codes(seg, "codes_total", {"code"});
        procsafe::family<counter> capped(seg, "capped_total", {"n"}, {}, bound);
        if (!start.arrive_and_wait()) return 2;
        for (int r = 0; r < rounds; ++r) codes.labels({"503"}).increment();  // the same new set, all at once
        for (int k = 0; k < sets; ++k) {
            try {
                capped.labels({std::to_string(i * sets + k)}).increment();
            } catch (const procsafe::error& e) {
                if (e.code() != errc::out_of_range) return 3;
            }
        }
        return 0;
    });
    REQUIRE(pids.size() == procs);
    REQUIRE(start.release_when(procs));
    REQUIRE(procsafe_test::join_children(pids) == procs);
    procsafe::family<counter> codes(seg, "codes_total", {"code"});
    CHECK(codes.labels({"503"}).value() == procs * rounds);
    CHECK(children_of(seg, "codes_total") == 1);
    CHECK(children_of(seg, "capped_total") == bound);  // 40 asked for, 25 made
}

TEST_CASE("family: remove() takes a child out of the exposition for every process; labels() in another process puts it "
          "back; a reference held across remove() counts into the hidden series",
          "[family][multiprocess]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    procsafe::family<counter> jobs(seg, "jobs", {"queue"}, metadata{.help = "Jobs."});
    counter& held = jobs.labels({"a"});
    held += 5;
    jobs.labels({"b"}) += 1;
    auto text = [&] {
        prometheus_exposition t;
        t.add(procsafe::segment_view::of(seg));
        return t.str();
    };
    REQUIRE(has_line(text(), "jobs_total{segment=\"(anonymous)\",queue=\"a\"} 5"));
    REQUIRE_FALSE(jobs.remove({"c"}));  // never made
    REQUIRE(procsafe_test::join_children(procsafe_test::fork_children(1, [&](int) { return jobs.remove({"a"}) ? 0 : 1; })) == 1);
    REQUIRE_FALSE(seg.exported("jobs{queue=\"a\"}"));
    REQUIRE(count(text(), "queue=\"a\"") == 0);
    REQUIRE(has_line(text(), "jobs_total{segment=\"(anonymous)\",queue=\"b\"} 1"));
    const auto objects = procsafe::segment_view::of(seg).objects();
    const auto a = std::find_if(objects.begin(), objects.end(), [](const auto& o) { return o.name == "jobs{queue=\"a\"}"; });
    REQUIRE(a != objects.end());
    REQUIRE_FALSE(a->exported);  // still read and listed
    held += 2;  // counted in the hidden series
    REQUIRE(count(text(), "queue=\"a\"") == 0);
    REQUIRE(procsafe_test::join_children(procsafe_test::fork_children(1, [&](int) { return jobs.labels({"a"}).value() == 7 ? 0 : 1; })) == 1);
    REQUIRE(seg.exported("jobs{queue=\"a\"}"));
    REQUIRE(has_line(text(), "jobs_total{segment=\"(anonymous)\",queue=\"a\"} 7"));
    const procsafe::export_switch sw = seg.export_switch_of("jobs{queue=\"b\"}");
    REQUIRE(sw.set(false));
    REQUIRE_FALSE(sw.set(false));
    REQUIRE(count(text(), "# TYPE jobs_total counter") == 1);
    REQUIRE(jobs.remove({"a"}));
    REQUIRE(count(text(), "jobs") == 0);  // no family left to print
    REQUIRE(catch_error([&] { seg.set_exported("nothing", false); }).code() == errc::object_not_found);
}
