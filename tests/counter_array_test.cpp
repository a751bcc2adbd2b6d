// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <cstdint>

using procsafe::array_layout;
using procsafe_test::catch_error;
using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::start_barrier;

TEMPLATE_TEST_CASE("counter_array: per-element exact totals across processes, padded and packed",
                   "[array][multiprocess]", procsafe::atomic_sync, procsafe::mutex_sync) {
    using array = procsafe::counter_array<std::int64_t, TestType>;
    for (array_layout layout : {array_layout::padded, array_layout::packed}) {
        INFO((layout == array_layout::padded ? "padded" : "packed"));
        auto seg = procsafe::segment::anonymous(1 << 20);
        auto& a = seg.construct<array>("by_status", 600, layout);
        auto& barrier = seg.construct<start_barrier>("barrier");
        REQUIRE(a.size() == 600);
        REQUIRE(a.layout() == layout);
        // Process i counts into elements i and i + 1: neighbours are shared.
        const auto pids = fork_children(10, [&](int i) {
            if (!barrier.arrive_and_wait()) return 2;
            for (int k = 0; k < 20'000; ++k) {
                a[static_cast<std::size_t>(i)].increment();
                a.at(static_cast<std::size_t>(i) + 1).increment();
            }
            return 0;
        });
        REQUIRE(barrier.release_when(10));
        REQUIRE(join_children(pids) == 10);
        REQUIRE(a[0].value() == 20'000);
        for (std::size_t i = 1; i < 10; ++i) REQUIRE(a[i].value() == 40'000);
        REQUIRE(a[10].value() == 20'000);
        REQUIRE(a[11].value() == 0);
        REQUIRE(a[599].value() == 0);
    }
}

TEST_CASE("counter_array: padded elements each own their lines, packed ones are adjacent", "[array]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& padded = seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>("p", 4);
    auto& packed = seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>("k", 4, array_layout::packed);
    auto addr = [](const auto& e) { return reinterpret_cast<std::uintptr_t>(&e); };
    for (std::size_t i = 0; i < 4; ++i) REQUIRE(addr(padded[i]) % procsafe::cache_line == 0);
    REQUIRE(addr(padded[1]) - addr(padded[0]) == procsafe::cache_line);
    // Packed: side by side, the value and its wait word, no padding to a line.
    REQUIRE(addr(packed[1]) - addr(packed[0]) == sizeof(procsafe::basic_counter<int, procsafe::atomic_sync>));
    REQUIRE(sizeof(procsafe::basic_counter<int, procsafe::atomic_sync>) <= 16);
}

TEST_CASE("counter_array: initial value, element operations, and a peer finds it", "[array]") {
    const auto name = procsafe_test::unique_name("array");
    auto seg = procsafe::segment::create(name, 1 << 20);
    seg.construct<procsafe::counter_array<double, procsafe::mutex_sync>>("m", 3, array_layout::packed, 1.5);
    auto peer = procsafe::segment::open(name);
    auto& m = peer.find<procsafe::counter_array<double, procsafe::mutex_sync>>("m");
    REQUIRE(m[2].value() == 1.5);
    REQUIRE(m[2].increment() == 2.5);
    REQUIRE(m[2].with_lock([](double& v) { return v *= 2; }) == 5.0);
    REQUIRE(m[1].exchange(7) == 1.5);
}

TEST_CASE("counter_array: bad sizes and indexes are errors, not undefined behaviour", "[array][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto& a = seg.construct<procsafe::counter_array<long, procsafe::atomic_sync>>("a", 10);
    for (std::size_t bad : {std::size_t{10}, std::size_t{11}, static_cast<std::size_t>(-1)}) {
        const auto e = catch_error([&] { a[bad].increment(); });
        REQUIRE(e.code() == procsafe::errc::out_of_range);
        REQUIRE(std::string(e.what()).find(std::to_string(bad)) != std::string::npos);
    }
    auto e = catch_error([&] { seg.construct<procsafe::counter_array<long, procsafe::atomic_sync>>("empty", 0); });
    REQUIRE(e.code() == procsafe::errc::invalid_argument);
    REQUIRE(e.object_name() == "empty");
    e = catch_error([&] { seg.find<procsafe::counter_array<long, procsafe::mutex_sync>>("a"); });
    REQUIRE(e.code() == procsafe::errc::type_mismatch);
    e = catch_error([&] { seg.construct<procsafe::counter_array<long, procsafe::atomic_sync>>("huge", std::size_t{1} << 23); });
    REQUIRE(e.code() == procsafe::errc::out_of_space);  // 8M lines do not fit in 1 MiB
}
