// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The README's first example, compiled and run by ctest so it stays true.
#include <procsafe/procsafe.hpp>
#include <cstdio>
#include <sys/wait.h>
#include <unistd.h>

int main() {
    // 0600, removed by its owner; one a crashed run left behind is replaced
    auto seg = procsafe::segment::create("jobs", 1 << 20, 0600, procsafe::create_mode::replace_orphan);
    auto& done = seg.construct<procsafe::atomic_counter<long>>("done");
    for (int p = 0; p < 10; ++p)
        if (fork() == 0) { for (int k = 0; k < 100'000; ++k) ++done; _exit(0); }
    while (wait(nullptr) > 0) {}
    std::printf("%ld\n", done.value());                       // 1000000
}

// Build & run:
//   build/dev/examples/00_readme
// Expected output:
//   1000000
