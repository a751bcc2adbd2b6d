// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT

// The per-thread slot caches of sharded_counter and live_gauge: an entry is
// used only for the object it was found in, in the process that found it.
// Forced: a counter unmapped and another mapped at its address, seen by a
// plugin with its own copy of the headers' variables; children made by
// _Fork() (no atfork handlers) and by fork() whose atfork handlers ran
// before procsafe's could.

#include "catch.hpp"
#include "support/pause.hpp"
#include "support/process.hpp"
#include "support/skip.hpp"
#include "support/start_barrier.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdint>
#include <string>

#include <dlfcn.h>
#include <unistd.h>

using procsafe_test::fork_children;
using procsafe_test::join_children;
using namespace std::chrono_literals;

namespace {
using plugin_add_fn = void (*)(procsafe::sharded_counter<std::int64_t>*, std::int64_t);
}

TEST_CASE("slot cache: a dlopen()ed plugin with its own copy of the headers never writes through a slot of an unmapped counter",
          "[sharded][multiprocess]") {
    void* plugin = ::dlopen(PROCSAFE_TEST_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    INFO((plugin == nullptr ? ::dlerror() : ""));
    REQUIRE(plugin != nullptr);
    const auto plugin_add = reinterpret_cast<plugin_add_fn>(::dlsym(plugin, "procsafe_plugin_add"));
    REQUIRE(plugin_add != nullptr);
    constexpr std::size_t bytes = 1 << 20;
    const void* old_address = nullptr;
    {
        auto first = procsafe::segment::anonymous(bytes);
        auto& c = first.construct<procsafe::sharded_counter<std::int64_t>>("c", 1);
        plugin_add(&c, 1);  // the plugin's cache now holds this counter's only slot
        old_address = &c;
    }  // unmapped: the plugin's copy of the library hears nothing of it
    auto second = procsafe::segment::anonymous(bytes);
    auto& c = second.construct<procsafe::sharded_counter<std::int64_t>>("c", 1);
    auto& go = second.construct<procsafe_test::start_barrier>("go");
    if (static_cast<const void*>(&c) != old_address) PROCSAFE_SKIP("the new mapping did not land at the old address");
    constexpr std::int64_t n = 20'000'000;
    // A child owns the new counter's only slot, and adds while the plugin does.
    const pid_t owner = fork_children(1, [&](int) {
        c.increment();
        if (!go.arrive_and_wait()) return 2;
        for (std::int64_t k = 1; k < n; ++k) c.increment();
        return 0;
    })[0];
    REQUIRE(go.release_when(1));
    plugin_add(&c, n);
    REQUIRE(join_children({owner}) == 1);
    REQUIRE(c.sum() == 2 * n);
    REQUIRE(c.owned_slots() == 1);  // the plugin went to the overflow line, not into the child's slot
    ::dlclose(plugin);
}

TEST_CASE("slot cache: a child made by _Fork() (no atfork handler runs) takes slots of its own", "[sharded][live_gauge][multiprocess]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c", 4);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 4);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    auto& release = seg.construct<procsafe::latch>("release", 1);
    auto w = c.local();
    w.increment();
    g.add(3);  // this thread's caches and its writer hold the parent's slots
    std::fflush(nullptr);
    const pid_t child = ::_Fork();
    if (child == 0) {
        w.increment();  // a writer made before the fork: must take the child's own slot
        w.increment();
        g.add(5);
        holding.increment();
        ::_exit(release.wait_for(30s) ? 0 : 3);
    }
    REQUIRE(child > 0);
    REQUIRE(holding.wait_at_least_for(1, 30s));
    CHECK(c.owned_slots() == 2);
    CHECK(g.live_processes() == 2);
    CHECK(g.value() == 8);
    CHECK(g.contribution() == 3);
    release.count_down();
    REQUIRE(procsafe_test::exited_ok(procsafe_test::wait_bounded(child, 30s)));
    REQUIRE(g.value() == 3);  // the child's 5 went with it
    REQUIRE(c.sum() == 3);
}

TEST_CASE("slot cache: a fork child whose atfork handler (registered before procsafe's first add) adds "
          "takes slots of its own",
          "[sharded][live_gauge][multiprocess]") {
    // In a fresh process: this test runner registered procsafe's fork
    // handler long ago, before any the test could register.
    const auto name = procsafe_test::unique_name("atfork");
    auto seg = procsafe::segment::create(name, 1 << 20);
    auto& c = seg.construct<procsafe::sharded_counter<std::int64_t>>("c", 4);
    auto& g = seg.construct<procsafe::live_gauge<std::int64_t>>("g", 4);
    auto& holding = seg.construct<procsafe::atomic_counter<int>>("holding");
    auto& release = seg.construct<procsafe::latch>("release", 1);
    const pid_t parent = procsafe_test::spawn(PROCSAFE_TEST_CHILD, {name, "-", "atfork", "0"});
    REQUIRE(holding.wait_at_least_for(1, 30s));
    // The spawned process and its child: two slots of each, 3 and 5.
    CHECK(c.owned_slots() == 2);
    CHECK(g.live_processes() == 2);
    CHECK(g.value() == 8);
    release.count_down();
    REQUIRE(procsafe_test::exited_ok(procsafe_test::wait_bounded(parent, 60s)));
    REQUIRE(c.sum() == 2);
    REQUIRE(g.value() == 0);
}

TEST_CASE("slot cache: a thread of the program and one of a plugin (its own copy of the headers) making their "
          "first adds to a live_gauge at once share one slot",
          "[live_gauge][multiprocess][race]") {
    void* plugin = ::dlopen(PROCSAFE_TEST_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(plugin != nullptr);
    using gauge = procsafe::live_gauge<std::int64_t>;
    const auto plugin_gauge_add = reinterpret_cast<void (*)(gauge*, std::int64_t)>(::dlsym(plugin, "procsafe_plugin_gauge_add"));
    REQUIRE(plugin_gauge_add != nullptr);
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& board = seg.construct<procsafe_test::pause_board>("board");
    auto& g = seg.construct<gauge>("g", 4);
    auto& live = seg.construct<std::atomic<int>>("live", -1);
    auto& value = seg.construct<std::atomic<std::int64_t>>("value", -1);
    // The program's thread judges slot 0 free and is held before taking it;
    // the plugin's thread (no pause points: built without them) takes it.
    const int held = board.arm("live_gauge.takeover");
    const pid_t p = fork_children(1, [&](int) {
        board.use();
        std::thread program([&] { g.add(1); });
        if (!board.wait_reached(held)) return 2;
        plugin_gauge_add(&g, 1);
        board.release(held);
        program.join();
        g.set(0);  // the process holds nothing now
        live.store(static_cast<int>(g.live_processes()));
        value.store(g.value());
        return 0;
    })[0];
    REQUIRE(join_children({p}) == 1);
    CHECK(live.load() == 1);
    CHECK(value.load() == 0);
    ::dlclose(plugin);
}
