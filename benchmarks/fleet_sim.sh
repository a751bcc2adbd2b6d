#!/usr/bin/env bash
# procsafe: process-safe shared counters.
# SPDX-License-Identifier: MIT
#
# The fleet simulation (docs/redis.md, "A fleet simulated"): starts its own
# Redis servers on 127.0.0.1 (free ports, temporary directories, no RDB,
# appendonly yes, appendfsync everysec), runs procsafe-fleet-sim against
#   (a) one redis-server,
#   (b) a Redis Cluster of 3 masters, no replicas,
#   (c) a Redis Cluster of 3 masters and 3 replicas (the replicas' cost,
#       and what a WAIT after each host's flush costs),
# stops them all at exit, and prints a table (medians of --runs runs).
#
#   benchmarks/fleet_sim.sh [--quick] [--generator PATH] [--runs N]
#                           [--hosts N] [--counters C] [--seconds T]
#                           [--only a,b,c]   (the parts above to run)
#
# --quick: a few seconds, small sizes, no replicas (the ctest smoke test
# bench.fleet_sim_quick). Exit status 1 when a total is not exact or a
# server cannot be started. Without redis-server or redis-cli it prints
# "SKIPPED: ..." and exits 0, unless PROCSAFE_REQUIRE_REDIS=1 (a failure).
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
generator="$here/../build/dev/benchmarks/procsafe-fleet-sim"
quick=0
runs=3
hosts=2000
counters=100
seconds=10
only=a,b,c
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --generator) generator=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --hosts) hosts=$2; shift 2 ;;
        --counters) counters=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        *) echo "fleet_sim.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$quick" = 1 ]; then
    runs=1 hosts=60 counters=20 seconds=1
fi

missing=
for p in redis-server redis-cli; do
    command -v "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    case "${PROCSAFE_REQUIRE_REDIS:-}" in
        ''|0) echo "SKIPPED: not found:$missing (Debian's redis-server and redis-tools)"; exit 0 ;;
        *) echo "FAILED: not found:$missing, and PROCSAFE_REQUIRE_REDIS is set" >&2; exit 1 ;;
    esac
fi
if [ ! -x "$generator" ]; then
    echo "fleet_sim.sh: $generator: not built (cmake --build build/dev --target procsafe-fleet-sim)" >&2
    exit 1
fi

top=$(mktemp -d /tmp/procsafe-fleet-sim-XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    pids=()
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody listens on, nor on PORT + 10000 (a cluster node's bus), not
# handed out before, both below Linux' ephemeral ports (32768 and up: an
# outgoing connection's local port cannot be bound). Sets `port`.
used_ports=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % 12700))
        case "$used_ports" in *" $p "*|*" $((p + 10000)) "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
            used_ports="$used_ports$p $((p + 10000)) "
            port=$p
            return 0
        fi
    done
    echo "fleet_sim.sh: no free port" >&2
    return 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: bounded.
wait_for() {
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "fleet_sim.sh: timed out after ${secs} s waiting for $what" >&2
    return 1
}

rcli() { local port=$1; shift; timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@"; }
pong() { [ "$(rcli "$1" PING 2>/dev/null)" = PONG ]; }
cluster_ok() { rcli "$1" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok'; }
replica_online() { rcli "$1" INFO replication 2>/dev/null | grep -q '^slave0:.*state=online'; }

# start_server PORT [OPTION...]: in a directory of its own; PID kept for cleanup.
start_server() {
    local port=$1
    shift
    local dir="$top/$port"
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize no --protected-mode yes \
        --save "" --appendonly yes --appendfsync everysec --logfile "$dir/redis.log" "$@" >/dev/null 2>&1 &
    pids+=($!)
    wait_for 20 "redis-server on port $port" pong "$port" || {
        echo "fleet_sim.sh: its log ($dir/redis.log):" >&2
        tail -5 "$dir/redis.log" >&2
        return 1
    }
}

# start_cluster MASTERS REPLICAS_PER_MASTER: sets cluster_ports (masters first).
start_cluster() {
    local masters=$1 replicas=$2 n=$(($1 * ($2 + 1))) p addrs=()
    cluster_ports=()
    for _ in $(seq "$n"); do
        free_port || return 1
        p=$port
        start_server "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 || return 1
        cluster_ports+=("$p")
        addrs+=("127.0.0.1:$p")
    done
    timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes >"$top/create-$n.log" 2>&1 || {
        echo "fleet_sim.sh: redis-cli --cluster create failed:" >&2
        tail -5 "$top/create-$n.log" >&2
        return 1
    }
    for p in "${cluster_ports[@]}"; do wait_for 30 "cluster_state:ok on port $p" cluster_ok "$p" || return 1; done
    masters_ports=()
    for p in "${cluster_ports[@]}"; do
        if rcli "$p" ROLE | head -1 | grep -q master; then masters_ports+=("$p"); fi
    done
    if [ "$replicas" -gt 0 ]; then
        for p in "${masters_ports[@]}"; do wait_for 30 "a replica of port $p online" replica_online "$p" || return 1; done
    fi
    seeds=$(printf '127.0.0.1:%s,' "${masters_ports[@]}")
    seeds=${seeds%,}
}

stop_all() {  # the servers started so far
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    pids=()
}

failed=0
table=()
# scenario LABEL WHERE-OPTIONS... -- GENERATOR-OPTIONS...: FLUSHALL on every
# master first (FUNCTION LOAD stays), then the generator.
scenario() {
    local label=$1 out="$top/$1.out"
    shift
    local p
    for p in "${flush_ports[@]}"; do rcli "$p" FLUSHALL >/dev/null || true; done
    echo "== $label: procsafe-fleet-sim --label $label $*"
    "$generator" --label "$label" "$@" >"$out" 2>&1
    local rc=$?
    grep -v '^JSON \|^TABLE \|^RESULT ' "$out"
    grep '^JSON ' "$out" | sed 's/^JSON //' >>"$jsonl" || true
    if [ $rc -ne 0 ]; then
        echo "fleet_sim.sh: $label: the generator failed (exit status $rc)" >&2
        failed=1
    fi
    local line
    line=$(grep '^TABLE ' "$out" | sed 's/^TABLE //')
    [ -n "$line" ] && table+=("$line")
}

size=(--hosts "$hosts" --counters "$counters" --seconds "$seconds" --runs "$runs")
# The generator's JSON lines (every run, and the medians).
jsonl="/tmp/procsafe-fleet-sim-$$.jsonl"
[ "$quick" = 1 ] && jsonl="$top/runs.jsonl"
: >"$jsonl"

part() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# (a) one server.
if part a; then
    free_port || exit 1
    start_server "$port" || exit 1
    flush_ports=("$port")
    scenario 1server-1ns --redis "127.0.0.1:$port" "${size[@]}"
    if [ "$quick" = 0 ]; then
        # Hosts of 1,000 counters (a watermark hash of 1,000 fields: Redis'
        # hashtable encoding; 100 fields are a listpack): the CPU per change,
        # the memory per reporter, read_fleet() of 200 x 1,000.
        scenario 1server-1000ctrs --redis "127.0.0.1:$port" --hosts $((hosts / 10)) --counters $((counters * 10)) --seconds "$seconds" --runs "$runs"
    fi
    stop_all
fi

# (b) 3 masters, no replicas.
if part b; then
    start_cluster 3 0 || exit 1
    flush_ports=("${masters_ports[@]}")
    if [ "$quick" = 1 ]; then
        scenario 3m-1ns-K16 --redis-cluster "$seeds" "${size[@]}" --stripes 16
        scenario 3m-4ns-K1 --redis-cluster "$seeds" "${size[@]}" --namespaces 4
    else
        scenario 3m-1ns-K1 --redis-cluster "$seeds" "${size[@]}" --stripes 1
        scenario 3m-1ns-K16 --redis-cluster "$seeds" "${size[@]}" --stripes 16
        scenario 3m-1ns-K48 --redis-cluster "$seeds" "${size[@]}" --stripes 48
        scenario 3m-48ns-K1 --redis-cluster "$seeds" "${size[@]}" --namespaces 48
        scenario 3m-1ns-K48-chg10 --redis-cluster "$seeds" "${size[@]}" --stripes 48 --changed 0.1
    fi
    stop_all
fi

# (c) 3 masters and 3 replicas: the replicas' cost; WAIT 1 1000 after each
# host's flush.
if [ "$quick" = 0 ] && part c; then
    start_cluster 3 1 || exit 1
    flush_ports=("${masters_ports[@]}")
    scenario 3+3-1ns-K48 --redis-cluster "$seeds" "${size[@]}" --stripes 48
    scenario 3+3-K48-WAIT --redis-cluster "$seeds" "${size[@]}" --stripes 48 --wait-replicas 1 --wait-timeout 1000
    # One host a window: a flush's own latency, with and without WAIT.
    scenario 3+3-K48-d1 --redis-cluster "$seeds" "${size[@]}" --stripes 48 --depth 1
    scenario 3+3-K48-d1-WAIT --redis-cluster "$seeds" "${size[@]}" --stripes 48 --depth 1 --wait-replicas 1 --wait-timeout 1000
    stop_all
fi

echo
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $(nproc) CPUs, $hosts hosts x $counters counters, $seconds s a run, medians of $runs run(s)"
printf '%-18s %6s %5s %5s %4s %5s %10s %12s %8s %8s %6s %6s %8s %8s %5s\n' scenario hosts ctrs ns K chg flushes/s changes/s us/chg repl_us share util p50_ms p99_ms exact
for l in "${table[@]}"; do echo "$l"; done
echo "(us/chg: the masters' CPU, used_cpu_sys + used_cpu_user, per field change; repl_us: the replicas'; share: the busiest"
echo " master's share of the masters' CPU; util: its CPU seconds per second; p50/p99: a host's flush, sent to last reply)"
[ "$quick" = 0 ] && echo "JSON lines: $jsonl"
if [ "$failed" = 0 ] && [ "${#table[@]}" -gt 0 ] && ! printf '%s\n' "${table[@]}" | grep -q ' NO$'; then
    echo "fleet_sim: every total exact"
    exit 0
fi
echo "fleet_sim: FAILED (a total not exact, or a run that failed)" >&2
exit 1
