/*
 * test_hub.c - unit tests of c/hub.c, printed as TAP for prove(1).
 *
 * Single-threaded: an empty hub (drain NULL, poll 0, descriptor not readable); NOTIFY_NONE
 * tasks freed by the hub; NOTIFY_HUB completions (poll 1, descriptor readable, drained
 * oldest first, then poll 0 again); one wake-up per burst (the eventfd counter is 1 after
 * several completions); NOTIFY_SYNC tasks that bypass the list. Threaded: pasyn_task_wait
 * while another thread completes the task after a sleep; several waiters sharing the hub's
 * condition variable; sync hand-offs in a loop; a connected unix socket signalled beside the
 * descriptor (one byte per burst, a signal pending at accept passed on, unaccept, a closed
 * peer harmless, paths and folders removed); 4 producers completing 1,000,000 tasks while
 * the main thread polls and drains, each task seen exactly once and none lost.
 *
 * PASYN_TEST_SCALE (a factor, default 1) scales the 1,000,000 tasks and the hand-off loop.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -O2 -g -Ic c/test/test_hub.c c/deque.c \
 *      c/hub.c c/task.c -lsqlite3 -lpthread -o /tmp/test_hub
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "tap.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static pasyn_task *mk(pasyn_hub *hub, int notify, uintptr_t id)
{
    static const char sql[] = "SELECT 1"; /* heap-allocated copy: a leak shows under ASan */
    pasyn_task *t = pasyn_task_new(PASYN_EXEC, sql, sizeof sql - 1);
    if (!t) {
        fprintf(stderr, "pasyn_task_new failed\n");
        exit(1);
    }
    t->hub = hub;
    t->notify = notify;
    pasyn_task_set_user(t, (void *)id);
    return t;
}

static uintptr_t id_of(const pasyn_task *t)
{
    return (uintptr_t)pasyn_task_user(t);
}

/* 1 when the hub's descriptor polls readable right now */
static int fd_readable(pasyn_hub *hub)
{
    struct pollfd p = {.fd = pasyn_hub_fd(hub), .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, 0);
    while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & POLLIN);
}

/* Consumes the descriptor and returns how many signals it held: the eventfd counter, or
 * the number of bytes in the pipe. */
static uint64_t read_signals(pasyn_hub *hub)
{
    int fd = pasyn_hub_fd(hub);
#ifdef __linux__
    uint64_t v = 0;
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v)
        return 0;
    return v;
#else
    char buf[64];
    uint64_t n = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        n += (uint64_t)r;
    return n;
#endif
}

/* Checks that `list` holds exactly ids first..first+n-1 in that order; frees it. */
static int check_list(pasyn_task *list, uintptr_t first, size_t n)
{
    int good = 1;
    size_t seen = 0;
    while (list) {
        pasyn_task *next = pasyn_task_next(list);
        if (seen >= n || id_of(list) != first + seen) {
            diag("drained #%zu: id %zu, expected %zu", seen, (size_t)id_of(list),
                 (size_t)(first + seen));
            good = 0;
        }
        seen++;
        pasyn_task_free(list);
        list = next;
    }
    if (seen != n) {
        diag("drained %zu tasks, expected %zu", seen, n);
        good = 0;
    }
    return good;
}

/* ---- single-threaded -------------------------------------------------------------------- */

static void test_empty(pasyn_hub *hub)
{
    int fd = pasyn_hub_fd(hub);
    ok(fd >= 0, "pasyn_hub_fd gives a descriptor (%d)", fd);
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    ok(fl >= 0 && (fl & O_NONBLOCK) && fdfl >= 0 && (fdfl & FD_CLOEXEC),
       "the descriptor is non-blocking and close-on-exec");
    ok(pasyn_hub_drain(hub) == NULL, "drain of an empty hub returns NULL");
    ok(pasyn_hub_poll(hub, 0) == 0, "poll(0) of an empty hub returns 0");
    double t0 = now_s();
    int r = pasyn_hub_poll(hub, 50);
    double dt = now_s() - t0;
    ok(r == 0 && dt >= 0.04, "poll(50) of an empty hub times out after %.0f ms", dt * 1e3);
    ok(!fd_readable(hub), "the descriptor of an empty hub is not readable");
}

static void test_notify_none(pasyn_hub *hub)
{
    for (uintptr_t i = 0; i < 3; i++)
        hub_complete(hub, mk(hub, NOTIFY_NONE, i)); /* freed by the hub (LeakSanitizer) */
    ok(pasyn_hub_poll(hub, 0) == 0 && !fd_readable(hub) && pasyn_hub_drain(hub) == NULL,
       "NOTIFY_NONE completions are freed, not queued, and do not signal");
}

static void test_notify_hub(pasyn_hub *hub)
{
    for (uintptr_t i = 1; i <= 3; i++)
        hub_complete(hub, mk(hub, NOTIFY_HUB, i));
    ok(pasyn_hub_poll(hub, 0) == 1, "after 3 completions poll(0) returns 1");
    ok(fd_readable(hub), "after 3 completions the descriptor is readable");
    ok(pasyn_hub_poll(hub, 1000) == 1 && fd_readable(hub),
       "it stays readable until drained (polling does not consume it)");
    ok(check_list(pasyn_hub_drain(hub), 1, 3), "drain returns the 3 tasks oldest first");
    ok(pasyn_hub_poll(hub, 0) == 0 && !fd_readable(hub), "after the drain poll(0) returns 0");
    ok(pasyn_hub_drain(hub) == NULL, "a second drain returns NULL");

    /* a single completion, a drain, then another: the second re-arms the descriptor */
    hub_complete(hub, mk(hub, NOTIFY_HUB, 10));
    ok(pasyn_hub_poll(hub, 0) == 1 && check_list(pasyn_hub_drain(hub), 10, 1),
       "a single completion signals and drains");
    hub_complete(hub, mk(hub, NOTIFY_HUB, 11));
    hub_complete(hub, mk(hub, NOTIFY_HUB, 12));
    ok(pasyn_hub_poll(hub, 0) == 1 && check_list(pasyn_hub_drain(hub), 11, 2) &&
           pasyn_hub_poll(hub, 0) == 0,
       "the next burst after a drain signals again");

    /* NOTIFY_NONE in between NOTIFY_HUB ones does not disturb the list */
    hub_complete(hub, mk(hub, NOTIFY_HUB, 20));
    hub_complete(hub, mk(hub, NOTIFY_NONE, 99));
    hub_complete(hub, mk(hub, NOTIFY_HUB, 21));
    ok(check_list(pasyn_hub_drain(hub), 20, 2), "NOTIFY_NONE tasks never show up in a drain");
}

static void test_one_wakeup_per_burst(pasyn_hub *hub)
{
    for (uintptr_t i = 1; i <= 5; i++)
        hub_complete(hub, mk(hub, NOTIFY_HUB, i));
    uint64_t v = read_signals(hub);
    ok(v == 1, "5 completions without a drain signal the descriptor once (counter %llu)",
       (unsigned long long)v);
    ok(check_list(pasyn_hub_drain(hub), 1, 5), "and all 5 are drained oldest first");

    hub_complete(hub, mk(hub, NOTIFY_HUB, 6));
    hub_complete(hub, mk(hub, NOTIFY_HUB, 7));
    v = read_signals(hub);
    ok(v == 1, "the next burst (after the drain) signals once more (counter %llu)",
       (unsigned long long)v);
    ok(check_list(pasyn_hub_drain(hub), 6, 2) && pasyn_hub_poll(hub, 0) == 0,
       "which drains its 2 tasks and leaves the hub quiet");
}

/* ---- a connected socket as the signal target (pasyn_hub_listen / accept / unaccept) ---- */

/* Bytes waiting on `fd` right now (read and counted), -1 when the peer closed. */
static int read_bytes(int fd)
{
    char bytes[64];
    int n = 0;
    ssize_t r;
    while ((r = recv(fd, bytes, sizeof bytes, MSG_DONTWAIT)) > 0)
        n += (int)r;
    return r == 0 ? -1 : n;
}

static int connect_to(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void test_socket_target(pasyn_hub *hub)
{
    ok(pasyn_hub_accept(hub) == -EINVAL, "accept before listen fails with -EINVAL");
    const char *path = NULL;
    int rc = pasyn_hub_listen(hub, &path);
    ok(rc == 0 && path && access(path, F_OK) == 0, "listen makes a socket at a path (%s)",
       path ? path : "none");
    char saved[108], folder[108];
    snprintf(saved, sizeof saved, "%s", path);
    snprintf(folder, sizeof folder, "%s", path);
    *strrchr(folder, '/') = '\0';
    struct stat st;
    ok(stat(folder, &st) == 0 && (st.st_mode & 0777) == 0700,
       "in a folder of its own that only its user can enter (mode %o)", st.st_mode & 0777);
    ok(pasyn_hub_accept(hub) == -EAGAIN, "accept before the host connected fails with -EAGAIN");
    ok(access(saved, F_OK) != 0 && access(folder, F_OK) != 0,
       "and the path and its folder are gone, as after every accept");

    /* A task that was waiting when the host connected is signalled at once. */
    hub_complete(hub, mk(hub, NOTIFY_HUB, 1));
    ok(pasyn_hub_listen(hub, &path) == 0, "listen again");
    int host = connect_to(path);
    ok(host >= 0 && pasyn_hub_accept(hub) == 0 && access(path, F_OK) != 0,
       "the host connects, accept takes it and removes the path");
    ok(read_bytes(host) == 1 && fd_readable(hub),
       "a task waiting at accept signals the socket once; the descriptor stays readable");
    ok(check_list(pasyn_hub_drain(hub), 1, 1) && !fd_readable(hub),
       "the drain returns it and clears the descriptor");

    for (uintptr_t i = 2; i <= 4; i++)
        hub_complete(hub, mk(hub, NOTIFY_HUB, i));
    ok(read_bytes(host) == 1, "a burst of 3 writes one byte to the socket");
    ok(fd_readable(hub) && pasyn_hub_poll(hub, 0) == 1,
       "and the descriptor and poll() see it too (sqlite.fd() keeps working)");
    hub_complete(hub, mk(hub, NOTIFY_HUB, 5));
    ok(read_bytes(host) == 0, "a completion before the drain writes nothing more");
    ok(check_list(pasyn_hub_drain(hub), 2, 4), "the drain returns all 4");
    hub_complete(hub, mk(hub, NOTIFY_HUB, 6));
    ok(read_bytes(host) == 1, "the next burst after the drain writes again");
    pasyn_hub_wake(hub);
    ok(read_bytes(host) == 0, "wake while the signal is pending writes nothing more");
    ok(check_list(pasyn_hub_drain(hub), 6, 1), "the drain returns the task");
    pasyn_hub_wake(hub);
    pasyn_hub_wake(hub);
    ok(read_bytes(host) == 1 && pasyn_hub_drain(hub) == NULL && !fd_readable(hub),
       "wake with nothing to drain writes one byte, and the drain returns nothing");

    /* A second host replaces the first while a wake is pending: it is told too. */
    pasyn_hub_wake(hub);
    int second = -1;
    ok(pasyn_hub_listen(hub, &path) == 0 && (second = connect_to(path)) >= 0 &&
           pasyn_hub_accept(hub) == 0,
       "a second host connects while a wake is pending");
    ok(read_bytes(host) == -1 && read_bytes(second) == 1,
       "the first host's connection is closed; the second gets the pending signal");
    ok(pasyn_hub_drain(hub) == NULL, "drain");
    close(host);
    host = second;

    /* Without the socket: the descriptor alone, as before. */
    hub_complete(hub, mk(hub, NOTIFY_HUB, 7));
    ok(read_bytes(host) == 1, "a completion signals the socket");
    pasyn_hub_unaccept(hub);
    ok(read_bytes(host) == -1, "unaccept closes the hub's end of the socket");
    ok(fd_readable(hub) && check_list(pasyn_hub_drain(hub), 7, 1) && !fd_readable(hub),
       "the descriptor still shows the waiting task, and the drain clears it");
    close(host);

    /* A host that closed its end: completions go on (no SIGPIPE), drains work. */
    ok(pasyn_hub_listen(hub, &path) == 0 && (host = connect_to(path)) >= 0 &&
           pasyn_hub_accept(hub) == 0,
       "a third host connects");
    close(host);
    hub_complete(hub, mk(hub, NOTIFY_HUB, 8));
    hub_complete(hub, mk(hub, NOTIFY_HUB, 9));
    ok(check_list(pasyn_hub_drain(hub), 8, 2), "after the host closed its end, tasks still drain");
    pasyn_hub_unaccept(hub);
    ok(!fd_readable(hub) && pasyn_hub_drain(hub) == NULL, "and the hub is quiet again");

    /* listen without accept: freeing the hub removes the path and its folder */
    pasyn_hub *other = pasyn_hub_new();
    ok(other && pasyn_hub_listen(other, &path) == 0, "another hub listens");
    snprintf(saved, sizeof saved, "%s", path);
    pasyn_hub_free(other);
    ok(access(saved, F_OK) != 0, "pasyn_hub_free removes a path nobody connected to");
}

static void test_wake(pasyn_hub *hub)
{
    pasyn_hub_wake(hub);
    ok(fd_readable(hub), "wake makes the descriptor readable with nothing pending");
    ok(pasyn_hub_drain(hub) == NULL && !fd_readable(hub), "and the next drain clears it");
}

static void test_sync_inline(pasyn_hub *hub)
{
    pasyn_task *t = mk(hub, NOTIFY_SYNC, 1);
    ok(atomic_load(&t->done) == 0, "a fresh NOTIFY_SYNC task is not done");
    hub_complete(hub, t);
    ok(atomic_load(&t->done) == 1, "hub_complete marks a NOTIFY_SYNC task done");
    ok(pasyn_hub_poll(hub, 0) == 0 && !fd_readable(hub) && pasyn_hub_drain(hub) == NULL,
       "a NOTIFY_SYNC completion is not queued and does not signal");
    pasyn_task_wait(t); /* must return at once */
    ok(1, "pasyn_task_wait on a completed task returns");
    pasyn_task_free(t);
}

/* ---- threaded: synchronous completions ------------------------------------------------- */

typedef struct delayed {
    pasyn_hub *hub;
    pasyn_task *t;
    int ms;
    double completed_at;
} delayed;

static void *complete_later(void *arg)
{
    delayed *d = arg;
    sleep_ms(d->ms);
    d->completed_at = now_s();
    hub_complete(d->hub, d->t);
    return NULL;
}

static void test_sync_wait(pasyn_hub *hub)
{
    delayed d = {hub, mk(hub, NOTIFY_SYNC, 1), 100, 0};
    pthread_t th;
    double t0 = now_s();
    pthread_create(&th, NULL, complete_later, &d);
    pasyn_task_wait(d.t);
    double waited = now_s() - t0;
    int done = atomic_load(&d.t->done);
    pthread_join(th, NULL);
    ok(done == 1 && waited >= 0.09,
       "pasyn_task_wait blocks until another thread completes the task (%.0f ms)", waited * 1e3);
    ok(pasyn_hub_poll(hub, 0) == 0 && pasyn_hub_drain(hub) == NULL,
       "the synchronous completion left the hub's list empty");
    pasyn_task_free(d.t);
}

/* a completion while pasyn_hub_poll watches needs no descriptor write; one that comes after
 * the watch gave up (poll sleeping in poll()) must write it, or the host would sleep on */
static void test_poll_watching(pasyn_hub *hub)
{
    delayed soon = {hub, mk(hub, NOTIFY_HUB, 40), 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, complete_later, &soon);
    int r = pasyn_hub_poll(hub, 5000);
    pthread_join(th, NULL);
    ok(r == 1, "poll returns 1 for a completion that comes while it watches");
    ok(check_list(pasyn_hub_drain(hub), 40, 1) && !fd_readable(hub) && pasyn_hub_poll(hub, 0) == 0,
       "drain takes it, and leaves the descriptor unreadable and poll(0) at 0");
    delayed late = {hub, mk(hub, NOTIFY_HUB, 41), 150, 0}; /* well after the watching */
    double t0 = now_s();
    pthread_create(&th, NULL, complete_later, &late);
    r = pasyn_hub_poll(hub, 5000);
    double waited = now_s() - t0;
    pthread_join(th, NULL);
    ok(r == 1 && waited >= 0.14 && waited < 4.0,
       "a completion after the watching wakes poll() through the descriptor (%.0f ms)",
       waited * 1e3);
    ok(fd_readable(hub) && check_list(pasyn_hub_drain(hub), 41, 1) && !fd_readable(hub),
       "that one wrote the descriptor, and the drain cleared it");
}

/* several waiters share hub->sync_cv: completing one must wake it (broadcast), and must not
 * release the others */
typedef struct waiter {
    pasyn_task *t;
    _Atomic int returned;
    pthread_t th;
} waiter;

static void *wait_main(void *arg)
{
    waiter *w = arg;
    pasyn_task_wait(w->t);
    atomic_store(&w->returned, 1);
    return NULL;
}

static void test_sync_many_waiters(pasyn_hub *hub)
{
    enum { NW = 4 };
    waiter w[NW];
    for (int i = 0; i < NW; i++) {
        w[i].t = mk(hub, NOTIFY_SYNC, (uintptr_t)i);
        atomic_init(&w[i].returned, 0);
        pthread_create(&w[i].th, NULL, wait_main, &w[i]);
    }
    sleep_ms(50); /* let them get past the spin into the condition wait */
    int none = 1;
    for (int i = 0; i < NW; i++)
        none &= !atomic_load(&w[i].returned);
    ok(none, "%d waiters block while their tasks are pending", NW);

    /* complete them in the order 2, 0, 3, 1 */
    static const int order[NW] = {2, 0, 3, 1};
    int good = 1;
    for (int k = 0; k < NW; k++) {
        hub_complete(hub, w[order[k]].t);
        double t0 = now_s();
        while (!atomic_load(&w[order[k]].returned) && now_s() - t0 < 10)
            sleep_ms(1);
        good &= atomic_load(&w[order[k]].returned);
        sleep_ms(20);
        for (int j = k + 1; j < NW; j++)
            if (atomic_load(&w[order[j]].returned)) {
                diag("waiter %d returned before its task completed", order[j]);
                good = 0;
            }
    }
    ok(good, "each waiter wakes when (and only when) its own task completes");
    if (!good) { /* release waiters a missed wake-up left stuck, so the test ends */
        pthread_mutex_lock(&hub->mu);
        pthread_cond_broadcast(&hub->sync_cv);
        pthread_mutex_unlock(&hub->mu);
    }
    for (int i = 0; i < NW; i++) {
        pthread_join(w[i].th, NULL);
        pasyn_task_free(w[i].t);
    }
}

/* ping-pong: the main thread hands a fresh NOTIFY_SYNC task to a completer and waits for
 * it, many times; the completer sometimes completes at once (the spin path), sometimes after
 * a pause (the condition-variable path). A lost wake-up hangs (watchdog). */
static _Atomic(pasyn_task *) handoff;
static _Atomic int handoff_stop;

static void *completer_main(void *arg)
{
    pasyn_hub *hub = arg;
    uint64_t s = 88172645463325252ull;
    for (;;) {
        pasyn_task *t = atomic_exchange(&handoff, NULL);
        if (!t) {
            if (atomic_load(&handoff_stop))
                return NULL;
            sched_yield();
            continue;
        }
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        if (s % 8 == 0) {
            struct timespec ts = {0, (long)(s % 200) * 1000L}; /* up to 200 us */
            nanosleep(&ts, NULL);
        }
        hub_complete(hub, t);
    }
}

static void test_sync_handoff(pasyn_hub *hub, double scale)
{
    size_t n = tap_scaled(20000, scale, 200);
    pthread_t th;
    atomic_store(&handoff_stop, 0);
    pthread_create(&th, NULL, completer_main, hub);
    double t0 = now_s();
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
        pasyn_task *t = mk(hub, NOTIFY_SYNC, i);
        atomic_store(&handoff, t);
        pasyn_task_wait(t);
        good += atomic_load(&t->done) == 1 && id_of(t) == i;
        pasyn_task_free(t);
    }
    atomic_store(&handoff_stop, 1);
    pthread_join(th, NULL);
    ok(good == n && pasyn_hub_drain(hub) == NULL,
       "%zu synchronous hand-offs completed, none lost (%.3f s)", n, now_s() - t0);
}

/* ---- threaded: a completion's write trailing a drain ------------------------------------ */

/* A completion writes the descriptor after letting go of the hub's lock, so a host that drains
 * without waiting on the descriptor may take the task before the write lands. The descriptor
 * must not stay readable behind such a drain: once the completion has returned, a drain with
 * nothing new leaves it unreadable (else every poll would return at once, with nothing to
 * drain, until the next completion). */
static pasyn_hub *thub;
static size_t trail_rounds;
static _Atomic size_t trail_completed, trail_checked;

static void *trail_producer(void *arg)
{
    (void)arg;
    for (size_t i = 1; i <= trail_rounds; i++) {
        hub_complete(thub, mk(thub, NOTIFY_HUB, i));
        atomic_store(&trail_completed, i);
        while (atomic_load(&trail_checked) < i)
            sched_yield();
    }
    return NULL;
}

static void test_write_trails_drain(pasyn_hub *hub, double scale)
{
    thub = hub;
    trail_rounds = tap_scaled(20000.0, scale, 200);
    pthread_t th;
    pthread_create(&th, NULL, trail_producer, NULL);
    size_t stuck = 0, lost = 0;
    for (size_t i = 1; i <= trail_rounds; i++) {
        pasyn_task *t;
        for (int k = 0; (t = pasyn_hub_drain(hub)) == NULL; k++) /* not waiting for the write */
            if (k > 1000)
                sched_yield();
        lost += id_of(t) != i || pasyn_task_next(t) != NULL;
        pasyn_task_free(t);
        while (atomic_load(&trail_completed) < i)
            sched_yield();
        if (pasyn_hub_drain(hub) != NULL)
            lost++;
        stuck += fd_readable(hub);
        atomic_store(&trail_checked, i);
    }
    pthread_join(th, NULL);
    ok(lost == 0, "a drain that does not wait for the descriptor takes each task once");
    ok(stuck == 0,
       "the descriptor is never left readable behind a drain that beat the write (%zu of %zu)",
       stuck, trail_rounds);
}

/* ---- threaded: many producers, one host ------------------------------------------------- */

#define NPROD 4

static pasyn_hub *chub;
static size_t ntasks;
static _Atomic size_t alloc_failures;

static void *producer_main(void *arg)
{
    int p = (int)(intptr_t)arg;
    size_t from = ntasks * (size_t)p / NPROD, to = ntasks * (size_t)(p + 1) / NPROD;
    for (size_t i = from; i < to; i++) {
        pasyn_task *t = pasyn_task_new(PASYN_EXEC, NULL, 0);
        if (!t) {
            atomic_fetch_add(&alloc_failures, 1);
            continue;
        }
        t->hub = chub;
        t->notify = NOTIFY_HUB;
        pasyn_task_set_user(t, (void *)(uintptr_t)(i + 1));
        hub_complete(chub, t);
        if ((i & 15) == 0) { /* some fire-and-forget traffic, freed by the hub */
            pasyn_task *f = pasyn_task_new(PASYN_RELEASE, NULL, 0);
            if (f) {
                f->hub = chub;
                f->notify = NOTIFY_NONE;
                hub_complete(chub, f);
            }
        }
        if ((i & 4095) == 0)
            sched_yield();
    }
    return NULL;
}

static void test_concurrent(double scale)
{
    ntasks = tap_scaled(1000000.0, scale, 1000);
    unsigned char *counts = calloc(ntasks, 1);
    chub = pasyn_hub_new();
    if (!counts || !chub) {
        ok(0, "concurrent: set up");
        return;
    }
    size_t last[NPROD];
    for (int p = 0; p < NPROD; p++)
        last[p] = (size_t)-1;

    pthread_t th[NPROD];
    double t0 = now_s();
    for (int p = 0; p < NPROD; p++)
        pthread_create(&th[p], NULL, producer_main, (void *)(intptr_t)p);

    size_t seen = 0, bad_ids = 0, dup = 0, misordered = 0, wakeups = 0, empty_drains = 0,
           max_batch = 0;
    int timed_out = 0;
    while (seen < ntasks) {
        if (!pasyn_hub_poll(chub, 2000)) {
            /* 2 s without a signal while tasks are missing: lost (or producers died) */
            timed_out = 1;
            diag("poll timed out with %zu of %zu tasks seen", seen, ntasks);
            break;
        }
        wakeups++;
        pasyn_task *t = pasyn_hub_drain(chub);
        if (!t)
            empty_drains++;
        size_t batch = 0;
        while (t) {
            pasyn_task *next = pasyn_task_next(t);
            uintptr_t u = id_of(t);
            if (u == 0 || u > ntasks) {
                bad_ids++;
            } else {
                size_t idx = (size_t)u - 1;
                if (counts[idx]++)
                    dup++;
                /* oldest first: each producer's tasks arrive in the order it completed them */
                int p = 0;
                while (p + 1 < NPROD && idx >= ntasks * (size_t)(p + 1) / NPROD)
                    p++;
                if (last[p] != (size_t)-1 && idx <= last[p])
                    misordered++;
                last[p] = idx;
            }
            seen++;
            batch++;
            pasyn_task_free(t);
            t = next;
        }
        if (batch > max_batch)
            max_batch = batch;
    }
    for (int p = 0; p < NPROD; p++)
        pthread_join(th[p], NULL);
    double elapsed = now_s() - t0;

    size_t ones = 0;
    for (size_t i = 0; i < ntasks; i++)
        ones += counts[i] == 1;
    diag("%zu tasks in %.3f s: %zu wake-ups (%zu found the list empty), %.1f tasks per drain, "
         "largest drain %zu",
         ntasks, elapsed, wakeups, empty_drains, wakeups ? (double)seen / (double)wakeups : 0.0,
         max_batch);

    ok(atomic_load(&alloc_failures) == 0, "concurrent: every pasyn_task_new succeeded");
    ok(!timed_out, "concurrent: poll never timed out while tasks were missing (no lost wake-up)");
    ok(bad_ids == 0 && dup == 0, "concurrent: no unknown and no duplicated task");
    ok(ones == ntasks && seen == ntasks, "concurrent: each of %zu tasks seen exactly once", ntasks);
    ok(misordered == 0, "concurrent: each producer's tasks drained oldest first");
    /* a completion that raced the last drain may have left a signal without tasks */
    pasyn_task *rest = pasyn_hub_drain(chub);
    ok(rest == NULL && pasyn_hub_poll(chub, 0) == 0,
       "concurrent: nothing left after the producers finished");
    while (rest) {
        pasyn_task *next = pasyn_task_next(rest);
        pasyn_task_free(rest);
        rest = next;
    }
    pasyn_hub_free(chub);
    free(counts);
}

static void test_free_with_queued(void)
{
    pasyn_hub *hub = pasyn_hub_new();
    for (uintptr_t i = 1; i <= 3; i++)
        hub_complete(hub, mk(hub, NOTIFY_HUB, i));
    pasyn_hub_free(hub); /* frees the 3 queued tasks: LeakSanitizer would report otherwise */
    ok(1, "pasyn_hub_free with 3 queued tasks (leaks checked under ASan)");
    pasyn_hub_free(NULL);
    ok(1, "pasyn_hub_free(NULL) is a no-op");
}

int main(void)
{
    tap_start("Bail out! watchdog: test_hub hung (lost wake-up?)\n", 600);
    double scale = tap_scale();

    pasyn_hub *hub = pasyn_hub_new();
    if (!ok(hub != NULL, "pasyn_hub_new returns a hub")) {
        tap_plan();
        return 1;
    }
    test_empty(hub);
    test_notify_none(hub);
    test_notify_hub(hub);
    test_one_wakeup_per_burst(hub);
    test_socket_target(hub);
    test_wake(hub);
    test_sync_inline(hub);
    test_sync_wait(hub);
    test_poll_watching(hub);
    test_sync_many_waiters(hub);
    test_sync_handoff(hub, scale);
    test_write_trails_drain(hub, scale);
    pasyn_hub_free(hub);

    test_concurrent(scale);
    test_free_with_queued();

    return tap_done();
}
