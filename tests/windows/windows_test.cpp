// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The Windows leg, cross-built with mingw-w64 and run under wine by CI.
// Processes are started with CreateProcess (Windows has no fork): the
// fork-based tests in tests/*.cpp do not build here, and say so at configure.
#include "../support/errors.hpp"
#include "windows_support.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using procsafe::errc;
using procsafe_test::catch_error;
using namespace std::chrono_literals;

namespace {

std::string unique_name(const char* tag) {
    static int serial = 0;
    std::string s = "pst_";
    s += tag;
    s += '_';
    s += std::to_string(::GetCurrentProcessId());
    s += '_';
    s += std::to_string(serial++);
    return s;
}

/// windows_child.exe, next to this executable.
std::string child_path() {
    char buf[MAX_PATH];
    const DWORD n = ::GetModuleFileNameA(nullptr, buf, MAX_PATH);
    std::string path(buf, n);
    return path.substr(0, path.find_last_of("\\/") + 1) + "windows_child.exe";
}

HANDLE spawn(const std::string& args) {
    std::string cmd = "\"" + child_path() + "\" " + args;
    STARTUPINFOA si{};
    si.cb = sizeof si;
    PROCESS_INFORMATION pi{};
    if (!::CreateProcessA(nullptr, cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr, &si, &pi)) return nullptr;
    ::CloseHandle(pi.hThread);
    return pi.hProcess;
}

/// Waits at most `limit` for the child; terminates it after that. Exit code, or -1.
int join(HANDLE h, std::chrono::milliseconds limit = 120s) {
    int code = -1;
    if (::WaitForSingleObject(h, static_cast<DWORD>(limit.count())) == WAIT_OBJECT_0) {
        DWORD c = 0;
        if (::GetExitCodeProcess(h, &c)) code = static_cast<int>(c);
    } else {
        ::TerminateProcess(h, 99);
        ::WaitForSingleObject(h, INFINITE);
    }
    ::CloseHandle(h);
    return code;
}

}  // namespace

TEMPLATE_TEST_CASE("windows: counter operations on a named Win32 segment", "[windows]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>,
                   procsafe::atomic_counter<double>) {
    using T = typename TestType::value_type;
    auto seg = procsafe::segment::create(unique_name("ops"), 64 * 1024);
    auto& c = seg.construct<TestType>("c", T(10));
    REQUIRE(reinterpret_cast<std::uintptr_t>(&c) % procsafe::cache_line == 0);
    REQUIRE(c.increment() == T(11));
    REQUIRE(c.fetch_add(T(4)) == T(11));
    REQUIRE(c.decrement(T(5)) == T(10));
    REQUIRE(c.exchange(T(3)) == T(10));
    T expected = T(2);
    REQUIRE_FALSE(c.compare_exchange(expected, T(9)));
    REQUIRE(expected == T(3));
    REQUIRE(c.compare_exchange(expected, T(9)));
    c.reset();
    REQUIRE(c.value() == T(0));
}

TEMPLATE_TEST_CASE("windows: spawn model, 4 processes x 100,000 = 400,000", "[windows][spawn]",
                   procsafe::atomic_counter<std::int64_t>, procsafe::mutex_counter<std::int64_t>,
                   procsafe::sharded_counter<std::int64_t>) {
    const auto name = unique_name("spawn");
    auto seg = procsafe::segment::create(name, 256 * 1024);
    auto& line = seg.construct<wintest::start_line>("start");
    const char* mode = nullptr;
    std::int64_t (*total)(procsafe::segment&) = nullptr;
    if constexpr (std::is_same_v<TestType, procsafe::sharded_counter<std::int64_t>>) {
        seg.construct<TestType>("sharded");
        mode = "sharded";
        total = [](procsafe::segment& s) { return s.find<TestType>("sharded").sum(); };
    } else if constexpr (std::is_same_v<typename TestType::sync_type, procsafe::atomic_sync>) {
        seg.construct<TestType>("atomic");
        mode = "atomic";
        total = [](procsafe::segment& s) { return s.find<TestType>("atomic").value(); };
    } else {
        seg.construct<TestType>("mutex");
        mode = "mutex";
        total = [](procsafe::segment& s) { return s.find<TestType>("mutex").value(); };
    }
    std::vector<HANDLE> children;
    for (int i = 0; i < 4; ++i) {
        children.push_back(spawn(std::string(mode) + " " + name + " 100000"));
        REQUIRE(children.back() != nullptr);
    }
    REQUIRE(line.release_when(4));
    for (HANDLE h : children) REQUIRE(join(h) == 0);
    REQUIRE(total(seg) == 400'000);
}

TEST_CASE("windows: 10 threads x 100,000 on every counter kind", "[windows][threads]") {
    auto seg = procsafe::segment::create(unique_name("threads"), 256 * 1024);
    auto& a = seg.construct<procsafe::atomic_counter<std::int64_t>>("a");
    auto& m = seg.construct<procsafe::mutex_counter<std::int64_t>>("m");
    auto& s = seg.construct<procsafe::sharded_counter<std::int64_t>>("s");
    std::vector<std::thread> pool;
    for (int t = 0; t < 10; ++t) {
        pool.emplace_back([&] {
            auto w = s.local();
            for (int k = 0; k < 100'000; ++k) {
                a.increment();
                m.increment();
                w.increment();
            }
        });
    }
    for (auto& t : pool) t.join();
    REQUIRE(a.value() == 1'000'000);
    REQUIRE(m.value() == 1'000'000);
    REQUIRE(s.sum() == 1'000'000);
}

TEST_CASE("windows: a mutex counter whose owner is terminated (TerminateProcess) recovers", "[windows][crash]") {
    const auto name = unique_name("abandoned");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    auto& m = seg.construct<procsafe::mutex_counter<std::int64_t>>("mutex", 41);
    auto& board = seg.construct<wintest::board>("board");
    HANDLE h = spawn("hold " + name);
    REQUIRE(h != nullptr);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (board.holding.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    REQUIRE(board.holding.load() == 1);
    REQUIRE(::TerminateProcess(h, 9));
    ::WaitForSingleObject(h, INFINITE);
    ::CloseHandle(h);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(m.increment() == 42);  // the last completed update was 41
    REQUIRE(std::chrono::steady_clock::now() - start < 5s);
    REQUIRE(m.recoveries() == 1);
    REQUIRE(m.increment() == 43);
}

TEST_CASE("windows: a spawned waiter is woken by the increments", "[windows][wait]") {
    const auto name = unique_name("wait");
    auto seg = procsafe::segment::create(name, 64 * 1024);
    auto& a = seg.construct<procsafe::atomic_counter<std::int64_t>>("atomic");
    auto& board = seg.construct<wintest::board>("board");
    HANDLE h = spawn("wait " + name + " 5");
    REQUIRE(h != nullptr);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (board.about_to_wait.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    for (int i = 0; i < 5; ++i) a.increment();
    REQUIRE(join(h) == 0);
    REQUIRE_FALSE(a.wait_at_least_for(6, 50ms));  // and a timeout is a timeout
}

TEST_CASE("windows: every error code that applies", "[windows][error]") {
    const auto name = unique_name("errors");
    auto seg = procsafe::segment::create(name, 16 * 1024);
    seg.construct<procsafe::mutex_counter<int>>("m");
    REQUIRE(catch_error([&] { (void)procsafe::segment::open(unique_name("missing")); }).code() == errc::segment_not_found);
    REQUIRE(catch_error([&] { (void)procsafe::segment::create(name, 4096); }).code() == errc::segment_exists);
    for (const char* bad : {"", "a/b", "a\\b", "..", "1abc", "ctl\x01"}) {
        INFO(bad);
        REQUIRE(catch_error([&] { (void)procsafe::segment::create(bad, 4096); }).code() == errc::invalid_name);
    }
    REQUIRE(catch_error([&] { seg.find<procsafe::atomic_counter<int>>("ghost"); }).code() == errc::object_not_found);
    REQUIRE(catch_error([&] { seg.construct<procsafe::mutex_counter<int>>("m"); }).code() == errc::object_exists);
    const auto mismatch = catch_error([&] { seg.find<procsafe::atomic_counter<long long>>("m"); });
    REQUIRE(mismatch.code() == errc::type_mismatch);
    REQUIRE(mismatch.segment_name() == name);
    REQUIRE(mismatch.object_name() == "m");
    REQUIRE(catch_error([&] { (void)procsafe::segment::create(unique_name("zero"), 0); }).code() == errc::invalid_argument);
    REQUIRE(catch_error([&] { (void)procsafe::segment::anonymous(4096); }).code() == errc::unsupported);
    auto& arr = seg.construct<procsafe::counter_array<int, procsafe::atomic_sync>>("arr", 3);
    REQUIRE(catch_error([&] { arr[3].increment(); }).code() == errc::out_of_range);
    REQUIRE(catch_error([&] {
                for (int i = 0; i < 1000; ++i) seg.construct<procsafe::atomic_counter<int>>("c" + std::to_string(i));
            }).code() == errc::out_of_space);

    // A foreign section under our name: refused, never trusted.
    const auto foreign = unique_name("foreign");
    HANDLE h = ::CreateFileMappingA(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, 0, 8192,
                                    ("Local\\" + foreign).c_str());
    REQUIRE(h != nullptr);
    void* view = ::MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, 0);
    std::memset(view, 0xAB, 8192);
    REQUIRE(catch_error([&] { (void)procsafe::segment::open(foreign); }).code() == errc::bad_magic);
    // And a procsafe segment of another layout version.
    const auto old = unique_name("old");
    auto old_seg = procsafe::segment::create(old, 4096);
    HANDLE h2 = ::OpenFileMappingA(FILE_MAP_ALL_ACCESS, FALSE, ("Local\\" + old).c_str());
    REQUIRE(h2 != nullptr);
    auto* header = static_cast<procsafe::detail::segment_header*>(::MapViewOfFile(h2, FILE_MAP_ALL_ACCESS, 0, 0, 0));
    header->layout += 1;
    REQUIRE(catch_error([&] { (void)procsafe::segment::open(old); }).code() == errc::incompatible_layout);
    ::UnmapViewOfFile(header);
    ::CloseHandle(h2);
    ::UnmapViewOfFile(view);
    ::CloseHandle(h);
}

TEST_CASE("windows: a section lives while mapped and vanishes with its last handle, remove() does nothing",
          "[windows]") {
    const auto name = unique_name("life");
    {
        auto seg = procsafe::segment::create(name, 4096);
        REQUIRE_FALSE(procsafe::segment::remove(name));  // nothing to unlink on Windows
        auto peer = procsafe::segment::open(name);        // still there
        REQUIRE_FALSE(peer.is_stale());
    }
    REQUIRE(catch_error([&] { (void)procsafe::segment::open(name); }).code() == errc::segment_not_found);
}
