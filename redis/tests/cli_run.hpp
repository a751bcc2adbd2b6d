// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Runs a program of procsafe::redis's CLI tests (procsafe-redis, procsafe)
// with exactly the environment given, its output kept; bounded (60 s).

#include "support/process.hpp"

#include <chrono>
#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace procsafe_test {

struct cli_result {
    int status = -1;
    std::string out, err;
    std::size_t err_lines() const {
        std::size_t n = 0;
        for (char c : err) n += c == '\n' ? 1 : 0;
        return n;
    }
};

inline std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Runs `program` with `args` and exactly the environment `env` (and
/// PATH=/usr/bin:/bin); its stdout and stderr go through files in `dir`.
inline cli_result run_program(const std::string& program, const std::string& dir, std::vector<std::string> args,
                              std::vector<std::string> env = {}) {
    args.insert(args.begin(), program);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    env.push_back("PATH=/usr/bin:/bin");
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string out = dir + "/cli.out", err = dir + "/cli.err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = -1;
    cli_result r;
    if (::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data()) == 0) {
        const int status = wait_bounded(pid, std::chrono::seconds(60));
        r.status = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

}  // namespace procsafe_test
