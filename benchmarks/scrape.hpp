// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// procsafe-bench, "see the counters from outside": what a scrape costs
// (implemented in scrape.cpp, a translation unit of its own so that its
// loops do not change how the compiler inlines procsafe_bench.cpp's).
//
// 1. render: the time to render the Prometheus text of N series written by
//    10 processes, procsafe (segment_view::open + prometheus_exposition::add
//    + str(), what `procsafe serve` does per scrape) against Python's
//    prometheus_client in multiprocess mode (a fresh CollectorRegistry +
//    MultiProcessCollector + generate_latest, what its /metrics handler
//    does; peers/python_prometheus_scrape.py).
// 2. under_scrape: what writers pay while a reader process scrapes their
//    segment 10 times a second, against no reader, the runs interleaved.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace scrape {

inline double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}
inline double minimum(const std::vector<double>& v) {
    return v.empty() ? NAN : *std::min_element(v.begin(), v.end());
}

// ---------------------------------------------------------------------------
// 1. Rendering a scrape of many series.

/// What procsafe's side is, as printed.
inline constexpr const char* render_procsafe_what =
    "counter_array<int64, atomic_sync> \"requests\" (padded: a 128-byte line a series), metadata label "
    "\"series\" with values \"0\"..\"N-1\"; a scrape = segment_view::open + prometheus_exposition::add + str()";
inline constexpr const char* render_python_what =
    "Counter(\"requests\", labelnames=[\"series\"]), one mmap file per process in PROMETHEUS_MULTIPROC_DIR; "
    "a scrape = CollectorRegistry + MultiProcessCollector + generate_latest";

/// One side's scrapes of one workload.
struct render_cost {
    std::string skipped;          ///< empty when it ran
    std::vector<double> seconds;  ///< one per scrape
    double total = NAN;           ///< the sum of the series read back
    std::size_t samples = 0;      ///< sample lines in the text
    std::size_t bytes = 0;        ///< the text's length
    double median_ms() const { return median(seconds) * 1e3; }
    double best_ms() const { return minimum(seconds) * 1e3; }
};

/// The workload: `processes` writers, each making `increments` increments,
/// the k-th to series k % series (so that each touches every series when
/// increments >= series, as the workers of a server do over time).
struct render_workload {
    int series;
    int processes;
    long increments;  ///< per process
    double expected() const { return static_cast<double>(processes) * static_cast<double>(increments); }
};

/// One row of the render table: a workload, both sides.
struct render_row {
    render_workload w;
    render_cost procsafe;
    render_cost python;
    bool python_ran() const { return python.skipped.empty() && !python.seconds.empty(); }
    /// python / procsafe, medians; with `best`, the better of that and best / best.
    std::optional<double> speedup(bool best = false) const {
        if (!python_ran() || procsafe.seconds.empty()) return std::nullopt;
        const double m = python.median_ms() / procsafe.median_ms();
        return best ? std::max(m, python.best_ms() / procsafe.best_ms()) : m;
    }
};

/// One row of the render table, measured: procsafe's side, and Python's
/// (peers_dir/python_prometheus_scrape.py) unless `python_skip` says why not.
render_row measure_render_row(const render_workload& w, int scrapes, const std::string& peers_dir,
                              int python_scrapes, const std::string& python_skip = {});
void print_render(const std::vector<render_row>& rows, int procsafe_scrapes);

// ---------------------------------------------------------------------------
// 2. Writers while a reader scrapes, against no reader.

/// Where the writers and the reader run: pinned to CPUs of their own when
/// this process may use at least writers + 1 CPUs, else wherever the
/// scheduler puts them.
struct placement {
    bool pinned = false;
    std::vector<int> writer_cpus;  ///< one per writer, when pinned
    int reader_cpu = -1;
    int cpus = 0;  ///< CPUs this process may use

    static placement choose(int writers);
    static void pin(int cpu);  ///< the calling process, to one CPU (nothing for -1)
    std::string describe(int writers) const {
        if (pinned) {
            std::string w;
            for (int c : writer_cpus) w += (w.empty() ? "" : ",") + std::to_string(c);
            return "the " + std::to_string(writers) + " writers pinned to CPUs " + w + ", the reader to CPU " +
                   std::to_string(reader_cpu) + " (of " + std::to_string(cpus) + ")";
        }
        return "the " + std::to_string(writers) + " writers and the reader share this process's " +
               std::to_string(cpus) + " CPUs, not pinned (too few CPUs to give the reader one of its own)";
    }
};

/// One run of the writers, with or without the reader.
struct writer_run {
    double seconds = 0;     ///< from the start line to the last writer's end
    double cpu_ns_per_op = 0;   ///< the writers' CPU time over all their operations
    double wall_ns_per_op = 0;  ///< seconds over all operations (all writers together)
    int scrapes = 0;            ///< the reader's
    double reader_cpu = 0;      ///< the reader's CPU seconds
    std::vector<double> scrape_seconds;
    bool exact = true;
};

/// One writer workload measured with and without the reader, interleaved.
struct under_scrape {
    std::string name;
    std::string what;
    long ops = 0;  ///< per writer per run
    std::vector<writer_run> with, without;
    /// Per pair, without / with: the writers' throughput while scraped over
    /// their throughput unscraped (1: the reader costs them nothing).
    std::vector<double> cpu_ratios, wall_ratios;

    double cpu_ratio() const { return median(cpu_ratios); }
    double wall_ratio() const { return median(wall_ratios); }
    /// The better of the median pair ratio and best run against best run
    /// (quick mode: one noisy run moves one estimator, a regression both).
    double cpu_ratio_best() const {
        auto best = [](const std::vector<writer_run>& v) {
            double b = INFINITY;
            for (const auto& r : v) b = std::min(b, r.cpu_ns_per_op);
            return b;
        };
        return std::max(cpu_ratio(), best(without) / best(with));
    }
    double wall_ratio_best() const {
        auto best = [](const std::vector<writer_run>& v) {
            double b = INFINITY;
            for (const auto& r : v) b = std::min(b, r.wall_ns_per_op);
            return b;
        };
        return std::max(wall_ratio(), best(without) / best(with));
    }
    double scrapes_per_run() const {
        std::vector<double> n;
        for (const auto& r : with) n.push_back(r.scrapes);
        return median(n);
    }
    double run_seconds() const {
        std::vector<double> s;
        for (const auto& r : with) s.push_back(r.seconds);
        return median(s);
    }
    double reader_cpu_share() const {  ///< of one CPU, while the writers ran
        double c = 0, s = 0;
        for (const auto& r : with) c += r.reader_cpu, s += r.seconds;
        return s > 0 ? c / s : 0;
    }
    double scrape_ms() const {
        std::vector<double> all;
        for (const auto& r : with) all.insert(all.end(), r.scrape_seconds.begin(), r.scrape_seconds.end());
        return median(all) * 1e3;
    }
    bool exact() const {
        return std::all_of(with.begin(), with.end(), [](const auto& r) { return r.exact; }) &&
               std::all_of(without.begin(), without.end(), [](const auto& r) { return r.exact; });
    }
    /// The ratio the target judges: wall-clock throughput when the reader had
    /// a CPU of its own, the writers' CPU time per operation otherwise.
    double judged(bool pinned, bool best) const {
        if (pinned) return best ? wall_ratio_best() : wall_ratio();
        return best ? cpu_ratio_best() : cpu_ratio();
    }
};

/// The writer workloads: atomic_counter, sharded_counter (local() writer),
/// counter_array x 1,000.
inline constexpr int under_scrape_workloads = 3;

/// Measures workload `which` (0 .. under_scrape_workloads - 1) with `writers`
/// writer processes: a calibration sizes a run to about `run_seconds`, then
/// `pairs` pairs of runs with and without the reader, the order flipped
/// every pair.
under_scrape measure_under_scrape(int which, int writers, int pairs, double run_seconds, const placement& where);
std::vector<under_scrape> measure_all_under_scrape(int writers, int pairs, double run_seconds, const placement& where);
void print_under_scrape(const std::vector<under_scrape>& all, int writers, const placement& where);

/// Two members of the --json file: "scrape_render" and "writers_under_scrape".
std::string json(const std::vector<render_row>& rows, const std::vector<under_scrape>& under, int writers,
                 const placement& where);

}  // namespace scrape
