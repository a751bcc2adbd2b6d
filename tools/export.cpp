// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// procsafe export: the Prometheus text format of segments, on stdout or
// written atomically for node_exporter's textfile collector.
#include "common.hpp"

#include <procsafe/prometheus.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace procsafe::cli {

namespace {

std::string errno_text(int e) { return std::system_category().message(e); }

/// Writes body to path so that a reader sees the old file or the new one,
/// never a part: a temporary file in the same directory (same file system),
/// written and flushed, then renamed over path.
void write_atomically(const std::string& path, const std::string& body) {
    namespace fs = std::filesystem;
    const fs::path target(path);
    if (target.filename().empty()) throw failure(fmt::format("--output '{}' names a directory, not a file", path));
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    // A dot file: node_exporter reads only *.prom, and ls hides it.
    std::string tmp = (dir / ("." + target.filename().string() + ".XXXXXX")).string();
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) throw failure(fmt::format("cannot write '{}': a temporary file in '{}': {}", path, dir.string(), errno_text(errno)));
    auto fail = [&](const char* what, int e) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw failure(fmt::format("cannot write '{}': {}: {}", path, what, errno_text(e)));
    };
    // mkstemp makes it 0600; the collector often runs as another user.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    if (::fchmod(fd, 0666 & ~mask) != 0) fail("fchmod", errno);
    for (std::size_t done = 0; done < body.size();) {
        const ssize_t n = ::write(fd, body.data() + done, body.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("write", errno);
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) fail("fsync", errno);
    if (::close(fd) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw failure(fmt::format("cannot write '{}': close: {}", path, errno_text(e)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw failure(fmt::format("cannot write '{}': rename: {}", path, errno_text(e)));
    }
}

}  // namespace

int run_export(const export_options& o) {
    if (o.format != "prometheus") throw failure(fmt::format("unknown --format '{}' (known: prometheus)", o.format));
    procsafe::prometheus_exposition text;
    for (const auto& name : o.segments) {
        try {
            text.add(procsafe::segment_view::open(name));
        } catch (const procsafe::error& e) {
            if (!(o.allow_missing && e.code_value() == errc::segment_not_found)) throw failure(describe(e));
            print_error("warning: " + describe(e) + ": left out");
        }
    }
    for (const auto& w : text.warnings()) print_error("warning: " + w);
    const std::string body = text.str();
    if (o.output.empty() || o.output == "-") {
        if (std::fwrite(body.data(), 1, body.size(), stdout) != body.size() || std::fflush(stdout) != 0) {
            throw failure("cannot write to stdout: " + errno_text(errno));
        }
        return 0;
    }
    write_atomically(o.output, body);
    return 0;
}

}  // namespace procsafe::cli
