// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Started by windows_tests.exe with CreateProcess (Windows has no fork):
//   windows_child atomic|mutex|sharded SEGMENT COUNT   increment COUNT times
//   windows_child hold SEGMENT                         take the mutex counter's lock and never let go
//   windows_child wait SEGMENT N                       wait until the atomic counter reaches N
#include "windows_support.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: windows_child MODE SEGMENT [N]\n");
        return 64;
    }
    try {
        const std::string mode = argv[1];
        auto seg = procsafe::segment::open(argv[2]);
        const long n = argc > 3 ? std::atol(argv[3]) : 0;
        if (mode == "hold") {
            auto& m = seg.find<procsafe::mutex_counter<std::int64_t>>("mutex");
            auto& b = seg.find<wintest::board>("board");
            m.with_lock([&](std::int64_t& v) {
                v += 1'000'000;  // never committed: the parent terminates us first
                b.holding.store(1);
                ::Sleep(60'000);
            });
            return 3;
        }
        if (mode == "wait") {
            auto& a = seg.find<procsafe::atomic_counter<std::int64_t>>("atomic");
            seg.find<wintest::board>("board").about_to_wait.fetch_add(1);
            return a.wait_at_least_for(n, std::chrono::seconds(30)) ? 0 : 4;
        }
        auto& line = seg.find<wintest::start_line>("start");
        if (mode == "atomic") {
            auto& c = seg.find<procsafe::atomic_counter<std::int64_t>>("atomic");
            if (!line.arrive_and_wait()) return 2;
            for (long k = 0; k < n; ++k) c.increment();
        } else if (mode == "mutex") {
            auto& c = seg.find<procsafe::mutex_counter<std::int64_t>>("mutex");
            if (!line.arrive_and_wait()) return 2;
            for (long k = 0; k < n; ++k) c.increment();
        } else if (mode == "sharded") {
            auto& c = seg.find<procsafe::sharded_counter<std::int64_t>>("sharded");
            auto w = c.local();
            if (!line.arrive_and_wait()) return 2;
            for (long k = 0; k < n; ++k) w.increment();
        } else {
            return 64;
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "windows_child: %s\n", e.what());
        return 1;
    }
}
