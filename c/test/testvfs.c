/*
 * testvfs.c - the test-only VFS of testvfs.h: a shim over the default unix VFS that keeps unsynced
 * writes in memory (power loss), fails chosen methods on purpose (I/O faults) and makes a
 * thread's reads slow (stalls). The shape is SQLite's own shims (c3ref/vfs.html,
 * c3ref/io_methods.html; test_vfs.c, test_demovfs.c) and the idea that of SQLite's crash tests
 * (testing.html, "Crash testing"): what is not synced is lost.
 */
#include "testvfs.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>

/* ---- state ---------------------------------------------------------------------------- */

/* One unsynced change of a file: a write of `len` bytes at `off`, or (len < 0) a truncation to
 * `off` bytes. */
typedef struct pending {
    struct pending *next;
    sqlite3_int64 off;
    int len;
    unsigned char data[];
} pending;

/* A file's unsynced changes, shared by every handle open on that name. */
typedef struct overlay {
    struct overlay *next;
    pending *head, *tail; /* oldest first */
    sqlite3_int64 size;   /* the file's size with the changes applied, while there are some */
    char name[];
} overlay;

/* An open file: ours, then the wrapped VFS's right behind it (szOsFile covers both). */
typedef struct tv_file {
    sqlite3_file base;
    overlay *ov;        /* power-loss mode: its unsynced changes; NULL: passes through */
    sqlite3_file *real; /* the wrapped VFS's file */
} tv_file;

static sqlite3_vfs *wrapped; /* the default VFS when testvfs_register ran */
static sqlite3_vfs tv_vfs;

/* Guards the overlays and the durable count; held while a file in power-loss mode does any real
 * I/O, so that a crash (which takes it for good) sees the files still. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static overlay *overlays;
static _Atomic int powerloss;
static uint64_t durable_ops, crash_at;
static unsigned crash_keep;
static uint64_t crash_seed;

/* Faults: what is armed and the counts, under fault_mu. */
static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
static testvfs_fault fault;
static uint64_t fault_seen; /* calls of the armed methods since arming */
static testvfs_counts counts;

static const char *const method_names[TESTVFS_METHODS] = {
    "xOpen", "xRead", "xWrite", "xSync", "xTruncate", "xFileSize", "xLock",
};

static const int method_errors[TESTVFS_METHODS] = {
    SQLITE_CANTOPEN,       SQLITE_IOERR_READ,  SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC,
    SQLITE_IOERR_TRUNCATE, SQLITE_IOERR_FSTAT, SQLITE_IOERR_LOCK,
};

uint64_t testvfs_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

double testvfs_draw(uint64_t seed, uint64_t n)
{
    return (double)(testvfs_mix(seed ^ testvfs_mix(n)) >> 11) / 9007199254740992.0;
}
/* ---- faults --------------------------------------------------------------------------- */

/* Counts a call of `method`: SQLITE_OK, or the error it is to fail with. */
static int fault_check(int method)
{
    int rc = SQLITE_OK;
    pthread_mutex_lock(&fault_mu);
    counts.calls[method]++;
    if (fault.methods & (1u << method)) {
        uint64_t n = ++fault_seen;
        int fail = fault.nth
                       ? n == fault.nth || (fault.persist && n > fault.nth)
                       : fault.probability > 0 && testvfs_draw(fault.seed, n) < fault.probability;
        if (fail) {
            counts.faults[method]++;
            rc = fault.code ? fault.code : method_errors[method];
        }
    }
    pthread_mutex_unlock(&fault_mu);
    return rc;
}

void testvfs_faults(const testvfs_fault *f)
{
    pthread_mutex_lock(&fault_mu);
    if (f) {
        fault = *f;
        memset(&counts, 0, sizeof counts);
    } else {
        memset(&fault, 0, sizeof fault);
    }
    fault_seen = 0;
    pthread_mutex_unlock(&fault_mu);
}

void testvfs_counts_get(testvfs_counts *out)
{
    pthread_mutex_lock(&fault_mu);
    *out = counts;
    pthread_mutex_unlock(&fault_mu);
}

const char *testvfs_method_name(int method)
{
    return method >= 0 && method < TESTVFS_METHODS ? method_names[method] : "?";
}

/* ---- stalls --------------------------------------------------------------------------- */

static _Thread_local unsigned stall_us;
static _Thread_local int stall_mode;
static _Thread_local uint64_t stalled;

void testvfs_stall(unsigned us, int mode)
{
    stall_us = us;
    stall_mode = mode;
}

uint64_t testvfs_stalls(void)
{
    return stalled;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void stall(void)
{
    if (!stall_us)
        return;
    stalled++;
    uint64_t until = mono_ns() + (uint64_t)stall_us * 1000u;
    if (stall_mode == TESTVFS_YIELD) {
        while (mono_ns() < until)
            sched_yield();
        return;
    }
    struct timespec ts = {.tv_sec = stall_us / 1000000u,
                          .tv_nsec = (long)(stall_us % 1000000u) * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- power loss ----------------------------------------------------------------------- */

static overlay *overlay_find(const char *name)
{
    for (overlay *o = overlays; o; o = o->next)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

/* The overlay of `name`, made when there is none. NULL when out of memory. Under mu. */
static overlay *overlay_get(const char *name)
{
    overlay *o = overlay_find(name);
    if (o)
        return o;
    size_t n = strlen(name) + 1;
    o = calloc(1, sizeof *o + n);
    if (!o)
        return NULL;
    memcpy(o->name, name, n);
    o->next = overlays;
    overlays = o;
    return o;
}

static void overlay_forget(overlay *o)
{
    for (pending *p = o->head, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    o->head = o->tail = NULL;
}

/* Applies the kept share of every unsynced change to the real files and ends the process.
 * Under mu, which it never gives back. First the disk stalls a few milliseconds: file I/O waits
 * on mu, but the process's other threads run on, so what they do right after their last I/O
 * (tell a caller that a write is done) happens before the cut, as it could on a slow disk. */
static _Noreturn void crash_locked(unsigned keep_percent, uint64_t seed)
{
    struct timespec stall = {0, 5000000};
    nanosleep(&stall, NULL);
    uint64_t k = 0;
    for (overlay *o = overlays; o; o = o->next) {
        int fd = o->head ? open(o->name, O_WRONLY) : -1;
        for (pending *p = o->head; p && fd >= 0; p = p->next) {
            if (testvfs_draw(seed, ++k) * 100 >= keep_percent)
                continue;
            if (p->len < 0) {
                if (ftruncate(fd, p->off) != 0)
                    break;
            } else if (pwrite(fd, p->data, (size_t)p->len, p->off) != p->len) {
                break;
            }
        }
        if (fd >= 0)
            close(fd);
    }
    for (;;)
        kill(getpid(), SIGKILL);
}

void testvfs_crash(unsigned keep_percent, uint64_t seed)
{
    pthread_mutex_lock(&mu);
    crash_locked(keep_percent, seed);
}

void testvfs_crash_at(uint64_t n, unsigned keep_percent, uint64_t seed)
{
    pthread_mutex_lock(&mu);
    crash_at = n ? durable_ops + n : 0;
    crash_keep = keep_percent;
    crash_seed = seed;
    pthread_mutex_unlock(&mu);
}

void testvfs_powerloss(int on)
{
    atomic_store(&powerloss, on);
}

/* A write, truncation or sync of a file in power-loss mode is about to happen: the armed crash
 * comes here. Under mu. */
static void durable_op(void)
{
    durable_ops++;
    if (crash_at && durable_ops >= crash_at)
        crash_locked(crash_keep, crash_seed);
}

/* Queues a change; the first one of a list notes the real size. Under mu. */
static int overlay_add(tv_file *f, sqlite3_int64 off, int len, const void *data)
{
    overlay *o = f->ov;
    pending *tail = o->tail;
    if (len >= 0 && tail && tail->len == len && tail->off == off) { /* the same bytes again */
        memcpy(tail->data, data, (size_t)len);
        return SQLITE_OK;
    }
    if (!o->head) {
        int rc = f->real->pMethods->xFileSize(f->real, &o->size);
        if (rc != SQLITE_OK)
            return rc;
    }
    pending *p = malloc(sizeof *p + (len > 0 ? (size_t)len : 0));
    if (!p)
        return SQLITE_IOERR_NOMEM;
    p->next = NULL;
    p->off = off;
    p->len = len;
    if (len > 0)
        memcpy(p->data, data, (size_t)len);
    if (tail)
        tail->next = p;
    else
        o->head = p;
    o->tail = p;
    if (len < 0)
        o->size = off;
    else if (off + len > o->size)
        o->size = off + len;
    return SQLITE_OK;
}

/* Writes the file's changes through `real`, in order. Under mu. */
static int overlay_flush(overlay *o, sqlite3_file *real)
{
    int rc = SQLITE_OK;
    while (o->head && rc == SQLITE_OK) {
        pending *p = o->head;
        rc = p->len < 0 ? real->pMethods->xTruncate(real, p->off)
                        : real->pMethods->xWrite(real, p->data, p->len, p->off);
        if (rc == SQLITE_OK) {
            o->head = p->next;
            free(p);
        }
    }
    if (!o->head)
        o->tail = NULL;
    return rc;
}

/* ---- the file methods ----------------------------------------------------------------- */

static int tv_close(sqlite3_file *file)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xClose(f->real); /* closing syncs nothing: the overlay stays */
}

static int tv_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
    tv_file *f = (tv_file *)file;
    stall();
    int rc = fault_check(TESTVFS_READ);
    if (rc != SQLITE_OK)
        return rc;
    if (!f->ov)
        return f->real->pMethods->xRead(f->real, buf, amt, off);
    pthread_mutex_lock(&mu);
    rc = f->real->pMethods->xRead(f->real, buf, amt, off); /* zero-filled past the end */
    overlay *o = f->ov;
    if (o->head && (rc == SQLITE_OK || rc == SQLITE_IOERR_SHORT_READ)) {
        unsigned char *out = buf;
        sqlite3_int64 end = off + amt;
        for (pending *p = o->head; p; p = p->next) {
            if (p->len < 0) { /* what lay past the new end reads as zeros */
                if (p->off < end) {
                    sqlite3_int64 from = p->off > off ? p->off : off;
                    memset(out + (from - off), 0, (size_t)(end - from));
                }
                continue;
            }
            sqlite3_int64 from = p->off > off ? p->off : off;
            sqlite3_int64 to = p->off + p->len < end ? p->off + p->len : end;
            if (from < to)
                memcpy(out + (from - off), p->data + (from - p->off), (size_t)(to - from));
        }
        rc = SQLITE_OK;
        if (end > o->size) {
            sqlite3_int64 from = o->size > off ? o->size : off;
            memset(out + (from - off), 0, (size_t)(end - from));
            rc = SQLITE_IOERR_SHORT_READ;
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

static int tv_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
    tv_file *f = (tv_file *)file;
    int rc = fault_check(TESTVFS_WRITE);
    if (rc != SQLITE_OK)
        return rc;
    if (!f->ov)
        return f->real->pMethods->xWrite(f->real, buf, amt, off);
    pthread_mutex_lock(&mu);
    durable_op();
    rc = overlay_add(f, off, amt, buf);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int tv_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    tv_file *f = (tv_file *)file;
    int rc = fault_check(TESTVFS_TRUNCATE);
    if (rc != SQLITE_OK)
        return rc;
    if (!f->ov)
        return f->real->pMethods->xTruncate(f->real, size);
    pthread_mutex_lock(&mu);
    durable_op();
    rc = overlay_add(f, size, -1, NULL);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int tv_sync(sqlite3_file *file, int flags)
{
    tv_file *f = (tv_file *)file;
    int rc = fault_check(TESTVFS_SYNC);
    if (rc != SQLITE_OK)
        return rc;
    if (!f->ov)
        return f->real->pMethods->xSync(f->real, flags);
    pthread_mutex_lock(&mu);
    durable_op();
    rc = overlay_flush(f->ov, f->real);
    if (rc == SQLITE_OK)
        rc = f->real->pMethods->xSync(f->real, flags);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int tv_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    tv_file *f = (tv_file *)file;
    int rc = fault_check(TESTVFS_FILESIZE);
    if (rc != SQLITE_OK)
        return rc;
    if (f->ov) {
        pthread_mutex_lock(&mu);
        int known = f->ov->head != NULL;
        if (known)
            *size = f->ov->size;
        pthread_mutex_unlock(&mu);
        if (known)
            return SQLITE_OK;
    }
    return f->real->pMethods->xFileSize(f->real, size);
}

static int tv_lock(sqlite3_file *file, int level)
{
    tv_file *f = (tv_file *)file;
    int rc = fault_check(TESTVFS_LOCK);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xLock(f->real, level);
}

static int tv_unlock(sqlite3_file *file, int level)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xUnlock(f->real, level);
}

static int tv_check_reserved_lock(sqlite3_file *file, int *out)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int tv_file_control(sqlite3_file *file, int op, void *arg)
{
    tv_file *f = (tv_file *)file;
    /* Hints that would make the real file grow or round its truncations behind the overlay's
     * back: a hint may be ignored (c3ref/c_fcntl_begin_atomic_write.html). */
    if (f->ov && (op == SQLITE_FCNTL_SIZE_HINT || op == SQLITE_FCNTL_CHUNK_SIZE))
        return SQLITE_OK;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int tv_sector_size(sqlite3_file *file)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int tv_device_characteristics(sqlite3_file *file)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* The WAL index (-shm) passes through: recovery rebuilds it from the WAL. */
static int tv_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **pp)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, pp);
}

static int tv_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void tv_shm_barrier(sqlite3_file *file)
{
    tv_file *f = (tv_file *)file;
    f->real->pMethods->xShmBarrier(f->real);
}

static int tv_shm_unmap(sqlite3_file *file, int delete_flag)
{
    tv_file *f = (tv_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

/* Version 2: with the WAL index's methods, without xFetch/xUnfetch, so that SQLite reads pages
 * through xRead and never from a memory map of the real file (which lacks the overlay). */
static const sqlite3_io_methods tv_io = {
    2,
    tv_close,
    tv_read,
    tv_write,
    tv_truncate,
    tv_sync,
    tv_file_size,
    tv_lock,
    tv_unlock,
    tv_check_reserved_lock,
    tv_file_control,
    tv_sector_size,
    tv_device_characteristics,
    tv_shm_map,
    tv_shm_lock,
    tv_shm_barrier,
    tv_shm_unmap,
    NULL,
    NULL,
};

/* ---- the VFS methods ------------------------------------------------------------------ */

static int tv_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    (void)vfs;
    tv_file *f = (tv_file *)file;
    f->real = (sqlite3_file *)(f + 1);
    f->ov = NULL;
    file->pMethods = NULL; /* until it is open: no xClose then (c3ref/io_methods.html) */
    int rc = fault_check(TESTVFS_OPEN);
    if (rc != SQLITE_OK)
        return rc;
    rc = wrapped->xOpen(wrapped, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (f->real->pMethods)
            f->real->pMethods->xClose(f->real);
        return rc;
    }
    int durable = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL;
    if (atomic_load(&powerloss) && name && (flags & durable)) {
        pthread_mutex_lock(&mu);
        f->ov = overlay_get(name);
        pthread_mutex_unlock(&mu);
        if (!f->ov) {
            f->real->pMethods->xClose(f->real);
            return SQLITE_NOMEM;
        }
    }
    file->pMethods = &tv_io;
    return SQLITE_OK;
}

static int tv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    int rc = wrapped->xDelete(wrapped, name, sync_dir);
    pthread_mutex_lock(&mu);
    overlay *o = overlay_find(name);
    if (o && rc == SQLITE_OK)
        overlay_forget(o); /* the file is gone, and what was not synced of it */
    pthread_mutex_unlock(&mu);
    return rc;
}

static int tv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    /* The unix VFS calls an empty file absent; one whose writes are all unsynced is not. */
    if (flags == SQLITE_ACCESS_EXISTS) {
        pthread_mutex_lock(&mu);
        overlay *o = overlay_find(name);
        int exists = o && o->head && o->size > 0;
        pthread_mutex_unlock(&mu);
        if (exists) {
            *out = 1;
            return SQLITE_OK;
        }
    }
    return wrapped->xAccess(wrapped, name, flags, out);
}

static int tv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return wrapped->xFullPathname(wrapped, name, n, out);
}

static void *tv_dl_open(sqlite3_vfs *vfs, const char *path)
{
    (void)vfs;
    return wrapped->xDlOpen(wrapped, path);
}

static void tv_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    wrapped->xDlError(wrapped, n, out);
}

static void (*tv_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
    (void)vfs;
    return wrapped->xDlSym(wrapped, handle, symbol);
}

static void tv_dl_close(sqlite3_vfs *vfs, void *handle)
{
    (void)vfs;
    wrapped->xDlClose(wrapped, handle);
}

static int tv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return wrapped->xRandomness(wrapped, n, out);
}

static int tv_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return wrapped->xSleep(wrapped, us);
}

static int tv_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return wrapped->xCurrentTime(wrapped, out);
}

static int tv_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return wrapped->xGetLastError ? wrapped->xGetLastError(wrapped, n, out) : 0;
}

static int tv_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return wrapped->xCurrentTimeInt64(wrapped, out);
}

int testvfs_register(void)
{
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK)
        return rc;
    wrapped = sqlite3_vfs_find(NULL);
    if (!wrapped || wrapped->iVersion < 2)
        return SQLITE_ERROR;
    tv_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(tv_file) + wrapped->szOsFile,
        .mxPathname = wrapped->mxPathname,
        .zName = "testvfs",
        .xOpen = tv_open,
        .xDelete = tv_delete,
        .xAccess = tv_access,
        .xFullPathname = tv_full_pathname,
        .xDlOpen = tv_dl_open,
        .xDlError = tv_dl_error,
        .xDlSym = tv_dl_sym,
        .xDlClose = tv_dl_close,
        .xRandomness = tv_randomness,
        .xSleep = tv_sleep,
        .xCurrentTime = tv_current_time,
        .xGetLastError = tv_get_last_error,
        .xCurrentTimeInt64 = tv_current_time_int64,
    };
    return sqlite3_vfs_register(&tv_vfs, 1);
}

void testvfs_unregister(void)
{
    sqlite3_vfs_register(wrapped, 1);
    sqlite3_vfs_unregister(&tv_vfs);
    pthread_mutex_lock(&mu);
    while (overlays) {
        overlay *o = overlays;
        overlays = o->next;
        overlay_forget(o);
        free(o);
    }
    pthread_mutex_unlock(&mu);
}
