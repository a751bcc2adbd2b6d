// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The reader against a hostile segment owner (issue 18): strings rewritten
// in place after construction, invalid UTF-8, series names that clash,
// repeated label values, a looped catalog. What construct() refuses, and
// what segment_view and prometheus_exposition do when the bytes break the
// rules anyway: skip and say so, never emit it, never throw for it.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/promtool.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdio>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using procsafe_test::promtool_check;
using procsafe::errc;
using procsafe::metadata;
using procsafe::object_status;
using procsafe::prometheus_exposition;
using procsafe_test::catch_error;

namespace {

/// Rewrites, in the segment's own mapping, the first occurrence of `from`
/// after the segment's header with `to` (same length): what the owner of a
/// segment can do to its metadata at any time after construction.
void rewrite(const procsafe::segment& seg, std::string_view from, std::string_view to) {
    REQUIRE(from.size() == to.size());
    auto* base = static_cast<char*>(const_cast<void*>(seg.data()));
    const std::string_view all(base, seg.size());
    const auto at = all.find(from, procsafe::detail::managed_offset);
    REQUIRE(at != std::string_view::npos);
    std::memcpy(base + at, to.data(), to.size());
}

bool warned(const prometheus_exposition& text, std::string_view what) {
    for (const auto& w : text.warnings())
        if (w.find(what) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("reader: construct refuses text that is not UTF-8, repeated label values and series that clash",
          "[reader][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    using ctr = procsafe::atomic_counter<int>;
    using arr = procsafe::counter_array<int, procsafe::atomic_sync>;
    auto refused = [&](auto&& f, const char* why) {
        const auto e = catch_error(f);
        INFO(e.what());
        CHECK(std::string(e.what()).find(why) != std::string::npos);
        return e.code();
    };
    CHECK(refused([&] { seg.construct<ctr>("h", metadata{.help = "bad \xff byte"}); }, "not valid UTF-8") == errc::invalid_argument);
    CHECK(refused([&] { seg.construct<ctr>("h", metadata{.help = "overlong \xc0\xaf"}); }, "not valid UTF-8") == errc::invalid_argument);
    CHECK(refused([&] { seg.construct<ctr>("name\xed\xa0\x80"); }, "valid UTF-8") == errc::invalid_name);
    CHECK(refused([&] { seg.construct<arr>("a", metadata{.label = "code", .label_values = {"ok", "\xe2\x82"}}, 2); },
                  "not valid UTF-8") == errc::invalid_argument);
    CHECK(refused([&] { seg.construct<arr>("codes", metadata{.label = "code", .label_values = {"200", "200"}}, 2); },
                  "'200' repeated") == errc::invalid_argument);
    seg.construct<ctr>("ok", metadata{.help = "Grüße, 温度 \xf0\x9f\x98\x80"});  // valid UTF-8 passes

    seg.construct<procsafe::histogram>("lat", std::vector{1.0});
    CHECK(refused([&] { seg.construct<ctr>("lat_sum", metadata{.type = procsafe::metric_type::gauge}); },
                  "exported as lat_sum, as the object 'lat' already is") == errc::invalid_argument);
    CHECK(refused([&] { seg.construct<ctr>("lat_count", metadata{.type = procsafe::metric_type::gauge}); }, "'lat'") ==
          errc::invalid_argument);
    seg.construct<ctr>("x_total", 1);
    CHECK(refused([&] { seg.construct<ctr>("x", 2); }, "exported as x_total") == errc::invalid_argument);
    // Once rewritten to x_total; now refused for its name, before any clash.
    CHECK(refused([&] { seg.construct<ctr>("x.total", 2); }, "Prometheus metric name") == errc::invalid_name);
    seg.construct<ctr>("sent", metadata{.unit = "bytes"});
    CHECK(refused([&] { seg.construct<ctr>("sent_bytes_total", 2); }, "as the object 'sent'") == errc::invalid_argument);
    seg.construct<ctr>("lat_sum_total");  // a counter lat_sum_total: no series of lat's
    CHECK(procsafe::segment_view::of(seg).objects().size() == 5);
}

TEST_CASE("reader: an exported object's name is a metric name as given; names that are not exported keep the "
          "object name rules",
          "[reader][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    using ctr = procsafe::atomic_counter<std::int64_t>;
    auto refused = [&](auto&& f) {
        const auto e = catch_error(f);
        INFO(e.what());
        CHECK(std::string(e.what()).find("Prometheus metric name, [a-zA-Z_:][a-zA-Z0-9_:]*") != std::string::npos);
        CHECK(std::string(e.what()).find("object '") != std::string::npos);
        return e.code();
    };
    // client_python raises for these, prometheus-cpp refuses them: once
    // exported rewritten (http_requests_v2), now refused at construction.
    CHECK(refused([&] { seg.construct<ctr>("http-requests.v2"); }) == errc::invalid_name);
    CHECK(refused([&] { seg.construct<ctr>("9lives"); }) == errc::invalid_name);
    CHECK(refused([&] { seg.construct<ctr>("jobs done", metadata{.type = procsafe::metric_type::gauge}); }) ==
          errc::invalid_name);
    CHECK(refused([&] { seg.construct<procsafe::histogram>("lat.seconds", std::vector{1.0}); }) == errc::invalid_name);
    CHECK(refused([&] { seg.construct<procsafe::live_gauge<int>>("in-flight"); }) == errc::invalid_name);
    CHECK(refused([&] { seg.construct<procsafe::latch>("start-gate", 2); }) == errc::invalid_name);
    CHECK(refused([&] { (void)seg.find_or_construct<ctr>("a{b}"); }) == errc::invalid_name);
    CHECK_FALSE(seg.contains("http-requests.v2"));
    // What is not exported keeps the object name rules.
    struct raw {
        int x;
    };
    seg.construct<raw>("my.raw-struct");
    seg.construct<procsafe::latch>("start-gate", metadata{.type = procsafe::metric_type::none}, 2);
    seg.construct<ctr>("scratch.pad", metadata{.type = procsafe::metric_type::none}, 5);
    seg.construct<ctr>("http_requests:v2_total", 1);  // ':' is a metric name's
    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    INFO(text.str());
    CHECK(text.str().find("scratch") == std::string::npos);
    CHECK(text.str().find("start") == std::string::npos);
    CHECK(warned(text, "not exported (metric_type::none): left out"));
    CHECK(text.str().find("http_requests:v2_total{segment=\"(anonymous)\"} 1\n") != std::string::npos);
}

TEST_CASE("reader: strings the owner rewrites in place after construction are checked at every read, never emitted",
          "[reader][hostile]") {
    const std::string label_attack = "a=\"1\"} 666\nnode_load1 1e9\n# x";
    const std::string name_attack = "\x1b[2J\x1b]0;pwned\x07";
    auto seg = procsafe::segment::anonymous(1 << 20);
    seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>(
        "arr", metadata{.label = std::string(label_attack.size(), 'q'), .label_values = {"v1", "v2"}}, 2);
    seg.construct<procsafe::atomic_counter<int>>(std::string(name_attack.size(), 'n'), 5);
    seg.construct<procsafe::atomic_counter<int>>("helped", metadata{.help = "HELPHELP"}, 6);
    seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>(
        "dups", metadata{.label = "code", .label_values = {"200", "201"}}, 2);
    seg.construct<procsafe::atomic_counter<int>>("good", 7);

    auto view = procsafe::segment_view::of(seg);
    REQUIRE(view.objects().size() == 5);
    rewrite(seg, std::string(label_attack.size(), 'q'), label_attack);
    rewrite(seg, std::string(name_attack.size(), 'n'), name_attack);
    rewrite(seg, "HELPHELP", "HE\xff\xfeHELP");
    rewrite(seg, "201", "200");

    const auto objects = view.objects();  // the same view: read again, checked again
    REQUIRE(objects.size() == 5);
    std::size_t corrupt = 0;
    for (const auto& o : objects) {
        INFO(o.name << ": " << o.note);
        if (o.name == "good") {
            CHECK(o.status == object_status::ready);
            continue;
        }
        CHECK(o.status == object_status::corrupt);
        CHECK(o.values.empty());
        CHECK(o.note.find("at offset") != std::string::npos);
        for (const char c : o.name) CHECK((c >= 0x20 && c < 0x7f));  // escaped
        corrupt += o.status == object_status::corrupt;
    }
    CHECK(corrupt == 4);
    CHECK(objects[1].name == "\\x1b[2J\\x1b]0;pwned\\x07");

    prometheus_exposition text;
    text.add(view);
    const std::string out = text.str();
    INFO(out);
    CHECK(out.find("node_load1") == std::string::npos);
    CHECK(out.find("666") == std::string::npos);
    CHECK(out.find('\x1b') == std::string::npos);
    CHECK(out.find("\xff") == std::string::npos);
    CHECK(out.find("dups") == std::string::npos);
    CHECK(out.find("good_total{segment=\"(anonymous)\"} 7\n") != std::string::npos);
    CHECK(text.warnings().size() == 4);
    CHECK(warned(text, "repeated"));
    std::string promtool;
    const int rc = promtool_check(out, promtool);
    INFO(promtool);
    if (rc >= 0) CHECK(rc == 0);
}

TEST_CASE("reader: the exposition skips and reports what Prometheus would refuse, whoever filled the objects",
          "[reader][prometheus]") {
    // A histogram lat in one segment and a gauge lat_sum in another: each
    // segment alone is fine, together the text would have lat_sum twice.
    auto a = procsafe::segment::anonymous(1 << 20);
    auto b = procsafe::segment::anonymous(1 << 20);
    a.construct<procsafe::histogram>("lat", std::vector{1.0}).observe(0.5);
    b.construct<procsafe::atomic_counter<int>>("lat_sum", metadata{.type = procsafe::metric_type::gauge}, 3);
    b.construct<procsafe::atomic_counter<int>>("other", metadata{.type = procsafe::metric_type::gauge}, 4);
    prometheus_exposition text;
    text.add("a", procsafe::segment_view::of(a).objects());
    auto objects = procsafe::segment_view::of(b).objects();
    // Objects made by hand (or read by another build): repeated label values,
    // a help text that is not UTF-8.
    procsafe::object_info arr = objects.back();
    arr.name = "codes";
    arr.kind = procsafe::detail::object_kind::atomic_counter_array;
    arr.metric = procsafe::metric_type::counter;
    arr.label = "code";
    arr.label_values = {"200", "200"};
    arr.values = {std::int64_t{1}, std::int64_t{2}};
    procsafe::object_info bad_help = objects.back();
    bad_help.name = "helped";
    bad_help.help = "bad \xc3";
    objects.push_back(arr);
    objects.push_back(bad_help);
    text.add("b", objects);
    const std::string out = text.str();
    INFO(out);
    CHECK(out.find("lat_sum{segment=\"b\"}") == std::string::npos);
    CHECK(out.find("lat_sum{segment=\"a\"} 0.5\n") != std::string::npos);
    CHECK(out.find("other{segment=\"b\"} 4\n") != std::string::npos);
    CHECK(out.find("codes") == std::string::npos);
    CHECK(out.find("helped") == std::string::npos);
    CHECK(warned(text, "its series lat_sum is the family lat's"));
    CHECK(warned(text, "'200' repeated"));
    CHECK(warned(text, "UTF-8"));
    std::string promtool;
    const int rc = promtool_check(out, promtool);
    INFO(promtool);
    if (rc >= 0) CHECK(rc == 0);
}

TEST_CASE("reader: a catalog chunk linked to itself is refused at once, naming the segment", "[reader][hostile]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    for (int i = 0; i < 60; ++i) seg.construct<procsafe::atomic_counter<int>>("c" + std::to_string(i), i);
    const auto* p = static_cast<const unsigned char*>(seg.data());
    std::vector<unsigned char> image(p, p + seg.size());
    const auto& h = *reinterpret_cast<const procsafe::detail::segment_header*>(image.data());
    const std::uint64_t chunk = h.catalog;
    std::memcpy(image.data() + chunk + 8, &chunk, 8);  // next: itself
    const auto e = catch_error([&] { (void)procsafe::segment_view::over(image.data(), image.size(), "looped").objects(); });
    INFO(e.what());
    CHECK(e.code() == errc::incompatible_layout);
    CHECK(e.segment_name() == "looped");
    // Refused at the first repeat, not after walking the loop until a bound.
    CHECK(std::string(e.what()).find("met twice: the chain of chunks loops") != std::string::npos);
}

TEST_CASE("reader: an export flag byte rewritten by the segment's owner costs that object alone, never the segment",
          "[reader][hostile]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    seg.construct<procsafe::atomic_counter<int>>("forged_flag", 3);
    seg.construct<procsafe::atomic_counter<int>>("good", 7);
    // The name follows its object's header; the flag is a byte of that header.
    auto* base = static_cast<unsigned char*>(const_cast<void*>(seg.data()));
    const std::string_view all(reinterpret_cast<const char*>(base), seg.size());
    const auto at = all.find("forged_flag", procsafe::detail::managed_offset);
    REQUIRE(at != std::string_view::npos);
    base[at - sizeof(procsafe::detail::object_header) + offsetof(procsafe::detail::object_header, hidden)] = 7;
    const auto objects = procsafe::segment_view::of(seg).objects();
    REQUIRE(objects.size() == 2);
    for (const auto& o : objects) {
        INFO(o.name << ": " << o.note);
        CHECK(o.status == (o.name == "good" ? object_status::ready : object_status::corrupt));
    }
    prometheus_exposition text;
    text.add(procsafe::segment_view::of(seg));
    INFO(text.str());
    CHECK(text.str().find("good_total{segment=\"(anonymous)\"} 7") != std::string::npos);
    CHECK(text.str().find("forged_flag") == std::string::npos);
    CHECK(warned(text, "unknown export state 7"));
}
