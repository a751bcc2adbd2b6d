// procsafe/bench/harness.hpp: the multi-process benchmark harness (procsafe::bench).
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

// procsafe::bench: a multi-process benchmark harness you can link.
//
// A contender is a setup function that places its shared state in a fresh
// anonymous segment and returns an "ops" object with increment() and read()
// (and optionally start(int process) and total()). The harness forks P
// processes that meet at a start barrier in shared memory, each runs K
// operations of a workload, and the time runs from the barrier's release to
// the moment the last process finished its loop (each process stamps its
// finish time in shared memory, then blocks until all are done: process
// teardown is not measured, and does not delay workers still waiting for a
// CPU when the machine is oversubscribed). Every
// cell is repeated R times, the repetitions interleaved across contenders so
// that drift on a noisy machine hits all of them alike; min / median / max
// are reported. Nothing is pinned.
//
// The loop is compiled per contender (ops is a template parameter), so an
// increment costs what the contender costs, not an indirect call.
//
// ```
// procsafe::bench::suite s({.processes = {1, 2, 4}});
// s.add("my counter", [](procsafe::segment& seg, int /*processes*/) {
//     auto* c = &seg.construct<procsafe::atomic_counter<long>>("c");
//     struct ops {
//         procsafe::atomic_counter<long>* c;
//         void increment() { c->increment(); }
//         long read() { return c->value(); }
//         long total() { return c->value(); }  // optional: lost-update check
//     };
//     return ops{c};
// });
// s.run();
// s.print_table(stdout);
// ```

#include <procsafe/procsafe.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/version.hpp>
#include <cerrno>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PROCSAFE_BENCH_FLAGS
#define PROCSAFE_BENCH_FLAGS "unknown"
#endif

extern char** environ;

namespace procsafe::bench {

enum class workload { increment, mixed, read };

inline const char* to_string(workload w) {
    switch (w) {
        case workload::increment: return "increment";
        case workload::mixed: return "mixed 90/10";
        case workload::read: return "read";
    }
    return "?";
}

struct options {
    std::vector<int> processes{1, 2, 4, 8, 16};
    long ops = 200'000;  ///< operations per process per run (at least; see min_run_seconds)
    int repeat = 5;
    /// A cell whose first run is shorter than this gets proportionally more
    /// operations (at most 100x): a run of 100 us is mostly noise.
    double min_run_seconds = 0.02;
    std::vector<workload> workloads{workload::increment, workload::mixed, workload::read};
    bool progress = true;  ///< a progress line on stderr
};

/// Facts about the machine, printed with every table and stored in the JSON.
struct machine {
    std::string cpu_model;
    int cpus = 0;  ///< CPUs this process may run on
    std::string compiler;
    std::string flags;
    std::string boost;

    static machine describe() {
        machine m;
        std::ifstream cpuinfo("/proc/cpuinfo");
        for (std::string line; std::getline(cpuinfo, line);) {
            if (line.rfind("model name", 0) == 0) {
                m.cpu_model = line.substr(line.find(':') + 2);
                break;
            }
        }
        if (m.cpu_model.empty()) m.cpu_model = "unknown";
        cpu_set_t set;
        CPU_ZERO(&set);
        m.cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                               : static_cast<int>(std::thread::hardware_concurrency());
#if defined(__clang__)
        m.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        m.compiler = std::string("g++ ") + __VERSION__;
#else
        m.compiler = "unknown";
#endif
        m.flags = PROCSAFE_BENCH_FLAGS;
        m.boost = BOOST_LIB_VERSION;
        std::replace(m.boost.begin(), m.boost.end(), '_', '.');
        return m;
    }
};

/// One cell: a contender under a workload at a process count, R samples.
struct result {
    std::string contender;
    workload load;
    int processes;
    long ops;                          ///< per process
    std::vector<double> seconds;       ///< one per repetition
    std::vector<std::int64_t> lost;    ///< lost increments per repetition (empty: not counted)
    /// Per repetition: the workers' CPU time over the run's wall time, the
    /// number of processes that ran at once on average. Below the process
    /// count when the machine was busy or oversubscribed: then writers
    /// took turns instead of contending.
    std::vector<double> parallelism;

    double median_seconds() const { return pick(seconds, 1); }
    double min_seconds() const { return pick(seconds, 0); }
    double max_seconds() const { return pick(seconds, 2); }
    /// Nanoseconds per operation, all processes together (wall time / total ops).
    double ns_per_op(double s) const { return s * 1e9 / (static_cast<double>(ops) * processes); }
    double median_ns() const { return ns_per_op(median_seconds()); }
    double min_ns() const { return ns_per_op(min_seconds()); }
    double mops() const { return 1e3 / median_ns(); }
    double median_parallelism() const { return pick(parallelism, 1); }

private:
    static double pick(std::vector<double> v, int which) {
        if (v.empty()) return 0;
        std::sort(v.begin(), v.end());
        return which == 0 ? v.front() : which == 2 ? v.back() : v[v.size() / 2];
    }
};

/// What the table says about a contender besides its name.
struct contender_info {
    std::string baseline;  ///< the raw contender it wraps: ratios are taken against it
    std::string note;      ///< one line, printed under the table
    /// Bytes the contender's state needs in the run's segment, beyond the
    /// harness's default (a few KiB per process): many counters, many slots.
    std::size_t segment_bytes = 0;
    /// The plot's panel (contenders of one family side by side: "atomic",
    /// "mutex"...). When no contender names one, the plot has one panel;
    /// when some do, the others are left out of it.
    std::string family{};
};

/// JSON text for a string: quoted, with `"`, `\` and control characters escaped.
inline std::string json_string(const std::string& s) {
    std::string q = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            q += '\\';
            q += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            q += buf;
        } else {
            q += c;
        }
    }
    return q + "\"";
}

/// JSON text for a number: null when it is not finite (JSON has no NaN).
inline std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    std::ostringstream o;
    o.precision(10);
    o << v;
    return o.str();
}

/// JSON array of numbers.
template <class T>
std::string json_array(const std::vector<T>& v) {
    std::string a = "[";
    for (std::size_t i = 0; i < v.size(); ++i) a += (i ? ", " : "") + json_number(static_cast<double>(v[i]));
    return a + "]";
}

namespace detail {

inline double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double cpu_seconds() {
    timespec t{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

inline constexpr int max_processes = 256;

/// The start line (procsafe latches) and the finish stamps, in the run's segment.
struct control {
    explicit control(int processes) : ready(processes) {}
    procsafe::latch ready;  ///< each worker counts down when set up
    procsafe::latch go{1};  ///< the parent opens it; workers spin on it (try_wait: one load)
    std::atomic<int> failed{0};
    // Written by each worker, read by the parent once the worker reported
    // through the pipe (atomic anyway: shared memory is touched only atomically).
    double finished[max_processes]{};
    double cpu[max_processes]{};  ///< CPU seconds each worker spent in its loop
};

template <class Ops>
concept has_start = requires(Ops o) { o.start(0); };
template <class Ops>
concept has_total = requires(Ops o) { { o.total() } -> std::convertible_to<std::int64_t>; };

/// A contender may run the increment workload's loop itself, as a user
/// writes it (`for (...) ++counter;`, the counter or slot in a register),
/// rather than through increment() on an ops object the loop reloads from.
template <class Ops>
concept has_increment_loop = requires(Ops o, long n) { o.increment_loop(n); };

/// The measured loop, compiled for each contender and workload.
template <class Ops>
std::int64_t loop(Ops& ops, workload w, long n) {
    std::int64_t sink = 0;
    switch (w) {
        case workload::increment:
            if constexpr (has_increment_loop<Ops>) ops.increment_loop(n);
            else
                for (long i = 0; i < n; ++i) ops.increment();
            break;
        case workload::mixed:  // every tenth operation is a read
            for (long i = 0; i < n; ++i) {
                if (i % 10 == 9) sink += static_cast<std::int64_t>(ops.read());
                else ops.increment();
            }
            break;
        case workload::read:
            for (long i = 0; i < n; ++i) sink += static_cast<std::int64_t>(ops.read());
            break;
    }
    return sink;
}

inline long increments_in(workload w, long n) {
    return w == workload::increment ? n : w == workload::mixed ? n - n / 10 : 0;
}

struct run_outcome {
    double seconds;
    std::optional<std::int64_t> lost;
    double parallelism;  ///< see result::parallelism
};

inline void store_shared(double& shared, double v) {
    std::atomic_ref<double>(shared).store(v, std::memory_order_relaxed);
}
inline double load_shared(double& shared) { return std::atomic_ref<double>(shared).load(std::memory_order_relaxed); }

template <class Setup>
run_outcome run_once(Setup& setup, int processes, long n, workload w, std::size_t segment_bytes = 0) {
    auto seg = procsafe::segment::anonymous(static_cast<std::size_t>(processes) * 512 + std::size_t{256} * 1024 +
                                            segment_bytes);
    auto ops = setup(seg, processes);
    auto& ctl = seg.construct<control>("procsafe.bench.control", processes);
    // A finished worker tells the parent through `done` and then blocks on
    // `release` instead of exiting: on an oversubscribed machine an exiting
    // process's teardown would delay the workers still waiting for a CPU, and
    // that is not the counter's cost.
    int done[2], release[2];
    if (::pipe(done) != 0 || ::pipe(release) != 0) throw std::runtime_error("procsafe::bench: pipe failed");
    std::fflush(nullptr);
    std::vector<pid_t> pids;
    for (int p = 0; p < processes; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(done[0]);
            ::close(release[1]);
            int rc = 0;
            bool counted = false;  // a worker that fails in start() must still count, or the parent waits forever
            try {
                if constexpr (has_start<decltype(ops)>) ops.start(p);
                ctl.ready.count_down();
                counted = true;
                while (!ctl.go.try_wait()) {}
                const double cpu0 = cpu_seconds();
                volatile std::int64_t sink = loop(ops, w, n);
                (void)sink;
                store_shared(ctl.finished[p], now_seconds());
                store_shared(ctl.cpu[p], cpu_seconds() - cpu0);
            } catch (...) {
                if (!counted) ctl.ready.count_down();
                ctl.failed.fetch_add(1);
                rc = 1;
            }
            char byte = 1;
            if (::write(done[1], &byte, 1) != 1) rc = 1;
            while (::read(release[0], &byte, 1) > 0) {}  // until the parent closes it
            ::_exit(rc);
        }
        if (pid < 0) throw std::runtime_error("procsafe::bench: fork failed");
        pids.push_back(pid);
    }
    ::close(done[1]);
    ::close(release[0]);
    ctl.ready.wait();
    const double start = now_seconds();
    ctl.go.count_down();
    int reported = 0;
    char buf[64];
    while (reported < processes) {  // EOF only if every worker died
        const ssize_t got = ::read(done[0], buf, sizeof buf);
        if (got <= 0 && errno != EINTR) break;
        if (got > 0) reported += static_cast<int>(got);
    }
    ::close(release[1]);
    ::close(done[0]);
    int bad = 0;
    for (pid_t pid : pids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    if (bad != 0 || reported < processes || ctl.failed.load() != 0)
        throw std::runtime_error("procsafe::bench: a worker process failed");
    double end = start;
    for (int p = 0; p < processes; ++p) end = std::max(end, load_shared(ctl.finished[p]));
    double cpu = 0;
    for (int p = 0; p < processes; ++p) cpu += load_shared(ctl.cpu[p]);
    run_outcome out{end - start, std::nullopt, end > start ? cpu / (end - start) : 0.0};
    if constexpr (has_total<decltype(ops)>) {
        out.lost = static_cast<std::int64_t>(increments_in(w, n)) * processes - static_cast<std::int64_t>(ops.total());
    }
    return out;
}

}  // namespace detail

/// The suite: contenders, a grid of workloads x process counts, repeated.
class suite {
public:
    explicit suite(options o = {}) : options_(std::move(o)) {}

    /// Registers a contender. setup(segment&, int processes) places its
    /// state in the segment and returns an ops object (copied into every
    /// process): void increment(); integral read(); optional void start(int
    /// process) (called in each process before the barrier) and integral
    /// total() (the final count, for the lost-update column).
    template <class Setup>
    void add(std::string name, Setup setup, contender_info info = {}) {
        const std::size_t bytes = info.segment_bytes;
        contenders_.push_back({std::move(name), std::move(info),
                               [setup, bytes](int p, long n, workload w) mutable {
                                   return detail::run_once(setup, p, n, w, bytes);
                               }});
    }

    /// Runs every cell options().repeat times; returns the results.
    const std::vector<result>& run() {
        results_.clear();
        for (workload w : options_.workloads)
            for (int p : options_.processes)
                for (const auto& c : contenders_) results_.push_back({c.name, w, p, options_.ops, {}, {}, {}});
        const std::size_t cells = results_.size();
        const std::size_t total = cells * static_cast<std::size_t>(options_.repeat);
        std::size_t done = 0;
        // Calibration: one run per cell with options().ops; a cell that ran
        // shorter than min_run_seconds gets more operations per process.
        {
            std::size_t i = 0;
            for (workload w : options_.workloads) {
                for (int p : options_.processes) {
                    for (auto& c : contenders_) {
                        if (options_.progress) {
                            std::fprintf(stderr, "\r[calibrating %4zu/%zu] %-11s P=%-3d %-42s", i + 1, cells,
                                         to_string(w), p, c.name.c_str());
                        }
                        const double t = c.run(p, options_.ops, w).seconds;
                        if (t > 0 && t < options_.min_run_seconds) {
                            const double scale = std::min(100.0, options_.min_run_seconds / t);
                            results_[i].ops = static_cast<long>(static_cast<double>(options_.ops) * scale);
                        }
                        ++i;
                    }
                }
            }
        }
        // Repetitions outermost: drift on a shared machine hits every contender alike.
        for (int r = 0; r < options_.repeat; ++r) {
            std::size_t i = 0;
            for (workload w : options_.workloads) {
                for (int p : options_.processes) {
                    for (auto& c : contenders_) {
                        if (options_.progress) {
                            std::fprintf(stderr, "\r[%4zu/%zu] rep %d/%d %-11s P=%-3d %-32s", ++done, total, r + 1,
                                         options_.repeat, to_string(w), p, c.name.c_str());
                        }
                        const auto out = c.run(p, results_[i].ops, w);
                        results_[i].seconds.push_back(out.seconds);
                        results_[i].parallelism.push_back(out.parallelism);
                        if (out.lost) results_[i].lost.push_back(*out.lost);
                        ++i;
                    }
                }
            }
        }
        if (options_.progress) std::fprintf(stderr, "\r%-90s\r", "");
        return results_;
    }

    const std::vector<result>& results() const { return results_; }
    const options& opts() const { return options_; }

    /// The result for a cell, if it ran.
    const result* find(const std::string& contender, workload w, int processes) const {
        for (const auto& r : results_)
            if (r.contender == contender && r.load == w && r.processes == processes) return &r;
        return nullptr;
    }

    /// median(contender) / median(its baseline) in ns/op in the same cell, if both
    /// ran; with best_of, min / min (best-of-R: what a noisy machine can be
    /// trusted with on short runs).
    std::optional<double> ratio_to_baseline(const result& r, bool best_of = false) const {
        const std::string& base = info(r.contender).baseline;
        if (base.empty()) return std::nullopt;
        const result* b = find(base, r.load, r.processes);
        if (b == nullptr || b->min_seconds() <= 0) return std::nullopt;
        // Per operation: calibration may give the two different counts.
        return best_of ? r.min_ns() / b->min_ns() : r.median_ns() / b->median_ns();
    }

    const contender_info& info(const std::string& name) const {
        static const contender_info none;
        for (const auto& c : contenders_)
            if (c.name == name) return c.info;
        return none;
    }

    /// The aligned table: one block per workload, one line per contender and
    /// process count.
    void print_table(std::FILE* out, const machine& m = machine::describe()) const {
        std::fprintf(out, "machine: %s, %d CPUs; %s; %s; Boost %s\n", m.cpu_model.c_str(), m.cpus,
                     m.compiler.c_str(), m.flags.c_str(), m.boost.c_str());
        std::fprintf(out,
                     "at least %ld operations per process (more where a run would last under %.0f ms), "
                     "median of %d runs (min..max in ns/op)%s\n\n",
                     options_.ops, options_.min_run_seconds * 1e3, options_.repeat,
                     std::any_of(options_.processes.begin(), options_.processes.end(),
                                 [&](int p) { return p > m.cpus; })
                         ? "; process counts above the CPU count are oversubscribed"
                         : "");
        for (workload w : options_.workloads) {
            std::fprintf(out, "workload: %s\n", to_string(w));
            std::fprintf(out, "%5s  %-42s %9s %20s %9s %9s %8s  %s\n", "procs", "contender", "ns/op", "min..max",
                         "Mops/s", "ops/proc", "lost", "vs baseline");
            for (const auto& r : results_) {
                if (r.load != w) continue;
                char range[64];
                std::snprintf(range, sizeof range, "%.2f..%.2f", r.ns_per_op(r.min_seconds()),
                              r.ns_per_op(r.max_seconds()));
                std::string lost = "-";
                if (!r.lost.empty() && increments_in(r) > 0) {
                    std::vector<std::int64_t> l = r.lost;
                    std::sort(l.begin(), l.end());
                    char buf[32];
                    std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(l[l.size() / 2]) /
                                                                 static_cast<double>(increments_in(r)));
                    lost = buf;
                }
                std::string vs;
                if (auto q = ratio_to_baseline(r)) {
                    char buf[96];
                    std::snprintf(buf, sizeof buf, "%.2fx %s", *q, info(r.contender).baseline.c_str());
                    vs = buf;
                }
                std::fprintf(out, "%5d  %-42s %9.2f %20s %9.1f %8ldk %8s  %s\n", r.processes, r.contender.c_str(),
                             r.median_ns(), range, r.mops(), r.ops / 1000, lost.c_str(), vs.c_str());
            }
            std::fprintf(out, "\n");
        }
        bool any_note = false;
        for (const auto& c : contenders_) {
            if (c.info.note.empty()) continue;
            if (!any_note) std::fprintf(out, "notes:\n");
            any_note = true;
            std::fprintf(out, "  %-42s %s\n", c.name.c_str(), c.info.note.c_str());
        }
    }

    /// Every sample, as JSON, with the machine description.
    std::string json(const machine& m = machine::describe(), const std::string& extra = {}) const {
        std::ostringstream o;
        o << "{\n  \"machine\": {\"cpu_model\": " << quote(m.cpu_model) << ", \"cpus\": " << m.cpus
          << ", \"compiler\": " << quote(m.compiler) << ", \"flags\": " << quote(m.flags)
          << ", \"boost\": " << quote(m.boost) << "},\n";
        o << "  \"ops_per_process\": " << options_.ops << ", \"repeat\": " << options_.repeat << ",\n";
        if (!extra.empty()) o << extra << ",\n";
        o << "  \"results\": [";
        for (std::size_t i = 0; i < results_.size(); ++i) {
            const auto& r = results_[i];
            o << (i ? ",\n" : "\n") << "    {\"contender\": " << quote(r.contender) << ", \"workload\": "
              << quote(to_string(r.load)) << ", \"processes\": " << r.processes << ", \"ops_per_process\": " << r.ops
              << ", \"median_ns_per_op\": "
              << r.median_ns() << ", \"seconds\": [";
            for (std::size_t k = 0; k < r.seconds.size(); ++k) o << (k ? ", " : "") << r.seconds[k];
            o << "], \"lost\": [";
            for (std::size_t k = 0; k < r.lost.size(); ++k) o << (k ? ", " : "") << r.lost[k];
            o << "], \"parallelism\": [";
            for (std::size_t k = 0; k < r.parallelism.size(); ++k) o << (k ? ", " : "") << r.parallelism[k];
            o << "]";
            if (auto q = ratio_to_baseline(r)) o << ", \"ratio_to_baseline\": " << *q;
            o << "}";
        }
        o << "\n  ]\n}\n";
        return o.str();
    }

    /// Throughput (Mops/s) against process count for one workload, one line
    /// per contender, drawn by gnuplot into a .png or .svg. False (and a
    /// message on stderr) when gnuplot is missing or fails.
    bool plot(const std::string& file, workload w = workload::increment, const std::string& title = {}) const {
        // Panels by family; in a panel, a contender and its raw baseline get
        // one colour, the contender solid, the baseline dashed.
        std::vector<std::string> names, families;
        bool any_family = false;
        for (const auto& r : results_)
            if (r.load == w && std::find(names.begin(), names.end(), r.contender) == names.end())
                names.push_back(r.contender);
        for (const auto& n : names) any_family = any_family || !info(n).family.empty();
        for (const auto& n : names) {
            const std::string& f = any_family ? info(n).family : std::string("all");
            if (!f.empty() && std::find(families.begin(), families.end(), f) == families.end()) families.push_back(f);
        }
        const std::string data = file + ".dat";
        std::ofstream d(data);
        std::vector<std::string> in_data;  // the data blocks, in order
        for (const auto& name : names) {
            if (any_family && info(name).family.empty()) continue;
            d << "\"" << name << "\"\n";
            for (const auto& r : results_)
                if (r.load == w && r.contender == name) d << r.processes << " " << r.mops() << "\n";
            d << "\n\n";
            in_data.push_back(name);
        }
        d.close();
        const bool svg = file.size() > 4 && file.substr(file.size() - 4) == ".svg";
        const int width = families.size() > 1 ? 500 * static_cast<int>(families.size()) : 1000;
        std::ostringstream g;
        g << "set terminal " << (svg ? "svg" : "pngcairo") << " size " << width << ",620 noenhanced font ',10'\n"
          << "set output " << quote(file) << "\n"
          << "set multiplot layout 1," << families.size() << " title "
          << quote(title.empty() ? std::string("procsafe: ") + to_string(w) + " throughput (Mops/s, all processes; log scales)" : title)
          << "\nset xlabel 'processes'\nset logscale xy 2\nset grid\nset key below font ',9'\n";
        for (const auto& f : families) {
            g << "set title " << quote(f) << "\nplot ";
            int colour = 0;
            std::vector<std::pair<std::string, int>> colour_of;  // contender -> colour
            bool first = true;
            for (std::size_t k = 0; k < in_data.size(); ++k) {
                const std::string& n = in_data[k];
                if (any_family && info(n).family != f) continue;
                // A baseline takes the colour of the first contender that names it.
                int c = -1;
                for (const auto& [other, oc] : colour_of) {
                    if (info(other).baseline == n || info(n).baseline == other) {
                        c = oc;
                        break;
                    }
                }
                if (c < 0) c = ++colour;
                colour_of.emplace_back(n, c);
                const bool raw = !info(n).baseline.empty() ? false : [&] {
                    for (const auto& m : in_data)
                        if (info(m).baseline == n) return true;
                    return false;
                }();
                g << (first ? "" : ", ") << quote(data) << " index " << k << " using 1:2 with linespoints lc " << c
                  << " dt " << (raw ? 2 : 1) << " pt " << (raw ? 6 : 7) << " title columnheader(1)";
                first = false;
            }
            g << "\n";
        }
        g << "unset multiplot\n";
        const std::string script = file + ".gp";
        std::ofstream(script) << g.str();
        // posix_spawnp, not std::system: no shell, nothing to quote.
        pid_t pid = -1;
        char* argv[] = {const_cast<char*>("gnuplot"), const_cast<char*>(script.c_str()), nullptr};
        int status = -1;
        if (::posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ) == 0) {
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        }
        const bool plotted = status == 0;
        std::remove(script.c_str());  // NOLINT(cert-err33-c): best effort, a temporary file
        std::remove(data.c_str());    // NOLINT(cert-err33-c)
        if (!plotted) {
            std::fprintf(stderr, "procsafe::bench: could not plot (is gnuplot installed? apt-get install gnuplot-nox)\n");
            return false;
        }
        return true;
    }

private:
    struct entry {
        std::string name;
        contender_info info;
        std::function<detail::run_outcome(int, long, workload)> run;
    };

    static long increments_in(const result& r) {
        return detail::increments_in(r.load, r.ops) * r.processes;
    }
    static std::string quote(const std::string& s) { return json_string(s); }

    options options_;
    std::vector<entry> contenders_;
    std::vector<result> results_;
};

}  // namespace procsafe::bench
