/*
 * testvfs.h - a test-only SQLite VFS (c/test/testvfs.c) that wraps the default one ("unix") to
 * simulate a power loss or to inject I/O errors, for the C proofs test_powerloss.c and
 * test_faults.c, or to make reads slow (test_cpu.c). Never part of the library.
 *
 * Power loss. While testvfs_powerloss(1) is on, every write (xWrite) and truncation (xTruncate)
 * of a main database, rollback journal or WAL file stays in memory, in a list kept per file name
 * (so every connection of the process, each with its own handle, sees the same file), until an
 * xSync of that file (from any handle) applies the list to the real file, in order, and fsyncs
 * it. Reads and sizes see the real file with the list applied. What the real files hold at any
 * moment is therefore what a power cut would keep; a process that ends without syncing (_exit, a
 * crash) loses the rest, as testvfs_crash does on purpose. -shm files and temporary files pass
 * through (the WAL index is rebuilt by recovery). Not simulated: the loss of a file's creation,
 * deletion or renaming, which only an fsync of its directory makes durable (SQLite asks for one
 * through xDelete's syncDir, which passes through); torn sectors inside one write.
 *
 * I/O faults. testvfs_faults arms failures of chosen methods, on every file (the WAL index's
 * xShm* methods never fail): the Nth call counted from arming, every call from the Nth on, or
 * each call with a probability drawn from a seed; each failing call returns the method's
 * SQLITE_IOERR_* code (or the code given, e.g. SQLITE_FULL for xWrite) without reaching the real
 * file.
 *
 * Stalls. testvfs_stall makes each xRead of the calling thread take longer, on purpose: asleep
 * (a read of a page not in the page cache: the thread blocked, using no CPU) or yielding its
 * core to other runnable threads (a thread waiting for a core), for test_cpu.c.
 *
 * Threads: every function may be called from any thread once testvfs_register has run.
 */
#ifndef PASYN_TEST_TESTVFS_H
#define PASYN_TEST_TESTVFS_H

#include <stdint.h>

/* Wraps the default VFS (sqlite3_vfs_find(NULL)) as "testvfs" and makes it the default, so that
 * connections opened afterwards use it (sqlite3_vfs_register, c3ref/vfs_find.html). Calls
 * sqlite3_initialize first: a program that installs its own allocator (SQLITE_CONFIG_MALLOC)
 * must have done so before. SQLite's result code. */
int testvfs_register(void);
/* Makes the wrapped VFS the default again and frees what the power-loss mode kept. Only once
 * every connection opened through testvfs is closed. */
void testvfs_unregister(void);

/* ---- power loss ------------------------------------------------------------------------- */

/* Switches the power-loss mode on (1) or off (0) for files opened from now on. */
void testvfs_powerloss(int on);
/* The power cut: takes the VFS's lock for good (every other thread's file I/O stops there),
 * stalls 5 ms (the other threads run on, but their file I/O waits), then writes to the real
 * files each unsynced write or truncation with probability keep_percent/100, drawn from `seed`,
 * in the order they were made (a disk may have written some of what it was given before the
 * cut, in any order; 0 keeps nothing), and kills the process with SIGKILL: no exit handler, no
 * flushing, no sanitizer's report. */
_Noreturn void testvfs_crash(unsigned keep_percent, uint64_t seed);
/* Arms a power cut inside the `n`th durable operation (an xWrite, xTruncate or xSync of a file
 * in power-loss mode) counted from now, before it takes effect, with testvfs_crash's arguments,
 * on whatever thread makes it. 0 disarms. */
void testvfs_crash_at(uint64_t n, unsigned keep_percent, uint64_t seed);

/* ---- I/O faults ------------------------------------------------------------------------- */

enum testvfs_method {
    TESTVFS_OPEN,
    TESTVFS_READ,
    TESTVFS_WRITE,
    TESTVFS_SYNC,
    TESTVFS_TRUNCATE,
    TESTVFS_FILESIZE,
    TESTVFS_LOCK,
    TESTVFS_METHODS
};

typedef struct testvfs_fault {
    unsigned methods;   /* bits (1u << enum testvfs_method) of the methods that may fail */
    uint64_t nth;       /* the Nth call of those methods from arming fails (1 the first); 0: none */
    int persist;        /* and with nth, every call after it too, until disarmed */
    double probability; /* else (nth 0): each call fails with this probability */
    uint64_t seed;      /* of the draws */
    int code;           /* what a failing call returns; 0: the method's own SQLITE_IOERR_* */
} testvfs_fault;

/* Arms `f` (copied), resetting the counts of calls and faults; NULL disarms (calls counted on). */
void testvfs_faults(const testvfs_fault *f);

typedef struct testvfs_counts {
    uint64_t calls[TESTVFS_METHODS];  /* calls of each method since the last arming */
    uint64_t faults[TESTVFS_METHODS]; /* of those, how many failed on purpose */
} testvfs_counts;

void testvfs_counts_get(testvfs_counts *out);
/* The method's name, as in sqlite3_io_methods ("xRead", ...). */
const char *testvfs_method_name(int method);

/* ---- stalls -------------------------------------------------------------------------- */

enum testvfs_stall_mode {
    TESTVFS_SLEEP = 1, /* nanosleep: blocked, no CPU used */
    TESTVFS_YIELD = 2  /* sched_yield until the time is up: runnable, the core left to others */
};

/* Each xRead the calling thread makes from now on first stalls `us` microseconds in `mode`
 * (us 0: none). Only that thread's reads: other threads read at full speed. */
void testvfs_stall(unsigned us, int mode);
/* How many of the calling thread's reads stalled so far. */
uint64_t testvfs_stalls(void);

/* ---- seeded draws, shared by the proofs ------------------------------------------------- */

/* A 64-bit mix of x (splitmix64's finalizer): draws that depend only on a seed and a count. */
uint64_t testvfs_mix(uint64_t x);
/* A number in [0, 1) that depends only on `seed` and `n`. */
double testvfs_draw(uint64_t seed, uint64_t n);

#endif
