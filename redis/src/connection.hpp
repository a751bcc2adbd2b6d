// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// A hiredis connection with bounded waits: a connect timeout, a timeout on
// every read and write (without one, a command to a stopped server blocks
// forever), AUTH on every connect (a reconnect does not re-AUTH by itself),
// binary-safe arguments, and pipelines. After an I/O error hiredis' context
// is dead: the connection says so and is dropped by its owner.

#include <procsafe/redis.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;
struct redisReply;

namespace procsafe::redis::detail {

/// The connection is lost (refused, timed out, closed): make another.
struct io_failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};
/// Redis answered with an error (AUTH refused, NOPERM, ...).
struct command_failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct reply_deleter {
    void operator()(redisReply* r) const noexcept;
};
using reply = std::unique_ptr<redisReply, reply_deleter>;

/// The reply's text (a string, status or error reply), or its integer as
/// text; "" for nil.
std::string text_of(const redisReply& r);
bool is_error(const redisReply& r);
bool is_array(const redisReply& r);
bool is_nil(const redisReply& r);
std::size_t elements(const redisReply& r);
const redisReply& element(const redisReply& r, std::size_t i);

class connection {
public:
    /// Connects, sets the timeouts, AUTHs. Throws: io_failure, command_failure.
    explicit connection(const connection_options& o);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    /// One command and its reply (an error reply is returned, not thrown).
    /// Throws: io_failure.
    reply run(const std::vector<std::string>& args);
    /// The same, throwing command_failure on an error reply.
    reply must(const std::vector<std::string>& args);

    /// Pipelining: append commands, send() them all, then read one reply
    /// each, in order.
    void append(const std::vector<std::string>& args);
    void send();
    reply next_reply();

    const std::string& where() const noexcept { return where_; }

private:
    [[noreturn]] void lost(const char* doing);
    void time_left(double deadline, const char* doing);
    void full_timeout(const char* doing);
    redisContext* c_ = nullptr;
    std::string where_;
    double command_timeout_ = 2.0;
    bool shortened_ = false;
    bool unsent_ = false;     // commands appended, not yet written  // the socket's timeout is less than command_timeout_
};

/// Blocks SIGPIPE in this thread while a connection writes (hiredis
/// write()s to its socket, and a peer that closed it would otherwise kill
/// the process), and consumes the SIGPIPE that such a write left pending.
/// Changes no process-wide signal setting.
class sigpipe_guard {
public:
    sigpipe_guard() noexcept;
    ~sigpipe_guard();
    sigpipe_guard(const sigpipe_guard&) = delete;
    sigpipe_guard& operator=(const sigpipe_guard&) = delete;

private:
    bool was_pending_ = false;
    bool was_blocked_ = false;
};

}  // namespace procsafe::redis::detail
