// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// Linking procsafe::bench to measure your own contender: register a setup
// that places its state in the segment and returns the per-process ops, and
// get the same table as procsafe-bench (here next to the raw fetch_add).
#include <procsafe/bench/harness.hpp>

#include <cstdio>

int main() {
    procsafe::bench::suite s({.processes = {1, 2}, .ops = 100'000, .repeat = 3,
                              .workloads = {procsafe::bench::workload::increment}});

    // Your contender: anything with increment() and read(); total() enables
    // the lost-update column, start(int process) runs in each process first.
    s.add("my atomic counter", [](procsafe::segment& seg, int /*processes*/) {
        struct ops {
            procsafe::atomic_counter<long>* c;
            void increment() { c->fetch_add(1, std::memory_order_relaxed); }
            long read() { return c->value(std::memory_order_relaxed); }
            long total() { return c->value(); }
        };
        return ops{&seg.construct<procsafe::atomic_counter<long>>("mine")};
    }, {"raw fetch_add", "fetch_add with memory_order_relaxed"});

    s.add("raw fetch_add", [](procsafe::segment& seg, int) {
        struct alignas(128) cell { long v; };
        struct ops {
            long* v;
            void increment() { std::atomic_ref<long>(*v).fetch_add(1); }
            long read() { return std::atomic_ref<long>(*v).load(); }
            long total() { return read(); }
        };
        return ops{&seg.construct<cell>("raw").v};
    });

    s.run();
    s.print_table(stdout);
    for (const auto& r : s.results()) {
        if (!r.lost.empty() && r.lost.front() != 0) return 1;  // a correct counter loses nothing
        // Processes at once, on average: never more than there were (a little
        // slack for the clocks), never nothing.
        if (r.parallelism.size() != r.seconds.size()) return 1;
        for (double ran : r.parallelism)
            if (!(ran > 0 && ran <= r.processes * 1.05)) return 1;
        std::printf("%-20s P=%d ran %.2f processes at a time (median)\n", r.contender.c_str(), r.processes,
                    r.median_parallelism());
    }
    return 0;
}

// Build & run:
//   cmake --build build/dev --target procsafe-bench-custom && build/dev/benchmarks/procsafe-bench-custom
// Expected output (numbers vary): a table with "my atomic counter" and "raw fetch_add"
// rows at 1 and 2 processes, lost 0.0%, and the ratio of the first to the second;
// then how many processes ran at a time in each cell (about 1.00 and, with two
// idle CPUs, about 2.00).
