// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Helpers for multi-process tests: forked and spawned children with bounded
// waits, unique segment names, and the start barrier (start_barrier.hpp). No
// sleeps: children meet at the barrier, the parent waits on pidfds with a
// deadline.

#include "start_barrier.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace procsafe_test {

using namespace std::chrono_literals;

/// A unique, valid segment name for this process and tag.
inline std::string unique_name(const char* tag) {
    static std::atomic<int> serial{0};
    return std::string("pst_") + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(serial++);
}

/// Waits for pid to exit, at most `limit`; kills it after that.
/// Returns its wait status, or -1 when it had to be killed.
inline int wait_bounded(pid_t pid, std::chrono::milliseconds limit) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) {
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(limit.count()));
        ::close(fd);
        if (r == 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            return -1;
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return status;
}

/// True when a wait status says: exited normally with code 0.
inline bool exited_ok(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

/// Forks n children; child i runs body(i) and exits with its result (an
/// exception is exit code 99). Children never return into the test runner.
inline std::vector<pid_t> fork_children(int n, const std::function<int(int)>& body) {
    std::vector<pid_t> pids;
    std::fflush(nullptr);
    for (int i = 0; i < n; ++i) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            int rc = 99;
            try {
                rc = body(i);
            } catch (const std::exception& e) {
                std::fprintf(stderr, "child %d: %s\n", i, e.what());
            } catch (...) {
            }
            ::_exit(rc);
        }
        if (pid > 0) pids.push_back(pid);
    }
    return pids;
}

/// Waits for every child (bounded); returns how many exited with code 0.
inline int join_children(const std::vector<pid_t>& pids, std::chrono::milliseconds limit = 120s) {
    int ok = 0;
    for (pid_t pid : pids) ok += exited_ok(wait_bounded(pid, limit)) ? 1 : 0;
    return ok;
}

/// Starts `path args...` with posix_spawn; returns its pid or -1.
inline pid_t spawn(const std::string& path, const std::vector<std::string>& args) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(path.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (::posix_spawn(&pid, path.c_str(), nullptr, nullptr, argv.data(), environ) != 0) return -1;
    return pid;
}

}  // namespace procsafe_test
