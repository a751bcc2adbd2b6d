// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 7. The lock must be shared, not copied (the tutorial's process pool, where a lock passed as a
//    task argument is refused or silently copied).
//
// A lock protects only the processes that lock the *same* lock. Here a
// process-shared pthread mutex sits in ordinary memory: fork() copies it, so
// each child locks its own copy, nobody waits for anybody, and updates of the
// shared value are lost anyway. The same mutex placed in the shared segment
// is one lock for all: exact. (Python says it as "Lock objects should only be
// shared between processes through inheritance".)
#include "support.hpp"

#include <cstdio>
#include <pthread.h>

struct locked_value {
    pthread_mutex_t lock;
    std::int64_t value = 0;
    locked_value() {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&lock, &attr);
        pthread_mutexattr_destroy(&attr);
    }
};

int main(int argc, char** argv) {
    const example::counts counts = example::parse_counts(argc, argv);
    const int processes = counts.processes;  // (not a structured binding: clang 14 cannot capture one)
    long increments = counts.increments;
    if (argc <= 2) increments = 10'000;  // each step yields inside the lock: keep it short

    auto seg = procsafe::segment::anonymous(4096);

    // (a) The lock in the parent's private memory; the value in the segment.
    static locked_value copied;  // fork() gives every child its own copy
    auto& value = seg.construct<std::int64_t>("value", 0);
    example::run_processes(processes, [&](int) {
        for (long k = 0; k < increments; ++k) {
            pthread_mutex_lock(&copied.lock);  // the child's own copy: never contended
            example::racy_add(value, 1, /*yield=*/true);
            pthread_mutex_unlock(&copied.lock);
        }
    });
    const long expected = processes * increments;
    const long copied_got = static_cast<long>(example::racy_read(value));

    // (b) Lock and value together in the segment: one lock for everyone.
    auto& shared = seg.construct<locked_value>("shared");
    example::run_processes(processes, [&](int) {
        for (long k = 0; k < increments; ++k) {
            pthread_mutex_lock(&shared.lock);
            example::racy_add(shared.value, 1, /*yield=*/true);  // safe: under the one lock
            pthread_mutex_unlock(&shared.lock);
        }
    });
    const long shared_got = static_cast<long>(example::racy_read(shared.value));

    std::printf("lock copied into each child: got %ld of %ld, lost %ld\n", copied_got, expected,
                expected - copied_got);
    std::printf("lock in shared memory:       got %ld of %ld, lost %ld\n", shared_got, expected,
                expected - shared_got);
    return shared_got == expected ? 0 : 1;
}

// Build & run:
//   build/dev/examples/07_shared_lock [processes] [increments]   (default 10 x 10000)
// Expected output (the first count differs from run to run):
//   lock copied into each child: got 12774 of 100000, lost 87226
//   lock in shared memory:       got 100000 of 100000, lost 0
