// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 2. Shared, but racy (the tutorial's shared Value without its lock: "the wrong way").
//
// Now the value lives in shared memory, so every process sees the same one.
// But an increment is a read followed by a write. Between the two, another
// process may write; its update is then overwritten: lost. Each half is a
// relaxed atomic access (well-defined C++; `++*p` would be undefined
// behaviour), the pair is not atomic. Pass --yield to give the CPU away
// between the halves, as the tutorial's sleep(0): then the loss shows on any
// machine, even when the loops would otherwise not overlap.
#include "support.hpp"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
    bool yield = false;
    if (argc > 1 && std::strcmp(argv[1], "--yield") == 0) {
        yield = true;
        --argc;
        ++argv;
    }
    const example::counts counts = example::parse_counts(argc, argv);
    const int processes = counts.processes;  // (not a structured binding: clang 14 cannot capture one)
    const long increments = counts.increments;

    auto seg = procsafe::segment::anonymous(4096);  // inherited by fork()
    auto& value = seg.construct<std::int64_t>("value", 0);
    example::run_processes(processes, [&](int) {
        for (long k = 0; k < increments; ++k) example::racy_add(value, 1, yield);
    });

    const long expected = processes * increments;
    const long got = static_cast<long>(example::racy_read(value));
    std::printf("racy shared%s: got %ld of %ld, lost %ld updates\n", yield ? " (yield)" : "", got, expected,
                expected - got);
    return got <= expected ? 0 : 1;  // more than expected would be a bug in the demo itself
}

// Build & run:
//   build/dev/examples/02_racy_shared [--yield] [processes] [increments]
// Expected output (the number differs from run to run; on 2 cores):
//   racy shared: got 183412 of 1000000, lost 816588 updates
//   racy shared (yield): got 132009 of 1000000, lost 867991 updates
