// procsafe/detail/test_hook.hpp: test-only pause points between the steps of a protocol.
// SPDX-License-Identifier: MIT
#pragma once

// Test-only pause points between the steps of a protocol in shared memory.
//
// A protocol of several steps (construct an object, arrive at a barrier,
// take over a slot, remove a segment) is only as good as its worst
// interleaving, and random kills rarely hit it. PROCSAFE_TEST_HOOK("name")
// marks a point between two steps; a test build (-DPROCSAFE_TEST_HOOKS)
// calls the handler installed in detail::test_hook there, so a test can hold
// one process at that point while another runs. In every other build the
// macro is empty: no code, no cost. Define PROCSAFE_TEST_HOOKS for a whole
// program or not at all (it changes inline functions).

#if defined(PROCSAFE_TEST_HOOKS)

#include <atomic>

namespace procsafe::detail {

using test_hook_fn = void (*)(const char* point);
/// The handler a test installs (process-local; a forked child inherits it).
inline std::atomic<test_hook_fn> test_hook{nullptr};

inline void test_hook_point(const char* point) {
    if (test_hook_fn f = test_hook.load(std::memory_order_acquire)) f(point);
}

}  // namespace procsafe::detail

#define PROCSAFE_TEST_HOOK(point) ::procsafe::detail::test_hook_point(point)

#else

#define PROCSAFE_TEST_HOOK(point) static_cast<void>(0)

#endif
