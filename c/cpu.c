/*
 * cpu.c - whether the machine has a core to spare for watching: spinning before parking pays
 * only while every runnable thread has a core of its own. When more threads are runnable than
 * there are cores (other processes busy, several pools' threads), a spinning thread takes the
 * core the thread it waits for needs, so nobody spins.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include "internal.h"

/* How long one look at the run queue stays valid. */
#define LOOK_NS 2000000u

static _Atomic uint64_t looked_at; /* now_ns() of the last look, 0 before the first */
static _Atomic int spare = 1;      /* what it showed */

/* The number of runnable threads now, from /proc/loadavg's fourth field ("running/total",
 * proc(5)), or -1 where it cannot be read. */
static int runnable_now(void)
{
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char text[128];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    /* "0.52 0.58 0.59 3/812 4242": the field after the third space */
    const char *at = text;
    for (int spaces = 0; *at && spaces < 3; at++)
        spaces += *at == ' ';
    char *end;
    long running = strtol(at, &end, 10);
    return end != at && *end == '/' ? (int)running : -1;
}

int cpu_core_spare(void)
{
    uint64_t now = now_ns(), last = atomic_load_explicit(&looked_at, memory_order_relaxed);
    if (last && now - last < LOOK_NS)
        return atomic_load_explicit(&spare, memory_order_relaxed);
    atomic_store_explicit(&looked_at, now, memory_order_relaxed);
    static _Atomic long cores;
    if (!atomic_load_explicit(&cores, memory_order_relaxed)) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        atomic_store_explicit(&cores, n > 0 ? n : 1, memory_order_relaxed);
    }
    int running = runnable_now();
    int s = running < 0 || running <= atomic_load_explicit(&cores, memory_order_relaxed);
    atomic_store_explicit(&spare, s, memory_order_relaxed);
    return s;
}
