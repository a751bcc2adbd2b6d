// procsafe/detail/config.hpp: the C++20 check, platform macros, the cache line and layout version.
// SPDX-License-Identifier: MIT
#pragma once

// First in every public header, before anything that needs C++20: a user who
// compiles as C++17 reads this line, not a page of errors from deep inside.
// MSVC keeps __cplusplus at 199711L unless /Zc:__cplusplus; _MSVC_LANG is true.
#if defined(_MSVC_LANG) && _MSVC_LANG > __cplusplus
#define PROCSAFE_CPLUSPLUS _MSVC_LANG
#else
#define PROCSAFE_CPLUSPLUS __cplusplus
#endif
#if PROCSAFE_CPLUSPLUS < 202002L
#error "procsafe needs C++20: compile with -std=c++20 (GCC, Clang) or /std:c++20 (MSVC), or link procsafe::procsafe in CMake"
// A missing include is fatal: the compiler stops here instead of going on.
#include "procsafe needs C++20 (see the error above)"
#endif

#include <chrono>
#include <cstddef>
#include <cstdint>

#if defined(_WIN32)
#define PROCSAFE_WINDOWS 1
#else
#define PROCSAFE_POSIX 1
#endif

namespace procsafe {

/// The line size every procsafe object is padded and aligned to.
/// 128, not 64: Intel's adjacent-line prefetcher pulls 64-byte lines in pairs,
/// so two hot counters 64 bytes apart still slow each other down (folly and
/// crossbeam pad to 128 for the same reason). Not
/// std::hardware_destructive_interference_size: it is 64 in GCC 12, missing in
/// clang 14, and would make the layout depend on the compiler.
inline constexpr std::size_t cache_line = 128;

namespace detail {

/// How long opening a segment, finding an object and taking a segment's
/// directory lock wait for a peer, unless the caller says otherwise.
inline constexpr std::chrono::milliseconds default_timeout{2000};

/// Bumped whenever the bytes a segment or an object puts in shared memory
/// change meaning; a segment made by another layout is refused on open.
// 2: counters carry a wait word. 3: objects are claimed by their allocator
// (object_offset), the barrier is one word, sharded slot owners are 64-bit.
// 4: the catalog, names and metadata in object headers, the constructor's
// PID namespace, bool and struct value types told apart, the mutex counter's
// commit generation. 5: sharded counters and live gauges carry an
// incarnation; a live gauge's slot owner is one 64-bit word (pid, start
// time) with its PID namespace beside it, and the gauge records its own.
inline constexpr std::uint32_t layout_version = 5;

}  // namespace detail
}  // namespace procsafe

// Separate compilation (optional). By default every function is inline in
// the headers (header-only). A program that defines
// PROCSAFE_SEPARATE_COMPILATION in every translation unit (CMake: link
// procsafe::compiled) gets the segment's management (create, open, remove,
// construct and find) declared only, and links its definitions once, from
// the library built from src/procsafe.cpp (which defines
// PROCSAFE_BUILDING_LIBRARY): each translation unit then compiles only the
// hot paths (a counter's add, a gauge's set). Both give the same behaviour
// and the same bytes in shared memory; a program uses one or the other.
#if defined(PROCSAFE_SEPARATE_COMPILATION) && !defined(PROCSAFE_BUILDING_LIBRARY)
#define PROCSAFE_OUT_OF_LINE 0  // declarations only: the definitions are in the library
#define PROCSAFE_DECL
#elif defined(PROCSAFE_SEPARATE_COMPILATION)
#define PROCSAFE_OUT_OF_LINE 1  // the library itself: defined once, not inline
#define PROCSAFE_DECL
#else
#define PROCSAFE_OUT_OF_LINE 1  // header-only
#define PROCSAFE_DECL inline
#endif

// ThreadSanitizer builds (it cannot see some calls; see robust_mutex).
#if defined(__SANITIZE_THREAD__)
#define PROCSAFE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PROCSAFE_TSAN 1
#endif
#endif
