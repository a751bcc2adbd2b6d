// procsafe/error.hpp: procsafe::error, procsafe::errc and their error category.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace procsafe {

/// What went wrong, as a code in procsafe's own error category.
/// Each bad input has its own code, so callers (and tests) can tell them apart.
enum class errc {
    segment_not_found = 1,  ///< open() of a segment that does not exist
    segment_exists,         ///< create() of a segment whose name is taken
    object_not_found,     ///< find() of a name the segment does not hold
    object_exists,        ///< construct() of a name the segment already holds
    type_mismatch,        ///< find() with another type than the one constructed
    bad_magic,            ///< the segment was not made by procsafe (foreign or garbage)
    incompatible_layout,  ///< made by procsafe, but another layout, Boost or line size
    invalid_name,         ///< a segment or object name procsafe does not accept
    out_of_space,         ///< no room: in the segment, or for the segment (/dev/shm)
    permission_denied,    ///< the OS refused access, or the segment has a foreign owner
    timed_out,            ///< a peer did not finish in time (setting up, or holding a lock)
    owner_died,           ///< a process died while changing the segment's directory
    invalid_argument,     ///< a bad size, mode or slot count
    out_of_range,         ///< an index past the end of a counter_array
    unsupported,          ///< not available on this platform
    system_error,         ///< any other OS failure (the message has errno's text)
};

namespace detail {

class error_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "procsafe"; }
    std::string message(int code) const override {
        switch (static_cast<errc>(code)) {
            case errc::segment_not_found: return "segment not found";
            case errc::segment_exists: return "segment already exists";
            case errc::object_not_found: return "object not found";
            case errc::object_exists: return "object already exists";
            case errc::type_mismatch: return "object has another type";
            case errc::bad_magic: return "not a procsafe segment";
            case errc::incompatible_layout: return "incompatible segment layout";
            case errc::invalid_name: return "invalid name";
            case errc::out_of_space: return "out of space";
            case errc::permission_denied: return "permission denied";
            case errc::timed_out: return "timed out waiting for another process";
            case errc::owner_died: return "a process died while changing the segment";
            case errc::invalid_argument: return "invalid argument";
            case errc::out_of_range: return "index out of range";
            case errc::unsupported: return "not supported on this platform";
            case errc::system_error: return "system error";
        }
        return "unknown procsafe error";
    }
};

}  // namespace detail

/// The category of every procsafe::errc.
inline const std::error_category& error_category() noexcept {
    static const detail::error_category_impl instance;
    return instance;
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

/// The one exception type procsafe throws for bad input and OS failures
/// (std::bad_alloc aside, for process-local allocations).
/// what() names the segment and the object involved, when there is one.
class error : public std::system_error {
public:
    error(errc code, std::string_view segment, std::string_view object, std::string_view detail);

    errc code_value() const noexcept { return static_cast<errc>(code().value()); }
    /// The segment's name ("(anonymous)" for an anonymous one), or empty.
    const std::string& segment_name() const noexcept { return segment_; }
    /// The object's name, or empty when the error is about the segment itself.
    const std::string& object_name() const noexcept { return object_; }
    /// What went wrong, without the names and the category's words.
    const std::string& detail() const noexcept { return detail_; }

private:
    static std::string compose(std::string_view segment, std::string_view object, std::string_view detail);

    std::string segment_;
    std::string object_;
    std::string detail_;
};

#if PROCSAFE_OUT_OF_LINE
PROCSAFE_DECL error::error(errc code, std::string_view segment, std::string_view object, std::string_view detail)
    : std::system_error(make_error_code(code), compose(segment, object, detail)),
      segment_(segment),
      object_(object),
      detail_(detail) {}

PROCSAFE_DECL std::string error::compose(std::string_view segment, std::string_view object, std::string_view detail) {
    std::string s = "procsafe";
    if (!segment.empty()) s.append(": segment '").append(segment).append("'");
    if (!object.empty()) s.append(": object '").append(object).append("'");
    if (!detail.empty()) s.append(": ").append(detail);
    return s;
}
#endif

}  // namespace procsafe

template <>
struct std::is_error_code_enum<procsafe::errc> : std::true_type {};
