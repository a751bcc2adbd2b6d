// procsafe/segment_view.hpp: a read-only view of a segment's catalog, for monitoring from outside.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <procsafe/barrier.hpp>
#include <procsafe/counter.hpp>
#include <procsafe/counter_array.hpp>
#include <procsafe/detail/bus_guard.hpp>
#include <procsafe/detail/catalog.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/mapping.hpp>
#include <procsafe/detail/names.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/detail/segment_header.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/error.hpp>
#include <procsafe/histogram.hpp>
#include <procsafe/latch.hpp>
#include <procsafe/live_gauge.hpp>
#include <procsafe/metadata.hpp>
#include <procsafe/segment.hpp>
#include <procsafe/sharded_counter.hpp>

#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace procsafe {

/// A value read from a segment: nothing, a signed or unsigned integer, or a
/// floating-point number, as the object's value type is.
using number = std::variant<std::monostate, std::int64_t, std::uint64_t, double>;

/// Appends the number as text: integers exactly, doubles in the shortest
/// form that reads back exactly, NaN, +Inf and -Inf as Prometheus spells
/// them; nothing for no number.
inline void append_number(std::string& out, const number& n) {
    char buf[32];
    std::to_chars_result r{buf, std::errc{}};
    if (const auto* i = std::get_if<std::int64_t>(&n)) r = std::to_chars(buf, buf + sizeof buf, *i);
    else if (const auto* u = std::get_if<std::uint64_t>(&n)) r = std::to_chars(buf, buf + sizeof buf, *u);
    else if (const auto* d = std::get_if<double>(&n)) {
        if (std::isnan(*d)) return void(out += "NaN");
        if (std::isinf(*d)) return void(out += *d > 0 ? "+Inf" : "-Inf");
        r = std::to_chars(buf, buf + sizeof buf, *d);
    }
    out.append(buf, r.ptr);
}

/// The number as text (see append_number).
inline std::string to_string(const number& n) {
    std::string s;
    append_number(s, n);
    return s;
}

/// What an object is (the kinds procsafe places in a segment).
using object_kind = detail::object_kind;

/// The kind's name, as procsafe's types are named ("user" for any other type).
inline const char* to_string(object_kind k) noexcept {
    switch (k) {
        case object_kind::user: return "user";
        case object_kind::atomic_counter: return "atomic_counter";
        case object_kind::mutex_counter: return "mutex_counter";
        case object_kind::sharded_counter: return "sharded_counter";
        case object_kind::atomic_counter_array: return "atomic_counter_array";
        case object_kind::mutex_counter_array: return "mutex_counter_array";
        case object_kind::latch: return "latch";
        case object_kind::barrier: return "barrier";
        case object_kind::histogram: return "histogram";
        case object_kind::live_gauge: return "live_gauge";
    }
    return "unknown";
}

/// Whether an object can be read yet.
enum class object_status {
    ready,             ///< constructed: its values are read
    constructing,      ///< its constructor still runs (or its pid is in another PID namespace)
    constructor_died,  ///< the process constructing it died: the object never came to be
    /// Its strings break the rules construct() enforces (a name, help text,
    /// unit or label that is not printable, not UTF-8, not of its grammar,
    /// repeated label values): its owner rewrote them, or they are damaged.
    /// The name is escaped (escape_bytes), the note says why; no values,
    /// and no consumer exports it.
    corrupt,
};

/// One object of a segment, as a reader sees it: what it is, its metadata,
/// and its values at the moment it was read.
struct object_info {
    std::string name;
    object_kind kind{};
    std::string type;  ///< e.g. "atomic_counter<int64>", "histogram"
    object_status status = object_status::ready;
    std::uint32_t constructor_pid = 0;
    std::string help, unit, label;
    std::vector<std::string> label_values;
    metric_type metric = metric_type::automatic;  ///< resolved: counter, gauge, histogram; automatic for a user type
    /// False when the object was taken out of the exposition
    /// (segment::set_exported, family::remove, Python prometheus_client's
    /// remove() and clear()): its values are still read; prometheus_exposition
    /// leaves it out.
    bool exported = true;
    /// A counter: its value; an array: one per element; a latch: the count
    /// left; a barrier: the phase; a live_gauge: the live processes' sum.
    /// Empty when not ready, or when the values cannot be read (see note).
    std::vector<number> values;
    std::optional<procsafe::histogram::snapshot> histogram;
    /// Kind-specific extras: a mutex counter's "recoveries", a barrier's
    /// "expected" and "missing", a live_gauge's "live_processes".
    std::vector<std::pair<std::string, number>> details;
    /// A live_gauge's aggregation (how its per-process values combine), and
    /// its processes (live_gauge::processes(), in slot order). An
    /// aggregation read out of range leaves the values out (see note).
    std::optional<gauge_aggregation> aggregation;
    struct process_value {
        std::uint32_t pid = 0;
        number value;
        bool alive = false;
    };
    std::vector<process_value> processes;
    std::size_t bytes = 0;  ///< the object's block, header and metadata included
    std::string note;       ///< why values are missing, when they are
};

/// Facts about a segment, for listings.
struct segment_info {
    std::string name;
    std::size_t size = 0;          ///< bytes mapped
    std::size_t object_bytes = 0;  ///< bytes the objects' blocks take (their headers and metadata included)
    std::size_t objects = 0;
    std::uint32_t creator_pid = 0;
    bool creator_alive = false;
    std::uint64_t created_ns = 0;  ///< since the Unix epoch
    std::uint64_t incarnation = 0;  ///< a number drawn at creation: a recreated segment has another
    std::uint32_t uid = 0, gid = 0, mode = 0;  ///< POSIX owner and mode (0 on Windows)
};

/// A segment seen from outside: enumerate its objects and read their values
/// without writing a byte. Maps the segment read-only (O_RDONLY, PROT_READ),
/// so read permission is enough (a 0640 segment for its group, a 0644 one for
/// anyone); takes no lock; never waits for a writer and makes none wait.
/// Everything it follows in the segment is validated as strictly as open()
/// validates (the header, every catalog chunk and entry, every object's
/// header, sizes and offsets inside the mapping, known kinds and types): a
/// corrupted, truncated or foreign segment is a procsafe::error naming it,
/// never a crash or a hang. Objects constructed after it attached are seen
/// at the next objects(); an object whose constructor still runs, or died,
/// is listed as such, not waited for.
///
/// A sharded counter is read as its sum, an array element by element, a
/// mutex counter without its lock (the last committed value, as a seqlock
/// reader reads it), a latch as its count, a barrier as its phase.
///
/// A segment its owner truncates while it is mapped is refused at the next
/// objects() or info() (its size is checked before every walk), not read
/// past its end. A truncation in the microseconds between that check and the
/// reads is caught too: the first mapping registers a SIGBUS handler that
/// maps zeros over the faulting page of a reader's mapping and makes the
/// read throw (detail/bus_guard.hpp; any other SIGBUS goes to the handler
/// that was installed before, or kills as it would have).
///
/// ```
/// auto view = procsafe::segment_view::open("web");
/// for (const auto& o : view.objects())
///     std::printf("%s %s %s\n", o.name.c_str(), o.type.c_str(),
///                 o.values.empty() ? "-" : procsafe::to_string(o.values[0]).c_str());
/// ```
class segment_view {
public:
    /// Maps the named segment read-only and validates its header. Never waits.
    /// Throws: segment_not_found, permission_denied (no read permission),
    /// invalid_name, bad_magic, incompatible_layout, timed_out (not
    /// initialized yet: its creator is still setting it up, or died doing so).
    [[nodiscard]] static segment_view open(std::string_view name) {
        detail::check_segment_name(name);
        segment_view v{std::string(name)};
        v.map_ = detail::mapping::open_read_only(name, detail::managed_offset);
        v.base_ = static_cast<const unsigned char*>(v.map_.addr());
        v.size_ = v.map_.size();
        v.guard_ = detail::bus_guard(v.base_, v.size_);
        v.validate();
        v.check_size();
        return v;
    }
    /// A view of a segment image in memory (tests, fuzzing): validated as a
    /// mapping would be.  Throws: as open().
    [[nodiscard]] static segment_view over(const void* base, std::size_t size, std::string name = "(memory)") {
        segment_view v(std::move(name));
        v.base_ = static_cast<const unsigned char*>(base);
        v.size_ = size;
        if (size < detail::managed_offset) {
            throw error(errc::timed_out, v.name_, {}, "has " + std::to_string(size) + " bytes: not initialized (yet)");
        }
        v.validate();
        return v;
    }

    /// A view of a segment this process has open (named or anonymous),
    /// through its own mapping: for a server that exports the counters it
    /// shares with its forked workers.  Throws: as over().
    [[nodiscard]] static segment_view of(const segment& s) {
        return over(s.data(), s.size(), s.name().empty() ? "(anonymous)" : s.name());
    }

    /// The names of the shared memory objects on this host that could be
    /// segments (POSIX: /dev/shm; none on Windows, which cannot list them).
    /// Open each to learn whether it is procsafe's.
    static std::vector<std::string> candidate_names() { return detail::mapping::names(); }

    const std::string& name() const noexcept { return name_; }
    std::size_t size() const noexcept { return size_; }
    /// True when the name no longer refers to this mapping (removed, perhaps
    /// recreated: open it again).  Cost: one system call.
    bool is_stale() const { return map_.addr() != nullptr && map_.is_stale(name_); }

    /// Every object in the segment, read now. Cost: a walk of the catalog
    /// and a read of every value (one load per counter, per slot of a
    /// sharded counter, per element of an array); allocates the result.
    /// Throws: incompatible_layout when the catalog or an object's header is
    /// damaged (naming the segment and the object).
    std::vector<object_info> objects() const {
        check_size();
        std::vector<object_info> out;
        detail::walk_catalog(base_, size_, name_, [&](const std::atomic<std::uint64_t>& entry, std::uint64_t block) {
            if (auto o = read_object(entry, block)) out.push_back(std::move(*o));
        });
        check_size();  // truncated during the walk: what it read is not returned
        return out;
    }

    /// Facts for a listing. Cost: as objects(), without reading values.
    segment_info info() const {
        check_size();
        segment_info i;
        i.name = name_;
        i.size = size_;
        const auto& h = header();
        i.creator_pid = h.creator_pid;
        i.creator_alive = detail::judge_creator(h) != detail::creator_state::gone;  // what replace_orphan would judge
        i.created_ns = h.created_ns;
        i.incarnation = h.incarnation;
        if (map_.addr() != nullptr) {
            const auto o = map_.owner(name_);
            i.uid = o.uid;
            i.gid = o.gid;
            i.mode = o.mode;
        }
        detail::walk_catalog(base_, size_, name_, [&](const std::atomic<std::uint64_t>& entry, std::uint64_t block) {
            if (auto o = read_object(entry, block, /*with_values=*/false)) {
                ++i.objects;
                i.object_bytes += o->bytes;
            }
        });
        check_size();
        return i;
    }

    /// The segment's incarnation (see segment_info).
    std::uint64_t incarnation() const noexcept { return header().incarnation; }

private:
    explicit segment_view(std::string name) : name_(std::move(name)) {}

    const detail::segment_header& header() const noexcept {
        return *reinterpret_cast<const detail::segment_header*>(base_);
    }

    /// Throws incompatible_layout when the object was truncated under the
    /// mapping (its owner can: every page past the new end is a SIGBUS).
    void check_size() const {
        if (guard_.faulted()) {
            throw error(errc::incompatible_layout, name_, {},
                        "truncated by its owner while being read: not read (open it again)");
        }
        if (map_.addr() == nullptr) return;
        const std::size_t now = map_.current_size(name_);
        if (now < size_) {
            throw error(errc::incompatible_layout, name_, {},
                        "truncated to " + std::to_string(now) + " bytes while mapped (" + std::to_string(size_) +
                            "): not read (open it again)");
        }
    }

    void validate() const {
        if (header().magic.load(std::memory_order_acquire) == 0) {
            throw error(errc::timed_out, name_, {},
                        "not initialized (yet): its creator is still setting it up, or died doing so");
        }
        detail::check_header(header(), size_, name_);
    }

    [[noreturn]] void corrupt(std::string_view object, const std::string& why) const {
        // The name as the segment has it: anything at all, so escaped.
        throw error(errc::incompatible_layout, name_, detail::escape_bytes(object), why);
    }

    /// Reads the object whose block is at `block` (an offset), following the
    /// catalog's protocol: copy the header and strings, validate them, then
    /// re-check the entry after an acquire fence (a block freed by a
    /// constructor that threw is dropped, never misread).
    std::optional<object_info> read_object(const std::atomic<std::uint64_t>& entry, std::uint64_t block,
                                           bool with_values = true) const {
        if (block % 8 != 0 || block < detail::managed_offset || block > size_ || size_ - block < sizeof(detail::object_header)) {
            corrupt({}, "catalog: an entry at offset " + std::to_string(block) + " outside the segment");
        }
        const unsigned char* b = base_ + block;
        detail::object_header h;
        std::memcpy(static_cast<void*>(&h), b, sizeof h);
        const std::uint32_t state = reinterpret_cast<const detail::object_header*>(b)->state.load(std::memory_order_acquire);
        if (h.magic != detail::object_magic || h.layout != detail::layout_version) {
            corrupt({}, "catalog: an entry at offset " + std::to_string(block) + " that is no procsafe object");
        }
        const std::size_t strings = std::size_t{h.name_length} + h.help_length + h.unit_length + h.label_length;
        if (h.block_size > size_ - block || h.meta_bytes > h.block_size || strings > h.meta_bytes ||
            sizeof(detail::object_header) + h.meta_bytes > h.object_offset || h.object_offset > h.block_size ||
            h.facts.object_size > h.block_size - h.object_offset || h.name_length == 0 ||
            h.name_length > detail::max_name_length || h.help_length > detail::max_help || h.unit_length > detail::max_unit ||
            h.label_length > detail::max_label || h.facts.object_align == 0 ||
            (h.facts.object_align & (h.facts.object_align - 1)) != 0 ||
            (block + h.object_offset) % h.facts.object_align != 0) {
            corrupt({}, "catalog: the object at offset " + std::to_string(block) + " has a damaged header");
        }
        object_info o;
        const auto* s = reinterpret_cast<const char*>(b + sizeof(detail::object_header));
        o.name.assign(s, h.name_length);
        s += h.name_length;
        o.help.assign(s, h.help_length);
        s += h.help_length;
        o.unit.assign(s, h.unit_length);
        s += h.unit_length;
        o.label.assign(s, h.label_length);
        s += h.label_length;
        std::size_t left = h.meta_bytes - strings;
        for (std::uint32_t i = 0; i < h.label_values; ++i) {
            if (left < 2) corrupt(o.name, "its label values overrun its metadata");
            const std::size_t n = static_cast<unsigned char>(s[0]) | static_cast<std::size_t>(static_cast<unsigned char>(s[1])) << 8;
            if (left - 2 < n) corrupt(o.name, "its label values overrun its metadata");
            o.label_values.emplace_back(s + 2, n);
            s += 2 + n;
            left -= 2 + n;
        }
        // The block may have been freed (a constructor that threw) while we copied it.
        PROCSAFE_TEST_HOOK("view.copied");
        std::atomic_thread_fence(std::memory_order_acquire);
        if (entry.load(std::memory_order_relaxed) != block) return std::nullopt;

        o.kind = h.facts.kind;
        o.type = detail::describe(h.facts);
        // The segment's owner can rewrite these bytes at any time after
        // construction: they are checked again at every read, against the
        // rules construct() applied, before anyone prints or exports them.
        const char* bad_name = detail::object_name_problem(o.name);
        const auto bad_meta = detail::metadata_problem(o.help, o.unit, o.label, o.label_values);
        // An object the reader leaves out: its name escaped, what is wrong in the note.
        auto left_out = [&](const std::string& what) {
            object_info c;
            c.name = detail::escape_bytes(o.name);
            c.kind = o.kind;
            c.type = o.type;
            c.status = object_status::corrupt;
            c.constructor_pid = h.constructor_pid;
            c.bytes = h.block_size;
            c.note = "the object at offset " + std::to_string(block) + " has " + what + ": left out";
            return c;
        };
        if (bad_name != nullptr || bad_meta) {
            return left_out("a corrupt name or metadata (" + (bad_name != nullptr ? std::string(bad_name) : *bad_meta) + ")");
        }
        o.constructor_pid = h.constructor_pid;
        o.bytes = h.block_size;
        o.metric = detail::resolve_metric(static_cast<metric_type>(h.metric), h.facts.kind);
        if (state == detail::state_constructing) {
            const bool here = h.constructor_pidns == detail::pid_namespace();
            o.status = here && detail::process_gone(h.constructor_pid) ? object_status::constructor_died
                                                                        : object_status::constructing;
            return o;
        }
        if (state != detail::state_ready) corrupt(o.name, "an unknown object state " + std::to_string(state));
        // Changed at any time (segment::set_exported): read once, atomically.
        const std::uint8_t hidden = reinterpret_cast<const detail::object_header*>(b)->hidden.load(std::memory_order_acquire);
        if (hidden != detail::export_shown && hidden != detail::export_hidden) {
            // The owner's byte to rewrite at any time: this object is left
            // out, the segment's others are read as usual.
            return left_out("an unknown export state " + std::to_string(hidden));
        }
        o.exported = hidden == detail::export_shown;
        if (with_values) read_values(o, h, b + h.object_offset, h.block_size - h.object_offset);
        return o;
    }

    template <class T>
    struct tag {
        using type = T;
    };
    /// Calls f(tag<T>) for the arithmetic T the facts name; false if none.
    template <class F>
    static bool with_value_type(const detail::type_facts& f, F&& fn) {
        using detail::value_category;
        switch (f.category) {
            case value_category::signed_integer:
                switch (f.value_size) {
                    case 1: fn(tag<std::int8_t>{}); return true;
                    case 2: fn(tag<std::int16_t>{}); return true;
                    case 4: fn(tag<std::int32_t>{}); return true;
                    case 8: fn(tag<std::int64_t>{}); return true;
                    default: return false;
                }
            case value_category::unsigned_integer:
                switch (f.value_size) {
                    case 1: fn(tag<std::uint8_t>{}); return true;
                    case 2: fn(tag<std::uint16_t>{}); return true;
                    case 4: fn(tag<std::uint32_t>{}); return true;
                    case 8: fn(tag<std::uint64_t>{}); return true;
                    default: return false;
                }
            case value_category::floating_point:
                switch (f.value_size) {
                    case 4: fn(tag<float>{}); return true;
                    case 8: fn(tag<double>{}); return true;
                    default: return false;
                }
            case value_category::boolean: fn(tag<bool>{}); return true;
            default: return false;
        }
    }

    template <class T>
    static number as_number(T v) noexcept {
        if constexpr (std::is_floating_point_v<T>) return static_cast<double>(v);
        else if constexpr (std::is_same_v<T, bool>) return std::uint64_t{v ? 1u : 0u};
        else if constexpr (std::is_signed_v<T>) return static_cast<std::int64_t>(v);
        else return static_cast<std::uint64_t>(v);
    }

    /// The object as a C of this build, if the facts in the segment are
    /// exactly C's (kind, value type, size, alignment) and its storage fits.
    template <class C>
    const C* as(const detail::object_header& h, const unsigned char* obj, std::size_t room, object_info& o) const {
        if (!(h.facts == detail::object_traits<C>::facts()) || room < sizeof(C)) return nullptr;
        const C* c = reinterpret_cast<const C*>(obj);
        if constexpr (detail::variable_size<C>) {
            if (!c->procsafe_fits(room - sizeof(C))) corrupt(o.name, "its header claims more storage than its block holds");
        }
        return c;
    }

    void read_values(object_info& o, const detail::object_header& h, const unsigned char* obj, std::size_t room) const {
        using detail::object_kind;
        bool known = true;
        switch (h.facts.kind) {
            case object_kind::atomic_counter:
                known = with_value_type(h.facts, [&](auto t) {
                    using T = typename decltype(t)::type;
                    if constexpr (!std::is_same_v<T, bool>) {
                        if (const auto* c = as<counter<T, atomic_sync>>(h, obj, room, o)) o.values.push_back(as_number(c->value()));
                    }
                });
                break;
            case object_kind::mutex_counter:
                known = with_value_type(h.facts, [&](auto t) {
                    using T = typename decltype(t)::type;
                    if (const auto* c = as<counter<T, mutex_sync>>(h, obj, room, o)) {
                        if (const auto v = c->read_committed()) o.values.push_back(as_number(*v));
                        else o.note = "updated too often to be read without its lock";
                        o.details.emplace_back("recoveries", std::uint64_t{c->recoveries()});
                    }
                });
                break;
            case object_kind::sharded_counter:
                known = with_value_type(h.facts, [&](auto t) {
                    using T = typename decltype(t)::type;
                    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
                        if (const auto* c = as<sharded_counter<T>>(h, obj, room, o)) o.values.push_back(as_number(c->sum()));
                    }
                });
                break;
            case object_kind::atomic_counter_array:
                known = with_value_type(h.facts, [&](auto t) {
                    using T = typename decltype(t)::type;
                    if constexpr (!std::is_same_v<T, bool>) {
                        if (const auto* a = as<counter_array<T, atomic_sync>>(h, obj, room, o)) {
                            o.values.reserve(a->size());
                            for (std::size_t i = 0; i < a->size(); ++i) o.values.push_back(as_number(a->at(i).value()));
                        }
                    }
                });
                break;
            case object_kind::mutex_counter_array:
                known = with_value_type(h.facts, [&](auto t) {
                    using T = typename decltype(t)::type;
                    if (const auto* a = as<counter_array<T, mutex_sync>>(h, obj, room, o)) {
                        std::uint64_t recoveries = 0;
                        o.values.reserve(a->size());
                        for (std::size_t i = 0; i < a->size(); ++i) {
                            const auto v = a->at(i).read_committed();
                            o.values.push_back(v ? as_number(*v) : number{});
                            recoveries += a->at(i).recoveries();
                        }
                        o.details.emplace_back("recoveries", recoveries);
                    }
                });
                break;
            case object_kind::latch:
                if (const auto* l = as<latch>(h, obj, room, o)) o.values.push_back(std::int64_t{l->count()});
                break;
            case object_kind::barrier:
                if (const auto* b = as<barrier>(h, obj, room, o)) {
                    o.values.push_back(std::uint64_t{b->phase()});
                    o.details.emplace_back("expected", std::int64_t{b->expected()});
                    o.details.emplace_back("missing", std::int64_t{b->missing()});
                }
                break;
            case object_kind::histogram:
                if (const auto* hg = as<procsafe::histogram>(h, obj, room, o)) {
                    auto snap = hg->read();
                    // The bounds are bytes of the segment, its owner's to rewrite:
                    // checked again as construct() checked them (NaN, infinite,
                    // repeated or falling bounds would make repeated or
                    // unordered le series).
                    for (std::size_t i = 0; i < snap.bounds.size(); ++i) {
                        if (!std::isfinite(snap.bounds[i]) || (i > 0 && !(snap.bounds[i - 1] < snap.bounds[i]))) {
                            o.status = object_status::corrupt;
                            o.note = "its bucket bounds are not finite and strictly increasing (bound " + std::to_string(i) +
                                     "): left out";
                            return;
                        }
                    }
                    o.histogram = std::move(snap);
                }
                break;
            case object_kind::live_gauge:
                known = with_value_type(h.facts, [&](auto t) {
                    using T = typename decltype(t)::type;
                    if constexpr ((std::is_integral_v<T> && !std::is_same_v<T, bool>) || std::is_floating_point_v<T>) {
                        if (const auto* g = as<live_gauge<T>>(h, obj, room, o)) {
                            // The mode is a byte of the segment: anything out of range is damage.
                            if (aggregation_name(g->aggregation()) == nullptr) {
                                o.note = "an unknown gauge aggregation " + std::to_string(static_cast<unsigned>(g->aggregation()));
                                return;
                            }
                            o.aggregation = g->aggregation();
                            o.values.push_back(as_number(g->value()));
                            o.details.emplace_back("live_processes", std::uint64_t{g->live_processes()});
                            for (const auto& p : g->processes()) o.processes.push_back({p.pid, as_number(p.value), p.alive});
                        }
                    }
                });
                break;
            case object_kind::user:
                o.note = "a user type: no value to read";
                return;
            default:
                corrupt(o.name, "an unknown object kind " + std::to_string(static_cast<unsigned>(h.facts.kind)));
        }
        if (!known || (o.values.empty() && !o.histogram && o.note.empty())) {
            o.note = "a value type this build does not read (" + o.type + ")";
        }
    }

    std::string name_;
    detail::mapping map_;  // empty for over()
    detail::bus_guard guard_;  // declared after map_: unregistered before the unmap
    const unsigned char* base_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace procsafe
