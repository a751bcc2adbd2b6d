// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// A fixed loop for callgrind: `procsafe-instructions KIND N` does N
// operations of one kind; callgrind.cmake runs it under valgrind for 0 and N
// operations and prints instructions per operation (repeatable, unlike time).
// Kinds: raw (fetch_add on a line), single (the raw single-writer line: load
// + store), atomic, mutex, value, writer (sharded local()), sharded
// (increment()), alternate (increment() on two sharded counters in turn).
#include <procsafe/procsafe.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s raw|single|atomic|mutex|value|writer|sharded|alternate N\n", argv[0]);
        return 2;
    }
    const long n = std::atol(argv[2]);
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& a = seg.construct<procsafe::atomic_counter<std::int64_t>>("a");
    auto& m = seg.construct<procsafe::mutex_counter<std::int64_t>>("m");
    struct alignas(128) cell { std::int64_t v; };
    auto& raw = seg.construct<cell>("raw");
    auto& sharded = seg.construct<procsafe::sharded_counter<std::int64_t>>("s");
    auto& other = seg.construct<procsafe::sharded_counter<std::int64_t>>("t");
    auto writer = sharded.local();
    std::int64_t sink = 0;
    const char* kind = argv[1];
    if (std::strcmp(kind, "atomic") == 0) for (long i = 0; i < n; ++i) sink += a.increment();
    else if (std::strcmp(kind, "raw") == 0) for (long i = 0; i < n; ++i) sink += std::atomic_ref<std::int64_t>(raw.v).fetch_add(1) + 1;
    else if (std::strcmp(kind, "single") == 0) {
        std::atomic_ref<std::int64_t> v(raw.v);
        for (long i = 0; i < n; ++i) v.store(v.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    else if (std::strcmp(kind, "mutex") == 0) for (long i = 0; i < n; ++i) sink += m.increment();
    else if (std::strcmp(kind, "value") == 0) for (long i = 0; i < n; ++i) sink += a.value();
    else if (std::strcmp(kind, "writer") == 0) for (long i = 0; i < n; ++i) writer.increment();
    else if (std::strcmp(kind, "sharded") == 0) for (long i = 0; i < n; ++i) sharded.increment();
    else if (std::strcmp(kind, "alternate") == 0) for (long i = 0; i < n; ++i) (i & 1 ? other : sharded).increment();
    else return 2;
    return sink == -1 ? 1 : 0;
}
