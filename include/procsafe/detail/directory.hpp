// procsafe/detail/directory.hpp: a segment's directory: Boost's allocator and name index under a robust lock.
// SPDX-License-Identifier: MIT
#pragma once

// A segment's directory: Boost's allocator and name index (a managed buffer
// after the segment header), under procsafe's own robust lock.
//
// Boost's managed_external_buffer defaults to null_mutex_family, and its
// interprocess_mutex would not be robust anyway: a process killed while
// holding it would hang every later construct and find. So the buffer runs
// without locks of its own, and every use of it goes through locked(), which
// takes the header's robust mutex within the segment's timeout(). A process
// that dies while it changes the directory (inside a change scope) leaves
// the directory marked dirty; the next locker finds the owner dead and the
// mark set, and poisons the segment: from then on every directory operation
// is owner_died (counters already found keep working).

#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/robust_mutex.hpp>
#include <procsafe/detail/segment_header.hpp>
#include <procsafe/error.hpp>

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <utility>

namespace procsafe::detail {

using managed_buffer = boost::interprocess::basic_managed_external_buffer<
    char, boost::interprocess::rbtree_best_fit<boost::interprocess::null_mutex_family>,
    boost::interprocess::iset_index>;

/// One process's handle on a segment's directory. Movable; for one thread
/// at a time (as the segment that owns it).
class directory {
public:
    directory() = default;

    /// Formats the managed buffer after a fresh header (the creator).
    /// Throws: out_of_space when the segment is too small for Boost's own bookkeeping.
    static directory format(segment_header& h, std::size_t total, std::string name) {
        return directory(h, std::move(name), boost::interprocess::create_only, total, errc::out_of_space);
    }
    /// Attaches to the managed buffer of a validated header (an opener).
    /// Throws: incompatible_layout when Boost does not recognize it.
    static directory attach(segment_header& h, std::size_t total, std::string name) {
        return directory(h, std::move(name), boost::interprocess::open_only, total, errc::incompatible_layout);
    }

    void swap(directory& o) noexcept {
        std::swap(header_, o.header_);
        buffer_.swap(o.buffer_);
        std::swap(name_, o.name_);
        std::swap(timeout_, o.timeout_);
    }

    /// The segment's name for messages ("(anonymous)" for an anonymous one).
    std::string_view name() const noexcept { return name_; }
    std::chrono::milliseconds timeout() const noexcept { return timeout_; }
    void set_timeout(std::chrono::milliseconds t) noexcept { timeout_ = t; }
    managed_buffer& buffer() noexcept { return buffer_; }
    segment_header& header() const noexcept { return *header_; }

    /// Runs f() with the directory lock held, waiting for it at most
    /// timeout(), and never past `deadline` (a caller's own bound).
    /// Throws: timed_out, owner_died (poisoned), incompatible_layout (the
    /// lock word is no lock).
    template <class F>
    decltype(auto) locked(F&& f, wait_clock::time_point deadline = wait_clock::time_point::max()) {
        if (header_->poisoned.load(std::memory_order_acquire) != 0) throw poisoned();
        const auto mine = deadline_after(timeout_);
        lock guard(*this, deadline < mine ? deadline : mine);
        if (guard.recovered() && header_->directory_dirty.load(std::memory_order_relaxed) != 0) {
            header_->poisoned.store(1, std::memory_order_release);
            throw poisoned();
        }
        return std::forward<F>(f)();
    }

    /// Marks the directory as being changed for one scope, under the lock: a
    /// process killed inside leaves the mark. Leaving the scope in any way,
    /// an exception included, clears it (Boost's changes are exception-safe).
    class change {
    public:
        explicit change(directory& d) : h_(*d.header_) {
            h_.directory_dirty.store(1, std::memory_order_relaxed);
            // Boost's plain stores that follow must not be moved above the mark.
            std::atomic_signal_fence(std::memory_order_seq_cst);
        }
        ~change() { h_.directory_dirty.store(0, std::memory_order_release); }
        change(const change&) = delete;
        change& operator=(const change&) = delete;

    private:
        segment_header& h_;
    };

    /// Bytes still free. Cost: takes the directory lock.
    std::size_t free_memory() {
        return locked([&] { return static_cast<std::size_t>(buffer_.get_free_memory()); });
    }

private:
    template <class Mode>
    directory(segment_header& h, std::string name, Mode mode, std::size_t total, errc failure)
        : header_(&h), name_(std::move(name)) {
        try {
            buffer_ = managed_buffer(mode, reinterpret_cast<unsigned char*>(header_) + managed_offset, total - managed_offset);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw error(failure, name_, {}, e.what());
        }
    }

    /// The lock for one locked() call, bounded by timeout(): a stopped or
    /// hung holder, or a lock word that names an owner that never existed,
    /// is timed_out, never a hang.
    class lock {
    public:
        lock(directory& d, wait_clock::time_point deadline) : d_(d) {
            lock_result r{};
            try {
                r = d.header_->directory.lock_until(deadline);
            } catch (const error& e) {
                throw error(errc::incompatible_layout, d.name(), {},
                            "its directory lock is not a usable lock (" + e.detail() + "): the segment is corrupted");
            }
            if (r == lock_result::timed_out) {
                throw error(errc::timed_out, d.name(), {},
                            "its directory lock was held for more than " + std::to_string(d.timeout_.count()) +
                                " ms (by a stopped or hung process, or the lock is corrupted)");
            }
            recovered_ = r == lock_result::recovered;
        }
        ~lock() { d_.header_->directory.unlock(); }
        lock(const lock&) = delete;
        lock& operator=(const lock&) = delete;
        bool recovered() const noexcept { return recovered_; }

    private:
        directory& d_;
        bool recovered_ = false;
    };

    error poisoned() const {
        return error(errc::owner_died, name(), {},
                     "a process died while adding an object; the directory may be inconsistent. "
                     "Counters already found still work; recreate the segment to add more");
    }

    segment_header* header_ = nullptr;
    managed_buffer buffer_;
    std::string name_;
    std::chrono::milliseconds timeout_ = default_timeout;
};

}  // namespace procsafe::detail
