// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Reading a segment from outside: segment_view maps it read-only, walks the
// catalog without a lock, reads every kind of object, and validates what it
// follows; it never waits for a writer and no writer waits for it.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/pause.hpp"
#include "support/process.hpp"
#include "support/shm_files.hpp"
#include "support/skip.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <csignal>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using procsafe::errc;
using procsafe::object_info;
using procsafe::object_status;
using procsafe_test::catch_error;
using procsafe_test::fork_children;
using procsafe_test::join_children;
using procsafe_test::pause_board;
using procsafe_test::unique_name;
using namespace std::chrono_literals;

namespace {

std::map<std::string, object_info> by_name(const std::vector<object_info>& objects) {
    std::map<std::string, object_info> m;
    for (const auto& o : objects) m.emplace(o.name, o);
    return m;
}

std::int64_t as_int(const procsafe::number& n) {
    if (const auto* i = std::get_if<std::int64_t>(&n)) return *i;
    if (const auto* u = std::get_if<std::uint64_t>(&n)) return static_cast<std::int64_t>(*u);
    throw std::logic_error("not an integer: " + procsafe::to_string(n));
}

struct tally {
    std::int64_t requests, bytes;
};

}  // namespace

TEST_CASE("segment_view: every kind of object, with its metadata and values", "[view]") {
    const auto name = unique_name("view");
    auto seg = procsafe::segment::create(name, 1 << 20);
    seg.construct<procsafe::atomic_counter<std::int64_t>>(
        "hits", procsafe::metadata{.help = "Hits.", .type = procsafe::metric_type::counter}, 5);
    seg.construct<procsafe::atomic_counter<double>>("ratio", 0.25);
    seg.construct<procsafe::mutex_counter<std::uint32_t>>("m", 7u).increment();
    seg.construct<procsafe::mutex_counter<tally>>("stats", tally{1, 2});
    seg.construct<procsafe::sharded_counter<std::int64_t>>("requests", 8).increment(9);
    auto& arr = seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>(
        "responses", procsafe::metadata{.help = "By code.", .label = "code", .label_values = {"200", "404", "500"}}, 3);
    arr[0].increment(3);
    arr[2].increment();
    seg.construct<procsafe::counter_array<double, procsafe::mutex_sync>>("weights", 2, procsafe::array_layout::packed, 1.5);
    auto& h = seg.construct<procsafe::histogram>("latency", procsafe::metadata{.help = "Latency.", .unit = "seconds"},
                                                 std::vector{0.1, 0.5, 1.0});
    h.observe(0.05);
    h.observe(0.7);
    h.observe(3.0);
    seg.construct<procsafe::live_gauge<std::int64_t>>("busy").add(2);
    seg.construct<procsafe::latch>("ready", 3).count_down();
    seg.construct<procsafe::barrier>("step", 1).arrive_and_drop();
    seg.construct<tally>("raw", tally{4, 5});

    auto view = procsafe::segment_view::open(name);
    const auto objects = by_name(view.objects());
    REQUIRE(objects.size() == 12);
    const auto& hits = objects.at("hits");
    REQUIRE(hits.type == "atomic_counter<int64>");
    REQUIRE(hits.help == "Hits.");
    REQUIRE(hits.metric == procsafe::metric_type::counter);
    REQUIRE(hits.status == object_status::ready);
    REQUIRE(as_int(hits.values.at(0)) == 5);
    REQUIRE(std::get<double>(objects.at("ratio").values.at(0)) == 0.25);
    REQUIRE(as_int(objects.at("m").values.at(0)) == 8);
    REQUIRE(objects.at("m").details.at(0).first == "recoveries");
    REQUIRE(objects.at("stats").values.empty());  // a struct: described, not read
    REQUIRE_FALSE(objects.at("stats").note.empty());
    REQUIRE(as_int(objects.at("requests").values.at(0)) == 9);
    const auto& responses = objects.at("responses");
    REQUIRE(responses.label == "code");
    REQUIRE(responses.label_values == std::vector<std::string>{"200", "404", "500"});
    REQUIRE(responses.values.size() == 3);
    REQUIRE(as_int(responses.values[0]) == 3);
    REQUIRE(as_int(responses.values[1]) == 0);
    REQUIRE(as_int(responses.values[2]) == 1);
    REQUIRE(std::get<double>(objects.at("weights").values.at(1)) == 1.5);
    const auto& latency = objects.at("latency");
    REQUIRE(latency.unit == "seconds");
    REQUIRE(latency.metric == procsafe::metric_type::histogram);
    REQUIRE(latency.histogram.has_value());
    REQUIRE(latency.histogram->counts == std::vector<std::uint64_t>{1, 0, 1, 1});
    REQUIRE(latency.histogram->count == 3);
    REQUIRE(latency.histogram->sum == 3.75);
    REQUIRE(as_int(objects.at("busy").values.at(0)) == 2);
    REQUIRE(objects.at("busy").metric == procsafe::metric_type::gauge);
    REQUIRE(as_int(objects.at("ready").values.at(0)) == 2);
    REQUIRE(as_int(objects.at("step").values.at(0)) == 1);  // phase 1: the only participant dropped
    REQUIRE(objects.at("raw").metric == procsafe::metric_type::automatic);
    const auto info = view.info();
    REQUIRE(info.objects == 12);
    REQUIRE(info.creator_pid == static_cast<std::uint32_t>(::getpid()));
    REQUIRE(info.creator_alive);
    REQUIRE(info.mode == 0600);
    REQUIRE(info.incarnation != 0);
    REQUIRE(info.object_bytes > 12 * 128);
}

TEST_CASE("segment_view: bad metadata is refused at construct, naming the object", "[view][error]") {
    auto seg = procsafe::segment::anonymous(1 << 20);
    using array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
    const procsafe::metadata bad[] = {
        {.help = "two\nlines"},
        {.unit = "Seconds"},
        {.label = "1code"},
        {.label = "__name"},
        {.label = "segment"},
        {.label_values = {"x"}},
        {.label = "code", .label_values = {"200"}},  // 1 value for 2 elements
        {.type = procsafe::metric_type::histogram},
        {.help = std::string_view("\x01", 1)},
    };
    for (const auto& m : bad) {
        const auto e = catch_error([&] { seg.construct<array>("arr", m, 2); });
        INFO(e.what());
        REQUIRE(e.code() == errc::invalid_argument);
        REQUIRE(e.object_name() == "arr");
        REQUIRE_FALSE(seg.contains("arr"));
    }
    // A label on what has no elements.
    REQUIRE(catch_error([&] { seg.construct<procsafe::atomic_counter<int>>("c", procsafe::metadata{.label = "x"}); })
                .code() == errc::invalid_argument);
    // find_or_construct keeps the first object's metadata.
    seg.find_or_construct<procsafe::atomic_counter<int>>("c", procsafe::metadata{.help = "first"});
    seg.find_or_construct<procsafe::atomic_counter<int>>("c", procsafe::metadata{.help = "second"});
    const auto objects = by_name(procsafe::segment_view::of(seg).objects());
    REQUIRE(objects.at("c").help == "first");
    REQUIRE(objects.count("arr") == 0);
}

TEST_CASE("segment_view: a reader running while two writers construct 4,000 objects sees each, whole, and "
          "never fails",
          "[view][multiprocess]") {
    const auto name = unique_name("viewlive");
    auto seg = procsafe::segment::create(name, 16 << 20);
    auto& start = seg.construct<procsafe_test::start_barrier>("start");
    constexpr int per_writer = 2000;
    const auto writers = fork_children(2, [&](int w) {
        auto mine = procsafe::segment::open(name);
        if (!start.arrive_and_wait()) return 2;
        for (int k = 0; k < per_writer; ++k) {
            std::string n = procsafe_test::numbered(w == 0 ? "a" : "b", k);
            mine.construct<procsafe::atomic_counter<std::int64_t>>(n, procsafe::metadata{.help = "written"}, k);
        }
        return 0;
    });
    auto view = procsafe::segment_view::open(name);
    REQUIRE(start.release_when(2));
    std::size_t last = 0, reads = 0;
    for (;;) {
        const auto objects = view.objects();  // throws on anything malformed: the test fails
        ++reads;
        REQUIRE(objects.size() >= last);  // append-only: nothing seen disappears
        last = objects.size();
        for (const auto& o : objects) {
            if (o.name == "start" || o.status != object_status::ready) continue;
            REQUIRE(o.help == "written");
            REQUIRE(as_int(o.values.at(0)) == std::stoll(o.name.substr(1)));  // its constructor's value, whole
        }
        if (last == 1 + 2 * per_writer) break;
    }
    REQUIRE(join_children(writers) == 2);
    INFO(reads << " reads while the writers constructed");
    REQUIRE(reads >= 2);
}

TEST_CASE("segment_view: an object whose constructor runs, or died, is shown as such, not waited for",
          "[view][race][multiprocess]") {
    const auto name = unique_name("viewctor");
    auto seg = procsafe::segment::create(name, 1 << 20);
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    const int held = board.arm("object.allocated");
    const pid_t ctor = fork_children(1, [&](int) {
        board.use();
        auto mine = procsafe::segment::open(name);
        mine.construct<procsafe::atomic_counter<int>>("half", 1);
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    auto view = procsafe::segment_view::open(name);
    const auto start = std::chrono::steady_clock::now();
    auto objects = by_name(view.objects());
    REQUIRE(std::chrono::steady_clock::now() - start < 1s);
    REQUIRE(objects.at("half").status == object_status::constructing);
    REQUIRE(objects.at("half").values.empty());
    ::kill(ctor, SIGKILL);
    join_children({ctor});
    objects = by_name(view.objects());
    REQUIRE(objects.at("half").status == object_status::constructor_died);
    REQUIRE(objects.at("half").constructor_pid == static_cast<std::uint32_t>(ctor));
}

namespace {
struct may_throw {
    explicit may_throw(bool fail) {
        if (fail) throw std::runtime_error("refused");
    }
    std::int64_t v = 7;
};
}  // namespace

TEST_CASE("segment_view: a reader that copied a block whose constructor then threw drops it, even when "
          "another object now lives there",
          "[view][race][multiprocess]") {
    const auto name = unique_name("viewthrow");
    auto seg = procsafe::segment::create(name, 1 << 20);
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    struct seen_t {
        std::atomic<int> done{0};
        std::atomic<int> listed{-1};
        std::atomic<int> code{-1};
    };
    auto& seen = control.construct<seen_t>("seen");
    // A allocates "doomed" and is held before its constructor runs.
    const int a_held = board.arm("object.allocated");
    const pid_t a = fork_children(1, [&](int) {
        board.use();
        auto mine = procsafe::segment::open(name);
        try {
            mine.construct<may_throw>("doomed", true);
        } catch (const std::runtime_error&) {
        }
        return 0;
    })[0];
    REQUIRE(board.wait_reached(a_held));
    // The reader copies doomed's header and is held before it re-checks the catalog entry.
    const int r_held = board.arm("view.copied");
    const pid_t reader = fork_children(1, [&](int) {
        board.use();
        try {
            auto view = procsafe::segment_view::open(name);
            int listed = 0;
            for (const auto& o : view.objects()) listed += o.name == "doomed" ? 1 : 0;
            seen.listed.store(listed);
            seen.code.store(0);
        } catch (const procsafe::error& e) {
            seen.code.store(static_cast<int>(e.code_value()));
        }
        seen.done.store(1);
        return 0;
    })[0];
    REQUIRE(board.wait_reached(r_held));
    board.release(a_held);  // the constructor throws: entry tombstoned, block freed...
    REQUIRE(join_children({a}) == 1);
    seg.construct<may_throw>("reused", false);  // ...and reused (best fit: the same size)
    board.release(r_held);
    REQUIRE(join_children({reader}) == 1);
    REQUIRE(seen.code.load() == 0);
    REQUIRE(seen.listed.load() == 0);
    const auto objects = by_name(procsafe::segment_view::open(name).objects());
    REQUIRE(objects.count("doomed") == 0);
    REQUIRE(objects.count("reused") == 1);
}

TEST_CASE("segment_view: a reader never waits for a writer: the directory lock and a counter's lock held by "
          "stopped processes",
          "[view][multiprocess]") {
    const auto name = unique_name("viewstop");
    auto seg = procsafe::segment::create(name, 1 << 20);
    auto& m = seg.construct<procsafe::mutex_counter<std::int64_t>>("m", 41);
    m.increment();
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& holding = control.construct<std::atomic<int>>("holding", 0);
    const pid_t lock_holder = fork_children(1, [&](int) {
        m.with_lock([&](std::int64_t& v) {
            v = 1000;  // never committed
            holding.store(1);
            pause_board::wait_for([] { return false; }, 60s);
        });
        return 0;
    })[0];
    const int held = board.arm("directory.locked");
    const pid_t dir_holder = fork_children(1, [&](int) {
        board.use();
        auto mine = procsafe::segment::open(name);
        mine.construct<procsafe::atomic_counter<int>>("other");
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    REQUIRE(pause_board::wait_for([&] { return holding.load() == 1; }, 20s));
    ::kill(lock_holder, SIGSTOP);
    ::kill(dir_holder, SIGSTOP);
    const auto start = std::chrono::steady_clock::now();
    const auto objects = by_name(procsafe::segment_view::open(name).objects());
    const auto took = std::chrono::steady_clock::now() - start;
    ::kill(lock_holder, SIGKILL);
    ::kill(dir_holder, SIGCONT);
    board.release(held);
    join_children({lock_holder, dir_holder});
    REQUIRE(took < 500ms);
    REQUIRE(as_int(objects.at("m").values.at(0)) == 42);  // the last commit, read without the lock
}

TEST_CASE("segment_view: read-only attach by another user with read permission only", "[view][multiprocess]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to act as other users");
    struct reader_case {
        unsigned mode;
        bool in_group;
        bool can_read;
    };
    const reader_case cases[] = {
        {0640, true, true},    // a member of the segment's group
        {0644, false, true},   // anyone
        {0640, false, false},  // neither
        {0600, true, false},
    };
    for (const auto& c : cases) {
        INFO("mode " << std::oct << c.mode << std::dec << (c.in_group ? ", reader in the group" : ", reader outside"));
        const auto name = unique_name("viewuid");
        auto seg = procsafe::segment::create(name, 64 * 1024, c.mode);
        seg.construct<procsafe::atomic_counter<int>>("n", 7);
        REQUIRE(::chown(("/dev/shm/" + name).c_str(), 0, 4242) == 0);
        auto control = procsafe::segment::anonymous(4096);
        auto& code = control.construct<std::atomic<int>>("code", -1);
        auto& value = control.construct<std::atomic<int>>("value", -1);
        const pid_t pid = fork_children(1, [&](int) {
            const gid_t groups[] = {4242};
            if (::setgroups(c.in_group ? 1 : 0, groups) != 0 || ::setgid(c.in_group ? 4242 : 65534) != 0 ||
                ::setuid(65534) != 0)
                return 9;
            try {
                auto view = procsafe::segment_view::open(name);
                value.store(static_cast<int>(as_int(view.objects().at(0).values.at(0))));
                code.store(0);
            } catch (const procsafe::error& e) {
                code.store(static_cast<int>(e.code_value()));
            }
            return 0;
        })[0];
        REQUIRE(join_children({pid}) == 1);
        if (c.can_read) {
            REQUIRE(code.load() == 0);
            REQUIRE(value.load() == 7);
        } else {
            REQUIRE(code.load() == static_cast<int>(errc::permission_denied));
        }
    }
}

TEST_CASE("segment_view: a corrupted, truncated or foreign segment is an error naming it, never a crash",
          "[view][hostile][error]") {
    const auto name = unique_name("viewbad");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    seg.construct<procsafe::atomic_counter<int>>("a", 1);
    seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>("arr", 4);
    const auto image_of = [&] {
        auto view = procsafe::segment_view::of(seg);
        (void)view.objects();
        const auto* p = static_cast<const unsigned char*>(seg.data());
        return std::vector<unsigned char>(p, p + seg.size());
    };
    const std::vector<unsigned char> good = image_of();
    REQUIRE(procsafe::segment_view::over(good.data(), good.size()).objects().size() == 2);
    const auto& h = *reinterpret_cast<const procsafe::detail::segment_header*>(good.data());
    const std::size_t chunk = h.catalog;
    struct damage {
        const char* what;
        std::size_t offset;
        std::uint64_t value;
        std::size_t bytes;
    };
    // The first entry (chunk + 24) is the first object's block; the
    // object's header lies there.
    std::uint64_t first_block = 0;
    std::memcpy(&first_block, good.data() + chunk + 24, 8);
    const damage cases[] = {
        {"the catalog's first chunk out of the segment", offsetof(procsafe::detail::segment_header, catalog), 1ull << 40, 8},
        {"the catalog's first chunk misaligned", offsetof(procsafe::detail::segment_header, catalog), chunk + 1, 8},
        {"the chunk's magic", chunk, 0x12345678, 4},
        {"the chunk's capacity", chunk + 4, 1u << 30, 4},
        {"the chunk's count above its capacity", chunk + 16, 100000, 4},
        {"the chunk linked to itself", chunk + 8, chunk, 8},
        {"an entry out of the segment", chunk + 24, 1ull << 40, 8},
        {"an entry misaligned", chunk + 24, first_block + 4, 8},
        {"an object's magic", first_block + 4, 0, 4},
        {"an object's block size", first_block + 64, 1ull << 40, 8},
        {"an object's name length", first_block + 72, 0xFFFF, 2},
        {"an object's offset", first_block + 56, 7, 4},
        {"an object's kind", first_block + 16, 0x77, 2},
    };
    for (const auto& d : cases) {
        INFO(d.what);
        auto image = good;
        std::memcpy(image.data() + d.offset, &d.value, d.bytes);
        const auto e = catch_error([&] { (void)procsafe::segment_view::over(image.data(), image.size(), "bad").objects(); });
        REQUIRE(e.code() == errc::incompatible_layout);
        REQUIRE(e.segment_name() == "bad");
    }
    // Truncated, foreign, not initialized.
    REQUIRE(catch_error([&] { (void)procsafe::segment_view::over(good.data(), 100, "short"); }).code() == errc::timed_out);
    REQUIRE(catch_error([&] { (void)procsafe::segment_view::over(good.data(), 8192, "short"); }).code() ==
            errc::incompatible_layout);
    std::vector<unsigned char> foreign(8192, 0xAB);
    REQUIRE(catch_error([&] { (void)procsafe::segment_view::over(foreign.data(), foreign.size(), "f"); }).code() ==
            errc::bad_magic);
    const auto missing = unique_name("viewnone");
    REQUIRE(catch_error([&] { (void)procsafe::segment_view::open(missing); }).code() == errc::segment_not_found);
    procsafe_test::raw_shm(missing, 0, 0);
    REQUIRE(catch_error([&] { (void)procsafe::segment_view::open(missing); }).code() == errc::timed_out);
    (void)procsafe::segment::remove(missing);
}

TEST_CASE("segment_view: a segment truncated by its owner in the middle of a read is an error naming it, "
          "not a SIGBUS",
          "[view][race][multiprocess]") {
    const auto name = unique_name("viewtrunc");
    auto seg = procsafe::segment::create(name, 1 << 20);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("first", 1);
    // An object far from the start: its value lies past the size the owner truncates to.
    for (int i = 0; i < 20; ++i) seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>("pad" + std::to_string(i), 64);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("far", 2);
    auto control = procsafe::segment::anonymous(64 * 1024);
    auto& board = control.construct<pause_board>("board");
    auto& code = control.construct<std::atomic<int>>("code", -1);
    // Held after copying the last object's header, before reading its value.
    const int held = board.arm("view.copied", 0, /*skip=*/21);
    const pid_t reader = fork_children(1, [&](int) {
        board.use();
        try {
            auto view = procsafe::segment_view::open(name);
            (void)view.objects();
            code.store(0);
        } catch (const procsafe::error& e) {
            code.store(static_cast<int>(e.code_value()));
            if (std::string(e.what()).find(name) == std::string::npos) return 3;
        }
        return 0;
    })[0];
    REQUIRE(board.wait_reached(held));
    const int fd = ::open(("/dev/shm/" + name).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 8192) == 0);  // the owner truncates it under the reader
    ::close(fd);
    board.release(held);
    const int status = procsafe_test::wait_bounded(reader, 30s);
    INFO("reader status " << status << (WIFSIGNALED(status) ? " (killed by a signal)" : ""));
    REQUIRE(procsafe_test::exited_ok(status));
    REQUIRE(code.load() == static_cast<int>(errc::incompatible_layout));
}
