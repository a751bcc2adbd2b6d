// procsafe/detail/platform.hpp: process facts per platform: pid, liveness, start time, CPU.
// SPDX-License-Identifier: MIT
#pragma once

// The few process facts procsafe needs on each platform: who am I (process,
// thread, CPU), and is that process or thread still there.

#include <procsafe/detail/config.hpp>

#include <atomic>
#include <cstdint>

#if defined(PROCSAFE_POSIX)
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
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

/// splitmix64's finalizer: every bit of x stirred into every bit of the
/// result (for numbers drawn to tell things apart, not for secrets).
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

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

#if defined(PROCSAFE_POSIX)
/// True when no thread or process with that id exists (kill(id, 0)).
inline bool id_gone(std::uint32_t id) noexcept {
    return id != 0 && ::kill(static_cast<pid_t>(id), 0) != 0 && errno == ESRCH;
}
#endif

#if defined(__linux__)
/// True when the process is a zombie (dead, not yet reaped by its parent),
/// on which kill(pid, 0) still succeeds. Reads /proc/PID/stat.
inline bool is_zombie(std::uint32_t pid) noexcept {
    char path[32];
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');  // the command name may hold anything; it ends at the last ')'
    if (p == nullptr || p[1] != ' ' || (p[2] != 'Z' && p[2] != 'X')) return false;
    // A leader whose main thread exited while others run is 'Z' too: only a
    // zombie with no thread left (num_threads, field 20, is 1) is dead.
    p += 2;
    for (int field = 3; field < 20; ++field) {
        p = std::strchr(p, ' ');
        if (p == nullptr) return false;
        ++p;
    }
    return p[0] == '1' && p[1] == ' ';
}
#endif

/// The calling process's PID namespace (Linux: the inode of
/// /proc/self/ns/pid; 0 where unknown). A pid means something only in its
/// namespace: a peer in another one (a container sharing /dev/shm) must not
/// judge it. Cached per process (a fork child may be in a new namespace).
inline std::uint32_t pid_namespace() noexcept {
#if defined(__linux__)
    static std::atomic<std::uint64_t> cache{0};  // pid << 32 | namespace
    const std::uint32_t me = current_pid();
    const std::uint64_t c = cache.load(std::memory_order_relaxed);
    if (c != 0 && static_cast<std::uint32_t>(c >> 32) == me) return static_cast<std::uint32_t>(c);
    struct stat st {};
    const std::uint32_t ns = ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<std::uint32_t>(st.st_ino) : 0u;
    cache.store(std::uint64_t{me} << 32 | ns, std::memory_order_relaxed);
    return ns;
#else
    return 0;
#endif
}

/// True when no process with that id runs any more (it exited or was
/// killed, reaped or not). A pid reused since then reads as alive: callers
/// only use this to give up sooner or to take over what the dead left,
/// never to trust memory.
inline bool process_gone(std::uint32_t pid) noexcept {
    if (pid == 0) return false;
#if defined(PROCSAFE_POSIX)
    if (id_gone(pid)) return true;
#if defined(__linux__)
    return is_zombie(pid);
#else
    return false;
#endif
#else
    HANDLE h = ::OpenProcess(SYNCHRONIZE, FALSE, pid);
    if (h == nullptr) return ::GetLastError() == ERROR_INVALID_PARAMETER;
    const bool exited = ::WaitForSingleObject(h, 0) == WAIT_OBJECT_0;
    ::CloseHandle(h);
    return exited;
#endif
}

/// When the process started, in the system's own units (Linux: clock ticks
/// since boot, /proc/PID/stat's starttime; Windows: its creation FILETIME),
/// 0 when unknown. With the pid it names one process for good: a pid reused
/// by a later process has another start time.
inline std::uint64_t process_start_time(std::uint32_t pid) noexcept {
#if defined(__linux__)
    char path[32];
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[1024];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');  // after the command name, which may hold anything
    if (p == nullptr) return 0;
    ++p;
    for (int field = 3; field <= 22; ++field) {  // starttime is field 22
        p = std::strchr(p, ' ');
        if (p == nullptr) return 0;
        ++p;
    }
    std::uint64_t t = 0;
    for (; *p >= '0' && *p <= '9'; ++p) t = t * 10 + static_cast<std::uint64_t>(*p - '0');
    return t;
#elif defined(PROCSAFE_WINDOWS)
    HANDLE h = ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
    if (h == nullptr) return 0;
    FILETIME created{}, exited{}, kernel{}, user{};
    const bool ok = ::GetProcessTimes(h, &created, &exited, &kernel, &user) != 0;
    ::CloseHandle(h);
    return ok ? (std::uint64_t{created.dwHighDateTime} << 32 | created.dwLowDateTime) : 0;
#else
    (void)pid;
    return 0;
#endif
}

/// This process's start time (process_start_time), cached per process.
inline std::uint64_t own_start_time() noexcept {
    static std::atomic<std::uint64_t> pid_seen{0}, start{0};
    const std::uint32_t me = current_pid();
    if (pid_seen.load(std::memory_order_acquire) != me) {  // first call, or a fork child
        start.store(process_start_time(me), std::memory_order_relaxed);
        pid_seen.store(me, std::memory_order_release);
    }
    return start.load(std::memory_order_relaxed);
}

/// True while the process that had `pid` and started at `start` runs: gone,
/// a zombie, or a pid now reused by a process that started later all read
/// as dead (a start of 0, unknown, trusts the pid alone).
inline bool process_alive(std::uint32_t pid, std::uint64_t start) noexcept {
    if (pid == 0 || process_gone(pid)) return false;
    if (start == 0) return true;
    const std::uint64_t now = process_start_time(pid);
    return now == 0 || now == start;
}

/// As process_gone, for a thread id (Linux: kill() takes a thread id too).
inline bool thread_gone(std::uint32_t tid) noexcept {
#if defined(PROCSAFE_POSIX)
    return id_gone(tid);  // on a slow path that runs often (slot takeover): no /proc read
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
