// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Single-process micro-benchmarks (Google Benchmark): the uncontended cost of
// each operation, next to the raw primitive.
#include "contenders.hpp"  // the raw baselines procsafe-bench measures too

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace {

procsafe::segment& seg() {
    static procsafe::segment s = procsafe::segment::anonymous(1 << 20);
    return s;
}

void atomic_increment(benchmark::State& state) {
    auto& c = seg().find_or_construct<procsafe::atomic_counter<std::int64_t>>("a");
    for (auto _ : state) benchmark::DoNotOptimize(c.increment());
}
BENCHMARK(atomic_increment);

void raw_fetch_add(benchmark::State& state) {
    auto& c = seg().find_or_construct<contenders::line>("raw");
    for (auto _ : state) benchmark::DoNotOptimize(std::atomic_ref<std::int64_t>(c.value).fetch_add(1) + 1);
}
BENCHMARK(raw_fetch_add);

void atomic_value(benchmark::State& state) {
    auto& c = seg().find_or_construct<procsafe::atomic_counter<std::int64_t>>("a");
    for (auto _ : state) benchmark::DoNotOptimize(c.value());
}
BENCHMARK(atomic_value);

void mutex_increment(benchmark::State& state) {
    auto& c = seg().find_or_construct<procsafe::mutex_counter<std::int64_t>>("m");
    for (auto _ : state) benchmark::DoNotOptimize(c.increment());
}
BENCHMARK(mutex_increment);

void raw_robust_mutex_increment(benchmark::State& state) {
    auto& l = seg().find_or_construct<contenders::pthread_locked>("robust", true);
    for (auto _ : state) {
        pthread_mutex_lock(&l.mutex);
        benchmark::DoNotOptimize(++l.value);
        pthread_mutex_unlock(&l.mutex);
    }
}
BENCHMARK(raw_robust_mutex_increment);

void mutex_value(benchmark::State& state) {
    auto& c = seg().find_or_construct<procsafe::mutex_counter<std::int64_t>>("m");
    for (auto _ : state) benchmark::DoNotOptimize(c.value());
}
BENCHMARK(mutex_value);

void mutex_with_lock(benchmark::State& state) {
    struct pair { std::int64_t requests, bytes; };
    auto& c = seg().find_or_construct<procsafe::mutex_counter<pair>>("pair");
    for (auto _ : state) {
        c.with_lock([](pair& p) {
            p.requests += 1;
            p.bytes += 512;
        });
    }
}
BENCHMARK(mutex_with_lock);

void find_by_name(benchmark::State& state) {
    for (int i = 0; i < 64; ++i) {
        std::string name("n");  // not "n" + to_string(i): GCC 12 -O3 -Wrestrict false positive
        name += std::to_string(i);
        seg().find_or_construct<procsafe::atomic_counter<long>>(name);
    }
    for (auto _ : state) benchmark::DoNotOptimize(&seg().find<procsafe::atomic_counter<long>>("n42"));
}
BENCHMARK(find_by_name);

}  // namespace

BENCHMARK_MAIN();
