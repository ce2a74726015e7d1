// Whether the hypervisor stops a vCPU that spins on `pause`: where in a spin that starts
// at a wake-up the spinning thread loses 2-10 µs, with and without a break in the pauses.
//
// KVM's pause-loop exiting (AMD's pause filter, Intel's PLE) takes a vCPU that runs
// `pause` over and over, each within a threshold of cycles (128 by default) of the last,
// for a lock waiter whose lock holder is preempted, and exits to the host after a count
// (AMD: 3000 pauses) or a window of cycles (Intel: 4096), growing it at each exit and
// resetting it when the vCPU is scheduled in again (after it halted idle, for one).
//
// One process pinned to CPU (default 1) sleeps to the next ms ITERS times, then spins
// 400 µs on `pause` reading the TSC after each, and counts the gaps of 2-10 µs per 10 µs
// of spin since the wake. With EVERY > 0, it spends BREAK_NS without a `pause` after every
// EVERY pauses (as shmstream's `Spin` does).
//
//   gcc -O2 -o /tmp/pause-exits scripts/probes/pause-exits.c
//   /tmp/pause-exits 0 0 1000; /tmp/pause-exits 256 100 1000
//
// On the 2-core AMD EPYC VM the reports come from (2026-12-01), two runs of 1 000 wakes:
// without breaks, 1 526 and 1 789 gaps (mean 5.7 and 7.1 µs), 801 and 882 of them 80-110 µs
// into the spin, more at 250-310 µs (the count grown); with 100 ns without a `pause` every
// 256 pauses, 48 to 202 gaps in five runs, spread over the whole spin as with no `pause` at
// all (the host's own noise).
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s EVERY BREAK_NS ITERS [CPU]\n", argv[0]);
        return 2;
    }
    int every = atoi(argv[1]);
    double break_ns = atof(argv[2]);
    int iters = atoi(argv[3]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(argc > 4 ? atoi(argv[4]) : 1, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");

    double a = now_ns();
    uint64_t t0 = __rdtsc();
    while (now_ns() - a < 2e8) {}
    double ghz = (__rdtsc() - t0) / (now_ns() - a);

    int bins[40] = {0}, gaps = 0;
    double lost = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (int it = 0; it < iters; it++) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        uint64_t start = __rdtsc(), prev = start, end = start + (uint64_t)(400e3 * ghz);
        unsigned n = 0;
        while (prev < end) {
            _mm_pause();
            if (every && ++n % every == 0) {
                uint64_t s = __rdtsc();
                while (__rdtsc() - s < (uint64_t)(break_ns * ghz)) {}
            }
            uint64_t now = __rdtsc();
            double gap = (now - prev) / ghz;
            if (gap > 2000 && gap < 10000) {
                int k = (int)((prev - start) / ghz / 10000);
                if (k < 40) bins[k]++;
                gaps++;
                lost += gap;
            }
            prev = now;
        }
    }
    printf("every=%d break=%.0f ns: %d gaps of 2-10 us in %d wakes (mean %.2f us)\n", every,
           break_ns, gaps, iters, gaps ? lost / gaps / 1e3 : 0);
    printf("per 10 us of spin since the wake:\n");
    for (int k = 0; k < 40; k++) printf("%d%s", bins[k], k % 10 == 9 ? "\n" : " ");
    return 0;
}
