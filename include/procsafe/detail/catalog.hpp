// procsafe/detail/catalog.hpp: the catalog a read-only process walks to find a segment's objects.
// SPDX-License-Identifier: MIT
#pragma once

// The catalog: how a process that only reads a segment finds its objects,
// without the directory lock and without Boost's name index (which cannot be
// walked while another process inserts into it).
//
// Layout and publication protocol (the model is Varnish's shared-memory
// statistics). The segment header holds the offset of the first catalog
// chunk. A chunk is {magic, capacity, next, count, entries[capacity]}; an
// entry is the offset of an object's block from the segment's start. Chunks
// are allocated in the managed buffer and never freed; each is linked by a
// release store of the previous chunk's `next`. Writers append under the
// directory lock: the object's header (name, kind, type, metadata, state
// constructing) is complete before its entry is written, and the entry
// before `count` is raised by a release store. A block whose constructor
// threw gets its entry zeroed (a tombstone), then a release fence, before
// the block is freed: a reader that copied the block's header re-reads the
// entry after an acquire fence and drops the copy if it changed, so it never
// takes a freed block's next tenant for the object. A reader follows
// `next` and `count` with acquire loads, checks every offset against the
// mapping, and never writes: it needs only read permission, never waits for a
// writer, and no writer ever waits for it.

#include <procsafe/detail/directory.hpp>
#include <procsafe/detail/segment_header.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>

namespace procsafe::detail {

inline constexpr std::uint32_t catalog_magic = 0x54435350u;  // "PSCT"
inline constexpr std::uint32_t first_chunk_entries = 64, max_chunk_entries = 4096;
/// The least an object's block takes (its header; every block fills whole
/// 128-byte lines in fact): bounds how many objects a segment can hold.
inline constexpr std::size_t min_block_bytes = 64;

struct catalog_chunk {
    std::uint32_t magic;
    std::uint32_t capacity;
    std::atomic<std::uint64_t> next;  // offset of the next chunk; 0: none yet
    std::atomic<std::uint32_t> count;  // entries published
    std::uint32_t reserved;
    // Then `capacity` entries: block offsets, 0 for a tombstone.

    static constexpr std::size_t header_bytes = 24;
    static std::size_t bytes_for(std::uint32_t capacity) noexcept {
        return header_bytes + std::size_t{capacity} * sizeof(std::atomic<std::uint64_t>);
    }
    std::atomic<std::uint64_t>& entry(std::uint32_t i) const noexcept {
        return *reinterpret_cast<std::atomic<std::uint64_t>*>(
            reinterpret_cast<unsigned char*>(const_cast<catalog_chunk*>(this)) + header_bytes + i * sizeof(std::uint64_t));
    }
};
static_assert(sizeof(catalog_chunk) == catalog_chunk::header_bytes, "the entries follow the chunk's header");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

/// Writers' side, always under the directory lock (format: before publication).
class catalog_writer {
public:
    catalog_writer(segment_header& h, directory& d) : h_(h), d_(d) {}

    /// Allocates the first chunk of a fresh segment.
    void format() {
        const std::uint64_t off = allocate_chunk(first_chunk_entries);
        h_.catalog = off;
        h_.catalog_tail = off;
    }

    /// Room for one more entry (a new chunk if the last is full).
    /// Throws: out_of_space.
    void reserve() {
        catalog_chunk* tail = chunk_at(h_.catalog_tail);
        if (tail->count.load(std::memory_order_relaxed) < tail->capacity) return;
        const std::uint32_t grown = tail->capacity * 2 > max_chunk_entries ? max_chunk_entries : tail->capacity * 2;
        const std::uint64_t off = allocate_chunk(grown);
        h_.catalog_tail = off;
        tail->next.store(off, std::memory_order_release);
    }

    /// Publishes a block whose header is complete. Requires: reserve() first.
    void append(const void* block) noexcept {
        catalog_chunk* tail = chunk_at(h_.catalog_tail);
        const std::uint32_t n = tail->count.load(std::memory_order_relaxed);
        tail->entry(n).store(offset_of(block), std::memory_order_relaxed);
        tail->count.store(n + 1, std::memory_order_release);
    }

    /// Tombstones a block's entry before the block is freed.
    void remove(const void* block) noexcept {
        const std::uint64_t off = offset_of(block);
        for (std::uint64_t c = h_.catalog; c != 0;) {
            catalog_chunk* chunk = chunk_at(c);
            const std::uint32_t n = chunk->count.load(std::memory_order_relaxed);
            for (std::uint32_t i = 0; i < n; ++i) {
                if (chunk->entry(i).load(std::memory_order_relaxed) == off) {
                    chunk->entry(i).store(0, std::memory_order_relaxed);
                    // The block's memory is written (freed, reused) only after this.
                    std::atomic_thread_fence(std::memory_order_release);
                    return;
                }
            }
            c = chunk->next.load(std::memory_order_relaxed);
        }
    }

private:
    unsigned char* base() const noexcept { return reinterpret_cast<unsigned char*>(&h_); }
    std::uint64_t offset_of(const void* p) const noexcept {
        return static_cast<std::uint64_t>(static_cast<const unsigned char*>(p) - base());
    }
    catalog_chunk* chunk_at(std::uint64_t off) const noexcept { return reinterpret_cast<catalog_chunk*>(base() + off); }

    std::uint64_t allocate_chunk(std::uint32_t capacity) {
        void* p = d_.buffer().allocate(catalog_chunk::bytes_for(capacity), std::nothrow);
        if (p == nullptr) throw error(errc::out_of_space, d_.name(), {}, "no room for the catalog of its objects");
        auto* chunk = static_cast<catalog_chunk*>(p);
        chunk->magic = catalog_magic;
        chunk->capacity = capacity;
        chunk->next.store(0, std::memory_order_relaxed);
        chunk->count.store(0, std::memory_order_relaxed);
        return offset_of(chunk);
    }

    segment_header& h_;
    directory& d_;
};

/// Readers' side: calls visit(entry, offset) for every published, live entry
/// of the catalog in a mapping of `size` bytes at `base`; `entry` lets the
/// caller re-check the entry after copying the block (see the protocol).
/// Validates every chunk it follows. Throws: incompatible_layout (naming the
/// segment) on a chunk out of the mapping, misaligned, of another magic or
/// capacity, a chunk met twice (a loop: refused at once), or more entries
/// than a segment of `size` bytes could hold. The walk is bounded by the
/// segment's size, not by the chunks' word: chunks never overlap, so their
/// entries fit in `size` bytes (at most size / 8 of them), and each live
/// entry is a distinct block of at least one object header (at most
/// size / sizeof(object_header) of them) -- whatever a hostile owner writes.
template <class Visit>
void walk_catalog(const unsigned char* base, std::size_t size, std::string_view segment, Visit&& visit) {
    auto corrupt = [&](const std::string& why) { throw error(errc::incompatible_layout, segment, {}, "catalog: " + why); };
    const auto& h = *reinterpret_cast<const segment_header*>(base);
    std::uint64_t off = h.catalog;
    const std::size_t most_chunks = size / catalog_chunk::bytes_for(1) + 1;
    const std::size_t most_entries = size / sizeof(std::uint64_t), most_live = size / min_block_bytes + 1;
    std::size_t entries = 0, live = 0;
    // A forged chain is cut at its first repeat.
    std::unordered_set<std::uint64_t> seen;
    for (std::size_t hops = 0; off != 0; ++hops) {
        if (hops > most_chunks) corrupt("a chain of chunks longer than the segment could hold (a loop)");
        if (!seen.insert(off).second) {
            corrupt("a chunk at offset " + std::to_string(off) + " met twice: the chain of chunks loops");
        }
        if (off % alignof(catalog_chunk) != 0 || off < managed_offset || off > size ||
            size - off < catalog_chunk::bytes_for(1)) {
            corrupt("a chunk at offset " + std::to_string(off) + " outside the segment");
        }
        const auto* chunk = reinterpret_cast<const catalog_chunk*>(base + off);
        const std::uint32_t capacity = chunk->capacity;
        if (chunk->magic != catalog_magic || capacity == 0 || capacity > max_chunk_entries ||
            size - off < catalog_chunk::bytes_for(capacity)) {
            corrupt("a damaged chunk at offset " + std::to_string(off));
        }
        const std::uint32_t count = chunk->count.load(std::memory_order_acquire);
        if (count > capacity) corrupt("a chunk that claims more entries than it holds");
        entries += count;
        if (entries > most_entries) corrupt("more entries than the segment could hold (overlapping chunks)");
        for (std::uint32_t i = 0; i < count; ++i) {
            const std::atomic<std::uint64_t>& entry = chunk->entry(i);
            const std::uint64_t block = entry.load(std::memory_order_acquire);
            if (block == 0) continue;
            if (++live > most_live) corrupt("more objects than the segment could hold (entries repeated)");
            visit(entry, block);
        }
        off = chunk->next.load(std::memory_order_acquire);
    }
}

}  // namespace procsafe::detail
