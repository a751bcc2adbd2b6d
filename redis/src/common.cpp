// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "common.hpp"

#include <procsafe/redis.hpp>

#include <algorithm>
#include <chrono>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include <unistd.h>

namespace procsafe::redis {

endpoint endpoint::parse(std::string_view text) {
    endpoint e;
    std::string_view host = text, port;
    if (!text.empty() && text.front() == '[') {  // [v6]:port
        const auto close = text.find(']');
        if (close == std::string_view::npos) throw std::invalid_argument("'" + std::string(text) + "': no ']' after '['");
        host = text.substr(1, close - 1);
        const auto rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') throw std::invalid_argument("'" + std::string(text) + "': ':PORT' expected after ']'");
            port = rest.substr(1);
        }
    } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos && text.find(':') == colon) {
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    if (host.empty()) throw std::invalid_argument("'" + std::string(text) + "': no host (HOST:PORT)");
    e.host = std::string(host);
    if (!port.empty() || (text.size() > 0 && text.back() == ':')) {
        int p = 0;
        const auto r = std::from_chars(port.data(), port.data() + port.size(), p);
        if (r.ec != std::errc{} || r.ptr != port.data() + port.size() || p < 1 || p > 65535) {
            throw std::invalid_argument("'" + std::string(text) + "': the port must be 1 to 65535");
        }
        e.port = p;
    }
    return e;
}

std::vector<endpoint> endpoint::parse_list(std::string_view text) {
    std::vector<endpoint> out;
    std::size_t at = 0;
    for (;;) {
        const std::size_t comma = std::min(text.find(',', at), text.size());
        const std::string_view one = text.substr(at, comma - at);
        if (one.empty()) throw std::invalid_argument("'" + std::string(text) + "': an empty HOST:PORT in the list");
        if (out.size() >= 1000) throw std::invalid_argument("'" + std::string(text).substr(0, 64) + "...': more than 1000 nodes");
        out.push_back(parse(one));
        if (comma == text.size()) break;
        at = comma + 1;
    }
    return out;
}

std::string endpoint::str() const {
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

credentials credentials::from_environment() {
    credentials c;
    // NOLINTBEGIN(concurrency-mt-unsafe): read at start-up; nothing here sets the environment
    if (const char* u = std::getenv("PROCSAFE_REDIS_USER")) c.user = u;
    if (const char* p = std::getenv("PROCSAFE_REDIS_PASSWORD")) c.password = p;
    // NOLINTEND(concurrency-mt-unsafe)
    return c;
}

credentials credentials::from_file(const std::string& path, const std::string& user) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("password file '" + path + "': cannot be read");
    credentials c;
    std::getline(in, c.password);
    if (!c.password.empty() && c.password.back() == '\r') c.password.pop_back();
    if (c.password.empty()) throw std::runtime_error("password file '" + path + "': its first line is empty");
    c.user = user;
    if (c.user.empty()) {
        if (const char* u = std::getenv("PROCSAFE_REDIS_USER")) c.user = u;  // NOLINT(concurrency-mt-unsafe): as above
    }
    return c;
}

namespace keys {
std::string prefix(std::string_view ns, std::uint32_t stripe) {
    return "{procsafe:" + std::string(ns) + (stripe == 0 ? std::string() : "|" + std::to_string(stripe)) + "}:";
}
std::string totals(std::string_view ns, std::uint32_t stripe) { return prefix(ns, stripe) + "total"; }
std::string watermarks(std::string_view ns, std::string_view reporter, std::uint32_t stripe) {
    return prefix(ns, stripe) + "wm:" + std::string(reporter);
}
std::string gauges(std::string_view ns, std::string_view reporter, std::uint32_t stripe) {
    return prefix(ns, stripe) + "gauge:" + std::string(reporter);
}
std::string reporters(std::string_view ns, std::uint32_t stripe) { return prefix(ns, stripe) + "reporters"; }
std::string meta(std::string_view ns, std::uint32_t stripe) { return prefix(ns, stripe) + "meta"; }
std::string config(std::string_view ns) { return prefix(ns) + "config"; }
std::string reporter(std::string_view host, std::string_view segment, std::uint64_t incarnation) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(incarnation));
    return std::string(host) + "|" + std::string(segment) + "|" + hex;
}
std::uint32_t stripe_of(std::string_view reporter, std::uint32_t stripes) {
    if (stripes <= 1) return 0;
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : reporter) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return static_cast<std::uint32_t>(h % stripes);
}
}  // namespace keys

namespace detail {

std::optional<i128> parse_integer(std::string_view s) {
    if (s.empty()) return std::nullopt;
    bool negative = false;
    std::size_t i = 0;
    if (s[0] == '-') negative = true, i = 1;
    if (i == s.size() || s.size() - i > 20) return std::nullopt;
    i128 v = 0;
    for (; i < s.size(); ++i) {
        if (s[i] < '0' || s[i] > '9') return std::nullopt;
        v = v * 10 + (s[i] - '0');
    }
    return negative ? -v : v;
}

std::string to_text(i128 v) {
    if (v == 0) return "0";
    const bool negative = v < 0;
    char buf[48];
    char* p = buf + sizeof buf;
    // Digits of the magnitude, from the sign-safe remainder.
    while (v != 0) {
        const int digit = static_cast<int>(v % 10);
        *--p = static_cast<char>('0' + (digit < 0 ? -digit : digit));
        v /= 10;
    }
    if (negative) *--p = '-';
    return std::string(p, buf + sizeof buf);
}

std::string to_text(double v) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

std::optional<double> parse_real(std::string_view s) {
    if (s.empty()) return std::nullopt;
    double v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size()) return std::nullopt;
    return v;
}

void check_id(std::string_view what, std::string_view s) {
    if (const std::string why = id_problem(s); !why.empty()) throw std::invalid_argument(std::string(what) + " " + why);
}

namespace {

/// The length of the UTF-8 sequence at s[i], or 0 when none starts there
/// (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF).
std::size_t utf8_length(std::string_view s, std::size_t i) {
    const auto byte = [&](std::size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
    const unsigned b = byte(i);
    if (b < 0x80) return 1;
    const std::size_t n = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (n == 0) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((byte(i + k) & 0xc0) != 0x80) return 0;
    const unsigned second = byte(i + 1);
    if ((b == 0xe0 && second < 0xa0) || (b == 0xed && second > 0x9f) || (b == 0xf0 && second < 0x90) || (b == 0xf4 && second > 0x8f)) {
        return 0;
    }
    return n;
}

}  // namespace

}  // namespace detail

std::string id_problem(std::string_view id) {
    std::string quoted = "'";
    for (const char c : id.substr(0, 64)) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u < 0x7f) {
            quoted += c;
        } else {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", u);
            quoted += hex;
        }
    }
    quoted += "': ";
    if (id.empty()) return quoted + "must not be empty";
    if (id.size() > 200) return quoted + "at most 200 bytes";
    for (std::size_t i = 0; i < id.size();) {
        const std::size_t n = detail::utf8_length(id, i);
        if (n == 0) return quoted + "not valid UTF-8";
        const char c = id[i];
        if (n == 1 && (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)) return quoted + "printable characters only, no space";
        if (c == '|' || c == '{' || c == '}') return quoted + "no '|', '{' or '}' (they delimit Redis keys)";
        i += n;
    }
    return {};
}

namespace detail {

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace detail
}  // namespace procsafe::redis
