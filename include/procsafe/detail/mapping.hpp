// procsafe/detail/mapping.hpp: one facade over the POSIX and Win32 shared memory mappings.
// SPDX-License-Identifier: MIT
#pragma once

// detail::mapping: the one platform interface the segment uses (as
// Boost.Interprocess puts its posix/ and windows/ twins behind one facade).
// Both twins have the same members:
//
//   static mapping create(name, bytes, mode);         exclusive, pages reserved
//   static mapping open(name, min_size, timeout);     trusted owner, bounded wait for the size
//   static mapping anonymous(bytes);                  for fork() (Windows: unsupported)
//   static bool remove(name);                         (Windows: false, nothing to remove)
//   void* addr(); std::size_t size();
//   bool is_stale(name);                              the name now means another object
//   void remove_if_same(name);                        unlink the name only if it is still ours
//
// No public header needs #if on the platform: this is the only place that
// picks one.

#include <procsafe/detail/config.hpp>

#if defined(PROCSAFE_POSIX)
#include <procsafe/detail/shm_posix.hpp>
#else
#include <procsafe/detail/shm_win32.hpp>
#endif
