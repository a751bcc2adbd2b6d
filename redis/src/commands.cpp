// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The `procsafe` command's flush and fleet subcommands, options parsed.
#include "common.hpp"

#include <procsafe/metadata.hpp>
#include <procsafe/redis.hpp>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include <unistd.h>

namespace procsafe::redis {

namespace {

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

extern "C" void on_stop_signal(int) { stop_requested.store(true, std::memory_order_relaxed); }

/// SIGINT and SIGTERM set stop_requested while it lives.
class stop_signals {
public:
    stop_signals() {
        stop_requested.store(false);
        struct sigaction sa{};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &old_int_);
        ::sigaction(SIGTERM, &sa, &old_term_);
    }
    ~stop_signals() {
        ::sigaction(SIGINT, &old_int_, nullptr);
        ::sigaction(SIGTERM, &old_term_, nullptr);
    }
    stop_signals(const stop_signals&) = delete;
    stop_signals& operator=(const stop_signals&) = delete;

private:
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
};

int fail(const char* command, std::string_view why) {
    // procsafe::error's what() starts "procsafe: ": said once, not twice.
    if (why.substr(0, 10) == "procsafe: ") why.remove_prefix(10);
    std::fprintf(stderr, "procsafe %s: %.*s\n", command, static_cast<int>(why.size()), why.data());
    return 1;
}

std::string age_text(double s) {
    char buf[48];
    if (s < 0) s = 0;
    if (s < 90) std::snprintf(buf, sizeof buf, "%.1f s ago", s);
    else if (s < 5400) std::snprintf(buf, sizeof buf, "%.0f min ago", s / 60);
    else if (s < 172800) std::snprintf(buf, sizeof buf, "%.1f h ago", s / 3600);
    else std::snprintf(buf, sizeof buf, "%.0f days ago", s / 86400);
    return buf;
}

/// "HOST:PORT" or "cluster HOST:PORT,...".
std::string where_of(const connection_options& o) {
    if (o.cluster.empty()) return o.redis.str();
    std::string s = "cluster ";
    for (std::size_t i = 0; i < o.cluster.size(); ++i) s += (i ? "," : "") + o.cluster[i].str();
    return s;
}

/// The namespaces asked for, read. A name in the index that cannot be a
/// namespace (anyone who may flush may add one) is skipped, said on stderr.
std::vector<fleet_snapshot> read_all(const fleet_options& o, const char* command) {
    std::vector<fleet_snapshot> out;
    const auto names = o.fleet_namespace.empty() ? fleet_namespaces(o.connection) : std::vector<std::string>{o.fleet_namespace};
    out.reserve(names.size());
    for (const auto& ns : names) {
        if (const std::string why = id_problem(ns); !why.empty() && o.fleet_namespace.empty()) {
            std::fprintf(stderr, "procsafe %s: the index %s holds a name that is not a namespace: %s: skipped\n", command,
                         std::string(keys::namespaces).c_str(), why.c_str());
            continue;
        }
        out.push_back(read_fleet(o.connection, ns));
    }
    return out;
}

/// Text from Redis, for a terminal: printable ASCII, the rest escaped.
std::string esc(const std::string& s) { return procsafe::detail::escape_bytes(s); }

}  // namespace

int run_flush(const flush_options& given) {
    try {
        flush_options o = given;
        if (o.once) {
            if (!o.log) o.log = [](std::string_view) {};  // the result says what matters
            flusher f(std::move(o));
            stop_signals signals;
            const double deadline = detail::now_seconds() + std::max(0.0, given.retry_for);
            double backoff = 0.1;
            for (;;) {
                const flush_result r = f.flush_once();
                for (const auto& w : r.warnings) std::fprintf(stderr, "procsafe flush: %s\n", w.c_str());
                if (r.ok) {
                    std::printf("flushed %zu segment%s to %s: %zu value%s, %zu gauge%s, %zu FCALL%s in %.1f ms\n",
                                r.segments, r.segments == 1 ? "" : "s", where_of(given.connection).c_str(), r.fields,
                                r.fields == 1 ? "" : "s", r.gauges, r.gauges == 1 ? "" : "s", r.fcalls,
                                r.fcalls == 1 ? "" : "s", r.seconds * 1e3);
                    std::fflush(stdout);
                    return 0;
                }
                const double left = deadline - detail::now_seconds();
                if (left <= 0 || stop_requested.load()) return fail("flush", r.error);
                std::this_thread::sleep_for(std::chrono::duration<double>(std::min(backoff, left)));
                backoff = std::min(backoff * 2, std::max(0.1, given.max_backoff));
            }
        }
        flusher f(std::move(o));
        stop_signals signals;
        f.run(stop_requested);
        return 0;
    } catch (const std::exception& e) {
        return fail("flush", e.what());
    }
}

int run_fleet_show(const fleet_options& o, bool json) {
    try {
        const auto fleets = read_all(o, "fleet show");
        if (json) {
            std::fputs(json_text(fleets).c_str(), stdout);
            std::fflush(stdout);
            return 0;
        }
        const std::string where = where_of(o.connection);
        if (fleets.empty()) std::printf("no procsafe namespace in redis %s\n", where.c_str());
        for (const auto& f : fleets) {
            std::size_t live = 0;
            for (const auto& r : f.reporters) live += r.live ? 1 : 0;
            for (const auto& w : f.warnings) std::fprintf(stderr, "procsafe fleet show: namespace '%s': %s\n", f.fleet_namespace.c_str(), w.c_str());
            std::printf("namespace '%s' (redis %s%s): %zu reporter%s, %zu live\n", f.fleet_namespace.c_str(), where.c_str(),
                        f.stripes == 1 ? "" : (", " + std::to_string(f.stripes) + " stripes").c_str(), f.reporters.size(),
                        f.reporters.size() == 1 ? "" : "s", live);
            std::size_t width = 5;
            for (const auto& [k, v] : f.totals) width = std::max(width, k.size());
            for (const auto& [k, v] : f.gauges) width = std::max(width, k.size() + 8);
            width = std::min<std::size_t>(width, 72);
            std::printf("  %-*s  %s\n", static_cast<int>(width), "field", "fleet total");
            for (const auto& [k, v] : f.totals) std::printf("  %-*s  %s\n", static_cast<int>(width), esc(k).c_str(), esc(v).c_str());
            for (const auto& [k, v] : f.gauges) {
                std::printf("  %-*s  %s\n", static_cast<int>(width), esc(k + " (gauge)").c_str(), esc(v).c_str());
            }
            std::printf("  %-48s %-14s %8s %7s %s\n", "reporter (host|segment|incarnation)", "last flush", "pid", "fields", "");
            for (const auto& r : f.reporters) {
                std::printf("  %-48s %-14s %8lld %7zu %s\n", esc(r.id).c_str(), age_text(r.age_seconds).c_str(),
                            static_cast<long long>(r.pid), r.watermarks.size() + r.gauges.size(), r.live ? "live" : "");
            }
        }
        std::fflush(stdout);
        return 0;
    } catch (const std::exception& e) {
        return fail("fleet show", e.what());
    }
}

int run_fleet_export(const fleet_options& o, const std::string& output) {
    try {
        const std::string text = prometheus_text(read_all(o, "fleet export"));
        if (output.empty() || output == "-") {
            std::fwrite(text.data(), 1, text.size(), stdout);
            std::fflush(stdout);
            return 0;
        }
        // A reader of the file (node_exporter's textfile collector) sees the
        // old file or the new one, never half of one.
        const std::string tmp = output + ".tmp." + std::to_string(::getpid());
        std::FILE* f = std::fopen(tmp.c_str(), "wb");
        if (f == nullptr) return fail("fleet export", "'" + tmp + "': " + std::generic_category().message(errno));
        const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
        const bool closed = std::fclose(f) == 0;
        if (!written || !closed || std::rename(tmp.c_str(), output.c_str()) != 0) {
            const std::string why = std::generic_category().message(errno);
            std::remove(tmp.c_str());
            return fail("fleet export", "'" + output + "': " + why);
        }
        return 0;
    } catch (const std::exception& e) {
        return fail("fleet export", e.what());
    }
}

}  // namespace procsafe::redis
