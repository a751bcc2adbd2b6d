// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 6. Spawn by name (the tutorials' "spawn" start method, the only one Windows has).
//
// Without fork() a child inherits nothing: it is a fresh program. So the
// parent creates a *named* segment and starts N copies of itself as
// `argv[0] child <segment-name> <increments>`; each child opens the segment
// by name, finds the counter by name, and increments. The parent's segment
// object owns the name and removes it when it goes out of scope, even when a
// child failed. Builds and runs on Linux (posix_spawn) and Windows (CreateProcess).
#include <procsafe/procsafe.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
extern char** environ;
#endif

static int child(const char* segment_name, long increments) {
    auto seg = procsafe::segment::open(segment_name);  // validates the header and the owner
    auto& counter = seg.find<procsafe::atomic_counter<std::int64_t>>("requests");
    for (long k = 0; k < increments; ++k) ++counter;
    return 0;
}

/// Starts this very program with `child NAME COUNT`; true if it ran and exited 0.
static bool run_copies(int n, const std::string& name, const std::string& count) {
    int ok = 0;
#if defined(_WIN32)
    char self[MAX_PATH];
    ::GetModuleFileNameA(nullptr, self, MAX_PATH);
    std::vector<HANDLE> procs;
    for (int i = 0; i < n; ++i) {
        // Appended, not "literal" + std::string: GCC 12 at -O3 warns on that
        // (-Wrestrict, a false positive, GCC bug 105329).
        std::string cmd(1, '"');
        cmd.append(self).append("\" child ").append(name).append(" ").append(count);
        STARTUPINFOA si{};
        si.cb = sizeof si;
        PROCESS_INFORMATION pi{};
        if (::CreateProcessA(nullptr, cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr, &si, &pi)) {
            ::CloseHandle(pi.hThread);
            procs.push_back(pi.hProcess);
        }
    }
    for (HANDLE h : procs) {
        DWORD code = 1;
        ::WaitForSingleObject(h, INFINITE);
        ::GetExitCodeProcess(h, &code);
        ok += code == 0;
        ::CloseHandle(h);
    }
#else
    std::vector<pid_t> pids;
    for (int i = 0; i < n; ++i) {
        const char* args[] = {"06_spawn_by_name", "child", name.c_str(), count.c_str(), nullptr};
        pid_t pid = 0;  // /proc/self/exe: this very program, however it was started
        if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, const_cast<char**>(args), environ) == 0)
            pids.push_back(pid);
    }
    for (pid_t pid : pids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        ok += WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
#endif
    return ok == n;
}

int main(int argc, char** argv) {
    if (argc == 4 && std::strcmp(argv[1], "child") == 0) return child(argv[2], std::atol(argv[3]));
    const int processes = argc > 1 ? std::atoi(argv[1]) : 4;
    const std::string increments = argc > 2 ? argv[2] : "100000";
    if (processes < 1 || std::atol(increments.c_str()) < 1) {
        std::fprintf(stderr, "usage: %s [processes] [increments]\n", argv[0]);
        return 2;
    }
    std::string name("procsafe-example-");
#if defined(_WIN32)
    name.append(std::to_string(::GetCurrentProcessId()));
#else
    name.append(std::to_string(::getpid()));
#endif
    auto seg = procsafe::segment::create(name, 64 * 1024);  // removed when `seg` goes away
    auto& counter = seg.construct<procsafe::atomic_counter<std::int64_t>>("requests");

    const bool all_ok = run_copies(processes, name, increments);
    const long expected = processes * std::atol(increments.c_str());
    std::printf("spawned %d children by name '%s': got %lld of %ld, %d failed\n", processes,
                name.substr(0, 17).c_str(), static_cast<long long>(counter.value()), expected, all_ok ? 0 : 1);
    return all_ok && counter.value() == expected ? 0 : 1;
}

// Build & run:
//   build/dev/examples/06_spawn_by_name [processes] [increments]
// Expected output:
//   spawned 4 children by name 'procsafe-example-': got 400000 of 400000, 0 failed
