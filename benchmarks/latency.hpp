// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Single operations of procsafe-bench with their raw baselines, each pair
// measured interleaved in one run so that drift on a shared machine hits
// both: a sharded counter's sum() against a plain loop over as many lines,
// and a sleeping waiter's wake-up against a raw futex wait/wake.

#include "contenders.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace latency {

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/// The q-quantile (0..1) by rank, as a p99 over samples is usually read.
inline double quantile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

// ---------------------------------------------------------------- sum()

/// sharded_counter<int64>::sum() with `slots` slots, and its raw baseline:
/// a loop summing slots + 1 plain 128-byte lines (the slots and the overflow
/// line) with relaxed loads. ns per call, one sample per repetition.
struct value_cost {
    std::size_t slots;
    std::vector<double> procsafe_ns, raw_ns;
    double ratio() const { return median(procsafe_ns) / median(raw_ns); }
};

inline constexpr std::size_t max_value_slots = 1024;

struct raw_lines {
    contenders::line lines[max_value_slots + 1];
};

inline value_cost measure_value(std::size_t slots, int repeat, long calls) {
    slots = std::min(slots, max_value_slots);
    auto seg = procsafe::segment::anonymous(slots * 128 * 2 + sizeof(raw_lines) + 64 * 1024);
    auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c", slots);
    c.increment();
    contenders::line* lines = seg.construct<raw_lines>("raw").lines;
    value_cost out{slots, {}, {}};
    std::int64_t sink = 0;
    auto time = [&](auto&& call) {
        const double t0 = procsafe::bench::detail::now_seconds();
        for (long i = 0; i < calls; ++i) sink += call();
        return (procsafe::bench::detail::now_seconds() - t0) * 1e9 / static_cast<double>(calls);
    };
    for (int r = 0; r < repeat; ++r) {  // interleaved: procsafe, raw, procsafe, raw...
        out.procsafe_ns.push_back(time([&] { return c.sum(); }));
        out.raw_ns.push_back(time([&] {
            std::int64_t sum = 0;
            for (std::size_t i = 0; i <= slots; ++i) sum += contenders::load(lines[i].value);
            return sum;
        }));
    }
    if (sink == -1) std::printf(" ");  // keeps the sums alive
    return out;
}

// ---------------------------------------------------------------- wake-up

/// Wake-up latency between two processes, from the waker's stamp just before
/// it changes the word to the waiter's stamp when its wait returns: procsafe
/// (a process asleep in atomic_counter::wait_at_least_for, woken by
/// increment()) and the raw primitive (FUTEX_WAIT on a 32-bit word in the
/// shared segment, without FUTEX_PRIVATE_FLAG, woken by a store and
/// FUTEX_WAKE), alternated sample by sample. The waker busy-waits 200 us
/// before each stamp so that the waiter is asleep, not spinning.
struct wake_latency {
    int samples = 0;                             ///< per kind
    std::vector<double> procsafe_us, raw_us;     ///< one per sample
    bool ok = false;                             ///< the waiter process ran them all
    int crossed = 0;  ///< wake-ups (both kinds) where the waiter woke on another CPU than the waker's
    double ratio_median() const { return median(procsafe_us) / median(raw_us); }
    double ratio_p99() const { return quantile(procsafe_us, 0.99) / quantile(raw_us, 0.99); }
};

namespace detail {

inline long futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t value, const timespec* timeout) {
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, timeout, nullptr, 0);
}

inline constexpr int max_wake_samples = 4000;

struct wake_shared {
    procsafe::atomic_counter<std::int64_t> counter;  // procsafe's waiter sleeps on it
    procsafe::atomic_counter<int> announced;         // the waiter's "about to wait", for both kinds
    alignas(procsafe::cache_line) std::atomic<std::uint32_t> word{0};
    double woke_procsafe[max_wake_samples];
    double woke_raw[max_wake_samples];
    std::atomic<int> woke_on[2 * max_wake_samples];  // the waiter's CPU after each wake-up
};

inline void busy_wait(double seconds) {
    const double until = procsafe::bench::detail::now_seconds() + seconds;
    while (procsafe::bench::detail::now_seconds() < until) {}
}

}  // namespace detail

inline wake_latency measure_wake(int samples) {
    using procsafe::bench::detail::now_seconds;
    using procsafe::bench::detail::store_shared;
    using procsafe::bench::detail::load_shared;
    samples = std::clamp(samples, 1, detail::max_wake_samples);
    auto seg = procsafe::segment::anonymous(256 * 1024);
    auto& w = seg.construct<detail::wake_shared>("wake");
    // Step j wakes sample j / 2 of one kind; the two kinds alternate, and
    // their order flips from one sample to the next (procsafe first, then
    // the raw futex first), so that neither always follows the other.
    auto is_raw = [](int j) { return ((j & 1) ^ ((j / 2) & 1)) != 0; };
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const timespec slice{1, 0};
        for (int j = 0; j < 2 * samples; ++j) {
            const int i = j / 2;
            w.announced.store(j + 1);
            if (!is_raw(j)) {
                if (!w.counter.wait_at_least_for(i + 1, std::chrono::seconds(10))) ::_exit(1);
                store_shared(w.woke_procsafe[i], now_seconds());
            } else {
                const double give_up = now_seconds() + 10;
                while (w.word.load(std::memory_order_acquire) == static_cast<std::uint32_t>(i)) {
                    detail::futex(w.word, FUTEX_WAIT, static_cast<std::uint32_t>(i), &slice);
                    if (now_seconds() > give_up) ::_exit(1);
                }
                store_shared(w.woke_raw[i], now_seconds());
            }
            w.woke_on[j].store(::sched_getcpu(), std::memory_order_relaxed);
        }
        ::_exit(0);
    }
    wake_latency out;
    out.samples = samples;
    std::vector<double> stamped_procsafe(static_cast<std::size_t>(samples)), stamped_raw(stamped_procsafe);
    std::vector<int> waker_on(2 * static_cast<std::size_t>(samples), -1);
    for (int j = 0; j < 2 * samples && pid > 0; ++j) {
        const auto i = static_cast<std::size_t>(j / 2);
        if (!w.announced.wait_at_least_for(j + 1, std::chrono::seconds(10))) break;
        detail::busy_wait(200e-6);  // busy: no sleep call of ours in the way
        waker_on[static_cast<std::size_t>(j)] = ::sched_getcpu();
        if (!is_raw(j)) {
            stamped_procsafe[i] = now_seconds();
            w.counter.increment();
        } else {
            stamped_raw[i] = now_seconds();
            w.word.store(static_cast<std::uint32_t>(i + 1), std::memory_order_release);
            detail::futex(w.word, FUTEX_WAKE, INT_MAX, nullptr);
        }
    }
    int status = 0;
    if (pid > 0) ::waitpid(pid, &status, 0);
    out.ok = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!out.ok) return out;
    for (int i = 0; i < samples; ++i) {
        const auto k = static_cast<std::size_t>(i);
        out.procsafe_us.push_back((load_shared(w.woke_procsafe[i]) - stamped_procsafe[k]) * 1e6);
        out.raw_us.push_back((load_shared(w.woke_raw[i]) - stamped_raw[k]) * 1e6);
    }
    for (int i = 0; i < 2 * samples; ++i)
        out.crossed += w.woke_on[i].load(std::memory_order_relaxed) != waker_on[static_cast<std::size_t>(i)];
    return out;
}

/// What a wake-up costs on this machine, in words: a virtual machine's idle
/// vCPU is woken by the hypervisor's inter-processor interrupt.
inline std::string wake_dominated_by(const wake_latency& w) {
    std::ifstream cpuinfo("/proc/cpuinfo");
    bool vm = false;
    for (std::string line; std::getline(cpuinfo, line);)
        if (line.rfind("flags", 0) == 0) {
            vm = line.find(" hypervisor") != std::string::npos;
            break;
        }
    const double raw = median(w.raw_us), extra = median(w.procsafe_us) - raw;
    const double crossed = 100.0 * w.crossed / (2.0 * w.samples);
    char how[256];
    if (crossed >= 50) {
        std::snprintf(how, sizeof how, "waking the waiter's CPU%s and the scheduler's switch to it",
                      vm ? " (an idle vCPU: on this virtual machine, the hypervisor's inter-processor interrupt)" : "");
    } else {
        std::snprintf(how, sizeof how, "the scheduler's wake-up and switch to the waiter, mostly on the waker's own %s",
                      vm ? "vCPU" : "CPU");
    }
    char buf[640];
    std::snprintf(buf, sizeof buf,
                  "what dominates: the raw futex wake-up itself, %.1f us at the median: %s (the waiter woke on "
                  "another CPU than the waker's %.0f%% of the time); %s (%+.2f us at the median)",
                  raw, how, crossed,
                  extra < 0.3 * raw ? "procsafe's own few instructions are lost in it" : "procsafe adds a visible part",
                  std::abs(extra) < 0.005 ? 0.0 : extra);
    return buf;
}

}  // namespace latency
