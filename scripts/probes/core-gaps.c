// Which gaps the machine's own tasks leave in a busy core: what stalls an AO loop's stage
// for milliseconds at a time under the time-sharing policy.
//
// One process pinned to CPU (default 1) reads the clock in a loop for SECONDS and prints
// every gap over 0.2 ms (another task, an interrupt or the host had the core), then how
// many there were. Run one per core at once: a task that wakes when every core is busy
// must take one of them, where with an idle core beside it it would have run there.
//
//   gcc -O2 -o /tmp/core-gaps scripts/probes/core-gaps.c
//   /tmp/core-gaps 0 8 > /tmp/gaps0.txt & /tmp/core-gaps 1 8; wait; tail -1 /tmp/gaps0.txt
//
// On the 2-core VM the reports come from (2026-11-29): one core busy, no gap in 8 s; both
// busy, 28 gaps of 0.2-5.8 ms in 8 s. The tasks behind them, from /proc/*/task/*/schedstat
// over the same 8 s: a tokio-rt-worker thread of the sandbox's PID 1 (22.6 ms in 15
// slices) and kdamond.0, DAMON's proactive reclaim (14.2 ms in 16). They are what stalls a
// SCHED_OTHER stage woken while one of them runs on its core (scenarios/README.md,
// `rt_priority` and `slice_us`). Under `chrt -f` the probe itself is throttled by the
// kernel's RT bandwidth (sched_rt_runtime_us): ~50 ms gaps every second, not the machine.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    int cpu = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 8.0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    long long start = now_ns(), last = start, end = start + (long long)(secs * 1e9);
    int gaps = 0;
    for (;;) {
        long long t = now_ns();
        if (t > end)
            break;
        if (t - last > 200000) {
            printf("%.3f s: gap %.2f ms\n", (last - start) / 1e9, (t - last) / 1e6);
            gaps++;
        }
        last = t;
    }
    printf("cpu %d: %d gaps over 0.2 ms in %.1f s\n", cpu, gaps, secs);
    return 0;
}
