// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "guarded_server.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <system_error>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace procsafe::cli {

namespace {

using clock = std::chrono::steady_clock;

/// Runs each task at once, on the thread that enqueues it (httplib's accept
/// loop): guarded_server's process_and_close_socket() only hands a socket on.
class inline_queue final : public httplib::TaskQueue {
public:
    void enqueue(std::function<void()> fn) override { fn(); }
    void shutdown() override {}
};

/// poll() for `events` on fd until deadline; false when it passed first.
bool wait_until(int fd, short events, clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, INT_MAX)));
        if (r > 0) return true;  // an error or a hang-up too: the read or write says which
        if (r < 0 && errno != EINTR) return false;
    }
}

/// The connection as httplib's request parser reads it: first what the
/// poller read, then the socket, every wait bounded by one deadline.
class deadline_stream final : public httplib::Stream {
public:
    deadline_stream(int fd, std::string buffered, clock::time_point deadline)
        : fd_(fd), buf_(std::move(buffered)), deadline_(deadline) {}

    bool is_readable() const override { return pos_ < buf_.size() || wait_until(fd_, POLLIN, deadline_); }
    bool is_writable() const override { return wait_until(fd_, POLLOUT, deadline_); }

    ssize_t read(char* ptr, size_t size) override {
        if (pos_ == buf_.size()) {
            buf_.clear();
            pos_ = 0;
            if (!wait_until(fd_, POLLIN, deadline_)) return -1;
            buf_.resize(4096);
            const ssize_t n = ::recv(fd_, buf_.data(), buf_.size(), MSG_DONTWAIT);
            buf_.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
            if (n <= 0) return n < 0 ? -1 : 0;
        }
        const std::size_t n = std::min(size, buf_.size() - pos_);
        std::memcpy(ptr, buf_.data() + pos_, n);
        pos_ += n;
        return static_cast<ssize_t>(n);
    }

    ssize_t write(const char* ptr, size_t size) override {
        for (;;) {
            if (!wait_until(fd_, POLLOUT, deadline_)) return -1;
            const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return n;
        }
    }

    void get_remote_ip_and_port(std::string& ip, int& port) const override { address(true, ip, port); }
    void get_local_ip_and_port(std::string& ip, int& port) const override { address(false, ip, port); }
    socket_t socket() const override { return fd_; }

    /// What was read but not parsed: the start of a pipelined request.
    std::string unread() const { return buf_.substr(pos_); }

private:
    void address(bool peer, std::string& ip, int& port) const {
        sockaddr_storage a{};
        socklen_t len = sizeof a;
        auto* sa = reinterpret_cast<sockaddr*>(&a);
        if ((peer ? ::getpeername(fd_, sa, &len) : ::getsockname(fd_, sa, &len)) != 0) return;
        char host[NI_MAXHOST], serv[NI_MAXSERV];
        if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            ip = host;
            port = std::atoi(serv);
        }
    }

    int fd_;
    std::string buf_;
    std::size_t pos_ = 0;
    clock::time_point deadline_;
};

bool head_complete(const std::string& s) { return s.find("\r\n\r\n") != std::string::npos; }

/// Does a request head announce a body (a non-zero Content-Length, or any
/// Transfer-Encoding)? Nothing served here takes one, and a worker waiting
/// for a body that never comes is a worker a scrape cannot have.
bool announces_body(const std::string& s) {
    std::string head = s.substr(0, s.find("\r\n\r\n"));
    for (char& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (head.find("\r\ntransfer-encoding:") != std::string::npos) return true;
    for (std::size_t at = head.find("\r\ncontent-length:"); at != std::string::npos;
         at = head.find("\r\ncontent-length:", at + 1)) {
        std::size_t v = at + 17;
        while (v < head.size() && (head[v] == ' ' || head[v] == '\t')) ++v;
        while (v < head.size() && head[v] == '0') ++v;
        if (v < head.size() && head[v] >= '1' && head[v] <= '9') return true;
    }
    return false;
}

}  // namespace

guarded_server::guarded_server(limits l) : limits_(l) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) throw std::system_error(errno, std::system_category(), "eventfd");
    new_task_queue = [] { return new inline_queue; };
    poller_ = std::thread([this] { poll_loop(); });
    for (std::size_t i = 0; i < limits_.workers; ++i) workers_.emplace_back([this] { work_loop(); });
}

guarded_server::~guarded_server() { close_connections(); }

void guarded_server::close_connections() {
    {
        const std::lock_guard lock(mutex_);
        if (wake_fd_ < 0) return;
        closing_ = true;
        for (const int fd : busy_) ::shutdown(fd, SHUT_RDWR);  // its worker's poll() returns at once
    }
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    work_ready_.notify_all();
    poller_.join();
    for (auto& t : workers_) t.join();
    for (const auto& c : incoming_) ::close(c.fd);
    for (const auto& c : ready_) ::close(c.fd);
    incoming_.clear();
    ready_.clear();
    ::close(wake_fd_);
    wake_fd_ = -1;
}

bool guarded_server::process_and_close_socket(socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);  // a response otherwise waits on Nagle (~40 ms)
    to_poller({sock, {}, clock::now() + limits_.head_timeout, 0});
    return true;
}

void guarded_server::to_poller(connection c) {
    {
        const std::lock_guard lock(mutex_);
        if (!closing_) {
            incoming_.push_back(std::move(c));
            c.fd = -1;
        }
    }
    if (c.fd >= 0) {
        ::close(c.fd);
        return;
    }
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

void guarded_server::poll_loop() {
    std::vector<connection> waiting, keep, heads;
    std::vector<pollfd> fds;
    for (;;) {
        {
            const std::lock_guard lock(mutex_);
            if (closing_) break;
            for (auto& c : incoming_) waiting.push_back(std::move(c));
            incoming_.clear();
        }
        if (waiting.size() > limits_.max_connections) {  // the ones waiting longest make room
            const auto excess = static_cast<std::ptrdiff_t>(waiting.size() - limits_.max_connections);
            std::nth_element(waiting.begin(), waiting.begin() + excess, waiting.end(),
                             [](const connection& a, const connection& b) { return a.deadline < b.deadline; });
            for (auto it = waiting.begin(); it != waiting.begin() + excess; ++it) ::close(it->fd);
            waiting.erase(waiting.begin(), waiting.begin() + excess);
        }
        auto now = clock::now();
        auto next = now + limits_.head_timeout;
        fds.assign(1, pollfd{wake_fd_, POLLIN, 0});
        for (const auto& c : waiting) {
            fds.push_back({c.fd, POLLIN, 0});
            next = std::min(next, c.deadline);
        }
        // A head already whole (pipelined after the previous request): no wait.
        const bool whole = std::any_of(waiting.begin(), waiting.end(), [](const connection& c) { return head_complete(c.buffered); });
        const auto wait_ms = whole ? 0 : std::max<long long>(0, std::chrono::ceil<std::chrono::milliseconds>(next - now).count());
        if (::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(wait_ms, INT_MAX))) < 0 && errno != EINTR) {
            continue;  // ENOMEM: try again
        }
        if (fds[0].revents != 0) {
            std::uint64_t count;
            (void)!::read(wake_fd_, &count, sizeof count);
        }
        now = clock::now();
        keep.clear();
        heads.clear();
        for (std::size_t i = 0; i < waiting.size(); ++i) {
            connection& c = waiting[i];
            bool drop = false;
            if (fds[i + 1].revents != 0) {
                char buf[4096];
                const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
                if (n > 0) c.buffered.append(buf, static_cast<std::size_t>(n));
                else drop = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
            }
            if (!drop && head_complete(c.buffered)) {
                if (announces_body(c.buffered)) {  // answered here, never handed to a worker
                    static constexpr char refused[] =
                        "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                    (void)::send(c.fd, refused, sizeof refused - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
                    ::close(c.fd);
                    continue;
                }
                heads.push_back(std::move(c));
                continue;
            }
            if (drop || c.buffered.size() > limits_.max_head || now >= c.deadline) {
                ::close(c.fd);
                continue;
            }
            keep.push_back(std::move(c));
        }
        waiting.swap(keep);
        if (!heads.empty()) {
            {
                const std::lock_guard lock(mutex_);
                for (auto& c : heads) ready_.push_back(std::move(c));
            }
            work_ready_.notify_all();
        }
    }
    for (const auto& c : waiting) ::close(c.fd);
}

void guarded_server::work_loop() {
    for (;;) {
        connection c;
        {
            std::unique_lock lock(mutex_);
            work_ready_.wait(lock, [&] { return closing_ || !ready_.empty(); });
            if (closing_) return;
            c = std::move(ready_.front());
            ready_.pop_front();
            busy_.insert(c.fd);
        }
        serve(std::move(c));
    }
}

void guarded_server::serve(connection c) {
    deadline_stream stream(c.fd, std::move(c.buffered), clock::now() + limits_.request_timeout);
    ++c.served;
    const bool last = c.served >= limits_.max_requests || !is_running();
    bool closed = false, ok = false;
    try {
        ok = process_request(stream, last, closed, nullptr);
    } catch (...) {  // httplib answers a handler's exception itself; this is allocation
    }
    {
        const std::lock_guard lock(mutex_);
        busy_.erase(c.fd);
    }
    if (!ok || closed || last || !is_running()) {
        ::close(c.fd);
        return;
    }
    c.buffered = stream.unread();
    c.deadline = clock::now() + limits_.head_timeout;
    to_poller(std::move(c));
}

}  // namespace procsafe::cli
