# -*- test-case-name: tests.unit.test_bench -*-
"""
Run a server under twistd with its pauses recorded, to tell a pause of
ours from a pause of the machine in a latency benchmark:

    PROBE_OUT=/tmp/probe.json taskset -c 1 .venv/bin/python -m memcachier.bench.probe \\
        -n --pidfile= memcachier --listen tcp:11311:interface=127.0.0.1

At shutdown (SIGTERM, SIGINT) it writes JSON to C{PROBE_OUT}: every full
garbage collection (seconds since start, milliseconds, objects collected,
objects it scanned: the tracked objects not frozen),
the worst collection per generation, and how late a 10 ms reactor timer
fired, with the CPU time the process spent in that interval.  A timer late
by 500 ms with 4 ms of CPU in between means the kernel did not run the
process (a busy machine); late with as much CPU means the process itself
was busy (a collection, a long request).
"""

import gc
import json
import os
import sys
import time

#: the reactor timer's period (seconds)
TICK = 0.01

#: intervals reported one by one: late by more than this (ms) ...
LATE_MS = 20
#: ... or with more than this much CPU (ms)
BUSY_MS = 10


class PauseProbe:
    """
    Collector pauses (a C{gc.callbacks} entry) and reactor lateness (a
    timer re-armed every L{TICK}).

    @param wall: wall-clock seconds (injected for tests).
    @param cpu: this thread's CPU seconds (injected for tests).
    """

    def __init__(self, wall=time.perf_counter, cpu=time.thread_time):
        self._wall = wall
        self._cpu = cpu
        self._started = wall()
        self._gcStarted = 0.0
        self._scanned = 0
        self.gcCount = [0, 0, 0]
        self.gcWorstMs = [0.0, 0.0, 0.0]
        self.fullCollections = []
        self.worstLateMs = 0.0
        self.cpuOfWorstMs = 0.0
        self.lateOver = {5: 0, 25: 0}
        self.intervals = []
        self._due = None
        self._cpuAt = None

    def gcCallback(self, phase, info):
        if phase == "start":
            if info["generation"] == 2:
                # what the full collection scans (counted before it is timed)
                self._scanned = len(gc.get_objects())
            self._gcStarted = self._wall()
            return
        generation = info["generation"]
        elapsed = (self._wall() - self._gcStarted) * 1e3
        self.gcCount[generation] += 1
        self.gcWorstMs[generation] = max(self.gcWorstMs[generation], elapsed)
        if generation == 2:
            self.fullCollections.append(
                (round(self._wall() - self._started, 1), round(elapsed, 2), info.get("collected"),
                 self._scanned)
            )

    def tick(self):
        """
        The timer fired: note how late, and what CPU the interval took.
        """
        now, cpu = self._wall(), self._cpu()
        if self._due is not None:
            late = (now - self._due) * 1e3
            busy = (cpu - self._cpuAt) * 1e3
            if late > self.worstLateMs:
                self.worstLateMs, self.cpuOfWorstMs = late, busy
            for limit in self.lateOver:
                if late > limit:
                    self.lateOver[limit] += 1
            if late > LATE_MS or busy > BUSY_MS:
                self.intervals.append(
                    (round(now - self._started, 1), round(late, 1), round(busy, 1))
                )
        self._due, self._cpuAt = now + TICK, cpu

    def report(self):
        return {
            "gc_count": self.gcCount,
            "gc_worst_ms": [round(w, 2) for w in self.gcWorstMs],
            "full_collections_t_ms_collected_scanned": self.fullCollections,
            "timer_worst_late_ms": round(self.worstLateMs, 1),
            "timer_cpu_of_worst_ms": round(self.cpuOfWorstMs, 1),
            "timer_late_over_ms": self.lateOver,
            "intervals_t_late_cpu": self.intervals,
            "tracked_objects": len(gc.get_objects()),
            "frozen_objects": gc.get_freeze_count(),
        }


def main():
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.scripts.twistd import run

    probe = PauseProbe()
    gc.callbacks.append(probe.gcCallback)

    def dump():
        with open(os.environ.get("PROBE_OUT", "probe.json"), "w") as out:
            json.dump(probe.report(), out)

    reactor.callWhenRunning(LoopingCall(probe.tick).start, TICK)
    reactor.addSystemEventTrigger("before", "shutdown", dump)
    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
