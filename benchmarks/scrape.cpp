// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe-bench's scrape measurements (see scrape.hpp).
#include "scrape.hpp"

#include "peers.hpp"

#include <procsafe/bench/harness.hpp>
#include <procsafe/prometheus.hpp>
#include <procsafe/segment_view.hpp>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include <poll.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

namespace scrape {
namespace {

/// A segment name of this process's own: "procsafe-bench-WHAT-PID".
std::string segment_name(const char* what) {
    return std::string("procsafe-bench-") + what + "-" + std::to_string(::getpid());
}

/// Removes the named segment when it goes out of scope (the creator's
/// segment object removes it too; this also covers a throw before that).
struct remove_at_exit {
    std::string name;
    ~remove_at_exit() { procsafe::segment::remove(name); }
};

/// Waits for every pid; true when all exited with status 0.
bool reap(const std::vector<pid_t>& pids) {
    bool ok = true;
    for (pid_t pid : pids) {
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    return ok;
}

/// One scrape the way `procsafe serve` makes it: map the segment read-only,
/// read every object, render the text.
std::string render(const std::string& segment) {
    const auto view = procsafe::segment_view::open(segment);
    procsafe::prometheus_exposition text;
    text.add(view);
    return text.str();
}

/// The sample lines of a Prometheus text (those not starting with '#').
std::size_t sample_lines(std::string_view text) {
    std::size_t n = 0;
    for (std::size_t at = 0; at < text.size();) {
        std::size_t end = text.find('\n', at);
        if (end == std::string_view::npos) end = text.size();
        if (end > at && text[at] != '#') ++n;
        at = end + 1;
    }
    return n;
}

/// procsafe's side: the writers fork from this process and exit; then
/// `scrapes` scrapes are timed one by one.
render_cost render_procsafe(const render_workload& w, int scrapes) {
    using array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
    render_cost out;
    const std::string name = segment_name("scrape");
    procsafe::segment::remove(name);
    remove_at_exit cleanup{name};
    const auto n = static_cast<std::size_t>(w.series);
    std::vector<std::string> values;
    values.reserve(n);
    for (std::size_t i = 0; i < n; ++i) values.push_back(std::to_string(i));
    std::vector<std::string_view> views(values.begin(), values.end());
    // A line a series, its label value, and room for the segment's own structures.
    auto seg = procsafe::segment::create(name, n * (procsafe::cache_line + 16) + (std::size_t{1} << 20));
    auto& requests = seg.construct<array>(
        "requests",
        procsafe::metadata{.help = "Requests handled, by series.", .type = procsafe::metric_type::counter,
                           .label = "series", .label_values = views},
        n);
    std::fflush(nullptr);
    std::vector<pid_t> pids;
    for (int p = 0; p < w.processes; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            int rc = 0;
            try {
                std::size_t k = 0;
                for (long i = 0; i < w.increments; ++i) {
                    requests[k].increment();
                    if (++k == n) k = 0;
                }
            } catch (...) {
                rc = 1;
            }
            ::_exit(rc);
        }
        if (pid < 0) {
            out.skipped = "fork failed";
            break;
        }
        pids.push_back(pid);
    }
    if (!reap(pids) && out.skipped.empty()) out.skipped = "a writer process failed";
    if (!out.skipped.empty()) return out;
    {
        double total = 0;
        for (const auto& o : procsafe::segment_view::open(name).objects())
            for (const auto& v : o.values)
                if (const auto* i = std::get_if<std::int64_t>(&v)) total += static_cast<double>(*i);
        out.total = total;
    }
    std::string text;
    for (int r = 0; r < scrapes; ++r) {
        const double t0 = procsafe::bench::detail::now_seconds();
        text = render(name);
        out.seconds.push_back(procsafe::bench::detail::now_seconds() - t0);
    }
    out.samples = sample_lines(text);
    out.bytes = text.size();
    return out;
}

/// Python's side: peers/python_prometheus_scrape.py, which prints
/// "TOTAL SAMPLES BYTES SECONDS...".
render_cost render_python(const std::string& dir, const render_workload& w, int scrapes,
                                 double timeout = 600) {
    render_cost out;
    const std::string script = dir + "/python_prometheus_scrape.py";
    if (::access(script.c_str(), R_OK) != 0) {
        out.skipped = "script " + script + " not found (--peers DIR)";
        return out;
    }
    const std::string python = ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    const auto res = peers::detail::run({python, script, std::to_string(w.processes), std::to_string(w.increments),
                                         std::to_string(w.series), std::to_string(scrapes)},
                                        timeout);
    if (res.status == -1) {
        out.skipped = python + " not found (Debian: python3)";
    } else if (res.status == -2) {
        out.skipped = "timed out after " + std::to_string(static_cast<int>(timeout)) + " s";
    } else if (res.status == 77) {
        out.skipped = peers::detail::last_line(res.err);
    } else if (res.status != 0) {
        out.skipped = "failed (exit " + std::to_string(res.status) + "): " + peers::detail::last_line(res.err);
    } else {
        std::istringstream line(peers::detail::last_line(res.out));
        line >> out.total >> out.samples >> out.bytes;
        for (double s; line >> s;) out.seconds.push_back(s);
        if (!line.eof() || static_cast<int>(out.seconds.size()) != scrapes) {
            out.skipped = "printed '" + peers::detail::last_line(res.out) + "', not 'TOTAL SAMPLES BYTES SECONDS...'";
            out.seconds.clear();
        }
    }
    return out;
}

}  // namespace

render_row measure_render_row(const render_workload& w, int scrapes, const std::string& peers_dir,
                              int python_scrapes, const std::string& python_skip) {
    render_row r{w, render_procsafe(w, scrapes), {}};
    if (!python_skip.empty()) {
        r.python.skipped = python_skip;
    } else {
        std::fprintf(stderr, "running python3 prometheus_client scrape (%d x %ld, %d series)...\n", w.processes,
                     w.increments, w.series);
        r.python = render_python(peers_dir, w, python_scrapes);
    }
    return r;
}

void print_render(const std::vector<render_row>& rows, int procsafe_scrapes) {
    std::printf("\nscrape: the Prometheus text of N series written by %d processes (the k-th increment of each to\n"
                "series k %% N), rendered once they have exited; median of the scrapes (min..max)\n",
                rows.empty() ? 0 : rows.front().w.processes);
    std::printf("  procsafe: %s\n  python:   %s\n", render_procsafe_what, render_python_what);
    std::printf("%8s %9s | %-24s %9s %6s | %-24s %9s %6s | %s\n", "series", "incr/proc", "procsafe ms (min..max)",
                "bytes", "total", "python ms (min..max)", "bytes", "total", "python/procsafe");
    auto cell = [](const render_cost& c, const render_workload& w, const char* format) {
        char buf[96];
        if (!c.skipped.empty() || c.seconds.empty()) {
            std::snprintf(buf, sizeof buf, "%-24s %9s %6s", "-", "-", "-");
        } else {
            char ms[48];
            std::snprintf(ms, sizeof ms, format, c.median_ms(), c.best_ms(),
                          *std::max_element(c.seconds.begin(), c.seconds.end()) * 1e3);
            std::snprintf(buf, sizeof buf, "%-24s %9zu %6s", ms, c.bytes, c.total == w.expected() ? "exact" : "WRONG");
        }
        return std::string(buf);
    };
    for (const auto& r : rows) {
        const auto q = r.speedup();
        char ratio[32] = "-";
        if (q) std::snprintf(ratio, sizeof ratio, "%.0fx", *q);
        std::printf("%8d %9ld | %s | %s | %s\n", r.w.series, r.w.increments,
                    cell(r.procsafe, r.w, "%.3f (%.3f..%.3f)").c_str(), cell(r.python, r.w, "%.1f (%.1f..%.1f)").c_str(),
                    ratio);
        if (!r.python.skipped.empty()) std::printf("%20s python skipped: %s\n", "", r.python.skipped.c_str());
        if (!r.procsafe.skipped.empty()) std::printf("%20s procsafe FAILED: %s\n", "", r.procsafe.skipped.c_str());
    }
    std::printf("  procsafe: %d scrapes each, in this process; python: its script's scrapes, in its own process.\n"
                "  Both texts carry one sample a series (procsafe's with a label segment=\"...\" too); total: exact\n"
                "  when the series read back add up to processes x increments.\n",
                procsafe_scrapes);
}

placement placement::choose(int writers) {
    placement p;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return p;
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
    p.cpus = static_cast<int>(cpus.size());
    if (p.cpus >= writers + 1) {
        p.pinned = true;
        p.writer_cpus.assign(cpus.begin(), cpus.begin() + writers);
        p.reader_cpu = cpus[static_cast<std::size_t>(writers)];
    }
    return p;
}
void placement::pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(0, sizeof set, &set);
}
namespace {

namespace detail {

inline constexpr int max_scrapes = 4096;

struct control {
    explicit control(int processes) : ready(processes) {}
    procsafe::latch ready;
    std::atomic<int> go{0};
    std::atomic<int> failed{0};
    double finished[8]{};  ///< per writer; atomic_ref'd
    double cpu[8]{};
    int scrapes = 0;
    double reader_cpu = 0;
    double scrape_seconds[max_scrapes]{};
};

template <class Ops>
concept has_start = requires(Ops o) { o.start(0); };

inline void store(double& d, double v) { std::atomic_ref<double>(d).store(v, std::memory_order_relaxed); }
inline double load(double& d) { return std::atomic_ref<double>(d).load(std::memory_order_relaxed); }

/// The reader: a full scrape at the start line and every `period` after it,
/// until `stop` (a pipe whose write end the parent closes) reads EOF.
inline void reader(control& ctl, const std::string& name, int stop, double period) {
    while (ctl.go.load(std::memory_order_acquire) == 0) {}
    const double cpu0 = procsafe::bench::detail::cpu_seconds();
    double next = procsafe::bench::detail::now_seconds();
    int n = 0;
    for (;;) {
        const double t0 = procsafe::bench::detail::now_seconds();
        volatile std::size_t sink = render(name).size();
        (void)sink;
        if (n < max_scrapes) store(ctl.scrape_seconds[n], procsafe::bench::detail::now_seconds() - t0);
        ++n;
        next += period;
        const double left = next - procsafe::bench::detail::now_seconds();
        pollfd fd{stop, POLLIN, 0};
        if (left > 0 ? ::poll(&fd, 1, static_cast<int>(std::ceil(left * 1e3))) != 0 : ::poll(&fd, 1, 0) > 0) break;
    }
    std::atomic_ref<int>(ctl.scrapes).store(n, std::memory_order_relaxed);
    store(ctl.reader_cpu, procsafe::bench::detail::cpu_seconds() - cpu0);
}

}  // namespace detail

/// Runs `writers` writer processes of `ops` operations each on a fresh named
/// segment set up by `setup(segment&)`, with or without a reader process
/// that scrapes the segment every `period` seconds.
template <class Setup>
writer_run run_writers(Setup& setup, int writers, long ops, bool with_reader, const placement& where,
                       double period = 0.1) {
    const std::string name = segment_name("scraped");
    procsafe::segment::remove(name);
    remove_at_exit cleanup{name};
    auto seg = procsafe::segment::create(name, std::size_t{1} << 20);
    auto counter = setup(seg);
    // The start line lives apart, in an anonymous segment: the reader sees
    // only what it scrapes.
    auto ctl_seg = procsafe::segment::anonymous(std::size_t{256} * 1024);
    if (writers < 1 || writers > 8) throw std::invalid_argument("procsafe-bench: 1 to 8 writers");
    auto& ctl = ctl_seg.construct<detail::control>("control", writers + (with_reader ? 1 : 0));
    int stop[2];
    if (::pipe(stop) != 0) throw std::runtime_error("procsafe-bench: pipe failed");
    std::fflush(nullptr);
    std::vector<pid_t> pids;
    for (int p = 0; p < writers; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(stop[0]);
            ::close(stop[1]);
            int rc = 0;
            bool counted = false;
            try {
                if (where.pinned) placement::pin(where.writer_cpus[static_cast<std::size_t>(p)]);
                if constexpr (detail::has_start<decltype(counter)>) counter.start(p);
                ctl.ready.count_down();
                counted = true;
                while (ctl.go.load(std::memory_order_acquire) == 0) {}
                const double cpu0 = procsafe::bench::detail::cpu_seconds();
                for (long i = 0; i < ops; ++i) counter.increment();
                detail::store(ctl.finished[p], procsafe::bench::detail::now_seconds());
                detail::store(ctl.cpu[p], procsafe::bench::detail::cpu_seconds() - cpu0);
            } catch (...) {
                if (!counted) ctl.ready.count_down();
                ctl.failed.fetch_add(1);
                rc = 1;
            }
            ::_exit(rc);
        }
        if (pid < 0) throw std::runtime_error("procsafe-bench: fork failed");
        pids.push_back(pid);
    }
    pid_t reader_pid = -1;
    if (with_reader) {
        reader_pid = ::fork();
        if (reader_pid == 0) {
            ::close(stop[1]);
            int rc = 0;
            bool counted = false;
            try {
                if (where.pinned) placement::pin(where.reader_cpu);
                ctl.ready.count_down();
                counted = true;
                detail::reader(ctl, name, stop[0], period);
            } catch (...) {
                if (!counted) ctl.ready.count_down();
                ctl.failed.fetch_add(1);
                rc = 1;
            }
            ::_exit(rc);
        }
        if (reader_pid < 0) throw std::runtime_error("procsafe-bench: fork failed");
    }
    ::close(stop[0]);
    ctl.ready.wait();
    const double start = procsafe::bench::detail::now_seconds();
    ctl.go.store(1, std::memory_order_release);
    const bool writers_ok = reap(pids);
    ::close(stop[1]);  // the reader's poll reads EOF
    const bool reader_ok = reader_pid < 0 || reap({reader_pid});
    if (!writers_ok || !reader_ok || ctl.failed.load() != 0)
        throw std::runtime_error("procsafe-bench: a writer or the reader process failed");
    writer_run r;
    double end = start, cpu = 0;
    for (int p = 0; p < writers; ++p) {
        end = std::max(end, detail::load(ctl.finished[p]));
        cpu += detail::load(ctl.cpu[p]);
    }
    const double all_ops = static_cast<double>(ops) * writers;
    r.seconds = end - start;
    r.cpu_ns_per_op = cpu * 1e9 / all_ops;
    r.wall_ns_per_op = r.seconds * 1e9 / all_ops;
    r.scrapes = std::atomic_ref<int>(ctl.scrapes).load();
    r.reader_cpu = detail::load(ctl.reader_cpu);
    for (int i = 0; i < std::min(r.scrapes, detail::max_scrapes); ++i)
        r.scrape_seconds.push_back(detail::load(ctl.scrape_seconds[i]));
    r.exact = counter.total() == static_cast<std::int64_t>(ops) * writers;
    return r;
}

/// Measures one workload: a calibration run without the reader sizes `ops`
/// so that a run lasts about `run_seconds`; then `pairs` pairs of runs, with
/// and without the reader, the order flipped every pair.
template <class Setup>
under_scrape measure_one(std::string name, std::string what, Setup setup, int writers, int pairs,
                                  double run_seconds, const placement& where) {
    under_scrape u;
    u.name = std::move(name);
    u.what = std::move(what);
    long ops = 100'000;
    for (;;) {  // a probe of at least a quarter of a run: a shorter one is mostly noise
        const writer_run probe = run_writers(setup, writers, ops, false, where);
        if (probe.seconds >= run_seconds / 4 || ops > (1L << 40)) {
            const double scale = std::clamp(run_seconds / std::max(probe.seconds, 1e-6), 0.1, 10.0);
            ops = std::max(10'000L, static_cast<long>(static_cast<double>(ops) * scale));
            break;
        }
        ops *= probe.seconds > 0 ? std::clamp(static_cast<long>(run_seconds / 2 / probe.seconds), 2L, 100L) : 100L;
    }
    u.ops = ops;
    for (int i = 0; i < pairs; ++i) {
        const bool reader_first = i % 2 == 0;
        writer_run a = run_writers(setup, writers, ops, reader_first, where);
        writer_run b = run_writers(setup, writers, ops, !reader_first, where);
        writer_run& with = reader_first ? a : b;
        writer_run& without = reader_first ? b : a;
        u.cpu_ratios.push_back(without.cpu_ns_per_op / with.cpu_ns_per_op);
        u.wall_ratios.push_back(without.wall_ns_per_op / with.wall_ns_per_op);
        u.with.push_back(std::move(with));
        u.without.push_back(std::move(without));
    }
    return u;
}

/// The workloads' setups: a named segment in, an ops object out
/// (increment(), total(), optionally start(int)).
inline auto atomic_setup() {
    return [](procsafe::segment& seg) {
        using counter = procsafe::atomic_counter<std::int64_t>;
        struct ops {
            counter* c;
            void increment() { c->increment(); }
            std::int64_t total() { return c->value(); }
        };
        return ops{&seg.construct<counter>("requests")};
    };
}
inline auto sharded_setup() {
    return [](procsafe::segment& seg) {
        using counter = procsafe::sharded_counter<std::int64_t>;
        struct ops {
            counter* c;
            std::optional<counter::writer> w;
            void start(int) { w.emplace(*c); }
            void increment() { w->increment(); }
            std::int64_t total() { return c->sum(); }
        };
        return ops{&seg.construct<counter>("requests"), {}};
    };
}
inline auto array_setup(std::size_t series) {
    return [series](procsafe::segment& seg) {
        using array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
        // Each writer picks its series at random (xorshift; the index by
        // multiply-shift, not a division): requests come with any label, and
        // two writers never march through the lines in step, which would
        // make the contention depend on their phase.
        struct ops {
            array* a;
            std::uint64_t x = 0;
            void start(int p) { x = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(p + 1); }
            void increment() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (*a)[static_cast<std::size_t>(((x & 0xffffffffu) * a->size()) >> 32)].increment();
            }
            std::int64_t total() {
                std::int64_t sum = 0;
                for (std::size_t i = 0; i < a->size(); ++i) sum += (*a)[i].value();
                return sum;
            }
        };
        return ops{&seg.construct<array>("requests", procsafe::metadata{.label = "series"}, series)};
    };
}

}  // namespace

under_scrape measure_under_scrape(int which, int writers, int pairs, double run_seconds, const placement& where) {
    switch (which) {
        case 0:
            return measure_one("atomic_counter<int64>", "one counter, both writers fetch_add on its line",
                               atomic_setup(), writers, pairs, run_seconds, where);
        case 1:
            return measure_one("sharded_counter<int64> (local() writer)", "a slot of its own per writer, load + store",
                               sharded_setup(), writers, pairs, run_seconds, where);
        default:
            return measure_one("counter_array<int64> x 1,000 (padded)",
                               "each increment to an element picked at random (xorshift)", array_setup(1000), writers,
                               pairs, run_seconds, where);
    }
}

std::vector<under_scrape> measure_all_under_scrape(int writers, int pairs, double run_seconds,
                                                   const placement& where) {
    std::vector<under_scrape> out;
    for (int i = 0; i < under_scrape_workloads; ++i)
        out.push_back(measure_under_scrape(i, writers, pairs, run_seconds, where));
    return out;
}

void print_under_scrape(const std::vector<under_scrape>& all, int writers, const placement& where) {
    const int pairs = all.empty() ? 0 : static_cast<int>(all.front().with.size());
    std::printf("\nwriters while scraped: %d writer processes increment, with a reader process that scrapes their\n"
                "segment every 100 ms (segment_view::open + prometheus_exposition::add + str()) and without one;\n"
                "%d pairs of runs, with/without interleaved (the order flipped every pair), ratio per pair, medians\n",
                writers, pairs);
    std::printf("  CPUs: %s\n", where.describe(writers).c_str());
    std::printf("%-40s %9s %9s %9s %8s %8s %8s %9s %9s  %s\n", "writers' counter", "ops/wrtr", "cpu ns/op",
                "(scraped)", "cpu x", "wall x", "scrapes", "scrape ms", "reader %", "total");
    for (const auto& u : all) {
        std::vector<double> cw, cwo;
        for (const auto& r : u.with) cw.push_back(r.cpu_ns_per_op);
        for (const auto& r : u.without) cwo.push_back(r.cpu_ns_per_op);
        std::printf("%-40s %8ldk %9.2f %9.2f %7.3fx %7.3fx %8.0f %9.3f %8.2f%%  %s\n", u.name.c_str(), u.ops / 1000,
                    median(cwo), median(cw), u.cpu_ratio(), u.wall_ratio(), u.scrapes_per_run(), u.scrape_ms(),
                    100 * u.reader_cpu_share(), u.exact() ? "exact" : "LOST");
    }
    for (const auto& u : all) std::printf("  %-38s %s\n", u.name.c_str(), u.what.c_str());
    std::printf("  cpu x: the writers' CPU time per operation unscraped over scraped (throughput per CPU-second:\n"
                "  1.0 = the reader costs them nothing; it can only raise it by cache misses: the lines it reads\n"
                "  and, sharing a CPU, what it evicts). wall x: the same in wall-clock throughput. scrapes: a run's\n"
                "  (median; the first at the start line, one every 100 ms after it). reader %%: its CPU time over\n"
                "  the runs' wall time, in %% of one CPU.\n");
    if (where.pinned) {
        std::printf("  The reader has a CPU of its own: the target judges wall x (throughput) directly.\n");
    } else {
        std::printf("  With no CPU to spare, the reader's CPU time is taken from the writers (or from whatever else\n"
                    "  runs here): wall x falls by about reader %% / %d CPUs, whatever procsafe does, and moves with\n"
                    "  the machine's other load. The target judges cpu x instead: what an operation costs the\n"
                    "  writers while they are scraped, which is procsafe's part.\n",
                    where.cpus);
    }
}

// ---------------------------------------------------------------------------
// JSON for the --json file: two members, "scrape_render" and "writers_under_scrape".

namespace {

std::string json_cost(const render_cost& c, const render_workload& w) {
    using procsafe::bench::json_array;
    using procsafe::bench::json_number;
    using procsafe::bench::json_string;
    if (!c.skipped.empty()) return "{\"ran\": false, \"skipped\": " + json_string(c.skipped) + "}";
    return "{\"ran\": true, \"median_ms\": " + json_number(c.median_ms()) + ", \"seconds\": " + json_array(c.seconds) +
           ", \"samples\": " + std::to_string(c.samples) + ", \"bytes\": " + std::to_string(c.bytes) +
           ", \"total\": " + json_number(c.total) + ", \"exact\": " + (c.total == w.expected() ? "true" : "false") +
           "}";
}

}  // namespace

std::string json(const std::vector<render_row>& rows, const std::vector<under_scrape>& under, int writers,
                        const placement& where) {
    using procsafe::bench::json_array;
    using procsafe::bench::json_number;
    using procsafe::bench::json_string;
    std::string o = "  \"scrape_render\": {\"procsafe\": " + json_string(render_procsafe_what) +
                    ", \"python\": " + json_string(render_python_what) + ", \"rows\": [";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        const auto q = r.speedup();
        o += std::string(i ? "," : "") + "\n    {\"series\": " + std::to_string(r.w.series) +
             ", \"processes\": " + std::to_string(r.w.processes) +
             ", \"increments_per_process\": " + std::to_string(r.w.increments) +
             ", \"procsafe\": " + json_cost(r.procsafe, r.w) + ", \"python\": " + json_cost(r.python, r.w) +
             ", \"python_over_procsafe\": " + (q ? json_number(*q) : "null") + "}";
    }
    o += "]},\n  \"writers_under_scrape\": {\"writers\": " + std::to_string(writers) +
         ", \"scrape_period_s\": 0.1, \"pinned\": " + (where.pinned ? "true" : "false") +
         ", \"cpus\": " + std::to_string(where.cpus) + ", \"placement\": " + json_string(where.describe(writers)) +
         ", \"judged_on\": " + json_string(where.pinned ? "wall_ratio" : "cpu_ratio") + ", \"workloads\": [";
    for (std::size_t i = 0; i < under.size(); ++i) {
        const auto& u = under[i];
        std::vector<double> cw, cwo, ww, wwo;
        for (const auto& r : u.with) cw.push_back(r.cpu_ns_per_op), ww.push_back(r.wall_ns_per_op);
        for (const auto& r : u.without) cwo.push_back(r.cpu_ns_per_op), wwo.push_back(r.wall_ns_per_op);
        o += std::string(i ? "," : "") + "\n    {\"counter\": " + json_string(u.name) + ", \"what\": " +
             json_string(u.what) + ", \"ops_per_writer\": " + std::to_string(u.ops) +
             ", \"cpu_ns_per_op\": {\"scraped\": " + json_array(cw) + ", \"unscraped\": " + json_array(cwo) +
             "}, \"wall_ns_per_op\": {\"scraped\": " + json_array(ww) + ", \"unscraped\": " + json_array(wwo) +
             "}, \"cpu_ratios\": " + json_array(u.cpu_ratios) + ", \"wall_ratios\": " + json_array(u.wall_ratios) +
             ", \"cpu_ratio\": " + json_number(u.cpu_ratio()) + ", \"wall_ratio\": " + json_number(u.wall_ratio()) +
             ", \"run_seconds\": " + json_number(u.run_seconds()) +
             ", \"scrapes_per_run\": " + json_number(u.scrapes_per_run()) +
             ", \"scrape_median_ms\": " + json_number(u.scrape_ms()) +
             ", \"reader_cpu_share\": " + json_number(u.reader_cpu_share()) +
             ", \"exact\": " + (u.exact() ? "true" : "false") + "}";
    }
    return o + "]}";
}

}  // namespace scrape
