// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// What the procsafe command's subcommands share: their options, the one-line
// failure, the words for a segment's errors, tables, and objects as rows,
// series and JSON.

#include <procsafe/error.hpp>
#include <procsafe/segment_view.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace procsafe::cli {

/// A failure reported in one line on stderr ("procsafe show: ..."), exit 1.
struct failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct list_options {
    bool json = false;
    bool all = false;  ///< also the shared memory objects that are not procsafe's
};
struct show_options {
    std::string segment;
    bool json = false;
};
struct watch_options {
    std::string segment;
    double interval = 1.0;  ///< seconds
    long count = 0;         ///< refreshes; 0: until interrupted
};
struct export_options {
    std::vector<std::string> segments;
    std::string format = "prometheus";
    std::string output;  ///< empty: stdout
    bool allow_missing = false;
};
struct serve_options {
    std::vector<std::string> segments;
    std::string listen = "127.0.0.1:9464";
};
struct rm_options {
    std::vector<std::string> segments;
    bool force = false;  ///< remove what is under the name, procsafe's or not
};

int run_list(const list_options& o);
int run_rm(const rm_options& o);
int run_show(const show_options& o);
int run_watch(const watch_options& o);
int run_export(const export_options& o);
int run_serve(const serve_options& o);

/// The subcommand running ("show"), for messages.
extern std::string command_name;
/// Prints "procsafe COMMAND: line" on stderr.
void print_error(std::string_view line);

/// One line about a segment's error, naming it: "segment 'web' not found".
std::string describe(const procsafe::error& e);

/// Opens a segment for reading; its errors become failures (describe()).
procsafe::segment_view open_view(std::string_view name);

/// s, safe to print on a terminal: control characters (C0, DEL, C1) and
/// bytes that are not UTF-8 become \xHH. Every table cell and error line
/// goes through it: a hostile segment's strings must not reach a terminal.
std::string terminal_safe(std::string_view s);

/// "1 object", "7 objects": a count and its noun, plural unless it is 1.
std::string counted(std::uint64_t n, std::string_view noun);
/// "1.5 KiB", "64 MiB"; bytes below 1 KiB as "512 B".
std::string human_bytes(std::uint64_t bytes);
/// Local time "2026-11-24 22:45:50" of nanoseconds since the epoch.
std::string local_time(std::uint64_t ns_since_epoch);
/// The user's (group's) name, or the number when it has none.
std::string user_name(std::uint32_t uid);
std::string group_name(std::uint32_t gid);
/// "0640".
std::string mode_string(std::uint32_t mode);

std::string kind_name(procsafe::detail::object_kind k);
std::string metric_name(procsafe::metric_type m);
std::string status_name(procsafe::object_status s);

/// The label of element i of an array: code="200", or index="3".
std::string element_label(const procsafe::object_info& o, std::size_t i);

/// One number of an object, as watch follows it: "requests",
/// "responses{code="200"}", "request_seconds_count", "request_seconds_sum".
struct series {
    std::string name;
    procsafe::number value;
};
/// Every series of an object (none when it is not ready or has no value).
std::vector<series> series_of(const procsafe::object_info& o);

/// A number as a double (NaN for nothing), for rates.
double as_double(const procsafe::number& n);

nlohmann::ordered_json json_of(const procsafe::number& n);
nlohmann::ordered_json json_of(const procsafe::segment_info& i);
nlohmann::ordered_json json_of(const procsafe::object_info& o);

/// A text table: columns padded to their widest cell, numbers right-aligned,
/// the last column never padded (it holds free text).
class table {
public:
    explicit table(std::vector<std::string> header, std::vector<bool> right_aligned = {});
    void add(std::vector<std::string> row);
    /// A line of its own under the previous row (a note), printed whole and
    /// not counted in the columns' widths.
    void add_line(std::string line);
    /// The lines, without their newlines.
    std::vector<std::string> lines() const;
    std::string str() const;

private:
    std::vector<std::vector<std::string>> rows_;  // a row of one cell past a table of more: a line of its own
    std::vector<bool> right_;
};

}  // namespace procsafe::cli
