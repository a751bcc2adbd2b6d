// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT

// A plugin built with -fvisibility=hidden and loaded with dlopen(): it has
// its own copy of every inline variable of the headers (the per-thread slot
// caches included), which the program's copy never hears from.
// slot_cache_test.cpp loads it.

#include <procsafe/procsafe.hpp>

#include <cstdint>

extern "C" __attribute__((visibility("default"))) void procsafe_plugin_add(procsafe::sharded_counter<std::int64_t>* c,
                                                                           std::int64_t times) {
    for (std::int64_t i = 0; i < times; ++i) c->increment();
}

extern "C" __attribute__((visibility("default"))) void procsafe_plugin_gauge_add(procsafe::live_gauge<std::int64_t>* g,
                                                                                 std::int64_t n) {
    g->add(n);
}
