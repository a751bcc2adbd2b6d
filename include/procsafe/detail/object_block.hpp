// procsafe/detail/object_block.hpp: the object protocol: how construct and find place and claim a block.
// SPDX-License-Identifier: MIT
#pragma once

// The object protocol: how construct, find and find_or_construct place a
// named object in a segment and hand it to every process.
//
// A named block is [object_header][padding][the object][its extra storage].
// The process that allocates the block (under the directory lock) claims it
// before the lock is released: it writes the header (state constructing, its
// pid, the type facts, the object's offset), then runs the constructor
// outside the lock and publishes state ready (release). Only the allocator
// ever constructs in a block. A peer that finds the block copies its header
// under the lock, type-checks it at once, and while it is constructing looks
// the name up again under the lock each time (up to the segment's
// timeout()): a constructor that throws frees the block and the name, so the
// peer sees the name gone, never the memory's next tenant. A ready block is
// never freed (procsafe has no destroy), so the reference stays valid.

#include <procsafe/detail/catalog.hpp>
#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/directory.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/error.hpp>
#include <procsafe/metadata.hpp>

#include <cassert>
#include <mutex>
#include <unordered_map>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

namespace procsafe::detail {

enum class lookup { find, create, find_or_create };

template <class C>
constexpr std::size_t object_align() {
    // Every process maps a segment at a page boundary, and nothing more: an
    // object aligned beyond a page would lie at different offsets in
    // different processes' mappings.
    static_assert(alignof(C) <= 4096, "procsafe: a type aligned beyond 4096 bytes (a page) cannot be placed in a segment");
    return alignof(C) > cache_line ? alignof(C) : cache_line;
}
/// What the object protocol needs to know of an object's type, without the
/// type: the construction, claim and checks are one function for every type
/// (compiled once per program with PROCSAFE_SEPARATE_COMPILATION).
struct object_type {
    using fits_fn = bool (*)(const void* object, std::size_t bytes);
    using refusal_fn = std::string (*)(const void* object);
    type_facts facts{};
    std::size_t size = 0;   // sizeof(C)
    std::size_t align = 0;  // object_align<C>()
    /// For a variable-size C: whether the object's own header fits the
    /// `bytes` after it in its block (nullptr: C has a fixed size).
    fits_fn fits = nullptr;
    /// For a C that may refuse to be used here (another PID namespace): why,
    /// or "" (nullptr: C never refuses).
    refusal_fn refusal = nullptr;
};

template <class C>
struct object_type_of {
    using T = std::remove_cv_t<C>;
    static constexpr object_type::fits_fn fits() {
        if constexpr (variable_size<T>) {
            return [](const void* o, std::size_t bytes) -> bool { return static_cast<const T*>(o)->procsafe_fits(bytes); };
        } else {
            return nullptr;
        }
    }
    static constexpr object_type::refusal_fn refusal() {
        if constexpr (requires(const T& c) { { c.procsafe_refusal() } -> std::convertible_to<std::string>; }) {
            return [](const void* o) -> std::string { return static_cast<const T*>(o)->procsafe_refusal(); };
        } else {
            return nullptr;
        }
    }
    static constexpr object_type value{object_traits<T>::facts(), sizeof(T), object_align<T>(), fits(), refusal()};
};

/// Bytes a block needs: the header, the strings, the alignment, the object.
constexpr std::size_t block_size(const object_type& type, std::size_t meta_bytes) {
    return sizeof(object_header) + meta_bytes + type.align - 1 + type.size;
}
/// Where the object starts in a block. Boost 1.74 does not honour alignof(C)
/// > 16 inside a segment (boostorg/interprocess #217), so procsafe aligns the
/// object itself; mappings start on page boundaries, so the offset is the
/// same in every process.
inline std::size_t object_offset(const unsigned char* block, std::size_t meta_bytes, std::size_t align) noexcept {
    const auto p = reinterpret_cast<std::uintptr_t>(block) + sizeof(object_header) + meta_bytes;
    return static_cast<std::size_t>((p + align - 1) / align * align - reinterpret_cast<std::uintptr_t>(block));
}
inline object_header* header_of(unsigned char* block) noexcept { return reinterpret_cast<object_header*>(block); }

/// The name and metadata as they are laid out after the object's header.
struct object_strings {
    std::string_view name;
    const metadata* meta = nullptr;

    std::size_t bytes() const noexcept {
        std::size_t n = name.size();
        if (meta != nullptr) {
            n += meta->help.size() + meta->unit.size() + meta->label.size();
            for (std::string_view v : meta->label_values) n += 2 + v.size();
        }
        return n;
    }
    /// Fills the header's lengths and writes the strings after it.
    void write(object_header& h) const noexcept {
        auto* out = reinterpret_cast<unsigned char*>(&h) + sizeof(object_header);
        auto put = [&](std::string_view s) {
            for (char c : s) *out++ = static_cast<unsigned char>(c);
        };
        h.name_length = static_cast<std::uint16_t>(name.size());
        put(name);
        if (meta == nullptr) return;
        h.help_length = static_cast<std::uint16_t>(meta->help.size());
        h.unit_length = static_cast<std::uint16_t>(meta->unit.size());
        h.label_length = static_cast<std::uint16_t>(meta->label.size());
        h.label_values = static_cast<std::uint32_t>(meta->label_values.size());
        h.metric = static_cast<std::uint8_t>(meta->type);
        put(meta->help);
        put(meta->unit);
        put(meta->label);
        for (std::string_view v : meta->label_values) {
            *out++ = static_cast<unsigned char>(v.size() & 0xFF);
            *out++ = static_cast<unsigned char>(v.size() >> 8);
            put(v);
        }
    }
};

/// Extra storage C needs after itself, for these constructor arguments.
/// The arguments are the caller's lvalues as the constructor gets them (a
/// conversion the constructor can use, a non-const operator size_t say, is
/// used here too): never "no extra bytes" for an object that has them.
template <class C, class... Args>
std::size_t extra_bytes_for(std::string_view segment, std::string_view name, Args&... args) {
    if constexpr (variable_size<C>) {
        static_assert(requires { { C::procsafe_extra_bytes(args...) } -> std::convertible_to<std::size_t>; },
                      "procsafe: these constructor arguments do not say how much storage the object needs "
                      "(C::procsafe_extra_bytes(args...))");
        try {
            return C::procsafe_extra_bytes(args...);
        } catch (const error& e) {
            throw error(e.code_value(), segment, name, e.detail());
        }
    } else {
        return 0;
    }
}

/// Metadata that must agree with the object: a label only for a
/// counter_array (C::procsafe_elements(args...) says how many elements, and
/// its values are one per element); the histogram type only for a histogram.
template <class C, class... Args>
void check_labels(const metadata& m, std::string_view segment, std::string_view name, Args&... args) {
    auto bad = [&](const std::string& why) { throw error(errc::invalid_argument, segment, name, "metadata: " + why); };
    const bool is_histogram = object_traits<std::remove_cv_t<C>>::facts().kind == object_kind::histogram;
    if (m.type == metric_type::histogram && !is_histogram) bad("only a procsafe::histogram is a histogram");
    if (is_histogram && m.type != metric_type::automatic && m.type != metric_type::histogram && m.type != metric_type::none) {
        bad("a procsafe::histogram is exported as a histogram");
    }
    if (m.label.empty()) return;
    if (m.label.find(',') != std::string_view::npos) bad("a counter_array has one label (label sets: segment::family)");
    if constexpr (requires { { C::procsafe_elements(args...) } -> std::convertible_to<std::size_t>; }) {
        const std::size_t n = C::procsafe_elements(args...);
        if (!m.label_values.empty() && m.label_values.size() != n) {
            bad(std::to_string(m.label_values.size()) + " label values for " + std::to_string(n) + " elements");
        }
    } else {
        bad("a label names the elements of a counter_array; this object has none");
    }
}

/// The metric type an object is exported as: the one its metadata gives,
/// else its kind's (counters count; a live_gauge, a latch, a barrier are
/// gauges); automatic for a user type, which is not exported.
inline metric_type resolve_metric(metric_type given, object_kind kind) noexcept {
    if (given == metric_type::none) return metric_type::automatic;
    if (given == metric_type::counter || given == metric_type::gauge || given == metric_type::histogram) return given;
    switch (kind) {
        case object_kind::atomic_counter:
        case object_kind::mutex_counter:
        case object_kind::sharded_counter:
        case object_kind::atomic_counter_array:
        case object_kind::mutex_counter_array: return metric_type::counter;
        case object_kind::latch:
        case object_kind::barrier:
        case object_kind::live_gauge: return metric_type::gauge;
        case object_kind::histogram: return metric_type::histogram;
        default: return metric_type::automatic;
    }
}

/// True when one of `stem` (a metric name) and metric_name(other) starts
/// with the other: only then can their exported names meet. No allocation:
/// this runs for every object of the segment at every construction.
inline bool stems_overlap(std::string_view stem, std::string_view other) noexcept {
    std::size_t i = 0;
    if (other.empty() || (other[0] >= '0' && other[0] <= '9')) {  // metric_name puts a '_' first
        if (stem.empty() || stem[0] != '_') return stem.empty();
        i = 1;
    }
    for (const char c : other) {
        if (i == stem.size()) return true;
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
        if (stem[i] != (ok ? c : '_')) return false;
        ++i;
    }
    return true;
}

constexpr bool is_array_kind(object_kind k) noexcept {
    return k == object_kind::atomic_counter_array || k == object_kind::mutex_counter_array;
}

/// What this process knows of a segment's exported names, caught up with
/// its catalog at each construction (under the directory lock), so that a
/// construction costs what the objects added since the last one cost, not a
/// walk of the whole catalog. Process-local; per mapping and incarnation.
struct exported_index {
    struct owner {
        std::string object;  // the object exported under the name
        std::string family;  // its family when it is a family's child, else ""
    };
    struct family_facts {
        std::string label, unit, sample;  // sample: a child's name
        metric_type metric = metric_type::automatic;
        type_facts facts{};
        std::size_t children = 0;  // may count children whose constructor threw since: recounted before refusing
    };
    std::uint64_t incarnation = 0;
    std::uint64_t chunk = 0;   // where the next catch-up starts: a chunk's offset (0: the first)...
    std::uint32_t next = 0;    // ...and the entry in it
    std::unordered_map<std::string, owner> names;
    std::unordered_map<std::string, family_facts> families;
};

inline std::mutex& exported_indexes_mutex() {
    static std::mutex m;
    return m;
}
inline std::unordered_map<const void*, exported_index>& exported_indexes() {
    static std::unordered_map<const void*, exported_index> all;
    return all;
}

/// Drops what this process knew of the segment mapped at `base` (unmapped).
inline void forget_exported_index(const void* base) noexcept {
    const std::lock_guard lock(exported_indexes_mutex());
    exported_indexes().erase(base);
}

/// What one catalog entry adds to the index.
inline void index_entry(exported_index& x, const unsigned char* base, std::size_t size, std::uint64_t block) {
    if (block > size || size - block < sizeof(object_header)) return;
    const auto& h = *reinterpret_cast<const object_header*>(base + block);
    if (sizeof(object_header) + std::size_t{h.name_length} + h.help_length + h.unit_length + h.label_length > size - block) return;
    const auto* strings = reinterpret_cast<const char*>(base + block + sizeof(object_header));
    const std::string_view other(strings, h.name_length);
    const std::string_view their_unit(strings + h.name_length + h.help_length, h.unit_length);
    const std::string_view their_label(strings + h.name_length + h.help_length + h.unit_length, h.label_length);
    const std::string_view their_family = family_of(other, their_label, is_array_kind(h.facts.kind));
    const metric_type theirs = resolve_metric(static_cast<metric_type>(h.metric), h.facts.kind);
    const bool child = their_family.size() != other.size();
    if (child) {
        auto& f = x.families[std::string(their_family)];
        if (f.children++ == 0) f = {std::string(their_label), std::string(their_unit), std::string(other), theirs, h.facts, 1};
    }
    if (theirs == metric_type::automatic) return;
    for (auto& n : exported_names(their_family, their_unit, theirs))
        x.names.try_emplace(std::move(n), exported_index::owner{std::string(other), child ? std::string(their_family) : std::string()});
}

/// Brings the index up to the catalog's end. Bounded as walk_catalog is.
inline void catch_up(exported_index& x, const unsigned char* base, std::size_t size, std::string_view segment) {
    const auto& h = *reinterpret_cast<const segment_header*>(base);
    if (x.chunk == 0) x.chunk = h.catalog;
    for (std::size_t hops = 0; x.chunk != 0; ++hops) {
        if (hops > size / catalog_chunk::bytes_for(1) + 1 || x.chunk % alignof(catalog_chunk) != 0 ||
            x.chunk < managed_offset || x.chunk > size || size - x.chunk < catalog_chunk::bytes_for(1)) {
            throw error(errc::incompatible_layout, segment, {}, "catalog: a damaged chain of chunks");
        }
        const auto* chunk = reinterpret_cast<const catalog_chunk*>(base + x.chunk);
        const std::uint32_t capacity = chunk->capacity;
        const std::uint32_t count = chunk->count.load(std::memory_order_acquire);
        if (chunk->magic != catalog_magic || capacity == 0 || capacity > max_chunk_entries ||
            size - x.chunk < catalog_chunk::bytes_for(capacity) || count > capacity) {
            throw error(errc::incompatible_layout, segment, {}, "catalog: a damaged chunk");
        }
        for (; x.next < count; ++x.next) {
            const std::uint64_t block = chunk->entry(x.next).load(std::memory_order_acquire);
            if (block != 0) index_entry(x, base, size, block);
        }
        const std::uint64_t next = chunk->next.load(std::memory_order_acquire);
        if (next == 0) return;  // the chunk may fill up further: resume in it
        x.chunk = next;
        x.next = 0;
    }
}

/// Under the directory lock, before a new object is placed, for an object
/// that is exported (its resolved metric type is not automatic):
/// - its name (a family child's: its family's) must be a metric name as
///   given: invalid_name otherwise;
/// - a name it would be exported under (exported_names: a histogram X also
///   makes X_bucket, X_sum, X_count) must not be one another object is
///   exported under (Prometheus drops one of the two; Redis would sum
///   them), unless both are children of one family (segment::family): the
///   same label names, type and unit;
/// - a family child (`max_series` > 0) is refused with out_of_range when its
///   family already has `max_series` children.
/// Cost: what the catalog gained since this process's last construction in
/// the segment (an index kept per process), and a lookup per exported name.
PROCSAFE_DECL void check_exported_names(directory& dir, std::string_view name, const metadata* meta, const type_facts& facts,
                                        std::size_t max_series);
#if PROCSAFE_OUT_OF_LINE
PROCSAFE_DECL void check_exported_names(directory& dir, std::string_view name, const metadata* meta, const type_facts& facts,
                                        std::size_t max_series) {
    const object_kind kind = facts.kind;
    const metric_type mine = resolve_metric(meta != nullptr ? meta->type : metric_type::automatic, kind);
    if (mine == metric_type::automatic && max_series == 0) return;
    const std::string_view label = meta != nullptr ? meta->label : std::string_view{};
    const std::string_view unit = meta != nullptr ? meta->unit : std::string_view{};
    const std::string_view family = family_of(name, label, is_array_kind(kind));
    const bool child = family.size() != name.size();
    if (mine != metric_type::automatic) {
        if (const char* why = metric_name_problem(family)) {
            throw error(errc::invalid_name, dir.name(), name,
                        child ? "the family's name '" + std::string(family) + "': " + why : std::string(why));
        }
    }
    const auto* base = reinterpret_cast<const unsigned char*>(&dir.header());
    const std::size_t size = managed_offset + dir.buffer().get_size();
    auto still_there = [&](const std::string& object) {  // an entry tombstoned since it was indexed is gone
        return dir.buffer().find<unsigned char>(object.c_str()).first != nullptr;
    };
    const std::lock_guard lock(exported_indexes_mutex());
    exported_index& x = exported_indexes()[base];
    if (x.incarnation != dir.header().incarnation) {
        x = exported_index{};
        x.incarnation = dir.header().incarnation;
    }
    catch_up(x, base, size, dir.name());
    if (child) {
        if (auto f = x.families.find(std::string(family)); f != x.families.end() && f->second.children > 0) {
            const auto& ff = f->second;
            if (ff.label != label || ff.metric != mine || ff.unit != unit || !(ff.facts == facts)) {
                throw error(errc::invalid_argument, dir.name(), name,
                            "the family '" + std::string(family) + "' has children with the labels (" + ff.label +
                                "), unit '" + ff.unit + "' and another type or object kind already ('" + ff.sample + "')");
            }
            if (max_series != 0 && ff.children >= max_series) {
                // Recount exactly (children whose constructor threw are gone).
                std::size_t siblings = 0;
                walk_catalog(base, size, dir.name(), [&](const std::atomic<std::uint64_t>&, std::uint64_t block) {
                    exported_index one;
                    index_entry(one, base, size, block);
                    if (one.families.count(std::string(family)) != 0) ++siblings;
                });
                f->second.children = siblings;
                if (siblings >= max_series) {
                    throw error(errc::out_of_range, dir.name(), name,
                                "the family '" + std::string(family) + "' has its " + std::to_string(max_series) +
                                    " label sets (max_series): a label value taken from input (a user id, a path) would grow it "
                                    "without bound; raise max_series, or label by fewer values");
                }
            }
        }
    }
    if (mine == metric_type::automatic) return;
    for (const auto& b : exported_names(family, unit, mine)) {
        const auto hit = x.names.find(b);
        if (hit == x.names.end()) continue;
        const auto& o = hit->second;
        if (o.object == name) continue;                           // the same name: object_exists, from the allocator
        if (child && !o.family.empty() && o.family == family) continue;  // a sibling
        if (!still_there(o.object)) {
            x.names.erase(hit);
            continue;
        }
        throw error(errc::invalid_argument, dir.name(), name,
                    "exported as " + b + ", as the object '" + o.object +
                        "' already is: Prometheus would drop one of them (choose another name)");
    }
}

#endif  // PROCSAFE_OUT_OF_LINE

/// A byte that Boost's construct leaves as it was (a user-provided
/// constructor that writes nothing): the block is zeroed by procsafe, its
/// header inside the directory's dirty window, the rest after it.
struct raw_byte {
    unsigned char value;
    raw_byte() noexcept {}  // NOLINT: deliberately leaves value as it was
};
static_assert(sizeof(raw_byte) == 1 && alignof(raw_byte) == 1);

/// What the directory said about a name, copied under its lock (only there
/// is the block sure not to be freed by a constructor that threw).
struct located {
    unsigned char* block = nullptr;  // nullptr: no such name
    std::size_t length = 0;
    bool mine = false;  // this process allocated it, and constructs in it
    std::uint32_t state = 0, magic = 0, layout = 0, constructor_pid = 0, constructor_pidns = 0, offset = 0, meta_bytes = 0;
    type_facts facts{};
};

/// Under the directory lock: finds the named block, or allocates it (as
/// `how` allows) and claims it for C before the lock is released.
inline located locate(directory& dir, std::string_view name, lookup how, const object_type& type, std::size_t extra,
                      const metadata* meta, wait_clock::time_point deadline, std::size_t max_series) {
    const std::string key(name);
    return dir.locked([&]() -> located {
        PROCSAFE_TEST_HOOK("directory.locked");
        located at;
        if (how != lookup::create) {
            const auto [block, length] = dir.buffer().find<unsigned char>(key.c_str());
            if (block != nullptr || how == lookup::find) {
                at.block = block;
                at.length = length;
                if (block != nullptr && length >= sizeof(object_header)) {
                    const object_header* h = header_of(block);
                    at.state = h->state.load(std::memory_order_acquire);
                    at.magic = h->magic;
                    at.layout = h->layout;
                    at.constructor_pid = h->constructor_pid;
                    at.constructor_pidns = h->constructor_pidns;
                    at.offset = h->object_offset;
                    at.meta_bytes = h->meta_bytes;
                    at.facts = h->facts;
                }
                return at;
            }
        }
        check_exported_names(dir, name, meta, type.facts, max_series);
        const object_strings strings{name, meta};
        const std::size_t bytes = block_size(type, strings.bytes()) + extra;
        const std::size_t head = sizeof(object_header) + strings.bytes();
        {
            // The dirty window: a process killed inside poisons the
            // directory (no one can tell what Boost's index was left as).
            // Kept to Boost's own bookkeeping and this block's header: the
            // block's storage is zeroed after it, below.
            directory::change change(dir);
            catalog_writer catalog(dir.header(), dir);
            catalog.reserve();
            try {
                at.block = reinterpret_cast<unsigned char*>(dir.buffer().construct<raw_byte>(key.c_str())[bytes]());
            } catch (const boost::interprocess::interprocess_exception& e) {
                if (e.get_error_code() == boost::interprocess::already_exists_error) {
                    throw error(errc::object_exists, dir.name(), name, "an object of that name exists");
                }
                throw error(errc::out_of_space, dir.name(), name,
                            "the segment has no room for " + std::to_string(bytes) + " more bytes (" +
                                std::to_string(dir.buffer().get_free_memory()) + " free)");
            }
            std::memset(at.block, 0, head);
            at.length = bytes;
            at.mine = true;
            object_header* h = header_of(at.block);
            h->magic = object_magic;
            h->layout = layout_version;
            h->constructor_pid = current_pid();
            h->constructor_pidns = pid_namespace();
            h->facts = type.facts;
            h->meta_bytes = static_cast<std::uint32_t>(strings.bytes());
            h->object_offset = static_cast<std::uint32_t>(object_offset(at.block, h->meta_bytes, type.align));
            h->block_size = bytes;
            strings.write(*h);
            h->state.store(state_constructing, std::memory_order_release);
            catalog.append(at.block);  // readers see it from here on, constructing
        }
        // Outside the dirty window, still under the lock: the storage after
        // the header zeroed (a large object's, a live_gauge of 4,096 slots,
        // is half a MiB). A process killed here leaves this one object
        // "constructing" by a dead process (owner_died for its name alone);
        // the directory stays usable.
        PROCSAFE_TEST_HOOK("object.zeroing");
        std::memset(at.block + head, 0, bytes - head);
        return at;
    }, deadline);
}

/// Runs the constructor (`construct(object, args)`) in a block this process
/// claimed, and publishes it. A constructor that throws gives the name back.
using construct_fn = void (*)(void* object, void* args);
inline void* build(directory& dir, unsigned char* block, std::string_view name, std::size_t align, construct_fn construct,
                   void* args) {
    PROCSAFE_TEST_HOOK("object.allocated");
    void* obj = block + header_of(block)->object_offset;
    assert(reinterpret_cast<std::uintptr_t>(obj) % align == 0);
    (void)align;
    try {
        try {
            construct(obj, args);
        } catch (const error& e) {
            if (!e.segment_name().empty() || !e.object_name().empty()) throw;
            throw error(e.code_value(), dir.name(), name, e.detail());  // name the segment and the object
        }
    } catch (...) {
        // Peers waiting for the object look the name up again under the
        // lock and see it gone. If even the directory cannot be had, the
        // block stays "constructing" by this pid: peers time out, and get
        // owner_died once this process is gone.
        const std::string key(name);
        try {
            dir.locked([&] {
                directory::change change(dir);
                catalog_writer(dir.header(), dir).remove(block);
                dir.buffer().destroy<unsigned char>(key.c_str());
            });
        } catch (const error&) {
        }
        throw;
    }
    header_of(block)->state.store(state_ready, std::memory_order_release);
    return obj;
}

/// The object in a block someone else claimed: type-checked at once;
/// nullptr while its constructor still runs (as `at` saw it).
inline void* ready(const directory& dir, const located& at, std::string_view name, const object_type& type) {
    if (at.length < sizeof(object_header)) {
        throw error(errc::type_mismatch, dir.name(), name,
                    "holds a block of " + std::to_string(at.length) + " bytes, not a procsafe object");
    }
    if (at.magic != object_magic || at.layout != layout_version) {
        throw error(errc::incompatible_layout, dir.name(), name, "object header of another layout version");
    }
    if (!(at.facts == type.facts)) {
        throw error(errc::type_mismatch, dir.name(), name, "holds " + describe(at.facts) + ", asked for " + describe(type.facts));
    }
    if (at.state == state_constructing) return nullptr;  // the caller judges its constructor
    const std::size_t offset = object_offset(at.block, at.meta_bytes, type.align);
    if (at.state != state_ready || at.offset != offset || offset + type.size > at.length) {
        throw error(errc::incompatible_layout, dir.name(), name,
                    "its header disagrees with its block (" + std::to_string(at.length) + " bytes)");
    }
    void* obj = at.block + offset;
    if (type.fits != nullptr && !type.fits(obj, at.length - offset - type.size)) {
        throw error(errc::incompatible_layout, dir.name(), name, "its header claims more storage than its block holds");
    }
    if (type.refusal != nullptr) {
        if (std::string why = type.refusal(obj); !why.empty()) throw error(errc::unsupported, dir.name(), name, why);
    }
    return obj;
}

/// construct / find / find_or_construct: locate the name; construct in a
/// block of our own (`construct(object, args)`; never for lookup::find);
/// otherwise type-check what is there and wait (up to the directory's
/// timeout()) for its constructor. `max_series`: for a family's child, how
/// many children its family may have (0: not a child).
PROCSAFE_DECL void* obtain_object(directory& dir, std::string_view name, lookup how, const object_type& type,
                                  const metadata* meta, std::size_t max_series, std::size_t extra, construct_fn construct,
                                  void* args);
#if PROCSAFE_OUT_OF_LINE
PROCSAFE_DECL void* obtain_object(directory& dir, std::string_view name, lookup how, const object_type& type,
                                  const metadata* meta, std::size_t max_series, std::size_t extra, construct_fn construct,
                                  void* args) {
    const auto deadline = deadline_after(dir.timeout());
    std::uint32_t gone = 0;  // a constructor seen gone: a second look decides
    for (unsigned round = 0;; ++round) {
        // The directory lock too is waited for only until the deadline.
        const located at = locate(dir, name, how, type, extra, meta, deadline, max_series);
        if (at.mine) return build(dir, at.block, name, type.align, construct, args);
        if (at.block == nullptr) throw error(errc::object_not_found, dir.name(), name, "no such object");
        if (round == 0) PROCSAFE_TEST_HOOK("object.found");
        if (void* obj = ready(dir, at, name, type)) return obj;
        // Constructing, as `at` saw it. Only a peer in the constructor's PID
        // namespace can tell whether its pid is gone; any other waits (and
        // times out). Gone now does not mean it died constructing: it may
        // have published the object and exited since `at` was copied. A gone
        // process publishes nothing more, so the state read after it was
        // seen gone is final: still constructing, it died in the constructor.
        if (at.constructor_pidns == pid_namespace() && process_gone(at.constructor_pid)) {
            if (gone == at.constructor_pid) {
                throw error(errc::owner_died, dir.name(), name,
                            "the process constructing it (pid " + std::to_string(at.constructor_pid) +
                                ") died; destroy the segment or use another name");
            }
            gone = at.constructor_pid;
            continue;  // look again at once
        }
        if (wait_clock::now() >= deadline) {
            throw error(errc::timed_out, dir.name(), name,
                        "still being constructed (by pid " + std::to_string(at.constructor_pid) + ") after " +
                            std::to_string(dir.timeout().count()) + " ms");
        }
        PROCSAFE_TEST_HOOK("object.waiting");
        if (round < 64) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}
#endif  // PROCSAFE_OUT_OF_LINE

/// obtain_object for C, constructed from args.
template <class C, lookup How, class... Args>
C& obtain(directory& dir, std::string_view name, const metadata* meta, std::size_t max_series, std::size_t extra,
          Args&&... args) {
    constexpr const object_type& type = object_type_of<C>::value;
    if constexpr (How == lookup::find) {
        return *static_cast<C*>(obtain_object(dir, name, How, type, meta, max_series, extra, nullptr, nullptr));
    } else {
        auto make = [&](void* obj) { object_access::construct<C>(obj, std::forward<Args>(args)...); };
        construct_fn call = [](void* obj, void* self) { (*static_cast<decltype(make)*>(self))(obj); };
        return *static_cast<C*>(obtain_object(dir, name, How, type, meta, max_series, extra, call, &make));
    }
}

}  // namespace procsafe::detail
