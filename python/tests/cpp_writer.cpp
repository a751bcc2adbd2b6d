// procsafe_py_writer: the C++ side of the Python tests (one segment, two languages).
// SPDX-License-Identifier: MIT
//   procsafe_py_writer SEGMENT COUNTER atomic|mutex COUNT
// Opens the segment, finds the int64 counter made by Python, counts the latch
// "start" down and waits for it (every writer starts together), then
// increments COUNT times.
#include <procsafe/procsafe.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

template <class Counter>
static int run(procsafe::segment& seg, const char* name, long count) {
    auto& c = seg.find<Counter>(name);
    auto& start = seg.find<procsafe::latch>("start");
    start.count_down();
    if (!start.wait_for(std::chrono::seconds(30))) return 2;
    for (long k = 0; k < count; ++k) c.increment();
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s SEGMENT COUNTER atomic|mutex COUNT\n", argv[0]);
        return 64;
    }
    try {
        auto seg = procsafe::segment::open(argv[1]);
        const long count = std::strtol(argv[4], nullptr, 10);
        if (std::strcmp(argv[3], "atomic") == 0) return run<procsafe::atomic_counter<std::int64_t>>(seg, argv[2], count);
        return run<procsafe::mutex_counter<std::int64_t>>(seg, argv[2], count);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe_py_writer: %s\n", e.what());
        return 1;
    }
}
