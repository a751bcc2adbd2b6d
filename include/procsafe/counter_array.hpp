// procsafe/counter_array.hpp: counter_array<T, Sync>: N counters under one name, padded or packed.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/counter.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/object_names.hpp>
#include <procsafe/error.hpp>

#include <cstdint>
#include <new>
#include <string>

namespace procsafe {

/// How a counter_array lays out its elements.
enum class array_layout : std::uint32_t {
    /// One 128-byte line (or more) per element: writers of different elements
    /// never slow each other down. The default.
    padded = 0,
    /// Elements side by side: less memory, but neighbours share cache lines
    /// (false sharing when different processes write neighbours).
    packed = 1,
};

/// N counters under one name: per-status-code, per-worker, per-shard counts.
///
/// Element i is a basic_counter<T, Sync> with every operation of counter<T,
/// Sync>. Indexing checks the bound: an index past the end is a
/// procsafe::error (out_of_range), never undefined behaviour. The memory
/// ordering and crash behaviour are those of the elements.
///
/// ```
/// auto seg = procsafe::segment::create("server", 1 << 20);
/// auto& by_status = seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>("status", 600);
/// by_status[404].increment();
/// std::int64_t not_found = by_status[404].value();
/// ```
namespace detail {
/// A counter_array is aligned for its elements: a value type more aligned
/// than a line (alignas(256)) gets elements on its own alignment.
template <class T, class Sync>
inline constexpr std::size_t array_align =
    alignof(basic_counter<T, Sync>) > cache_line ? alignof(basic_counter<T, Sync>) : cache_line;
}  // namespace detail

template <class T, class Sync>
class alignas(detail::array_align<T, Sync>) counter_array {
    // Only a segment constructs one: the storage after the object comes
    // from the segment (procsafe_extra_bytes).
    friend struct detail::object_access;

public:
    using element_type = basic_counter<T, Sync>;
    /// The most elements an array may have.
    static constexpr std::size_t max_size = std::size_t{1} << 24;

    counter_array(const counter_array&) = delete;
    counter_array& operator=(const counter_array&) = delete;

    /// Element i.  Throws: procsafe::error (out_of_range) when i >= size().
    element_type& operator[](std::size_t i) { return at(i); }
    const element_type& operator[](std::size_t i) const { return at(i); }
    /// Element i.  Throws: procsafe::error (out_of_range) when i >= size().
    element_type& at(std::size_t i) {
        return const_cast<element_type&>(static_cast<const counter_array&>(*this).at(i));
    }
    const element_type& at(std::size_t i) const {
        if (i >= size_) {
            throw detail::object_error(errc::out_of_range, this,
                        "counter_array index " + std::to_string(i) + " is past its " + std::to_string(size_) +
                            " elements");
        }
        return *std::launder(reinterpret_cast<const element_type*>(elements() + i * stride_));
    }

    std::size_t size() const noexcept { return size_; }
    array_layout layout() const noexcept { return layout_; }

    // For segment: the storage after the object, and its validation on find.
    static std::size_t procsafe_extra_bytes(std::size_t n, array_layout layout = array_layout::padded,
                                            const T& = T{}) {
        return checked(n, layout) * stride_for(layout);
    }
    static std::size_t procsafe_elements(std::size_t n, array_layout = array_layout::padded, const T& = T{}) {
        return n;
    }
    bool procsafe_fits(std::size_t bytes_after) const noexcept {
        return size_ <= max_size && stride_ == stride_for(layout_) && bytes_after >= size_ * stride_;
    }

private:
    /// Constructed by segment::construct<counter_array<T, Sync>>(name, n, layout, initial).
    /// Throws: procsafe::error (invalid_argument) for 0 or more than max_size elements.
    explicit counter_array(std::size_t n, array_layout layout = array_layout::padded, const T& initial = T{})
        : size_(checked(n, layout)), layout_(layout), stride_(static_cast<std::uint32_t>(stride_for(layout))) {
        unsigned char* p = elements();
        for (std::size_t i = 0; i < size_; ++i, p += stride_) ::new (static_cast<void*>(p)) element_type(initial);
    }

    static std::size_t stride_for(array_layout layout) noexcept {
        // Padded: whole 128-byte lines per element (the wait word stays beside
        // the value, as in every array element). Packed: sizeof, a multiple of
        // the element's alignment; the first element is aligned because the
        // array itself is (array_align), and sizeof(counter_array) is a
        // multiple of that.
        constexpr std::size_t line = detail::array_align<T, Sync>;
        constexpr std::size_t padded = (sizeof(element_type) + line - 1) / line * line;
        return layout == array_layout::padded ? padded : sizeof(element_type);
    }
    static std::size_t checked(std::size_t n, array_layout layout) {
        if (n == 0 || n > max_size) {
            throw error(errc::invalid_argument, {}, {},
                        "a counter_array has 1 to " + std::to_string(max_size) + " elements, not " + std::to_string(n));
        }
        if (layout != array_layout::padded && layout != array_layout::packed) {
            throw error(errc::invalid_argument, {}, {}, "unknown array_layout");
        }
        return n;
    }
    unsigned char* elements() const noexcept {
        return reinterpret_cast<unsigned char*>(const_cast<counter_array*>(this) + 1);
    }

    std::uint64_t size_;
    array_layout layout_;
    std::uint32_t stride_;
};

namespace detail {
template <class T, class Sync>
struct object_traits<counter_array<T, Sync>> {
    static_assert(sizeof(counter_array<T, Sync>) % cache_line == 0);
    static constexpr type_facts facts() {
        return value_facts<T>(std::is_same_v<Sync, atomic_sync> ? object_kind::atomic_counter_array
                                                                : object_kind::mutex_counter_array,
                              sizeof(counter_array<T, Sync>), alignof(counter_array<T, Sync>));
    }
};
}  // namespace detail

}  // namespace procsafe
