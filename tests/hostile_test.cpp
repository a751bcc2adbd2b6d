// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Hostile and stale segments, and running out of room: refused with a
// specific error, never mapped and trusted, never a crash or a SIGBUS.
#include "catch.hpp"
#include "support/errors.hpp"
#include "support/process.hpp"
#include "support/shm_files.hpp"
#include "support/skip.hpp"
#include "support/values.hpp"

#include <procsafe/procsafe.hpp>

#include <cstddef>
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
        const auto e = catch_error([&] { (void)procsafe::segment::open(name); });
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
    const auto e = catch_error([&] { (void)procsafe::segment::open(name); });
    REQUIRE(e.code() == errc::incompatible_layout);
}

TEST_CASE("hostile: open_or_create refuses a name pre-created by another user", "[hostile][error]") {
    if (::geteuid() != 0) PROCSAFE_SKIP("needs root to give a segment to another uid");
    const auto name = unique_name("squat");
    {
        auto squatter = procsafe::segment::create(name, 4096);
        squatter.disown();
    }
    REQUIRE(::chown(("/dev/shm/" + name).c_str(), 65534, 65534) == 0);
    const auto e = catch_error([&] { (void)procsafe::segment::open_or_create(name, 4096); });
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
            (void)procsafe::segment::create("toobig", 4 << 20);
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
    if (WEXITSTATUS(status) == 77) PROCSAFE_SKIP("no mount namespace (needs root and CAP_SYS_ADMIN)");
    REQUIRE(WEXITSTATUS(status) == 0);
}

TEST_CASE("hostile: a corrupted directory lock word is refused within the segment's timeout, naming the segment",
          "[hostile][error]") {
    struct garbage {
        const char* what;
        unsigned char fill;
        std::size_t bytes;
        bool must_time_out;
    };
    // The lock word of the directory mutex is the first word of segment_header::directory.
    const garbage cases[] = {
        {"an owner that never existed", 0x01, 4, true},
        {"every field garbage", 0x5A, 40, false},
        {"an owner-died bit and garbage", 0xC3, 16, false},
    };
    for (const auto& g : cases) {
        INFO(g.what);
        const auto name = unique_name("lockword");
        auto seg = procsafe::segment::create(name, 64 * 1024);
        seg.construct<procsafe::atomic_counter<int>>("n", 1);
        tamper(name, [&](procsafe::detail::segment_header& h) {
            std::memset(reinterpret_cast<unsigned char*>(&h) + offsetof(procsafe::detail::segment_header, directory),
                        g.fill, g.bytes);
        });
        // In a child with a bound: a hang fails the test instead of hanging it.
        auto control = procsafe::segment::anonymous(4096);
        auto& code = control.construct<std::atomic<int>>("code", -1);
        auto& named = control.construct<std::atomic<int>>("named", 0);
        auto& took_ms = control.construct<std::atomic<long>>("took", -1);
        const auto pids = procsafe_test::fork_children(1, [&](int) {
            const auto start = std::chrono::steady_clock::now();
            try {
                auto peer = procsafe::segment::open(name, std::chrono::milliseconds(300));
                peer.find<procsafe::atomic_counter<int>>("n").increment();
                peer.construct<procsafe::atomic_counter<int>>("m");
                code.store(0);
            } catch (const procsafe::error& e) {
                code.store(static_cast<int>(e.code_value()));
                named.store(e.segment_name() == name ? 1 : 0);
            }
            took_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
            return 0;
        });
        const int status = procsafe_test::wait_bounded(pids[0], std::chrono::seconds(10));
        REQUIRE(procsafe_test::exited_ok(status));
        INFO("code " << code.load() << ", took " << took_ms.load() << " ms");
        // Either the lock recovers (an owner-died bit set by the kernel looks
        // the same) or the segment is refused; never a hang, never nameless.
        if (g.must_time_out) REQUIRE(code.load() == static_cast<int>(errc::timed_out));
        if (code.load() != 0) {
            REQUIRE((code.load() == static_cast<int>(errc::timed_out) || code.load() == static_cast<int>(errc::owner_died) ||
                     code.load() == static_cast<int>(errc::incompatible_layout)));
            REQUIRE(named.load() == 1);
        }
        REQUIRE(took_ms.load() < 2000);
    }
}
