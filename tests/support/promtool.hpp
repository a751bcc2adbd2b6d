// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// `promtool check metrics` over an exposition, for the library's tests (the
// tools' tests have their own, in tools/cli_support.hpp).

#include <cstdio>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace procsafe_test {

/// Runs `promtool check metrics` on the text: its exit status, with its
/// output in `output`, or -1 when promtool is not installed.
inline int promtool_check(const std::string& text, std::string& output) {
    if (::access("/usr/bin/promtool", X_OK) != 0) return -1;
    const std::string file = "/tmp/procsafe-promtool-" + std::to_string(::getpid()) + ".prom";
    if (std::FILE* f = std::fopen(file.c_str(), "w")) {
        std::fputs(text.c_str(), f);
        std::fclose(f);
    }
    std::FILE* p = ::popen(("/usr/bin/promtool check metrics < " + file + " 2>&1").c_str(), "r");
    char buf[512];
    while (p != nullptr && std::fgets(buf, sizeof buf, p) != nullptr) output += buf;
    const int status = p != nullptr ? ::pclose(p) : -1;
    std::remove(file.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace procsafe_test
