/*
 * memfile.c - the private file behind a ":memory:" pool: a WAL database on tmpfs that the
 * writer and the readers share (the memdb VFS has no WAL, and shared cache fails with
 * SQLITE_LOCKED), named pasyn-memdb-XXXXXX, with SQLite's -wal and -shm beside it.
 *
 * Nothing of it may outlive its process, however the process ends. Its pool holds an flock
 * (LOCK_EX) on the main file from creation until the files are removed at close; the kernel
 * lets go of it when the process dies, SIGKILL included. So a set of files whose lock nobody
 * holds is a dead process's leftover, and every ":memory:" open, in any process, first removes
 * those (memfile_sweep). A process that ends through exit() (Lua's os.exit without closing the
 * state: no finalizer runs) removes its own at once (remove_at_exit).
 *
 * flock locks belong to the open file description, not to the process, and on Linux they are
 * independent of the fcntl locks SQLite takes on the same file: ours never disturb SQLite's.
 * But closing any descriptor of a file drops the fcntl locks the process holds on it, so the
 * sweep never opens a file of this process's own live pools (the `live` list), and a pool
 * closes its lock descriptor only after its connections are closed.
 *
 * The races, and why each is harmless:
 *  - A sweep takes the lock, then checks that the name still leads to the file it locked
 *    (another sweep may have removed it and mkstemp made a new one under that name), and
 *    removes the companions before the main file: while the main file exists, no new pool can
 *    take its name (mkstemp's O_EXCL), so the companions it removes are the dead pool's.
 *  - A pool between mkstemp and its flock may be swept by another process: after taking its
 *    lock it checks that its name still leads to its file, and starts again with a new name
 *    if not.
 *  - Two sweeps at once: the lock lets one remove a set; the other fails to lock it, or locks
 *    it after the removal and finds the name gone.
 * Files named after an older scheme (pasyn-memory-XXXXXX, made without a lock) are never
 * touched: a live pool of an older version of the library would look dead.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "pool.h"

#define PREFIX "pasyn-memdb-"
#define PREFIX_LEN (sizeof PREFIX - 1)
#define NAME_LEN (PREFIX_LEN + 6) /* mkstemp's XXXXXX */

/* SQLite's companions of a database file, removed before the file itself. */
static const char *const companions[] = {"-wal", "-shm", "-journal"};
#define N_COMPANIONS (sizeof companions / sizeof *companions)

/* This process's live memory files: the sweep skips them, remove_at_exit removes them. */
typedef struct live_file {
    struct live_file *next;
    pid_t pid; /* the process that made it: a forked child's exit leaves its parent's alone */
    char path[];
} live_file;

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static live_file *live; /* guarded by live_mu */

/* The directory of memory files: /dev/shm (tmpfs, so the database stays in memory), else
 * $TMPDIR, else /tmp. */
static const char *memfile_dir(void)
{
    if (access("/dev/shm", W_OK) == 0)
        return "/dev/shm";
    const char *dir = getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

/* Removes path's companions, then path. */
static void remove_set(const char *path)
{
    size_t n = strlen(path);
    char name[PATH_MAX];
    if (n + sizeof "-journal" > sizeof name)
        return;
    memcpy(name, path, n);
    for (size_t i = 0; i < N_COMPANIONS; i++) {
        strcpy(name + n, companions[i]);
        unlink(name);
    }
    unlink(path);
}

/* 1 when `path` still names the file open on fd. */
static int still_named(int fd, const char *path)
{
    struct stat open_st, named_st;
    return fstat(fd, &open_st) == 0 && stat(path, &named_st) == 0 &&
           open_st.st_dev == named_st.st_dev && open_st.st_ino == named_st.st_ino;
}

/* Removes the set of the main file `path`, open on fd, when nobody holds its lock; closes fd. */
static void remove_if_unlocked(int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
        flock(fd, LOCK_EX | LOCK_NB) == 0 && still_named(fd, path))
        remove_set(path);
    close(fd); /* and the lock with it */
}

static int is_live(const char *path)
{
    for (live_file *f = live; f; f = f->next)
        if (strcmp(f->path, path) == 0)
            return 1;
    return 0;
}

/* Looks at one entry of the directory: a main file of ours, or a companion whose main file is
 * gone (its process died while removing the set: companions went first, then it). */
static void sweep_entry(const char *dir, const char *name)
{
    size_t len = strlen(name);
    if (len < NAME_LEN || strncmp(name, PREFIX, PREFIX_LEN) != 0)
        return;
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%.*s", dir, (int)NAME_LEN, name) >= sizeof path)
        return;
    if (len == NAME_LEN) {
        if (is_live(path))
            return;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd >= 0)
            remove_if_unlocked(fd, path);
        return;
    }
    for (size_t i = 0; i < N_COMPANIONS; i++) {
        if (strcmp(name + NAME_LEN, companions[i]) != 0)
            continue;
        /* Made anew, the main file reserves the name (no pool can take it), and its lock
         * tells this sweep from another one doing the same. */
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0)
            remove_if_unlocked(fd, path);
        return;
    }
}

/* Removes the memory files that dead processes left in `dir`. Called with live_mu held. */
static void memfile_sweep(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] == PREFIX[0])
            sweep_entry(dir, e->d_name);
    closedir(d);
}

/* When the process ends through exit() (os.exit without closing the Lua state, a C program's
 * exit or return from main), or the library is unloaded: removes this process's memory files.
 * The pools' threads may still run on them: the files they hold open live on, unnamed, until
 * the process ends a moment later. A destructor rather than atexit(): it runs at exit and at
 * dlclose alike, where an atexit handler of a library unloaded before exit (Lua's lua_close
 * unloads its C modules) would be called at an address that is no longer mapped. */
__attribute__((destructor)) static void remove_at_exit(void)
{
    pthread_mutex_lock(&live_mu);
    pid_t pid = getpid();
    for (live_file *f = live; f; f = f->next)
        if (f->pid == pid)
            remove_set(f->path);
    pthread_mutex_unlock(&live_mu);
}

char *memfile_create(int *lock_fd)
{
    const char *dir = memfile_dir();
    size_t n = strlen(dir) + 1 + NAME_LEN + 1;
    live_file *f = malloc(sizeof *f + n);
    if (!f)
        return NULL;
    pthread_mutex_lock(&live_mu);
    memfile_sweep(dir);
    int fd = -1;
    char *path = NULL;
    for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
        snprintf(f->path, n, "%s/" PREFIX "XXXXXX", dir);
        fd = mkostemp(f->path, O_CLOEXEC);
        if (fd < 0)
            break;
        /* Another process's sweep may have taken this new file for a leftover, before the
         * lock: then its name is gone (or leads elsewhere), and a new one is made. */
        if (flock(fd, LOCK_EX | LOCK_NB) != 0 || !still_named(fd, f->path)) {
            if (errno != EWOULDBLOCK && still_named(fd, f->path))
                unlink(f->path); /* no lock to be had here (ENOLCK, ...): leave nothing */
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0 && !(path = strdup(f->path))) {
        remove_set(f->path);
        close(fd);
        fd = -1;
    }
    if (fd >= 0) {
        f->pid = getpid();
        f->next = live;
        live = f;
    }
    pthread_mutex_unlock(&live_mu);
    if (fd < 0) {
        free(f);
        return NULL;
    }
    *lock_fd = fd;
    return path;
}

void memfile_remove(const char *path, int lock_fd)
{
    pthread_mutex_lock(&live_mu);
    for (live_file **p = &live; *p; p = &(*p)->next) {
        if (strcmp((*p)->path, path) == 0) {
            live_file *f = *p;
            *p = f->next;
            free(f);
            break;
        }
    }
    remove_set(path);
    pthread_mutex_unlock(&live_mu);
    if (lock_fd >= 0)
        close(lock_fd);
}
