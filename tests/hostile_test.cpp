// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Hostile and stale segments, and running out of room: refused with a
// specific error, never mapped and trusted, never a crash or a SIGBUS.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/shm_files.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <cstring>
#include <functional>
#include <string>

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

using procsafe::errc;
using procsafe_test::unique_name;

using procsafe_test::catch_error;
using procsafe_test::tamper;

TEST_CASE("hostile: each header field tampered one at a time gives its own error", "[hostile][error]") {
    struct field {
        const char* name;
        std::function<void(procsafe::detail::segment_header&)> change;
        errc code;
        const char* says;  // what the message must name
    };
    const field fields[] = {
        {"magic", [](auto& h) { h.magic.store(0x1122334455667788ull); }, errc::bad_magic, "magic"},
        {"layout", [](auto& h) { h.layout = 99; }, errc::incompatible_layout, "layout version 99"},
        {"header size", [](auto& h) { h.header_size = 8; }, errc::incompatible_layout, "header of 8 bytes"},
        {"managed offset", [](auto& h) { h.managed_offset = 64; }, errc::incompatible_layout, "header of"},
        {"boost version", [](auto& h) { h.boost_version = 108700; }, errc::incompatible_layout, "Boost 108700"},
        {"line size", [](auto& h) { h.line_size = 64; }, errc::incompatible_layout, "cache line of 64"},
        {"total size", [](auto& h) { h.total_size = 1; }, errc::incompatible_layout, "header says 1 bytes"},
    };
    for (const auto& f : fields) {
        INFO(f.name);
        const auto name = unique_name("tamper");
        auto seg = procsafe::segment::create(name, 4096);
        tamper(name, f.change);
        const auto e = catch_error([&] { procsafe::segment::open(name); });
        REQUIRE(e.code() == f.code);
        REQUIRE(e.segment_name() == name);
        REQUIRE(std::string(e.what()).find(f.says) != std::string::npos);
    }
}

TEST_CASE("hostile: a segment with our magic but a garbage body is refused, not trusted", "[hostile][error]") {
    const auto name = unique_name("garbagebody");
    auto seg = procsafe::segment::create(name, 4096);
    tamper(name, [](auto& h) {
        auto* bytes = reinterpret_cast<unsigned char*>(&h);
        std::memset(bytes + sizeof(std::uint64_t), 0x5A, 64);  // everything after the magic
    });
    const auto e = catch_error([&] { procsafe::segment::open(name); });
    REQUIRE(e.code() == errc::incompatible_layout);
}

TEST_CASE("hostile: open_or_create refuses a name pre-created by another user", "[hostile][error]") {
    if (::geteuid() != 0) {
        SUCCEED("needs root to give a segment to another uid");
        return;
    }
    const auto name = unique_name("squat");
    {
        auto squatter = procsafe::segment::create(name, 4096);
        squatter.disown();
    }
    REQUIRE(::chown(("/dev/shm/" + name).c_str(), 65534, 65534) == 0);
    const auto e = catch_error([&] { procsafe::segment::open_or_create(name, 4096); });
    REQUIRE(e.code() == errc::permission_denied);
    REQUIRE(procsafe::segment::remove(name));
}

TEST_CASE("hostile: a segment removed and recreated under an attached process is detected, and reopened",
          "[hostile]") {
    const auto name = unique_name("recreated");
    auto first = procsafe::segment::create(name, 4096);
    first.construct<procsafe::atomic_counter<int>>("n", 1);
    auto attached = procsafe::segment::open(name);
    auto& old_counter = first.find<procsafe::atomic_counter<int>>("n");
    REQUIRE(procsafe::segment::remove(name));
    auto second = procsafe::segment::create(name, 4096);
    second.construct<procsafe::atomic_counter<int>>("n", 100);
    REQUIRE(attached.is_stale());
    // The documented path: reopen by name, find again.
    attached = procsafe::segment::open(name);
    REQUIRE_FALSE(attached.is_stale());
    REQUIRE(attached.find<procsafe::atomic_counter<int>>("n").value() == 100);
    REQUIRE(old_counter.value() == 1);  // the old segment lives on while `first` maps it
}

TEST_CASE("hostile: a full /dev/shm is out_of_space at create, never a SIGBUS later", "[hostile][error]") {
    // A private mount namespace with a 1 MiB tmpfs over /dev/shm: root only.
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (::unshare(CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0) {
            ::_exit(77);  // no namespaces here: skipped
        }
        int rc = 0;
        try {
            procsafe::segment::create("toobig", 4 << 20);
            rc = 10;  // must not succeed
        } catch (const procsafe::error& e) {
            if (e.code() != errc::out_of_space) rc = 11;
        }
        struct stat st {};
        if (::stat("/dev/shm/toobig", &st) == 0) rc = 12;  // nothing is left behind
        try {
            auto seg = procsafe::segment::create("fits", 512 * 1024);
            auto& first = seg.construct<procsafe::atomic_counter<long>>("first", 7);
            try {
                for (int i = 0;; ++i) seg.construct<procsafe::atomic_counter<long>>(procsafe_test::numbered("c", i));
            } catch (const procsafe::error& e) {
                if (e.code() != errc::out_of_space) rc = 13;
            }
            if (first.increment() != 8) rc = 14;  // existing counters intact
        } catch (...) {
            rc = 15;
        }
        ::_exit(rc);
    }
    const int status = procsafe_test::wait_bounded(pid, std::chrono::seconds(60));
    REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        SUCCEED("no mount namespace (needs root and CAP_SYS_ADMIN); the in-segment out_of_space test still ran");
        return;
    }
    REQUIRE(WEXITSTATUS(status) == 0);
}
