// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Beyond one host, with the real servers (Debian's prometheus and
// prometheus-node-exporter), on 127.0.0.1 with free ports and temporary
// directories, started and stopped here: three "hosts" (a segment and its
// exporter each), workers making a known number of increments and
// observations, and Prometheus' sum over the three equal to the exact total.
// Label "integration": run by .ci/run (ctest --preset integration), not by
// the everyday ctest --preset dev.
#include "../catch.hpp"
#include "../support/skip.hpp"
#include "cli_support.hpp"

#include <procsafe/procsafe.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>

using namespace procsafe_test;
using json = nlohmann::json;

namespace {

constexpr int hosts = 3;
constexpr int workers_per_host = 2;
constexpr int per_worker = 5000;
constexpr std::int64_t total = std::int64_t{hosts} * workers_per_host * per_worker;
// Each worker observes 0, 0.25, 0.5, 0.75 in turn: sums exact in doubles.
constexpr double observed_sum = hosts * workers_per_host * (per_worker / 4) * 1.5;

/// One host's segment: what its workers count.
struct host {
    std::string name;
    procsafe::segment seg;
    procsafe::sharded_counter<std::int64_t>& requests;
    procsafe::counter_array<std::int64_t, procsafe::atomic_sync>& responses;
    procsafe::histogram& latency;

    explicit host(std::string n)
        : name(std::move(n)),
          seg(procsafe::segment::create(name, 1 << 20)),
          requests(seg.construct<procsafe::sharded_counter<std::int64_t>>("requests", procsafe::metadata{.help = "Requests handled."})),
          responses(seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>(
              "responses", procsafe::metadata{.help = "Responses by status code.", .label = "code", .label_values = {"200", "404"}}, 2)),
          latency(seg.construct<procsafe::histogram>("request_seconds", procsafe::metadata{.help = "Request latency.", .unit = "seconds"},
                                                     std::vector{0.1, 0.5, 1.0})) {}

    /// A worker's share, in a forked child.
    int work() {
        for (int k = 0; k < per_worker; ++k) {
            requests.increment();
            responses.at(k % 10 == 0 ? 1 : 0).increment();
            latency.observe(0.25 * (k % 4));
        }
        return 0;
    }
};

/// Forks every host's workers; they start at once and run while the servers scrape.
std::vector<pid_t> start_workers(std::vector<std::unique_ptr<host>>& h) {
    return fork_children(hosts * workers_per_host, [&](int i) { return h[static_cast<std::size_t>(i / workers_per_host)]->work(); });
}

/// A Prometheus server on a free port, with its own configuration and
/// storage in `dir`, scraping `targets` (address, instance label) every second.
class prometheus_server {
public:
    prometheus_server(const std::string& binary, const temp_dir& dir, const std::vector<std::pair<std::string, std::string>>& targets)
        : port_(free_port()) {
        std::string config =
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: procsafe\n    static_configs:\n";
        for (const auto& [address, instance] : targets)
            config += "      - targets: ['" + address + "']\n        labels: {instance: " + instance + "}\n";
        write_file(dir / "prometheus.yml", config);
        server_ = std::make_unique<background>(
            std::vector<std::string>{binary, "--config.file=" + (dir / "prometheus.yml"), "--storage.tsdb.path=" + (dir / "data"),
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--web.console.templates=" + dir.path().string(),
                                     "--web.console.libraries=" + dir.path().string(), "--storage.tsdb.retention.time=1h", "--log.level=warn"},
            dir / "prometheus");
    }

    /// Waits until it answers /-/ready (bounded); false if it died or never did.
    bool ready(std::chrono::seconds limit = 30s) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            if (!server_->running()) return false;
            if (auto r = http_get(port_, "/-/ready"); r && r->status == 200) return true;
            std::this_thread::sleep_for(100ms);
        }
        return false;
    }

    /// An instant query's result vector (empty on an error or no answer).
    json query(const std::string& promql) const {
        httplib::Client c("127.0.0.1", port_);
        c.set_connection_timeout(2);
        c.set_read_timeout(5);
        auto r = c.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
        if (!r || r->status != 200) return json::array();
        const json j = json::parse(r->body, nullptr, false);
        if (j.is_discarded() || j.value("status", "") != "success") return json::array();
        return j.at("data").at("result");
    }

    /// Polls `promql` (a single-value query) until it returns `want`, at most
    /// `limit`; returns the last value seen ("" for none).
    std::string wait_for_value(const std::string& promql, const std::string& want, std::chrono::seconds limit = 60s) const {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        std::string last;
        while (std::chrono::steady_clock::now() < deadline) {
            const json result = query(promql);
            last = result.size() == 1 ? result[0].at("value")[1].get<std::string>() : "";
            if (last == want) break;
            std::this_thread::sleep_for(250ms);
        }
        return last;
    }

    int stop() { return server_->stop(SIGTERM, 30s); }
    std::string log() const { return server_->out() + server_->err(); }

private:
    int port_;
    std::unique_ptr<background> server_;
};

std::string seconds_since(std::chrono::steady_clock::time_point t0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return buf;
}

/// The checks both tests make once the totals are in: exact sums over the
/// three instances, each instance there.
void check_totals(const prometheus_server& prom, const std::string& job_note) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string requests = prom.wait_for_value("sum(requests_total)", std::to_string(total));
    std::printf("%s: sum(requests_total) = %s (expected %lld) after %s\n", job_note.c_str(), requests.c_str(),
                static_cast<long long>(total), seconds_since(t0).c_str());
    CHECK(requests == std::to_string(total));
    CHECK(prom.wait_for_value("sum(request_seconds_count)", std::to_string(total), 10s) == std::to_string(total));
    CHECK(prom.wait_for_value("sum(request_seconds_sum)", std::to_string(static_cast<long long>(observed_sum)), 10s) ==
          std::to_string(static_cast<long long>(observed_sum)));
    CHECK(prom.wait_for_value("sum(request_seconds_bucket{le=\"0.5\"})", std::to_string(total / 2 + total / 4), 10s) ==
          std::to_string(total / 2 + total / 4));
    CHECK(prom.wait_for_value("sum(responses_total{code=\"404\"})", std::to_string(total / 10), 10s) == std::to_string(total / 10));
    const json by_instance = prom.query("sum by (instance) (requests_total)");
    REQUIRE(by_instance.size() == hosts);
    for (const auto& r : by_instance) {
        CHECK(r.at("value")[1] == std::to_string(total / hosts));
        std::printf("%s:   instance %s: %s\n", job_note.c_str(), r.at("metric").at("instance").get<std::string>().c_str(),
                    r.at("value")[1].get<std::string>().c_str());
    }
}

}  // namespace

TEST_CASE("Prometheus scrapes three procsafe serve processes and sums them exactly", "[integration]") {
    const std::string prometheus = find_program("prometheus");
    if (prometheus.empty()) PROCSAFE_SKIP("prometheus is not installed (Debian package prometheus)");
    temp_dir dir;

    std::vector<std::unique_ptr<host>> h;
    std::vector<std::unique_ptr<background>> exporters;
    std::vector<std::pair<std::string, std::string>> targets;
    for (int i = 0; i < hosts; ++i) {
        h.push_back(std::make_unique<host>(unique_name("host")));
        exporters.push_back(std::make_unique<background>(
            std::vector<std::string>{procsafe_cli, "serve", h.back()->name, "--listen", "127.0.0.1:0"}, dir / ("serve" + std::to_string(i))));
        const auto m = exporters.back()->wait_for("^listening on (127\\.0\\.0\\.1:[0-9]+)\n");
        REQUIRE(m);
        targets.emplace_back((*m)[1], "host" + std::to_string(i + 1));
    }

    prometheus_server prom(prometheus, dir, targets);
    const auto pids = start_workers(h);  // counting while Prometheus starts and scrapes
    INFO(prom.log());
    REQUIRE(prom.ready());
    REQUIRE(join_children(pids) == hosts * workers_per_host);
    check_totals(prom, "prometheus <- procsafe serve");

    for (const auto& r : prom.query("up")) CHECK(r.at("value")[1] == "1");
    CHECK(prom.stop() == 0);
    for (auto& e : exporters) CHECK(e->stop(SIGTERM) == 0);
}

TEST_CASE("node_exporter's textfile collector serves what procsafe export --output writes", "[integration]") {
    std::string node_exporter = find_program("prometheus-node-exporter");
    if (node_exporter.empty()) node_exporter = find_program("node_exporter");
    if (node_exporter.empty()) PROCSAFE_SKIP("node_exporter is not installed (Debian package prometheus-node-exporter)");
    const std::string prometheus = find_program("prometheus");
    temp_dir dir;

    std::vector<std::unique_ptr<host>> h;
    std::vector<std::unique_ptr<background>> exporters;
    std::vector<int> ports;
    std::vector<std::string> files;
    for (int i = 0; i < hosts; ++i) {
        h.push_back(std::make_unique<host>(unique_name("nehost")));
        const std::string textfiles = dir / ("textfile" + std::to_string(i));
        std::filesystem::create_directory(textfiles);
        files.push_back(textfiles + "/procsafe.prom");
        exporters.push_back(std::make_unique<background>(
            std::vector<std::string>{node_exporter, "--web.listen-address=127.0.0.1:0", "--collector.disable-defaults", "--collector.textfile",
                                     "--collector.textfile.directory=" + textfiles, "--web.disable-exporter-metrics"},
            dir / ("node_exporter" + std::to_string(i))));
        const auto m = exporters.back()->wait_for("msg=\"Listening on\" address=127\\.0\\.0\\.1:([0-9]+)", 20s, true);
        INFO(exporters.back()->err());
        REQUIRE(m);
        ports.push_back(std::stoi((*m)[1]));
    }
    std::unique_ptr<prometheus_server> prom;
    if (!prometheus.empty()) {
        std::vector<std::pair<std::string, std::string>> targets;
        for (int i = 0; i < hosts; ++i) targets.emplace_back("127.0.0.1:" + std::to_string(ports[static_cast<std::size_t>(i)]), "host" + std::to_string(i + 1));
        prom = std::make_unique<prometheus_server>(prometheus, dir, targets);
    }

    // The files rewritten (as cron would, only faster) while the workers
    // count and the collectors read them: a collector must never see a
    // partial file (node_textfile_scrape_error would be 1).
    const auto pids = start_workers(h);
    int exports = 0, scrapes = 0;
    auto export_and_scrape = [&] {
        for (int i = 0; i < hosts; ++i) {
            const auto i_ = static_cast<std::size_t>(i);
            const auto r = cli({"export", h[i_]->name, "--output", files[i_]});
            INFO(r.err);
            REQUIRE(r.status == 0);
            ++exports;
            const auto res = http_get(ports[i_], "/metrics");
            REQUIRE(res);
            REQUIRE(res->status == 200);
            INFO(res->body);
            REQUIRE(res->body.find("node_textfile_scrape_error 0") != std::string::npos);
            ++scrapes;
        }
    };
    for (int round = 0; round < 10; ++round) {
        export_and_scrape();
        std::this_thread::sleep_for(20ms);
    }
    REQUIRE(join_children(pids) == hosts * workers_per_host);
    export_and_scrape();  // the final totals
    std::printf("node_exporter <- procsafe export: %d exports, %d scrapes, node_textfile_scrape_error 0 in each\n", exports, scrapes);

    for (int i = 0; i < hosts; ++i) {
        const auto i_ = static_cast<std::size_t>(i);
        const auto res = http_get(ports[i_], "/metrics");
        REQUIRE(res);
        const std::string want = "requests_total{segment=\"" + h[i_]->name + "\"} " + std::to_string(total / hosts);
        INFO(res->body);
        CHECK(res->body.find(want) != std::string::npos);
        CHECK(res->body.find("request_seconds_count{segment=\"" + h[i_]->name + "\"} " + std::to_string(total / hosts)) != std::string::npos);
        if (const std::string promtool = find_program("promtool"); !promtool.empty()) {
            const auto check = promtool_check(promtool, read_file(files[i_]));
            INFO(check.out << check.err);
            CHECK(check.status == 0);
        }
    }

    if (prom) {
        INFO(prom->log());
        REQUIRE(prom->ready());
        check_totals(*prom, "prometheus <- node_exporter <- procsafe export");
        CHECK(prom->stop() == 0);
    } else {
        WARN("prometheus is not installed: the sum over the node_exporters was not queried");
    }
    for (auto& e : exporters) CHECK(e->stop(SIGTERM) == 128 + SIGTERM);  // node_exporter dies of SIGTERM: no handler
}

TEST_CASE("Prometheus scrapes procsafe serve of a healthy segment beside one another user rewrote after construction: "
          "the target stays up, no series is injected, the healthy series are kept",
          "[integration][root][hostile]") {
    const std::string prometheus = find_program("prometheus");
    if (prometheus.empty()) PROCSAFE_SKIP("prometheus is not installed (Debian package prometheus)");
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to act as another user");
    temp_dir dir;

    const std::string inject = "a=\"1\"} 666\nnode_load1 1e9\n# x";
    const std::string label(inject.size(), 'l');
    const std::string bad_help = "HE\xff\xfeHELP";  // not UTF-8: a Prometheus server refuses the whole scrape

    // The healthy segment, root's.
    const std::string healthy = unique_name("healthy");
    auto seg = procsafe::segment::create(healthy, 1 << 20);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("good_total", procsafe::metadata{.help = "Good."}, 4);

    // Two segments of another user (nobody), rewritten in place after
    // construction: (a) a label name that would inject a series, (b) a help
    // text that is not UTF-8.
    planted injected_seg(unique_name("inject")), bad_utf8_seg(unique_name("badutf8"));
    const std::vector<std::pair<std::string, std::string>> attacks = {{"injected_label", injected_seg.name},
                                                                      {"bad_utf8_help", bad_utf8_seg.name}};
    REQUIRE(create_as_nobody(injected_seg.name, [&](procsafe::segment& s) {
                s.construct<procsafe::counter_array<int, procsafe::atomic_sync>>(
                    "codes", procsafe::metadata{.help = "Codes.", .label = label, .label_values = {"200", "500"}}, 2)[0].fetch_add(3);
                s.construct<procsafe::atomic_counter<int>>("other_total", 5);
                rewrite(s, label, inject);
            }) == 0);
    REQUIRE(create_as_nobody(bad_utf8_seg.name, [&](procsafe::segment& s) {
                s.construct<procsafe::atomic_counter<int>>("helped", procsafe::metadata{.help = "HELPHELP"}, 6);
                s.construct<procsafe::atomic_counter<int>>("other_total", 5);
                rewrite(s, "HELPHELP", bad_help);
            }) == 0);

    // One procsafe serve per attack, each serving the healthy segment too:
    // one Prometheus target each.
    std::vector<std::unique_ptr<background>> exporters;
    std::vector<std::pair<std::string, std::string>> targets;
    for (const auto& [instance, name] : attacks) {
        exporters.push_back(std::make_unique<background>(
            std::vector<std::string>{procsafe_cli, "serve", healthy, name, "--listen", "127.0.0.1:0"}, dir / ("serve_" + instance)));
        const auto m = exporters.back()->wait_for("^listening on (127\\.0\\.0\\.1:[0-9]+)\n");
        REQUIRE(m);
        targets.emplace_back((*m)[1], instance);
    }

    prometheus_server prom(prometheus, dir, targets);
    INFO(prom.log());
    REQUIRE(prom.ready());
    // Both targets scraped (up is 1 or 0 for each once scraped), then a
    // few more scrapes, so that whatever a scrape stores is there.
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(prom.wait_for_value("count(up)", "2", 30s) == "2");
    std::this_thread::sleep_for(3s);
    std::printf("prometheus <- procsafe serve of rewritten segments: both targets scraped after %s\n", seconds_since(t0).c_str());

    const json up = prom.query("up");
    REQUIRE(up.size() == 2);
    for (const auto& r : up) {
        INFO("target " << r.at("metric").at("instance").get<std::string>());
        CHECK(r.at("value")[1] == "1");  // a bad help text would make the whole target down
    }
    const json injected = prom.query("node_load1");
    INFO("node_load1: " << injected.dump());
    CHECK(injected.empty());
    const json good = prom.query("good_total");
    INFO("good_total: " << good.dump());
    CHECK(good.size() == 2);  // the healthy segment's series, through each target
    for (const auto& r : good) CHECK(r.at("value")[1] == "4");
    CHECK(prom.query("other_total").size() == 2);  // the hostile segments' valid objects still served
    CHECK(prom.query("helped").empty());

    CHECK(prom.stop() == 0);
    for (auto& e : exporters) {
        INFO(e->err());
        CHECK(e->stop(SIGTERM) == 0);
    }
}
