// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 6. Spawn by name (the Windows-style start of seeds 003/004).
//
// Without fork() a child inherits nothing: it is a fresh program. So the
// parent creates a *named* segment and starts N copies of itself as
// `argv[0] child <segment-name> <increments>`; each child opens the segment
// by name, finds the counter by name, and increments. The parent's segment
// object owns the name and removes it when it goes out of scope, even when
// a child failed.
#include <procsafe/procsafe.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

static int child(const char* segment_name, long increments) {
    auto seg = procsafe::segment::open(segment_name);  // validates the header and the owner
    auto& counter = seg.find<procsafe::atomic_counter<std::int64_t>>("requests");
    for (long k = 0; k < increments; ++k) ++counter;
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 4 && std::strcmp(argv[1], "child") == 0) return child(argv[2], std::atol(argv[3]));
    const int processes = argc > 1 ? std::atoi(argv[1]) : 4;
    const std::string increments = argc > 2 ? argv[2] : "100000";
    if (processes < 1 || std::atol(increments.c_str()) < 1) {
        std::fprintf(stderr, "usage: %s [processes] [increments]\n", argv[0]);
        return 2;
    }

    const std::string name = "procsafe-example-" + std::to_string(::getpid());
    auto seg = procsafe::segment::create(name, 64 * 1024);  // removed when `seg` goes away
    auto& counter = seg.construct<procsafe::atomic_counter<std::int64_t>>("requests");

    std::vector<pid_t> children;
    for (int i = 0; i < processes; ++i) {
        const char* args[] = {argv[0], "child", name.c_str(), increments.c_str(), nullptr};
        pid_t pid = 0;  // /proc/self/exe: this very program, however it was started
        if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, const_cast<char**>(args), environ) == 0)
            children.push_back(pid);
    }
    int failed = processes - static_cast<int>(children.size());
    for (pid_t pid : children) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    const long expected = processes * std::atol(increments.c_str());
    std::printf("spawned %d children by name '%s': got %lld of %ld, %d failed\n", processes,
                name.substr(0, 17).c_str(), static_cast<long long>(counter.value()), expected, failed);
    return failed == 0 && counter.value() == expected ? 0 : 1;
}

// Build & run:
//   build/dev/examples/06_spawn_by_name [processes] [increments]
// Expected output:
//   spawned 4 children by name 'procsafe-example-': got 400000 of 400000, 0 failed
