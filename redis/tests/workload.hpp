// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The hosts' workload of procsafe::redis's fault and cluster tests: the
// objects of a host's segment, a worker process counting in them, and what
// a segment holds, added up under the flusher's field names.

#include <procsafe/procsafe.hpp>
#include <procsafe/segment_view.hpp>

#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <unistd.h>

namespace procsafe_test::workload {

__extension__ typedef __int128 i128;
using i64_array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
inline const std::vector<double> latency_bounds{0.001, 0.01, 0.1};

inline std::string text(i128 v) {
    if (v == 0) return "0";
    const bool negative = v < 0;
    std::string s;
    for (; v != 0; v /= 10) s.insert(s.begin(), static_cast<char>('0' + (negative ? -(v % 10) : v % 10)));
    return negative ? "-" + s : s;
}

struct shape {
    bool gauge = true;       ///< a live_gauge "busy" too (not totalled)
    int pause_every = 256;   ///< operations between pauses, leaving the flushers and Redis some CPU
    int pause_us = 200;
};

/// The objects of a host's segment, constructed fresh.
inline void construct_objects(procsafe::segment& seg, shape s = {}) {
    seg.construct<procsafe::sharded_counter<std::int64_t>>("requests", procsafe::metadata{.help = "Requests."});
    // Starts above 2^53: a double could not hold the totals exactly.
    seg.construct<procsafe::atomic_counter<std::uint64_t>>("bytes", procsafe::metadata{.unit = "bytes"}, (1ULL << 53) + 1);
    seg.construct<i64_array>("responses", procsafe::metadata{.label = "code", .label_values = {"200", "404", "500"}}, 3);
    seg.construct<procsafe::mutex_counter<std::int64_t>>("jobs");
    seg.construct<procsafe::histogram>("latency", procsafe::metadata{.unit = "seconds"}, latency_bounds);
    if (s.gauge) seg.construct<procsafe::live_gauge<std::int64_t>>("busy");
}

/// A worker process: counts in `seg` until `stop` is set (in memory shared with the test).
inline pid_t start_worker(procsafe::segment& seg, procsafe::atomic_counter<int>& stop, int seed, shape s = {}) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    int rc = 0;
    try {
        auto& requests = seg.find<procsafe::sharded_counter<std::int64_t>>("requests");
        auto& bytes = seg.find<procsafe::atomic_counter<std::uint64_t>>("bytes");
        auto& responses = seg.find<i64_array>("responses");
        auto& jobs = seg.find<procsafe::mutex_counter<std::int64_t>>("jobs");
        auto& latency = seg.find<procsafe::histogram>("latency");
        if (s.gauge) seg.find<procsafe::live_gauge<std::int64_t>>("busy").set(seed + 1);
        std::uint64_t x = static_cast<std::uint64_t>(seed) * 0x9E3779B97F4A7C15ULL + 1;
        for (std::uint64_t i = 0; stop.value() == 0; ++i) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            requests.increment();
            bytes.increment(1'000'003 + (x & 0xffff));
            responses[static_cast<std::size_t>(x % 3)].increment();
            if (i % 16 == 0) jobs.increment();
            if (i % 8 == 0) latency.observe(static_cast<double>(x % 2000) * 1e-4);
            if (static_cast<int>(i % static_cast<std::uint64_t>(s.pause_every)) == s.pause_every - 1) ::usleep(static_cast<useconds_t>(s.pause_us));
        }
    } catch (...) {
        rc = 1;
    }
    ::_exit(rc);
}

/// The segment's values, added into `sum` under the flusher's field names.
inline void add_local(const std::string& segment, std::map<std::string, i128>& sum, double& latency_sum) {
    const auto view = procsafe::segment_view::open(segment);
    for (const auto& o : view.objects()) {
        auto as_int = [](const procsafe::number& n) -> i128 {
            if (const auto* i = std::get_if<std::int64_t>(&n)) return *i;
            if (const auto* u = std::get_if<std::uint64_t>(&n)) return *u;
            throw std::logic_error("not an integer");
        };
        if (o.name == "busy") continue;
        if (o.histogram) {
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < o.histogram->counts.size(); ++b) {
                cumulative += o.histogram->counts[b];
                std::ostringstream le;
                if (b < latency_bounds.size()) le << latency_bounds[b];
                else le << "+Inf";
                sum["latency_bucket{le=\"" + le.str() + "\"}"] += cumulative;
            }
            sum["latency_count"] += o.histogram->count;
            latency_sum += o.histogram->sum;
        } else if (o.name == "responses") {
            for (std::size_t i = 0; i < o.values.size(); ++i)
                sum["responses{code=\"" + o.label_values[i] + "\"}"] += as_int(o.values[i]);
        } else {
            sum[o.name] += as_int(o.values.at(0));
        }
    }
}

}  // namespace procsafe_test::workload
