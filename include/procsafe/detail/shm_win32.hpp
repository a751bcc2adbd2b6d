// procsafe/detail/shm_win32.hpp: Win32 shared memory sections.
// SPDX-License-Identifier: MIT
#pragma once

// Win32 shared memory (detail::mapping on Windows; the POSIX twin with the
// same interface is shm_posix.hpp): a named, pagefile-backed section (CreateFileMapping
// with SEC_COMMIT, so a machine without room says so at create, not later).
// Not Boost's windows emulation of POSIX shared memory: that one is a file
// under ProgramData with a boot-time stamp in its path that broke between
// Boost versions (boostorg/interprocess #279, #216).
//
// Lifetime: a Windows section exists while some process holds a handle to
// it; procsafe's segment keeps its handle open while it is alive, and the
// section disappears with the last one. Names live in the session's
// namespace ("Local\\NAME") unless the name starts with "Global." (then
// "Global\\REST", which needs SeCreateGlobalPrivilege to create).

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/deadline.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/error.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace procsafe::detail {

inline errc errc_from_win32(DWORD e) {
    switch (e) {
        case ERROR_FILE_NOT_FOUND:
        case ERROR_PATH_NOT_FOUND: return errc::segment_not_found;
        case ERROR_ALREADY_EXISTS: return errc::segment_exists;
        case ERROR_ACCESS_DENIED:
        case ERROR_PRIVILEGE_NOT_HELD: return errc::permission_denied;
        case ERROR_NOT_ENOUGH_MEMORY:
        case ERROR_OUTOFMEMORY:
        case ERROR_COMMITMENT_LIMIT:
        case ERROR_DISK_FULL: return errc::out_of_space;
        case ERROR_INVALID_NAME:
        case ERROR_BAD_PATHNAME: return errc::invalid_name;
        default: return errc::system_error;
    }
}

[[noreturn]] inline void throw_win32(std::string_view segment, const char* what, DWORD e) {
    throw error(errc_from_win32(e), segment, {},
                std::string(what) + ": " + std::system_category().message(static_cast<int>(e)));
}

inline std::size_t page_size() {
    static const std::size_t size = [] {
        SYSTEM_INFO info;
        ::GetSystemInfo(&info);
        return static_cast<std::size_t>(info.dwPageSize);
    }();
    return size;
}

/// One view of a named section, owned by this process.
class mapping {
public:
    mapping() = default;
    mapping(const mapping&) = delete;
    mapping& operator=(const mapping&) = delete;
    mapping(mapping&& o) noexcept { swap(o); }
    mapping& operator=(mapping&& o) noexcept {
        mapping tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    ~mapping() {
        if (addr_ != nullptr) ::UnmapViewOfFile(addr_);
        if (handle_ != nullptr) ::CloseHandle(handle_);
    }
    void swap(mapping& o) noexcept {
        std::swap(addr_, o.addr_);
        std::swap(size_, o.size_);
        std::swap(handle_, o.handle_);
    }

    /// Creates the section exclusively, commits its pages and maps it.
    /// `mode` has no Windows meaning: a section carries its creator's
    /// default security (the creator and administrators).
    static mapping create(std::string_view name, std::size_t bytes, unsigned /*mode*/) {
        mapping m;
        const auto size = static_cast<unsigned long long>(bytes);
        m.handle_ = ::CreateFileMappingA(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE | SEC_COMMIT,
                                         static_cast<DWORD>(size >> 32), static_cast<DWORD>(size & 0xffffffffu),
                                         os_name(name).c_str());
        const DWORD e = ::GetLastError();
        if (m.handle_ == nullptr) throw_win32(name, "CreateFileMapping", e);
        if (e == ERROR_ALREADY_EXISTS) throw_win32(name, "CreateFileMapping", e);  // m closes the handle
        m.map(name, bytes);
        return m;
    }

    /// Opens an existing section and maps all of it. A section has its size
    /// from birth, so there is nothing to wait for: one smaller than
    /// `min_size` is not procsafe's.
    static mapping open(std::string_view name, std::size_t min_size, wait_clock::time_point /*deadline*/) {
        mapping m;
        m.handle_ = ::OpenFileMappingA(FILE_MAP_ALL_ACCESS, FALSE, os_name(name).c_str());
        if (m.handle_ == nullptr) throw_win32(name, "OpenFileMapping", ::GetLastError());
        m.map(name, 0);
        MEMORY_BASIC_INFORMATION info{};
        if (::VirtualQuery(m.addr_, &info, sizeof info) == 0) throw_win32(name, "VirtualQuery", ::GetLastError());
        m.size_ = static_cast<std::size_t>(info.RegionSize);
        if (m.size_ < min_size) throw error(errc::timed_out, name, {}, "too small to be a procsafe segment");
        return m;
    }

    /// Opens the section for reading only (FILE_MAP_READ). Never waits.
    static mapping open_read_only(std::string_view name, std::size_t min_size) {
        mapping m;
        m.handle_ = ::OpenFileMappingA(FILE_MAP_READ, FALSE, os_name(name).c_str());
        if (m.handle_ == nullptr) throw_win32(name, "OpenFileMapping", ::GetLastError());
        void* p = ::MapViewOfFile(m.handle_, FILE_MAP_READ, 0, 0, 0);
        if (p == nullptr) throw_win32(name, "MapViewOfFile", ::GetLastError());
        m.addr_ = p;
        MEMORY_BASIC_INFORMATION info{};
        if (::VirtualQuery(m.addr_, &info, sizeof info) == 0) throw_win32(name, "VirtualQuery", ::GetLastError());
        m.size_ = static_cast<std::size_t>(info.RegionSize);
        if (m.size_ < min_size) throw error(errc::timed_out, name, {}, "too small to be a procsafe segment");
        return m;
    }

    /// Who may use the section: Windows sections carry an ACL, not a mode.
    struct owner_facts {
        std::uint32_t uid = 0, gid = 0, mode = 0;
    };
    owner_facts owner(std::string_view /*name*/) const noexcept { return {}; }

    /// Windows cannot list the sections of a session.
    static std::vector<std::string> names() { return {}; }

    /// Windows has no fork(): nothing would inherit an anonymous mapping.
    [[noreturn]] static mapping anonymous(std::size_t /*bytes*/) {
        throw error(errc::unsupported, "(anonymous)", {},
                    "anonymous segments are inherited by fork(), which Windows does not have: use a named one");
    }

    /// A Windows section has no name to unlink: it disappears when the last
    /// process that maps it closes it. Nothing to do; says so (false).
    static bool remove(std::string_view /*name*/, wait_clock::time_point /*deadline*/) noexcept { return false; }

    /// A section lives while any process holds a handle to it: there is no
    /// orphan to remove.
    template <class Judge>
    static std::string remove_if(std::string_view /*name*/, wait_clock::time_point /*deadline*/, Judge&& /*judge*/) {
        return "a Windows section lives as long as a process holds it";
    }

    void* addr() const noexcept { return addr_; }
    std::size_t size() const noexcept { return size_; }
    /// A mapped Windows section cannot be removed under us.
    std::size_t current_size(std::string_view) const noexcept { return size_; }  // a section cannot shrink
    bool is_stale(std::string_view /*name*/) const noexcept { return false; }
    /// Nothing to remove (see remove()).
    void remove_if_same(std::string_view /*name*/, wait_clock::time_point /*deadline*/) const noexcept {}

private:
    /// "Local\\NAME", or "Global\\REST" for a name that starts with "Global.".
    static std::string os_name(std::string_view name) {
        constexpr std::string_view global = "Global.";
        const bool is_global = name.substr(0, global.size()) == global;
        std::string os(is_global ? "Global\\" : "Local\\");
        os.append(name.substr(is_global ? global.size() : 0));
        return os;
    }

    void map(std::string_view name, std::size_t bytes) {
        void* p = ::MapViewOfFile(handle_, FILE_MAP_ALL_ACCESS, 0, 0, bytes);
        if (p == nullptr) throw_win32(name, "MapViewOfFile", ::GetLastError());
        addr_ = p;
        size_ = bytes;
    }

    void* addr_ = nullptr;
    std::size_t size_ = 0;
    HANDLE handle_ = nullptr;
};

}  // namespace procsafe::detail
