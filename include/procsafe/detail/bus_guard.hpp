// procsafe/detail/bus_guard.hpp: reader mappings that survive their segment being truncated under them.
// SPDX-License-Identifier: MIT
#pragma once

// A segment's owner may truncate it while a reader maps it; every page past
// the new end is then a SIGBUS at the reader's next load, and the check of
// the size before each walk leaves microseconds in which that can happen.
// A reader's mapping is registered here; the first registration installs a
// SIGBUS handler that, for an address inside a registered mapping, maps a
// page of zeros over the faulting page (the load then reads 0s, which the
// reader's validation refuses) and marks the mapping faulted; the reader
// throws instead of returning what it read. A SIGBUS anywhere else goes to
// the handler that was there before (or the default action: the process
// dies as it would have). Linux only; elsewhere nothing is registered.

#include <procsafe/detail/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>

#if defined(__linux__)
#include <csignal>
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace procsafe::detail {

#if defined(__linux__)
struct guarded_range {
    std::atomic<std::uintptr_t> begin{0}, end{0};  // 0: a free entry
    std::atomic<bool> faulted{false};
};
inline constexpr std::size_t max_guarded = 1024;
inline guarded_range guarded[max_guarded];
inline struct sigaction bus_previous {};
inline std::atomic<long> bus_page{4096};

inline void on_sigbus(int sig, siginfo_t* info, void* context) {
    const auto at = reinterpret_cast<std::uintptr_t>(info->si_addr);
    for (auto& r : guarded) {
        const std::uintptr_t b = r.begin.load(std::memory_order_acquire), e = r.end.load(std::memory_order_acquire);
        if (b == 0 || at < b || at >= e) continue;
        const auto page = static_cast<std::uintptr_t>(bus_page.load(std::memory_order_relaxed));
        void* start = reinterpret_cast<void*>(at & ~(page - 1));
        if (::mmap(start, page, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
            r.faulted.store(true, std::memory_order_release);
            return;  // the load runs again, and reads 0s
        }
    }
    if ((bus_previous.sa_flags & SA_SIGINFO) != 0 && bus_previous.sa_sigaction != nullptr) {
        bus_previous.sa_sigaction(sig, info, context);
    } else if (bus_previous.sa_handler != SIG_DFL && bus_previous.sa_handler != SIG_IGN) {
        bus_previous.sa_handler(sig);
    } else {
        ::signal(SIGBUS, SIG_DFL);  // the load runs again and faults again: the default action
    }
}

/// One registered reader mapping. Movable; not copyable.
class bus_guard {
public:
    bus_guard() = default;
    bus_guard(const void* addr, std::size_t size) noexcept {
        static std::once_flag installed;
        std::call_once(installed, [] {
            const long page = ::sysconf(_SC_PAGESIZE);
            if (page > 0) bus_page.store(page, std::memory_order_relaxed);
            struct sigaction sa {};
            sa.sa_sigaction = &on_sigbus;
            sa.sa_flags = SA_SIGINFO | SA_NODEFER;
            sigemptyset(&sa.sa_mask);
            ::sigaction(SIGBUS, &sa, &bus_previous);
        });
        const auto b = reinterpret_cast<std::uintptr_t>(addr);
        for (std::size_t i = 0; i < max_guarded; ++i) {
            std::uintptr_t expected = 0;
            if (guarded[i].begin.load(std::memory_order_relaxed) != 0) continue;
            guarded[i].faulted.store(false, std::memory_order_relaxed);
            guarded[i].end.store(b + size, std::memory_order_release);
            if (guarded[i].begin.compare_exchange_strong(expected, b, std::memory_order_acq_rel)) {
                index_ = static_cast<int>(i);
                return;
            }
        }
        // More than max_guarded reader mappings at once: this one is unguarded
        // (a truncation in the window after the size check is then a SIGBUS).
    }
    bus_guard(bus_guard&& o) noexcept : index_(std::exchange(o.index_, -1)) {}
    bus_guard& operator=(bus_guard&& o) noexcept {
        if (this != &o) {
            release();
            index_ = std::exchange(o.index_, -1);
        }
        return *this;
    }
    bus_guard(const bus_guard&) = delete;
    bus_guard& operator=(const bus_guard&) = delete;
    ~bus_guard() { release(); }
    /// True once a load in the mapping faulted (the segment shrank under it).
    bool faulted() const noexcept { return index_ >= 0 && guarded[index_].faulted.load(std::memory_order_acquire); }

private:
    void release() noexcept {
        if (index_ >= 0) guarded[index_].begin.store(0, std::memory_order_release);
        index_ = -1;
    }
    int index_ = -1;
};
#else
class bus_guard {
public:
    bus_guard() = default;
    bus_guard(const void*, std::size_t) noexcept {}
    bool faulted() const noexcept { return false; }
};
#endif

}  // namespace procsafe::detail
