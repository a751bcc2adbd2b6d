// procsafe/detail/shm_posix.hpp: POSIX shared memory mappings (shm_open, mmap).
// SPDX-License-Identifier: MIT
#pragma once

// POSIX shared memory mappings (detail::mapping on POSIX; the Win32 twin with
// the same interface is shm_win32.hpp, detail/mapping.hpp picks one), done by
// hand rather than through boost::interprocess::managed_shared_memory,
// because Boost 1.74
//  - creates segments 0644 whatever the umask (we want 0600, exclusive),
//  - truncates sparsely, so a full /dev/shm is a SIGBUS later, not an error
//    (we posix_fallocate and report out_of_space),
//  - waits forever to open a segment that was never initialized (we wait for
//    its size with a bound; segment_header.hpp waits for its header).
// Boost.Interprocess still manages what is inside (detail/directory.hpp).

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace procsafe::detail {

inline errc errc_from_errno(int e) {
    switch (e) {
        case ENOENT: return errc::segment_not_found;
        case EEXIST: return errc::segment_exists;
        case EACCES:
        case EPERM: return errc::permission_denied;
        case ENOSPC:
        case ENOMEM:
        case EFBIG: return errc::out_of_space;
        case ENAMETOOLONG:
        case EINVAL: return errc::invalid_name;
        default: return errc::system_error;
    }
}

[[noreturn]] inline void throw_errno(std::string_view segment, const char* what, int e) {
    // system_category().message, not strerror: strerror is not thread-safe.
    throw error(errc_from_errno(e), segment, {}, std::string(what) + ": " + std::system_category().message(e));
}

inline std::size_t page_size() {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

/// The lock every procsafe remover of a named segment takes on this host: an
/// exclusive flock on /dev/shm itself (where glibc keeps POSIX shared memory),
/// held for one check and one unlink. With it, a remover that checked "this
/// name is still mine" unlinks before any other remover can remove the name
/// and a creator take it again. Waited for with a bound: any user can open
/// /dev/shm and hold the lock, which only delays removals (and makes them
/// fail with timed_out), never makes one remove the wrong segment. Removers
/// that are not procsafe's (rm /dev/shm/NAME) do not take it.
/// The descriptor through which this process holds the removal lock (-1:
/// none). A flock belongs to the open file description, which fork() shares
/// with the child: a child forked by another thread while the lock is held
/// would hold it for its whole life. The child closes its copy at once.
inline std::atomic<int> removal_lock_held_fd{-1};

inline void drop_removal_lock_in_child() noexcept {
    const int fd = removal_lock_held_fd.exchange(-1);
    if (fd >= 0) ::close(fd);  // the parent's descriptor, and its lock, stay
}

class removal_lock {
public:
    explicit removal_lock(wait_clock::time_point deadline) noexcept
        : fd_(::open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK)) {
        static const bool watching = [] {
            ::pthread_atfork(nullptr, nullptr, &drop_removal_lock_in_child);
            return true;
        }();
        (void)watching;
        if (fd_ < 0) {
            held_ = true;  // no /dev/shm (not Linux's layout): nothing to serialize on
            return;
        }
        for (unsigned round = 0;; ++round) {
            if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) {
                held_ = true;
                removal_lock_held_fd.store(fd_);
                return;
            }
            if (errno != EWOULDBLOCK && errno != EINTR) {
                held_ = true;  // a file system without flock: as before the lock
                return;
            }
            if (wait_clock::now() >= deadline) return;
            if (round == 0) PROCSAFE_TEST_HOOK("segment.remove.waiting");
            if (round < 64) std::this_thread::yield();
            else std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    ~removal_lock() {
        if (fd_ < 0) return;
        int expected = fd_;
        removal_lock_held_fd.compare_exchange_strong(expected, -1);
        ::close(fd_);  // releases the flock
    }
    removal_lock(const removal_lock&) = delete;
    removal_lock& operator=(const removal_lock&) = delete;
    bool held() const noexcept { return held_; }

private:
    int fd_;
    bool held_ = false;
};

/// What a name under /dev/shm is when it is not a regular file (a FIFO, a
/// socket, a link...), or nullptr for a regular file.
inline const char* not_regular_file(mode_t mode) noexcept {
    if (S_ISREG(mode)) return nullptr;
    return S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket" : S_ISLNK(mode) ? "a symbolic link" : S_ISDIR(mode) ? "a directory"
         : S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : "not a regular file";
}

/// Throws bad_magic naming `name` and what it is (not a regular file).
[[noreturn]] inline void refuse_not_regular(std::string_view name, mode_t mode) {
    if (S_ISLNK(mode)) throw error(errc::bad_magic, name, {}, "a symbolic link, not a shared memory object: not followed");
    throw error(errc::bad_magic, name, {}, std::string(not_regular_file(mode)) + ", not a shared memory object: not opened");
}

/// Opens the shared memory object `name` with `flags` without ever blocking
/// and without following a link: /dev/shm is world-writable, so a name there
/// may be a FIFO (an open without O_NONBLOCK waits forever for a writer) or a
/// symbolic link planted by another user. Anything but a regular file is
/// refused, naming it and saying what it is.
/// Throws: segment_not_found, permission_denied, bad_magic (not a regular
/// file), system_error.
inline int open_shm_fd(std::string_view name, int flags) {
#if defined(__linux__)
    // What glibc's shm_open does, plus O_NONBLOCK.
    std::string path = "/dev/shm/";
    path.append(name);
    // Looked at first: a device or a socket is never opened (open() of a
    // socket fails with ENXIO, which would say nothing of what it is).
    if (struct stat st {}; ::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) refuse_not_regular(name, st.st_mode);
    const int fd = ::open(path.c_str(), flags | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
#else
    std::string os(1, '/');
    os.append(name);
    const int fd = ::shm_open(os.c_str(), flags | O_NONBLOCK | O_CLOEXEC, 0);
#endif
    if (fd < 0) {
        const int e = errno;
        if (e == ELOOP) throw error(errc::bad_magic, name, {}, "a symbolic link, not a shared memory object: not followed");
#if defined(__linux__)
        // Replaced since it was looked at (by a socket, say): say what it is now.
        if (struct stat st {}; e != ENOENT && ::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
            refuse_not_regular(name, st.st_mode);
        }
#endif
        throw_errno(name, "shm_open", e);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        throw_errno(name, "fstat", e);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        refuse_not_regular(name, st.st_mode);
    }
    return fd;
}

/// One mapping of a shared memory object, owned by this process.
class mapping {
public:
    mapping() = default;
    mapping(const mapping&) = delete;
    mapping& operator=(const mapping&) = delete;
    mapping(mapping&& o) noexcept { swap(o); }
    mapping& operator=(mapping&& o) noexcept {
        mapping tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    ~mapping() {
        if (addr_ != nullptr) ::munmap(addr_, size_);
        if (fd_ >= 0) ::close(fd_);
    }
    void swap(mapping& o) noexcept {
        std::swap(addr_, o.addr_);
        std::swap(size_, o.size_);
        std::swap(fd_, o.fd_);
    }

    /// Creates the object `name` exclusively with exactly `mode` (umask does
    /// not apply), reserves its pages and maps it. On failure nothing is left.
    /// Throws: segment_exists, permission_denied, out_of_space, invalid_name.
    static mapping create(std::string_view name, std::size_t bytes, unsigned mode) {
        const std::string os = os_name(name);
        mapping m;
        m.fd_ = ::shm_open(os.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (m.fd_ < 0) throw_errno(name, "shm_open", errno);
        try {
            PROCSAFE_TEST_HOOK("segment.created");
            if (::fchmod(m.fd_, mode) != 0) throw_errno(name, "fchmod", errno);
            if (::ftruncate(m.fd_, static_cast<off_t>(bytes)) != 0) throw_errno(name, "ftruncate", errno);
            // Reserve the pages now: a sparse object on a full tmpfs is a
            // SIGBUS at the first touch, long after create() returned.
            const int rc = ::posix_fallocate(m.fd_, 0, static_cast<off_t>(bytes));
            if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
                throw error(rc == ENOSPC ? errc::out_of_space : errc::system_error, name, {},
                            "cannot reserve " + std::to_string(bytes) +
                                " bytes of shared memory: " + std::system_category().message(rc));
            }
            m.map(name, bytes);
        } catch (...) {
            ::shm_unlink(os.c_str());
            throw;
        }
        return m;
    }

    /// Opens the object `name`, which this process's user must own (anyone
    /// can create a name under /dev/shm: a foreign one could be anything),
    /// waits until `deadline` at most for its creator to give it `min_size`
    /// bytes, and maps it.
    /// Throws: segment_not_found, permission_denied, timed_out, bad_magic (not a regular file).
    static mapping open(std::string_view name, std::size_t min_size, wait_clock::time_point deadline) {
        mapping m;
        m.fd_ = open_shm_fd(name, O_RDWR);
        struct stat st = m.stat(name);
        if (st.st_uid != ::geteuid()) {
            throw error(errc::permission_denied, name, {},
                        "owned by uid " + std::to_string(st.st_uid) + ", not by this process's uid " +
                            std::to_string(::geteuid()) + ": not trusted");
        }
        const bool sized = poll_until(deadline, [&] {
            st = m.stat(name);
            return static_cast<std::size_t>(st.st_size) >= min_size;
        });
        if (!sized) {
            throw error(errc::timed_out, name, {},
                        "has " + std::to_string(st.st_size) +
                            " bytes and was never initialized (a creator that died, or not procsafe's)");
        }
        m.map(name, static_cast<std::size_t>(st.st_size));
        return m;
    }

    /// Opens the object `name` for reading only (O_RDONLY, PROT_READ): read
    /// permission is enough, whoever owns it (a monitor trusts nothing in
    /// it: the reader validates what it follows). Never waits: an object
    /// smaller than `min_size` is not initialized (yet); a FIFO, a link or
    /// anything else that is not a regular file is refused (open_shm_fd).
    /// Throws: segment_not_found, permission_denied, timed_out, bad_magic.
    static mapping open_read_only(std::string_view name, std::size_t min_size) {
        mapping m;
        m.fd_ = open_shm_fd(name, O_RDONLY);
        const struct stat st = m.stat(name);
        if (static_cast<std::size_t>(st.st_size) < min_size) {
            throw error(errc::timed_out, name, {},
                        "has " + std::to_string(st.st_size) + " bytes: not initialized (yet), or not procsafe's");
        }
        void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, m.fd_, 0);
        if (p == MAP_FAILED) throw_errno(name, "mmap", errno);
        m.addr_ = p;
        m.size_ = static_cast<std::size_t>(st.st_size);
        return m;
    }

    /// Who may use the object, as the OS says (for listings).
    struct owner_facts {
        std::uint32_t uid = 0, gid = 0, mode = 0;
    };
    owner_facts owner(std::string_view name) const {
        const struct stat st = stat(name);
        return {static_cast<std::uint32_t>(st.st_uid), static_cast<std::uint32_t>(st.st_gid),
                static_cast<std::uint32_t>(st.st_mode & 07777)};
    }

    /// The names of the shared memory objects on this host that could be
    /// segments (valid segment names); procsafe's or not, as the caller
    /// finds out by opening them.
    static std::vector<std::string> names() {
        std::vector<std::string> out;
#if defined(__linux__)
        if (DIR* dir = ::opendir("/dev/shm")) {
            while (const dirent* e = ::readdir(dir)) {
                const std::string_view n = e->d_name;
                if (n.empty() || n[0] == '.' || n.size() > 200) continue;
                bool plain = (n[0] >= 'a' && n[0] <= 'z') || (n[0] >= 'A' && n[0] <= 'Z');
                for (char c : n)
                    plain = plain && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                      c == '_' || c == '-' || c == '.');
                if (plain) out.emplace_back(n);
            }
            ::closedir(dir);
        }
#endif
        return out;
    }

    /// A shared anonymous mapping, inherited by fork().
    static mapping anonymous(std::size_t bytes) {
        mapping m;
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw_errno("(anonymous)", "mmap", errno);
        m.addr_ = p;
        m.size_ = bytes;
        return m;
    }

    /// Removes the name; processes that map it keep their mapping. False if
    /// there was none. Waits for the removal lock (removal_lock) until
    /// `deadline` at most. Throws: permission_denied, timed_out.
    static bool remove(std::string_view name, wait_clock::time_point deadline) {
        const removal_lock lock(deadline);
        if (!lock.held()) {
            throw error(errc::timed_out, name, {},
                        "another process held /dev/shm's removal lock (flock) for the whole wait; not removed");
        }
        if (::shm_unlink(os_name(name).c_str()) == 0) return true;
        if (errno == ENOENT) return false;
        throw_errno(name, "shm_unlink", errno);
    }

    /// Under the removal lock: opens what is at `name` (never blocking, never
    /// following a link) and unlinks it if `judge(fd)` returns an empty
    /// string; otherwise returns judge's reason. Returns "" also when there
    /// was nothing to remove. Throws: timed_out (the lock), what open throws
    /// but segment_not_found, what judge throws.
    template <class Judge>
    static std::string remove_if(std::string_view name, wait_clock::time_point deadline, Judge&& judge) {
        const removal_lock lock(deadline);
        if (!lock.held()) {
            throw error(errc::timed_out, name, {},
                        "another process held /dev/shm's removal lock (flock) for the whole wait; not replaced");
        }
        int fd = -1;
        try {
            fd = open_shm_fd(name, O_RDONLY);
        } catch (const error& e) {
            if (e.code_value() == errc::segment_not_found) return {};
            throw;
        }
        std::string why;
        try {
            why = judge(fd);
        } catch (...) {
            ::close(fd);
            throw;
        }
        ::close(fd);
        if (!why.empty()) return why;
        PROCSAFE_TEST_HOOK("segment.replace.judged");
        if (::shm_unlink(os_name(name).c_str()) != 0 && errno != ENOENT) throw_errno(name, "shm_unlink", errno);
        return {};
    }

    void* addr() const noexcept { return addr_; }
    std::size_t size() const noexcept { return size_; }

    /// True when `name` no longer refers to this mapping (removed, perhaps
    /// recreated). Cost: one fstat system call.
    bool is_stale(std::string_view name) const { return stat(name).st_nlink == 0; }

    /// The object's size now (its owner may have truncated it under this
    /// mapping: a read past it would be a SIGBUS). Cost: one fstat.
    std::size_t current_size(std::string_view name) const { return static_cast<std::size_t>(stat(name).st_size); }

    /// Removes `name` if it still refers to this mapping; someone may have
    /// removed it and created another segment under it meanwhile. Checking,
    /// then unlinking, is one step under the removal lock: another remover
    /// cannot remove the name and let a new segment take it in between. If
    /// the lock cannot be had by `deadline`, nothing is removed (leaving ours
    /// behind is better than removing another's).
    void remove_if_same(std::string_view name, wait_clock::time_point deadline) const noexcept {
        struct stat ours {};
        if (fd_ < 0 || ::fstat(fd_, &ours) != 0 || ours.st_nlink == 0) return;
        const removal_lock lock(deadline);
        if (!lock.held()) return;
        const std::string os = os_name(name);
#if defined(__linux__)
        // By path, with no new file descriptor: a process at its descriptor
        // limit (EMFILE) still removes its segment.
        const std::string path = "/dev/shm" + os;
        struct stat theirs {};
        const bool still_ours = ::lstat(path.c_str(), &theirs) == 0 && theirs.st_ino == ours.st_ino &&
                                theirs.st_dev == ours.st_dev;
#else
        const int fd = ::shm_open(os.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
        if (fd < 0) return;
        struct stat theirs {};
        const bool still_ours = ::fstat(fd, &theirs) == 0 && theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev;
        ::close(fd);
#endif
        PROCSAFE_TEST_HOOK("segment.remove.checked");
        if (still_ours) ::shm_unlink(os.c_str());
    }

private:
    static std::string os_name(std::string_view name) {
        // Not "/" + std::string(name): GCC 12 at -O3 warns (-Wrestrict, a
        // false positive, GCC bug 105329) and users may build with -Werror.
        std::string os(1, '/');
        os.append(name);
        return os;
    }

    void map(std::string_view name, std::size_t bytes) {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
        if (p == MAP_FAILED) throw_errno(name, "mmap", errno);
        addr_ = p;
        size_ = bytes;
    }

    struct stat stat(std::string_view name) const {
        struct stat st {};
        if (::fstat(fd_, &st) != 0) throw_errno(name, "fstat", errno);
        return st;
    }

    void* addr_ = nullptr;
    std::size_t size_ = 0;
    int fd_ = -1;
};

}  // namespace procsafe::detail
