// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe-bench: every counter against the raw primitive it wraps and
// against Python's multiprocessing.Value, in one run.
//   procsafe-bench [--quick] [--processes 1,2,4] [--ops K] [--repeat R]
//                  [--json FILE] [--plot FILE.png|.svg] [--check] [--no-python]
#include "contenders.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: procsafe-bench [--quick] [--processes LIST] [--ops K] [--repeat R]\n"
    "                      [--json FILE] [--plot FILE.png|FILE.svg] [--check] [--no-python]\n"
    "  --quick      1,2 processes only (CI); --check then takes the lower of the median and\n"
    "               best-of-run ratios, with relaxed bounds, and re-measures a miss up to twice\n"
    "  --check      exit 1 when a performance target is missed, printing the ratios\n"
    "  --repeat R   runs per cell, medians reported (default 9; 5 with --quick)\n";

const char* atomic_name = "procsafe atomic_counter<int64>";
const char* mutex_name = "procsafe mutex_counter<int64>";
const char* fetch_add_name = "raw atomic_ref fetch_add";
const char* robust_name = "raw pthread mutex (robust)";
const char* plain_name = "raw pthread mutex (not robust)";
const char* sharded_name = "procsafe sharded writer (owned_slot)";
const char* single_writer_name = "raw single-writer slot";
const char* slot_fetch_add_name = "raw per-process slot fetch_add";

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
    s.add(atomic_name, procsafe_counter<procsafe::atomic_counter<std::int64_t>>(), {fetch_add_name, ""});
    s.add(fetch_add_name, raw_fetch_add(), {"", "std::atomic_ref<int64_t>::fetch_add on one 128-byte line"});
    s.add(mutex_name, procsafe_counter<procsafe::mutex_counter<std::int64_t>>(),
          {robust_name, "robust + process-shared pthread mutex, double-buffered value"});
    s.add(robust_name, raw_pthread_mutex(true), {"", "PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST, lock/++/unlock"});
    s.add(plain_name, raw_pthread_mutex(false), {"", "PTHREAD_PROCESS_SHARED only: a dead owner hangs everyone"});
    s.add("boost interprocess_mutex", boost_interprocess_mutex(), {"", "Boost 1.74: not robust"});
    s.add(sharded_name, sharded_writer(procsafe::shard_strategy::owned_slot),
          {single_writer_name, "local() writer: the thread's own slot, load + store; read sums 65 lines"});
    s.add("procsafe sharded increment() (owned_slot)", sharded(procsafe::shard_strategy::owned_slot),
          {single_writer_name, "increment(): finds the slot through a thread-local cache at every call"});
    s.add("procsafe sharded writer (per_cpu)", sharded_writer(procsafe::shard_strategy::per_cpu),
          {slot_fetch_add_name, "slot of the CPU, lock xadd (rejected: lock xadd costs more than load + store)"});
    s.add("procsafe sharded increment() (per_cpu)", sharded(procsafe::shard_strategy::per_cpu),
          {slot_fetch_add_name, "sched_getcpu() at every call, lock xadd (rejected)"});
    s.add("procsafe sharded writer (per_process)", sharded_writer(procsafe::shard_strategy::per_process),
          {slot_fetch_add_name, "slot by pid hash, lock xadd (rejected: collisions share a line)"});
    s.add(slot_fetch_add_name, per_process_slot(false), {"", "own line, lock xadd; read sums all lines"});
    s.add(single_writer_name, per_process_slot(true), {"", "own line, load + store: the hardware's line"});
    s.add("racy load+store (not a contender)", racy(), {"", "relaxed load then store: loses updates"});
}

/// Seed 000's safe counter, as written: 10 processes x N increments of a
/// multiprocessing.Value under get_lock(). Prints the value and the seconds.
std::optional<double> python_ns_per_increment(int processes, long increments, long& value) {
    const std::string script =
        "import time\n"
        "from multiprocessing import Process, Value\n"
        "def task(v, n):\n"
        "    for _ in range(n):\n"
        "        with v.get_lock():\n"
        "            v.value += 1\n"
        "if __name__ == '__main__':\n"
        "    v = Value('i', 0)\n"
        "    ps = [Process(target=task, args=(v, " + std::to_string(increments) + ")) for _ in range(" +
        std::to_string(processes) + ")]\n"
        "    t = time.perf_counter()\n"
        "    for p in ps: p.start()\n"
        "    for p in ps: p.join()\n"
        "    print(v.value, time.perf_counter() - t)\n";
    const std::string path = "/tmp/procsafe-bench-seed-" + std::to_string(::getpid()) + ".py";
    if (std::FILE* f = std::fopen(path.c_str(), "w")) {
        std::fputs(script.c_str(), f);
        std::fclose(f);
    } else {
        return std::nullopt;
    }
    std::FILE* p = ::popen(("python3 " + path + " 2>/dev/null").c_str(), "r");
    double seconds = 0;
    const bool ok = p != nullptr && std::fscanf(p, "%ld %lf", &value, &seconds) == 2;
    if (p != nullptr) ::pclose(p);
    std::remove(path.c_str());
    if (!ok) return std::nullopt;
    return seconds * 1e9 / (static_cast<double>(processes) * static_cast<double>(increments));
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

}  // namespace

int main(int argc, char** argv) {
    procsafe::bench::options opt;
    opt.progress = ::isatty(2) != 0;  // a progress line for people, not for logs
    bool quick = false, check = false, python = true, ops_given = false, repeat_given = false, procs_given = false;
    std::string json_file, plot_file;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--quick") quick = true;
        else if (a == "--check") check = true;
        else if (a == "--no-python") python = false;
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

    // The seeds' workload: 10 processes x 100,000 increments, as Python ran it.
    const int seed_procs = 10;
    const long seed_ops = quick ? 20'000 : 100'000;
    // (Fixed counts here, no calibration: the workload is the seeds' own.)
    procsafe::bench::suite seeds({.processes = {seed_procs}, .ops = seed_ops, .repeat = opt.repeat,
                                  .min_run_seconds = 0, .workloads = {procsafe::bench::workload::increment},
                                  .progress = opt.progress});
    seeds.add(atomic_name, contenders::procsafe_counter<procsafe::atomic_counter<std::int64_t>>());
    seeds.add(mutex_name, contenders::procsafe_counter<procsafe::mutex_counter<std::int64_t>>());
    seeds.add(sharded_name, contenders::sharded_writer(procsafe::shard_strategy::owned_slot));
    seeds.run();
    std::optional<double> py_ns;
    long py_value = 0;
    if (python) {
        std::fprintf(stderr, "running Python's multiprocessing.Value + get_lock() (%d x %ld)...\n", seed_procs, seed_ops);
        py_ns = python_ns_per_increment(seed_procs, seed_ops, py_value);
    }
    std::printf("\nthe seeds' workload: %d processes x %ld increments\n", seed_procs, seed_ops);
    std::printf("%-42s %10s %10s\n", "contender", "ns/incr", "vs Python");
    for (const auto& r : seeds.results()) {
        std::printf("%-42s %10.2f %9.0fx\n", r.contender.c_str(), r.median_ns(), py_ns ? *py_ns / r.median_ns() : 0.0);
    }
    if (py_ns) {
        std::printf("%-42s %10.1f %10s   (one run; value %ld)\n", "python3 multiprocessing.Value + get_lock()",
                    *py_ns, "1x", py_value);
    } else {
        std::printf("python3 not found or failed: Python baseline skipped\n");
    }

    // What a sharded counter's read costs, by slot count (one process).
    const std::size_t slot_counts[] = {1, 4, 16, 64, 256, 1024};
    std::printf("\nsharded_counter value() by slot count (one process, median of %d)\n%8s %12s\n", opt.repeat,
                "slots", "ns/value()");
    std::optional<double> value_64;
    for (std::size_t slots : slot_counts) {
        auto seg = procsafe::segment::anonymous(slots * 128 * 2 + 64 * 1024);
        auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c", slots);
        c.increment();
        std::vector<double> ns;
        const long calls = quick ? 20'000 : 200'000;
        for (int r = 0; r < opt.repeat; ++r) {
            std::int64_t sink = 0;
            const double t0 = procsafe::bench::detail::now_seconds();
            for (long i = 0; i < calls; ++i) sink += c.value();
            ns.push_back((procsafe::bench::detail::now_seconds() - t0) * 1e9 / static_cast<double>(calls));
            if (sink == -1) std::printf(" ");
        }
        std::sort(ns.begin(), ns.end());
        std::printf("%8zu %12.1f\n", slots, ns[ns.size() / 2]);
        if (slots == 64) value_64 = ns[ns.size() / 2];
    }

    // Wake-up latency: a process asleep in wait_at_least(i); the parent
    // stamps the time and increments; the waiter stamps when it returns.
    std::optional<double> wake_median;
    {
        const int samples = quick ? 100 : 1000;
        struct wake_shared {
            procsafe::atomic_counter<std::int64_t> counter;
            procsafe::atomic_counter<int> announced;
            double incremented[1000];
            double woke[1000];
        };
        auto seg = procsafe::segment::anonymous(64 * 1024);
        auto& w = seg.construct<wake_shared>("wake");
        std::fflush(nullptr);
        const pid_t pid = ::fork();
        if (pid == 0) {
            for (int i = 0; i < samples; ++i) {
                w.announced.store(i + 1);
                if (!w.counter.wait_at_least_for(i + 1, std::chrono::seconds(10))) ::_exit(1);
                w.woke[i] = procsafe::bench::detail::now_seconds();
            }
            ::_exit(0);
        }
        for (int i = 0; i < samples; ++i) {
            w.announced.wait_at_least(i + 1);
            // Give the waiter 200 us to fall asleep (busy: no sleep call here).
            const double until = procsafe::bench::detail::now_seconds() + 200e-6;
            while (procsafe::bench::detail::now_seconds() < until) {}
            w.incremented[i] = procsafe::bench::detail::now_seconds();
            w.counter.increment();
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        std::vector<double> us;
        for (int i = 0; i < samples; ++i) us.push_back((w.woke[i] - w.incremented[i]) * 1e6);
        std::sort(us.begin(), us.end());
        const double median = us[us.size() / 2], p99 = us[us.size() * 99 / 100];
        std::printf("\nwake-up latency, increment to a sleeping waiter's return (%d samples, another process)\n", samples);
        std::printf("  median %.1f us, p99 %.1f us, max %.1f us%s\n", median, p99, us.back(),
                    WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "" : " (the waiter FAILED)");
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) wake_median = median;
    }

    // The targets, as ratios of medians from this run.
    const double bound_atomic = quick ? 1.5 : 1.10, bound_mutex = quick ? 1.5 : 1.15, bound_python = quick ? 20 : 100;
    bool ok = true;
    std::printf("\ntargets%s:\n",
                quick ? " (quick mode: the lower of the median and best-of-run ratios, relaxed bounds;"
                        " a miss is re-measured up to twice on its own)"
                      : " (ratios of medians)");
    // A ratio taken from a suite's results; nullopt when a cell did not run.
    using measure_fn = std::function<std::optional<double>(const procsafe::bench::suite&)>;
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
    // Quick mode judges a ratio by the better of two estimators, median and
    // best-of-run: a real regression raises both, one noisy run only one.
    auto ratio_of = [quick](const char* name, int p) -> measure_fn {
        return [=](const procsafe::bench::suite& in) -> std::optional<double> {
            const auto* r = in.find(name, procsafe::bench::workload::increment, p);
            if (r == nullptr) return std::nullopt;
            const auto median = in.ratio_to_baseline(*r);
            const auto best = in.ratio_to_baseline(*r, true);
            if (quick && median && best) return std::min(*median, *best);
            return median;
        };
    };
    // Judges a target on the main run. In quick mode (CI, a shared 2-CPU
    // machine) a miss is measured again with only the contenders it compares,
    // at most twice: a regression misses every time, a noisy neighbour
    // rarely twice in a row. The full check never retries.
    //
    // A target about contention (`contended`: the cell whose processes must
    // have run at once) means nothing when they did not: on a busy machine
    // two writers take turns on one CPU and a shared fetch_add costs what it
    // costs alone. In quick mode such a run is not judged but measured
    // again; if no attempt overlapped, the target is reported as not judged.
    enum class verdict { met, missed, not_judged };
    auto target = [&](const std::string& what, const measure_fn& measure, std::vector<std::string> contenders_used,
                      int processes, double bound, bool at_most, const char* contended = nullptr) {
        auto judge = [&](const std::string& label, const procsafe::bench::suite& in) {
            if (contended == nullptr) return report(label, measure(in), bound, at_most) ? verdict::met : verdict::missed;
            const auto* cell = in.find(contended, procsafe::bench::workload::increment, processes);
            const double ran = cell != nullptr ? cell->median_parallelism() : 0.0;
            if (quick && ran < 0.75 * processes) {
                std::printf("  %-58s not judged: the %d processes ran %.2f at a time (busy machine)\n",
                            label.c_str(), processes, ran);
                return verdict::not_judged;
            }
            const bool met = report(label, measure(in), bound, at_most);
            std::printf("  %-58s (the %d processes ran %.2f at a time)\n", "", processes, ran);
            return met ? verdict::met : verdict::missed;
        };
        verdict v = judge(what, s);
        bool judged = v != verdict::not_judged;
        for (int attempt = 1; v != verdict::met && quick && attempt <= 2; ++attempt) {
            procsafe::bench::options again = opt;
            again.processes = {processes};
            again.workloads = {procsafe::bench::workload::increment};
            procsafe::bench::suite retry(again);
            add_contenders(retry, contenders_used);
            retry.run();
            v = judge("  re-measured on its own (" + std::to_string(attempt) + "/2)", retry);
            judged = judged || v != verdict::not_judged;
        }
        if (!judged) std::printf("  %-58s not judged in quick mode: no attempt ran its processes at once\n", "");
        ok = ok && (v == verdict::met || !judged);
    };
    auto plain = [&](const std::string& what, std::optional<double> value, double bound, bool at_most) {
        ok = report(what, value, bound, at_most) && ok;
    };
    for (int p : {1, 2}) {
        const std::string at = std::to_string(p) + (p == 1 ? " process" : " processes");
        target("atomic_counter (waitable) / raw fetch_add, " + at, ratio_of(atomic_name, p),
               {atomic_name, fetch_add_name}, p, bound_atomic, true);
        target("mutex_counter / raw robust pthread mutex, " + at, ratio_of(mutex_name, p),
               {mutex_name, robust_name}, p, bound_mutex, true);
    }
    {
        // sharded_counter: the writer against atomic_counter and the raw single-writer line.
        const measure_fn speedup = [quick](const procsafe::bench::suite& in) -> std::optional<double> {
            const auto* sh = in.find(sharded_name, procsafe::bench::workload::increment, 2);
            const auto* at = in.find(atomic_name, procsafe::bench::workload::increment, 2);
            if (sh == nullptr || at == nullptr) return std::nullopt;
            return quick ? std::max(at->median_ns() / sh->median_ns(), at->min_ns() / sh->min_ns())
                         : at->median_ns() / sh->median_ns();
        };
        // The speed-up is over a contended fetch_add: judged on runs whose two
        // atomic_counter processes ran at once.
        target("sharded writer speed-up over atomic_counter, 2 processes", speedup, {sharded_name, atomic_name}, 2,
               quick ? 3.0 : 10.0, false, atomic_name);
        target("sharded writer / raw single-writer slot, 2 processes", ratio_of(sharded_name, 2),
               {sharded_name, single_writer_name}, 2, quick ? 3.0 : 1.5, true);
        const auto* sh10 = seeds.find(sharded_name, procsafe::bench::workload::increment, seed_procs);
        const auto* at10 = seeds.find(atomic_name, procsafe::bench::workload::increment, seed_procs);
        if (quick) {
            // 10 short processes on a small machine measure the scheduler, not the counter.
            std::printf("  %-58s not checked in quick mode\n", "sharded writer speed-up over atomic_counter, 10 processes");
        } else {
            plain("sharded writer speed-up over atomic_counter, 10 processes",
                  sh10 && at10 ? std::optional<double>(at10->median_ns() / sh10->median_ns()) : std::nullopt, 5.0,
                  false);
        }
        plain("sharded_counter value() with 64 slots, ns", value_64, quick ? 1000.0 : 200.0, true);
    }
    plain("wake-up latency, median us", wake_median, quick ? 1000.0 : 100.0, true);
    const auto* seed_atomic = seeds.find(atomic_name, procsafe::bench::workload::increment, seed_procs);
    plain("Python / atomic_counter, seeds' workload (speed-up)",
          py_ns && seed_atomic ? std::optional<double>(*py_ns / seed_atomic->median_ns()) : std::nullopt, bound_python,
          false);

    if (!json_file.empty()) {
        std::string extra = "  \"seeds_workload\": {\"processes\": " + std::to_string(seed_procs) +
                            ", \"increments\": " + std::to_string(seed_ops);
        for (const auto& r : seeds.results())
            extra += ", \"" + r.contender + " ns\": " + std::to_string(r.median_ns());
        if (py_ns) extra += ", \"python ns\": " + std::to_string(*py_ns);
        extra += "}";
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
