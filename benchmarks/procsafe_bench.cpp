// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe-bench: every counter against the raw primitive it wraps, and
// against what users would pick instead (Ruby's raindrops, Python's
// prometheus_client and multiprocessing.Value), in one run.
//   procsafe-bench [--quick] [--processes 1,2,4] [--ops K] [--repeat R]
//                  [--json FILE] [--plot FILE.png|.svg] [--check]
//                  [--no-python] [--no-peers] [--peers DIR]
#include "contenders.hpp"
#include "latency.hpp"
#include "peers.hpp"
#include "scrape.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#ifndef PROCSAFE_BENCH_PEERS_DIR
#define PROCSAFE_BENCH_PEERS_DIR "benchmarks/peers"
#endif

namespace {

constexpr const char* usage =
    "usage: procsafe-bench [--quick] [--processes LIST] [--ops K] [--repeat R]\n"
    "                      [--json FILE] [--plot FILE.png|FILE.svg] [--check]\n"
    "                      [--no-python] [--no-peers] [--peers DIR]\n"
    "  --quick      1,2 processes only (CI); --check then takes the lower of the median and\n"
    "               best-of-run ratios, with relaxed bounds, and re-measures a miss up to twice\n"
    "  --check      exit 1 when a performance target is missed, printing the ratios\n"
    "  --repeat R   runs per cell, medians reported (default 9; 5 with --quick)\n"
    "  --no-python  skip the Python peers (multiprocessing.Value, prometheus_client)\n"
    "  --no-peers   skip every peer (Ruby's raindrops too)\n"
    "  --peers DIR  where the peers' scripts are (default: the source tree's benchmarks/peers)\n";

const char* atomic_name = "procsafe atomic_counter<int64>";
const char* mutex_name = "procsafe mutex_counter<int64>";
const char* fetch_add_name = "raw atomic_ref fetch_add";
const char* robust_name = "raw pthread mutex (robust)";
const char* plain_name = "raw pthread mutex (not robust)";
const char* sharded_name = "procsafe sharded writer (owned_slot)";
const char* sharded_increment_name = "procsafe sharded increment() (owned_slot)";
const char* single_writer_name = "raw single-writer slot";
const char* slot_fetch_add_name = "raw per-process slot fetch_add";
const char* series_array_name = "procsafe counter_array<int64> (1,000 padded)";
const char* series_sharded_name = "procsafe sharded_counter<int64> x 1,000";

/// A suite that takes only the contenders `only` names (all when empty).
struct filtered_suite {
    procsafe::bench::suite& s;
    const std::vector<std::string>& only;
    template <class Setup>
    void add(const std::string& name, Setup setup, procsafe::bench::contender_info info = {}) {
        if (only.empty() || std::find(only.begin(), only.end(), name) != only.end())
            s.add(name, std::move(setup), std::move(info));
    }
};

/// Registers every contender, or only those whose name `only` lists.
void add_contenders(procsafe::bench::suite& suite, const std::vector<std::string>& only = {}) {
    using namespace contenders;
    filtered_suite s{suite, only};
    s.add(atomic_name, procsafe_counter<procsafe::atomic_counter<std::int64_t>>(), {fetch_add_name, "", 0, "atomic"});
    s.add(fetch_add_name, raw_fetch_add(), {"", "std::atomic_ref<int64_t>::fetch_add on one 128-byte line", 0, "atomic"});
    s.add(mutex_name, procsafe_counter<procsafe::mutex_counter<std::int64_t>>(),
          {robust_name, "robust + process-shared pthread mutex, double-buffered value", 0, "mutex"});
    s.add(robust_name, raw_pthread_mutex(true), {"", "PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST, lock/++/unlock", 0, "mutex"});
    s.add(plain_name, raw_pthread_mutex(false), {"", "PTHREAD_PROCESS_SHARED only: a dead owner hangs everyone", 0, "mutex"});
    s.add("boost interprocess_mutex", boost_interprocess_mutex(), {"", "Boost 1.74: not robust", 0, "mutex"});
    s.add(sharded_name, sharded_writer(procsafe::shard_strategy::owned_slot),
          {single_writer_name, "local() writer: the thread's own slot, load + store; read sums 65 lines", 0, "sharded"});
    s.add(sharded_increment_name, sharded(procsafe::shard_strategy::owned_slot),
          {single_writer_name, "increment(): the thread's last counter and its slot, checked at every call", 0, "sharded"});
    s.add("procsafe sharded writer (per_cpu)", sharded_writer(procsafe::shard_strategy::per_cpu),
          {slot_fetch_add_name, "slot of the CPU, lock xadd (rejected: lock xadd costs more than load + store)", 0, "sharded"});
    s.add("procsafe sharded increment() (per_cpu)", sharded(procsafe::shard_strategy::per_cpu),
          {slot_fetch_add_name, "sched_getcpu() at every call, lock xadd (rejected)", 0, "sharded"});
    s.add("procsafe sharded writer (per_process)", sharded_writer(procsafe::shard_strategy::per_process),
          {slot_fetch_add_name, "slot by pid hash, lock xadd (rejected: collisions share a line)", 0, "sharded"});
    s.add(slot_fetch_add_name, per_process_slot<false>(), {"", "own line, lock xadd; read sums all lines", 0, "sharded"});
    s.add(single_writer_name, per_process_slot<true>(), {"", "own line, load + store: the hardware's line", 0, "sharded"});
    s.add("racy load+store (not a contender)", racy(), {"", "relaxed load then store: loses updates"});
}

std::vector<int> parse_list(const char* s) {
    std::vector<int> out;
    for (const char* p = s; *p;) {
        char* end = nullptr;
        const long v = std::strtol(p, &end, 10);
        if (end == p || v < 1 || v > procsafe::bench::detail::max_processes) return {};
        out.push_back(static_cast<int>(v));
        p = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') return {};
    }
    return out;
}


/// "1.23x", "12.3x", "123x": a ratio with the digits that mean something.
std::string times(double r) {
    char buf[32];
    std::snprintf(buf, sizeof buf, r < 10 ? "%.2fx" : r < 100 ? "%.1fx" : "%.0fx", r);
    return buf;
}

/// One workload of the peer tables: procsafe's rows from the harness, the
/// peers' from their scripts, the same processes and increments.
struct peer_workload {
    const char* key;  ///< in the JSON
    std::string title;
    int processes;
    long increments;  ///< per process
    int series;
    std::vector<std::pair<std::string, std::string>> procsafe;  ///< contender, what it is
    const char* first;                                          ///< the two procsafe rows the ratios are to
    const char* second;
    const char* first_short;
    const char* second_short;
    std::vector<std::pair<peers::peer, peers::outcome>> ran{};
    double expected() const { return static_cast<double>(processes) * static_cast<double>(increments); }
};

void print_peer_table(const peer_workload& w, const procsafe::bench::suite& s) {
    using procsafe::bench::workload;
    const auto* first = s.find(w.first, workload::increment, w.processes);
    const auto* second = s.find(w.second, workload::increment, w.processes);
    std::printf("\n%s\n", w.title.c_str());
    std::printf("%-48s %9s %5s  %-18s %16s %16s\n", "contender", "ns/incr", "runs", "total",
                (std::string("x ") + w.first_short).c_str(), (std::string("x ") + w.second_short).c_str());
    auto row = [&](const std::string& name, double ns, std::size_t runs, const std::string& total) {
        std::printf("%-48s %9.2f %5zu  %-18s %16s %16s\n", name.c_str(), ns, runs, total.c_str(),
                    first ? times(ns / first->median_ns()).c_str() : "-",
                    second ? times(ns / second->median_ns()).c_str() : "-");
    };
    for (const auto& [name, what] : w.procsafe) {
        const auto* r = s.find(name, workload::increment, w.processes);
        if (r == nullptr) continue;
        std::int64_t worst = 0;
        for (auto l : r->lost) worst = std::max(worst, l < 0 ? -l : l);
        row(name, r->median_ns(), r->seconds.size(),
            r->lost.empty() ? "-" : worst == 0 ? "exact" : "LOST up to " + std::to_string(worst));
    }
    for (const auto& [p, o] : w.ran) {
        if (!o.skipped.empty()) {
            std::printf("%-48s skipped: %s\n", p.name.c_str(), o.skipped.c_str());
            continue;
        }
        char total[64];
        if (o.exact(w.expected())) std::snprintf(total, sizeof total, "exact");
        else std::snprintf(total, sizeof total, "GOT %.0f", o.worst_total(w.expected()));
        row(p.name, o.median_seconds() * 1e9 / w.expected(), o.seconds.size(), total);
    }
    std::printf("  (total: exact when every run's final total was %.0f)\n", w.expected());
    for (const auto& [name, what] : w.procsafe)
        if (!what.empty()) std::printf("  %-46s %s\n", name.c_str(), what.c_str());
}

std::string peer_json(const peer_workload& w, const procsafe::bench::suite& s) {
    using procsafe::bench::json_array;
    using procsafe::bench::json_number;
    using procsafe::bench::json_string;
    using procsafe::bench::workload;
    const auto* first = s.find(w.first, workload::increment, w.processes);
    const auto* second = s.find(w.second, workload::increment, w.processes);
    std::string o = "  " + json_string(w.key) + ": {\"processes\": " + std::to_string(w.processes) +
                    ", \"increments_per_process\": " + std::to_string(w.increments) +
                    ", \"series\": " + std::to_string(w.series) +
                    ", \"expected_total\": " + json_number(w.expected()) + ",\n    \"procsafe\": [";
    bool comma = false;
    for (const auto& [name, what] : w.procsafe) {
        const auto* r = s.find(name, workload::increment, w.processes);
        if (r == nullptr) continue;
        o += std::string(comma ? "," : "") + "\n      {\"contender\": " + json_string(name) +
             ", \"what\": " + json_string(what) + ", \"median_ns_per_increment\": " + json_number(r->median_ns()) +
             ", \"seconds\": " + json_array(r->seconds) + ", \"lost\": " + json_array(r->lost) + "}";
        comma = true;
    }
    o += "],\n    \"peers\": [";
    comma = false;
    for (const auto& [p, out] : w.ran) {
        o += std::string(comma ? "," : "") + "\n      {\"peer\": " + json_string(p.name) +
             ", \"script\": " + json_string(p.script) + ", \"ran\": " + (out.skipped.empty() ? "true" : "false");
        if (!out.skipped.empty()) {
            o += ", \"skipped\": " + json_string(out.skipped) + "}";
        } else {
            const double ns = out.median_seconds() * 1e9 / w.expected();
            o += ", \"runs\": " + std::to_string(out.seconds.size()) + ", \"median_ns_per_increment\": " +
                 json_number(ns) + ", \"seconds\": " + json_array(out.seconds) + ", \"totals\": " +
                 json_array(out.totals) + ", \"exact\": " + (out.exact(w.expected()) ? "true" : "false") +
                 ", \"ratio_to\": {" + json_string(w.first) + ": " +
                 json_number(first ? ns / first->median_ns() : NAN) + ", " + json_string(w.second) + ": " +
                 json_number(second ? ns / second->median_ns() : NAN) + "}}";
        }
        comma = true;
    }
    return o + "]}";
}

}  // namespace

int main(int argc, char** argv) {
    using procsafe::bench::workload;
    procsafe::bench::options opt;
    opt.progress = ::isatty(2) != 0;  // a progress line for people, not for logs
    bool quick = false, check = false, python = true, run_peers = true;
    bool ops_given = false, repeat_given = false, procs_given = false;
    std::string json_file, plot_file, peers_dir = PROCSAFE_BENCH_PEERS_DIR;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--quick") quick = true;
        else if (a == "--check") check = true;
        else if (a == "--no-python") python = false;
        else if (a == "--no-peers") run_peers = false;
        else if (a == "--peers" && next) peers_dir = argv[++i];
        else if (a == "--json" && next) json_file = argv[++i];
        else if (a == "--plot" && next) plot_file = argv[++i];
        else if (a == "--ops" && next && std::atol(next) > 0) opt.ops = std::atol(argv[++i]), ops_given = true;
        else if (a == "--repeat" && next && std::atoi(next) > 0) opt.repeat = std::atoi(argv[++i]), repeat_given = true;
        else if (a == "--processes" && next && !parse_list(next).empty()) opt.processes = parse_list(argv[++i]), procs_given = true;
        else if (a == "--help" || a == "-h") {
            std::printf("%s", usage);
            return 0;
        } else {
            std::fprintf(stderr, "procsafe-bench: bad argument '%s'\n%s", a.c_str(), usage);
            return 2;
        }
    }
    // The full run repeats each cell 9 times: a contended mutex is bimodal
    // (the lock stays on one CPU, or bounces between two), and a median of 5
    // landed on opposite modes for two contenders often enough to double a
    // ratio (mutex_counter / robust mutex at 2 processes: 1.89 with 5
    // repetitions, 0.92 with 15, same build, same hour).
    if (!repeat_given && !quick) opt.repeat = 9;
    if (quick) {
        if (!ops_given) opt.ops = 200'000;
        if (!repeat_given) opt.repeat = 5;
        if (!procs_given) opt.processes = {1, 2};
        opt.min_run_seconds = 0.01;
    }

    const auto m = procsafe::bench::machine::describe();
    procsafe::bench::suite s(opt);
    add_contenders(s);
    s.run();
    s.print_table(stdout, m);

    // The tutorial's workload: 10 processes x 100,000 increments of one
    // counter, and the same increments spread over 1,000 series (a label
    // with 1,000 values). Fixed counts, no calibration: the workload is the
    // tutorial's own, and the peers run it too.
    const int tutorial_procs = 10, series = 1000;
    const long tutorial_ops = quick ? 20'000 : 100'000;
    const std::size_t sharded_slots = procsafe::sharded_counter<std::int64_t>::default_slots();
    procsafe::bench::suite tutorial({.processes = {tutorial_procs}, .ops = tutorial_ops, .repeat = opt.repeat,
                                     .min_run_seconds = 0, .workloads = {workload::increment},
                                     .progress = opt.progress});
    tutorial.add(atomic_name, contenders::procsafe_counter<procsafe::atomic_counter<std::int64_t>>());
    tutorial.add(mutex_name, contenders::procsafe_counter<procsafe::mutex_counter<std::int64_t>>());
    tutorial.add(sharded_name, contenders::sharded_writer(procsafe::shard_strategy::owned_slot));
    tutorial.add(series_array_name, contenders::series_array(series),
                 {"", "", series * 2 * procsafe::cache_line});
    tutorial.add(series_sharded_name, contenders::series_sharded(series, sharded_slots),
                 {"", "", contenders::series_sharded_bytes(series, sharded_slots)});
    tutorial.run();

    const std::string sharded_what = "each of the " + std::to_string(series) + " a sharded_counter (" +
                                     std::to_string(sharded_slots) +
                                     " slots), a local() writer per series in each process: the fast path";
    std::vector<peer_workload> tables{
        {"tutorial_workload",
         "the tutorial's workload: " + std::to_string(tutorial_procs) + " processes x " +
             std::to_string(tutorial_ops) + " increments of one counter",
         tutorial_procs, tutorial_ops, 1,
         {{atomic_name, ""}, {mutex_name, ""}, {sharded_name, "local() writer, each process its own slot"}},
         atomic_name, sharded_name, "atomic_counter", "sharded"},
        {"series_workload",
         "the same over " + std::to_string(series) + " series: " + std::to_string(tutorial_procs) + " processes x " +
             std::to_string(tutorial_ops) + " increments, the k-th to series k % " + std::to_string(series),
         tutorial_procs, tutorial_ops, series,
         {{series_array_name, "what a user writes: counter_array<int64, atomic_sync>, one padded counter a series"},
          {series_sharded_name, sharded_what}},
         series_array_name, series_sharded_name, "counter_array", "sharded x 1,000"},
    };
    if (run_peers) {
        for (auto& t : tables) {
            for (const auto& p : peers::all()) {
                if (p.python && !python) {
                    t.ran.push_back({p, {"--no-python", {}, {}}});
                    continue;
                }
                std::fprintf(stderr, "running %s (%d x %ld, %d series)...\n", p.name.c_str(), t.processes,
                             t.increments, t.series);
                t.ran.push_back({p, peers::run(p, peers_dir, t.processes, t.increments, t.series, opt.repeat)});
            }
        }
    }
    for (const auto& t : tables) print_peer_table(t, tutorial);
    if (run_peers) {
        std::printf("peers: each runs from its script in %s, timed by the script from the start barrier's release\n"
                    "to the last worker's exit (process exit included); one run each, or the median of %d runs\n"
                    "where a run takes under 1 s (the runs column). procsafe: the harness, median of %d runs.\n",
                    peers_dir.c_str(), opt.repeat, opt.repeat);
    } else {
        std::printf("peers skipped (--no-peers)\n");
    }

    // What a sharded counter's read costs, by slot count, against a plain
    // loop over as many lines (one process, the two interleaved).
    const long value_calls = quick ? 20'000 : 200'000;
    std::printf("\nsharded_counter sum() by slot count (one process, median of %d, interleaved with the raw loop)\n"
                "%8s %12s %12s %8s\n", opt.repeat, "slots", "ns/value()", "raw ns", "ratio");
    std::vector<latency::value_cost> values;
    for (std::size_t slots : {1, 4, 16, 64, 256, 1024}) {
        values.push_back(latency::measure_value(slots, opt.repeat, value_calls));
        const auto& v = values.back();
        std::printf("%8zu %12.1f %12.1f %7.2fx\n", slots, latency::median(v.procsafe_ns), latency::median(v.raw_ns),
                    v.ratio());
    }
    std::printf("  raw: a loop summing slots + 1 plain 128-byte lines (the slots and the overflow line),"
                " relaxed loads\n");

    // Wake-up latency: procsafe's waiter and a raw futex waiter, alternated.
    // A p99 is the 20th-worst of 2,000 samples: fewer, and a burst of noise moves it.
    const int wake_samples = quick ? 500 : 2000;
    const latency::wake_latency wake = latency::measure_wake(wake_samples);
    std::printf("\nwake-up latency, increment to a sleeping waiter's return (another process; %d samples of each,\n"
                "procsafe and a raw FUTEX_WAIT/FUTEX_WAKE on a shared 32-bit word, alternated, order flipped"
                " each sample)\n",
                wake.samples);
    if (wake.ok) {
        auto line = [](const char* what, const std::vector<double>& us) {
            std::printf("  %-22s median %6.1f us, p99 %6.1f us, max %7.1f us\n", what, latency::median(us),
                        latency::quantile(us, 0.99), *std::max_element(us.begin(), us.end()));
        };
        line("procsafe wait_at_least", wake.procsafe_us);
        line("raw futex", wake.raw_us);
        std::printf("  procsafe / raw futex: %.2fx at the median, %.2fx at p99\n", wake.ratio_median(),
                    wake.ratio_p99());
        std::printf("  %s\n", latency::wake_dominated_by(wake).c_str());
    } else {
        std::printf("  the waiter process FAILED\n");
    }

    // Seen from outside (scrape.hpp): what a scrape costs against
    // prometheus_client, and what being scraped costs the writers.
    const int render_scrapes = quick ? 5 : 9, python_scrapes_1k = quick ? 5 : 9, python_scrapes_100k = 3;
    const std::vector<scrape::render_workload> render_loads{{1000, 10, 10'000}, {100'000, 10, 100'000}};
    std::vector<scrape::render_row> renders;
    for (const auto& w : render_loads) {
        const bool big = w.series > 1000;
        renders.push_back(scrape::measure_render_row(
            w, render_scrapes, peers_dir, big ? python_scrapes_100k : python_scrapes_1k,
            !run_peers ? "--no-peers"
            : !python  ? "--no-python"
            : quick && big ? "quick mode (its 10 writers and 3 scrapes take about 40 s)"
                           : ""));
    }
    scrape::print_render(renders, render_scrapes);
    const int scraped_writers = 2, scraped_pairs = quick ? 4 : 9;
    const double scraped_run_seconds = quick ? 0.3 : 1.0;
    const auto where = scrape::placement::choose(scraped_writers);
    std::vector<scrape::under_scrape> under =
        scrape::measure_all_under_scrape(scraped_writers, scraped_pairs, scraped_run_seconds, where);
    scrape::print_under_scrape(under, scraped_writers, where);

    // The targets, as ratios from this run.
    // The Python bound was 100x when Python's figure included starting its 10
    // processes (1,657 ns an increment); timed from a start barrier, as every
    // peer is now, it is 500-690 ns, 75-107x atomic_counter: 50x still
    // catches atomic_counter growing twice as slow, 100x failed on noise.
    const double bound_atomic = quick ? 1.5 : 1.10, bound_mutex = quick ? 1.5 : 1.15, bound_python = quick ? 20 : 50;
    // value() is one relaxed load per line, as the raw loop: 1.3 in full; the
    // quick bound only guards against a lock or a system call creeping in.
    const double bound_value = quick ? 3.0 : 1.3, bound_wake = quick ? 1.5 : 1.3;
    bool ok = true;
    std::printf("\ntargets%s:\n",
                quick ? " (quick mode: the lower of the median and best-of-run ratios, relaxed bounds;"
                        " a miss is re-measured up to twice on its own)"
                      : " (ratios of medians)");
    enum class verdict { met, missed, not_judged };
    struct target_row {
        std::string what;
        std::optional<double> ratio;
        double bound;
        bool at_most;
        verdict v;
    };
    std::vector<target_row> rows;
    auto report = [&](const std::string& what, std::optional<double> ratio, double bound, bool at_most) {
        if (!ratio) {
            std::printf("  %-58s not measured\n", what.c_str());
            return true;
        }
        const bool met = at_most ? *ratio <= bound : *ratio >= bound;
        std::printf("  %-58s %7.2f (%s %.2f) %s\n", what.c_str(), *ratio, at_most ? "<=" : ">=", bound,
                    met ? "ok" : "MISSED");
        return met;
    };
    // One reading of a target: its ratio, or why it is not judged, and a
    // line of detail. attempt 0 reads this run; 1 and 2 measure it again.
    struct reading {
        std::optional<double> ratio;
        std::string not_judged;
        std::string detail;
    };
    using reading_fn = std::function<reading(int attempt)>;
    // Judges a target on the main run. In quick mode (CI, a shared 2-CPU
    // machine) a miss is measured again on its own, at most twice: a
    // regression misses every time, a noisy neighbour rarely twice in a row.
    // The full check never retries. A reading that cannot be judged (the
    // processes of a contention target did not run at once) is measured
    // again too; if no attempt could be judged, the target is reported as
    // not judged.
    auto target = [&](const std::string& what, double bound, bool at_most, const reading_fn& read) {
        std::optional<double> last;
        auto judge = [&](const std::string& label, const reading& r) {
            if (!r.not_judged.empty()) {
                std::printf("  %-58s not judged: %s\n", label.c_str(), r.not_judged.c_str());
                return verdict::not_judged;
            }
            last = r.ratio;
            const bool met = report(label, r.ratio, bound, at_most);
            if (!r.detail.empty()) std::printf("  %-58s %s\n", "", r.detail.c_str());
            return met ? verdict::met : verdict::missed;
        };
        verdict v = judge(what, read(0));
        bool judged = v != verdict::not_judged;
        for (int attempt = 1; v != verdict::met && quick && attempt <= 2; ++attempt) {
            v = judge("  re-measured on its own (" + std::to_string(attempt) + "/2)", read(attempt));
            judged = judged || v != verdict::not_judged;
        }
        if (!judged) std::printf("  %-58s not judged in quick mode: no attempt could be judged\n", "");
        if (!judged) v = verdict::not_judged;
        ok = ok && (v == verdict::met || !judged);
        rows.push_back({what, last, bound, at_most, v});
    };
    auto plain = [&](const std::string& what, std::optional<double> value, double bound, bool at_most) {
        const bool met = report(what, value, bound, at_most);
        ok = ok && met;
        rows.push_back({what, value, bound, at_most, met ? verdict::met : verdict::missed});
    };

    // A ratio taken from a suite's results; nullopt when a cell did not run.
    using measure_fn = std::function<std::optional<double>(const procsafe::bench::suite&)>;
    // Reads a suite target from the main run, or (attempt > 0) from a run of
    // only the contenders it compares. `contended`: the cell whose processes
    // must have run at once for the ratio to mean anything (on a busy machine
    // two writers take turns on one CPU, and a shared fetch_add costs what it
    // costs alone); in quick mode such a run is not judged.
    auto from_suite = [&](measure_fn measure, std::vector<std::string> used, int processes,
                          const char* contended = nullptr) -> reading_fn {
        return [&, measure, used, processes, contended](int attempt) {
            std::optional<procsafe::bench::suite> retry;
            const procsafe::bench::suite* in = &s;
            if (attempt > 0) {
                procsafe::bench::options again = opt;
                again.processes = {processes};
                again.workloads = {workload::increment};
                retry.emplace(again);
                add_contenders(*retry, used);
                retry->run();
                in = &*retry;
            }
            reading r;
            if (contended != nullptr) {
                const auto* cell = in->find(contended, workload::increment, processes);
                const double ran = cell != nullptr ? cell->median_parallelism() : 0.0;
                char buf[96];
                std::snprintf(buf, sizeof buf, "the %d processes ran %.2f at a time", processes, ran);
                if (quick && ran < 0.75 * processes) {
                    r.not_judged = std::string(buf) + " (busy machine)";
                    return r;
                }
                r.detail = "(" + std::string(buf) + ")";
            }
            r.ratio = measure(*in);
            return r;
        };
    };
    // Quick mode judges a ratio by the better of two estimators, median and
    // best-of-run: a real regression raises both, one noisy run only one.
    auto ratio_of = [quick](const char* name, int p) -> measure_fn {
        return [=](const procsafe::bench::suite& in) -> std::optional<double> {
            const auto* r = in.find(name, workload::increment, p);
            if (r == nullptr) return std::nullopt;
            const auto median = in.ratio_to_baseline(*r);
            const auto best = in.ratio_to_baseline(*r, true);
            if (quick && median && best) return std::min(*median, *best);
            return median;
        };
    };
    for (int p : {1, 2}) {
        const std::string at = std::to_string(p) + (p == 1 ? " process" : " processes");
        target("atomic_counter (waitable) / raw fetch_add, " + at, bound_atomic, true,
               from_suite(ratio_of(atomic_name, p), {atomic_name, fetch_add_name}, p));
        target("mutex_counter / raw robust pthread mutex, " + at, bound_mutex, true,
               from_suite(ratio_of(mutex_name, p), {mutex_name, robust_name}, p));
    }
    {
        // sharded_counter: the writer against atomic_counter and the raw single-writer line.
        const measure_fn speedup = [quick](const procsafe::bench::suite& in) -> std::optional<double> {
            const auto* sh = in.find(sharded_name, workload::increment, 2);
            const auto* at = in.find(atomic_name, workload::increment, 2);
            if (sh == nullptr || at == nullptr) return std::nullopt;
            return quick ? std::max(at->median_ns() / sh->median_ns(), at->min_ns() / sh->min_ns())
                         : at->median_ns() / sh->median_ns();
        };
        // The speed-up is over a contended fetch_add: judged on runs whose two
        // atomic_counter processes ran at once.
        target("sharded writer speed-up over atomic_counter, 2 processes", quick ? 3.0 : 10.0, false,
               from_suite(speedup, {sharded_name, atomic_name}, 2, atomic_name));
        // Against the raw line as a user's loop writes it (`for (...) ++slot`:
        // the slot's address in a register, a load and a store an
        // iteration). The writer adds one check an increment (the fork
        // generation, so that a forked child never writes its parent's
        // slot); increment() adds the thread's cache lookup (a thread-local
        // load, the counter's address and incarnation compared) before it.
        // Both are a few instructions on a loop of three: ratios, not a
        // nanosecond (docs/bench.md).
        target("sharded writer / raw single-writer slot, 2 processes", quick ? 5.0 : 3.0, true,
               from_suite(ratio_of(sharded_name, 2), {sharded_name, single_writer_name}, 2));
        // The plain call (`++requests`), which most users write rather than local().
        for (int p : {1, 2}) {
            target("sharded increment() / raw single-writer slot, " + std::to_string(p) +
                       (p == 1 ? " process" : " processes"),
                   quick ? 5.0 : 3.5, true,
                   from_suite(ratio_of(sharded_increment_name, p), {sharded_increment_name, single_writer_name}, p));
        }
        const auto* sh10 = tutorial.find(sharded_name, workload::increment, tutorial_procs);
        const auto* at10 = tutorial.find(atomic_name, workload::increment, tutorial_procs);
        if (quick) {
            // 10 short processes on a small machine measure the scheduler, not the counter.
            std::printf("  %-58s not checked in quick mode\n", "sharded writer speed-up over atomic_counter, 10 processes");
        } else {
            plain("sharded writer speed-up over atomic_counter, 10 processes",
                  sh10 && at10 ? std::optional<double>(at10->median_ns() / sh10->median_ns()) : std::nullopt, 5.0,
                  false);
        }
    }
    {
        // value() against the raw loop over as many lines, 64 slots.
        const auto* v64 = &*std::find_if(values.begin(), values.end(), [](const auto& v) { return v.slots == 64; });
        auto value_ratio = [quick](const latency::value_cost& v) {
            const double median = v.ratio();
            const double best = *std::min_element(v.procsafe_ns.begin(), v.procsafe_ns.end()) /
                                *std::min_element(v.raw_ns.begin(), v.raw_ns.end());
            return quick ? std::min(median, best) : median;
        };
        target("sharded_counter sum() / raw loop over 65 lines, 64 slots", bound_value, true, [&](int attempt) {
            const latency::value_cost v = attempt == 0 ? *v64 : latency::measure_value(64, opt.repeat, value_calls);
            char buf[96];
            std::snprintf(buf, sizeof buf, "(%.1f ns against %.1f ns)", latency::median(v.procsafe_ns),
                          latency::median(v.raw_ns));
            return reading{value_ratio(v), "", buf};
        });
    }
    for (bool p99 : {false, true}) {
        target(std::string("wake-up latency / raw futex wake-up, ") + (p99 ? "p99" : "median"), bound_wake, true,
               [&, p99](int attempt) {
                   const latency::wake_latency w = attempt == 0 ? wake : latency::measure_wake(wake_samples);
                   if (!w.ok)
                       return reading{std::numeric_limits<double>::infinity(), "", "(the waiter process failed)"};
                   const double q = p99 ? 0.99 : 0.5;
                   char buf[96];
                   std::snprintf(buf, sizeof buf, "(%.1f us against %.1f us)", latency::quantile(w.procsafe_us, q),
                                 latency::quantile(w.raw_us, q));
                   return reading{p99 ? w.ratio_p99() : w.ratio_median(), "", buf};
               });
    }
    {
        const peers::outcome* py = nullptr;
        for (const auto& [p, o] : tables[0].ran)
            if (p.script == "python_multiprocessing_value.py" && o.skipped.empty()) py = &o;
        const auto* at = tutorial.find(atomic_name, workload::increment, tutorial_procs);
        plain("Python Value / atomic_counter, tutorial's workload (speed-up)",
              py && at ? std::optional<double>(py->median_seconds() * 1e9 / tables[0].expected() / at->median_ns())
                       : std::nullopt,
              bound_python, false);
    }

    {
        // A scrape of 1,000 series: prometheus_client's over procsafe's.
        const std::string what = "scrape of 1,000 series, prometheus_client / procsafe";
        const double bound = quick ? 5.0 : 10.0;
        if (!renders[0].python_ran()) {
            std::printf("  %-58s not judged: python skipped (%s)\n", what.c_str(), renders[0].python.skipped.c_str());
            rows.push_back({what, std::nullopt, bound, false, verdict::not_judged});
        } else {
            target(what, bound, false, [&](int attempt) {
                const scrape::render_row r =
                    attempt == 0 ? renders[0]
                                 : scrape::measure_render_row(render_loads[0], render_scrapes, peers_dir,
                                                              python_scrapes_1k);
                if (!r.python_ran()) return reading{std::nullopt, "python failed: " + r.python.skipped, ""};
                char buf[96];
                std::snprintf(buf, sizeof buf, "(%.1f ms against %.3f ms)", r.python.median_ms(),
                              r.procsafe.median_ms());
                return reading{r.speedup(quick), "", buf};
            });
        }
    }
    for (std::size_t i = 0; i < under.size(); ++i) {
        // Writers while scraped 10 times a second over unscraped: wall-clock
        // throughput when the reader has a CPU of its own, else the writers'
        // CPU time per operation (see print_under_scrape).
        target("writers scraped 10/s / not, " + under[i].name.substr(0, under[i].name.find('<')) +
                   (where.pinned ? " (throughput)" : " (CPU/op)"),
               quick ? 0.90 : 0.95, false, [&, i](int attempt) {
                   const scrape::under_scrape u =
                       attempt == 0 ? under[i]
                                    : scrape::measure_under_scrape(static_cast<int>(i), scraped_writers, scraped_pairs,
                                                                   scraped_run_seconds, where);
                   char buf[128];
                   std::snprintf(buf, sizeof buf, "(cpu %.3fx, wall %.3fx; %.0f scrapes in %.2f s, reader %.2f%% of a CPU)",
                                 u.cpu_ratio(), u.wall_ratio(), u.scrapes_per_run(), u.run_seconds(),
                                 100 * u.reader_cpu_share());
                   return reading{u.judged(where.pinned, quick), "", buf};
               });
    }

    if (!json_file.empty()) {
        using procsafe::bench::json_array;
        using procsafe::bench::json_number;
        using procsafe::bench::json_string;
        std::string extra;
        for (const auto& t : tables) extra += peer_json(t, tutorial) + ",\n";
        extra += "  \"sharded_value\": [";
        for (std::size_t i = 0; i < values.size(); ++i) {
            const auto& v = values[i];
            extra += std::string(i ? "," : "") + "\n    {\"slots\": " + std::to_string(v.slots) +
                     ", \"median_ns\": " + json_number(latency::median(v.procsafe_ns)) +
                     ", \"raw_median_ns\": " + json_number(latency::median(v.raw_ns)) +
                     ", \"ratio\": " + json_number(v.ratio()) + ", \"ns\": " + json_array(v.procsafe_ns) +
                     ", \"raw_ns\": " + json_array(v.raw_ns) + "}";
        }
        extra += "],\n  \"wake_up_latency\": {\"samples\": " + std::to_string(wake.samples) +
                 ", \"ok\": " + (wake.ok ? "true" : "false");
        if (wake.ok) {
            auto stats = [](const std::vector<double>& us) {
                return "{\"median\": " + json_number(latency::median(us)) + ", \"p99\": " +
                       json_number(latency::quantile(us, 0.99)) + ", \"max\": " +
                       json_number(*std::max_element(us.begin(), us.end())) + "}";
            };
            extra += ", \"procsafe_us\": " + stats(wake.procsafe_us) + ", \"raw_futex_us\": " + stats(wake.raw_us) +
                     ", \"ratio_median\": " + json_number(wake.ratio_median()) +
                     ", \"ratio_p99\": " + json_number(wake.ratio_p99());
        }
        extra += "},\n" + scrape::json(renders, under, scraped_writers, where);
        extra += ",\n  \"targets\": [";
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const auto& r = rows[i];
            extra += std::string(i ? "," : "") + "\n    {\"what\": " + json_string(r.what) + ", \"ratio\": " +
                     (r.ratio ? json_number(*r.ratio) : "null") + ", \"bound\": " + json_number(r.bound) +
                     ", \"at_most\": " + (r.at_most ? "true" : "false") + ", \"verdict\": " +
                     json_string(r.v == verdict::met ? "met" : r.v == verdict::missed ? "missed" : "not judged") + "}";
        }
        extra += "]";
        if (std::FILE* f = std::fopen(json_file.c_str(), "w")) {
            std::fputs(s.json(m, extra).c_str(), f);
            std::fclose(f);
            std::fprintf(stderr, "wrote %s\n", json_file.c_str());
        } else {
            std::fprintf(stderr, "procsafe-bench: cannot write %s\n", json_file.c_str());
            return 1;
        }
    }
    if (!plot_file.empty() && s.plot(plot_file)) std::fprintf(stderr, "wrote %s\n", plot_file.c_str());
    return check && !ok ? 1 : 0;
}
