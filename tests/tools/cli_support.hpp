// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Helpers for the tests of the procsafe command: run it (or a server) as a
// real process with bounded waits, temporary directories, free ports, HTTP
// GETs, programs found on PATH, and promtool's verdict on an exposition.

#include "../support/process.hpp"

#include <httplib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace procsafe_test {

using namespace std::chrono_literals;

/// The procsafe command under test.
inline const std::string procsafe_cli = PROCSAFE_CLI;

/// The program's path on PATH, or empty.
inline std::string find_program(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
    for (std::string dir; std::getline(dirs, dir, ':');) {
        const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return {};
}

/// A directory under /tmp, removed with what it holds.
class temp_dir {
public:
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "procsafe-tool-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::string operator/(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

inline void write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}

/// How a command ended: its exit code (128 + signal when killed by one, -1
/// when it overran its limit and was killed), and what it printed.
struct run_result {
    int status = -1;
    std::string out, err;
};

/// Optional things for run(): another user to run as (root only).
struct run_as {
    uid_t uid;
    gid_t gid;
};

namespace detail_cli {
inline int exit_code(int wait_status) {
    if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
    return -1;
}

/// fork + exec with stdin/stdout/stderr set up by the caller's fds.
inline pid_t start(const std::vector<std::string>& argv, int in, int out, int err, std::optional<run_as> as) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    // The child: nothing but async-signal-safe calls from here on.
    if (in >= 0) ::dup2(in, 0);
    if (out >= 0) ::dup2(out, 1);
    if (err >= 0) ::dup2(err, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (as) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(as->gid) != 0 || ::setuid(as->uid) != 0) ::_exit(126);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
}
}  // namespace detail_cli

/// Runs argv[0] (a path) with argv, feeds it `input`, collects stdout and
/// stderr, and waits at most `limit` (then kills it: status -1).
inline run_result run(const std::vector<std::string>& argv, std::chrono::milliseconds limit = 30s,
                      const std::string& input = {}, std::optional<run_as> as = std::nullopt) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe2 failed");
    }
    const pid_t pid = detail_cli::start(argv, in[0], out[1], err[1], as);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    run_result r;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::size_t fed = 0;
    int in_fd = in[1];
    if (input.empty()) {
        ::close(in_fd);
        in_fd = -1;
    } else {
        ::fcntl(in_fd, F_SETFL, O_NONBLOCK);
    }
    bool out_open = true, err_open = true, killed = false;
    while (out_open || err_open) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            killed = true;
            break;
        }
        pollfd fds[3] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}, {in_fd, POLLOUT, 0}};
        if (::poll(fds, 3, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
        char buf[65536];
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || errno != EINTR) (i == 0 ? out_open : err_open) = false;
        }
        if (in_fd >= 0 && fds[2].revents != 0) {
            const ssize_t n = ::write(in_fd, input.data() + fed, input.size() - fed);
            if (n > 0) fed += static_cast<std::size_t>(n);
            if (n < 0 && errno != EAGAIN && errno != EINTR) fed = input.size();  // it stopped reading
            if (fed == input.size()) {
                ::close(in_fd);
                in_fd = -1;
            }
        }
    }
    if (in_fd >= 0) ::close(in_fd);
    ::close(out[0]);
    ::close(err[0]);
    const int status = wait_bounded(pid, killed ? 5000ms : 10000ms);
    r.status = killed || status < 0 ? -1 : detail_cli::exit_code(status);
    return r;
}

/// Runs the procsafe command with args.
inline run_result cli(const std::vector<std::string>& args, std::chrono::milliseconds limit = 30s) {
    std::vector<std::string> argv{procsafe_cli};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, limit);
}

/// A program left running (a server, `procsafe watch`), its stdout and
/// stderr written to files; killed (SIGKILL) if still running when destroyed.
class background {
public:
    background(const std::vector<std::string>& argv, const std::string& log_prefix) : out_(log_prefix + ".out"), err_(log_prefix + ".err") {
        const int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int e = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        pid_ = detail_cli::start(argv, devnull, o, e, std::nullopt);
        ::close(o);
        ::close(e);
        ::close(devnull);
    }
    background(const background&) = delete;
    background& operator=(const background&) = delete;
    ~background() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            wait_bounded(pid_, 10s);
        }
    }

    pid_t pid() const { return pid_; }
    std::string out() const { return read_file(out_); }
    std::string err() const { return read_file(err_); }
    /// True while it runs (one that exited is reaped here).
    bool running() {
        if (pid_ <= 0) return false;
        if (::waitpid(pid_, nullptr, WNOHANG) == 0) return true;
        pid_ = -1;
        return false;
    }

    /// Waits (at most `limit`) until the regex matches its stdout (or
    /// stderr); returns the match and its groups, or nullopt.
    std::optional<std::vector<std::string>> wait_for(const std::string& regex, std::chrono::milliseconds limit = 20s,
                                                     bool on_stderr = false) const {
        const std::regex re(regex);
        const auto deadline = std::chrono::steady_clock::now() + limit;
        for (;;) {
            const std::string text = on_stderr ? err() : out();
            std::smatch m;
            if (std::regex_search(text, m, re)) return std::vector<std::string>(m.begin(), m.end());
            if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
            std::this_thread::sleep_for(20ms);
        }
    }

    /// Sends sig and waits (at most `limit`); the exit code as run()'s.
    int stop(int sig = SIGTERM, std::chrono::milliseconds limit = 20s) {
        if (pid_ <= 0) return -1;
        ::kill(pid_, sig);
        const int status = wait_bounded(pid_, limit);
        pid_ = -1;
        return status < 0 ? -1 : detail_cli::exit_code(status);
    }

private:
    std::string out_, err_;
    pid_t pid_ = -1;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
inline int free_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        ::close(s);
        throw std::runtime_error("no free port");
    }
    ::close(s);
    return ntohs(a.sin_port);
}

/// GET http://127.0.0.1:port/path with bounded timeouts (false when there
/// was no answer).
inline httplib::Result http_get(int port, const std::string& path) {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(2);
    c.set_read_timeout(5);
    return c.Get(path.c_str());
}

/// promtool check metrics on the text: its exit status and output.
inline run_result promtool_check(const std::string& promtool, const std::string& exposition) {
    return run({promtool, "check", "metrics"}, 30s, exposition);
}

}  // namespace procsafe_test

#include <procsafe/procsafe.hpp>

namespace procsafe_test {

/// A segment with one object of each kind the command shows, holding known
/// values (sums of powers of two: exact in doubles).
struct sample_segment {
    std::string name;
    procsafe::segment seg;

    explicit sample_segment(std::string n, unsigned mode = 0600, std::int64_t requests = 1000)
        : name(std::move(n)), seg(procsafe::segment::create(name, 1 << 20, mode)) {
        using namespace procsafe;
        seg.construct<sharded_counter<std::int64_t>>("requests", metadata{.help = "Requests handled."}).add(requests);
        auto& r = seg.construct<counter_array<std::int64_t, atomic_sync>>(
            "responses", metadata{.help = "Responses by status code.", .label = "code", .label_values = {"200", "404", "500"}}, 3);
        r.at(0).increment(900);
        r.at(1).increment(90);
        r.at(2).increment(10);
        auto& h = seg.construct<histogram>("request_seconds", metadata{.help = "Request latency.", .unit = "seconds"},
                                           std::vector{0.01, 0.1, 1.0});
        for (double v : {0.0078125, 0.0078125, 0.0078125, 0.0625, 0.0625, 4.0}) h.observe(v);
        seg.construct<mutex_counter<std::int64_t>>("jobs", metadata{.help = "Jobs run."}).increment(7);
        seg.construct<atomic_counter<std::uint64_t>>("sent", metadata{.help = "Bytes sent.", .unit = "bytes"}).increment(1500);
        seg.construct<live_gauge<std::int64_t>>("busy", metadata{.help = "Workers busy."}).add(2);
        seg.construct<latch>("ready", metadata{.help = "Workers still starting."}, 3);
        seg.construct<atomic_counter<double>>("temperature", metadata{.help = "Room temperature.", .unit = "celsius", .type = metric_type::gauge})
            .store(21.5);
    }
};

/// A name under /dev/shm that is not a shared memory object (a FIFO, a
/// link, a socket), as any local user can make one; removed at the end.
struct planted {
    std::string name;
    explicit planted(std::string n) : name(std::move(n)) {}
    planted(const planted&) = delete;
    planted& operator=(const planted&) = delete;
    ~planted() { ::unlink(("/dev/shm/" + name).c_str()); }
};

/// Rewrites, in the segment's own mapping, the first `from` after its header
/// with `to` (same length): what its owner can do at any time. Throws when
/// `from` is not there.
inline void rewrite(const procsafe::segment& seg, std::string_view from, std::string_view to) {
    if (from.size() != to.size()) throw std::logic_error("rewrite: not the same length");
    auto* base = static_cast<char*>(const_cast<void*>(seg.data()));
    const auto at = std::string_view(base, seg.size()).find(from, procsafe::detail::managed_offset);
    if (at == std::string_view::npos) throw std::logic_error("rewrite: '" + std::string(from) + "' not found");
    std::copy(to.begin(), to.end(), base + at);
}

/// Another user (nobody, uid and gid 65534, as `setpriv --reuid 65534
/// --regid 65534 --clear-groups` would make it) creates its own 0644
/// segment `name` in a forked child, left in place (disowned), and calls
/// `fill(seg)` on it (which may rewrite its strings after construction).
/// Root only. Returns the child's exit code: 0 when all went well.
template <class Fill>
int create_as_nobody(const std::string& name, Fill fill) {
    std::fflush(nullptr);
    const pid_t owner = ::fork();
    if (owner == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
        try {
            auto seg = procsafe::segment::create(name, 1 << 20, 0644);
            seg.disown();
            fill(seg);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "owner: %s\n", e.what());
            ::_exit(3);
        }
        ::_exit(0);
    }
    int status = 0;
    if (::waitpid(owner, &status, 0) != owner) return -1;
    return detail_cli::exit_code(status);
}

}  // namespace procsafe_test
