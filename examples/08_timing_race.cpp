// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// 8. The timing race (seed 003's condition and event).
//
// A notification is a message, not a state: if it is sent before the child
// starts to wait, nobody receives it, and the child waits forever. Here the
// wait is bounded so the program can report "missed the notification"
// instead of hanging. The fix is to wait on *state*: a flag in shared memory,
// set and checked under the same lock as the condition. A child that comes
// late sees the flag and does not wait at all.
#include "support.hpp"

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/sync/interprocess_condition.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>

#include <cstdio>

namespace bip = boost::interprocess;

struct channel {
    bip::interprocess_mutex mutex;
    bip::interprocess_condition condition;
    bool event_set = false;  // the state; read and written under `mutex` only
};

static boost::posix_time::ptime in_ms(int ms) {
    return boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(ms);
}

int main() {
    auto seg = procsafe::segment::anonymous(16 * 1024);
    auto& outcome = seg.construct<procsafe::atomic_counter<int>>("outcome");  // 1: woken, 2: missed

    // (a) Notify first, then the child starts waiting for the notification.
    auto& bare = seg.construct<channel>("bare");
    {
        bip::scoped_lock<bip::interprocess_mutex> lock(bare.mutex);
        bare.condition.notify_all();  // nobody is waiting yet: the message is lost
    }
    example::run_processes(1, [&](int) {
        bip::scoped_lock<bip::interprocess_mutex> lock(bare.mutex);
        outcome.store(bare.condition.timed_wait(lock, in_ms(200)) ? 1 : 2);
    });
    std::printf("condition only: the child %s\n",
                outcome.value() == 1 ? "was woken" : "missed the notification (gave up after 200 ms)");

    // (b) The fix: set the state under the lock, then notify; wait on the state.
    auto& fixed = seg.construct<channel>("fixed");
    {
        bip::scoped_lock<bip::interprocess_mutex> lock(fixed.mutex);
        fixed.event_set = true;
        fixed.condition.notify_all();
    }
    example::run_processes(1, [&](int) {
        bip::scoped_lock<bip::interprocess_mutex> lock(fixed.mutex);
        const bool seen = fixed.condition.timed_wait(lock, in_ms(5000), [&] { return fixed.event_set; });
        outcome.store(seen ? 1 : 2);
    });
    std::printf("flag + condition: the child %s\n",
                outcome.value() == 1 ? "saw the event at once" : "missed the event (a bug)");
    return outcome.value() == 1 ? 0 : 1;
}

// Build & run:
//   build/dev/examples/08_timing_race
// Expected output:
//   condition only: the child missed the notification (gave up after 200 ms)
//   flag + condition: the child saw the event at once
