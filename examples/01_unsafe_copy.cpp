// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 1. The unsafe copy (the tutorial's first counter: an ordinary object, copied into each child;
//    a forked global "cannot race" for the same reason).
//
// An ordinary counter object lives in the parent's memory. fork() gives every
// child its own copy, so each child counts in its own copy and the parent's
// object never moves: the parent prints 0. Nothing races, nothing is shared.
#include "support.hpp"

#include <cstdio>

// The tutorial's UnsafeCounter, in C++: a plain member, no sharing at all.
class unsafe_counter {
public:
    void increment() { ++value_; }
    long value() const { return value_; }

private:
    long value_ = 0;
};

int main(int argc, char** argv) {
    const example::counts counts = example::parse_counts(argc, argv);
    const int processes = counts.processes;  // (not a structured binding: clang 14 cannot capture one)
    const long increments = counts.increments;

    unsafe_counter counter;  // in the parent's private memory
    example::run_processes(processes, [&](int) {
        for (long k = 0; k < increments; ++k) counter.increment();  // the child's own copy
        // Each child's copy reached `increments`; it dies with the child.
    });

    std::printf("unsafe copy: %d processes x %ld increments, parent sees %ld (expected %ld)\n", processes,
                increments, counter.value(), processes * increments);
    std::printf("every child counted in its own copy of the object\n");
    return counter.value() == 0 ? 0 : 1;
}

// Build & run:
//   ./dev demo                      (builds everything, runs procsafe-demo)
//   build/dev/examples/01_unsafe_copy [processes] [increments]
// Expected output:
//   unsafe copy: 10 processes x 100000 increments, parent sees 0 (expected 1000000)
//   every child counted in its own copy of the object
