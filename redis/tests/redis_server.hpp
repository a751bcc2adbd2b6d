// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// A redis-server of the test's own: 127.0.0.1, a free port, a temporary
// directory, the append-only file fsynced on every write, no RDB, no config
// file. The test starts it, SIGKILLs it, restarts it from its AOF, stops and
// continues it, and removes it with its directory at the end. Every wait is
// bounded.
//
// It is run as docs/redis.md asks: aof-load-truncated no, and
// `redis-check-aof --fix` before each restart. Redis 7.0 (Debian 12's), left
// to load an AOF whose last transaction a kill cut mid-write
// (aof-load-truncated yes, its default), cuts only the torn command and keeps
// the transaction's start; the next transaction's EXEC then applies both at
// the next restart (valkey-io/valkey#4342): a flush's HINCRBY without its
// watermark, counted twice. redis-check-aof --fix cuts before the MULTI.

#include <hiredis.h>

#include <cerrno>
#include <cstdint>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace procsafe_test {

/// `program` on PATH, or "" when there is none.
inline std::string find_on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    const std::string p = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t at = 0;
    while (at <= p.size()) {
        const std::size_t end = std::min(p.find(':', at), p.size());
        const std::string candidate = p.substr(at, end - at) + "/" + program;
        if (end > at && ::access(candidate.c_str(), X_OK) == 0) return candidate;
        at = end + 1;
    }
    return {};
}

/// The redis-server program: PROCSAFE_REDIS_SERVER if set, else the one on
/// PATH; "" when there is none.
inline std::string find_redis_server() {
    if (const char* given = std::getenv("PROCSAFE_REDIS_SERVER")) return ::access(given, X_OK) == 0 ? given : "";
    return find_on_path("redis-server");
}

/// True when a missing redis-server must fail the test (CI), not skip it.
inline bool redis_required() {
    const char* r = std::getenv("PROCSAFE_REQUIRE_REDIS");
    return r != nullptr && *r != '\0' && std::string(r) != "0";
}

/// A TCP port nobody listens on now (bound, read back, closed).
inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        if (fd >= 0) ::close(fd);
        throw std::runtime_error("no free port");
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

/// A free port P for a Redis Cluster node: its cluster bus listens on
/// P + 10000, which must be a port (P < 55536) and free too.
inline int free_cluster_port() {
    for (int i = 0; i < 200; ++i) {
        const int p = free_port();
        if (p >= 55536) continue;
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(p + 10000));
        const bool bus_free = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        if (fd >= 0) ::close(fd);
        if (bus_free) return p;
    }
    throw std::runtime_error("no free port P with P + 10000 free (a cluster node's bus)");
}

class redis_server {
public:
    /// Starts one; `extra` are more redis-server options ("--requirepass", "pw").
    /// cluster_bus: a port P whose P + 10000 is free too (--cluster-enabled yes).
    explicit redis_server(std::vector<std::string> extra = {}, bool cluster_bus = false) : extra_(std::move(extra)) {
        program_ = find_redis_server();
        if (program_.empty()) throw std::runtime_error("redis-server not found");
        char tmpl[] = "/tmp/procsafe-redis-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
        dir_ = tmpl;
        port_ = cluster_bus ? free_cluster_port() : free_port();
        start();
    }
    ~redis_server() {
        if (pid_ > 0) {
            ::kill(pid_, SIGCONT);
            ::kill(pid_, SIGKILL);
            reap(std::chrono::seconds(10));
        }
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    int port() const noexcept { return port_; }
    pid_t pid() const noexcept { return pid_; }
    const std::string& dir() const noexcept { return dir_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    /// Starts it (again: from its append-only file, repaired first) and
    /// waits for PONG (10 s at most).
    void start() {
        if (repair_) repair_aof();
        std::vector<std::string> args{program_, "--bind", "127.0.0.1", "--port", std::to_string(port_), "--dir", dir_,
                                      "--daemonize", "no", "--appendonly", "yes", "--appendfsync", "always",
                                      "--aof-load-truncated", repair_ ? "no" : "yes",
                                      "--save", "", "--logfile", dir_ + "/redis.log", "--protected-mode", "yes"};
        args.insert(args.end(), extra_.begin(), extra_.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        const int rc = ::posix_spawn(&pid_, program_.c_str(), &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw std::runtime_error("cannot start redis-server");
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!ping()) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("redis-server exited at start: " + log_tail());
            }
            if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("redis-server did not answer in 10 s");
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    /// SIGKILL: what was acknowledged is in the AOF (appendfsync always).
    /// The last lines of its log (it is removed with the server).
    std::string log_tail() const {
        std::ifstream in(dir_ + "/redis.log");
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);) {
            lines.push_back(l);
            if (lines.size() > 4) lines.erase(lines.begin());
        }
        std::string s;
        for (const auto& l : lines) s += "\n  " + l;
        return s.empty() ? "(no log)" : s;
    }
    void kill9() {
        ::kill(pid_, SIGKILL);
        reap(std::chrono::seconds(10));
    }
    void stop() { ::kill(pid_, SIGSTOP); }
    void resume() { ::kill(pid_, SIGCONT); }

    /// PING answered: PONG, or an error other than LOADING (NOAUTH included).
    bool ping() const {
        timeval tv{0, 200'000};
        redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
        bool ok = false;
        if (c != nullptr && c->err == 0) {
            redisSetTimeout(c, tv);
            auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
            // NOAUTH counts as up (a server with requirepass); LOADING does
            // not: it answers every command so until its AOF is read.
            ok = r != nullptr && (r->type == REDIS_REPLY_STATUS ||
                                  (r->type == REDIS_REPLY_ERROR && std::string(r->str, r->len).rfind("LOADING", 0) != 0));
            if (r != nullptr) freeReplyObject(r);
        }
        if (c != nullptr) redisFree(c);
        return ok;
    }

    /// Tests only: restart as Redis' defaults do (no repair,
    /// aof-load-truncated yes), to show what the repair prevents.
    void repair_before_start(bool on) noexcept { repair_ = on; }

    /// `redis-check-aof --fix` on the AOF, answering its question "y"; a
    /// valid AOF is left as it is. Throws when it fails or takes 10 s.
    void repair_aof() {
        const std::string manifest = dir_ + "/appendonlydir/appendonly.aof.manifest";
        if (::access(manifest.c_str(), F_OK) != 0) return;  // never started with data
        const std::string checker = program_.substr(0, program_.rfind('/') + 1) + "redis-check-aof";
        const std::string answer = dir_ + "/yes", log = dir_ + "/check-aof.log";
        {
            const int fd = ::open(answer.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd < 0 || ::write(fd, "y\n", 2) != 2) throw std::runtime_error("cannot write " + answer);
            ::close(fd);
        }
        std::vector<std::string> args{checker, "--fix", manifest};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, answer.c_str(), O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        pid_t pid = -1;
        const int rc = ::posix_spawn(&pid, checker.c_str(), &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw std::runtime_error("cannot run " + checker + " (Debian's redis-tools)");
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        int status = 0;
        while (::waitpid(pid, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &status, 0);
                throw std::runtime_error("redis-check-aof --fix took more than 10 s (see " + log + ")");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            throw std::runtime_error("redis-check-aof --fix failed (see " + log + ")");
    }

private:
    void reap(std::chrono::seconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        int status = 0;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        pid_ = -1;
    }

    std::string program_, dir_;
    std::vector<std::string> extra_;
    int port_ = 0;
    pid_t pid_ = -1;
    bool repair_ = true;
};

/// A raw command for tests (binary-safe), through hiredis.
class raw_client {
public:
    explicit raw_client(int port, const std::string& password = {}) {
        timeval tv{2, 0};
        c_ = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c_ == nullptr || c_->err != 0) {
            const std::string why = c_ != nullptr ? c_->errstr : "out of memory";
            if (c_ != nullptr) redisFree(c_);  // no destructor runs for a constructor that throws
            throw std::runtime_error("raw_client: cannot connect to " + std::to_string(port) + ": " + why);
        }
        redisSetTimeout(c_, tv);
        try {
            if (!password.empty()) run({"AUTH", password});
        } catch (...) {
            redisFree(c_);
            throw;
        }
    }
    ~raw_client() {
        if (c_ != nullptr) redisFree(c_);
    }
    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;

    struct reply {
        int type = 0;
        std::string str;
        long long integer = 0;
        std::vector<reply> elements;
        bool error() const { return type == REDIS_REPLY_ERROR; }
        bool nil() const { return type == REDIS_REPLY_NIL; }
    };
    reply run(const std::vector<std::string>& args) {
        std::vector<const char*> argv;
        std::vector<size_t> lens;
        for (const auto& a : args) argv.push_back(a.data()), lens.push_back(a.size());
        auto* r = static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(args.size()), argv.data(), lens.data()));
        if (r == nullptr) throw std::runtime_error(std::string("raw_client: ") + c_->errstr);
        reply out = convert(r);
        freeReplyObject(r);
        return out;
    }
    /// HGET's value, or "" for none.
    std::string hget(const std::string& key, const std::string& field) { return run({"HGET", key, field}).str; }

private:
    static reply convert(const redisReply* r) {
        reply out;
        out.type = r->type;
        if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) out.str.assign(r->str, r->len);
        if (r->type == REDIS_REPLY_INTEGER) out.integer = r->integer, out.str = std::to_string(r->integer);
        if (r->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
        return out;
    }
    redisContext* c_ = nullptr;
};

}  // namespace procsafe_test

/// Skips the test (or fails it, with PROCSAFE_REQUIRE_REDIS=1) when there is
/// no redis-server here.
#define PROCSAFE_NEED_REDIS()                                                                  \
    do {                                                                                       \
        if (::procsafe_test::find_redis_server().empty()) {                                    \
            if (::procsafe_test::redis_required()) FAIL("redis-server not found (PROCSAFE_REQUIRE_REDIS)"); \
            PROCSAFE_SKIP("redis-server not found (apt-get install redis-server)");             \
        }                                                                                      \
    } while (false)
