// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// A fixed loop for callgrind: `procsafe-instructions KIND N` does N
// operations of one kind; callgrind.cmake runs it under valgrind for 0 and N
// operations and prints instructions per operation (repeatable, unlike time).
// Kinds: raw (fetch_add on a line), single (the raw single-writer line: load
// + store), atomic, mutex, value, writer (sharded local()), sharded
// (increment()), alternate (increment() on two sharded counters in turn),
// per_process (increment() of a per_process sharded counter: fetch_add).
// Each loop is a function of its own, so that what one loop keeps in
// registers does not depend on the others (in one large main, GCC spilled
// the loop bound of some loops and not others): every count is then the
// operation plus the same 3 instructions of loop (add, compare, branch).
#include <procsafe/procsafe.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

template <class Op>
[[gnu::noinline]] std::int64_t loop(long n, Op op) {
    std::int64_t sink = 0;
    for (long i = 0; i < n; ++i) sink += op(i);
    return sink;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s raw|single|atomic|mutex|value|writer|sharded|alternate|per_process N\n", argv[0]);
        return 2;
    }
    const long n = std::atol(argv[2]);
    auto seg = procsafe::segment::anonymous(1 << 20);  // room for default_slots() on a large machine
    auto& a = seg.construct<procsafe::atomic_counter<std::int64_t>>("a");
    auto& m = seg.construct<procsafe::mutex_counter<std::int64_t>>("m");
    struct alignas(128) cell { std::int64_t v; };
    auto& raw = seg.construct<cell>("raw");
    using sharded_t = procsafe::sharded_counter<std::int64_t>;
    auto& sharded = seg.construct<sharded_t>("s");
    auto& other = seg.construct<sharded_t>("t");
    auto& by_pid = seg.construct<sharded_t>("p", std::size_t{64}, procsafe::shard_strategy::per_process);
    auto writer = sharded.local();
    std::int64_t sink = 0;
    const std::string_view kind = argv[1];
    if (kind == "raw") {
        sink = loop(n, [&](long) { return std::atomic_ref<std::int64_t>(raw.v).fetch_add(1) + 1; });
    } else if (kind == "single") {
        sink = loop(n, [&](long) {
            std::atomic_ref<std::int64_t> v(raw.v);
            v.store(v.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            return 0;
        });
    } else if (kind == "atomic") {
        sink = loop(n, [&](long) { return a.increment(); });
    } else if (kind == "mutex") {
        sink = loop(n, [&](long) { return m.increment(); });
    } else if (kind == "value") {
        sink = loop(n, [&](long) { return a.value(); });
    } else if (kind == "writer") {
        sink = loop(n, [&](long) { return writer.increment(), 0; });
    } else if (kind == "sharded") {
        sink = loop(n, [&](long) { return sharded.increment(), 0; });
    } else if (kind == "alternate") {
        sink = loop(n, [&](long i) { return (i & 1 ? other : sharded).increment(), 0; });
    } else if (kind == "per_process") {
        sink = loop(n, [&](long) { return by_pid.increment(), 0; });
    } else {
        return 2;
    }
    return sink == -1 ? 1 : 0;
}
