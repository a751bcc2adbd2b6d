// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// POSIX shared memory mappings, done by hand rather than through
// boost::interprocess::managed_shared_memory, because Boost 1.74
//  - creates segments 0644 whatever the umask (we want 0600, exclusive),
//  - truncates sparsely, so a full /dev/shm is a SIGBUS later, not an error
//    (we posix_fallocate and report out_of_space),
//  - waits forever to open a segment that was never initialized (we validate
//    our own header, with a bounded wait, before Boost touches the memory).
// Boost.Interprocess still manages what is inside (segment manager, allocator,
// name index), through a managed_external_buffer over our mapping.

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/thread_cache.hpp>
#include <procsafe/error.hpp>
#include <procsafe/detail/test_hook.hpp>

#include <cerrno>
#include <system_error>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace procsafe::detail {

inline errc errc_from_errno(int e) {
    switch (e) {
        case ENOENT: return errc::not_found;
        case EEXIST: return errc::already_exists;
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
        if (addr_ != nullptr) {
            ::munmap(addr_, size_);
            bump_cache_epoch();  // cached slot pointers into this mapping are void now
        }
        if (fd_ >= 0) ::close(fd_);
    }

    void swap(mapping& o) noexcept {
        std::swap(addr_, o.addr_);
        std::swap(size_, o.size_);
        std::swap(fd_, o.fd_);
    }

    /// Creates the object exclusively with exactly `mode` (umask does not
    /// apply), reserves its pages and maps it. On failure nothing is left.
    static mapping create(const std::string& os_name, std::string_view name, std::size_t bytes,
                          unsigned mode) {
        mapping m;
        m.fd_ = ::shm_open(os_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
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
            ::shm_unlink(os_name.c_str());
            throw;
        }
        return m;
    }

    /// Opens an existing object; the caller maps it once it knows the size.
    static mapping open(const std::string& os_name, std::string_view name) {
        mapping m;
        m.fd_ = ::shm_open(os_name.c_str(), O_RDWR | O_CLOEXEC, 0);
        if (m.fd_ < 0) throw_errno(name, "shm_open", errno);
        return m;
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

    void* addr() const noexcept { return addr_; }
    std::size_t size() const noexcept { return size_; }
    int fd() const noexcept { return fd_; }

private:
    void* addr_ = nullptr;
    std::size_t size_ = 0;
    int fd_ = -1;
};

}  // namespace procsafe::detail
