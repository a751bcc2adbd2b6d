// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The flusher and the function's rules, against a real redis-server: what
// adds up and under which field, replays, older values, new incarnations,
// gauges that go down and expire, integers above 2^53, two flushers racing
// on one segment (held between their read of the watermarks and their
// FCALL), replies lost, Redis down or stopped, AUTH.
#include "redis_server.hpp"

#include "support/process.hpp"
#include "support/skip.hpp"
#include "support/values.hpp"

#include "catch.hpp"

#include <procsafe/procsafe.hpp>
#include <procsafe/redis.hpp>
#include <procsafe/segment_view.hpp>

#include "cluster.hpp"  // redis/src: hash slots
#include "fields.hpp"  // redis/src: what a flush sends, without a server

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using procsafe_test::raw_client;
using procsafe_test::redis_server;
using procsafe_test::unique_name;
namespace pr = procsafe::redis;

/// Log lines of a flusher, kept for the test to read.
struct log_lines {
    std::mutex m;
    std::vector<std::string> lines;
    pr::log_function fn() {
        return [this](std::string_view l) {
            std::lock_guard<std::mutex> g(m);
            lines.emplace_back(l);
        };
    }
    std::size_t count(std::string_view what) {
        std::lock_guard<std::mutex> g(m);
        std::size_t n = 0;
        for (const auto& l : lines) n += l.find(what) != std::string::npos ? 1 : 0;
        return n;
    }
    std::size_t size() {
        std::lock_guard<std::mutex> g(m);
        return lines.size();
    }
    std::string all() {
        std::lock_guard<std::mutex> g(m);
        std::string s;
        for (const auto& l : lines) s += l + "\n";
        return s;
    }
};

/// Polls `done` until it holds or `limit` passes; whether it held.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (done()) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

pr::flush_options options_for(const redis_server& r, std::vector<std::string> segments, std::string host,
                              std::string ns, log_lines& log) {
    pr::flush_options o;
    o.connection.redis = pr::endpoint::parse(r.address());
    o.connection.connect_timeout = 1.0;
    o.connection.command_timeout = 1.0;
    o.segments = std::move(segments);
    o.host_id = std::move(host);
    o.fleet_namespace = std::move(ns);
    o.interval = 0.05;
    o.log = log.fn();
    return o;
}

pr::connection_options connection_to(const redis_server& r) {
    pr::connection_options c;
    c.redis = pr::endpoint::parse(r.address());
    return c;
}

/// Removes a segment at the end of a test.
struct removed_at_exit {
    std::string name;
    ~removed_at_exit() { procsafe::segment::remove(name); }
};

struct tally {
    std::int64_t a, b;
};

using i64_array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;

}  // namespace

TEST_CASE("redis: every counter-like object adds up under its field, and a replay changes nothing", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("rflush");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 20);
    auto& requests = seg.construct<procsafe::sharded_counter<std::int64_t>>("requests");
    auto& bytes = seg.construct<procsafe::atomic_counter<std::uint64_t>>("bytes");
    auto& jobs = seg.construct<procsafe::mutex_counter<std::int64_t>>("jobs");
    auto& codes = seg.construct<i64_array>("responses", procsafe::metadata{.label = "code", .label_values = {"200", "404", "500"}}, 3);
    auto& plain = seg.construct<i64_array>("slots", 2);
    auto& latency = seg.construct<procsafe::histogram>("latency", procsafe::metadata{.unit = "seconds"}, std::vector{0.1, 1.0});
    auto& busy = seg.construct<procsafe::live_gauge<std::int64_t>>("busy");
    auto& queue = seg.construct<procsafe::atomic_counter<std::int64_t>>("queue", procsafe::metadata{.type = procsafe::metric_type::gauge});
    auto& seconds = seg.construct<procsafe::atomic_counter<double>>("seconds");
    seg.construct<procsafe::latch>("ready", 2);
    seg.construct<procsafe::barrier>("step", 2);
    seg.construct<tally>("raw", tally{1, 2});
    requests.increment(5);
    bytes.increment(1000);
    jobs.increment(3);
    codes[0].increment(7);
    codes[2].increment(1);
    plain[1].increment(2);
    latency.observe(0.05);
    latency.observe(0.5);
    latency.observe(5);
    busy.add(4);
    queue.store(9);
    seconds.increment(1.5);

    log_lines log;
    pr::flusher f(options_for(server, {name}, "h1", "shop", log));
    auto r = f.flush_once();
    INFO(r.error << "\n" << log.all());
    REQUIRE(r.ok);
    raw_client redis(server.port());
    const auto totals = pr::keys::totals("shop");
    CHECK(redis.hget(totals, "requests") == "5");
    CHECK(redis.hget(totals, "bytes") == "1000");
    CHECK(redis.hget(totals, "jobs") == "3");
    CHECK(redis.hget(totals, "responses{code=\"200\"}") == "7");
    CHECK(redis.hget(totals, "responses{code=\"404\"}") == "0");
    CHECK(redis.hget(totals, "responses{code=\"500\"}") == "1");
    CHECK(redis.hget(totals, "slots{index=\"1\"}") == "2");
    CHECK(redis.hget(totals, "latency_bucket{le=\"0.1\"}") == "1");
    CHECK(redis.hget(totals, "latency_bucket{le=\"1\"}") == "2");
    CHECK(redis.hget(totals, "latency_bucket{le=\"+Inf\"}") == "3");
    CHECK(redis.hget(totals, "latency_count") == "3");
    CHECK(redis.hget(totals, "latency_sum") == "5.55");
    CHECK(redis.hget(totals, "seconds") == "1.5");
    CHECK(redis.hget(totals, "busy").empty());  // gauges are not totals
    const auto reporter = pr::keys::reporter("h1", name, procsafe::segment_view::open(name).incarnation());
    CHECK(redis.hget(pr::keys::gauges("shop", reporter), "busy") == "4");
    CHECK(redis.hget(pr::keys::gauges("shop", reporter), "queue") == "9");
    CHECK(redis.hget(pr::keys::watermarks("shop", reporter), "requests") == "5");

    // Nothing changed: nothing is sent, nothing moves.
    r = f.flush_once();
    REQUIRE(r.ok);
    CHECK(r.fields == 0);
    CHECK(redis.hget(totals, "requests") == "5");

    requests.increment(10);
    codes[1].increment(2);
    r = f.flush_once();
    REQUIRE(r.ok);
    CHECK(r.fields == 2);
    CHECK(redis.hget(totals, "requests") == "15");
    CHECK(redis.hget(totals, "responses{code=\"404\"}") == "2");

    // The same FCALL twice (a retry, a replay): the second is a conflict
    // and changes nothing.
    const auto marks = pr::keys::watermarks("shop", reporter);
    const std::vector<std::string> call{"FCALL", std::string(pr::flush_function), "3", totals, marks,
                                        pr::keys::reporters("shop"), reporter, "{}", "i",
                                        "requests", "15", "20", "5"};
    auto first = redis.run(call);
    REQUIRE(first.elements.size() == 2);
    CHECK(first.elements[0].str == "ok");
    CHECK(redis.hget(totals, "requests") == "20");
    auto again = redis.run(call);
    REQUIRE(again.elements.size() == 2);
    CHECK(again.elements[0].str == "conflict");
    CHECK(redis.hget(totals, "requests") == "20");
    CHECK(redis.hget(marks, "requests") == "20");

    // Skipped objects: one line each, however many flushes.
    for (int i = 0; i < 3; ++i) REQUIRE(f.flush_once().ok);
    CHECK(log.count("object 'ready' not flushed") == 1);
    CHECK(log.count("object 'step' not flushed") == 1);
    CHECK(log.count("object 'raw' not flushed") == 1);
    CHECK(log.count("not flushed") == 3);
}

TEST_CASE("redis: an older value, or a value for a moved watermark, changes nothing", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("rold");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    log_lines log;
    pr::flusher f(options_for(server, {name}, "h1", "ns", log));
    c.store(10);
    REQUIRE(f.flush_once().ok);
    c.store(25);
    REQUIRE(f.flush_once().ok);
    raw_client redis(server.port());
    const auto reporter = pr::keys::reporter("h1", name, procsafe::segment_view::open(name).incarnation());
    const auto totals = pr::keys::totals("ns"), marks = pr::keys::watermarks("ns", reporter);
    // The FCALL a flusher killed mid-way would have sent for 10 -> 18: its
    // expected watermark (10) is not there any more.
    auto r = redis.run({"FCALL", std::string(pr::flush_function), "3", totals, marks, pr::keys::reporters("ns"), reporter,
                        "{}", "i", "c", "10", "18", "8"});
    REQUIRE(r.elements.size() == 2);
    CHECK(r.elements[0].str == "conflict");
    REQUIRE(r.elements[1].elements.size() == 1);
    CHECK(r.elements[1].elements[0].str == "c");
    // An older value sent with no watermark at all (a first flush replayed).
    r = redis.run({"FCALL", std::string(pr::flush_function), "3", totals, marks, pr::keys::reporters("ns"), reporter,
                   "{}", "i", "c", "", "10", "10"});
    CHECK(r.elements[0].str == "conflict");
    // One stale tuple in a batch: none of the batch is applied.
    r = redis.run({"FCALL", std::string(pr::flush_function), "3", totals, marks, pr::keys::reporters("ns"), reporter,
                   "{}", "i", "d", "", "3", "3", "c", "10", "18", "8"});
    CHECK(r.elements[0].str == "conflict");
    CHECK(redis.hget(totals, "c") == "25");
    CHECK(redis.hget(totals, "d").empty());
    CHECK(redis.hget(marks, "c") == "25");
    REQUIRE(f.flush_once().ok);
    CHECK(redis.hget(totals, "c") == "25");
}

TEST_CASE("redis: a recreated segment is a new incarnation: the old one's last values stay counted", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("rinc");
    removed_at_exit cleanup{name};
    log_lines log;
    pr::flusher f(options_for(server, {name}, "h1", "ns", log));
    std::uint64_t first_incarnation = 0;
    {
        auto seg = procsafe::segment::create(name, 1 << 16);
        auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
        c.store(100);
        first_incarnation = procsafe::segment_view::open(name).incarnation();
        REQUIRE(f.flush_once().ok);
        c.store(120);  // counted after the last flush, before the segment goes
    }  // the creator removes it
    auto seg = procsafe::segment::create(name, 1 << 16);  // a server restarted: from zero
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    c.store(30);
    REQUIRE(f.flush_once().ok);  // the old mapping's last values (120)
    REQUIRE(f.flush_once().ok);  // the new incarnation (30)
    raw_client redis(server.port());
    CHECK(redis.hget(pr::keys::totals("ns"), "c") == "150");
    c.store(35);
    REQUIRE(f.flush_once().ok);
    CHECK(redis.hget(pr::keys::totals("ns"), "c") == "155");
    // A flusher started afresh (the old one killed) counts nothing twice.
    pr::flusher g(options_for(server, {name}, "h1", "ns", log));
    REQUIRE(g.flush_once().ok);
    CHECK(redis.hget(pr::keys::totals("ns"), "c") == "155");

    const auto fleet = pr::read_fleet(connection_to(server), "ns");
    REQUIRE(fleet.reporters.size() == 2);
    const auto second_incarnation = procsafe::segment_view::open(name).incarnation();
    CHECK(second_incarnation != first_incarnation);
    for (const auto& r : fleet.reporters) {
        CHECK(r.host == "h1");
        CHECK(r.segment == name);
        CHECK(r.watermarks.at("c") == (r.incarnation == first_incarnation ? "120" : "35"));
    }
    CHECK(fleet.totals.at("c") == "155");
    CHECK(log.count("a new incarnation") == 1);
}

TEST_CASE("redis: a gauge is the sum of the live reporters' last values, goes down, and expires", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto a = unique_name("rga"), b = unique_name("rgb");
    removed_at_exit ca{a}, cb{b};
    auto sa = procsafe::segment::create(a, 1 << 16);
    auto sb = procsafe::segment::create(b, 1 << 16);
    auto& ga = sa.construct<procsafe::live_gauge<std::int64_t>>("busy");
    auto& gb = sb.construct<procsafe::live_gauge<std::int64_t>>("busy");
    log_lines log;
    auto oa = options_for(server, {a}, "ha", "web", log);
    auto ob = options_for(server, {b}, "hb", "web", log);
    oa.gauge_ttl = 30;
    ob.gauge_ttl = 0.4;
    pr::flusher fa(oa), fb(ob);
    ga.set(10);
    gb.set(7);
    REQUIRE(fa.flush_once().ok);
    REQUIRE(fb.flush_once().ok);
    CHECK(pr::read_fleet(connection_to(server), "web").gauges.at("busy") == "17");
    ga.set(4);  // goes down
    REQUIRE(fa.flush_once().ok);
    auto fleet = pr::read_fleet(connection_to(server), "web");
    CHECK(fleet.gauges.at("busy") == "11");
    CHECK(fleet.totals.count("busy") == 0);
    // b stops reporting: its value drops out after its ttl (0.4 s), not before.
    const auto flushed = std::chrono::steady_clock::now();
    CHECK(eventually([&] { return pr::read_fleet(connection_to(server), "web").gauges.at("busy") == "4"; }));
    CHECK(std::chrono::steady_clock::now() - flushed >= std::chrono::milliseconds(300));
    fleet = pr::read_fleet(connection_to(server), "web");
    CHECK(fleet.gauges.at("busy") == "4");
    REQUIRE(fleet.reporters.size() == 2);
    for (const auto& r : fleet.reporters) CHECK(r.live == (r.host == "ha"));
    // A gauge read older than the one Redis holds is refused.
    raw_client redis(server.port());
    const auto reporter = pr::keys::reporter("ha", a, procsafe::segment_view::open(a).incarnation());
    auto r = redis.run({"FCALL", std::string(pr::gauges_function), "2", pr::keys::gauges("web", reporter),
                        pr::keys::reporters("web"), reporter, "{}", "30000", "00000000000000000001", "busy", "99"});
    REQUIRE(!r.elements.empty());
    CHECK(r.elements[0].str == "stale");
    CHECK(pr::read_fleet(connection_to(server), "web").gauges.at("busy") == "4");
    // Prometheus: a gauge, no _total.
    const auto text = pr::prometheus_text({pr::read_fleet(connection_to(server), "web")});
    CHECK(text.find("# TYPE busy gauge\nbusy{namespace=\"web\"} 4\n") != std::string::npos);
}

TEST_CASE("redis: integers above 2^53 stay exact (never a Lua number)", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto a = unique_name("rbiga"), b = unique_name("rbigb");
    removed_at_exit ca{a}, cb{b};
    auto sa = procsafe::segment::create(a, 1 << 16);
    auto sb = procsafe::segment::create(b, 1 << 16);
    auto& ua = sa.construct<procsafe::atomic_counter<std::uint64_t>>("u");
    auto& ub = sb.construct<procsafe::atomic_counter<std::uint64_t>>("u");
    auto& na = sa.construct<procsafe::atomic_counter<std::int64_t>>("n");
    auto& huge = sa.construct<procsafe::atomic_counter<std::uint64_t>>("huge");
    log_lines log;
    pr::flusher fa(options_for(server, {a}, "ha", "big", log)), fb(options_for(server, {b}, "hb", "big", log));
    ua.store((1ULL << 53) + 1);  // 9007199254740993: a double would say ...992
    ub.store((1ULL << 62) + 3);
    na.store(-(std::int64_t{1} << 53) - 1);
    huge.store(UINT64_MAX);      // a change that does not fit Redis' int64
    REQUIRE(fa.flush_once().ok);
    REQUIRE(fb.flush_once().ok);
    raw_client redis(server.port());
    const auto totals = pr::keys::totals("big");
    CHECK(redis.hget(totals, "u") == "4620693217682128900");  // 2^53 + 1 + 2^62 + 3
    CHECK(redis.hget(totals, "n") == "-9007199254740993");
    CHECK(redis.hget(totals, "huge").empty());
    CHECK(log.count("field 'huge': a change of 18446744073709551615 does not fit") == 1);
    ua.increment(1);
    ub.increment(1);
    REQUIRE(fa.flush_once().ok);
    REQUIRE(fb.flush_once().ok);
    CHECK(redis.hget(totals, "u") == "4620693217682128902");
    const auto fleet = pr::read_fleet(connection_to(server), "big");
    CHECK(fleet.totals.at("u") == "4620693217682128902");
    const auto text = pr::prometheus_text({fleet});
    CHECK(text.find("u_total{namespace=\"big\"} 4620693217682128902\n") != std::string::npos);
    CHECK(pr::json_text({fleet}).find("\"u\": 4620693217682128902") != std::string::npos);
}

TEST_CASE("redis: two flushers racing on one segment count nothing twice (one held before its FCALL)", "[redis][race]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("rrace");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c");
    auto& d = seg.construct<procsafe::atomic_counter<std::uint64_t>>("d");
    c.increment(10);
    d.store((1ULL << 60) + 1);

    // Flusher A stops between its read of the watermarks and its FCALL,
    // the first time only.
    std::mutex m;
    std::condition_variable cv;
    bool held = false, release = false, once = true;
    log_lines log;
    auto oa = options_for(server, {name}, "h1", "ns", log);
    oa.test_hook = [&](std::string_view point) {
        if (point != "watermarks.read" || !once) return;
        once = false;
        std::unique_lock<std::mutex> g(m);
        held = true;
        cv.notify_all();
        cv.wait_for(g, std::chrono::seconds(30), [&] { return release; });
    };
    pr::flusher fa(oa);
    pr::flusher fb(options_for(server, {name}, "h1", "ns", log));
    pr::flush_result ra;
    std::thread ta([&] { ra = fa.flush_once(); });
    {
        std::unique_lock<std::mutex> g(m);
        REQUIRE(cv.wait_for(g, std::chrono::seconds(30), [&] { return held; }));
    }
    // While A holds its stale view (c = 10, no watermark), B flushes more.
    c.increment(5);
    d.increment(7);
    const auto rb = fb.flush_once();
    {
        std::lock_guard<std::mutex> g(m);
        release = true;
        cv.notify_all();
    }
    ta.join();
    REQUIRE(rb.ok);
    INFO(ra.error << "\n" << log.all());
    REQUIRE(ra.ok);
    CHECK(ra.conflicts >= 1);  // A's FCALL found B's watermarks, changed nothing, read again
    raw_client redis(server.port());
    const auto totals = pr::keys::totals("ns");
    CHECK(redis.hget(totals, "c") == "15");
    CHECK(redis.hget(totals, "d") == std::to_string((1ULL << 60) + 8));
    // Taking turns from now on: still exact.
    for (int i = 0; i < 20; ++i) {
        c.increment(1);
        d.increment(3);
        REQUIRE((i % 2 ? fa : fb).flush_once().ok);
    }
    CHECK(redis.hget(totals, "c") == "35");
    CHECK(redis.hget(totals, "d") == std::to_string((1ULL << 60) + 68));
}

TEST_CASE("redis: two flushers on one segment, unforced, many rounds: exact", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("rduel");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 20);
    auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c");
    auto& arr = seg.construct<i64_array>("arr", 64);
    log_lines log;
    pr::flusher fa(options_for(server, {name}, "h1", "ns", log)), fb(options_for(server, {name}, "h1", "ns", log));
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        for (int i = 0; !stop.load(); ++i) {
            c.increment();
            arr[static_cast<std::size_t>(i) % 64].increment();
        }
    });
    std::thread ta([&] {
        for (int i = 0; i < 100; ++i) fa.flush_once();
    });
    for (int i = 0; i < 100; ++i) fb.flush_once();
    ta.join();
    stop = true;
    writer.join();
    REQUIRE(fa.flush_once().ok);
    REQUIRE(fb.flush_once().ok);
    const auto fleet = pr::read_fleet(connection_to(server), "ns");
    CHECK(fleet.totals.at("c") == std::to_string(c.sum()));
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < 64; ++i) {
        CHECK(fleet.totals.at("arr{index=\"" + std::to_string(i) + "\"}") == std::to_string(arr[i].value()));
        sum += arr[i].value();
    }
    CHECK(sum == c.sum());
}

TEST_CASE("redis: a reply lost after the FCALL was applied counts nothing twice", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("rlost");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    log_lines log;
    auto o = options_for(server, {name}, "h1", "ns", log);
    int lose = 0;
    std::string applied;  // the total Redis holds once the FCALL is applied
    o.test_hook = [&](std::string_view point) {
        if (point == "fcall.sent" && lose > 0) {
            --lose;
            // Wait until Redis has applied it (bounded), then lose the reply.
            raw_client watch(server.port());
            if (!eventually([&] { return watch.hget(pr::keys::totals("ns"), "c") == applied; }))
                throw std::runtime_error("test: the FCALL was never applied");
            throw std::runtime_error("test: the reply was lost");
        }
    };
    pr::flusher f(o);
    raw_client redis(server.port());
    c.store(40);
    applied = "40";
    lose = 1;
    auto r = f.flush_once();
    CHECK_FALSE(r.ok);
    CHECK(r.error == "test: the reply was lost");
    CHECK(redis.hget(pr::keys::totals("ns"), "c") == "40");  // applied
    r = f.flush_once();  // reconnects, reads the watermark Redis holds
    REQUIRE(r.ok);
    CHECK(r.fields == 0);
    CHECK(redis.hget(pr::keys::totals("ns"), "c") == "40");
    // Lost, then Redis killed and restarted from its AOF before the retry.
    c.store(55);
    applied = "55";
    lose = 1;
    CHECK_FALSE(f.flush_once().ok);
    server.kill9();
    server.start();
    raw_client again(server.port());
    CHECK(again.hget(pr::keys::totals("ns"), "c") == "55");
    REQUIRE(f.flush_once().ok);
    CHECK(again.hget(pr::keys::totals("ns"), "c") == "55");
    CHECK(f.stats().connects == 3);
}

namespace {

/// Cuts the last incremental AOF file inside the last flush's transaction:
/// after its last HINCRBY, in the middle of the HSET of that field's
/// watermark, as a kill in the middle of Redis' write of it leaves the file.
void cut_after_last_hincrby(const std::string& redis_dir) {
    std::filesystem::path last;
    for (const auto& e : std::filesystem::directory_iterator(redis_dir + "/appendonlydir")) {
        const std::string n = e.path().filename().string();
        if (n.size() > 9 && n.compare(n.size() - 9, 9, ".incr.aof") == 0 && (last.empty() || e.path() > last))
            last = e.path();
    }
    REQUIRE_FALSE(last.empty());
    std::ifstream in(last, std::ios::binary);
    const std::string aof((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::size_t incr = aof.rfind("\r\nHINCRBY\r\n");
    REQUIRE(incr != std::string::npos);
    const std::size_t next = aof.find("\r\n*", incr + 9);  // the command after it (the watermark's HSET)
    REQUIRE(next != std::string::npos);
    REQUIRE(aof.compare(next, 16, "\r\n*4\r\n$4\r\nHSET\r\n") == 0);
    std::filesystem::resize_file(last, next + 8);  // "*4", "$4" and a torn "HSET"
}

}  // namespace

TEST_CASE("redis: Redis killed in the middle of writing a flush to its AOF, repaired before its restarts: exact", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;  // restarted as docs/redis.md says: redis-check-aof --fix first
    const auto name = unique_name("rtorn");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& a = seg.construct<procsafe::atomic_counter<std::int64_t>>("a");
    auto& b = seg.construct<procsafe::atomic_counter<std::int64_t>>("b");
    log_lines log;
    pr::flusher f(options_for(server, {name}, "h1", "ns", log));
    // After a restart the first round may find its connection dead, and the
    // next reconnects.
    auto flushed = [&f] { return f.flush_once().ok || f.flush_once().ok; };
    a.store(10);
    b.store(20);
    REQUIRE(f.flush_once().ok);
    a.store(15);
    b.store(27);
    REQUIRE(f.flush_once().ok);  // MULTI, HINCRBY a 5, HSET its watermark, HINCRBY b 7, HSET ..., EXEC
    server.kill9();
    cut_after_last_hincrby(server.dir());  // the kill tore the write after HINCRBY b 7
    server.start();
    {
        raw_client redis(server.port());
        CHECK(redis.hget(pr::keys::totals("ns"), "a") == "10");  // the torn transaction is gone whole
        CHECK(redis.hget(pr::keys::totals("ns"), "b") == "20");
    }
    REQUIRE(flushed());  // sends 5 and 7 again: Redis never applied them
    server.kill9();
    server.start();  // unrepaired, Redis 7.0 would apply the torn start with this flush: a 20, b 34
    raw_client redis(server.port());
    CHECK(redis.hget(pr::keys::totals("ns"), "a") == "15");
    CHECK(redis.hget(pr::keys::totals("ns"), "b") == "27");
    REQUIRE(flushed());
    CHECK(redis.hget(pr::keys::totals("ns"), "a") == "15");
    CHECK(redis.hget(pr::keys::totals("ns"), "b") == "27");
}

TEST_CASE("redis: Redis unreachable, stopped, killed: bounded, logged once, and the next flush carries everything", "[redis]") {
    PROCSAFE_NEED_REDIS();
    const auto name = unique_name("rdown");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    log_lines log;
    {  // nobody listens
        pr::flush_options o;
        o.connection.redis.port = procsafe_test::free_port();
        o.connection.connect_timeout = 0.5;
        o.segments = {name};
        o.log = log.fn();
        pr::flusher f(o);
        for (int i = 0; i < 3; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            const auto r = f.flush_once();
            CHECK_FALSE(r.ok);
            CHECK_FALSE(r.reached_redis);
            CHECK(r.error.find("Connection refused") != std::string::npos);
            CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
        }
        CHECK(log.count("Connection refused") == 1);  // a state change, not each attempt
        CHECK(f.stats().failed_rounds == 3);
    }
    redis_server server;
    auto o = options_for(server, {name}, "h1", "ns", log);
    o.connection.command_timeout = 0.3;
    pr::flusher f(o);
    c.store(1);
    REQUIRE(f.flush_once().ok);
    server.stop();  // a partition: the connection is there, no answer
    c.store(2);
    for (int i = 0; i < 2; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto r = f.flush_once();
        CHECK_FALSE(r.ok);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
    }
    server.resume();
    REQUIRE(f.flush_once().ok);
    raw_client redis(server.port());
    CHECK(redis.hget(pr::keys::totals("ns"), "c") == "2");
    CHECK(log.count("flushing again after 2 failed attempts") == 1);

    // run() across a kill and a restart: counts made meanwhile arrive.
    std::atomic<bool> stop{false};
    std::thread t([&] { f.run(stop); });
    c.store(3);
    const std::size_t logged = log.size();
    server.kill9();
    c.store(4);
    CHECK(eventually([&] { return log.size() > logged; }));  // the flusher saw Redis go
    server.start();
    c.store(5);
    raw_client after(server.port());
    CHECK(eventually([&] { return after.hget(pr::keys::totals("ns"), "c") == "5"; }));
    stop = true;
    t.join();
    CHECK(after.hget(pr::keys::totals("ns"), "c") == "5");
}

TEST_CASE("redis: AUTH with a password and with an ACL user", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server({"--requirepass", "pw-secret"});
    const auto name = unique_name("rauth");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("c").store(3);
    log_lines log;
    {
        pr::flusher f(options_for(server, {name}, "h1", "ns", log));
        const auto r = f.flush_once();
        CHECK_FALSE(r.ok);
        CHECK(r.error.find("NOAUTH") != std::string::npos);
    }
    {
        auto o = options_for(server, {name}, "h1", "ns", log);
        o.connection.auth.password = "wrong";
        pr::flusher f(o);
        const auto r = f.flush_once();
        CHECK_FALSE(r.ok);
        CHECK(r.error.find("AUTH refused") != std::string::npos);
    }
    auto o = options_for(server, {name}, "h1", "ns", log);
    o.connection.auth.password = "pw-secret";
    REQUIRE(pr::flusher(o).flush_once().ok);
    // An ACL user with only what a flusher and a reader need.
    raw_client admin(server.port(), "pw-secret");
    const auto set = admin.run({"ACL", "SETUSER", "flusher", "reset", "on", ">fl-secret", "~{procsafe:*", "~procsafe:namespaces",
                                "+fcall", "+hmget", "+hget", "+hset", "+hincrby", "+hincrbyfloat", "+pexpire", "+time", "+sadd",
                                "+del", "+function|load", "+hgetall", "+hkeys", "+smembers", "+multi", "+exec"});
    REQUIRE(set.str == "OK");
    seg.find<procsafe::atomic_counter<std::int64_t>>("c").store(8);
    o.connection.auth = {"flusher", "fl-secret"};
    REQUIRE(pr::flusher(o).flush_once().ok);
    auto reader = connection_to(server);
    reader.auth = {"flusher", "fl-secret"};
    CHECK(pr::read_fleet(reader, "ns").totals.at("c") == "8");
    o.connection.auth = {"flusher", "nope"};
    const auto r = pr::flusher(o).flush_once();
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("AUTH as flusher refused") != std::string::npos);
}

TEST_CASE("redis: the fleet in the Prometheus text format", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto a = unique_name("rpa"), b = unique_name("rpb");
    removed_at_exit ca{a}, cb{b};
    std::vector<procsafe::segment> segs;
    for (const auto& n : {a, b}) {
        auto seg = procsafe::segment::create(n, 1 << 20);
        seg.construct<procsafe::sharded_counter<std::int64_t>>("requests", procsafe::metadata{.help = "Requests handled."})
            .increment(n == a ? 3 : 4);
        auto& codes = seg.construct<i64_array>(
            "responses", procsafe::metadata{.help = "By \"code\".", .label = "code", .label_values = {"200", "a\"b"}}, 2);
        codes[0].increment(1);
        codes[1].increment(2);
        auto& h = seg.construct<procsafe::histogram>("latency", procsafe::metadata{.help = "Latency.", .unit = "seconds"},
                                                     std::vector{0.5});
        h.observe(0.25);
        h.observe(2);
        seg.construct<procsafe::live_gauge<std::int64_t>>("busy", procsafe::metadata{.help = "Busy."}).add(2);
        segs.push_back(std::move(seg));
    }
    log_lines log;
    pr::flusher f(options_for(server, {a, b}, "h1", "web", log));
    REQUIRE(f.flush_once().ok);
    const auto text = pr::prometheus_text({pr::read_fleet(connection_to(server), "web")});
    CHECK(text ==
          "# HELP busy Busy.\n"
          "# TYPE busy gauge\n"
          "busy{namespace=\"web\"} 4\n"
          "# HELP latency_seconds Latency.\n"
          "# TYPE latency_seconds histogram\n"
          "latency_seconds_bucket{namespace=\"web\",le=\"0.5\"} 2\n"
          "latency_seconds_bucket{namespace=\"web\",le=\"+Inf\"} 4\n"
          "latency_seconds_sum{namespace=\"web\"} 4.5\n"
          "latency_seconds_count{namespace=\"web\"} 4\n"
          "# HELP requests_total Requests handled.\n"
          "# TYPE requests_total counter\n"
          "requests_total{namespace=\"web\"} 7\n"
          "# HELP responses_total By \"code\".\n"
          "# TYPE responses_total counter\n"
          "responses_total{namespace=\"web\",code=\"200\"} 2\n"
          "responses_total{namespace=\"web\",code=\"a\\\"b\"} 4\n");
}

TEST_CASE("redis: 10,000 counters in one flush", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    const auto name = unique_name("r10k");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 16 << 20);
    std::vector<procsafe::atomic_counter<std::int64_t>*> counters;
    for (int i = 0; i < 2000; ++i)
        counters.push_back(&seg.construct<procsafe::atomic_counter<std::int64_t>>(procsafe_test::numbered("c", i)));
    auto& arr = seg.construct<i64_array>("arr", 8000);
    for (int i = 0; i < 2000; ++i) counters[static_cast<std::size_t>(i)]->store(i);
    for (std::size_t i = 0; i < 8000; ++i) arr[i].store(static_cast<std::int64_t>(i) * 3);
    log_lines log;
    pr::flusher f(options_for(server, {name}, "h1", "big", log));
    auto r = f.flush_once();
    REQUIRE(r.ok);
    CHECK(r.fields == 10000);
    for (int i = 0; i < 2000; ++i) counters[static_cast<std::size_t>(i)]->increment(1);
    for (std::size_t i = 0; i < 8000; ++i) arr[i].increment(1);
    r = f.flush_once();
    REQUIRE(r.ok);
    CHECK(r.fields == 10000);
    CHECK(r.fcalls == 5);
    std::printf("flush of 10,000 changed counters: %.1f ms\n", r.seconds * 1e3);
    const auto fleet = pr::read_fleet(connection_to(server), "big");
    CHECK(fleet.totals.size() == 10000);
    CHECK(fleet.totals.at("c1999") == "2000");
    CHECK(fleet.totals.at("arr{index=\"7999\"}") == "23998");
}

TEST_CASE("redis: an object whose label values repeat is skipped and logged, never two fields of one name", "[redis]") {
    // construct() refuses {"200", "200"}; a segment's owner can still write
    // them in place, and a reader of another build may hand them over.
    procsafe::object_info o;
    o.name = "responses";
    o.kind = procsafe::detail::object_kind::atomic_counter_array;
    o.type = "atomic_counter_array<int64>";
    o.metric = procsafe::metric_type::counter;
    o.label = "code";
    o.label_values = {"200", "200", "404"};
    o.values = {std::int64_t{5}, std::int64_t{7}, std::int64_t{1}};
    procsafe::object_info other;
    other.name = "requests";
    other.kind = procsafe::detail::object_kind::atomic_counter;
    other.type = "atomic_counter<int64>";
    other.metric = procsafe::metric_type::counter;
    other.values = {std::int64_t{3}};
    const auto c = procsafe::redis::detail::collect({o, other});
    REQUIRE(c.fields.size() == 1);
    CHECK(c.fields[0].name == "requests");
    REQUIRE(c.skipped.size() == 1);
    CHECK(c.skipped[0].object == "responses");
    CHECK(c.skipped[0].why.find("responses{code=\"200\"}") != std::string::npos);
    CHECK(c.skipped[0].why.find("repeated") != std::string::npos);
}

TEST_CASE("redis: hash slots as Redis Cluster computes them", "[redis]") {
    // CLUSTER KEYSLOT's answers (Redis Cluster specification).
    CHECK(procsafe::redis::detail::key_slot("123456789") == 0x31C3);  // CRC16-XMODEM's check value
    CHECK(procsafe::redis::detail::key_slot("foo") == 12182);
    CHECK(procsafe::redis::detail::key_slot("{user1000}.following") == procsafe::redis::detail::key_slot("user1000"));
    CHECK(procsafe::redis::detail::key_slot("foo{}{bar}") != procsafe::redis::detail::key_slot("bar"));  // "{}": the whole key
    CHECK(procsafe::redis::detail::key_slot("foo{{bar}}zap") == procsafe::redis::detail::key_slot("{bar"));
    // Every key of a stripe shares its slot; stripes of one namespace differ.
    const std::string rep = pr::keys::reporter("h", "s", 7);
    CHECK(procsafe::redis::detail::key_slot(pr::keys::totals("ns", 3)) == procsafe::redis::detail::key_slot(pr::keys::watermarks("ns", rep, 3)));
    CHECK(procsafe::redis::detail::key_slot(pr::keys::totals("ns", 3)) == procsafe::redis::detail::key_slot(pr::keys::reporters("ns", 3)));
    CHECK(procsafe::redis::detail::key_slot(pr::keys::config("ns")) == procsafe::redis::detail::key_slot(pr::keys::totals("ns")));
    CHECK(pr::keys::totals("ns") == "{procsafe:ns}:total");  // stripe 0: the layout before stripes
    CHECK(pr::keys::totals("ns", 5) == "{procsafe:ns|5}:total");
    CHECK(pr::keys::totals("a", 1) != pr::keys::totals("a:1"));  // '|' is no namespace's character
    CHECK(pr::keys::stripe_of(rep, 1) == 0);
    std::set<std::uint32_t> seen;
    for (int i = 0; i < 200; ++i) seen.insert(pr::keys::stripe_of(pr::keys::reporter("host-" + std::to_string(i), "web", 1), 16));
    CHECK(seen.size() == 16);
}

TEST_CASE("redis: a namespace spread over stripes: recorded at its first flush, summed by the reader", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    raw_client redis(server.port());
    log_lines log;
    constexpr int hosts = 12;
    std::vector<std::string> names;
    std::vector<removed_at_exit> cleanup;
    cleanup.reserve(hosts);  // never moved: a moved-from one would remove its segment
    std::vector<procsafe::segment> segs;
    std::int64_t expected = 0;
    for (int h = 0; h < hosts; ++h) {
        names.push_back(unique_name("rstripe") + "_" + std::to_string(h));
        cleanup.push_back({names.back()});
        segs.push_back(procsafe::segment::create(names.back(), 1 << 16));
        segs.back().construct<procsafe::atomic_counter<std::int64_t>>("c").store(1000 + h);
        expected += 1000 + h;
    }
    std::set<std::uint32_t> stripes_used;
    for (int h = 0; h < hosts; ++h) {
        auto o = options_for(server, {names[h]}, "host-" + std::to_string(h), "striped", log);
        o.stripes = 8;
        pr::flusher f(o);
        const auto r = f.flush_once();
        INFO(r.error);
        REQUIRE(r.ok);
        const auto inc = procsafe::segment_view::open(names[h]).incarnation();
        const auto rep = pr::keys::reporter("host-" + std::to_string(h), names[h], inc);
        const auto stripe = pr::keys::stripe_of(rep, 8);
        stripes_used.insert(stripe);
        CHECK(redis.hget(pr::keys::watermarks("striped", rep, stripe), "c") == std::to_string(1000 + h));
    }
    CHECK(stripes_used.size() > 1);
    CHECK(redis.hget(pr::keys::config("striped"), "stripes") == "8");
    auto f = pr::read_fleet(connection_to(server), "striped");
    CHECK(f.stripes == 8);
    CHECK(f.totals.at("c") == std::to_string(expected));
    CHECK(f.reporters.size() == hosts);
    CHECK(f.objects.count("c") == 1);

    // A flusher asking for other stripes uses the recorded ones, and says so once.
    segs[0].find<procsafe::atomic_counter<std::int64_t>>("c").fetch_add(5);
    expected += 5;
    {
        auto o = options_for(server, {names[0]}, "host-0", "striped", log);
        o.stripes = 4;
        pr::flusher g(o);
        REQUIRE(g.flush_once().ok);
        REQUIRE(g.flush_once().ok);
    }
    CHECK(log.count("is spread over 8 stripes since its first flush; 4 asked for, 8 used") == 1);
    CHECK(redis.hget(pr::keys::config("striped"), "stripes") == "8");
    CHECK(pr::read_fleet(connection_to(server), "striped").totals.at("c") == std::to_string(expected));

    // A namespace flushed before stripes existed (its reporters in stripe
    // 0, nothing recorded) stays one stripe: no reporter moves and counts again.
    REQUIRE(redis.run({"HSET", pr::keys::reporters("old"), "h|s|0000000000000001", "1 {}"}).integer == 1);
    {
        auto o = options_for(server, {names[1]}, "host-1", "old", log);
        o.stripes = 8;
        pr::flusher g(o);
        REQUIRE(g.flush_once().ok);
    }
    CHECK(redis.hget(pr::keys::config("old"), "stripes") == "1");
    CHECK(pr::read_fleet(connection_to(server), "old").stripes == 1);
    CHECK(pr::read_fleet(connection_to(server), "old").totals.at("c") == "1001");

    // A record that is not 1 to 1024 stops flusher and reader, naming it.
    REQUIRE(redis.run({"HSET", pr::keys::config("bad"), "stripes", "0"}).integer == 1);
    {
        auto o = options_for(server, {names[2]}, "host-2", "bad", log);
        const auto r = pr::flusher(o).flush_once();
        CHECK_FALSE(r.ok);
        CHECK(r.error.find("namespace 'bad' records 0 stripes ({procsafe:bad}:config): not 1 to 1024") != std::string::npos);
    }
    REQUIRE(redis.run({"HSET", pr::keys::config("bad"), "stripes", "99999999999999999999999"}).integer == 0);
    CHECK_THROWS_WITH(pr::read_fleet(connection_to(server), "bad"),
                      Catch::Matchers::Contains("namespace 'bad' records 99999999999999999999999 stripes"));
    auto o = options_for(server, {names[2]}, "host-2", "x", log);
    o.stripes = 1025;
    CHECK_THROWS_AS(pr::flusher(o), std::invalid_argument);
}

TEST_CASE("redis: a Redis Cluster node given as one server: the error says to use --redis-cluster", "[redis]") {
    PROCSAFE_NEED_REDIS();
    // A cluster of one master holding every slot: enough for MOVED-free
    // routing, and a server that answers MOVED when asked as one server is
    // simulated by a key of a slot it does not hold: a one-node cluster
    // holds all of them, so the error is forced with CLUSTER DELSLOTS.
    redis_server server({"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}, true);
    raw_client redis(server.port());
    const auto name = unique_name("rcnode");
    removed_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, 1 << 16);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("c").store(3);
    log_lines log;
    auto o = options_for(server, {name}, "h", "one", log);
    const auto r = pr::flusher(o).flush_once();  // no slot served: CLUSTERDOWN
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("give its nodes with --redis-cluster") != std::string::npos);
    // Given as a cluster: still no slot served; the error says so, bounded.
    o.connection.cluster = {pr::endpoint::parse(server.address())};
    const auto t0 = std::chrono::steady_clock::now();
    const auto c = pr::flusher(o).flush_once();
    CHECK_FALSE(c.ok);
    CHECK(c.error.find("no node gave the slot map") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    // Every slot added: the one-node cluster counts.
    std::vector<std::string> add{"CLUSTER", "ADDSLOTSRANGE", "0", "16383"};
    REQUIRE(redis.run(add).str == "OK");
    REQUIRE(eventually([&] { return redis.run({"CLUSTER", "INFO"}).str.find("cluster_state:ok") != std::string::npos; }));
    REQUIRE(pr::flusher(o).flush_once().ok);
    pr::connection_options co;
    co.cluster = o.connection.cluster;
    CHECK(pr::read_fleet(co, "one").totals.at("c") == "3");
    CHECK(pr::read_fleet(co, "one").stripes == 16);
    CHECK(pr::fleet_namespaces(co) == std::vector<std::string>{"one"});
}

TEST_CASE("redis: a stripe's slot moved to a master holding older watermarks: the next flush reads them again", "[redis]") {
    // A takeover (CLUSTER FAILOVER TAKEOVER, or a replica promoted while the
    // old master lived on) can leave the slot on a node that never got the
    // last flush the old one acknowledged. The flusher meets a MOVED, not a
    // lost connection: it must not trust what it remembers of the
    // watermarks. Staged on two nodes: the slot is handed to B with its
    // keys as they were before the last flush.
    PROCSAFE_NEED_REDIS();
    const std::vector<std::string> cluster{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                           "--cluster-node-timeout", "2000"};
    redis_server a(cluster, true), b(cluster, true);
    raw_client ra(a.port()), rb(b.port());
    REQUIRE(ra.run({"CLUSTER", "ADDSLOTSRANGE", "0", "8191"}).str == "OK");
    REQUIRE(rb.run({"CLUSTER", "ADDSLOTSRANGE", "8192", "16383"}).str == "OK");
    REQUIRE(ra.run({"CLUSTER", "MEET", "127.0.0.1", std::to_string(b.port())}).str == "OK");
    const std::string id_a = ra.run({"CLUSTER", "MYID"}).str, id_b = rb.run({"CLUSTER", "MYID"}).str;
    REQUIRE(eventually([&] {
        return rb.run({"CLUSTER", "INFO"}).str.find("cluster_state:ok") != std::string::npos &&
               ra.run({"CLUSTER", "INFO"}).str.find("cluster_known_nodes:2") != std::string::npos;
    }));
    // Two segments, each its own namespace: one in a slot of A, one in a
    // slot of B, so the flusher is connected to both before the move.
    auto slot_of = [](const std::string& ns) { return procsafe::redis::detail::key_slot(pr::keys::totals(ns)); };
    std::string name, other;
    for (int i = 0; name.empty() || other.empty(); ++i) {
        const std::string n = unique_name("rmv") + "_" + std::to_string(i);
        (slot_of(n) < 8192 ? name : other) = n;
    }
    removed_at_exit cleanup{name}, cleanup_other{other};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    auto seg_other = procsafe::segment::create(other, 1 << 16);
    seg_other.construct<procsafe::atomic_counter<std::int64_t>>("c").store(1);
    log_lines log;
    pr::flush_options o;
    o.connection.cluster = {pr::endpoint::parse(a.address())};
    o.segments = {name, other};
    o.host_id = "h";
    o.stripes = 1;
    o.log = log.fn();
    pr::flusher f(o);
    c.store(10);
    REQUIRE(f.flush_once().ok);
    const auto rep = pr::keys::reporter("h", name, procsafe::segment_view::open(name).incarnation());
    const std::vector<std::string> keys{pr::keys::totals(name), pr::keys::watermarks(name, rep), pr::keys::reporters(name),
                                        pr::keys::meta(name), pr::keys::config(name)};
    const std::string slot = std::to_string(procsafe::redis::detail::key_slot(keys[0]));
    std::vector<std::string> before;  // the slot's keys as the last flush will not have left them
    for (const auto& k : keys) before.push_back(ra.run({"DUMP", k}).str);
    c.store(25);
    REQUIRE(f.flush_once().ok);  // A acknowledges 25
    CHECK(ra.hget(keys[0], "c") == "25");
    // A's last write never reaches B: B takes the slot with the keys of before.
    REQUIRE(rb.run({"CLUSTER", "SETSLOT", slot, "IMPORTING", id_a}).str == "OK");
    REQUIRE(ra.run({"CLUSTER", "SETSLOT", slot, "MIGRATING", id_b}).str == "OK");
    for (std::size_t i = 0; i < keys.size(); ++i) {
        if (before[i].empty()) continue;
        REQUIRE(rb.run({"ASKING"}).str == "OK");
        REQUIRE(rb.run({"RESTORE", keys[i], "0", before[i]}).str == "OK");
        ra.run({"DEL", keys[i]});
    }
    REQUIRE(rb.run({"CLUSTER", "SETSLOT", slot, "NODE", id_b}).str == "OK");
    REQUIRE(ra.run({"CLUSTER", "SETSLOT", slot, "NODE", id_b}).str == "OK");
    CHECK(rb.hget(keys[0], "c") == "10");
    REQUIRE(f.stats().connects == 2);  // A and B: no new connection makes it cold
    // The counter does not change again. The next round meets MOVED; the
    // one after reads B's watermark (10) and sends the 15 B never got.
    const auto r1 = f.flush_once();
    REQUIRE(r1.ok);
    CHECK(r1.redirects >= 1);
    REQUIRE(f.flush_once().ok);
    CHECK(rb.hget(keys[0], "c") == "25");
    pr::connection_options co;
    co.cluster = o.connection.cluster;
    CHECK(pr::read_fleet(co, name).totals.at("c") == "25");
}

TEST_CASE("redis: redirections parsed as Redis writes them, hostile ones refused", "[redis]") {
    namespace d = procsafe::redis::detail;
    std::uint16_t slot = 0;
    pr::endpoint to;
    REQUIRE(d::parse_redirect("MOVED 3999 127.0.0.1:6381", slot, to, "h"));
    CHECK((slot == 3999 && to.host == "127.0.0.1" && to.port == 6381));
    REQUIRE(d::parse_redirect("ASK 7870 ::1:23111", slot, to, "h"));  // IPv6 without brackets (Redis 7.0)
    CHECK((slot == 7870 && to.host == "::1" && to.port == 23111));
    REQUIRE(d::parse_redirect("MOVED 5 :6390", slot, to, "10.0.0.5"));  // "this connection's host"
    CHECK((to.host == "10.0.0.5" && to.port == 6390));
    REQUIRE(d::parse_redirect("MOVED 5 [fe80::1]:7000", slot, to, "h"));
    CHECK((to.host == "fe80::1" && to.port == 7000));
    CHECK_FALSE(d::parse_redirect("MOVED 16384 a:1", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED -1 a:1", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED 5 a:0", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED 5 a:70000", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED 5 a", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED 5 x\nprocsafe flush: forged:1", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED 5 " + std::string(300, 'a') + ":1", slot, to, "h"));
    CHECK_FALSE(d::parse_redirect("MOVED", slot, to, "h"));
}

TEST_CASE("redis: stripes changed under a running flusher: it keeps its own, and the reader flags a reporter that moved", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    raw_client redis(server.port());
    const auto name = unique_name("rkeep"), other = unique_name("rkeep2");
    removed_at_exit cleanup{name}, cleanup_other{other};
    auto seg = procsafe::segment::create(name, 1 << 16);
    auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>("c");
    c.store(100);
    log_lines log;
    auto o = options_for(server, {name}, "h", "keep", log);
    o.stripes = 16;
    pr::flusher f(o);
    REQUIRE(f.flush_once().ok);
    // K rewritten (by hand, or lost and recorded again), then a failed
    // round (the connection killed): the flusher's reporter stays where
    // its watermarks are, nothing counts twice.
    const auto rep = pr::keys::reporter("h", name, procsafe::segment_view::open(name).incarnation());
    std::uint32_t k = 2;  // a number of stripes that puts this reporter elsewhere
    while (pr::keys::stripe_of(rep, k) == pr::keys::stripe_of(rep, 16)) ++k;
    REQUIRE(redis.run({"HSET", pr::keys::config("keep"), "stripes", std::to_string(k)}).integer == 0);
    redis.run({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
    c.store(130);
    CHECK_FALSE(f.flush_once().ok);  // the killed connection
    REQUIRE(f.flush_once().ok);
    REQUIRE(redis.run({"HSET", pr::keys::config("keep"), "stripes", "16"}).integer == 0);
    auto fleet = pr::read_fleet(connection_to(server), "keep");
    CHECK(fleet.totals.at("c") == "130");
    CHECK(fleet.warnings.empty());
    // A flusher started while 4 is recorded puts the reporter in its
    // stripe of 4: counted twice, and the reader says so.
    REQUIRE(redis.run({"HSET", pr::keys::config("keep"), "stripes", std::to_string(k)}).integer == 0);
    o.stripes = 0;
    REQUIRE(pr::flusher(o).flush_once().ok);
    REQUIRE(redis.run({"HSET", pr::keys::config("keep"), "stripes", "16"}).integer == 0);
    fleet = pr::read_fleet(connection_to(server), "keep");
    CHECK(fleet.totals.at("c") == "260");
    REQUIRE(fleet.warnings.size() == 2);
    CHECK(fleet.warnings[0].find("found in stripe " + std::to_string(pr::keys::stripe_of(rep, k)) + ", not in its stripe " +
                                 std::to_string(pr::keys::stripe_of(rep, 16)) + " of 16") != std::string::npos);
    CHECK(fleet.warnings[1].find("its counts are in the totals twice") != std::string::npos);
    CHECK(pr::prometheus_text({fleet}).find("# procsafe: namespace 'keep': reporter 'h|" + name) == 0);
}

TEST_CASE("redis: a segment whose commands Redis refuses does not stop the others", "[redis]") {
    PROCSAFE_NEED_REDIS();
    redis_server server;
    raw_client redis(server.port());
    const auto a = unique_name("rrefa"), b = unique_name("rrefb");
    removed_at_exit ca{a}, cb{b};
    auto sa = procsafe::segment::create(a, 1 << 16), sb = procsafe::segment::create(b, 1 << 16);
    sa.construct<procsafe::atomic_counter<std::int64_t>>("c").store(1);
    sb.construct<procsafe::atomic_counter<std::int64_t>>("c").store(2);
    REQUIRE(redis.run({"HSET", pr::keys::config(a), "stripes", "zero"}).integer == 1);  // a's namespace: refused
    log_lines log;
    auto o = options_for(server, {a, b}, "h", "", log);
    pr::flusher f(o);
    const auto r = f.flush_once();
    CHECK_FALSE(r.ok);
    CHECK(r.reached_redis);
    CHECK(r.segments == 1);
    CHECK(r.error.find("namespace '" + a + "' records zero stripes") != std::string::npos);
    CHECK(pr::read_fleet(connection_to(server), b).totals.at("c") == "2");
    CHECK_FALSE(f.flush_once().ok);
    CHECK(log.count("records zero stripes") == 1);  // logged when it changes, not each round
    REQUIRE(redis.run({"DEL", pr::keys::config(a)}).integer == 1);
    REQUIRE(f.flush_once().ok);
    CHECK(log.count("segment '" + a + "': flushing again") == 1);
    CHECK(pr::read_fleet(connection_to(server), a).totals.at("c") == "1");
}
