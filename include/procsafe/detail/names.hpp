// procsafe/detail/names.hpp: the rules for segment and object names.
// SPDX-License-Identifier: MIT
#pragma once

// The rules for segment and object names. A segment name becomes a file
// name (/dev/shm/NAME) or a Win32 object name, so it is short and plain: no
// '/', no leading '.', nothing a shell or a path would read specially.

#include <procsafe/error.hpp>
#include <procsafe/metadata.hpp>

#include <string_view>

namespace procsafe::detail {

inline constexpr std::size_t max_name_length = 200;

/// A letter, then letters, digits, '_', '-', '.'; at most 200 characters.
/// Throws: invalid_name.
inline void check_segment_name(std::string_view name) {
    auto bad = [&](const char* why) {
        throw error(errc::invalid_name, name.size() > 64 ? name.substr(0, 64) : name, {}, why);
    };
    if (name.empty()) bad("a segment name must not be empty");
    if (name.size() > max_name_length) bad("a segment name has at most 200 characters");
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (!letter(name[0])) bad("a segment name starts with a letter");
    for (char c : name) {
        if (!letter(c) && !digit(c) && c != '_' && c != '-' && c != '.') {
            bad("a segment name has only letters, digits, '_', '-' and '.'");
        }
    }
}

/// Why `name` cannot be an object's name (printable characters, valid
/// UTF-8, 1 to 200 bytes), or nullptr: the rule construct() applies, and a
/// reader applies again to what it reads from a segment.
inline const char* object_name_problem(std::string_view name) noexcept {
    if (name.empty()) return "an object name must not be empty";
    if (name.size() > max_name_length) return "an object name has at most 200 characters";
    for (char c : name) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "an object name must be printable";
    }
    if (!valid_utf8(name)) return "an object name must be valid UTF-8";
    return nullptr;
}

/// Throws: invalid_name when object_name_problem() finds one.
PROCSAFE_DECL void check_object_name(std::string_view segment, std::string_view name);
#if PROCSAFE_OUT_OF_LINE
PROCSAFE_DECL void check_object_name(std::string_view segment, std::string_view name) {
    if (const char* why = object_name_problem(name)) {
        // The name as it came, escaped: it may hold anything.
        throw error(errc::invalid_name, segment, escape_bytes(name.size() > 64 ? name.substr(0, 64) : name), why);
    }
}
#endif

}  // namespace procsafe::detail
