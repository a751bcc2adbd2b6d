// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "connection.hpp"

#include "common.hpp"

#include <hiredis.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <ctime>

#include <pthread.h>
#include <sys/time.h>

namespace procsafe::redis::detail {

void reply_deleter::operator()(redisReply* r) const noexcept {
    if (r != nullptr) freeReplyObject(r);
}

std::string text_of(const redisReply& r) {
    switch (r.type) {
        case REDIS_REPLY_STRING:
        case REDIS_REPLY_STATUS:
        case REDIS_REPLY_ERROR: return std::string(r.str, r.len);
        case REDIS_REPLY_INTEGER: return std::to_string(r.integer);
        default: return {};
    }
}
bool is_error(const redisReply& r) { return r.type == REDIS_REPLY_ERROR; }
bool is_array(const redisReply& r) { return r.type == REDIS_REPLY_ARRAY; }
bool is_nil(const redisReply& r) { return r.type == REDIS_REPLY_NIL; }
std::size_t elements(const redisReply& r) { return r.type == REDIS_REPLY_ARRAY ? r.elements : 0; }
const redisReply& element(const redisReply& r, std::size_t i) { return *r.element[i]; }

namespace {

timeval to_timeval(double seconds) {
    if (!(seconds > 0)) seconds = 0.001;
    if (seconds > 86400) seconds = 86400;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(seconds);
    tv.tv_usec = static_cast<suseconds_t>(std::lround((seconds - static_cast<double>(tv.tv_sec)) * 1e6));
    if (tv.tv_usec >= 1'000'000) ++tv.tv_sec, tv.tv_usec -= 1'000'000;
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000;
    return tv;
}

struct argv_view {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    explicit argv_view(const std::vector<std::string>& args) {
        argv.reserve(args.size());
        lens.reserve(args.size());
        for (const auto& a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
    }
};

}  // namespace

connection::connection(const connection_options& o) : where_("redis " + o.redis.str()), command_timeout_(o.command_timeout) {
    sigpipe_guard guard;
    c_ = redisConnectWithTimeout(o.redis.host.c_str(), o.redis.port, to_timeval(o.connect_timeout));
    if (c_ == nullptr) throw io_failure(where_ + ": cannot allocate a connection");
    if (c_->err != 0) {
        std::string why = c_->errstr;
        redisFree(c_);
        c_ = nullptr;
        throw io_failure(where_ + ": " + (why.empty() ? "cannot connect" : why));
    }
    if (redisSetTimeout(c_, to_timeval(o.command_timeout)) != REDIS_OK || redisEnableKeepAlive(c_) != REDIS_OK) {
        std::string why = c_->errstr;
        redisFree(c_);
        c_ = nullptr;
        throw io_failure(where_ + ": cannot set its timeouts: " + why);
    }
    if (!o.auth.password.empty()) {
        std::vector<std::string> args{"AUTH"};
        if (!o.auth.user.empty()) args.push_back(o.auth.user);
        args.push_back(o.auth.password);
        reply r;
        try {
            r = run(args);
        } catch (...) {
            redisFree(c_);
            c_ = nullptr;
            throw;
        }
        if (is_error(*r)) {
            std::string why = text_of(*r);
            redisFree(c_);
            c_ = nullptr;
            throw command_failure(where_ + ": AUTH" + (o.auth.user.empty() ? "" : " as " + o.auth.user) +
                                  " refused: " + why);
        }
    }
}

connection::~connection() {
    if (c_ != nullptr) redisFree(c_);
}

void connection::lost(const char* doing) {
    std::string why = c_->errstr;
    if (why.empty()) why = "connection lost";
    // hiredis reports a read timeout as "Resource temporarily unavailable".
    if (c_->err == REDIS_ERR_IO && (errno == EAGAIN || why.find("temporarily unavailable") != std::string::npos)) {
        why = "timed out";
    }
    throw io_failure(where_ + ": " + doing + ": " + why);
}

reply connection::run(const std::vector<std::string>& args) {
    append(args);
    return next_reply();
}

reply connection::must(const std::vector<std::string>& args) {
    reply r = run(args);
    if (is_error(*r)) throw command_failure(where_ + ": " + args.front() + ": " + text_of(*r));
    return r;
}

void connection::append(const std::vector<std::string>& args) {
    argv_view v(args);
    if (redisAppendCommandArgv(c_, static_cast<int>(args.size()), v.argv.data(), v.lens.data()) != REDIS_OK) {
        lost("append");
    }
    unsent_ = true;
}

// Each read or write of the socket is bounded by the socket's timeout; a
// peer that sends (or takes) a byte just before each timeout would hold a
// reply (or a pipeline's write) for ever. So the whole of it has a
// deadline: before each read or write, the socket's timeout is what is left.
void connection::time_left(double deadline, const char* doing) {
    const double left = deadline - now_seconds();
    if (left <= 0) {
        throw io_failure(where_ + ": " + doing + ": timed out (" + std::to_string(command_timeout_).substr(0, 5) +
                         " s for the whole " + (doing[0] == 'r' ? "reply" : "request") + ")");
    }
    if (redisSetTimeout(c_, to_timeval(left)) != REDIS_OK) lost(doing);
    shortened_ = true;
}

void connection::full_timeout(const char* doing) {
    if (!shortened_) return;
    if (redisSetTimeout(c_, to_timeval(command_timeout_)) != REDIS_OK) lost(doing);
    shortened_ = false;
}

void connection::send() {
    sigpipe_guard guard;
    full_timeout("write");
    unsent_ = false;
    const double deadline = now_seconds() + command_timeout_;
    int done = 0;
    for (bool first = true; done == 0; first = false) {
        if (!first) time_left(deadline, "write");
        if (redisBufferWrite(c_, &done) != REDIS_OK) lost("write");
    }
}

reply connection::next_reply() {
    if (unsent_) send();  // what was appended goes first (as redisGetReply does)
    sigpipe_guard guard;
    void* r = nullptr;
    if (redisGetReplyFromReader(c_, &r) != REDIS_OK) lost("read");
    if (r == nullptr) full_timeout("read");
    const double deadline = now_seconds() + command_timeout_;
    for (bool first = true; r == nullptr; first = false) {
        if (!first) time_left(deadline, "read");
        if (redisBufferRead(c_) != REDIS_OK) lost("read");
        if (redisGetReplyFromReader(c_, &r) != REDIS_OK) lost("read");
    }
    return reply(static_cast<redisReply*>(r));
}

sigpipe_guard::sigpipe_guard() noexcept {
    sigset_t pending, pipe, old;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &old);
    was_blocked_ = sigismember(&old, SIGPIPE) == 1;
}

sigpipe_guard::~sigpipe_guard() {
    if (!was_pending_) {
        sigset_t pending;
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) == 1) {
            sigset_t pipe;
            sigemptyset(&pipe);
            sigaddset(&pipe, SIGPIPE);
            const timespec zero{0, 0};
            while (sigtimedwait(&pipe, nullptr, &zero) < 0 && errno == EINTR) {}
        }
    }
    if (!was_blocked_) {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_UNBLOCK, &pipe, nullptr);
    }
}

}  // namespace procsafe::redis::detail
