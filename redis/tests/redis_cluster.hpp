// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// A Redis Cluster of the test's own: masters x (1 + replicas) redis-server
// nodes on 127.0.0.1 (free ports, a free cluster bus port each: the default
// port + 10000 can be above 65535 for an ephemeral port), one temporary
// directory each, created with `redis-cli --cluster create`. The test kills
// a master (its replica takes over: cluster-replica-validity-factor 0, so a
// replica always may), adds a master, reshards slots to it in the
// background with `redis-cli --cluster reshard`, or moves one slot step by
// step (SETSLOT IMPORTING / MIGRATING, MIGRATE in small batches, SETSLOT
// NODE) with a callback between the steps. Everything is removed at the end.
//
// Every wait polls a condition with a deadline and says, when it gives up,
// what it saw (CLUSTER NODES of every live node, or redis-cli's output).
// Needs Redis 7 (cluster-port, CLUSTER MEET with a bus port in redis-cli).

#include "redis_server.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace procsafe_test {

/// redis-cli: next to redis-server, else on PATH; "" when there is none.
inline std::string find_redis_cli() {
    const std::string server = find_redis_server();
    if (!server.empty()) {
        const std::string beside = server.substr(0, server.rfind('/') + 1) + "redis-cli";
        if (::access(beside.c_str(), X_OK) == 0) return beside;
    }
    return find_on_path("redis-cli");
}

class redis_cluster {
public:
    using clock = std::chrono::steady_clock;

    /// One line of CLUSTER NODES.
    struct node_entry {
        std::string id, flags, master_id;
        int port = 0;
        std::vector<std::pair<int, int>> slots;  // ranges served (open-slot entries "[...]" left out)
        bool open_slots = false;                 // a "[slot->-id]" or "[slot-<-id]" entry
        bool has(std::string_view flag) const {
            std::size_t at = 0;
            while (at <= flags.size()) {
                const std::size_t end = std::min(flags.find(',', at), flags.size());
                if (std::string_view(flags).substr(at, end - at) == flag) return true;
                at = end + 1;
            }
            return false;
        }
        bool failing() const { return has("fail") || has("fail?") || has("handshake") || has("noaddr"); }
        bool serves(int slot) const {
            for (const auto& [lo, hi] : slots)
                if (slot >= lo && slot <= hi) return true;
            return false;
        }
    };

    /// Starts masters*(1+replicas) nodes, creates the cluster, waits (30 s
    /// at most) until every node says cluster_state:ok, all 16384 slots are
    /// served, the nodes agree on who serves them, and every replica's link
    /// to its master is up. Throws std::runtime_error naming what failed.
    explicit redis_cluster(int masters = 3, int replicas = 1, int node_timeout_ms = 1000)
        : node_timeout_ms_(node_timeout_ms) {
        server_ = find_redis_server();
        cli_ = find_redis_cli();
        if (server_.empty()) throw std::runtime_error("redis_cluster: redis-server not found");
        if (cli_.empty()) throw std::runtime_error("redis_cluster: redis-cli not found");
        if (masters < 3) throw std::invalid_argument("redis_cluster: redis-cli --cluster create needs 3 masters or more");
        char tmpl[] = "/tmp/procsafe-cluster-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("redis_cluster: mkdtemp failed");
        root_ = tmpl;
        try {
            const int total = masters * (1 + replicas);
            for (int i = 0; i < total; ++i) start_node();
            std::vector<std::string> args{"--cluster", "create"};
            for (const auto& n : nodes_) args.push_back(address_of(n.port));
            args.insert(args.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
            run_cli(args, root_ + "/create.log", 60);
            wait_stable(30, "the cluster's creation");
        } catch (...) {
            cleanup();
            throw;
        }
    }

    /// SIGKILLs every node it started (SIGCONT first) and a reshard still
    /// running, reaps them, and removes the directories
    /// (PROCSAFE_KEEP_CLUSTER=1 keeps them, and says where).
    ~redis_cluster() { cleanup(); }
    redis_cluster(const redis_cluster&) = delete;
    redis_cluster& operator=(const redis_cluster&) = delete;

    const std::string& dir() const noexcept { return root_; }

    /// "127.0.0.1:PORT" of every node still running.
    std::vector<std::string> addresses() const {
        std::vector<std::string> out;
        for (const auto& n : nodes_)
            if (n.pid > 0) out.push_back(address_of(n.port));
        return out;
    }
    /// addresses() joined with ','.
    std::string seeds() const {
        std::string s;
        for (const auto& a : addresses()) s += (s.empty() ? "" : ",") + a;
        return s;
    }
    /// Ports of the nodes still running.
    std::vector<int> ports() const {
        std::vector<int> out;
        for (const auto& n : nodes_)
            if (n.pid > 0) out.push_back(n.port);
        return out;
    }

    /// The live masters (slots or none), from CLUSTER NODES of a live node.
    std::vector<int> master_ports() const {
        std::vector<int> out;
        for (const auto& e : nodes_of(any_live()))
            if (e.has("master") && !e.failing() && alive(e.port)) out.push_back(e.port);
        std::sort(out.begin(), out.end());
        return out;
    }
    /// The port of the master serving `slot` (as a live node sees it).
    int master_of_slot(int slot) const {
        for (const auto& e : nodes_of(any_live()))
            if (e.has("master") && e.serves(slot)) return e.port;
        throw std::runtime_error("redis_cluster: no master serves slot " + std::to_string(slot));
    }
    /// The port of a live replica of the master at `master_port` (as a live
    /// node sees it; after a wait for a stable cluster, as all see it).
    /// Waits (10 s at most) while the node asked sees none healthy.
    int replica_of(int master_port) const {
        const auto deadline = clock::now() + seconds(10);
        for (;;) {
            const auto entries = nodes_of(any_live());
            std::string id;
            for (const auto& e : entries)
                if (e.port == master_port) id = e.id;
            if (id.empty()) throw std::runtime_error("redis_cluster: no node at port " + std::to_string(master_port));
            for (const auto& e : entries)
                if (e.has("slave") && e.master_id == id && !e.failing() && alive(e.port)) return e.port;
            if (clock::now() > deadline)
                throw std::runtime_error("redis_cluster: the master at " + std::to_string(master_port) + " has no live replica\n" + views());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    /// CLUSTER MYID of the node at `port`.
    std::string id_of(int port) const {
        auto r = command(port, {"CLUSTER", "MYID"});
        if (r.type != REDIS_REPLY_STRING) throw std::runtime_error("redis_cluster: CLUSTER MYID at " + std::to_string(port) + ": " + r.str);
        return r.str;
    }

    /// SIGKILL of that node, reaped. Its directory stays until the end.
    void kill9(int port) {
        node& n = find(port);
        if (n.pid <= 0) throw std::logic_error("redis_cluster: node " + std::to_string(port) + " is not running");
        ::kill(n.pid, SIGCONT);
        ::kill(n.pid, SIGKILL);
        reap(n.pid, 10);
        n.pid = -1;
    }

    /// SIGSTOP / SIGCONT of that node (a replica stopped, its link cut with
    /// CLIENT KILL TYPE replica on its master, misses what the master
    /// accepts meanwhile: a failover then loses it, as Redis' asynchronous
    /// replication may). Stop a node for less than the node timeout, or the
    /// others mark it failing.
    void stop(int port) {
        node& n = find(port);
        if (n.pid <= 0) throw std::logic_error("redis_cluster: node " + std::to_string(port) + " is not running");
        ::kill(n.pid, SIGSTOP);
    }
    void resume(int port) {
        node& n = find(port);
        if (n.pid > 0) ::kill(n.pid, SIGCONT);
    }

    /// Waits until, seen from every live node, cluster_state is ok, the
    /// nodes agree on the slots, and `slot` is served by a live master;
    /// returns its port. Throws on timeout with the nodes' CLUSTER NODES.
    int wait_failover(int slot, double timeout_s = 30) {
        std::string why;
        const auto deadline = clock::now() + seconds(timeout_s);
        for (;;) {
            why = stable_problem(false);
            if (why.empty()) {
                const int owner = master_of_slot(slot);
                if (alive(owner)) return owner;
                why = "slot " + std::to_string(slot) + " is still served by " + std::to_string(owner);
            }
            if (clock::now() > deadline)
                throw std::runtime_error("redis_cluster: no failover of slot " + std::to_string(slot) + " in " +
                                         std::to_string(timeout_s) + " s: " + why + "\n" + views());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    /// Starts an empty node, joins it with `redis-cli --cluster add-node`,
    /// and waits until every live node knows it (and it them); its port.
    int add_master() {
        const int port = start_node();
        const std::string id = id_of(port);
        run_cli({"--cluster", "add-node", address_of(port), address_of(any_live_except(port))},
                root_ + "/add-node-" + std::to_string(port) + ".log", 60);
        const auto deadline = clock::now() + seconds(30);
        for (;;) {
            std::string why = stable_problem(false);
            if (why.empty()) {
                for (int p : ports()) {
                    bool known = false;
                    for (const auto& e : nodes_of(p)) known = known || (e.id == id && e.has("master") && !e.failing());
                    if (!known) why = "node " + std::to_string(p) + " does not know " + std::to_string(port) + " yet";
                }
            }
            if (why.empty()) return port;
            if (clock::now() > deadline)
                throw std::runtime_error("redis_cluster: node " + std::to_string(port) + " not joined in 30 s: " + why + "\n" + views());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    /// `redis-cli --cluster reshard` of `slots` slots from one master to
    /// another, as a child process: the test goes on meanwhile.
    void reshard_async(int from_port, int to_port, int slots) {
        if (reshard_pid_ > 0) throw std::logic_error("redis_cluster: a reshard is running already");
        reshard_log_ = root_ + "/reshard-" + std::to_string(++reshards_) + ".log";
        reshard_pid_ = spawn_logged(cli_,
                                    {"--cluster", "reshard", address_of(from_port), "--cluster-from", id_of(from_port),
                                     "--cluster-to", id_of(to_port), "--cluster-slots", std::to_string(slots),
                                     "--cluster-yes"},
                                    reshard_log_);
    }
    /// Reaps the reshard (bounded; killed on timeout), throws with its
    /// output if it failed, then waits until the cluster is stable again.
    void wait_reshard(double timeout_s = 180) {
        if (reshard_pid_ <= 0) throw std::logic_error("redis_cluster: no reshard running");
        const auto status = reap(reshard_pid_, timeout_s);
        reshard_pid_ = -1;
        const std::string out = slurp(reshard_log_);
        if (!status) throw std::runtime_error("redis_cluster: the reshard took more than " + std::to_string(timeout_s) + " s:\n" + tail(out));
        if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0 || out.find("[ERR]") != std::string::npos)
            throw std::runtime_error("redis_cluster: the reshard failed (status " + std::to_string(*status) + "):\n" + tail(out));
        wait_stable(30, "the reshard");
    }

    /// Moves one slot, with its keys, from its master to `to_port`, step by
    /// step, calling `between` after each: "importing" (the target
    /// imports it), "migrating" (the source migrates it, no key moved yet),
    /// "batch" (after each MIGRATE of at most 2 keys: the slot's keys are on
    /// both nodes), "moved" (every key on the target, the slot still open),
    /// "assigned" (CLUSTER SETSLOT NODE sent to the target and the source, not
    /// yet to the other masters). Then waits until the cluster is stable.
    void migrate_slot(int slot, int to_port, const std::function<void(std::string_view step)>& between = {}) {
        const int from_port = master_of_slot(slot);
        if (from_port == to_port) throw std::invalid_argument("redis_cluster: slot already served by " + std::to_string(to_port));
        const std::string from_id = id_of(from_port), to_id = id_of(to_port), s = std::to_string(slot);
        auto step = [&](std::string_view what) {
            if (between) between(what);
        };
        expect_ok(to_port, {"CLUSTER", "SETSLOT", s, "IMPORTING", from_id});
        step("importing");
        expect_ok(from_port, {"CLUSTER", "SETSLOT", s, "MIGRATING", to_id});
        step("migrating");
        for (int round = 0;; ++round) {
            auto keys = command(from_port, {"CLUSTER", "GETKEYSINSLOT", s, "2"});
            if (keys.elements.empty()) break;
            if (round > 100000) throw std::runtime_error("redis_cluster: slot " + s + " never empties");
            std::vector<std::string> migrate{"MIGRATE", "127.0.0.1", std::to_string(to_port), "", "0", "5000", "KEYS"};
            for (const auto& k : keys.elements) migrate.push_back(k.str);
            auto r = command(from_port, migrate);
            if (r.error()) throw std::runtime_error("redis_cluster: MIGRATE of slot " + s + ": " + r.str);
            step("batch");
        }
        step("moved");
        expect_ok(to_port, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
        expect_ok(from_port, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
        step("assigned");
        for (int p : master_ports())
            if (p != to_port && p != from_port) expect_ok(p, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
        const auto deadline = clock::now() + seconds(30);
        for (;;) {
            std::string why = stable_problem(true);
            if (why.empty() && master_of_slot(slot) != to_port) why = "slot " + s + " not yet on " + std::to_string(to_port);
            if (why.empty()) return;
            if (clock::now() > deadline)
                throw std::runtime_error("redis_cluster: slot " + s + " not settled in 30 s: " + why + "\n" + views());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    /// One command on one node (a fresh connection, 2 s timeouts).
    raw_client::reply command(int port, const std::vector<std::string>& args) const {
        raw_client c(port);
        return c.run(args);
    }

    /// CLUSTER NODES of the node at `port`, parsed.
    std::vector<node_entry> nodes_of(int port) const {
        auto r = command(port, {"CLUSTER", "NODES"});
        if (r.type != REDIS_REPLY_STRING) throw std::runtime_error("redis_cluster: CLUSTER NODES at " + std::to_string(port) + ": " + r.str);
        std::vector<node_entry> out;
        std::istringstream lines(r.str);
        for (std::string line; std::getline(lines, line);) {
            std::istringstream f(line);
            std::string address, ping, pong, epoch, link;
            node_entry e;
            if (!(f >> e.id >> address >> e.flags >> e.master_id >> ping >> pong >> epoch >> link)) continue;
            const auto colon = address.rfind(':', address.find('@'));
            if (colon == std::string::npos) continue;
            e.port = std::atoi(address.c_str() + colon + 1);
            for (std::string range; f >> range;) {
                if (range.front() == '[') {
                    e.open_slots = true;
                    continue;
                }
                const auto dash = range.find('-');
                const int lo = std::atoi(range.c_str());
                e.slots.emplace_back(lo, dash == std::string::npos ? lo : std::atoi(range.c_str() + dash + 1));
            }
            out.push_back(std::move(e));
        }
        return out;
    }

    /// CLUSTER NODES of every live node, for a message.
    std::string views() const {
        std::string s;
        for (int p : ports()) {
            s += "--- CLUSTER NODES at " + std::to_string(p) + ":\n";
            try {
                s += command(p, {"CLUSTER", "NODES"}).str;
            } catch (const std::exception& e) {
                s += std::string(e.what()) + "\n";
            }
        }
        return s;
    }

private:
    struct node {
        int port = 0, bus_port = 0;
        pid_t pid = -1;
        std::string dir;
    };

    static std::chrono::steady_clock::duration seconds(double s) {
        return std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s));
    }
    static std::string address_of(int port) { return "127.0.0.1:" + std::to_string(port); }

    static std::string slurp(const std::string& path) {
        std::ifstream in(path);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }
    static std::string tail(const std::string& s, std::size_t n = 6000) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

    bool alive(int port) const {
        for (const auto& n : nodes_)
            if (n.port == port) return n.pid > 0;
        return false;
    }
    node& find(int port) {
        for (auto& n : nodes_)
            if (n.port == port) return n;
        throw std::logic_error("redis_cluster: no node at port " + std::to_string(port));
    }
    int any_live() const { return any_live_except(0); }
    int any_live_except(int port) const {
        for (const auto& n : nodes_)
            if (n.pid > 0 && n.port != port) return n.port;
        throw std::runtime_error("redis_cluster: no node left running");
    }

    void expect_ok(int port, const std::vector<std::string>& args) const {
        auto r = command(port, args);
        if (r.error()) {
            std::string cmd;
            for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
            throw std::runtime_error("redis_cluster: " + cmd + " at " + std::to_string(port) + ": " + r.str);
        }
    }

    /// A port no node of this cluster uses and nobody listens on now.
    int fresh_port() {
        for (;;) {
            const int p = free_port();
            if (used_ports_.insert(p).second) return p;
        }
    }

    /// Starts one node (new ports and a new directory; three tries when
    /// a port was taken meanwhile) and waits for its PONG; its port.
    int start_node() {
        std::string last;
        for (int attempt = 0; attempt < 3; ++attempt) {
            node n;
            n.port = fresh_port();
            n.bus_port = fresh_port();
            n.dir = root_ + "/node-" + std::to_string(n.port);
            std::filesystem::create_directories(n.dir);
            n.pid = spawn_logged(server_,
                                 {"--bind", "127.0.0.1", "--port", std::to_string(n.port), "--cluster-enabled", "yes",
                                  "--cluster-port", std::to_string(n.bus_port), "--cluster-config-file", n.dir + "/nodes.conf",
                                  "--cluster-node-timeout", std::to_string(node_timeout_ms_),
                                  // a replica takes over however long its link was down; it stays where it is
                                  "--cluster-replica-validity-factor", "0", "--cluster-allow-replica-migration", "no",
                                  "--dir", n.dir, "--daemonize", "no", "--appendonly", "yes", "--appendfsync", "everysec",
                                  "--save", "", "--logfile", n.dir + "/redis.log", "--protected-mode", "yes",
                                  // a replica's first sync at once (the default waits 5 s for more replicas)
                                  "--repl-diskless-sync-delay", "0"},
                                 n.dir + "/stdout.log");
            const auto deadline = clock::now() + seconds(10);
            for (;;) {
                if (ping(n.port)) {
                    nodes_.push_back(n);
                    return n.port;
                }
                int status = 0;
                if (::waitpid(n.pid, &status, WNOHANG) == n.pid) {
                    last = "redis-server exited at start: " + tail(slurp(n.dir + "/redis.log"), 2000);
                    break;
                }
                if (clock::now() > deadline) {
                    ::kill(n.pid, SIGKILL);
                    reap(n.pid, 10);
                    throw std::runtime_error("redis_cluster: redis-server on " + std::to_string(n.port) + " did not answer in 10 s");
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        throw std::runtime_error("redis_cluster: " + last);
    }

    static bool ping(int port) {
        try {
            raw_client c(port);
            return c.run({"PING"}).str == "PONG";
        } catch (const std::exception&) {
            return false;
        }
    }

    /// `program args...`, stdin /dev/null, stdout and stderr to `log`.
    static pid_t spawn_logged(const std::string& program, std::vector<std::string> args, const std::string& log) {
        args.insert(args.begin(), program);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        pid_t pid = -1;
        const int rc = ::posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw std::runtime_error("redis_cluster: cannot start " + program);
        return pid;
    }

    /// Its wait status, or none when it ran past `limit_s` (then it is killed and reaped).
    static std::optional<int> reap(pid_t pid, double limit_s) {
        const auto deadline = clock::now() + seconds(limit_s);
        int status = 0;
        for (;;) {
            const pid_t r = ::waitpid(pid, &status, WNOHANG);
            if (r == pid) return status;
            if (r < 0 && errno != EINTR) return status;  // not our child any more
            if (clock::now() > deadline) {
                ::kill(pid, SIGKILL);
                while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
                return std::nullopt;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }

    /// redis-cli `args`, its output in `log`; throws with the output when it
    /// fails or runs past `limit_s`.
    void run_cli(const std::vector<std::string>& args, const std::string& log, double limit_s) {
        const pid_t pid = spawn_logged(cli_, args, log);
        const auto status = reap(pid, limit_s);
        std::string cmd = "redis-cli";
        for (const auto& a : args) cmd += " " + a;
        if (!status) throw std::runtime_error("redis_cluster: " + cmd + " took more than " + std::to_string(limit_s) + " s:\n" + tail(slurp(log)));
        if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0 || slurp(log).find("[ERR]") != std::string::npos)
            throw std::runtime_error("redis_cluster: " + cmd + " failed:\n" + tail(slurp(log)));
    }

    /// "" when, seen from every live node: cluster_state:ok, every slot
    /// served by a live master, the same slot map everywhere, every live
    /// node known and not failing, the same replicas of the same masters
    /// everywhere, every replica's link to its master up and a write on its
    /// master acknowledged by it, (with `closed`) no slot
    /// importing or migrating. Else what is not so.
    std::string stable_problem(bool closed) const {
        std::vector<int> reference;
        std::string reference_roles;
        int reference_port = 0;
        const auto live = ports();
        for (int p : live) {
            try {
                const auto info = command(p, {"CLUSTER", "INFO"}).str;
                if (info.find("cluster_state:ok") == std::string::npos) return "node " + std::to_string(p) + ": cluster_state not ok";
                if (info.find("cluster_slots_assigned:16384") == std::string::npos) return "node " + std::to_string(p) + ": not all slots assigned";
                const auto entries = nodes_of(p);
                std::vector<int> owner(16384, 0);
                std::set<int> known;
                for (const auto& e : entries) {
                    if (alive(e.port) && !e.failing()) known.insert(e.port);
                    if (closed && e.open_slots) return "node " + std::to_string(p) + " sees open slots on " + std::to_string(e.port);
                    if (!e.has("master")) continue;
                    for (const auto& [lo, hi] : e.slots)
                        for (int s = lo; s <= hi; ++s) owner[static_cast<std::size_t>(s)] = e.port;
                }
                if (known.size() != live.size()) return "node " + std::to_string(p) + " does not see every live node as healthy";
                for (int s = 0; s < 16384; ++s)
                    if (!alive(owner[static_cast<std::size_t>(s)]))
                        return "node " + std::to_string(p) + ": slot " + std::to_string(s) + " served by " +
                               std::to_string(owner[static_cast<std::size_t>(s)]) + ", not a live node";
                // Who replicates whom among the live nodes: "PORT>MASTER_PORT" (a
                // node learns a replica's role by gossip, after redis-cli is done).
                std::map<std::string, int> port_of_id;
                for (const auto& e : entries) port_of_id[e.id] = e.port;
                std::set<std::string> roles;
                for (const auto& e : entries)
                    if (alive(e.port))
                        roles.insert(std::to_string(e.port) +
                                     (e.has("slave") ? ">" + std::to_string(port_of_id.count(e.master_id) != 0 ? port_of_id[e.master_id] : 0) : ""));
                std::string role_text;
                for (const auto& r : roles) role_text += r + " ";
                if (reference.empty()) {
                    reference = std::move(owner), reference_roles = role_text, reference_port = p;
                } else if (owner != reference) {
                    return "nodes " + std::to_string(reference_port) + " and " + std::to_string(p) + " disagree on the slots";
                } else if (role_text != reference_roles) {
                    return "nodes " + std::to_string(reference_port) + " and " + std::to_string(p) + " disagree on the replicas: " +
                           reference_roles + "/ " + role_text;
                }
                for (const auto& e : entries)
                    if (e.has("myself") && e.has("slave")) {
                        const auto repl = command(p, {"INFO", "replication"}).str;
                        if (repl.find("master_link_status:up") == std::string::npos)
                            return "replica " + std::to_string(p) + ": link to its master not up";
                    }
            } catch (const std::exception& e) {
                return "node " + std::to_string(p) + ": " + e.what();
            }
        }
        return fed_problem(reference);
    }

    /// "" when a write on every master with live replicas reaches them all.
    /// master_link_status:up is not enough: after a diskless sync, Redis 7
    /// starts a replica's command stream at its first REPLCONF ACK that
    /// finds it online, up to a second later (replicationCron); a master
    /// killed before that takes everything it accepted with it.
    std::string fed_problem(const std::vector<int>& owner) const {
        if (owner.size() != 16384) return {};
        try {
            const auto entries = nodes_of(any_live());
            for (const auto& m : entries) {
                if (!m.has("master") || m.failing() || !alive(m.port)) continue;
                long long replicas = 0;
                for (const auto& e : entries) replicas += e.has("slave") && e.master_id == m.id && !e.failing() && alive(e.port) ? 1 : 0;
                if (replicas == 0) continue;
                // A key of one of its slots: a write that reaches its replicas, then removed.
                std::string key;
                for (int i = 0; i < 1000 && key.empty(); ++i) {
                    std::string k = "procsafe-fixture-probe:{" + std::to_string(i) + "}";
                    const auto slot = command(m.port, {"CLUSTER", "KEYSLOT", k}).integer;
                    if (slot >= 0 && slot < 16384 && owner[static_cast<std::size_t>(slot)] == m.port) key = std::move(k);
                }
                if (key.empty()) continue;
                raw_client c(m.port);
                if (c.run({"SET", key, "1"}).error()) return "master " + std::to_string(m.port) + ": SET of a probe refused";
                const long long acked = c.run({"WAIT", std::to_string(replicas), "100"}).integer;
                c.run({"DEL", key});
                if (acked < replicas)
                    return "master " + std::to_string(m.port) + ": " + std::to_string(acked) + " of its " + std::to_string(replicas) +
                           " replicas acknowledged a write";
            }
        } catch (const std::exception& e) {
            return std::string("a probe write: ") + e.what();
        }
        return {};
    }

    void wait_stable(double timeout_s, const std::string& after) const {
        const auto deadline = clock::now() + seconds(timeout_s);
        for (;;) {
            const std::string why = stable_problem(true);
            if (why.empty()) return;
            if (clock::now() > deadline)
                throw std::runtime_error("redis_cluster: not stable " + std::to_string(timeout_s) + " s after " + after + ": " + why + "\n" + views());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    void cleanup() noexcept {
        if (reshard_pid_ > 0) {
            ::kill(reshard_pid_, SIGKILL);
            reap(reshard_pid_, 10);
            reshard_pid_ = -1;
        }
        for (auto& n : nodes_)
            if (n.pid > 0) {
                ::kill(n.pid, SIGCONT);
                ::kill(n.pid, SIGKILL);
            }
        for (auto& n : nodes_)
            if (n.pid > 0) {
                reap(n.pid, 10);
                n.pid = -1;
            }
        if (root_.empty()) return;
        const char* keep = std::getenv("PROCSAFE_KEEP_CLUSTER");
        if (keep != nullptr && *keep != '\0' && std::string(keep) != "0") {
            std::fprintf(stderr, "redis_cluster: kept %s\n", root_.c_str());
            return;
        }
        std::error_code ec;
        std::filesystem::remove_all(root_, ec);
    }

    std::string server_, cli_, root_;
    int node_timeout_ms_;
    std::vector<node> nodes_;
    std::set<int> used_ports_;
    pid_t reshard_pid_ = -1;
    std::string reshard_log_;
    int reshards_ = 0;
};

}  // namespace procsafe_test

/// Skips the test (fails it with PROCSAFE_REQUIRE_REDIS=1) when redis-server
/// or redis-cli is missing here.
#define PROCSAFE_NEED_REDIS_CLUSTER()                                                                         \
    do {                                                                                                      \
        if (::procsafe_test::find_redis_server().empty() || ::procsafe_test::find_redis_cli().empty()) {      \
            if (::procsafe_test::redis_required()) FAIL("redis-server or redis-cli not found (PROCSAFE_REQUIRE_REDIS)"); \
            PROCSAFE_SKIP("redis-server or redis-cli not found (apt-get install redis-server redis-tools)");  \
        }                                                                                                     \
    } while (false)
