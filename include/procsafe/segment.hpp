// procsafe/segment.hpp: named and anonymous segments; construct, find, find_or_construct.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/detail/catalog.hpp>
#include <procsafe/detail/directory.hpp>
#include <procsafe/detail/mapping.hpp>
#include <procsafe/detail/names.hpp>
#include <procsafe/detail/object_block.hpp>
#include <procsafe/detail/object_names.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/segment_header.hpp>
#include <procsafe/detail/thread_cache.hpp>
#include <procsafe/error.hpp>
#include <procsafe/metadata.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace procsafe {

/// How segment::create treats a name that is taken.
enum class create_mode {
    exclusive,       ///< segment_exists (create's default)
    replace_orphan,  ///< replace a segment whose creator is gone (a restart after a crash)
};

template <class C>
class family;

/// Whether one object of a segment is in the exposition now (`procsafe
/// export` / `serve`, prometheus_exposition, Python's ProcsafeCollector):
/// a flag in the object's header in shared memory, so every process and
/// every reader sees it. What segment::export_switch returns; Prometheus
/// clients' remove() of a label set, for an object that is never freed.
///
/// A hidden object is only left out of the exposition: it keeps its name,
/// its exported names (no other object can take them: showing it again
/// never clashes), its values, and its place in segment_view::objects()
/// (object_info::exported false) and `procsafe show`; every operation on
/// it works as before. Writers are not slowed: the flag lives in the
/// object's header, not on the object's lines.
///
/// Copyable; valid while the segment is mapped by this process. Lock-free.
class export_switch {
public:
    export_switch() = default;
    /// True unless the object was taken out of the exposition.
    bool exported() const noexcept { return flag_->load(std::memory_order_acquire) == detail::export_shown; }
    /// Puts the object in the exposition (true) or takes it out (false);
    /// returns whether it was exported before. A store only when the flag
    /// changes (a load otherwise: calling it on every use costs no write).
    bool set(bool exported) const noexcept {  // const: a handle, as std::atomic_ref
        const auto want = static_cast<std::uint8_t>(exported ? detail::export_shown : detail::export_hidden);
        const std::uint8_t was = flag_->load(std::memory_order_acquire);
        if (was == want) return was == detail::export_shown;
        return flag_->exchange(want, std::memory_order_acq_rel) == detail::export_shown;
    }
    /// False for a default-constructed switch (no object).
    explicit operator bool() const noexcept { return flag_ != nullptr; }

private:
    explicit export_switch(std::atomic<std::uint8_t>* flag) noexcept : flag_(flag) {}
    std::atomic<std::uint8_t>* flag_ = nullptr;
    friend class segment;
};

/// A mapping of shared memory that holds named procsafe objects.
///
/// Named segments are POSIX shared memory objects (/dev/shm/NAME) or Win32
/// sections, created exclusively with mode 0600 (whatever the umask) and with
/// their pages reserved, so a full /dev/shm is an out_of_space error rather
/// than a SIGBUS. Anonymous segments are inherited by fork() and vanish with
/// the last process. Every segment starts with a header (magic, layout
/// version, Boost version, line size) that open() validates, waiting at most
/// timeout() for a creator that is still setting it up.
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
public:
    /// How long open(), find() and the directory lock wait for a peer.
    static constexpr std::chrono::milliseconds default_timeout = detail::default_timeout;

    /// Creates a named segment of at least `bytes` (rounded up to pages).
    /// `mode` is applied exactly (umask does not widen or narrow it).
    /// Throws: segment_exists, invalid_name, invalid_argument, out_of_space,
    /// permission_denied.
    [[nodiscard]] static segment create(std::string_view name, std::size_t bytes, unsigned mode = 0600);

    /// Creates a named segment as create() does; with create_mode::replace_orphan,
    /// a name held by a procsafe segment whose creator is gone (it crashed,
    /// was killed, or exited without removing it: see below) is replaced: the
    /// old segment is removed and a new one created, in one step among
    /// procsafe's removers (two processes restarting at once: one replaces
    /// it, the other finds the new one's creator alive). Never replaced: a
    /// segment whose creator runs; one whose creator cannot be judged from
    /// here (another PID namespace: its pid means nothing in this one); an
    /// object that is not procsafe's. Processes that still map the old
    /// segment keep it (their is_stale() says so).
    ///
    /// "Gone": the creator's pid is gone, a zombie, or now names another
    /// process (another start time). A segment whose creator never wrote its
    /// header (it died within create()) counts as gone once it is older than
    /// `timeout`.
    /// Throws: as create(); segment_exists naming why the segment there was
    /// not replaced; bad_magic (not procsafe's); timed_out (the removal lock).
    [[nodiscard]] static segment create(std::string_view name, std::size_t bytes, unsigned mode, create_mode how,
                                        std::chrono::milliseconds timeout = default_timeout);

    /// Opens a named segment made by procsafe, waiting up to `timeout` for a
    /// creator that is still initializing it.
    /// Throws: segment_not_found, invalid_name, permission_denied (also when
    /// another user owns it), bad_magic, incompatible_layout, timed_out.
    [[nodiscard]] static segment open(std::string_view name, std::chrono::milliseconds timeout = default_timeout);

    /// Opens the named segment, or creates it (with `bytes` and `mode`) if it
    /// does not exist. Only the process that created it owns it.
    [[nodiscard]] static segment open_or_create(std::string_view name, std::size_t bytes, unsigned mode = 0600,
                                                std::chrono::milliseconds timeout = default_timeout);

    /// A segment of at least `bytes` that fork()ed children inherit. It has no
    /// name and disappears with the last process that maps it. POSIX only.
    /// Throws: invalid_argument, unsupported (Windows).
    [[nodiscard]] static segment anonymous(std::size_t bytes);

    /// True when `name` is a valid segment name: a letter, then letters,
    /// digits, '_', '-', '.'; at most 200 characters.  Never throws.
    static bool valid_name(std::string_view name) noexcept;

    /// Removes the named segment. Processes that map it keep their mapping;
    /// the name is free at once. Returns false if there was none (always on
    /// Windows, where a section goes with its last handle). procsafe's
    /// removers of one host take turns (a lock on /dev/shm, held for one
    /// check and one unlink), waited for up to `timeout`.
    /// Throws: invalid_name, permission_denied, timed_out.
    static bool remove(std::string_view name, std::chrono::milliseconds timeout = default_timeout);

    segment(segment&& o) noexcept { swap(o); }
    segment& operator=(segment&& o) noexcept {
        segment tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    segment(const segment&) = delete;
    segment& operator=(const segment&) = delete;

    ~segment();

    /// Places a new C named `name`, constructed from args, on its own
    /// 128-byte-aligned lines. Process-safe.
    /// Throws: object_exists, invalid_name, out_of_space (the segment is
    /// full), owner_died, timed_out (the directory lock); whatever C's
    /// constructor throws (nothing is left: the name is free again).
    template <class C, class... Args>
        requires(!detail::metadata_first<Args...>)
    C& construct(std::string_view name, Args&&... args) {
        return place<C, detail::lookup::create>(name, nullptr, std::forward<Args>(args)...);
    }
    /// As construct(name, args...), with monitoring metadata stored with the
    /// object (procsafe/metadata.hpp). Throws also: invalid_argument for bad
    /// metadata (a label's values must be one per element of a counter_array).
    template <class C, class... Args>
    C& construct(std::string_view name, const metadata& meta, Args&&... args) {
        return place<C, detail::lookup::create>(name, &meta, std::forward<Args>(args)...);
    }

    /// The C named `name`, constructed by this or any other process.
    /// Waits up to timeout() for a peer that is still constructing it.
    /// Throws: object_not_found, type_mismatch (at once, even while the peer
    /// constructs), invalid_name, timed_out, owner_died.
    template <class C>
    C& find(std::string_view name) {
        detail::check_object_name(dir_.name(), name);
        return detail::obtain<C, detail::lookup::find>(dir_, name, nullptr, 0, 0);
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
        requires(!detail::metadata_first<Args...>)
    C& find_or_construct(std::string_view name, Args&&... args) {
        return place<C, detail::lookup::find_or_create>(name, nullptr, std::forward<Args>(args)...);
    }
    /// As find_or_construct(name, args...), with metadata for the object if
    /// this call constructs it (an existing object keeps its own).
    template <class C, class... Args>
    C& find_or_construct(std::string_view name, const metadata& meta, Args&&... args) {
        return place<C, detail::lookup::find_or_create>(name, &meta, std::forward<Args>(args)...);
    }

    /// True when an object of that name exists (of any type).
    /// Cost: takes the directory lock.
    bool contains(std::string_view name);

    /// The export_switch of the object `name` (of any type, constructed by
    /// any process): whether the exposition shows it. Cost: takes the
    /// directory lock; the switch itself is lock-free (keep it for a hot
    /// path: a constructed object is never freed).
    /// Throws: object_not_found (also while its constructor still runs),
    /// invalid_name, incompatible_layout (not a procsafe object's block),
    /// timed_out (the directory lock).
    export_switch export_switch_of(std::string_view name);
    /// export_switch_of(name).set(exported): takes the object out of the
    /// exposition (false) or puts it back (true); returns whether it was
    /// exported before. Objects are never freed: this is how a series is
    /// removed (family::remove) and comes back (family::labels).
    /// Throws: as export_switch_of.
    bool set_exported(std::string_view name, bool exported) { return export_switch_of(name).set(exported); }
    /// export_switch_of(name).exported().  Throws: as export_switch_of.
    bool exported(std::string_view name) { return export_switch_of(name).exported(); }

    /// The segment's name; empty for an anonymous one.
    const std::string& name() const noexcept { return name_; }
    /// Bytes mapped, header included.
    std::size_t size() const noexcept { return map_.size(); }
    /// Where this process maps the segment (segment_view::of reads it there:
    /// a server can export an anonymous segment it shares with its workers).
    const void* data() const noexcept { return map_.addr(); }
    /// Bytes still free for objects (each counter takes its lines plus ~200
    /// bytes of bookkeeping). Cost: takes the directory lock.
    std::size_t free_memory();
    /// True for the object that created the named segment (and will remove it).
    bool is_owner() const noexcept { return owner_; }
    /// Keeps the segment after this object is destroyed.
    void disown() noexcept { owner_ = false; }
    /// True when the name no longer refers to this mapping: removed, and
    /// perhaps recreated by someone else. Reopen with open() to see the new
    /// one. Always false on Windows. Cost: one system call (fstat).
    bool is_stale() const;
    /// How long find() and the directory lock wait for a peer.
    std::chrono::milliseconds timeout() const noexcept { return dir_.timeout(); }
    void set_timeout(std::chrono::milliseconds t) noexcept { dir_.set_timeout(t); }

private:
    segment(std::string name, detail::mapping map);

    void swap(segment& o) noexcept {
        std::swap(name_, o.name_);
        map_.swap(o.map_);
        dir_.swap(o.dir_);
        std::swap(owner_, o.owner_);
        std::swap(creator_pid_, o.creator_pid_);
    }

    template <class C, detail::lookup How, class... Args>
    C& place(std::string_view name, const metadata* meta, Args&&... args) {
        detail::check_object_name(dir_.name(), name);
        if (meta != nullptr) {
            detail::check_metadata(*meta, dir_.name(), name);
            detail::check_labels<C>(*meta, dir_.name(), name, args...);
        }
        const std::size_t extra = detail::extra_bytes_for<C>(dir_.name(), name, args...);
        return detail::obtain<C, How>(dir_, name, meta, 0, extra, std::forward<Args>(args)...);
    }

    /// Why the object behind `fd` is not an orphan to replace ("" if it is).
    static std::string orphan_test(std::string_view name, int fd, std::chrono::milliseconds timeout);

    /// A family's child (procsafe::family): its metadata made by the family,
    /// the family's bound on its children checked under the directory lock.
    template <class C, class... Args>
    C& place_child(std::string_view name, const metadata& meta, std::size_t max_series, Args&&... args) {
        detail::check_object_name(dir_.name(), name);
        detail::check_metadata(meta, dir_.name(), name);
        const std::size_t extra = detail::extra_bytes_for<C>(dir_.name(), name, args...);
        return detail::obtain<C, detail::lookup::find_or_create>(dir_, name, &meta, max_series, extra,
                                                                  std::forward<Args>(args)...);
    }
    template <class>
    friend class family;

    static std::size_t checked_size(std::string_view name, std::size_t bytes);

    /// Writes the header and the directory of a fresh mapping, then publishes it.
    void format();

    std::string name_;
    detail::mapping map_;
    detail::directory dir_;
    bool owner_ = false;
    std::uint32_t creator_pid_ = 0;
};

#if PROCSAFE_OUT_OF_LINE
PROCSAFE_DECL segment segment::create(std::string_view name, std::size_t bytes, unsigned mode) {
    detail::check_segment_name(name);
    const std::size_t total = checked_size(name, bytes);
    if ((mode & ~0666u) != 0 || (mode & 0600u) != 0600u) {
        throw error(errc::invalid_argument, name, {},
                    "mode must give the owner read and write, and nothing but read/write bits");
    }
    segment s{std::string(name), detail::mapping::create(name, total, mode)};
    s.owner_ = true;
    s.format();
    return s;
}

PROCSAFE_DECL segment segment::create(std::string_view name, std::size_t bytes, unsigned mode, create_mode how,
                                      std::chrono::milliseconds timeout) {
    if (how != create_mode::replace_orphan) return create(name, bytes, mode);
    detail::check_segment_name(name);
    const auto deadline = detail::deadline_after(timeout);
    for (int attempt = 0;; ++attempt) {
        try {
            return create(name, bytes, mode);
        } catch (const error& e) {
            if (e.code() != errc::segment_exists || attempt == 8) throw;
        }
        const std::string why = detail::mapping::remove_if(name, deadline, [&](int fd) { return orphan_test(name, fd, timeout); });
        if (!why.empty()) throw error(errc::segment_exists, name, {}, why + ": not replaced");
    }
}

PROCSAFE_DECL segment segment::open(std::string_view name, std::chrono::milliseconds timeout) {
    detail::check_segment_name(name);
    // One deadline for every wait below (saturated: milliseconds::max()
    // is "no deadline", not an overflow).
    const auto deadline = detail::deadline_after(timeout);
    segment s{std::string(name), detail::mapping::open(name, detail::managed_offset, deadline)};
    auto& h = detail::await_header(s.map_.addr(), s.map_.size(), name, deadline);
    s.dir_ = detail::directory::attach(h, s.map_.size(), s.name_);
    s.dir_.set_timeout(timeout);
    return s;
}

PROCSAFE_DECL segment segment::open_or_create(std::string_view name, std::size_t bytes, unsigned mode,
                                              std::chrono::milliseconds timeout) {
    for (int attempt = 0;; ++attempt) {
        try {
            return create(name, bytes, mode);
        } catch (const error& e) {
            if (e.code() != errc::segment_exists) throw;
        }
        try {
            return open(name, timeout);
        } catch (const error& e) {
            // Removed between our create and open: try again, a few times.
            if (e.code() != errc::segment_not_found || attempt == 8) throw;
        }
    }
}

PROCSAFE_DECL segment segment::anonymous(std::size_t bytes) {
    segment s{std::string{}, detail::mapping::anonymous(checked_size("(anonymous)", bytes))};
    s.format();
    return s;
}

PROCSAFE_DECL bool segment::valid_name(std::string_view name) noexcept {
    try {
        detail::check_segment_name(name);
        return true;
    } catch (...) {
        return false;
    }
}

PROCSAFE_DECL bool segment::remove(std::string_view name, std::chrono::milliseconds timeout) {
    detail::check_segment_name(name);
    return detail::mapping::remove(name, detail::deadline_after(timeout));
}

PROCSAFE_DECL segment::~segment() {
    if (map_.addr() == nullptr) return;  // moved from
    const auto deadline = detail::deadline_after(dir_.timeout());
    dir_ = detail::directory();
    if (owner_ && creator_pid_ == detail::current_pid() && !name_.empty()) map_.remove_if_same(name_, deadline);
    detail::unregister_mapping(map_.addr());
    detail::forget_exported_index(static_cast<const unsigned char*>(map_.addr()) );
    // Slots that threads cached for objects in this mapping are not
    // cleared: each entry is checked against its object's incarnation,
    // which another object mapped later at the same address does not share.
    { detail::mapping gone = std::move(map_); }
}

PROCSAFE_DECL bool segment::contains(std::string_view name) {
    detail::check_object_name(dir_.name(), name);
    const std::string key(name);
    return dir_.locked([&] { return dir_.buffer().find<unsigned char>(key.c_str()).first != nullptr; });
}

PROCSAFE_DECL export_switch segment::export_switch_of(std::string_view name) {
    detail::check_object_name(dir_.name(), name);
    const std::string key(name);
    auto* flag = dir_.locked([&]() -> std::atomic<std::uint8_t>* {
        const auto [block, length] = dir_.buffer().find<unsigned char>(key.c_str());
        if (block == nullptr) throw error(errc::object_not_found, dir_.name(), name, "no such object");
        const detail::object_header* h = detail::header_of(block);
        if (length < sizeof(detail::object_header) || h->magic != detail::object_magic || h->layout != detail::layout_version) {
            throw error(errc::incompatible_layout, dir_.name(), name, "not a procsafe object of this layout");
        }
        // Only a constructed object: a block whose constructor still runs is
        // freed if it throws, and a switch into it would write into whatever
        // is allocated there next. A ready block is never freed.
        if (h->state.load(std::memory_order_acquire) != detail::state_ready) {
            throw error(errc::object_not_found, dir_.name(), name,
                        "still being constructed: its export switch exists once it is constructed");
        }
        return &detail::header_of(block)->hidden;
    });
    return export_switch(flag);
}

PROCSAFE_DECL std::size_t segment::free_memory() { return dir_.free_memory(); }

PROCSAFE_DECL bool segment::is_stale() const { return !name_.empty() && map_.is_stale(name_); }

PROCSAFE_DECL segment::segment(std::string name, detail::mapping map)
    : name_(std::move(name)), map_(std::move(map)), creator_pid_(detail::current_pid()) {
    detail::register_mapping(map_.addr(), map_.size(), name_.empty() ? "(anonymous)" : name_);  // for errors' names
}

PROCSAFE_DECL std::string segment::orphan_test(std::string_view name, int fd, std::chrono::milliseconds timeout) {
#if defined(PROCSAFE_POSIX)
    struct stat st {};
    if (::fstat(fd, &st) != 0) detail::throw_errno(name, "fstat", errno);
    alignas(detail::segment_header) unsigned char bytes[sizeof(detail::segment_header)]{};
    const ssize_t n = ::pread(fd, bytes, sizeof bytes, 0);  // a copy: nothing mapped, nothing to fault on
    const auto& h = *reinterpret_cast<const detail::segment_header*>(bytes);
    const std::uint64_t magic = n >= 8 ? h.magic.load(std::memory_order_relaxed) : 0;  // the rest is 0s if short
    if (magic != 0 && magic != detail::segment_magic) {
        throw error(errc::bad_magic, name, {}, "not a procsafe segment (wrong magic number): not replaced");
    }
    if (magic == 0 && h.creator_pid == 0) {  // its creator died within create(), or is still in it
        const auto age = std::chrono::system_clock::now() -
                         std::chrono::system_clock::time_point(std::chrono::seconds(st.st_ctim.tv_sec) +
                                                               std::chrono::nanoseconds(st.st_ctim.tv_nsec));
        if (age < timeout) return "never initialized, and younger than the timeout (its creator may still be making it)";
        return {};
    }
    // An older layout has the creator's pid at the same place, and no start
    // time or namespace: judged by the pid alone.
    const bool current = h.layout == detail::layout_version;
    switch (detail::judge_creator(h.creator_pid, current ? h.creator_pidns : 0u, current ? h.creator_start : 0u)) {
        case detail::creator_state::gone: return {};
        case detail::creator_state::alive:
            return "its creator (pid " + std::to_string(h.creator_pid) + ") still runs";
        case detail::creator_state::unknown: break;
    }
    return "its creator (pid " + std::to_string(h.creator_pid) +
           ") is in another PID namespace: whether it runs cannot be told from here";
#else
    (void)name, (void)fd, (void)timeout;
    return "not on this platform";
#endif
}

PROCSAFE_DECL std::size_t segment::checked_size(std::string_view name, std::size_t bytes) {
    const std::size_t page = detail::page_size();
    if (bytes == 0 || bytes > (std::size_t{1} << 46)) {
        throw error(errc::invalid_argument, name, {}, "size must be between 1 byte and 64 TiB");
    }
    const std::size_t wanted = bytes + detail::managed_offset;
    return ((wanted + page - 1) / page) * page;
}

PROCSAFE_DECL void segment::format() {
    auto& h = detail::write_header(map_.addr(), map_.size(), creator_pid_);
    dir_ = detail::directory::format(h, map_.size(), name_.empty() ? "(anonymous)" : name_);
    detail::catalog_writer(h, dir_).format();
    PROCSAFE_TEST_HOOK("segment.initializing");
    detail::publish_header(h);
}
#endif  // PROCSAFE_OUT_OF_LINE

}  // namespace procsafe
