// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "catch.hpp"
#include "support/process.hpp"

#include <procsafe/procsafe.hpp>

#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>

using procsafe_test::unique_name;

namespace {
struct shm_stat {
    bool exists;
    mode_t mode;
};
shm_stat stat_shm(const std::string& name) {
    struct stat st {};
    const bool ok = ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
    return {ok, static_cast<mode_t>(st.st_mode & 0777)};
}
}  // namespace

TEST_CASE("create, open by name, find what another handle constructed", "[segment]") {
    const auto name = unique_name("open");
    auto owner = procsafe::segment::create(name, 64 * 1024);
    REQUIRE(owner.is_owner());
    REQUIRE(owner.name() == name);
    REQUIRE(owner.size() >= 64 * 1024);
    owner.construct<procsafe::atomic_counter<long>>("hits", 5);

    auto peer = procsafe::segment::open(name);
    REQUIRE_FALSE(peer.is_owner());
    auto& hits = peer.find<procsafe::atomic_counter<long>>("hits");
    REQUIRE(hits.increment() == 6);
    REQUIRE(owner.find<procsafe::atomic_counter<long>>("hits").value() == 6);
    REQUIRE(peer.contains("hits"));
    REQUIRE_FALSE(peer.contains("misses"));
}

TEST_CASE("find_or_construct constructs once, then finds", "[segment]") {
    auto seg = procsafe::segment::anonymous(64 * 1024);
    auto& a = seg.find_or_construct<procsafe::mutex_counter<int>>("x", 7);
    auto& b = seg.find_or_construct<procsafe::mutex_counter<int>>("x", 100);
    REQUIRE(&a == &b);
    REQUIRE(b.value() == 7);
}

TEST_CASE("open_or_create creates, then opens", "[segment]") {
    const auto name = unique_name("ooc");
    auto first = procsafe::segment::open_or_create(name, 64 * 1024);
    auto second = procsafe::segment::open_or_create(name, 64 * 1024);
    REQUIRE(first.is_owner());
    REQUIRE_FALSE(second.is_owner());
    first.construct<procsafe::atomic_counter<int>>("n").increment();
    REQUIRE(second.find<procsafe::atomic_counter<int>>("n").value() == 1);
}

TEST_CASE("named segments are created 0600 whatever the umask, and mode can widen them", "[segment]") {
    const mode_t old = ::umask(0);
    const auto a = unique_name("mode");
    const auto b = unique_name("mode");
    {
        auto seg = procsafe::segment::create(a, 4096);
        REQUIRE(stat_shm(a).mode == 0600);
        auto wide = procsafe::segment::create(b, 4096, 0660);
        REQUIRE(stat_shm(b).mode == 0660);
    }
    ::umask(077);
    {
        auto wide = procsafe::segment::create(b, 4096, 0644);
        REQUIRE(stat_shm(b).mode == 0644);  // umask does not narrow an explicit mode either
    }
    ::umask(old);
}

TEST_CASE("the creating owner removes the segment on destruction, others do not", "[segment]") {
    const auto name = unique_name("own");
    {
        auto owner = procsafe::segment::create(name, 4096);
        { auto peer = procsafe::segment::open(name); }
        REQUIRE(stat_shm(name).exists);  // a peer's destruction left it
    }
    REQUIRE_FALSE(stat_shm(name).exists);

    {
        auto kept = procsafe::segment::create(name, 4096);
        kept.disown();
    }
    REQUIRE(stat_shm(name).exists);
    REQUIRE(procsafe::segment::remove(name));
    REQUIRE_FALSE(procsafe::segment::remove(name));
}

TEST_CASE("a forked child's copy of the owner never removes the segment", "[segment][multiprocess]") {
    const auto name = unique_name("fork");
    auto owner = procsafe::segment::create(name, 4096);
    // The child lets its copy of `owner` be destroyed by exit() (not _exit),
    // the worst case: destructors run in the child.
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        { auto moved = std::move(owner); }
        ::_exit(stat_shm(name).exists ? 0 : 1);
    }
    REQUIRE(procsafe_test::exited_ok(procsafe_test::wait_bounded(pid, std::chrono::seconds(30))));
    REQUIRE(stat_shm(name).exists);
}

TEST_CASE("is_stale tells that the name was removed or recreated", "[segment]") {
    const auto name = unique_name("stale");
    auto owner = procsafe::segment::create(name, 4096);
    auto peer = procsafe::segment::open(name);
    REQUIRE_FALSE(peer.is_stale());
    REQUIRE(procsafe::segment::remove(name));
    REQUIRE(peer.is_stale());
    auto again = procsafe::segment::create(name, 4096);
    REQUIRE(peer.is_stale());
    REQUIRE_FALSE(procsafe::segment::open(name).is_stale());
    // The first owner must not remove the new segment when it goes away.
    { auto gone = std::move(owner); }
    REQUIRE(stat_shm(name).exists);
}

TEST_CASE("a moved-from segment is inert: it owns nothing, maps nothing, and removes nothing", "[segment]") {
    const auto name = unique_name("move");
    auto a = procsafe::segment::create(name, 4096);
    auto b = std::move(a);
    REQUIRE(b.is_owner());
    REQUIRE(b.name() == name);
    b.construct<procsafe::atomic_counter<int>>("n");
    // The moved-from object: no name, no mapping, no ownership, not stale.
    REQUIRE_FALSE(a.is_owner());  // NOLINT(bugprone-use-after-move): looking at it is the point
    REQUIRE(a.name().empty());
    REQUIRE(a.size() == 0);
    REQUIRE_FALSE(a.is_stale());
    { auto gone = std::move(a); }  // destroying it removes nothing
    REQUIRE(stat_shm(name).exists);
    REQUIRE(b.find<procsafe::atomic_counter<int>>("n").value() == 0);
    // Moved onto: the segment it held before is released (and removed, as its owner).
    const auto other = unique_name("move");
    auto c = procsafe::segment::create(other, 4096);
    c = std::move(b);
    REQUIRE_FALSE(stat_shm(other).exists);
    REQUIRE(stat_shm(name).exists);
    REQUIRE(c.find<procsafe::atomic_counter<int>>("n").value() == 0);
}

TEST_CASE("the smallest segment (1 byte asked, one page made) can be opened", "[segment]") {
    const auto name = unique_name("tiny");
    auto seg = procsafe::segment::create(name, 1);
    REQUIRE(seg.size() == 4096);
    auto peer = procsafe::segment::open(name);  // used to be refused: "header says 4096 bytes"
    REQUIRE(peer.size() == seg.size());
}
