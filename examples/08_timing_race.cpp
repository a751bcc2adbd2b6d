// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 8. The timing race (the tutorial's child that waits on a condition after it was already
//    notified, and hangs; fixed with an event).
//
// A notification is a message, not a state: if it is sent before the child
// starts to wait, nobody receives it, and the child waits forever. Here the
// wait is bounded so the program can report "missed the notification"
// instead of hanging. The fix is to wait on *state*: the child waits until a
// counter in shared memory says the event happened (wait_at_least). A child
// that comes late sees the count and does not wait at all; one that comes
// early sleeps until the increment wakes it.
#include "support.hpp"

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/sync/interprocess_condition.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>

#include <chrono>
#include <cstdio>

namespace bip = boost::interprocess;

struct channel {
    bip::interprocess_mutex mutex;
    bip::interprocess_condition condition;
};

int main() {
    auto seg = procsafe::segment::anonymous(16 * 1024);
    auto& outcome = seg.construct<procsafe::atomic_counter<int>>("outcome");  // 1: woken, 2: missed

    // (a) A condition variable: notify first, then the child starts waiting.
    auto& bare = seg.construct<channel>("bare");
    {
        bip::scoped_lock<bip::interprocess_mutex> lock(bare.mutex);
        bare.condition.notify_all();  // nobody is waiting yet: the message is lost
    }
    example::run_processes(1, [&](int) {
        bip::scoped_lock<bip::interprocess_mutex> lock(bare.mutex);
        const auto deadline = boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(200);
        outcome.store(bare.condition.timed_wait(lock, deadline) ? 1 : 2);
    });
    std::printf("condition only: the child %s\n",
                outcome.value() == 1 ? "was woken" : "missed the notification (gave up after 200 ms)");

    // (b) The fix: the event is a count; the child waits for the count.
    auto& events = seg.construct<procsafe::atomic_counter<int>>("events");
    events.increment();  // the event happens before the child starts, as in (a)
    example::run_processes(1, [&](int) {
        outcome.store(events.wait_at_least_for(1, std::chrono::seconds(5)) ? 1 : 2);
    });
    std::printf("counter wait: the late child %s\n", outcome.value() == 1 ? "saw the event at once" : "missed it (a bug)");

    // And a child that starts waiting first is woken by the increment.
    auto& second = seg.construct<procsafe::atomic_counter<int>>("second");
    auto& waiting = seg.construct<procsafe::atomic_counter<int>>("waiting");
    std::fflush(nullptr);
    if (::fork() == 0) {
        waiting.increment();
        ::_exit(second.wait_at_least_for(1, std::chrono::seconds(5)) ? 0 : 1);
    }
    waiting.wait_at_least(1);  // the child is about to wait
    second.increment();        // wakes it
    int status = 0;
    ::wait(&status);
    const bool woken = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::printf("counter wait: the early child %s\n", woken ? "was woken by the increment" : "was not woken (a bug)");
    return outcome.value() == 1 && woken ? 0 : 1;
}

// Build & run:
//   build/dev/examples/08_timing_race
// Expected output:
//   condition only: the child missed the notification (gave up after 200 ms)
//   counter wait: the late child saw the event at once
//   counter wait: the early child was woken by the increment
