// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The few process facts procsafe needs on each platform: who am I (process,
// thread, CPU), and is that process or thread still there.

#include <procsafe/detail/config.hpp>

#include <cstdint>

#if defined(PROCSAFE_POSIX)
#include <cerrno>
#include <csignal>
#include <sched.h>
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

inline std::uint32_t current_tid() noexcept {
#if defined(PROCSAFE_POSIX)
    return static_cast<std::uint32_t>(::gettid());
#else
    return static_cast<std::uint32_t>(::GetCurrentThreadId());  // unique among live threads, system-wide
#endif
}

/// The CPU this thread runs on now (it may move at once).
inline std::uint32_t current_cpu() noexcept {
#if defined(PROCSAFE_POSIX)
    const int cpu = ::sched_getcpu();  // glibc reads it from rseq: no system call
    return cpu < 0 ? 0u : static_cast<std::uint32_t>(cpu);
#else
    return static_cast<std::uint32_t>(::GetCurrentProcessorNumber());
#endif
}

/// True when no process with that id runs any more (it exited or was
/// killed). A pid reused since then reads as alive: callers only use this to
/// give up sooner or to take over what the dead left, never to trust memory.
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

/// As process_gone, for a thread id (Linux: kill() takes a thread id too).
inline bool thread_gone(std::uint32_t tid) noexcept {
#if defined(PROCSAFE_POSIX)
    return process_gone(tid);
#else
    if (tid == 0) return false;
    HANDLE h = ::OpenThread(SYNCHRONIZE, FALSE, static_cast<DWORD>(tid));
    if (h == nullptr) return ::GetLastError() == ERROR_INVALID_PARAMETER;
    const bool exited = ::WaitForSingleObject(h, 0) == WAIT_OBJECT_0;
    ::CloseHandle(h);
    return exited;
#endif
}

}  // namespace procsafe::detail
