/*
 * test_cpu.c - unit tests of the rules that follow the machine's load, printed as TAP for
 * prove(1): what a look at the run queue says (cpu_judge, c/cpu.c), what is left of an inline
 * run's budget (cpu_budget_left), whether the caller runs a read itself (inline_rule,
 * c/reader.c), and that a read handed to readers all taken by long reads or streams is run by
 * the caller instead (readers_handoff_pays on a pool whose counters are set by hand). Then what
 * an inline run's budget counts with no core spare (cpu_held_left, cpu_parse_schedstat,
 * cpu_run_delay), and on a pool: an inline read whose thread waits for a core runs to its end,
 * one whose thread is blocked (reads that sleep, as a pread of a page not in the page cache
 * does) is abandoned after about its budget, with this thread and as many busy threads as the
 * machine has cores sharing one core (the test VFS, testvfs.h, stalls this thread's reads).
 * And that reads of unknown cost, ended every way a read ends, leave readers.unknown_reads at 0.
 *
 *   make build/lua5.4/test_cpu && build/lua5.4/test_cpu
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "pool.h"
#include "tap.h"
#include "testvfs.h"

static void judge_long(int running, int awake, int busy_long, long cores, int spare, int pays,
                       const char *what)
{
    int s = -1, p = -1;
    cpu_judge(running, awake, busy_long, cores, &s, &p);
    ok(s == spare && p == pays,
       "%s: %d runnable, %d awake workers (%d on long reads), %ld cores -> spare %d, "
       "hand-off %d (want %d, %d)",
       what, running, awake, busy_long, cores, s, p, spare, pays);
}

static void judge(int running, int awake, long cores, int spare, int pays, const char *what)
{
    judge_long(running, awake, 0, cores, spare, pays, what);
}

static void test_judge(void)
{
    judge(-1, 0, 2, 1, 1, "run queue unknown: as on an idle machine");
    judge(1, 0, 2, 1, 1, "the caller alone");
    judge(2, 1, 2, 1, 1, "the caller and one worker of its own");
    judge(2, 0, 2, 1, 0, "the caller and one other process's thread: no core left for a worker");
    judge(3, 0, 2, 0, 0, "two other threads beside the caller: neither spin nor hand-off");
    judge(4, 3, 2, 0, 1, "own workers busy, nobody else: a hand-off waits for no other process");
    judge(5, 3, 2, 0, 0, "own workers busy and one other process's thread");
    judge(12, 4, 2, 0, 0, "four processes' threads on two cores");
    judge(3, 0, 4, 1, 1, "two other threads on four cores: a core is left");
    judge(4, 0, 4, 1, 0, "three other threads on four cores");
    judge(1, 0, 1, 1, 0, "one core: a worker never has one of its own");
    judge_long(4, 3, 2, 2, 0, 0, "two of three readers on long reads, the caller: no core left");
    judge_long(4, 3, 3, 2, 0, 0, "three readers on long reads: no core left");
    judge_long(3, 2, 1, 2, 0, 0, "a reader on a long read and the caller: no core for a free one");
    judge_long(3, 2, 1, 3, 1, 1, "the same on three cores: a core for the free one");
    judge_long(3, 1, 5, 2, 0, 0, "long reads begun after the look count all the same");
    judge_long(5, 4, 2, 4, 0, 1, "four cores, two readers on long reads: a core is left");
}

static void test_budget(void)
{
    ok(cpu_budget_left(200000, 0, 0) == 200000, "no CPU used: the whole budget is left");
    ok(cpu_budget_left(200000, 60000, 250000) == 140000,
       "60 us of CPU used of 200, in 250 us: 140 us left");
    ok(cpu_budget_left(200000, 200000, 300000) == 0, "the budget used up: nothing left");
    ok(cpu_budget_left(200000, 5000000, 5000000) == 0, "far past the budget: nothing left");
    ok(cpu_budget_left(200000, 60000, 12000000) == 140000,
       "12 ms without its core (60 budgets), 60 us of CPU: 140 us left");
    ok(cpu_budget_left(200000, 60000, 12700000) == 0,
       "that would end past 64 budgets of wall time: nothing left");
}

static void test_held(void)
{
    /* budget, lead, wall since the first check, of it waiting for a core -> left */
    ok(cpu_held_left(200000, 10000, 0, 0) == 190000, "10 us before the first check: 190 us left");
    ok(cpu_held_left(200000, 10000, 190000, 0) == 0,
       "blocked the whole time (a read of the disk): nothing left at the budget");
    ok(cpu_held_left(200000, 10000, 150000, 0) == 40000, "150 us blocked or running: 40 us left");
    ok(cpu_held_left(200000, 10000, 12000000, 11950000) == 140000,
       "12 ms of which 11.95 waiting for a core: 140 us left");
    ok(cpu_held_left(200000, 50000, 5000000000u, 4999900000u) == 50000,
       "5 s waiting for a core, 100 us held: 50 us left (no bound on the wall time)");
    ok(cpu_held_left(200000, 10000, 1000000, 800000) == 0,
       "1 ms of which 0.8 waiting for a core: 210 us held, nothing left");
    ok(cpu_held_left(200000, 10000, 100000, 300000) == 190000,
       "more waiting than wall time (two clocks): only the lead held");
    ok(cpu_held_left(200000, 200000, 0, 0) == 0, "a lead of the whole budget: nothing left");
}

static void test_schedstat(void)
{
    uint64_t d = 7;
    ok(cpu_parse_schedstat("273524 142947 3\n", 16, &d) == 0 && d == 142947,
       "\"273524 142947 3\": run_delay 142947 ns");
    d = 7;
    ok(cpu_parse_schedstat("18446744073709551615 5 1", 24, &d) == 0 && d == 5,
       "the largest CPU time: run_delay read");
    ok(cpu_parse_schedstat("0 0 0\n", 6, &d) == -1, "\"0 0 0\" (no statistics kept): unreadable");
    ok(cpu_parse_schedstat("0 0 1\n", 6, &d) == 0 && d == 0,
       "\"0 0 1\" (a thread in its first tick): run_delay 0");
    ok(cpu_parse_schedstat("12 34", 5, &d) == -1, "two fields: unreadable");
    ok(cpu_parse_schedstat("12 34 5", 4, &d) == -1, "cut short: unreadable");
    ok(cpu_parse_schedstat("12 x 5", 6, &d) == -1, "not a number: unreadable");
    ok(cpu_parse_schedstat("", 0, &d) == -1, "empty: unreadable");
    ok(cpu_parse_schedstat("99999999999999999999 1 1", 25, &d) == -1, "past 64 bits: unreadable");

    cpu_sched s;
    memset(&s, 0, sizeof s);
    uint64_t a = 0, b = 0;
    int first = cpu_run_delay(&s, 1, &a);
    if (first != 0) {
        diag("no /proc/thread-self/schedstat here: inline runs count CPU time");
        ok(s.fd == 0, "unreadable: nothing kept open");
        return;
    }
    int fd = s.fd;
    struct timespec nap = {0, 2000000};
    nanosleep(&nap, NULL);
    ok(cpu_run_delay(&s, 0, &b) == 0 && b >= a && s.fd == fd,
       "this thread's run_delay read twice from the file kept open (%llu, then %llu ns)",
       (unsigned long long)a, (unsigned long long)b);
    ok(cpu_run_delay(&s, 1, &b) == 0 && s.fd == fd, "checked again on the same thread: same file");
    s.tid = s.tid + 1; /* as if another thread had opened it */
    ok(cpu_run_delay(&s, 1, &b) == 0 && s.tid == gettid(), "another thread's: opened again");
    cpu_sched_close(&s);
    ok(s.fd == 0 && cpu_run_delay(&s, 0, &b) == -1, "closed: nothing read without a check");
}

static void test_rule(void)
{
    /* fits, busy, handoff -> runs inline */
    static const struct {
        int fits, busy, handoff, want;
        const char *what;
    } cases[] = {
        {INLINE_FITS, 0, 1, 1, "a short read, caller idle, a core for a reader: inline"},
        {INLINE_FITS, 0, 0, 1, "a short read, caller idle, no core for a reader: inline"},
        {INLINE_FITS, 1, 1, 0, "a short read, caller busy, a hand-off pays: to a reader"},
        {INLINE_FITS, 1, 0, 1, "a short read, caller busy, a hand-off does not pay: inline"},
        {INLINE_LOADED, 0, 1, 0, "a longer read, a hand-off pays: to a reader"},
        {INLINE_LOADED, 1, 1, 0, "a longer read, caller busy, a hand-off pays: to a reader"},
        {INLINE_LOADED, 0, 0, 1, "a longer read, a hand-off does not pay: inline"},
        {INLINE_LOADED, 1, 0, 1, "a longer read, caller busy, a hand-off does not pay: inline"},
        {INLINE_NO, 0, 0, 0, "a long read: never inline"},
        {INLINE_NO, 1, 0, 0, "a long read, caller busy: never inline"},
        {INLINE_NEVER, 0, 0, 0, "struck off: never inline"},
        {INLINE_UNKNOWN, 0, 0, 0, "not yet run by a reader: not inline"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ok(inline_rule(cases[i].fits, cases[i].busy, cases[i].handoff) == cases[i].want, "%s",
           cases[i].what);
}

/* readers_handoff_pays on a pool that is only its counters: the readers taken by long reads
 * and streams decide it before any look at the machine (pasyn_set_handoff decides that). */
static void test_readers_taken(void)
{
    static pasyn_pool pool; /* zeroed: only readers.count, long_reads and streaming are read */
    pool.readers.count = 3;
    pasyn_set_handoff(PASYN_HANDOFF_LOOK);
    atomic_store(&pool.readers.long_reads, 3);
    ok(!readers_handoff_pays(&pool), "three readers, three long reads: no hand-off");
    atomic_store(&pool.readers.long_reads, 7);
    ok(!readers_handoff_pays(&pool), "three readers, seven long reads: no hand-off");
    atomic_store(&pool.readers.long_reads, 2);
    atomic_store(&pool.readers.streaming, 1);
    ok(!readers_handoff_pays(&pool), "two long reads and a stream: no hand-off");
    pasyn_set_handoff(PASYN_HANDOFF_ALWAYS);
    ok(!readers_handoff_pays(&pool), "the process says always, every reader taken: no hand-off");
    atomic_store(&pool.readers.long_reads, 1);
    ok(readers_handoff_pays(&pool), "the process says always, a reader free: a hand-off");
    atomic_store(&pool.readers.streaming, 0);
    atomic_store(&pool.readers.long_reads, 1);
    atomic_store(&pool.readers.unknown_reads, 2);
    ok(!readers_handoff_pays(&pool), "one long read and two reads of unknown cost: no hand-off");
    atomic_store(&pool.readers.unknown_reads, 1);
    ok(readers_handoff_pays(&pool), "one long read and one of unknown cost: a hand-off");
    pasyn_set_handoff(PASYN_HANDOFF_NEVER);
    atomic_store(&pool.readers.long_reads, 0);
    atomic_store(&pool.readers.unknown_reads, 0);
    atomic_store(&pool.readers.streaming, 0);
    ok(!readers_handoff_pays(&pool), "the process says never: no hand-off");
    pasyn_set_handoff(PASYN_HANDOFF_LOOK);
}

/* ---- an inline read on a pool, its thread sharing one core with busy threads ---------- */

#define HELD_BUDGET_NS 4000000u /* the pool's inline_budget: 4 ms */
#define HELD_ROWS 3000          /* 20 pages of 4 KiB: a scan of about 0.2 ms (0.7 under TSan) */
#define HELD_STALL_US 1000      /* each read of a page, stalled */
static const char held_sql[] = "SELECT sum(length(b)) FROM t";

static pasyn_pool *held_pool;
static pasyn_hub *held_hub;
static char held_dir[] = "/tmp/pasyn-test-cpu-XXXXXX";
static char held_path[64];
static int held_pages;
static _Atomic int spinning;

static void *spin(void *arg)
{
    (void)arg;
    while (atomic_load_explicit(&spinning, memory_order_relaxed))
        ;
    return NULL;
}

/* Runs `sql` as a task with `sync`, waiting for it: what pasyn_submit returned, or -1 when the
 * task failed. */
static int held_exec(const char *sql)
{
    pasyn_task *t = pasyn_task_new(PASYN_EXEC, sql, strlen(sql));
    int rc = pasyn_submit(held_pool, t, 1);
    pasyn_task_wait(t);
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        rc = -1;
    pasyn_task_free(t);
    return rc;
}

static int held_open(void)
{
    if (!mkdtemp(held_dir))
        return 0;
    snprintf(held_path, sizeof held_path, "%s/held.db", held_dir);
    sqlite3 *db;
    if (sqlite3_open(held_path, &db) != SQLITE_OK)
        return 0;
    char sql[256];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode = wal; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);"
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
             " INSERT INTO t SELECT i, randomblob(16) FROM n",
             HELD_ROWS);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_stmt *st;
    if (rc == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            held_pages = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    if (rc != SQLITE_OK)
        return 0;
    pasyn_options o;
    pasyn_options_init(&o);
    o.readers = 2;
    o.inline_reads = 1;
    o.inline_budget = HELD_BUDGET_NS / 1e9;
    held_hub = pasyn_hub_new();
    pasyn_task *open_task = pasyn_task_new(PASYN_OPEN, NULL, 0);
    held_pool = pasyn_open(held_path, &o, held_hub, open_task, 1);
    if (!held_pool)
        return 0;
    pasyn_task_wait(open_task);
    rc = pasyn_task_error(open_task, NULL, NULL, NULL);
    pasyn_task_free(open_task);
    return rc == PASYN_OK;
}

/* Runs the scan until it runs inline (the readers found it short), then writes, so that the
 * inline connection's page cache is emptied (a WAL that changed) and its next run reads every
 * page again. */
static int held_warm(void)
{
    pasyn_inline_stats st;
    int inlined = 0;
    for (int i = 0; i < 50 && !inlined; i++)
        inlined = held_exec(held_sql) == PASYN_DONE;
    pasyn_inline_counts(held_pool, &st);
    if (!inlined)
        diag("the scan never ran inline: %llu executed, %llu overruns",
             (unsigned long long)st.executed, (unsigned long long)st.overruns);
    return inlined && held_exec("UPDATE t SET b = randomblob(16) WHERE a = 1") == 0;
}

/* One run of the scan on this thread, its reads stalled in `mode`, beside busy threads on this
 * thread's core: what pasyn_submit returned, the time it took and the part of it this thread
 * waited for a core (per its own schedstat), and whether the machine showed no core spare. */
static int held_run(int mode, uint64_t *wall, uint64_t *waited, int *loaded, uint64_t *reads)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0)
        return -2;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    int nspin = n > 0 && n < 16 ? (int)n : 16; /* more cores: no look shows the load */
    pthread_t spinners[16];
    atomic_store(&spinning, 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setaffinity_np(&attr, sizeof one, &one);
    int started = 0;
    while (started < nspin && pthread_create(&spinners[started], &attr, spin, NULL) == 0)
        started++;
    pthread_attr_destroy(&attr);
    struct timespec nap = {0, 5000000}; /* the look at the run queue is 2 ms old at most */
    nanosleep(&nap, NULL);
    *loaded = !cpu_core_spare();
    cpu_sched me;
    memset(&me, 0, sizeof me);
    uint64_t d0 = 0, d1 = 0, s0 = testvfs_stalls();
    cpu_run_delay(&me, 1, &d0);
    testvfs_stall(HELD_STALL_US, mode);
    pasyn_task *t = pasyn_task_new(PASYN_EXEC, held_sql, strlen(held_sql));
    uint64_t t0 = now_ns();
    int rc = pasyn_submit(held_pool, t, 1);
    *wall = now_ns() - t0;
    testvfs_stall(0, 0);
    cpu_run_delay(&me, 0, &d1);
    cpu_sched_close(&me);
    *waited = d1 - d0;
    *reads = testvfs_stalls() - s0;
    atomic_store(&spinning, 0);
    for (int i = 0; i < started; i++)
        pthread_join(spinners[i], NULL);
    CPU_ZERO(&one);
    for (long i = 0; i < (n > 0 ? n : 1) && i < CPU_SETSIZE; i++)
        CPU_SET(i, &one);
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    pasyn_task_wait(t);
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK) {
        rc = -1;
    } else {
        size_t nrows;
        pasyn_value v;
        pasyn_row_value(pasyn_task_rows(t, &nrows), &v);
        if (nrows != 1 || v.type != PASYN_INT || v.i != 16 * HELD_ROWS)
            rc = -1;
    }
    pasyn_task_free(t);
    return started == nspin ? rc : -2;
}

/* Why a run on one shared core proves nothing here, or NULL. */
static const char *skip_why(int rc, int readable, int loaded)
{
    return rc == -2    ? "cannot share one core with busy threads here"
           : !readable ? "no schedstat here: the CPU time counts"
           : !loaded   ? "the busy threads did not show as load (more than 16 cores)"
                       : NULL;
}

static void test_held_pool(void)
{
    if (testvfs_register() != SQLITE_OK || !held_open()) {
        ok(0, "a pool with inline reads opens on %s", held_path);
        return;
    }
    cpu_sched probe;
    memset(&probe, 0, sizeof probe);
    uint64_t d;
    int readable = cpu_run_delay(&probe, 1, &d) == 0;
    cpu_sched_close(&probe);

    pasyn_inline_stats before, after;
    uint64_t wall = 0, waited = 0, reads = 0;
    int loaded = 0, rc;
    const char *skip;

    /* waiting for a core: each read yields the core to the busy threads */
    if (ok(held_warm(), "the scan runs inline once the readers ran it")) {
        pasyn_inline_counts(held_pool, &before);
        rc = held_run(TESTVFS_YIELD, &wall, &waited, &loaded, &reads);
        pasyn_inline_counts(held_pool, &after);
        diag("waiting for a core: %.2f ms in pasyn_submit, %.2f of it waiting, %llu reads, "
             "loaded %d, rc %d",
             wall / 1e6, waited / 1e6, (unsigned long long)reads, loaded, rc);
        if ((skip = skip_why(rc, readable, loaded))) {
            ok(1, "# SKIP %s", skip);
        } else {
            ok(reads > 5 && wall > HELD_BUDGET_NS, "its reads stalled it past its budget");
            ok(rc == PASYN_DONE && after.executed == before.executed + 1 &&
                   after.overruns == before.overruns,
               "a read whose thread waited %.1f ms for a core ran inline to its end", waited / 1e6);
        }
    }

    /* blocked: each read sleeps, as a read of the disk */
    if (ok(held_warm(), "the scan runs inline again")) {
        pasyn_inline_counts(held_pool, &before);
        rc = held_run(TESTVFS_SLEEP, &wall, &waited, &loaded, &reads);
        pasyn_inline_counts(held_pool, &after);
        uint64_t held = wall > waited ? wall - waited : 0;
        diag("blocked: %.2f ms in pasyn_submit, %.2f of it waiting for a core, %llu reads, "
             "loaded %d, rc %d",
             wall / 1e6, waited / 1e6, (unsigned long long)reads, loaded, rc);
        if ((skip = skip_why(rc, readable, loaded))) {
            ok(1, "# SKIP %s", skip);
        } else {
            ok(rc == 0 && after.overruns == before.overruns + 1,
               "a read whose thread was blocked was abandoned and run by a reader (right "
               "answer)");
            ok(held < 4 * HELD_BUDGET_NS,
               "it held the thread %.1f ms, under 4 budgets (its reads before its first "
               "progress check, the budget and a read after it, each read of a page %.0f ms; "
               "all %d of them take %d budgets)",
               held / 1e6, HELD_STALL_US / 1e3, held_pages,
               (int)((uint64_t)held_pages * HELD_STALL_US * 1000u / HELD_BUDGET_NS));
        }
    }

    pasyn_task *close_task = pasyn_task_new(PASYN_CLOSE, NULL, 0);
    pasyn_close(held_pool, close_task, 1);
    pasyn_task_wait(close_task);
    pasyn_task_free(close_task);
    pasyn_pool_free(held_pool);
    pasyn_hub_free(held_hub);
    testvfs_unregister();
    char path[96];
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", held_path, suffixes[i]);
        unlink(path);
    }
    rmdir(held_dir);
}

/* Reads of unknown cost (a new SQL text each) that end every way a read can: rows, an error
 * of its own, its timeout, pasyn_interrupt, a streamed result released or fetched to its end,
 * and reads still queued when the pool closes. Each is counted in readers.unknown_reads from
 * its push until a reader is done with it: the count is 0 once they all ended (one left over
 * would keep a hand-off from ever paying). */
#define STORM_ROUNDS 40
#define STORM_KINDS 6
static void storm_submit(pasyn_pool *pool, pasyn_task **all, int *n, const char *sql,
                         double timeout)
{
    pasyn_task *t = pasyn_task_new(PASYN_EXEC, sql, strlen(sql));
    if (timeout > 0)
        pasyn_task_set_timeout(t, timeout);
    pasyn_submit(pool, t, 1);
    all[(*n)++] = t;
}

static int storm_counts(pasyn_pool *pool)
{
    return atomic_load(&pool->readers.unknown_reads) +
           1000 * atomic_load(&pool->readers.long_reads);
}

static void test_unknown_storm(void)
{
    char dir[] = "/tmp/pasyn-test-storm-XXXXXX", path[64], sql[256];
    if (!mkdtemp(dir)) {
        ok(0, "a temporary directory");
        return;
    }
    snprintf(path, sizeof path, "%s/storm.db", dir);
    sqlite3 *db;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db,
                          "PRAGMA journal_mode = wal; CREATE TABLE t(a INTEGER PRIMARY KEY, b);"
                          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 20000) INSERT INTO t SELECT i, randomblob(64) FROM n",
                          NULL, NULL, NULL);
    sqlite3_close(db);
    pasyn_options o;
    pasyn_options_init(&o);
    o.readers = 2;
    o.inline_reads = 1;
    pasyn_hub *hub = pasyn_hub_new();
    pasyn_task *open_task = pasyn_task_new(PASYN_OPEN, NULL, 0);
    pasyn_pool *pool = rc == SQLITE_OK ? pasyn_open(path, &o, hub, open_task, 1) : NULL;
    if (pool)
        pasyn_task_wait(open_task);
    if (!pool || pasyn_task_error(open_task, NULL, NULL, NULL) != PASYN_OK) {
        ok(0, "a pool for the storm");
        return;
    }
    pasyn_task_free(open_task);
    ok(pool->inliner.used, "the pool runs reads inline");

    static pasyn_task *all[STORM_ROUNDS * STORM_KINDS];
    int n = 0, streams = 0, errors = 0;
    const char *spin_sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                           "SELECT count(*) + %d FROM n";
    for (int i = 0; i < STORM_ROUNDS; i++) {
        snprintf(sql, sizeof sql, "SELECT %d, count(*) FROM t", i);
        storm_submit(pool, all, &n, sql, 0);
        snprintf(sql, sizeof sql, "SELECT %d + abs(-9223372036854775807 - 1)", i); /* overflow */
        storm_submit(pool, all, &n, sql, 0);
        snprintf(sql, sizeof sql, spin_sql, i);
        storm_submit(pool, all, &n, sql, 0.002);                         /* its timeout */
        snprintf(sql, sizeof sql, "SELECT a, b FROM t WHERE a > %d", i); /* streams */
        storm_submit(pool, all, &n, sql, 0);
        snprintf(sql, sizeof sql, "SELECT a, b FROM t WHERE a > %d LIMIT 100000", i);
        storm_submit(pool, all, &n, sql, 0);
        snprintf(sql, sizeof sql, spin_sql, 1000 + i); /* interrupted below */
        storm_submit(pool, all, &n, sql, 0.1);
        pasyn_interrupt(pool);
    }
    for (int i = 0; i < n; i++) {
        pasyn_task_wait(all[i]);
        if (pasyn_task_error(all[i], NULL, NULL, NULL) != PASYN_OK)
            errors++;
        uint64_t stream;
        int fetched = 0;
        while (pasyn_task_stream(all[i], &stream)) {
            /* one stream in two fetched to its end, the others released */
            int release = (i / STORM_KINDS) % 2 == 0;
            pasyn_task *f = pasyn_task_new(release ? PASYN_RELEASE : PASYN_FETCH, NULL, 0);
            pasyn_task_set_stream(f, stream);
            streams += !fetched;
            fetched = 1;
            pasyn_submit(pool, f, 1);
            if (release) /* completes unseen: the pool frees it */
                break;
            pasyn_task_wait(f);
            pasyn_task_free(all[i]);
            all[i] = f;
        }
        pasyn_task_free(all[i]);
    }
    pasyn_interrupt(pool); /* the spins still running */
    /* a reader counts a read off just after completing it: allow it that moment (2 s at most) */
    for (int i = 0; i < 2000 && storm_counts(pool) != 0; i++)
        sleep_ms(1);
    ok(storm_counts(pool) == 0,
       "%d reads of unknown cost ended (%d with an error, %d streamed): unknown_reads %d, "
       "long_reads %d (want 0, 0)",
       n, errors, streams, atomic_load(&pool->readers.unknown_reads),
       atomic_load(&pool->readers.long_reads));

    /* reads still queued on the readers when the pool closes: they run first */
    n = 0;
    for (int i = 0; i < STORM_ROUNDS; i++) {
        snprintf(sql, sizeof sql, "SELECT %d, sum(length(b)) FROM t", 100 + i);
        storm_submit(pool, all, &n, sql, 0);
    }
    pasyn_task *close_task = pasyn_task_new(PASYN_CLOSE, NULL, 0);
    pasyn_close(pool, close_task, 1);
    pasyn_task_wait(close_task);
    pasyn_task_free(close_task);
    for (int i = 0; i < n; i++) {
        pasyn_task_wait(all[i]);
        pasyn_task_free(all[i]);
    }
    ok(storm_counts(pool) == 0,
       "%d reads queued when the pool closed: unknown_reads %d, long_reads %d (want 0, 0)", n,
       atomic_load(&pool->readers.unknown_reads), atomic_load(&pool->readers.long_reads));
    pasyn_pool_free(pool);
    pasyn_hub_free(hub);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/storm.db%s", dir, suffixes[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void)
{
    tap_start("Bail out! test_cpu: no end within 60 s\n", 60);
    test_judge();
    test_budget();
    test_held();
    test_schedstat();
    test_rule();
    test_readers_taken();
    test_unknown_storm();
    test_held_pool();
    return tap_done();
}
