// How the host moves a camera frame between the two cores over time: the shape of the
// AO loop's camera -> slopes hop with no library and no Rust in it.
//
// A writer thread on cpu 0 publishes a 115,200-byte frame (the Keck-like 240x240 u16) every
// 500 us (2 kHz): it sleeps to 50 us before its slot, spins to it, stamps the time, copies
// the frame into the next of 8 slots and bumps a counter. A reader on cpu 1 sleeps to
// 250 us before each slot, spins for the counter and copies the slot out. Every 1,000
// frames it prints the medians of the hop (writer's stamp -> reader holding the copy) and
// of the reader's copy alone.
//
//   gcc -O2 -pthread -o /tmp/cross-core-copy scripts/probes/cross-core-copy.c
//   /tmp/cross-core-copy 30        # seconds
//
// On the 2-core VM the reports come from (2026-11-29), one 30 s run read hop medians from
// 10.6 to 51.1 us (copy medians 3.4 to 10.9 us) and another from 8.7 to 40.3 us, changing
// within seconds: the reason the AO cases compare each loop run with floor passes seconds
// from it (scenarios/README.md, `runs`).
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { FRAME = 115200, SLOTS = 8, PERIOD_US = 500, BATCH = 1000, STAMPS = 1 << 20 };

static char *slots[SLOTS], *source, *dest;
static atomic_long published;
static atomic_int quit;
static double stamp[STAMPS];
static double t0;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void sleep_until(double us) {
    struct timespec t = {.tv_sec = (long)(us / 1e6)};
    t.tv_nsec = (long)((us - t.tv_sec * 1e6) * 1e3);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
}

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *writer(void *unused) {
    (void)unused;
    pin(0);
    for (long g = 1; !atomic_load(&quit); g++) {
        double due = t0 + g * (double)PERIOD_US;
        sleep_until(due - 50);
        while (now_us() < due) {
        }
        stamp[g % STAMPS] = now_us();
        memcpy(slots[g % SLOTS], source, FRAME);
        atomic_store(&published, g);
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30;
    for (int i = 0; i < SLOTS; i++) {
        slots[i] = aligned_alloc(4096, FRAME);
        memset(slots[i], 1, FRAME);
    }
    source = aligned_alloc(4096, FRAME);
    dest = aligned_alloc(4096, FRAME);
    memset(source, 2, FRAME);
    memset(dest, 1, FRAME);
    t0 = now_us() + 1000;
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    pin(1);
    static double hop[BATCH], copy[BATCH];
    int k = 0;
    double start = now_us();
    for (long g = 1; now_us() - start < seconds * 1e6; g++) {
        double due = t0 + g * (double)PERIOD_US;
        sleep_until(due - 250);
        while (atomic_load(&published) < g) {
        }
        double a = now_us();
        memcpy(dest, slots[g % SLOTS], FRAME);
        double b = now_us();
        hop[k] = b - stamp[g % STAMPS];
        copy[k] = b - a;
        if (++k == BATCH) {
            qsort(hop, BATCH, sizeof hop[0], by_value);
            qsort(copy, BATCH, sizeof copy[0], by_value);
            printf("%5.1f s  hop p50 %5.1f us  copy p50 %5.1f us\n", (now_us() - start) / 1e6,
                   hop[BATCH / 2], copy[BATCH / 2]);
            fflush(stdout);
            k = 0;
        }
    }
    atomic_store(&quit, 1);
    pthread_join(w, NULL);
    return 0;
}
