// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/robust_mutex.hpp>
#include <procsafe/error.hpp>

#if defined(PROCSAFE_POSIX)
#include <procsafe/detail/shm_posix.hpp>
#include <sys/types.h>
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
    /// Runs f with the directory lock held. A process that died while
    /// changing the directory (Boost's allocator and name index) may have left
    /// it half-changed: the segment is then refused from here on.
    template <class F>
    decltype(auto) with_directory(F&& f) {
        if (header_->poisoned.load(std::memory_order_acquire) != 0) throw poisoned_error();
        detail::robust_lock<detail::robust_mutex> guard(header_->directory);
        if (guard.recovered() && header_->directory_dirty.load(std::memory_order_relaxed) != 0) {
            header_->poisoned.store(1, std::memory_order_release);
            throw poisoned_error();
        }
        return f();
    }

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
    /// full), owner_died; whatever C's constructor throws (nothing is left).
    template <class C, class... Args>
    C& construct(std::string_view name, Args&&... args) {
        detail::check_object_name(name_for_errors(), name);
        unsigned char* block = allocate<C>(name, /*or_find=*/false, extra_for<C>(name, args...));
        return place<C>(block, name, std::forward<Args>(args)...);
    }

    /// The C named `name`, constructed by this or any other process.
    /// Waits up to timeout() for a peer that is still constructing it.
    /// Throws: object_not_found, type_mismatch, invalid_name, timed_out,
    /// owner_died.
    template <class C>
    C& find(std::string_view name) {
        detail::check_object_name(name_for_errors(), name);
        const std::string key(name);
        auto [block, length] = with_directory([&] {
            return buffer_.find<unsigned char>(key.c_str());
        });
        if (block == nullptr) throw error(errc::object_not_found, name_for_errors(), name, "no such object");
        return validated<C>(block, length, name);
    }

    /// The C named `name`, constructing it from args if no process has.
    /// When several processes race, exactly one constructs; the others wait
    /// (up to timeout()) and get the same object.
    /// Throws: as construct() and find().
    template <class C, class... Args>
    C& find_or_construct(std::string_view name, Args&&... args) {
        detail::check_object_name(name_for_errors(), name);
        unsigned char* block = allocate<C>(name, /*or_find=*/true, extra_for<C>(name, args...));
        return place<C>(block, name, std::forward<Args>(args)...);
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
        // Unlink only if the name still refers to our object: someone may have
        // removed it and created another segment under the same name.
        const std::string os = os_name(name_);
        const int fd = ::shm_open(os.c_str(), O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) return;
        struct stat theirs {}, ours {};
        const bool same = ::fstat(fd, &theirs) == 0 && ::fstat(map_.fd(), &ours) == 0 &&
                          theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev;
        ::close(fd);
        if (same) ::shm_unlink(os.c_str());
#endif
    }

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
    static C* object_of(unsigned char* block) noexcept {
        // Boost 1.74 does not honour alignof(C) > 16 inside a segment
        // (boostorg/interprocess #217): align the object ourselves.
        unsigned char* p = block + sizeof(detail::object_header);
        const auto misalign = reinterpret_cast<std::uintptr_t>(p) & (std::uintptr_t{object_align<C>()} - 1);
        return reinterpret_cast<C*>(misalign == 0 ? p : p + (object_align<C>() - misalign));
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

    /// Allocates (or, with or_find, finds) the named block under the
    /// directory lock. The block is zero-filled, so its state is empty.
    template <class C>
    unsigned char* allocate(std::string_view name, bool or_find, std::size_t extra) {
        const std::string key(name);
        const std::size_t bytes = block_size<C>() + extra;
        return with_directory([&]() -> unsigned char* {
            header_->directory_dirty.store(1, std::memory_order_relaxed);
            try {
                unsigned char* block = or_find ? buffer_.find_or_construct<unsigned char>(key.c_str())[bytes](0)
                                               : buffer_.construct<unsigned char>(key.c_str())[bytes](0);
                header_->directory_dirty.store(0, std::memory_order_release);
                return block;
            } catch (const boost::interprocess::interprocess_exception& e) {
                header_->directory_dirty.store(0, std::memory_order_release);
                if (e.get_error_code() == boost::interprocess::already_exists_error) {
                    throw error(errc::object_exists, name_for_errors(), name, "an object of that name exists");
                }
                throw error(errc::out_of_space, name_for_errors(), name,
                            "the segment has no room for " + std::to_string(bytes) + " more bytes (" +
                                std::to_string(buffer_.get_free_memory()) + " free)");
            }
        });
    }

    /// Constructs C in the block if nobody has started to; otherwise waits
    /// for the process that did and validates the type. (Even after
    /// construct() made the name, a concurrent find_or_construct may win the
    /// race to construct: same object, same type check.)
    template <class C, class... Args>
    C& place(unsigned char* block, std::string_view name, Args&&... args) {
        detail::object_header* h = header_of(block);
        std::uint32_t expected = detail::state_empty;
        if (!h->state.compare_exchange_strong(expected, detail::state_constructing, std::memory_order_acquire)) {
            return validated<C>(block, block_size_of(block), name);
        }
        h->magic = detail::object_magic;
        h->layout = detail::layout_version;
        h->constructor_pid = detail::current_pid();
        h->facts = detail::object_traits<C>::facts();
        C* obj = object_of<C>(block);
        assert(reinterpret_cast<std::uintptr_t>(obj) % cache_line == 0);
        try {
            ::new (static_cast<void*>(obj)) C(std::forward<Args>(args)...);
        } catch (...) {
            const std::string key(name);
            with_directory([&] {
                header_->directory_dirty.store(1, std::memory_order_relaxed);
                buffer_.destroy<unsigned char>(key.c_str());
                header_->directory_dirty.store(0, std::memory_order_release);
            });
            throw;
        }
        h->state.store(detail::state_ready, std::memory_order_release);
        return *obj;
    }

    static std::size_t block_size_of(unsigned char* block) noexcept {
        return detail::managed_buffer::segment_manager::get_instance_length(block);
    }

    template <class C>
    C& validated(unsigned char* block, std::size_t length, std::string_view name) {
        static constexpr detail::type_facts want = detail::object_traits<C>::facts();
        if (length < sizeof(detail::object_header)) {
            throw error(errc::type_mismatch, name_for_errors(), name,
                        "holds a block of " + std::to_string(length) + " bytes, not a procsafe object");
        }
        detail::object_header* h = header_of(block);
        const bool ready = detail::bounded_wait(timeout_, [&] {
            const std::uint32_t s = h->state.load(std::memory_order_acquire);
            if (s == detail::state_ready) return true;
            if (s == detail::state_constructing && detail::process_gone(h->constructor_pid)) {
                throw error(errc::owner_died, name_for_errors(), name,
                            "the process constructing it (pid " + std::to_string(h->constructor_pid) +
                                ") died; destroy the segment or use another name");
            }
            return false;
        });
        if (!ready) {
            throw error(errc::timed_out, name_for_errors(), name,
                        "still being constructed after " + std::to_string(timeout_.count()) + " ms");
        }
        if (h->magic != detail::object_magic || h->layout != detail::layout_version) {
            throw error(errc::incompatible_layout, name_for_errors(), name,
                        "object header of another layout version");
        }
        if (!(h->facts == want) || length < block_size<C>()) {
            throw error(errc::type_mismatch, name_for_errors(), name,
                        "holds " + detail::describe(h->facts) + ", asked for " + detail::describe(want));
        }
        C* obj = object_of<C>(block);
        if constexpr (requires(const C& c, std::size_t n) { c.procsafe_fits(n); }) {
            // A variable-size object: its own header says how much it spans.
            const auto used = static_cast<std::size_t>(reinterpret_cast<unsigned char*>(obj) - block) + sizeof(C);
            if (!obj->procsafe_fits(length - used)) {
                throw error(errc::incompatible_layout, name_for_errors(), name,
                            "its header claims more storage than its block holds");
            }
        }
        return *obj;
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
