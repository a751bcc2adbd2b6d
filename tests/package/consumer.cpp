// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// A program outside the repository: 10 forked processes x 100,000
// increments on both counter kinds in a named segment; exits 0 only when
// both totals are exactly 1,000,000.
#include <procsafe/procsafe.hpp>

#include <cstdint>
#include <cstdio>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

int main() {
    const std::string name = "pkgtest_" + std::to_string(::getpid());
    auto seg = procsafe::segment::create(name, 64 * 1024);
    auto& a = seg.construct<procsafe::atomic_counter<std::int64_t>>("atomic");
    auto& m = seg.construct<procsafe::mutex_counter<std::int64_t>>("mutex");
    for (int p = 0; p < 10; ++p) {
        if (::fork() == 0) {
            auto mine = procsafe::segment::open(name);
            auto& ma = mine.find<procsafe::atomic_counter<std::int64_t>>("atomic");
            auto& mm = mine.find<procsafe::mutex_counter<std::int64_t>>("mutex");
            for (int k = 0; k < 100'000; ++k) {
                ++ma;
                ++mm;
            }
            ::_exit(0);
        }
    }
    int status = 0, failed = 0;
    while (::wait(&status) > 0) failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    std::printf("procsafe %d: atomic %lld, mutex %lld\n", PROCSAFE_VERSION, static_cast<long long>(a.value()),
                static_cast<long long>(m.value()));
    return failed == 0 && a.value() == 1'000'000 && m.value() == 1'000'000 ? 0 : 1;
}
