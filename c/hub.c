/*
 * hub.c - completions. Workers append finished tasks to one list; only the empty->non-empty
 * transition writes the descriptor (and a socket the host connected, see pasyn_hub_listen),
 * so a burst of completions costs the host one wake-up, and not even that while the host is
 * watching the list in pasyn_hub_poll. The host drains the whole list
 * at once. Tasks submitted as synchronous skip the list and wake their waiting thread through
 * a condition variable instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif
#include "internal.h"

static void hub_unlisten(pasyn_hub *hub);

pasyn_hub *pasyn_hub_new(void)
{
    pasyn_hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    hub->sfd = hub->lfd = -1;
#ifdef __linux__
    hub->efd = hub->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (hub->efd < 0)
        goto fail;
#else
    int fds[2];
    if (pipe(fds) != 0)
        goto fail;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    hub->efd = fds[0];
    hub->wfd = fds[1];
#endif
    pthread_mutex_init(&hub->mu, NULL);
    pthread_cond_init(&hub->sync_cv, NULL);
    return hub;
fail:
    free(hub);
    return NULL;
}

void pasyn_hub_free(pasyn_hub *hub)
{
    if (!hub)
        return;
    pthread_mutex_lock(&hub->mu);
    hub_fail_calls_locked(hub, NULL, "the host's completion hub was freed");
    pthread_mutex_unlock(&hub->mu);
    pasyn_task *t = pasyn_hub_drain(hub);
    while (t) {
        pasyn_task *next = t->next;
        pasyn_task_free(t);
        t = next;
    }
    if (hub->wfd != hub->efd)
        close(hub->wfd);
    close(hub->efd);
    if (hub->sfd >= 0)
        close(hub->sfd);
    hub_unlisten(hub);
    pthread_cond_destroy(&hub->sync_cv);
    pthread_mutex_destroy(&hub->mu);
    free(hub);
}

int pasyn_hub_fd(const pasyn_hub *hub)
{
    return hub->efd;
}

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* where it is missing, the socket is made with SO_NOSIGPIPE */
#endif

/* One byte to the host's socket; never blocks, never raises SIGPIPE. */
static void signal_socket(int sfd)
{
    ssize_t r;
    do
        r = send(sfd, "", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    (void)r; /* EAGAIN: bytes are pending already; EPIPE: nobody listens any more */
}

/* Writes the hub's descriptor. */
static void hub_write_fd(pasyn_hub *hub)
{
#ifdef __linux__
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(hub->wfd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
#else
    char c = 0;
    ssize_t r;
    do
        r = write(hub->wfd, &c, 1);
    while (r < 0 && errno == EINTR);
#endif
    (void)r; /* EAGAIN: already readable, which is all we want */
}

/* Writes the hub's descriptor and, while the host has connected one, its socket: the
 * descriptor keeps telling the truth (pasyn_hub_fd, pasyn_hub_poll) whoever else listens. */
static void hub_signal(pasyn_hub *hub)
{
    if (hub->sfd >= 0)
        signal_socket(hub->sfd);
    hub_write_fd(hub);
}

static void hub_clear(pasyn_hub *hub)
{
    char scratch[64];
    ssize_t r;
    do
        r = read(hub->efd, scratch, sizeof scratch);
    while ((r > 0 && hub->efd != hub->wfd) || (r < 0 && errno == EINTR)); /* eventfd: once */
}

/* Writes the descriptor after letting go of the lock (hub_complete). A drain may have come in
 * between (`drains` moved since `seen`) and found the descriptor not yet written: the write may
 * now leave it readable behind that drain while not `signalled`. It is read back here while
 * nothing waits; otherwise it is marked `stray`, for the next drain to clear. It must not count
 * as `signalled`: another drain may have cleared it already (one that came after the write),
 * and what waits now (calls that drain left for its caller, tasks queued while the host
 * watched `pending`) was never signalled: `signalled` would then keep the next completion or
 * call from writing the descriptor, and a host blocked on it would never wake. */
static void hub_write_unlocked(pasyn_hub *hub, uint64_t seen)
{
    hub_write_fd(hub);
    if (atomic_load(&hub->drains) == seen)
        return; /* the drain to come clears it */
    pthread_mutex_lock(&hub->mu);
    if (!hub->signalled) {
        if (hub->head || hub->calls)
            hub->stray = 1;
        else
            hub_clear(hub);
    }
    pthread_mutex_unlock(&hub->mu);
}

/* The wake-ups (the descriptor's write, the condition variable's broadcast) come after the lock
 * is let go: the thread woken may preempt this one at once, and would only block on the lock
 * still held and hand the core back. */
void hub_complete(pasyn_hub *hub, pasyn_task *t)
{
    if (t->notify == NOTIFY_NONE) {
        pasyn_task_free(t);
        return;
    }
    pthread_mutex_lock(&hub->mu);
    if (t->notify == NOTIFY_SYNC) {
        atomic_store_explicit(&t->done, 1, memory_order_release);
        pthread_mutex_unlock(&hub->mu);
        pthread_cond_broadcast(&hub->sync_cv); /* the hub outlives every pool that completes */
        return;
    }
    int was_empty = hub->head == NULL;
    t->next = NULL;
    if (hub->tail)
        hub->tail->next = t;
    else
        hub->head = t;
    hub->tail = t;
    /* pending before watching (both seq_cst): a host that stops watching then looks at
     * pending, so either it sees this task or this sees it gone and writes the descriptor. */
    atomic_store(&hub->pending, 1);
    int write_fd = 0;
    uint64_t drains = 0;
    if (was_empty && !atomic_load(&hub->watching) && !hub->signalled) {
        hub->signalled = 1;
        if (hub->sfd >= 0) { /* the socket may be closed once the lock is let go */
            hub_signal(hub);
        } else {
            write_fd = 1;
            drains = atomic_load(&hub->drains);
        }
    }
    pthread_mutex_unlock(&hub->mu);
    if (write_fd)
        hub_write_unlocked(hub, drains);
}

void hub_signal_locked(pasyn_hub *hub)
{
    if (!atomic_load(&hub->watching) && !hub->signalled) {
        hub->signalled = 1; /* written under the lock: drain knows the descriptor's state */
        hub_signal(hub);
    }
}

pasyn_task *pasyn_hub_drain(pasyn_hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    if (hub->signalled || hub->stray) { /* clear it with the list, so the two never disagree */
        /* counted before reading: a completion whose write lands after the read sees the
         * count moved (the descriptor's own lock orders the two) */
        atomic_fetch_add(&hub->drains, 1);
        hub_clear(hub); /* a socket's bytes are read by the host, before it drains */
        hub->signalled = hub->stray = 0;
    }
    pasyn_task *list = hub->head;
    hub->head = hub->tail = NULL;
    /* Calls of SQL functions keep it set: the drain's caller takes them next (functions.c). */
    atomic_store_explicit(&hub->pending, hub->calls != NULL, memory_order_relaxed);
    pthread_mutex_unlock(&hub->mu);
    /* The caller's again from here on (pasyn_task_completed); before, a task completed but not
     * drained is still the hub's: freeing it would leave the list a dangling link. */
    for (pasyn_task *t = list; t; t = t->next)
        atomic_store_explicit(&t->done, 1, memory_order_relaxed);
    return list;
}

/* poll(2) on the descriptor for up to timeout_ms (-1: no bound); 1 when it is readable. */
static int hub_poll_fd(pasyn_hub *hub, int timeout_ms)
{
    struct pollfd p = {.fd = hub->efd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

/* Watches `flag` for a short while, when a core is spare (cpu_core_spare); 1 when it was set. The caller's thread never yields the
 * core meanwhile: the kernel's scheduler (EEVDF) pushes back the deadline of a thread that
 * yields, and a waiter that has yielded its way into a sleep is woken late, at the next tick
 * (3 ms late on every 1 ms timer while the readers keep both cores busy). */
static int spin_until(_Atomic int *flag)
{
    if (!cpu_core_spare())
        return 0;
    uint64_t deadline = now_ns() + SPIN_NS;
    do {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(flag, memory_order_acquire))
                return 1;
            cpu_relax();
        }
    } while (now_ns() < deadline);
    return 0;
}

int pasyn_hub_poll(pasyn_hub *hub, int timeout_ms)
{
    if (atomic_load(&hub->pending))
        return 1;
    if (timeout_ms == 0)
        return hub_poll_fd(hub, 0);
    /* The host waits: a batch of the writer need not wait for more of its writes (idle). */
    atomic_store(&hub->idle, 1);
    /* While we watch, completions need not write the descriptor. */
    atomic_store(&hub->watching, 1);
    int seen = spin_until(&hub->pending);
    atomic_store(&hub->watching, 0);
    int ready = seen || atomic_load(&hub->pending) || hub_poll_fd(hub, timeout_ms);
    atomic_store(&hub->idle, 0);
    return ready;
}

int pasyn_task_completed(const pasyn_task *t)
{
    return atomic_load_explicit(&t->done, memory_order_acquire);
}

void pasyn_task_wait(pasyn_task *t)
{
    /* A short spin first: a point query often completes sooner than a sleep and wake-up. */
    if (spin_until(&t->done))
        return;
    pasyn_hub *hub = t->hub;
    pthread_mutex_lock(&hub->mu);
    while (!atomic_load_explicit(&t->done, memory_order_acquire))
        pthread_cond_wait(&hub->sync_cv, &hub->mu);
    pthread_mutex_unlock(&hub->mu);
}

/* ---- a socket the host connected, signalled too --------------------------------------- */

/* Under mu: makes `sfd` (or none, for -1) the socket signalled beside the descriptor, closing
 * the one it replaces. A signal pending on the descriptor, or tasks waiting unsignalled, are
 * signalled to the new socket at once: its watcher has not seen them. */
static void hub_set_socket(pasyn_hub *hub, int sfd)
{
    if (hub->sfd >= 0)
        close(hub->sfd);
    hub->sfd = sfd;
    if (sfd < 0)
        return;
    if (hub->signalled) {
        signal_socket(sfd);
    } else if (hub->head || hub->calls) {
        hub->signalled = 1;
        hub_signal(hub);
    }
}

/* Removes a listening socket's path and its private folder; `path` is changed. */
static void remove_socket_path(char *path)
{
    unlink(path);
    char *slash = strrchr(path, '/');
    if (slash) {
        *slash = '\0';
        rmdir(path);
    }
}

/* Closes the listening socket and removes its path. */
static void hub_unlisten(pasyn_hub *hub)
{
    if (hub->lfd < 0)
        return;
    close(hub->lfd);
    remove_socket_path(hub->lpath);
    hub->lfd = -1;
    hub->lpath[0] = '\0';
}

/* O_NONBLOCK and FD_CLOEXEC on fd (SOCK_NONBLOCK and accept4 are not everywhere); 0 or -1. */
static int nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0)
        return -1;
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    return 0;
}

int pasyn_hub_listen(pasyn_hub *hub, const char **path)
{
    hub_unlisten(hub);
    /* In a folder of its own, mode 0700: no other user can connect first, and no path of
     * another process is ever in the way. */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/pasyn-XXXXXX", tmp);
    if (n < 0 || (size_t)n + sizeof "/hub" > sizeof addr.sun_path)
        return -ENAMETOOLONG;
    if (!mkdtemp(addr.sun_path))
        return -errno;
    strcat(addr.sun_path, "/hub");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || nonblock_cloexec(fd) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        remove_socket_path(addr.sun_path);
        return -e;
    }
    hub->lfd = fd;
    memcpy(hub->lpath, addr.sun_path, sizeof hub->lpath);
    *path = hub->lpath;
    return 0;
}

int pasyn_hub_accept(pasyn_hub *hub)
{
    if (hub->lfd < 0)
        return -EINVAL;
    int fd;
    do
        fd = accept(hub->lfd, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0 && nonblock_cloexec(fd) != 0) {
        e = errno;
        close(fd);
    }
    hub_unlisten(hub);
    if (e)
        return -e;
    pthread_mutex_lock(&hub->mu);
    hub_set_socket(hub, fd);
    pthread_mutex_unlock(&hub->mu);
    return 0;
}

void pasyn_hub_wake(pasyn_hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    if (!hub->signalled) {
        hub->signalled = 1;
        hub_signal(hub);
    }
    pthread_mutex_unlock(&hub->mu);
}

void pasyn_hub_unaccept(pasyn_hub *hub)
{
    hub_unlisten(hub);
    pthread_mutex_lock(&hub->mu);
    hub_set_socket(hub, -1);
    pthread_mutex_unlock(&hub->mu);
}
