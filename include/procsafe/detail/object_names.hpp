// procsafe/detail/object_names.hpp: which segment and object an address belongs to, for error messages.
// SPDX-License-Identifier: MIT
#pragma once

// An object in shared memory does not know its own name (names live in the
// block header before it, at an offset that depends on its alignment). An
// error it throws at run time (a latch counted down too far, an array index
// past its end) should still name it: the segment registers each mapping it
// makes in this process, and on the error path the object's address is
// looked up there, then in that segment's catalog. Process-local; the cost
// is paid only when an error is thrown.

#include <procsafe/detail/catalog.hpp>
#include <procsafe/detail/config.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/error.hpp>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace procsafe::detail {

struct mapped_segment {
    const unsigned char* base;
    std::size_t size;
    std::string name;
};

inline std::mutex& mapped_segments_mutex() {
    static std::mutex m;
    return m;
}
inline std::vector<mapped_segment>& mapped_segments() {
    static std::vector<mapped_segment> v;
    return v;
}

inline void register_mapping(const void* base, std::size_t size, std::string_view name) noexcept {
    try {
        const std::lock_guard lock(mapped_segments_mutex());
        mapped_segments().push_back({static_cast<const unsigned char*>(base), size, std::string(name)});
    } catch (...) {  // only error messages lose their names
    }
}
inline void unregister_mapping(const void* base) noexcept {
    const std::lock_guard lock(mapped_segments_mutex());
    auto& v = mapped_segments();
    for (auto i = v.begin(); i != v.end(); ++i)
        if (i->base == base) {
            v.erase(i);
            return;
        }
}

/// The segment and object names of the object at `object` ("" when this
/// process does not map it through a segment, or it is not in the catalog).
inline std::pair<std::string, std::string> names_of(const void* object) {
    const auto* at = static_cast<const unsigned char*>(object);
    const std::lock_guard lock(mapped_segments_mutex());
    for (const auto& m : mapped_segments()) {
        if (at < m.base || at >= m.base + m.size) continue;
        std::string found;
        try {
            walk_catalog(m.base, m.size, m.name, [&](const std::atomic<std::uint64_t>&, std::uint64_t block) {
                if (!found.empty() || block > m.size || m.size - block < sizeof(object_header)) return;
                const auto& h = *reinterpret_cast<const object_header*>(m.base + block);
                if (m.base + block + h.object_offset != at) return;
                if (sizeof(object_header) + std::size_t{h.name_length} > m.size - block) return;
                found.assign(reinterpret_cast<const char*>(m.base + block + sizeof(object_header)), h.name_length);
            });
        } catch (const error&) {
        }
        return {m.name, found};
    }
    return {};
}

/// An error about the object at `self`, naming its segment and itself when
/// this process can tell them.
inline error object_error(errc code, const void* self, std::string_view detail) {
    auto [segment, object] = names_of(self);
    return error(code, segment, object, detail);
}

}  // namespace procsafe::detail
