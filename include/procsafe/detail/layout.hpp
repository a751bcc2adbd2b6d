// procsafe/detail/layout.hpp: object headers and type facts: what procsafe writes besides the objects.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>

// What procsafe writes into shared memory besides the objects themselves: the
// segment header and the header in front of every object. Both are read by
// processes that may be another build of the program, so every field has a
// fixed width and the whole layout is versioned (detail::layout_version).

namespace procsafe::detail {

/// The one place that runs the constructor of an object placed in a
/// segment (detail/object_block.hpp). Objects whose storage only a segment
/// can provide (a sharded counter's slots, an array's elements) keep their
/// constructors private and befriend it.
struct object_access {
    template <class C, class... Args>
    static C* construct(void* where, Args&&... args) {
        return ::new (where) C(static_cast<Args&&>(args)...);
    }
};

/// An object of variable size (a sharded counter's slots, an array's
/// elements) keeps that storage right after itself. It says so with two
/// members: the segment allocates C::procsafe_extra_bytes(args...) more
/// bytes for the constructor arguments args (which it also validates,
/// throwing procsafe::error), and a process that finds one asks
/// obj.procsafe_fits(bytes_after) whether the object's own header fits the
/// block it is in (a corrupted size must not send anyone past the block).
template <class C>
concept variable_size = requires(const C& c, std::size_t bytes_after) {
    { c.procsafe_fits(bytes_after) } -> std::convertible_to<bool>;
};

enum class object_kind : std::uint16_t {
    user = 1,  // any other type placed with segment::construct
    atomic_counter = 2,
    mutex_counter = 3,
    sharded_counter = 4,
    atomic_counter_array = 5,
    mutex_counter_array = 6,
    latch = 7,
    barrier = 8,
    histogram = 9,
    live_gauge = 10,
};

enum class value_category : std::uint16_t {
    none = 0,
    signed_integer = 1,
    unsigned_integer = 2,
    floating_point = 3,
    trivially_copyable = 4,  // a user struct or enum: told apart by a hash of its name (type_hash)
    boolean = 5,             // bool: not an unsigned byte (a bool holding 2 is undefined behaviour)
};

/// The facts find<C>() compares before it hands out a reference.
struct type_facts {
    object_kind kind;
    value_category category;
    std::uint32_t value_size;
    std::uint32_t value_align;
    std::uint32_t object_size;
    std::uint32_t object_align;
    std::uint32_t reserved;
    std::uint64_t type_hash;  // for object_kind::user only: hash of the compiler's type name

    friend constexpr bool operator==(const type_facts&, const type_facts&) = default;
};
static_assert(sizeof(type_facts) == 32, "type_facts is part of the shared layout");

template <class T>
constexpr value_category category_of() {
    if constexpr (std::is_same_v<std::remove_cv_t<T>, bool>) return value_category::boolean;
    else if constexpr (std::is_floating_point_v<T>) return value_category::floating_point;
    else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return value_category::signed_integer;
    else if constexpr (std::is_integral_v<T>) return value_category::unsigned_integer;
    else return value_category::trivially_copyable;
}

constexpr std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 14695981039346656037ull;
    for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h;
}

template <class T>
constexpr std::string_view type_name() {
    return __PRETTY_FUNCTION__;  // the whole signature names T: enough to hash
}

template <class T>
constexpr type_facts value_facts(object_kind kind, std::uint32_t object_size,
                                 std::uint32_t object_align) {
    // A struct is told apart by its name too (as a user object is): two
    // structs of one size and alignment are not one type.
    constexpr value_category category = category_of<T>();
    return {kind, category, sizeof(T), alignof(T), object_size, object_align, 0,
            category == value_category::trivially_copyable ? fnv1a(type_name<T>()) : 0};
}

/// How a type describes itself to the segment. procsafe's objects specialize
/// it; any other type is "user" and is told apart by a hash of its name (which
/// differs between compilers: share user types only between builds of one
/// compiler).
template <class C>
struct object_traits {
    static constexpr type_facts facts() {
        return {object_kind::user, value_category::none, 0, 0, sizeof(C), alignof(C), 0,
                fnv1a(type_name<C>())};
    }
};

inline std::string describe(const type_facts& f) {
    std::string kind;
    switch (f.kind) {
        case object_kind::atomic_counter: kind = "atomic_counter"; break;
        case object_kind::mutex_counter: kind = "mutex_counter"; break;
        case object_kind::sharded_counter: kind = "sharded_counter"; break;
        case object_kind::atomic_counter_array: kind = "atomic_counter_array"; break;
        case object_kind::mutex_counter_array: kind = "mutex_counter_array"; break;
        case object_kind::user: return "user type (" + std::to_string(f.object_size) + " bytes)";
        case object_kind::latch: return "latch";
        case object_kind::barrier: return "barrier";
        case object_kind::histogram: return "histogram";
        case object_kind::live_gauge: kind = "live_gauge"; break;
        default: return "unknown kind " + std::to_string(static_cast<unsigned>(f.kind));
    }
    std::string value;
    switch (f.category) {
        case value_category::signed_integer: value = "int" + std::to_string(f.value_size * 8); break;
        case value_category::unsigned_integer: value = "uint" + std::to_string(f.value_size * 8); break;
        case value_category::floating_point: value = "float" + std::to_string(f.value_size * 8); break;
        case value_category::boolean: value = "bool"; break;
        default: value = "struct of " + std::to_string(f.value_size) + " bytes"; break;
    }
    return kind + "<" + value + ">";
}

inline constexpr std::uint64_t segment_magic = 0x31'54'4E'53'43'4F'52'50ull;  // "PROCSNT1"
inline constexpr std::uint32_t object_magic = 0x424F5350u;                     // "PSOB"

enum object_state : std::uint32_t { state_empty = 0, state_constructing = 1, state_ready = 2 };

/// In front of every object: [object_header][name, metadata][padding][the
/// object, on its 128-byte (or larger) boundary][its extra storage].
///
/// Written by the process that allocated the block, under the directory lock,
/// before the lock is released (state: constructing); only that process
/// constructs in the block, and it publishes state ready (release) when the
/// constructor returned. A peer that finds the block type-checks `facts` at
/// once and waits for ready, looking the name up again under the lock each
/// time (a constructor that throws frees the block and removes the name).
/// Everything but `state` and `hidden` is written once, before the block is
/// published in the segment's catalog, so readers outside the lock copy it
/// safely. `hidden` (0: exported, 1: left out of the exposition) is changed
/// at any time by segment::set_exported (and family::remove / labels), with
/// an atomic store; it was a zero reserved byte before, so a segment made
/// before it existed reads as "every object exported".
///
/// The strings after the header, in this order, `meta_bytes` in all: the
/// object's name (name_length), help (help_length), unit (unit_length),
/// label name (label_length), then label_values values, each a 2-byte
/// little-endian length and its bytes.
struct object_header {
    std::atomic<std::uint32_t> state;  // object_state
    std::uint32_t magic;
    std::uint32_t layout;
    std::uint32_t constructor_pid;
    type_facts facts;
    std::uint32_t object_offset;  // from the start of the block to the object
    std::uint32_t meta_bytes;     // the strings that follow this header
    std::uint64_t block_size;     // bytes of the block (readers cannot ask Boost)
    std::uint16_t name_length;
    std::uint16_t help_length;
    std::uint16_t unit_length;
    std::uint16_t label_length;
    std::uint32_t label_values;
    std::uint32_t constructor_pidns;  // the PID namespace constructor_pid belongs to (0: unknown)
    std::uint8_t metric;              // metric_type
    std::atomic<std::uint8_t> hidden;  // 0: exported; 1: taken out of the exposition (segment::set_exported)
    std::uint8_t reserved[6];
};
static_assert(sizeof(object_header) == 88, "the object header is part of the shared layout");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint8_t>::is_always_lock_free && sizeof(std::atomic<std::uint8_t>) == 1);
static_assert(offsetof(object_header, hidden) == 81, "the object header is part of the shared layout");

enum object_export : std::uint8_t { export_shown = 0, export_hidden = 1 };

}  // namespace procsafe::detail
