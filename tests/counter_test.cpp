// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// One conformance body, run for every counter kind and value type.
#include "catch.hpp"
#include "support/values.hpp"

#include <procsafe/counter.hpp>
#include <procsafe/counter_array.hpp>
#include <procsafe/segment.hpp>
#include <procsafe/sharded_counter.hpp>

#include <cstdint>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

using procsafe_test::money;
using procsafe_test::val;

#define PROCSAFE_COUNTER_TYPES                                                                   \
    procsafe::atomic_counter<int>, procsafe::atomic_counter<std::int64_t>,                       \
        procsafe::atomic_counter<std::uint32_t>, procsafe::atomic_counter<double>,               \
        procsafe::mutex_counter<int>, procsafe::mutex_counter<std::int64_t>,                     \
        procsafe::mutex_counter<std::uint32_t>, procsafe::mutex_counter<double>,                 \
        procsafe::mutex_counter<money>

TEMPLATE_TEST_CASE("counter conformance: operations", "[counter]", PROCSAFE_COUNTER_TYPES) {
    using T = typename TestType::value_type;
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("c");
    REQUIRE(c.value() == T{});

    SECTION("increment and decrement return the new value") {
        REQUIRE(c.increment(val<T>(1)) == val<T>(1));
        REQUIRE(c.increment(val<T>(5)) == val<T>(6));
        REQUIRE(c.decrement(val<T>(1)) == val<T>(5));
        REQUIRE(c.decrement(val<T>(2)) == val<T>(3));
        REQUIRE(c.value() == val<T>(3));
        if constexpr (std::is_arithmetic_v<T>) {  // "one" exists for numbers only
            REQUIRE(c.increment() == val<T>(4));
            REQUIRE(c.decrement() == val<T>(3));
        }
    }
    SECTION("fetch_add, fetch_sub and exchange return the old value") {
        REQUIRE(c.fetch_add(val<T>(7)) == T{});
        REQUIRE(c.fetch_sub(val<T>(2)) == val<T>(7));
        REQUIRE(c.exchange(val<T>(40)) == val<T>(5));
        REQUIRE(c.value() == val<T>(40));
    }
    SECTION("operators return the new value; postfix returns the old, as std::atomic") {
        REQUIRE((c += val<T>(9)) == val<T>(9));
        REQUIRE((c -= val<T>(4)) == val<T>(5));
        if constexpr (std::is_arithmetic_v<T>) {  // ++ and -- for numbers only
            REQUIRE(++c == val<T>(6));
            REQUIRE(--c == val<T>(5));
            REQUIRE(c++ == val<T>(5));
            REQUIRE(c-- == val<T>(6));
        }
        REQUIRE(c.value() == val<T>(5));
    }
    SECTION("store, reset, compare_exchange") {
        c.store(val<T>(12));
        REQUIRE(c.value() == val<T>(12));
        T expected = val<T>(3);
        REQUIRE_FALSE(c.compare_exchange(expected, val<T>(20)));
        REQUIRE(expected == val<T>(12));  // a failed exchange reports what it saw
        REQUIRE(c.compare_exchange(expected, val<T>(20)));
        REQUIRE(c.value() == val<T>(20));
        c.reset();
        REQUIRE(c.value() == T{});
    }
}

TEMPLATE_TEST_CASE("counter conformance: layout", "[counter]", PROCSAFE_COUNTER_TYPES) {
    static_assert(sizeof(TestType) % procsafe::cache_line == 0, "a counter fills whole lines");
    static_assert(alignof(TestType) == procsafe::cache_line);
    static_assert(!std::is_copy_constructible_v<TestType> && !std::is_move_constructible_v<TestType>);
    static_assert(!std::is_copy_assignable_v<TestType> && !std::is_move_assignable_v<TestType>);
    auto seg = procsafe::segment::anonymous(256 * 1024);
    // Boost 1.74 misaligns over-aligned types (boostorg/interprocess #217):
    // procsafe must place every counter on a 128-byte boundary itself.
    std::vector<std::uintptr_t> lines;
    for (int i = 0; i < 32; ++i) {
        auto& c = seg.construct<TestType>(procsafe_test::numbered("c", i));
        const auto addr = reinterpret_cast<std::uintptr_t>(&c);
        REQUIRE(addr % procsafe::cache_line == 0);
        lines.push_back(addr / procsafe::cache_line);
    }
    // No two counters share a line.
    for (std::size_t i = 1; i < lines.size(); ++i) REQUIRE(lines[i] != lines[i - 1]);
}

TEMPLATE_TEST_CASE("counter conformance: 10 threads x 100,000 increments", "[counter][threads]",
                   PROCSAFE_COUNTER_TYPES) {
    using T = typename TestType::value_type;
    constexpr int threads = 10, per_thread = 100'000;
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<TestType>("c");
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&c] {
            for (int k = 0; k < per_thread; ++k) c.increment(val<T>(1));
        });
    }
    for (auto& t : pool) t.join();
    REQUIRE(c.value() == val<T>(threads * per_thread));
}

TEST_CASE("constructor arguments set the initial value", "[counter]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    REQUIRE(seg.construct<procsafe::atomic_counter<int>>("a", 41).increment() == 42);
    REQUIRE(seg.construct<procsafe::mutex_counter<double>>("m", 1.5).value() == 1.5);
    REQUIRE(seg.construct<procsafe::mutex_counter<money>>("s", money{10, 1}).increment(money{1, 1}) ==
            money{11, 2});
}

TEST_CASE("mutex counter: with_lock runs a compound update and returns its result", "[counter]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<procsafe::mutex_counter<money>>("m");
    const auto entries = c.with_lock([](money& m) {
        m.cents += 250;
        m.entries += 1;
        return m.entries;
    });
    REQUIRE(entries == 1);
    REQUIRE(c.value() == money{250, 1});
    c.with_lock([](money& m) { m.cents *= 2; });  // void result
    REQUIRE(c.value() == money{500, 1});
}

TEST_CASE("mutex counter: an exception inside with_lock rolls the update back", "[counter]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& c = seg.construct<procsafe::mutex_counter<std::int64_t>>("m", 10);
    REQUIRE_THROWS_AS(c.with_lock([](std::int64_t& v) {
        v = 999;
        throw std::runtime_error("half-done");
    }),
                      std::runtime_error);
    REQUIRE(c.value() == 10);
    REQUIRE(c.increment() == 11);  // the lock was released
    REQUIRE(c.recoveries() == 0);
}

TEST_CASE("a counter works outside a segment too, for threads", "[counter][threads]") {
    procsafe::atomic_counter<long> a;
    procsafe::mutex_counter<long> m;
    std::thread t([&] {
        for (int i = 0; i < 1000; ++i) {
            ++a;
            ++m;
        }
    });
    for (int i = 0; i < 1000; ++i) {
        ++a;
        ++m;
    }
    t.join();
    REQUIRE(a.value() == 2000);
    REQUIRE(m.value() == 2000);
}

TEST_CASE("integer counters wrap at their limits as the atomic does: no undefined behaviour (UBSan leg)",
          "[counter][ub]") {
    constexpr int max = std::numeric_limits<int>::max(), min = std::numeric_limits<int>::min();
    auto seg = procsafe::segment::anonymous(256 * 1024);
    SECTION("atomic_counter<int>") {
        auto& c = seg.construct<procsafe::atomic_counter<int>>("a", max);
        REQUIRE(c.increment() == min);
        REQUIRE(c.decrement() == max);
        REQUIRE((c += 2) == min + 1);
        REQUIRE((c -= 2) == max);
        REQUIRE(c.increment(max) == -2);
        auto& small = seg.construct<procsafe::atomic_counter<std::int8_t>>("s", std::int8_t{127});
        REQUIRE(small.increment() == -128);
        REQUIRE(small.decrement() == 127);
    }
    SECTION("mutex_counter<int>") {
        auto& c = seg.construct<procsafe::mutex_counter<int>>("m", max);
        REQUIRE(c.increment() == min);
        REQUIRE(c.decrement() == max);
        REQUIRE(c.fetch_add(1) == max);
        REQUIRE(c.fetch_sub(1) == min);
        REQUIRE(c.value() == max);
    }
    SECTION("sharded_counter<int>") {
        auto& c = seg.construct<procsafe::sharded_counter<int>>("sh", 4);
        c.increment(max);
        c.increment();  // the writer's slot passes INT_MAX
        REQUIRE(c.sum() == min);
        c.decrement(min);  // 0 - INT_MIN, then INT_MIN + INT_MIN: 0
        REQUIRE(c.sum() == 0);
        auto w = c.local();
        w.increment(max);
        w.increment(2);
        REQUIRE(c.sum() == min + 1);
    }
    SECTION("counter_array<int> elements") {
        auto& a = seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>("arr", 2, procsafe::array_layout::packed, max);
        REQUIRE(a[1].increment() == min);
        auto& m = seg.construct<procsafe::counter_array<int, procsafe::mutex_sync>>("marr", 2, procsafe::array_layout::padded, min);
        REQUIRE(m[0].decrement() == max);
    }
}

namespace procsafe_test {
/// A value type more aligned than a cache line (a SIMD block, say).
struct alignas(256) wide {
    std::int64_t v;
    // By const reference: passing a 256-byte-aligned type by value makes GCC note an ABI change.
    friend wide operator+(const wide& a, const wide& b) { return {a.v + b.v}; }
    friend wide operator-(const wide& a, const wide& b) { return {a.v - b.v}; }
    friend bool operator==(const wide&, const wide&) = default;
};
}  // namespace procsafe_test
using procsafe_test::wide;

TEST_CASE("over-aligned value types are placed on their alignment (UBSan leg)", "[counter][ub]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    auto addr = [](const auto& x) { return reinterpret_cast<std::uintptr_t>(&x); };
    auto& c = seg.construct<procsafe::mutex_counter<wide>>("c", wide{5});
    REQUIRE(addr(c) % alignof(wide) == 0);
    REQUIRE(c.increment(wide{1}) == wide{6});
    REQUIRE(c.value() == wide{6});
    for (auto layout : {procsafe::array_layout::padded, procsafe::array_layout::packed}) {
        auto& a = seg.construct<procsafe::counter_array<wide, procsafe::mutex_sync>>(
            layout == procsafe::array_layout::padded ? "padded" : "packed", 3, layout, wide{1});
        for (std::size_t i = 0; i < a.size(); ++i) {
            REQUIRE(addr(a[i]) % alignof(wide) == 0);
            REQUIRE(a[i].increment(wide{static_cast<std::int64_t>(i)}) == wide{static_cast<std::int64_t>(1 + i)});
        }
        REQUIRE(&seg.find<procsafe::counter_array<wide, procsafe::mutex_sync>>(
                    layout == procsafe::array_layout::padded ? "padded" : "packed") == &a);
    }
}
