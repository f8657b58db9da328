/*
 * cpu.c - what the machine's cores are doing, from a look at the run queue (/proc/loadavg) at
 * most every 2 ms. Spinning before parking pays only while every runnable thread has a core of
 * its own: when more threads are runnable than there are cores (other processes busy, several
 * pools' threads), a spinning thread takes the core the thread it waits for needs, so nobody
 * spins. And handing a read to a worker pays only while a core is left for the worker beside
 * the caller and the other processes' threads: else each hand-off costs context switches
 * (the worker waits for a core, then the caller does), more than the read itself. And, for an
 * inline run's budget with no core spare, how long the calling thread waited for a core (its
 * run_delay, /proc/thread-self/schedstat).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include "internal.h"

/* How long one look at the run queue stays valid. */
#define LOOK_NS 2000000u

static _Atomic uint64_t looked_at;    /* now_ns() of the last look, 0 before the first */
static _Atomic int spare = 1;         /* what it showed: no more runnable threads than cores */
static _Atomic int seen_running = -1; /* and its numbers: runnable threads (-1: unknown), */
static _Atomic int seen_awake;        /* this process's workers not parked then */
static _Atomic long cores;            /* online cores, once known */
static _Atomic int awake;             /* worker threads of this process not parked */

void cpu_worker_awake(int delta)
{
    atomic_fetch_add_explicit(&awake, delta, memory_order_relaxed);
}

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

/* Looks at the run queue again when the last look is older than LOOK_NS. */
static void look(void)
{
    uint64_t now = now_ns(), last = atomic_load_explicit(&looked_at, memory_order_relaxed);
    if (last && now - last < LOOK_NS)
        return;
    atomic_store_explicit(&looked_at, now, memory_order_relaxed);
    if (!atomic_load_explicit(&cores, memory_order_relaxed)) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        atomic_store_explicit(&cores, n > 0 ? n : 1, memory_order_relaxed);
    }
    int running = runnable_now(), is_spare, pays;
    int awake_now = atomic_load_explicit(&awake, memory_order_relaxed);
    cpu_judge(running, awake_now, 0, atomic_load_explicit(&cores, memory_order_relaxed), &is_spare,
              &pays);
    atomic_store_explicit(&seen_running, running, memory_order_relaxed);
    atomic_store_explicit(&seen_awake, awake_now, memory_order_relaxed);
    atomic_store_explicit(&spare, is_spare, memory_order_relaxed);
}

void cpu_judge(int running, int awake_workers, int long_workers, long n_cores, int *is_spare,
               int *pays)
{
    /* The others: runnable threads that are neither this process's workers awake at the look
     * nor one caller (the thread looking, or beside the worker looking); and the workers busy
     * with long reads now, which keep their cores as other processes' threads do (counted
     * once whether they were awake at the look, which may be 2 ms old, or not). */
    int others = running - awake_workers - 1 + long_workers;
    *is_spare = running < 0 || running <= n_cores;
    *pays = running < 0 || others <= n_cores - 2;
}

int cpu_core_spare(void)
{
    look();
    return atomic_load_explicit(&spare, memory_order_relaxed);
}

static _Atomic int handoff_mode = PASYN_HANDOFF_LOOK;

void pasyn_set_handoff(int mode)
{
    atomic_store_explicit(&handoff_mode, mode, memory_order_relaxed);
}

int cpu_handoff_pays(int free_workers, int long_workers)
{
    if (free_workers <= 0)
        return 0;
    int mode = atomic_load_explicit(&handoff_mode, memory_order_relaxed);
    if (mode != PASYN_HANDOFF_LOOK)
        return mode == PASYN_HANDOFF_ALWAYS;
    look();
    int is_spare, pays;
    cpu_judge(atomic_load_explicit(&seen_running, memory_order_relaxed),
              atomic_load_explicit(&seen_awake, memory_order_relaxed), long_workers,
              atomic_load_explicit(&cores, memory_order_relaxed), &is_spare, &pays);
    return pays;
}

uint64_t cpu_thread_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t cpu_budget_left(uint64_t budget_ns, uint64_t cpu_ns, uint64_t wall_ns)
{
    if (cpu_ns >= budget_ns)
        return 0;
    uint64_t left = budget_ns - cpu_ns;
    return wall_ns + left <= BUDGET_WALL_MAX * budget_ns ? left : 0;
}

uint64_t cpu_held_left(uint64_t budget_ns, uint64_t lead_ns, uint64_t wall_ns, uint64_t delay_ns)
{
    uint64_t held = lead_ns + (wall_ns > delay_ns ? wall_ns - delay_ns : 0);
    return held < budget_ns ? budget_ns - held : 0;
}

int cpu_parse_schedstat(const char *text, size_t len, uint64_t *delay_ns)
{
    uint64_t field[3];
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (at >= len || text[at] != ' ')
                return -1;
            at++;
        }
        if (at >= len || text[at] < '0' || text[at] > '9')
            return -1;
        uint64_t v = 0;
        while (at < len && text[at] >= '0' && text[at] <= '9') {
            uint64_t digit = (uint64_t)(text[at++] - '0');
            if (v > (UINT64_MAX - digit) / 10)
                return -1;
            v = v * 10 + digit;
        }
        field[i] = v;
    }
    /* The kernel keeps no statistics: "0 0 0". A thread reading its own ran at least once (its
     * CPU time may still read 0: it is brought up to date at ticks and switches only). */
    if (field[2] == 0)
        return -1;
    *delay_ns = field[1];
    return 0;
}

int cpu_run_delay(cpu_sched *s, int check, uint64_t *delay_ns)
{
    /* with `check`, twice: a file kept open for a thread that ended (its id now another's)
     * reads as ESRCH, and is opened again */
    for (int tries = check ? 2 : 1; tries > 0; tries--) {
        if (check) {
            pid_t tid = gettid();
            if (s->fd && s->tid != tid)
                cpu_sched_close(s); /* another thread's */
            if (!s->fd) {
                int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                    return -1;
                s->fd = fd + 1;
                s->tid = tid;
            }
        }
        if (!s->fd)
            return -1;
        char text[96];
        ssize_t n = pread(s->fd - 1, text, sizeof text, 0);
        if (n > 0)
            return cpu_parse_schedstat(text, (size_t)n, delay_ns);
        cpu_sched_close(s);
    }
    return -1;
}

void cpu_sched_close(cpu_sched *s)
{
    if (s->fd)
        close(s->fd - 1);
    s->fd = 0;
    s->tid = 0;
}
