// procsafe/detail/segment_header.hpp: the header at offset 0 of every segment.
// SPDX-License-Identifier: MIT
#pragma once

// The header at offset 0 of every segment: what it is (magic), which layout
// and which Boost made it, how big it is, and the directory lock. Written by
// the creator, `magic` last (release); validated by every opener, with a
// bounded wait for the creator to publish it, before Boost is let near the
// mapping (Boost 1.74 waits forever on a segment nobody initialized,
// boostorg/interprocess #128).

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/robust_mutex.hpp>
#include <procsafe/error.hpp>

#include <boost/version.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>

namespace procsafe::detail {

struct segment_header {
    std::atomic<std::uint64_t> magic;  // segment_magic, stored last (release)
    std::uint32_t layout;              // layout_version
    std::uint32_t header_size;         // sizeof(segment_header)
    std::uint32_t boost_version;       // BOOST_VERSION: Boost's own layout may change
    std::uint32_t line_size;           // cache_line
    std::uint64_t total_size;          // bytes mapped, header included
    std::uint64_t managed_offset;      // where Boost's managed buffer starts
    std::uint32_t creator_pid;
    std::atomic<std::uint32_t> poisoned;         // a process died while changing the directory
    std::atomic<std::uint32_t> directory_dirty;  // under `directory`: a change is in progress
    std::uint32_t creator_pidns;                 // the creator's PID namespace (0: unknown)
    std::uint64_t catalog;       // offset of the first catalog chunk (detail/catalog.hpp)
    std::uint64_t catalog_tail;  // the last chunk; writers only, under `directory`
    std::uint64_t incarnation;   // drawn at creation: a segment recreated under a name is another one
    std::uint64_t created_ns;    // creation time, nanoseconds since the Unix epoch
    std::uint64_t creator_start; // the creator's start time (process_start_time; 0: unknown)
    // Guards Boost's segment manager, which runs with null_mutex_family: its
    // own interprocess_mutex is not robust, and a dead process holding it
    // would hang every later construct and find.
    robust_mutex directory;
};

inline constexpr std::size_t managed_offset = 256;

/// A 64-bit number that tells this creation of a segment from any other
/// under the same name (the creation time alone repeats across hosts).
inline std::uint64_t draw_incarnation(std::uint64_t now_ns, std::uint32_t pid, const void* where) noexcept {
    std::uint64_t x = now_ns ^ (std::uint64_t{pid} << 32) ^ static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(where));
    x ^= static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
    x = mix64(x);
    return x != 0 ? x : 1;
}
static_assert(sizeof(segment_header) <= managed_offset, "the segment header must fit before Boost's buffer");

/// Writes a fresh header at `base` (magic still 0: not yet published).
inline segment_header& write_header(void* base, std::size_t total, std::uint32_t creator_pid) {
    auto* h = ::new (base) segment_header{};
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    h->created_ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
    h->incarnation = draw_incarnation(h->created_ns, creator_pid, base);
    h->layout = layout_version;
    h->header_size = sizeof(segment_header);
    h->boost_version = BOOST_VERSION;
    h->line_size = cache_line;
    h->total_size = total;
    h->managed_offset = managed_offset;
    h->creator_pid = creator_pid;
    h->creator_pidns = pid_namespace();
    h->creator_start = own_start_time();
    return *h;
}

/// Publishes a header whose segment is ready for openers.
inline void publish_header(segment_header& h) noexcept { h.magic.store(segment_magic, std::memory_order_release); }

/// Validates a header someone else wrote. `mapped` is the size of the object
/// behind it. Throws the error that names what is wrong; never reads past
/// `mapped`.
inline void check_header(const segment_header& h, std::size_t mapped, std::string_view name) {
    const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
    if (magic != segment_magic) {
        throw error(errc::bad_magic, name, {}, "not a procsafe segment (wrong magic number)");
    }
    auto incompatible = [&](const std::string& what) {
        throw error(errc::incompatible_layout, name, {}, what);
    };
    if (h.layout != layout_version) {
        incompatible("layout version " + std::to_string(h.layout) + ", this build reads " +
                     std::to_string(layout_version));
    }
    if (h.header_size != sizeof(segment_header) || h.managed_offset != managed_offset) {
        incompatible("header of " + std::to_string(h.header_size) + " bytes, this build uses " +
                     std::to_string(sizeof(segment_header)));
    }
    if (h.boost_version != BOOST_VERSION) {
        incompatible("made with Boost " + std::to_string(h.boost_version) + ", this build uses " +
                     std::to_string(BOOST_VERSION));
    }
    if (h.line_size != cache_line) {
        incompatible("cache line of " + std::to_string(h.line_size) + " bytes, this build uses " +
                     std::to_string(cache_line));
    }
    // Every segment is created whole pages (4096 bytes at least) long.
    if (h.total_size != mapped || h.total_size < 4096) {
        incompatible("header says " + std::to_string(h.total_size) + " bytes, the object has " +
                     std::to_string(mapped));
    }
}

/// Whether a segment's creator still runs, as this process can tell.
enum class creator_state { alive, gone, unknown };

/// The creator named by a header (published or not): gone when its pid is
/// gone, a zombie, or now another process's (another start time). Unknown
/// from another PID namespace than the creator's (its pid means nothing
/// here), and when the header names no creator yet.
inline creator_state judge_creator(std::uint32_t pid, std::uint32_t pidns, std::uint64_t start) noexcept {
    if (pid == 0) return creator_state::unknown;
    const std::uint32_t here = pid_namespace();
    if (pidns != 0 && here != 0 && pidns != here) return creator_state::unknown;
    return process_alive(pid, start) ? creator_state::alive : creator_state::gone;
}
inline creator_state judge_creator(const segment_header& h) noexcept {
    return judge_creator(h.creator_pid, h.creator_pidns, h.creator_start);
}

/// Waits until `deadline` at most for the creator to publish the header,
/// then validates it. Throws: timed_out, bad_magic, incompatible_layout.
inline segment_header& await_header(void* base, std::size_t mapped, std::string_view name,
                                    wait_clock::time_point deadline) {
    auto* h = static_cast<segment_header*>(base);
    if (!poll_until(deadline, [&] { return h->magic.load(std::memory_order_acquire) != 0; })) {
        throw error(errc::timed_out, name, {}, "its creator never finished initializing it");
    }
    check_header(*h, mapped, name);
    return *h;
}

}  // namespace procsafe::detail
