/*
 * test_faults.c - the proof that a pool meets failed allocations and I/O errors with errors, not
 * crashes, hangs, leaks or lost writes, and serves again once they stop; printed as TAP for
 * prove(1). Uses the public C API (pasyn.h) and, to inject and to look, SQLite's own interfaces.
 *
 * Before SQLite is first used, an allocator that wraps SQLite's default one is installed
 * (SQLITE_CONFIG_MALLOC, c3ref/mem_methods.html; the idea of SQLite's malloc tests,
 * testing.html "Out-Of-Memory Testing"): it fails the Nth allocation counted from arming, every
 * one from the Nth on, or each with a probability drawn from a seed, and counts the allocations
 * not yet freed. The test VFS (testvfs.h) does the same for xOpen, xRead, xWrite
 * (SQLITE_IOERR_WRITE or SQLITE_FULL), xSync, xTruncate, xFileSize and xLock.
 *
 * Each iteration arms one fault, opens a pool on a WAL file (2 readers, synchronous = full) and
 * runs a mix in flight at once: six INSERTs (a group commit), an executemany, two reads, a
 * streamed result fetched to its end, a transaction of one owner (BEGIN, UPDATE, INSERT, a read,
 * COMMIT) who rolls back at once when one of its statements failed and goes away
 * (PASYN_ABANDON) when even that fails, an owner who begins, writes and goes away, a script that
 * fills a TEMP table and a read of it, a PRAGMA that readers apply too, a checkpoint that
 * truncates the WAL, and a CREATE or DROP INDEX. Every task must complete within 10 s, either
 * with success or with an error that has a kind (PASYN_ESQLITE with SQLite's code, or
 * PASYN_ENOMEM) and a message; a stream that ends without error must have delivered every row.
 * Then the fault is disarmed and the same pool must serve: an INSERT read back at once, a
 * transaction, every write acknowledged in this iteration there, an executemany's rows all there
 * or none, the gone owner's write rolled back, PRAGMA integrity_check ok, no transaction left; a
 * pool whose open failed is freed and a new one must open and serve. After the pool is freed,
 * SQLite holds exactly as many allocations as before it opened (no connection or statement left
 * behind). At the end plain SQLite finds every acknowledged write and integrity ok. Leaks of the
 * core's own memory are ASan's (make asan) and valgrind's to find.
 *
 * The fault points are spread over the calls one iteration makes: PASYN_ROUNDS (default 160) for
 * the allocator and a quarter as many per method (at most twice the calls), then half as many
 * that persist, then 4 at random. PASYN_SEED repeats a run (the seed is printed).
 *
 *   make build/lua5.4/test_faults && build/lua5.4/test_faults
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sqlite3.h>
#include "pasyn.h"
#include "tap.h"
#include "testvfs.h"

#define STREAM_ROWS 3000 /* of about 210 bytes: more than a chunk (256 KiB), so it streams */
#define WAIT_S 10        /* the longest any task may take */

/* ---- the failing allocator ------------------------------------------------------------ */

static sqlite3_mem_methods default_mem;
static _Atomic int alloc_armed;
static uint64_t alloc_nth, alloc_seed; /* set before alloc_armed */
static int alloc_persist;
static double alloc_probability;
static _Atomic uint64_t alloc_calls, alloc_faults; /* since arming */
static _Atomic int64_t alloc_live;                 /* allocations not freed */

static int alloc_fails(void)
{
    if (!atomic_load(&alloc_armed))
        return 0;
    uint64_t n = atomic_fetch_add(&alloc_calls, 1) + 1;
    int fail = alloc_nth ? n == alloc_nth || (alloc_persist && n > alloc_nth)
                         : alloc_probability > 0 && testvfs_draw(alloc_seed, n) < alloc_probability;
    if (fail)
        atomic_fetch_add(&alloc_faults, 1);
    return fail;
}

static void *mem_malloc(int n)
{
    if (alloc_fails())
        return NULL;
    void *p = default_mem.xMalloc(n);
    if (p)
        atomic_fetch_add(&alloc_live, 1);
    return p;
}

static void mem_free(void *p)
{
    if (p)
        atomic_fetch_sub(&alloc_live, 1);
    default_mem.xFree(p);
}

static void *mem_realloc(void *p, int n)
{
    return alloc_fails() ? NULL : default_mem.xRealloc(p, n); /* SQLite passes p != NULL */
}

static int mem_size(void *p)
{
    return default_mem.xSize(p);
}

static int mem_roundup(int n)
{
    return default_mem.xRoundup(n);
}

static int mem_init(void *app)
{
    (void)app;
    return default_mem.xInit(default_mem.pAppData);
}

static void mem_shutdown(void *app)
{
    (void)app;
    default_mem.xShutdown(default_mem.pAppData);
}

static const sqlite3_mem_methods failing_mem = {
    mem_malloc, mem_free, mem_realloc, mem_size, mem_roundup, mem_init, mem_shutdown, NULL,
};

/* ---- what an iteration injects ---------------------------------------------------------- */

typedef struct schedule {
    int alloc;          /* the allocator; else the VFS */
    testvfs_fault io;   /* the VFS's fault (methods, nth, persist, probability, seed, code) */
    const char *method; /* for the report */
} schedule;

static void arm(const schedule *s)
{
    if (s->alloc) {
        atomic_store(&alloc_armed, 0);
        alloc_nth = s->io.nth;
        alloc_persist = s->io.persist;
        alloc_probability = s->io.probability;
        alloc_seed = s->io.seed;
        atomic_store(&alloc_calls, 0);
        atomic_store(&alloc_faults, 0);
        atomic_store(&alloc_armed, 1);
    } else {
        testvfs_faults(&s->io);
    }
}

static testvfs_counts armed_counts; /* the VFS's counts from arming to disarming */

/* Disarms; returns how many faults were injected. */
static uint64_t disarm(const schedule *s)
{
    if (s->alloc) {
        atomic_store(&alloc_armed, 0);
        return atomic_load(&alloc_faults);
    }
    testvfs_counts_get(&armed_counts);
    testvfs_faults(NULL);
    uint64_t n = 0;
    for (int m = 0; m < TESTVFS_METHODS; m++)
        n += armed_counts.faults[m];
    return n;
}

/* ---- tasks and a bounded wait ------------------------------------------------------------ */

static pasyn_hub *hub;
static int in_flight;
static char now_running[160]; /* the iteration under way, for a report of a hang */
static uint64_t statements, errors, faults_injected, iterations, opens_failed;
static uint64_t errors_nomem, errors_ioerr, errors_full, errors_cantopen, errors_other;

static pasyn_task *mk(int kind, const char *sql)
{
    pasyn_task *t = pasyn_task_new(kind, sql, sql ? strlen(sql) : 0);
    if (!t) {
        printf("Bail out! out of memory\n");
        exit(2);
    }
    return t;
}

static void bind_int(pasyn_task *t, int64_t v)
{
    pasyn_value val = {.type = PASYN_INT, .i = v};
    pasyn_task_bind(t, NULL, 0, &val);
}

static void bind_text(pasyn_task *t, const char *s)
{
    pasyn_value val = {.type = PASYN_TEXT, .p = s, .n = strlen(s)};
    pasyn_task_bind(t, NULL, 0, &val);
}

/* Queues the task; *slot receives it when it has completed (at once when refused: its error
 * says why). */
static void submit(pasyn_pool *pool, pasyn_task *t, pasyn_task **slot)
{
    *slot = NULL;
    pasyn_task_set_user(t, slot);
    if (pasyn_submit(pool, t, 0) == 0)
        in_flight++;
    else
        *slot = t;
}

/* Called after each drain while wait_all waits (a caller reacting to what completed), or
 * NULL. */
static void (*on_drain)(void);

/* Waits until every task in flight has completed; a hang ends the test. */
static void wait_all(const char *what)
{
    double until = now_s() + WAIT_S;
    while (in_flight > 0) {
        int ms = (int)((until - now_s()) * 1000);
        if (ms <= 0 || !pasyn_hub_poll(hub, ms)) {
            ok(0, "%s: %d tasks did not complete within %d s (%s)", what, in_flight, WAIT_S,
               now_running);
            if (getenv("PASYN_DEBUG_HANG")) { /* time to attach a debugger */
                diag("pid %d", (int)getpid());
                for (int i = 0; i < 600; i++)
                    sleep(1);
            }
            printf("Bail out! a hang\n");
            exit(1);
        }
        for (pasyn_task *t = pasyn_hub_drain(hub), *next; t; t = next) {
            next = pasyn_task_next(t);
            *(pasyn_task **)pasyn_task_user(t) = t;
            in_flight--;
        }
        if (on_drain)
            on_drain();
    }
}

static pasyn_task *run(pasyn_pool *pool, pasyn_task *t, const char *what)
{
    pasyn_task *done;
    submit(pool, t, &done);
    wait_all(what);
    return done;
}

static int failures_reported; /* ok(0, ...) lines about outcomes, at most a few */

/* Counts a completed task: 1 when it succeeded. An error must say what it is: PASYN_ESQLITE with
 * SQLite's code, or PASYN_ENOMEM, and a message. */
static int outcome(const pasyn_task *t, const char *what)
{
    int code = 0, extended = 0;
    const char *message = NULL;
    int err = pasyn_task_error(t, &code, &extended, &message);
    statements++;
    if (err == PASYN_OK)
        return 1;
    errors++;
    switch (code) {
    case SQLITE_NOMEM:
        errors_nomem++;
        break;
    case SQLITE_IOERR:
        errors_ioerr++;
        break;
    case SQLITE_FULL:
        errors_full++;
        break;
    case SQLITE_CANTOPEN:
        errors_cantopen++;
        break;
    default:
        errors_other++;
        break;
    }
    int described = message && *message &&
                    ((err == PASYN_ESQLITE && code != 0) || err == PASYN_ENOMEM);
    if (!described && failures_reported++ < 10)
        ok(0, "%s: error %d (SQLite %d/%d) \"%s\" says what it is", what, err, code, extended,
           message ? message : "(null)");
    return 0;
}

/* 1 when the task succeeded; else a failed test naming `what`. */
static int must_succeed(pasyn_task *t, const char *what)
{
    if (outcome(t, what))
        return 1;
    const char *message;
    int code;
    pasyn_task_error(t, &code, NULL, &message);
    if (failures_reported++ < 10)
        ok(0, "after the faults stopped, %s: SQLite %d, %s", what, code, message);
    return 0;
}

static int64_t first_int(const pasyn_task *t)
{
    size_t nrows;
    const unsigned char *at = pasyn_task_rows(t, &nrows);
    pasyn_value v = {.type = PASYN_NULL};
    if (nrows > 0 && pasyn_task_columns(t) > 0)
        pasyn_row_value(at, &v);
    return v.type == PASYN_INT ? v.i : INT64_MIN;
}

/* ---- the pool ----------------------------------------------------------------------------- */

static char db_path[300];

/* Opens a pool; *open_task gets its completed open task. NULL when the open failed. */
static pasyn_pool *open_pool(pasyn_task **open_task)
{
    pasyn_options opts;
    pasyn_options_init(&opts);
    opts.readers = 2;
    opts.synchronous = "full";
    pasyn_task *t = mk(PASYN_OPEN, NULL), *done;
    pasyn_task_set_user(t, &done);
    pasyn_pool *pool = pasyn_open(db_path, &opts, hub, t, 0);
    if (!pool) {
        printf("Bail out! pasyn_open returned NULL\n");
        exit(2);
    }
    in_flight++;
    wait_all("the open");
    *open_task = done;
    if (pasyn_task_error(done, NULL, NULL, NULL) != PASYN_OK) {
        pasyn_pool_free(pool);
        return NULL;
    }
    return pool;
}

static void close_pool(pasyn_pool *pool)
{
    pasyn_task *t = mk(PASYN_CLOSE, NULL), *done;
    pasyn_task_set_user(t, &done);
    if (pasyn_close(pool, t, 0) != 0) {
        ok(0, "pasyn_close refused");
        pasyn_task_free(t);
    } else {
        in_flight++;
        wait_all("the close");
        pasyn_task_free(done);
    }
    pasyn_pool_free(pool);
}

/* ---- the mix ------------------------------------------------------------------------------ */

/* Values an iteration writes: base + 0..99, one per row, so that each acknowledged write can be
 * looked for. */
typedef struct acked {
    int64_t *v;
    size_t n, cap;
} acked;

static acked all_acked; /* every iteration's */

static void ack(acked *a, int64_t v)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 256;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (!a->v) {
            printf("Bail out! out of memory\n");
            exit(2);
        }
    }
    a->v[a->n++] = v;
}

static const char pad[] = "some bytes to fill the pages a little";

static pasyn_task *insert_task(int64_t v)
{
    pasyn_task *t = mk(PASYN_EXEC, "INSERT INTO t (v, pad) VALUES (?, ?)");
    bind_int(t, v);
    bind_text(t, pad);
    return t;
}

/* Reads a streamed result to its end (or its first error). The rows it had, or -1 after an
 * error. */
static int64_t drain_stream(pasyn_pool *pool, pasyn_task *t)
{
    int64_t rows = 0;
    for (;;) {
        if (!outcome(t, "a streamed result")) {
            pasyn_task_free(t);
            return -1;
        }
        size_t nrows;
        pasyn_task_rows(t, &nrows);
        rows += (int64_t)nrows;
        uint64_t stream;
        if (!pasyn_task_stream(t, &stream)) {
            pasyn_task_free(t);
            return rows;
        }
        pasyn_task_free(t);
        t = mk(PASYN_FETCH, NULL);
        pasyn_task_set_stream(t, stream);
        t = run(pool, t, "a fetch");
    }
}

static const char *const txn_sql[] = {
    "BEGIN IMMEDIATE",
    "UPDATE t SET hits = hits + 1 WHERE id IN (SELECT id FROM t ORDER BY id DESC LIMIT 3)",
    "INSERT INTO t (v, pad) VALUES (?, 'in a transaction')",
    "SELECT count(*) FROM t",
    "COMMIT",
};

enum { TXN = 5, TXN_OWNER = 7, GONE_OWNER = 8 };

/* The transaction's owner acts as conn:transaction does: once one of its statements failed, it
 * rolls back at once (the other submitters' writes wait for its transaction to end); when even
 * that fails, it goes away, and the pool is told (PASYN_ABANDON). */
static struct {
    pasyn_pool *pool;
    pasyn_task *steps[TXN], *rollback;
    int state; /* 0 running, 1 rolling back, 2 done */
} txn;

static void abandon(pasyn_pool *pool, uint64_t owner)
{
    pasyn_task *t = mk(PASYN_ABANDON, NULL);
    pasyn_task_set_owner(t, owner);
    if (pasyn_submit(pool, t, 0) != 0)
        pasyn_task_free(t);
    /* else it completes silently: the pool frees it */
}

static void txn_react(void)
{
    if (txn.state == 0) {
        int failed = 0;
        for (int i = 0; i < TXN; i++) {
            if (!txn.steps[i])
                return; /* not all back yet */
            failed |= pasyn_task_error(txn.steps[i], NULL, NULL, NULL) != PASYN_OK;
        }
        txn.state = 2;
        if (failed && pasyn_txn_owner(txn.pool) == TXN_OWNER) {
            pasyn_task *t = mk(PASYN_EXEC, "ROLLBACK");
            pasyn_task_set_owner(t, TXN_OWNER);
            submit(txn.pool, t, &txn.rollback);
            txn.state = 1;
        }
    } else if (txn.state == 1 && txn.rollback) {
        txn.state = 2;
        if (pasyn_task_error(txn.rollback, NULL, NULL, NULL) != PASYN_OK &&
            pasyn_txn_owner(txn.pool) == TXN_OWNER)
            abandon(txn.pool, TXN_OWNER);
    }
}

/* The mix under faults. Acknowledged values go to `a`; *gone_written says whether the
 * abandoned owner's INSERT ran inside its transaction (and must then be gone). */
static void run_mix(pasyn_pool *pool, int64_t base, int index, acked *a, int *gone_written)
{
    enum { INSERTS = 6 };
    pasyn_task *ins[INSERTS], *many, *count, *range, *stream, *script, *temp_read, *pragma,
        *checkpoint, *ddl, *gone[2];
    for (int i = 0; i < INSERTS; i++)
        submit(pool, insert_task(base + i), &ins[i]);
    pasyn_task *t = mk(PASYN_MANY, "INSERT INTO t (v, pad) VALUES (?, ?)");
    for (int i = 0; i < 10; i++) {
        bind_int(t, base + 10 + i);
        bind_text(t, pad);
        pasyn_task_next_set(t);
    }
    submit(pool, t, &many);
    submit(pool, mk(PASYN_EXEC, "SELECT count(*), sum(v) FROM t"), &count);
    t = mk(PASYN_EXEC, "SELECT v, pad FROM t WHERE v > ? ORDER BY v LIMIT 50");
    bind_int(t, base - 1000);
    submit(pool, t, &range);
    t = mk(PASYN_EXEC, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                       " WHERE i < 3000) SELECT i, zeroblob(200) FROM n");
    submit(pool, t, &stream);
    txn.pool = pool;
    txn.state = 0;
    txn.rollback = NULL;
    for (int i = 0; i < TXN; i++) {
        t = mk(PASYN_EXEC, txn_sql[i]);
        pasyn_task_set_owner(t, TXN_OWNER);
        if (i == 2)
            bind_int(t, base + 30);
        submit(pool, t, &txn.steps[i]);
    }
    /* An owner that begins, writes and goes away: its write is rolled back. */
    t = mk(PASYN_EXEC, "BEGIN IMMEDIATE");
    pasyn_task_set_owner(t, GONE_OWNER);
    submit(pool, t, &gone[0]);
    t = insert_task(base + 40);
    pasyn_task_set_owner(t, GONE_OWNER);
    submit(pool, t, &gone[1]);
    abandon(pool, GONE_OWNER);
    submit(pool,
           mk(PASYN_SCRIPT, "CREATE TEMP TABLE IF NOT EXISTS scratch (x);"
                            "INSERT INTO scratch VALUES (1); DELETE FROM scratch WHERE x = 1"),
           &script);
    submit(pool, mk(PASYN_EXEC, "SELECT count(*) FROM scratch"), &temp_read);
    submit(pool, mk(PASYN_EXEC, "PRAGMA case_sensitive_like = 1"), &pragma);
    submit(pool, mk(PASYN_EXEC, "PRAGMA wal_checkpoint(TRUNCATE)"), &checkpoint);
    submit(pool,
           mk(PASYN_EXEC,
              index % 2 ? "CREATE INDEX IF NOT EXISTS t_v ON t (v)" : "DROP INDEX IF EXISTS t_v"),
           &ddl);
    on_drain = txn_react;
    wait_all("the mix");
    on_drain = NULL;

    for (int i = 0; i < INSERTS; i++) {
        if (outcome(ins[i], "an INSERT"))
            ack(a, base + i);
        pasyn_task_free(ins[i]);
    }
    if (outcome(many, "an executemany"))
        for (int i = 0; i < 10; i++)
            ack(a, base + 10 + i);
    pasyn_task_free(many);
    int txn_ok[TXN];
    for (int i = 0; i < TXN; i++) {
        txn_ok[i] = outcome(txn.steps[i], "a transaction's statement");
        pasyn_task_free(txn.steps[i]);
    }
    if (txn_ok[2] && txn_ok[4]) /* its INSERT, committed (by that COMMIT, or alone before) */
        ack(a, base + 30);
    if (txn.rollback) {
        outcome(txn.rollback, "a ROLLBACK after a failed statement");
        pasyn_task_free(txn.rollback);
    }
    int began = outcome(gone[0], "an abandoned owner's BEGIN");
    *gone_written = outcome(gone[1], "an abandoned owner's INSERT") && began;
    pasyn_task_free(gone[0]);
    pasyn_task_free(gone[1]);
    pasyn_task *others[] = {count, range, script, temp_read, pragma, checkpoint, ddl};
    static const char *const names[] = {
        "a count",      "a range read",          "a script", "a read of a TEMP table", "a PRAGMA",
        "a checkpoint", "a CREATE or DROP INDEX"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        outcome(others[i], names[i]);
        pasyn_task_free(others[i]);
    }
    int64_t rows = drain_stream(pool, stream);
    if (rows >= 0 && rows != STREAM_ROWS && failures_reported++ < 10)
        ok(0, "a streamed result that ended without error had %" PRId64 " rows of %d", rows,
           STREAM_ROWS);
}

/* After the faults: the owner of a transaction they left open rolls it back, as a caller would
 * (conn:transaction does). */
static void end_left_transaction(pasyn_pool *pool)
{
    uint64_t owner = pasyn_txn_owner(pool);
    if (!owner)
        return;
    pasyn_task *t = mk(PASYN_EXEC, "ROLLBACK");
    pasyn_task_set_owner(t, owner);
    t = run(pool, t, "a ROLLBACK");
    must_succeed(t, "the ROLLBACK of a transaction left open");
    pasyn_task_free(t);
}

/* The same pool serves once the faults stopped: 1 when it did. */
static int serves(pasyn_pool *pool, int64_t base, acked *a, int gone_written)
{
    int good = 1;
    pasyn_task *t = run(pool, insert_task(base + 50), "an INSERT");
    if ((good &= must_succeed(t, "an INSERT")))
        ack(a, base + 50);
    pasyn_task_free(t);

    t = mk(PASYN_EXEC, "SELECT count(*) FROM t WHERE v = ?");
    bind_int(t, base + 50);
    t = run(pool, t, "a read");
    if ((good &= must_succeed(t, "a read of it")) && first_int(t) != 1) {
        ok(0, "the INSERT is read back at once: %" PRId64 " rows", first_int(t));
        good = 0;
    }
    pasyn_task_free(t);

    static const char *const steps[] = {"BEGIN IMMEDIATE", "INSERT INTO t (v, pad) VALUES (?, ?)",
                                        "COMMIT"};
    pasyn_task *done[3];
    for (int i = 0; i < 3; i++) {
        t = mk(PASYN_EXEC, steps[i]);
        pasyn_task_set_owner(t, 9);
        if (i == 1) {
            bind_int(t, base + 51);
            bind_text(t, pad);
        }
        submit(pool, t, &done[i]);
    }
    wait_all("a transaction");
    int committed = 1;
    for (int i = 0; i < 3; i++) {
        committed &= must_succeed(done[i], "a transaction");
        pasyn_task_free(done[i]);
    }
    if (committed)
        ack(a, base + 51);
    good &= committed;

    /* Every write acknowledged in this iteration is there; an executemany's rows are all
     * there or none (a failed one too). */
    t = mk(PASYN_EXEC, "SELECT v FROM t WHERE v >= ? AND v < ? ORDER BY v");
    bind_int(t, base);
    bind_int(t, base + 100);
    t = run(pool, t, "a read");
    if ((good &= must_succeed(t, "a read of the iteration's rows"))) {
        size_t nrows;
        const unsigned char *at = pasyn_task_rows(t, &nrows);
        char seen[100] = {0};
        for (size_t r = 0; r < nrows; r++) {
            pasyn_value v;
            at = pasyn_row_value(at, &v);
            if (v.type == PASYN_INT && v.i >= base && v.i < base + 100)
                seen[v.i - base] = 1;
        }
        for (size_t i = 0; i < a->n; i++)
            if (a->v[i] >= base && a->v[i] < base + 100 && !seen[a->v[i] - base]) {
                ok(0, "acknowledged value %" PRId64 " is there", a->v[i]);
                good = 0;
            }
        if (gone_written && seen[40]) {
            ok(0, "an abandoned owner's write inside its transaction is rolled back");
            good = 0;
        }
        int many_rows = 0;
        for (int i = 10; i < 20; i++)
            many_rows += seen[i];
        if (many_rows != 0 && many_rows != 10) {
            ok(0, "an executemany's rows are all there or none: %d of 10", many_rows);
            good = 0;
        }
    }
    pasyn_task_free(t);

    t = run(pool, mk(PASYN_EXEC, "PRAGMA integrity_check"), "integrity_check");
    if ((good &= must_succeed(t, "integrity_check"))) {
        size_t nrows;
        pasyn_value v = {0};
        pasyn_row_value(pasyn_task_rows(t, &nrows), &v);
        if (v.type != PASYN_TEXT || v.n != 2 || memcmp(v.p, "ok", 2) != 0) {
            ok(0, "integrity_check: %.*s", (int)v.n, v.p ? v.p : "");
            good = 0;
        }
    }
    pasyn_task_free(t);
    if (pasyn_txn_owner(pool) != 0) {
        ok(0, "no transaction is left open: owner %" PRIu64, pasyn_txn_owner(pool));
        good = 0;
    }
    return good;
}

/* ---- iterations --------------------------------------------------------------------------- */

static int64_t live_baseline;
static int leaks_reported, iterations_bad;

/* One iteration under schedule `s`. */
static void iteration(const schedule *s, int index)
{
    int64_t base = (int64_t)index * 100;
    acked a = {0};
    int gone_written = 0;
    int reported_before = failures_reported;
    snprintf(now_running, sizeof now_running, "iteration %d: %s, fault at call %" PRIu64 "%s%s",
             index, s->method, s->io.nth, s->io.persist ? " and after" : "",
             s->io.probability > 0 ? ", at random" : "");
    arm(s);
    pasyn_task *open_task;
    pasyn_pool *pool = open_pool(&open_task);
    if (!pool) {
        opens_failed++;
        outcome(open_task, "the open");
        pasyn_task_free(open_task);
        faults_injected += disarm(s);
        pool = open_pool(&open_task);
        if (!pool) {
            must_succeed(open_task, "a new pool's open");
            pasyn_task_free(open_task);
            iterations_bad++;
            return;
        }
        pasyn_task_free(open_task);
    } else {
        pasyn_task_free(open_task);
        run_mix(pool, base, index, &a, &gone_written);
        faults_injected += disarm(s);
    }
    end_left_transaction(pool);
    int good = serves(pool, base, &a, gone_written);
    close_pool(pool);
    iterations++;
    for (size_t i = 0; i < a.n; i++)
        ack(&all_acked, a.v[i]);
    free(a.v);
    int64_t live = atomic_load(&alloc_live);
    if (live != live_baseline && leaks_reported++ < 5) {
        ok(0,
           "iteration %d (%s): SQLite holds %" PRId64 " allocations after the pool was freed, "
           "%" PRId64 " before it opened",
           index, s->method, live, live_baseline);
        good = 0;
    }
    if (!good || failures_reported != reported_before) {
        iterations_bad++;
        diag("iteration %d: %s, fault at call %" PRIu64 "%s", index, s->method, s->io.nth,
             s->io.persist ? " and after" : "");
    }
}

/* How many allocations, or calls of the methods of `s`, one iteration without faults makes. */
static uint64_t calls_per_iteration(schedule s, int index)
{
    s.io.nth = UINT64_MAX; /* counts, never fails */
    s.io.persist = 0;
    s.io.probability = 0;
    iteration(&s, index);
    if (s.alloc)
        return atomic_load(&alloc_calls);
    uint64_t n = 0;
    for (int m = 0; m < TESTVFS_METHODS; m++)
        if (s.io.methods & (1u << m))
            n += armed_counts.calls[m];
    return n;
}

static int next_index = 1;

/* `points` iterations (at most twice one iteration's calls) with the fault at calls spread over
 * one iteration's, then half as many with it persisting, then a few with a probability. */
static void run_schedules(schedule s, int points, uint64_t seed)
{
    uint64_t before_faults = faults_injected, before_stmts = statements, before_errors = errors;
    int before_bad = iterations_bad;
    /* The count varies from one iteration to the next (group commits form or not): the larger
     * of two, and no more points than twice that. */
    uint64_t calls = calls_per_iteration(s, next_index++);
    uint64_t again = calls_per_iteration(s, next_index++);
    calls = again > calls ? again : calls > 0 ? calls : 1;
    if ((uint64_t)points > 2 * calls)
        points = (int)(2 * calls);
    for (int p = 0; p < points + points / 2; p++) {
        int k = p < points ? p : p - points;
        int n = p < points ? points : points / 2;
        uint64_t stride = calls / (uint64_t)n > 0 ? calls / (uint64_t)n : 1;
        s.io.nth = 1 + (uint64_t)k * stride + testvfs_mix(seed + (uint64_t)p) % stride;
        s.io.persist = p >= points;
        s.io.probability = 0;
        iteration(&s, next_index++);
    }
    for (int p = 0; p < 4; p++) {
        s.io.nth = 0;
        s.io.persist = 0;
        s.io.probability = 4.0 / (double)calls; /* a few faults an iteration */
        s.io.seed = testvfs_mix(seed ^ (uint64_t)(p + 1000));
        iteration(&s, next_index++);
    }
    ok(iterations_bad == before_bad,
       "%s: %" PRIu64 " calls an iteration; %d fault points, %d persisting, 4 at random: "
       "%" PRIu64 " faults injected, %" PRIu64 " statements run, %" PRIu64 " errors",
       s.method, calls, points, points / 2, faults_injected - before_faults,
       statements - before_stmts, errors - before_errors);
}

static int setup(void)
{
    pasyn_task *open_task;
    pasyn_pool *pool = open_pool(&open_task);
    int good = pool && must_succeed(open_task, "the first open");
    pasyn_task_free(open_task);
    if (!pool)
        return 0;
    pasyn_task *t = run(pool,
                        mk(PASYN_SCRIPT, "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY,"
                                         " v INTEGER NOT NULL, hits INTEGER NOT NULL DEFAULT 0,"
                                         " pad TEXT)"),
                        "the setup");
    good &= must_succeed(t, "CREATE TABLE");
    pasyn_task_free(t);
    close_pool(pool);
    return good;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Plain SQLite (no faults) finds every acknowledged write and integrity ok. */
static void final_check(void)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    acked present = {0};
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT v FROM t ORDER BY v", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        ack(&present, sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    size_t missing = 0;
    for (size_t i = 0; rc == SQLITE_OK && i < all_acked.n; i++)
        missing += !bsearch(&all_acked.v[i], present.v, present.n, sizeof *present.v, cmp_i64);
    free(present.v);
    ok(rc == SQLITE_OK && missing == 0,
       "plain SQLite finds each of the %zu acknowledged writes: %zu missing", all_acked.n, missing);
    const unsigned char *integrity = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        integrity = sqlite3_column_text(st, 0);
    ok(integrity && strcmp((const char *)integrity, "ok") == 0, "integrity_check: %s",
       integrity ? (const char *)integrity : "(none)");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int main(void)
{
    tap_start("Bail out! test_faults: watchdog expired\n", 900);
    const char *e = getenv("PASYN_ROUNDS");
    int points = e && atoi(e) > 0 ? atoi(e) : 160;
    e = getenv("PASYN_SEED");
    uint64_t seed = e && *e ? strtoull(e, NULL, 0)
                            : testvfs_mix((uint64_t)time(NULL) ^ (uint64_t)getpid());
    diag("seed %" PRIu64 " (PASYN_SEED=%" PRIu64 " repeats it), %d fault points per schedule", seed,
         seed, points);

    /* Before anything uses SQLite: its allocator, then the VFS (which initializes SQLite). */
    if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &default_mem) != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_MALLOC, &failing_mem) != SQLITE_OK ||
        testvfs_register() != SQLITE_OK) {
        printf("Bail out! could not install the allocator or the VFS\n");
        return 2;
    }
    char dir[256];
    if (tap_scratch_dir("pasyn-faults", dir, sizeof dir) != 0) {
        printf("Bail out! no scratch folder\n");
        return 2;
    }
    snprintf(db_path, sizeof db_path, "%s/faults.db", dir);
    hub = pasyn_hub_new();
    if (!hub || !ok(setup(), "a pool opens on %s and makes the table", db_path))
        return tap_done();
    live_baseline = atomic_load(&alloc_live);
    double started = now_s();

    schedule s = {.alloc = 1, .method = "allocations"};
    run_schedules(s, points, seed);
    for (int m = 0; m < TESTVFS_METHODS; m++) {
        s = (schedule){.io.methods = 1u << m, .method = testvfs_method_name(m)};
        run_schedules(s, points / 4 > 4 ? points / 4 : 4, testvfs_mix(seed + (uint64_t)m));
    }
    s = (schedule){.io.methods = 1u << TESTVFS_WRITE,
                   .io.code = SQLITE_FULL,
                   .method = "xWrite (SQLITE_FULL)"};
    run_schedules(s, points / 4 > 4 ? points / 4 : 4, testvfs_mix(seed + 99));

    diag("%" PRIu64 " iterations in %.1f s (%" PRIu64 " opens failed): %" PRIu64
         " faults injected, %" PRIu64 " statements run, %" PRIu64 " errors (out of memory %" PRIu64
         ", I/O %" PRIu64 ", disk full %" PRIu64 ", cannot open %" PRIu64 ", other %" PRIu64 ")",
         iterations, now_s() - started, opens_failed, faults_injected, statements, errors,
         errors_nomem, errors_ioerr, errors_full, errors_cantopen, errors_other);
    ok(faults_injected > 0 && errors > 0, "faults were injected and met as errors");
    final_check();

    pasyn_hub_free(hub);
    testvfs_unregister();
    free(all_acked.v);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < 4; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s%s", db_path, suffixes[i]);
        unlink(p);
    }
    rmdir(dir);
    return tap_done();
}
