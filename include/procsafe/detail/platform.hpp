// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The few process facts procsafe needs on each platform: who am I, and is
// that process still there.

#include <procsafe/detail/config.hpp>

#include <cstdint>

#if defined(PROCSAFE_POSIX)
#include <cerrno>
#include <csignal>
#include <unistd.h>
#else
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#endif

namespace procsafe::detail {

inline std::uint32_t current_pid() noexcept {
#if defined(PROCSAFE_POSIX)
    return static_cast<std::uint32_t>(::getpid());
#else
    return static_cast<std::uint32_t>(::GetCurrentProcessId());
#endif
}

/// True when no process with that id runs any more (it exited or was
/// killed). A pid reused since then reads as alive: callers only use this to
/// give up sooner, never to trust memory.
inline bool process_gone(std::uint32_t pid) noexcept {
    if (pid == 0) return false;
#if defined(PROCSAFE_POSIX)
    return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
#else
    HANDLE h = ::OpenProcess(SYNCHRONIZE, FALSE, pid);
    if (h == nullptr) return ::GetLastError() == ERROR_INVALID_PARAMETER;
    const bool exited = ::WaitForSingleObject(h, 0) == WAIT_OBJECT_0;
    ::CloseHandle(h);
    return exited;
#endif
}

}  // namespace procsafe::detail
