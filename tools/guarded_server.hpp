// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// An httplib::Server that slow, idle or many clients cannot starve.
//
// httplib 0.11 (Debian 12's) gives each connection a worker thread from
// accept to close, and its read timeout is per recv(): four clients that
// send a header byte every 0.9 s, or a few idle keep-alive connections, hold
// every worker, and a scrape waits as long as they do. Here one thread polls
// every connection until a request's head has come whole, within a deadline
// that no dribble extends; only then does a worker take it, and its reads of
// the body and writes of the response share a second deadline. A worker is
// never idle on a connection, and beyond max_connections the connection
// waiting longest is closed to let a new one in.

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace procsafe::cli {

class guarded_server : public httplib::Server {
public:
    struct limits {
        std::size_t workers = 8;
        std::size_t max_connections = 256;
        /// From a connection's accept, or its previous response, to the end of a
        /// request's head: an idle keep-alive connection is closed after it too.
        std::chrono::milliseconds head_timeout{5000};
        /// From the end of a request's head to the last byte of its response.
        std::chrono::milliseconds request_timeout{10000};
        std::size_t max_head = 16 * 1024;
        std::size_t max_requests = 1000;  ///< per connection (Prometheus keeps its connection open)
    };

    /// Starts the poller and the workers (with the caller's signal mask).
    explicit guarded_server(limits l);
    /// close_connections().
    ~guarded_server() override;
    guarded_server(const guarded_server&) = delete;
    guarded_server& operator=(const guarded_server&) = delete;

    /// After stop(): hangs up on every connection, the ones being served too,
    /// and joins the threads. Idempotent.
    void close_connections();

private:
    using clock = std::chrono::steady_clock;
    struct connection {
        int fd = -1;
        std::string buffered;  // read, not yet parsed: the head, perhaps more
        clock::time_point deadline;
        std::size_t served = 0;
    };

    // httplib's accept loop calls this on its own thread, the task queue
    // being inline: it only hands the socket to the poller.
    bool process_and_close_socket(socket_t sock) override;
    void to_poller(connection c);
    void poll_loop();
    void work_loop();
    void serve(connection c);

    limits limits_;
    int wake_fd_ = -1;  // an eventfd: new connections for the poller, or closing
    std::mutex mutex_;
    std::condition_variable work_ready_;
    std::vector<connection> incoming_;  // for the poller
    std::deque<connection> ready_;      // a whole head read: for a worker
    std::set<int> busy_;                // being served: shut down when closing
    bool closing_ = false;
    std::thread poller_;
    std::vector<std::thread> workers_;
};

}  // namespace procsafe::cli
