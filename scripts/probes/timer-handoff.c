// What a timed sleep costs a hand-off between two processes on one core: the sender
// publishes a word, wakes the receiver (FUTEX_WAKE) and blocks in FUTEX_WAIT with a
// timeout; the receiver, parked in FUTEX_WAIT with its own timeout, stamps its wake.
// Both run under SCHED_FIFO 50 on CPU 1, one hand-off each ms, N times; printed: the
// hand-off from the sender's FUTEX_WAKE return to the receiver's wake (p10/p50/p90 µs).
//
// A timeout that ends before the next scheduler tick makes its timer the core's earliest:
// the kernel reprograms the local APIC timer when it arms it (the sender blocking) and
// when it cancels it (the receiver woken before it fires). In a KVM guest without posted
// timers that write is an exit to the host.
//
//   gcc -O2 -o /tmp/timer-handoff scripts/probes/timer-handoff.c
//   sudo /tmp/timer-handoff 2000 50000000 50000000   # sender / receiver timeouts, ns
//   sudo /tmp/timer-handoff 2000 250000 50000000
//   sudo /tmp/timer-handoff 2000 50000000 2000000
//
// On the 2-core AMD EPYC VM the reports come from (HZ=250, 2026-12-01): both 50 ms,
// p50 2.8 µs; the sender's 250 µs, 8.1 µs; the receiver's 2 ms, 8.0 µs (p10 2.6: the tick
// sometimes came first); both short, 8.1 µs. A sender blocking in nanosleep(300 µs)
// instead: 7.8 µs.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void park(_Atomic uint32_t *w, uint32_t v, long timeout_ns) {
    struct timespec to = {timeout_ns / 1000000000L, timeout_ns % 1000000000L};
    syscall(SYS_futex, w, FUTEX_WAIT, v, &to, NULL, 0);
}

static void wake(_Atomic uint32_t *w) { syscall(SYS_futex, w, FUTEX_WAKE, 1000, NULL, NULL, 0); }

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

struct shared {
    _Atomic uint32_t seq;
    char pad[60];
    _Atomic uint32_t ack;
    char pad2[60];
    _Atomic long long woke_from;
    long long hop[100000];
};

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s N SENDER_TIMEOUT_NS RECEIVER_TIMEOUT_NS\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    long sender_to = atol(argv[2]), receiver_to = atol(argv[3]);
    if (n < 10 || n > 100000) n = 2000;
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");
    struct sched_param p = {50};
    if (sched_setscheduler(0, SCHED_FIFO, &p) != 0) perror("SCHED_FIFO (needs root)");
    if (fork() == 0) {
        for (uint32_t i = 1; i <= (uint32_t)n; i++) {
            while (atomic_load(&s->seq) < i) park(&s->seq, i - 1, receiver_to);
            s->hop[i - 1] = now_ns() - s->woke_from;
            atomic_store(&s->ack, i);
            wake(&s->ack);
        }
        _exit(0);
    }
    usleep(10000);
    for (uint32_t i = 1; i <= (uint32_t)n; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        atomic_store(&s->seq, i);
        wake(&s->seq);
        s->woke_from = now_ns();
        while (atomic_load(&s->ack) < i) park(&s->ack, i - 1, sender_to);
    }
    wait(NULL);
    qsort(s->hop, n, sizeof s->hop[0], cmp);
    printf("hand-off from the wake's return: p10 %.2f p50 %.2f p90 %.2f us\n",
           s->hop[n / 10] / 1e3, s->hop[n / 2] / 1e3, s->hop[9 * n / 10] / 1e3);
    return 0;
}
