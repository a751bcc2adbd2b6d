// procsafe/detail/robust_mutex.hpp: a process-shared robust mutex that recovers from a dead owner.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/error.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <string>
#include <system_error>

#if defined(PROCSAFE_POSIX)
#include <pthread.h>
#endif

namespace procsafe::detail {

/// What taking a robust lock came to.
enum class lock_result {
    acquired,   ///< the lock is ours
    recovered,  ///< ours, and its previous owner died holding it
    timed_out,  ///< the deadline passed first; the lock is not ours
};

#if defined(PROCSAFE_POSIX)

/// A process-shared, robust pthread mutex that recovers from a dead owner.
///
/// Boost 1.74's interprocess_mutex is not robust: a process killed while
/// holding it blocks every other process forever. This one is
/// PTHREAD_MUTEX_ROBUST: the next locker gets EOWNERDEAD, calls
/// pthread_mutex_consistent and counts the recovery.
///
/// A robust mutex alone still strands waiters when several processes die at
/// once: the kernel wakes one waiter when an owner dies, and if that waiter is
/// killed before it takes the lock the others sleep on. So a contended lock
/// waits in short timed slices and retries by itself. The slices are measured
/// on CLOCK_MONOTONIC (pthread_mutex_clocklock): a wall clock set back does
/// not stretch them.
///
/// Lives in shared memory; holds no pointer. Never destroyed (the segment's
/// removal frees it): another process may still be using it.
class robust_mutex {
public:
    /// How long a blocked locker sleeps before it looks again by itself.
    static constexpr std::chrono::milliseconds retry_slice{20};

    robust_mutex() {
        pthread_mutexattr_t attr;
        int rc = pthread_mutexattr_init(&attr);
        if (rc == 0) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        if (rc == 0) rc = pthread_mutex_init(&mutex_, &attr);
        pthread_mutexattr_destroy(&attr);
        if (rc != 0) fail("pthread_mutex_init", rc);
    }
    robust_mutex(const robust_mutex&) = delete;
    robust_mutex& operator=(const robust_mutex&) = delete;

    /// Takes the lock. Returns true when the previous owner died holding it
    /// (the caller decides whether what it guarded is still consistent).
    /// Process-safe. Blocks while another process holds the lock; never
    /// forever on a dead owner.
    /// Throws: procsafe::error (system_error) if the mutex is unusable.
    bool lock() { return lock_until(wait_clock::time_point::max()) == lock_result::recovered; }

    /// Takes the lock, waiting at most until `deadline`.
    /// Process-safe. Blocks at most until the deadline.
    /// Throws: procsafe::error (system_error) if the mutex is unusable (its
    /// memory is not a valid mutex).
    lock_result lock_until(wait_clock::time_point deadline) {
#if defined(__GLIBC__)
        // A kind word flipped to another kind (priority inheritance, say) with
        // an owner that never existed makes glibc abort the process (an
        // assertion in pthread_mutex_clocklock) instead of failing: refuse it.
        if (__atomic_load_n(&mutex_.__data.__kind, __ATOMIC_RELAXED) != expected_kind()) fail("pthread_mutex_lock", EINVAL);
#endif
        int rc = pthread_mutex_trylock(&mutex_);
        if (rc == EBUSY) rc = lock_slow(deadline);
        if (rc == ETIMEDOUT) return lock_result::timed_out;
        return settle(rc) ? lock_result::recovered : lock_result::acquired;
    }

    void unlock() noexcept { pthread_mutex_unlock(&mutex_); }

    /// How many times a locker found the owner dead and recovered the mutex.
    std::uint32_t recoveries() const noexcept { return recoveries_.load(std::memory_order_relaxed); }

private:
    int lock_slow(wait_clock::time_point deadline) noexcept {
        PROCSAFE_TEST_HOOK("mutex.blocked");
        for (;;) {
            const auto now = wait_clock::now();
            if (now >= deadline) return ETIMEDOUT;
            const auto left = std::min<wait_clock::duration>(deadline - now, retry_slice);
            timespec until{};
            clock_gettime(slice_clock, &until);
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            until.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
            until.tv_nsec += static_cast<long>(ns % 1'000'000'000);
            if (until.tv_nsec >= 1'000'000'000) {
                until.tv_sec += 1;
                until.tv_nsec -= 1'000'000'000;
            }
#if defined(PROCSAFE_TSAN)
            const int rc = pthread_mutex_timedlock(&mutex_, &until);
#else
            const int rc = pthread_mutex_clocklock(&mutex_, CLOCK_MONOTONIC, &until);
#endif
            if (rc != ETIMEDOUT) return rc;
        }
    }

#if defined(PROCSAFE_TSAN)
    // ThreadSanitizer does not intercept pthread_mutex_clocklock: a lock taken
    // by it would look unheld and every access under it a data race. Its
    // builds wait on the wall clock (pthread_mutex_timedlock), which it sees.
    static constexpr clockid_t slice_clock = CLOCK_REALTIME;
#else
    static constexpr clockid_t slice_clock = CLOCK_MONOTONIC;
#endif

    bool settle(int rc) {
        if (rc == 0) return false;
        if (rc == EOWNERDEAD) {
            PROCSAFE_TEST_HOOK("mutex.recovering");
            pthread_mutex_consistent(&mutex_);
            recoveries_.fetch_add(1, std::memory_order_relaxed);
            return true;
        }
        fail("pthread_mutex_lock", rc);
    }

#if defined(__GLIBC__)
    /// The kind word glibc gives a process-shared robust mutex (it never
    /// changes while the mutex is in use).
    static int expected_kind() noexcept {
        static const int kind = [] {
            pthread_mutexattr_t attr;
            pthread_mutex_t m;
            pthread_mutexattr_init(&attr);
            pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
            pthread_mutex_init(&m, &attr);
            pthread_mutexattr_destroy(&attr);
            const int k = m.__data.__kind;
            pthread_mutex_destroy(&m);
            return k;
        }();
        return kind;
    }
#endif

    [[noreturn]] static void fail(const char* what, int rc) {
        throw error(errc::system_error, {}, {}, std::string(what) + ": " + std::system_category().message(rc));
    }

    pthread_mutex_t mutex_;
    std::atomic<std::uint32_t> recoveries_{0};
};

#endif  // PROCSAFE_POSIX

#if defined(PROCSAFE_WINDOWS)

/// Windows: a lock word holding the owner's process id. A locker that has
/// waited a while checks whether the owner process still runs; if it exited
/// (or was killed with TerminateProcess), the locker takes the lock over and
/// counts the recovery, as EOWNERDEAD does on POSIX. Waiting yields, then
/// sleeps 1 ms at a time, and re-checks by itself.
/// Limits: the owner is a process, not a thread; a thread terminated alone
/// while holding the lock is not detected.
class robust_mutex {
public:
    robust_mutex() = default;
    robust_mutex(const robust_mutex&) = delete;
    robust_mutex& operator=(const robust_mutex&) = delete;

    bool lock() { return lock_until(wait_clock::time_point::max()) == lock_result::recovered; }

    lock_result lock_until(wait_clock::time_point deadline) {
        const std::uint32_t me = ::GetCurrentProcessId();
        for (unsigned round = 0;; ++round) {
            std::uint32_t expected = 0;
            if (owner_.compare_exchange_weak(expected, me, std::memory_order_acquire)) return lock_result::acquired;
            if (round >= 64 && (round % 16) == 0 && expected != 0 && expected != me && process_gone(expected) &&
                owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) {
                recoveries_.fetch_add(1, std::memory_order_relaxed);
                return lock_result::recovered;
            }
            if (round >= 64 && wait_clock::now() >= deadline) return lock_result::timed_out;
            if (round < 64) ::SwitchToThread();
            else ::Sleep(1);
        }
    }
    void unlock() noexcept { owner_.store(0, std::memory_order_release); }
    std::uint32_t recoveries() const noexcept { return recoveries_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint32_t> owner_{0};
    std::atomic<std::uint32_t> recoveries_{0};
};

#endif  // PROCSAFE_WINDOWS

/// Scoped lock for robust_mutex; remembers whether the lock was recovered.
template <class Mutex>
class robust_lock {
public:
    explicit robust_lock(Mutex& m) : m_(m), recovered_(m.lock()) {}
    ~robust_lock() { m_.unlock(); }
    robust_lock(const robust_lock&) = delete;
    robust_lock& operator=(const robust_lock&) = delete;
    bool recovered() const noexcept { return recovered_; }

private:
    Mutex& m_;
    bool recovered_;
};

}  // namespace procsafe::detail
