// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Every bad input gets its own procsafe::errc, and a message naming the
// segment and the object.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/shm_files.hpp"
#include "support/skip.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using procsafe::errc;
using procsafe_test::unique_name;

namespace {

/// Runs f, requires a procsafe::error with `code`, returns its message.
template <class F>
std::string require_error(errc code, F&& f) {
    const procsafe::error e = procsafe_test::catch_error(std::forward<F>(f));
    INFO(e.what());
    REQUIRE(e.code() == code);
    REQUIRE(e.code().category() == procsafe::error_category());
    return e.what();
}

using procsafe_test::raw_shm;
using procsafe_test::tamper;

}  // namespace

TEST_CASE("the error category names every code", "[error]") {
    REQUIRE(std::string(procsafe::error_category().name()) == "procsafe");
    for (int c = static_cast<int>(errc::segment_not_found); c <= static_cast<int>(errc::system_error); ++c) {
        REQUIRE(procsafe::error_category().message(c) != "unknown procsafe error");
    }
    const procsafe::error e(errc::type_mismatch, "seg", "obj", "details");
    REQUIRE(e.segment_name() == "seg");
    REQUIRE(e.object_name() == "obj");
    REQUIRE(e.code_value() == errc::type_mismatch);
    REQUIRE(std::string(e.what()).find("segment 'seg': object 'obj': details") != std::string::npos);
    REQUIRE(std::error_code(errc::out_of_space) == procsafe::make_error_code(errc::out_of_space));
}

TEST_CASE("segment_not_found: opening a missing segment", "[error]") {
    const auto name = unique_name("missing");
    const auto msg = require_error(errc::segment_not_found, [&] { (void)procsafe::segment::open(name); });
    REQUIRE(msg.find(name) != std::string::npos);
}

TEST_CASE("segment_exists: creating an existing segment", "[error]") {
    const auto name = unique_name("exists");
    auto seg = procsafe::segment::create(name, 4096);
    require_error(errc::segment_exists, [&] { (void)procsafe::segment::create(name, 4096); });
    seg.construct<procsafe::atomic_counter<int>>("kept", 3);
    REQUIRE(seg.find<procsafe::atomic_counter<int>>("kept").value() == 3);  // untouched
}

TEST_CASE("invalid_name: bad segment and object names, and nothing is created", "[error]") {
    const char* bad_segments[] = {"", "/", "a/b", "..", ".hidden", "1abc", "with space", "tab\there",
                                  "ctl\x01"};
    for (const char* name : bad_segments) {
        INFO("segment name '" << name << "'");
        require_error(errc::invalid_name, [&] { (void)procsafe::segment::create(name, 4096); });
        require_error(errc::invalid_name, [&] { (void)procsafe::segment::open(name); });
        require_error(errc::invalid_name, [&] { procsafe::segment::remove(name); });
    }
    const std::string too_long(256, 'a');
    require_error(errc::invalid_name, [&] { (void)procsafe::segment::create(too_long, 4096); });
    REQUIRE(::access(("/dev/shm/" + too_long.substr(0, 200)).c_str(), F_OK) != 0);

    auto seg = procsafe::segment::anonymous(4096);
    for (const std::string& name : {std::string(), std::string("bell\a"), std::string(201, 'x')}) {
        require_error(errc::invalid_name, [&] { seg.construct<procsafe::atomic_counter<int>>(name); });
        require_error(errc::invalid_name, [&] { seg.find<procsafe::atomic_counter<int>>(name); });
    }
}

TEST_CASE("object_not_found: find of a missing name", "[error]") {
    const auto name = unique_name("nofind");
    auto seg = procsafe::segment::create(name, 4096);
    const auto msg = require_error(errc::object_not_found, [&] { seg.find<procsafe::atomic_counter<int>>("ghost"); });
    REQUIRE(msg.find(name) != std::string::npos);
    REQUIRE(msg.find("ghost") != std::string::npos);
}

TEST_CASE("object_exists: constructing a name twice", "[error]") {
    auto seg = procsafe::segment::anonymous(4096);
    seg.construct<procsafe::atomic_counter<int>>("twice", 1);
    require_error(errc::object_exists, [&] { seg.construct<procsafe::atomic_counter<int>>("twice"); });
    require_error(errc::object_exists, [&] { seg.construct<procsafe::mutex_counter<int>>("twice"); });
    REQUIRE(seg.find<procsafe::atomic_counter<int>>("twice").value() == 1);
}

TEST_CASE("type_mismatch: find with another counter type", "[error]") {
    const auto name = unique_name("types");
    auto seg = procsafe::segment::create(name, 16 * 1024);
    seg.construct<procsafe::mutex_counter<int>>("m");
    seg.construct<procsafe::atomic_counter<int>>("a");
    seg.construct<procsafe::atomic_counter<double>>("d");
    auto peer = procsafe::segment::open(name);
    const auto msg =
        require_error(errc::type_mismatch, [&] { peer.find<procsafe::atomic_counter<long>>("m"); });
    REQUIRE(msg.find("mutex_counter<int32>") != std::string::npos);
    REQUIRE(msg.find("atomic_counter<int64>") != std::string::npos);
    REQUIRE(msg.find(name) != std::string::npos);
    REQUIRE(msg.find("'m'") != std::string::npos);
    require_error(errc::type_mismatch, [&] { peer.find<procsafe::atomic_counter<unsigned>>("a"); });
    require_error(errc::type_mismatch, [&] { peer.find<procsafe::mutex_counter<int>>("a"); });
    require_error(errc::type_mismatch, [&] { peer.find<procsafe::atomic_counter<std::int64_t>>("d"); });
    require_error(errc::type_mismatch, [&] { peer.find_or_construct<procsafe::atomic_counter<float>>("d"); });
}

TEST_CASE("bad_magic: a foreign object under our name is refused, not trusted", "[error]") {
    const auto name = unique_name("garbage");
    raw_shm(name, 8192, 0xAB);
    const auto msg = require_error(errc::bad_magic, [&] { (void)procsafe::segment::open(name); });
    REQUIRE(msg.find(name) != std::string::npos);
    procsafe::segment::remove(name);
}

TEST_CASE("timed_out: a zero-size object under our name is refused within the bound", "[error]") {
    const auto name = unique_name("empty");
    raw_shm(name, 0, 0);
    const auto start = std::chrono::steady_clock::now();
    require_error(errc::timed_out, [&] { (void)procsafe::segment::open(name, std::chrono::milliseconds(100)); });
    REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    // A zeroed object of full size: the magic is never published.
    procsafe::segment::remove(name);
    raw_shm(name, 8192, 0);
    require_error(errc::timed_out, [&] { (void)procsafe::segment::open(name, std::chrono::milliseconds(100)); });
    procsafe::segment::remove(name);
}

TEST_CASE("incompatible_layout: another layout version, Boost version or line size", "[error]") {
    const auto name = unique_name("layout");
    auto seg = procsafe::segment::create(name, 4096);
    SECTION("layout version") {
        tamper(name, [](auto& h) { h.layout += 1; });
    }
    SECTION("Boost version") {
        tamper(name, [](auto& h) { h.boost_version = 108700; });
    }
    SECTION("cache line") {
        tamper(name, [](auto& h) { h.line_size = 64; });
    }
    SECTION("size") {
        tamper(name, [](auto& h) { h.total_size *= 2; });
    }
    const auto msg = require_error(errc::incompatible_layout, [&] { (void)procsafe::segment::open(name); });
    REQUIRE(msg.find(name) != std::string::npos);
}

TEST_CASE("out_of_space: a segment too small for the object", "[error]") {
    auto seg = procsafe::segment::anonymous(4096);
    std::vector<procsafe::atomic_counter<std::int64_t>*> made;
    std::string msg;
    for (int i = 0; i < 1000 && msg.empty(); ++i) {
        try {
            auto& c = seg.construct<procsafe::atomic_counter<std::int64_t>>(procsafe_test::numbered("c", i), i);
            made.push_back(&c);
        } catch (const procsafe::error& e) {
            REQUIRE(e.code() == errc::out_of_space);
            REQUIRE(e.object_name() == procsafe_test::numbered("c", i));
            msg = e.what();
        }
    }
    REQUIRE_FALSE(msg.empty());
    REQUIRE_FALSE(made.empty());
    // What was there before is intact and still counts.
    for (std::size_t i = 0; i < made.size(); ++i) {
        REQUIRE(made[i]->increment() == static_cast<std::int64_t>(i) + 1);
        REQUIRE(&seg.find<procsafe::atomic_counter<std::int64_t>>(procsafe_test::numbered("c", i)) == made[i]);
    }
}

TEST_CASE("invalid_argument: a zero size or a bad mode", "[error]") {
    const auto name = unique_name("arg");
    require_error(errc::invalid_argument, [&] { (void)procsafe::segment::create(name, 0); });
    require_error(errc::invalid_argument, [&] { (void)procsafe::segment::create(name, 4096, 0); });
    require_error(errc::invalid_argument, [&] { (void)procsafe::segment::create(name, 4096, 04777); });
    require_error(errc::invalid_argument, [&] { (void)procsafe::segment::anonymous(0); });
    REQUIRE_FALSE(procsafe::segment::remove(name));  // nothing was created
}

TEST_CASE("permission_denied: a segment owned by another user is not trusted", "[error]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to give a segment to another uid");
    const auto name = unique_name("owner");
    auto seg = procsafe::segment::create(name, 4096);
    REQUIRE(::chown(("/dev/shm/" + name).c_str(), 65534, 65534) == 0);
    const auto msg = require_error(errc::permission_denied, [&] { (void)procsafe::segment::open(name); });
    REQUIRE(msg.find("65534") != std::string::npos);
}

TEST_CASE("errors of a latch, a barrier and an array index name the segment and the object", "[error]") {
    const auto name = unique_name("named");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    auto& l = seg.construct<procsafe::latch>("gate", 1);
    auto& b = seg.construct<procsafe::barrier>("step", 2);
    auto& a = seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>("codes", 3);
    auto named = [&](const std::string& msg, const char* object) {
        INFO(msg);
        CHECK(msg.find("segment '" + name + "'") != std::string::npos);
        CHECK(msg.find(std::string("object '") + object + "'") != std::string::npos);
    };
    named(require_error(errc::invalid_argument, [&] { l.count_down(2); }), "gate");
    named(require_error(errc::invalid_argument, [&] { (void)b.arrive(3); }), "step");
    named(require_error(errc::out_of_range, [&] { (void)a.at(3); }), "codes");
    named(require_error(errc::invalid_argument, [&] { seg.construct<procsafe::latch>("bad", -1); }), "bad");
    auto anon = procsafe::segment::anonymous(64 * 1024);
    auto& l2 = anon.construct<procsafe::latch>("g2", 0);
    const auto msg = require_error(errc::invalid_argument, [&] { l2.count_down(); });
    CHECK(msg.find("segment '(anonymous)': object 'g2'") != std::string::npos);
}
