// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The peers of procsafe-bench: what a user would pick instead of procsafe,
// each run from a small script in benchmarks/peers/ on the same workload.
// A script takes PROCESSES INCREMENTS SERIES, forks its workers itself, holds
// them at a start barrier, times from their release to the last worker's exit,
// and prints "TOTAL SECONDS" (TOTAL read back after the workers ended, so the
// suite can say whether it is exact). Exit status 77 means "not installed"
// (its message on stderr says what to install).

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

namespace peers {

struct peer {
    std::string name;         ///< as printed
    std::string interpreter;  ///< a path, or a name looked up on PATH
    std::string package;      ///< the Debian package of the interpreter
    std::string script;       ///< file name in the peers directory
    bool python;              ///< skipped by --no-python
};

/// The peers, in the order printed. Python runs as Debian's /usr/bin/python3
/// where there is one (Debian's packages, python3-prometheus-client, are
/// installed for it; another python3 may come first on PATH).
inline std::vector<peer> all() {
    const std::string python = ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    return {
        {"ruby raindrops", "ruby", "ruby", "ruby_raindrops.rb", false},
        {"python3 prometheus_client (multiprocess mode)", python, "python3", "python_prometheus_client.py", true},
        {"python3 multiprocessing.Value + get_lock()", python, "python3", "python_multiprocessing_value.py", true},
    };
}

/// One workload's outcome for a peer: its runs, or why it did not run.
struct outcome {
    std::string skipped;               ///< empty when it ran
    std::vector<double> seconds;       ///< one per run
    std::vector<double> totals;        ///< the total each run read back
    double median_seconds() const {
        std::vector<double> s = seconds;
        std::sort(s.begin(), s.end());
        return s.empty() ? 0 : s[s.size() / 2];
    }
    bool exact(double expected) const {
        return !totals.empty() &&
               std::all_of(totals.begin(), totals.end(), [&](double t) { return t == expected; });
    }
    /// The total furthest from the expected one (the one to report).
    double worst_total(double expected) const {
        double worst = expected;
        for (double t : totals)
            if (std::abs(t - expected) > std::abs(worst - expected)) worst = t;
        return worst;
    }
};

namespace detail {

inline double now() {
    timespec t{};
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

inline std::string last_line(const std::string& s) {
    std::string t = s;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    const auto nl = t.find_last_of('\n');
    return nl == std::string::npos ? t : t.substr(nl + 1);
}

struct process_result {
    int status = -1;  ///< exit status; -1: could not start; -2: timed out
    std::string out, err;
};

/// Runs argv (argv[0] looked up on PATH) in a process group of its own,
/// collecting its stdout and stderr; after `timeout` seconds the whole group
/// (the script and its workers) is killed.
inline process_result run(const std::vector<std::string>& args, double timeout) {
    process_result r;
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return r;
    if (::pipe2(err, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return r;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    std::fflush(nullptr);
    const int spawned = ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(out[1]);
    ::close(err[1]);
    if (spawned != 0) {
        ::close(out[0]);
        ::close(err[0]);
        return r;
    }
    const double deadline = now() + timeout;
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    std::string* into[2] = {&r.out, &r.err};
    int open = 2;
    bool timed_out = false;
    while (open > 0) {
        const double left = deadline - now();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        const int n = ::poll(fds, 2, static_cast<int>(std::min(left, 1.0) * 1000) + 1);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
            char buf[4096];
            const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
            if (got > 0) {
                into[i]->append(buf, static_cast<std::size_t>(got));
            } else if (got == 0 || errno != EINTR) {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open;
            }
        }
    }
    if (timed_out) ::kill(-pid, SIGKILL);  // the script's own process group: it and its workers
    for (auto& f : fds)
        if (f.fd >= 0) ::close(f.fd);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    r.status = timed_out ? -2 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

}  // namespace detail

/// Runs a peer's script on a workload: once, or `repeat` times when the first
/// run took less than `cheap_seconds` (the median is then reported). A peer
/// that is not installed, fails, or prints something else is skipped with
/// the reason.
inline outcome run(const peer& p, const std::string& dir, int processes, long increments, int series, int repeat,
                   double cheap_seconds = 1.0, double timeout = 300) {
    outcome o;
    const std::string script = dir + "/" + p.script;
    if (::access(script.c_str(), R_OK) != 0) {
        o.skipped = "script " + script + " not found (--peers DIR)";
        return o;
    }
    const std::vector<std::string> args{p.interpreter, script, std::to_string(processes), std::to_string(increments),
                                        std::to_string(series)};
    for (int r = 0; r < repeat; ++r) {
        const auto res = detail::run(args, timeout);
        if (res.status == -1) {
            o.skipped = p.interpreter + " not found (Debian: " + p.package + ")";
        } else if (res.status == -2) {
            o.skipped = "timed out after " + std::to_string(static_cast<int>(timeout)) + " s";
        } else if (res.status == 77) {
            o.skipped = detail::last_line(res.err);
        } else if (res.status != 0) {
            o.skipped = "failed (exit " + std::to_string(res.status) + "): " + detail::last_line(res.err);
        } else {
            std::istringstream line(detail::last_line(res.out));
            double total = 0, seconds = 0;
            if (line >> total >> seconds && seconds > 0) {
                o.totals.push_back(total);
                o.seconds.push_back(seconds);
            } else {
                o.skipped = "printed '" + detail::last_line(res.out) + "', not 'TOTAL SECONDS'";
            }
        }
        if (!o.skipped.empty()) {
            o.seconds.clear();
            o.totals.clear();
            return o;
        }
        if (o.seconds.front() >= cheap_seconds) break;  // a slow peer runs once
    }
    return o;
}

}  // namespace peers
