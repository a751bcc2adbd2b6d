// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Writing /dev/shm objects behind procsafe's back: foreign objects under our
// names, and tampered procsafe headers.

#include "../catch.hpp"

#include <procsafe/segment.hpp>

#include <cstring>
#include <functional>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace procsafe_test {

/// Creates a raw shared memory object under `name`: `bytes` bytes of `fill`.
inline void raw_shm(const std::string& name, std::size_t bytes, unsigned char fill) {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
    if (bytes > 0) {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        REQUIRE(p != MAP_FAILED);
        std::memset(p, fill, bytes);
        ::munmap(p, bytes);
    }
    ::close(fd);
}

/// Maps a procsafe segment's header raw and lets f change it.
inline void tamper(const std::string& name, const std::function<void(procsafe::detail::segment_header&)>& f) {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
    REQUIRE(fd >= 0);
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    f(*static_cast<procsafe::detail::segment_header*>(p));
    ::munmap(p, 4096);
    ::close(fd);
}

}  // namespace procsafe_test
