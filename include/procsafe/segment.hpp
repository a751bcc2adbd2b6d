// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/robust_mutex.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/error.hpp>

#if defined(PROCSAFE_POSIX)
#include <procsafe/detail/shm_posix.hpp>
#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#else
#include <procsafe/detail/shm_win32.hpp>
#endif

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>
#include <boost/version.hpp>

#include <atomic>
#include <cassert>
#include <chrono>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace procsafe {

namespace detail {

/// At offset 0 of every segment. Validated, with a bounded wait for the
/// creator to publish `magic`, before Boost is let near the mapping.
struct segment_header {
    std::atomic<std::uint64_t> magic;  // segment_magic, stored last (release)
    std::uint32_t layout;              // layout_version
    std::uint32_t header_size;         // sizeof(segment_header)
    std::uint32_t boost_version;       // BOOST_VERSION: Boost's own layout may change
    std::uint32_t line_size;           // cache_line
    std::uint64_t total_size;          // bytes mapped, header included
    std::uint64_t managed_offset;      // where Boost's managed buffer starts
    std::uint32_t creator_pid;
    std::atomic<std::uint32_t> poisoned;         // a process died while changing the directory
    std::atomic<std::uint32_t> directory_dirty;  // under `directory`: a change is in progress
    std::uint32_t reserved;
    // Guards Boost's segment manager, which runs with null_mutex_family: its
    // own interprocess_mutex is not robust, and a dead process holding it
    // would hang every later construct and find.
    robust_mutex directory;
};

inline constexpr std::size_t managed_offset = 256;
static_assert(sizeof(segment_header) <= managed_offset, "the segment header must fit before Boost's buffer");

using managed_buffer = boost::interprocess::basic_managed_external_buffer<
    char, boost::interprocess::rbtree_best_fit<boost::interprocess::null_mutex_family>,
    boost::interprocess::iset_index>;

/// Validates a header someone else wrote. `mapped` is the size of the object
/// behind it. Throws the error that names what is wrong; never reads past
/// `mapped`.
inline void check_header(const segment_header& h, std::size_t mapped, std::string_view name) {
    const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
    if (magic != segment_magic) {
        throw error(errc::bad_magic, name, {}, "not a procsafe segment (wrong magic number)");
    }
    auto incompatible = [&](const std::string& what) {
        throw error(errc::incompatible_layout, name, {}, what);
    };
    if (h.layout != layout_version) {
        incompatible("layout version " + std::to_string(h.layout) + ", this build reads " +
                     std::to_string(layout_version));
    }
    if (h.header_size != sizeof(segment_header) || h.managed_offset != managed_offset) {
        incompatible("header of " + std::to_string(h.header_size) + " bytes, this build uses " +
                     std::to_string(sizeof(segment_header)));
    }
    if (h.boost_version != BOOST_VERSION) {
        incompatible("made with Boost " + std::to_string(h.boost_version) + ", this build uses " +
                     std::to_string(BOOST_VERSION));
    }
    if (h.line_size != cache_line) {
        incompatible("cache line of " + std::to_string(h.line_size) + " bytes, this build uses " +
                     std::to_string(cache_line));
    }
    if (h.total_size != mapped || h.total_size < managed_offset + page_size()) {
        incompatible("header says " + std::to_string(h.total_size) + " bytes, the object has " +
                     std::to_string(mapped));
    }
}

inline void check_segment_name(std::string_view name) {
    auto bad = [&](const char* why) {
        throw error(errc::invalid_name, name.size() > 64 ? name.substr(0, 64) : name, {}, why);
    };
    if (name.empty()) bad("a segment name must not be empty");
    if (name.size() > 200) bad("a segment name has at most 200 characters");
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (!letter(name[0])) bad("a segment name starts with a letter");
    for (char c : name) {
        if (!letter(c) && !digit(c) && c != '_' && c != '-' && c != '.') {
            bad("a segment name has only letters, digits, '_', '-' and '.'");
        }
    }
}

inline void check_object_name(std::string_view segment, std::string_view name) {
    auto bad = [&](const char* why) {
        throw error(errc::invalid_name, segment, name.size() > 64 ? name.substr(0, 64) : name, why);
    };
    if (name.empty()) bad("an object name must not be empty");
    if (name.size() > 200) bad("an object name has at most 200 characters");
    for (char c : name) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) bad("an object name must be printable");
    }
}

/// Polls `ready` until it returns true or `timeout` passes. Backs off from
/// yielding to 1 ms sleeps: only set-up paths wait here, never a counter.
template <class Ready>
bool bounded_wait(std::chrono::milliseconds timeout, Ready ready) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int round = 0;; ++round) {
        if (ready()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return ready();
        if (round < 64) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace detail

/// A mapping of shared memory that holds named procsafe objects.
///
/// Named segments are POSIX shared memory objects (/dev/shm/NAME), created
/// exclusively with mode 0600 (whatever the umask) and with their pages
/// reserved, so a full /dev/shm is an out_of_space error rather than a SIGBUS.
/// Anonymous segments are inherited by fork() and vanish with the last process.
/// Every segment starts with a header (magic, layout version, Boost version,
/// line size) that open() validates, waiting at most timeout() for a creator
/// that is still setting it up.
///
/// Lifetime: a named segment outlives processes. The segment object that
/// created it removes it on destruction (call disown() to keep it), unless the
/// destructor runs in a forked child. Other processes only unmap.
///
/// ```
/// auto seg = procsafe::segment::create("web", 1 << 20);      // parent
/// auto& hits = seg.construct<procsafe::atomic_counter<long>>("hits");
/// // ... in another program:
/// auto peer = procsafe::segment::open("web");
/// peer.find<procsafe::atomic_counter<long>>("hits").increment();
/// ```
///
/// The segment object itself is for one thread at a time; the objects in it
/// are process- and thread-safe.
class segment {
    // Defined first: the members below deduce their return types from it.
    /// Runs f with the directory lock held, waiting at most timeout() for the
    /// lock. A process that died while changing the directory (Boost's
    /// allocator and name index) may have left it half-changed: the segment
    /// is then refused from here on.
    template <class F>
    decltype(auto) with_directory(F&& f) {
        if (header_->poisoned.load(std::memory_order_acquire) != 0) throw poisoned_error();
        directory_lock guard(*this);
        if (guard.recovered() && header_->directory_dirty.load(std::memory_order_relaxed) != 0) {
            header_->poisoned.store(1, std::memory_order_release);
            throw poisoned_error();
        }
        return f();
    }

    /// The directory lock, held for one with_directory call. Every wait for
    /// it is bounded by timeout(): a stopped or hung holder, or a lock word
    /// that names an owner that never existed, is timed_out, never a hang.
    class directory_lock {
    public:
        explicit directory_lock(segment& s) : s_(s) {
            detail::lock_result r{};
            try {
                r = s.header_->directory.lock_until(detail::deadline_after(s.timeout_));
            } catch (const error& e) {
                throw error(errc::incompatible_layout, s.name_for_errors(), {},
                            "its directory lock is not a usable lock (" + e.detail() + "): the segment is corrupted");
            }
            if (r == detail::lock_result::timed_out) {
                throw error(errc::timed_out, s.name_for_errors(), {},
                            "its directory lock was held for more than " + std::to_string(s.timeout_.count()) +
                                " ms (by a stopped or hung process, or the lock is corrupted)");
            }
            recovered_ = r == detail::lock_result::recovered;
        }
        ~directory_lock() { s_.header_->directory.unlock(); }
        directory_lock(const directory_lock&) = delete;
        directory_lock& operator=(const directory_lock&) = delete;
        bool recovered() const noexcept { return recovered_; }

    private:
        segment& s_;
        bool recovered_ = false;
    };

    /// Marks the directory as being changed for one scope (under the lock):
    /// a process killed inside leaves the mark, and the next locker, finding
    /// the lock's owner dead, poisons the segment. Leaving the scope in any
    /// way, an exception included, clears it (Boost's changes are
    /// exception-safe: an exception leaves the directory consistent).
    class directory_change {
    public:
        explicit directory_change(detail::segment_header& h) : h_(h) {
            h_.directory_dirty.store(1, std::memory_order_relaxed);
        }
        ~directory_change() { h_.directory_dirty.store(0, std::memory_order_release); }
        directory_change(const directory_change&) = delete;
        directory_change& operator=(const directory_change&) = delete;

    private:
        detail::segment_header& h_;
    };

    error poisoned_error() const {
        return error(errc::owner_died, name_for_errors(), {},
                     "a process died while adding an object; the directory may be inconsistent. "
                     "Counters already found still work; recreate the segment to add more");
    }

public:
    /// How long open() and find() wait for a peer to finish setting up.
    static constexpr std::chrono::milliseconds default_timeout{2000};

    /// Creates a named segment of at least `bytes` (rounded up to pages).
    /// `mode` is applied exactly (umask does not widen or narrow it).
    /// Throws: already_exists, invalid_name, invalid_argument, out_of_space,
    /// permission_denied.
    static segment create(std::string_view name, std::size_t bytes, unsigned mode = 0600) {
        detail::check_segment_name(name);
        const std::size_t total = checked_size(name, bytes);
        if ((mode & ~0666u) != 0 || (mode & 0600u) != 0600u) {
            throw error(errc::invalid_argument, name, {},
                        "mode must give the owner read and write, and nothing but read/write bits");
        }
        segment s{std::string(name)};
        s.map_ = detail::mapping::create(os_name(name), name, total, mode);
        s.owner_ = true;
        s.initialize();
        return s;
    }

    /// Opens a named segment made by procsafe, waiting up to `timeout` for a
    /// creator that is still initializing it.
    /// Throws: not_found, invalid_name, permission_denied (also when another
    /// user owns it), bad_magic, incompatible_layout, timed_out.
    static segment open(std::string_view name, std::chrono::milliseconds timeout = default_timeout) {
        detail::check_segment_name(name);
        segment s{std::string(name)};
        s.timeout_ = timeout;
#if defined(PROCSAFE_POSIX)
        s.map_ = detail::mapping::open(os_name(name), name);
        struct stat st = s.map_.stat(name);
        if (st.st_uid != ::geteuid()) {
            throw error(errc::permission_denied, name, {},
                        "owned by uid " + std::to_string(st.st_uid) + ", not by this process's uid " +
                            std::to_string(::geteuid()) + ": not trusted");
        }
        const bool sized = detail::bounded_wait(timeout, [&] {
            st = s.map_.stat(name);
            return static_cast<std::size_t>(st.st_size) >= detail::managed_offset;
        });
        if (!sized) {
            throw error(errc::timed_out, name, {},
                        "has " + std::to_string(st.st_size) +
                            " bytes and was never initialized (a creator that died, or not procsafe's)");
        }
        s.map_.map(name, static_cast<std::size_t>(st.st_size));
#else
        // A Windows section has its size from birth, and only its creator's
        // session (or, for Global names, an administrator) can create one.
        s.map_ = detail::mapping::open(os_name(name), name);
        if (s.map_.size() < detail::managed_offset) {
            throw error(errc::timed_out, name, {}, "too small to be a procsafe segment");
        }
#endif
        s.header_ = static_cast<detail::segment_header*>(s.map_.addr());
        const bool published = detail::bounded_wait(
            timeout, [&] { return s.header_->magic.load(std::memory_order_acquire) != 0; });
        if (!published) {
            throw error(errc::timed_out, name, {}, "its creator never finished initializing it");
        }
        detail::check_header(*s.header_, s.map_.size(), name);
        s.attach();
        return s;
    }

    /// Opens the named segment, or creates it (with `bytes` and `mode`) if it
    /// does not exist. Only the process that created it owns it.
    static segment open_or_create(std::string_view name, std::size_t bytes, unsigned mode = 0600,
                                  std::chrono::milliseconds timeout = default_timeout) {
        for (int attempt = 0;; ++attempt) {
            try {
                return create(name, bytes, mode);
            } catch (const error& e) {
                if (e.code() != errc::already_exists) throw;
            }
            try {
                return open(name, timeout);
            } catch (const error& e) {
                // Removed between our create and open: try again, a few times.
                if (e.code() != errc::not_found || attempt == 8) throw;
            }
        }
    }

    /// A segment of at least `bytes` that fork()ed children inherit. It has no
    /// name and disappears with the last process that maps it. POSIX only.
    static segment anonymous(std::size_t bytes) {
#if defined(PROCSAFE_POSIX)
        segment s(std::string{});
        const std::size_t total = checked_size("(anonymous)", bytes);
        s.map_ = detail::mapping::anonymous(total);
        s.initialize();
        return s;
#else
        (void)bytes;
        throw error(errc::unsupported, "(anonymous)", {},
                    "anonymous segments are inherited by fork(), which Windows does not have: use a named one");
#endif
    }

    /// Removes the named segment. Processes that map it keep their mapping;
    /// the name is free at once. Returns false if there was none.
    /// Throws: invalid_name, permission_denied.
    static bool remove(std::string_view name) {
        detail::check_segment_name(name);
#if defined(PROCSAFE_POSIX)
        if (::shm_unlink(os_name(name).c_str()) == 0) return true;
        if (errno == ENOENT) return false;
        detail::throw_errno(name, "shm_unlink", errno);
#else
        // A Windows section has no name to unlink: it disappears when the
        // last process that maps it closes it. Nothing to do; say so.
        return false;
#endif
    }

    segment(segment&& o) noexcept { swap(o); }
    segment& operator=(segment&& o) noexcept {
        segment tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    segment(const segment&) = delete;
    segment& operator=(const segment&) = delete;

    ~segment() {
        buffer_ = detail::managed_buffer();
        if (owner_ && creator_pid_ == detail::current_pid() && !name_.empty()) remove_if_ours();
    }

    /// Places a new C named `name`, constructed from args, on its own
    /// 128-byte-aligned lines. Process-safe.
    /// Throws: object_exists, invalid_name, out_of_space (the segment is
    /// full), owner_died, timed_out (the directory lock); whatever C's
    /// constructor throws (nothing is left: the name is free again).
    template <class C, class... Args>
    C& construct(std::string_view name, Args&&... args) {
        detail::check_object_name(name_for_errors(), name);
        return obtain<C, lookup::create>(name, extra_for<C>(name, args...), std::forward<Args>(args)...);
    }

    /// The C named `name`, constructed by this or any other process.
    /// Waits up to timeout() for a peer that is still constructing it.
    /// Throws: object_not_found, type_mismatch (at once, even while the peer
    /// constructs), invalid_name, timed_out, owner_died.
    template <class C>
    C& find(std::string_view name) {
        detail::check_object_name(name_for_errors(), name);
        return obtain<C, lookup::find>(name, 0);
    }

    /// The C named `name`, constructing it from args if no process has.
    /// When several processes race, exactly one constructs: the one whose
    /// allocation made the name; the others wait (up to timeout()) and get
    /// the same object. Another type is type_mismatch; the same type with
    /// other arguments (another size of counter_array, say) gets the existing
    /// object, made with its constructor's arguments: check size() if it
    /// matters. Process-safe.
    /// Throws: as construct() and find().
    template <class C, class... Args>
    C& find_or_construct(std::string_view name, Args&&... args) {
        detail::check_object_name(name_for_errors(), name);
        return obtain<C, lookup::find_or_create>(name, extra_for<C>(name, args...), std::forward<Args>(args)...);
    }

    /// True when an object of that name exists (of any type).
    bool contains(std::string_view name) {
        detail::check_object_name(name_for_errors(), name);
        const std::string key(name);
        return with_directory([&] { return buffer_.find<unsigned char>(key.c_str()).first != nullptr; });
    }

    /// The segment's name; empty for an anonymous segment.
    const std::string& name() const noexcept { return name_; }
    /// Bytes mapped, header included.
    std::size_t size() const noexcept { return map_.size(); }
    /// Bytes still free for objects (each counter takes its lines plus ~200
    /// bytes of bookkeeping).
    std::size_t free_memory() {
        return with_directory([&] { return static_cast<std::size_t>(buffer_.get_free_memory()); });
    }
    /// True for the object that created the named segment (and will remove it).
    bool is_owner() const noexcept { return owner_; }
    /// Keeps the segment after this object is destroyed.
    void disown() noexcept { owner_ = false; }
    /// True when the name no longer refers to this mapping: removed, and
    /// perhaps recreated by someone else. Reopen with open() to see the new one.
    bool is_stale() const {
#if defined(PROCSAFE_POSIX)
        if (name_.empty()) return false;
        return map_.stat(name_).st_nlink == 0;
#else
        return false;  // a mapped Windows section cannot be removed under us
#endif
    }
    std::chrono::milliseconds timeout() const noexcept { return timeout_; }
    void set_timeout(std::chrono::milliseconds t) noexcept { timeout_ = t; }

private:
    explicit segment(std::string name) : name_(std::move(name)), creator_pid_(detail::current_pid()) {}

    void swap(segment& o) noexcept {
        std::swap(name_, o.name_);
        map_.swap(o.map_);
        buffer_.swap(o.buffer_);
        std::swap(header_, o.header_);
        std::swap(owner_, o.owner_);
        std::swap(creator_pid_, o.creator_pid_);
        std::swap(timeout_, o.timeout_);
    }

    static std::string os_name(std::string_view name) {
        // Not "/" + std::string(name): GCC 12 at -O3 warns (-Wrestrict, a
        // false positive, GCC bug 105329) and users may build with -Werror.
#if defined(PROCSAFE_POSIX)
        std::string os(1, '/');
        os.append(name);
#else
        constexpr std::string_view global = "Global.";
        std::string os(name.substr(0, global.size()) == global ? "Global\\" : "Local\\");
        os.append(name.substr(name.substr(0, global.size()) == global ? global.size() : 0));
#endif
        return os;
    }

    static std::size_t checked_size(std::string_view name, std::size_t bytes) {
        const std::size_t page = detail::page_size();
        if (bytes == 0 || bytes > (std::size_t{1} << 46)) {
            throw error(errc::invalid_argument, name, {}, "size must be between 1 byte and 64 TiB");
        }
        const std::size_t wanted = bytes + detail::managed_offset;
        return ((wanted + page - 1) / page) * page;
    }

    std::string_view name_for_errors() const noexcept {
        return name_.empty() ? std::string_view("(anonymous)") : std::string_view(name_);
    }

    void initialize() {
        auto* base = static_cast<unsigned char*>(map_.addr());
        header_ = ::new (base) detail::segment_header{};
        header_->layout = detail::layout_version;
        header_->header_size = sizeof(detail::segment_header);
        header_->boost_version = BOOST_VERSION;
        header_->line_size = cache_line;
        header_->total_size = map_.size();
        header_->managed_offset = detail::managed_offset;
        header_->creator_pid = creator_pid_;
        try {
            buffer_ = detail::managed_buffer(boost::interprocess::create_only, base + detail::managed_offset,
                                             map_.size() - detail::managed_offset);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw error(errc::out_of_space, name_for_errors(), {}, e.what());
        }
        PROCSAFE_TEST_HOOK("segment.initializing");
        header_->magic.store(detail::segment_magic, std::memory_order_release);
    }

    void attach() {
        auto* base = static_cast<unsigned char*>(map_.addr());
        try {
            buffer_ = detail::managed_buffer(boost::interprocess::open_only, base + detail::managed_offset,
                                             map_.size() - detail::managed_offset);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw error(errc::incompatible_layout, name_for_errors(), {}, e.what());
        }
    }

    void remove_if_ours() noexcept {
#if defined(PROCSAFE_POSIX)
        // Remove the name only if it still refers to our object: someone may
        // have removed it and created another segment under it.
        struct stat ours {};
        if (::fstat(map_.fd(), &ours) != 0) return;
        auto same = [&](const struct stat& st) { return st.st_ino == ours.st_ino && st.st_dev == ours.st_dev; };
        const std::string os = os_name(name_);
        const int fd = ::shm_open(os.c_str(), O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) return;
        struct stat theirs {};
        const bool still_ours = ::fstat(fd, &theirs) == 0 && same(theirs);
        ::close(fd);
        if (!still_ours) return;
        PROCSAFE_TEST_HOOK("segment.remove.checked");
#if defined(__linux__)
        // Checking, then unlinking by name, would unlink a segment created
        // under the name in between. So the name is first moved aside in one
        // step (renameat2, RENAME_NOREPLACE, in /dev/shm where glibc keeps
        // POSIX shared memory), and what was moved is looked at: ours is
        // removed, another is put back. Only if the name was taken yet again
        // in that instant does the other segment lose its name (its owner's
        // is_stale() then says so).
        const int dir = ::open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir >= 0) {
            // Not a valid segment name (it starts with '.'): procsafe never makes one.
            const std::string aside = "." + name_ + ".removing." + std::to_string(detail::current_pid());
            if (::renameat2(dir, name_.c_str(), dir, aside.c_str(), RENAME_NOREPLACE) == 0) {
                struct stat moved {};
                const bool ours_moved = ::fstatat(dir, aside.c_str(), &moved, 0) == 0 && same(moved);
                if (ours_moved || ::renameat2(dir, aside.c_str(), dir, name_.c_str(), RENAME_NOREPLACE) != 0) {
                    ::unlinkat(dir, aside.c_str(), 0);
                }
            }
            ::close(dir);
            return;
        }
#endif
        ::shm_unlink(os.c_str());
#endif
    }

    enum class lookup { find, create, find_or_create };

    template <class C>
    static constexpr std::size_t object_align() {
        return alignof(C) > cache_line ? alignof(C) : cache_line;
    }
    template <class C>
    static constexpr std::size_t block_size() {
        return sizeof(detail::object_header) + object_align<C>() - 1 + sizeof(C);
    }
    static detail::object_header* header_of(unsigned char* block) noexcept {
        return reinterpret_cast<detail::object_header*>(block);
    }
    template <class C>
    static std::size_t object_offset(const unsigned char* block) noexcept {
        // Boost 1.74 does not honour alignof(C) > 16 inside a segment
        // (boostorg/interprocess #217): align the object ourselves. Mappings
        // start on page boundaries, so the offset is the same in every process.
        const auto p = reinterpret_cast<std::uintptr_t>(block) + sizeof(detail::object_header);
        const std::uintptr_t align = object_align<C>();
        return static_cast<std::size_t>((p + align - 1) / align * align - reinterpret_cast<std::uintptr_t>(block));
    }
    template <class C>
    static C* object_of(unsigned char* block) noexcept {
        return reinterpret_cast<C*>(block + object_offset<C>(block));
    }

    /// Bytes an object of variable size (a sharded counter's slots, an
    /// array's elements) needs after itself: C::procsafe_extra_bytes(args...),
    /// which also validates the arguments.
    template <class C, class... Args>
    std::size_t extra_for(std::string_view name, const Args&... args) const {
        if constexpr (requires { C::procsafe_extra_bytes(args...); }) {
            try {
                return C::procsafe_extra_bytes(args...);
            } catch (const error& e) {
                throw error(e.code_value(), name_for_errors(), name, e.detail());
            }
        } else {
            return 0;
        }
    }

    /// What the directory said about a name, read under its lock: the
    /// block's header is copied there, because only under the lock is the
    /// block sure not to be freed (by a constructor that threw).
    struct located {
        unsigned char* block = nullptr;  // nullptr: no such name
        std::size_t length = 0;
        bool mine = false;  // this process allocated it, and constructs in it
        std::uint32_t state = 0, magic = 0, layout = 0, constructor_pid = 0, offset = 0;
        detail::type_facts facts{};
    };

    /// Under the directory lock: finds the named block, or allocates it (as
    /// `how` allows) and claims it for C before the lock is released, so
    /// that no other process ever constructs in it.
    template <class C>
    located locate(std::string_view name, lookup how, std::size_t extra) {
        const std::string key(name);
        return with_directory([&]() -> located {
            PROCSAFE_TEST_HOOK("directory.locked");
            located at;
            if (how != lookup::create) {
                const auto [block, length] = buffer_.find<unsigned char>(key.c_str());
                if (block != nullptr || how == lookup::find) {
                    at.block = block;
                    at.length = length;
                    if (block != nullptr && length >= sizeof(detail::object_header)) {
                        const detail::object_header* h = header_of(block);
                        at.state = h->state.load(std::memory_order_acquire);
                        at.magic = h->magic;
                        at.layout = h->layout;
                        at.constructor_pid = h->constructor_pid;
                        at.offset = h->object_offset;
                        at.facts = h->facts;
                    }
                    return at;
                }
            }
            const std::size_t bytes = block_size<C>() + extra;
            directory_change change(*header_);
            try {
                at.block = buffer_.construct<unsigned char>(key.c_str())[bytes](0);
            } catch (const boost::interprocess::interprocess_exception& e) {
                if (e.get_error_code() == boost::interprocess::already_exists_error) {
                    throw error(errc::object_exists, name_for_errors(), name, "an object of that name exists");
                }
                throw error(errc::out_of_space, name_for_errors(), name,
                            "the segment has no room for " + std::to_string(bytes) + " more bytes (" +
                                std::to_string(buffer_.get_free_memory()) + " free)");
            }
            at.length = bytes;
            at.mine = true;
            detail::object_header* h = header_of(at.block);
            h->magic = detail::object_magic;
            h->layout = detail::layout_version;
            h->constructor_pid = detail::current_pid();
            h->facts = detail::object_traits<C>::facts();
            h->object_offset = static_cast<std::uint32_t>(object_offset<C>(at.block));
            h->state.store(detail::state_constructing, std::memory_order_release);
            return at;
        });
    }

    /// construct / find / find_or_construct: locate the name; construct in a
    /// block of our own; otherwise type-check what is there and wait (up to
    /// timeout()) for its constructor, looking the name up again each time.
    template <class C, lookup How, class... Args>
    C& obtain(std::string_view name, std::size_t extra, Args&&... args) {
        const auto deadline = detail::deadline_after(timeout_);
        for (unsigned round = 0;; ++round) {
            const located at = locate<C>(name, How, extra);
            if constexpr (How != lookup::find) {
                if (at.mine) return build<C>(at.block, name, std::forward<Args>(args)...);
            }
            if (at.block == nullptr) throw error(errc::object_not_found, name_for_errors(), name, "no such object");
            if (round == 0) PROCSAFE_TEST_HOOK("object.found");
            if (C* obj = ready<C>(at, name)) return *obj;
            if (detail::wait_clock::now() >= deadline) {
                throw error(errc::timed_out, name_for_errors(), name,
                            "still being constructed (by pid " + std::to_string(at.constructor_pid) + ") after " +
                                std::to_string(timeout_.count()) + " ms");
            }
            PROCSAFE_TEST_HOOK("object.waiting");
            if (round < 64) std::this_thread::yield();
            else std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }

    /// Runs C's constructor in a block this process claimed, and publishes it.
    template <class C, class... Args>
    C& build(unsigned char* block, std::string_view name, Args&&... args) {
        PROCSAFE_TEST_HOOK("object.allocated");
        C* obj = object_of<C>(block);
        assert(reinterpret_cast<std::uintptr_t>(obj) % object_align<C>() == 0);
        try {
            ::new (static_cast<void*>(obj)) C(std::forward<Args>(args)...);
        } catch (...) {
            // Give the name back. Peers waiting for the object look the name
            // up again under the lock and see it gone; none still holds the
            // block. If even the directory cannot be had, the block stays
            // "constructing" by this pid: peers time out, then get owner_died.
            const std::string key(name);
            try {
                with_directory([&] {
                    directory_change change(*header_);
                    buffer_.destroy<unsigned char>(key.c_str());
                });
            } catch (const error&) {
            }
            throw;
        }
        header_of(block)->state.store(detail::state_ready, std::memory_order_release);
        return *obj;
    }

    /// The object in a block someone else claimed: type-checked at once;
    /// nullptr while its constructor still runs.
    template <class C>
    C* ready(const located& at, std::string_view name) {
        static constexpr detail::type_facts want = detail::object_traits<C>::facts();
        if (at.length < sizeof(detail::object_header)) {
            throw error(errc::type_mismatch, name_for_errors(), name,
                        "holds a block of " + std::to_string(at.length) + " bytes, not a procsafe object");
        }
        if (at.magic != detail::object_magic || at.layout != detail::layout_version) {
            throw error(errc::incompatible_layout, name_for_errors(), name, "object header of another layout version");
        }
        if (!(at.facts == want)) {
            throw error(errc::type_mismatch, name_for_errors(), name,
                        "holds " + detail::describe(at.facts) + ", asked for " + detail::describe(want));
        }
        if (at.state == detail::state_constructing) {
            if (detail::process_gone(at.constructor_pid)) {
                throw error(errc::owner_died, name_for_errors(), name,
                            "the process constructing it (pid " + std::to_string(at.constructor_pid) +
                                ") died; destroy the segment or use another name");
            }
            return nullptr;
        }
        const std::size_t offset = object_offset<C>(at.block);
        if (at.state != detail::state_ready || at.offset != offset || offset + sizeof(C) > at.length) {
            throw error(errc::incompatible_layout, name_for_errors(), name,
                        "its header disagrees with its block (" + std::to_string(at.length) + " bytes)");
        }
        C* obj = object_of<C>(at.block);
        if constexpr (requires(const C& c, std::size_t n) { c.procsafe_fits(n); }) {
            // A variable-size object: its own header says how much it spans.
            if (!obj->procsafe_fits(at.length - offset - sizeof(C))) {
                throw error(errc::incompatible_layout, name_for_errors(), name,
                            "its header claims more storage than its block holds");
            }
        }
        return obj;
    }

    std::string name_;
    detail::mapping map_;
    detail::managed_buffer buffer_;
    detail::segment_header* header_ = nullptr;
    bool owner_ = false;
    std::uint32_t creator_pid_ = 0;
    std::chrono::milliseconds timeout_ = default_timeout;
};

}  // namespace procsafe
