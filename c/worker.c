/*
 * worker.c - the two worker loops. The writer takes tasks in submission order (only the
 * transaction owner's while one is open) and runs everything that is not a read. A reader
 * takes from its own deque (while long reads are about, short reads first, from any deque),
 * then steals from the back of the busiest other deque, then takes from the shared injector,
 * then parks; it runs reads, hands anything else to the writer, and may keep one streamed
 * result (and its snapshot) while it serves nothing else.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "internal.h"

/* Rows a task carries per round trip before a reader considers streaming the rest. */
#define CHUNK_BYTES (256 * 1024)

void complete(pasyn_task *t)
{
    hub_complete(t->hub, t);
}

/* ---- writer ------------------------------------------------------------------------ */

void writer_push(pasyn_pool *pool, pasyn_task *t)
{
    pthread_mutex_lock(&pool->wmu);
    t->next = &pool->whead;
    t->prev = pool->whead.prev;
    pool->whead.prev->next = t;
    pool->whead.prev = t;
    pool->wlen++;
    atomic_fetch_add_explicit(&pool->w_pushed, 1, memory_order_release);
    pthread_cond_signal(&pool->wcv);
    pthread_mutex_unlock(&pool->wmu);
}

/* Workers spin only while fewer than SPINNERS_MAX of the pool's do: on a small machine more
 * would take the cores that the busy threads need. */
static int spinner_enter(pasyn_pool *pool)
{
    if (atomic_fetch_add(&pool->spinners, 1) < SPINNERS_MAX)
        return 1;
    atomic_fetch_sub(&pool->spinners, 1);
    return 0;
}

/* Like a reader, the writer watches for a while (`ns`) before it parks: returns 1 when a task
 * was queued since `seen`. */
static int writer_spin(pasyn_pool *pool, uint64_t seen, uint64_t ns)
{
    if (!spinner_enter(pool))
        return 0;
    uint64_t deadline = now_ns() + ns;
    int found = 0;
    do {
        for (int i = 0; i < 64 && !found; i++) {
            found = atomic_load_explicit(&pool->w_pushed, memory_order_acquire) != seen ||
                    atomic_load_explicit(&pool->closing, memory_order_relaxed);
            cpu_relax();
        }
    } while (!found && spin_go_on(deadline));
    atomic_fetch_sub(&pool->spinners, 1);
    return found;
}

static void stop_readers(pasyn_pool *pool)
{
    atomic_store(&pool->readers_stop, 1);
    for (int i = 0; i < pool->nreaders; i++) {
        reader *r = &pool->readers[i];
        pthread_mutex_lock(&r->q.mu);
        r->wake = 1;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->q.mu);
    }
    for (int i = 0; i < pool->nreaders; i++) {
        if (pool->readers[i].started)
            pthread_join(pool->readers[i].thread, NULL);
        pool->readers[i].started = 0;
    }
}

/* The next task the writer may run, or NULL once the pool is closed and everything is done;
 * *more says whether others were left in the queue. While a transaction is open only its
 * owner's tasks are eligible; the rest keep their order. */
static pasyn_task *writer_take(pasyn_pool *pool, int *more)
{
    int readers_stopped = 0;
    pthread_mutex_lock(&pool->wmu);
    for (;;) {
        uint64_t owner = atomic_load(&pool->txn_owner);
        for (pasyn_task *t = pool->whead.next, *next; t != &pool->whead; t = next) {
            next = t->next;
            int runs = owner == 0 || t->owner == owner;
            if (!runs && !t->no_owner_wait)
                continue; /* held back behind the transaction, in order */
            t->prev->next = t->next;
            t->next->prev = t->prev;
            t->next = t->prev = NULL;
            pool->wlen--;
            if (runs) {
                *more = pool->wlen > 0;
                pthread_mutex_unlock(&pool->wmu);
                return t;
            }
            /* (The hub's lock, which completing takes, is never held while taking wmu.) */
            task_fail(t, PASYN_ESQLITE, SQLITE_BUSY, SQLITE_BUSY,
                      "the writer is held by another owner's transaction, which cannot end "
                      "while this call blocks its thread (make the call from a coroutine "
                      "that can yield, or end the transaction first)");
            complete(t);
        }
        if (atomic_load(&pool->closing)) {
            if (owner != 0) {
                /* Intake is closed, so the owner can send nothing more: end its transaction
                 * so the writes queued behind it run. */
                pthread_mutex_unlock(&pool->wmu);
                conn_exec(&pool->wc, "ROLLBACK");
                atomic_store(&pool->txn_owner, 0);
                pthread_mutex_lock(&pool->wmu);
                continue;
            }
            if (pool->wlen == 0) {
                if (readers_stopped) {
                    pthread_mutex_unlock(&pool->wmu);
                    return NULL;
                }
                /* Readers may still hand writes over: stop them, then look again. */
                pthread_mutex_unlock(&pool->wmu);
                stop_readers(pool);
                readers_stopped = 1;
                pthread_mutex_lock(&pool->wmu);
                continue;
            }
        }
        uint64_t seen = atomic_load_explicit(&pool->w_pushed, memory_order_relaxed);
        pthread_mutex_unlock(&pool->wmu);
        int found = writer_spin(pool, seen, SPIN_NS);
        pthread_mutex_lock(&pool->wmu);
        if (!found && atomic_load(&pool->w_pushed) == seen && !atomic_load(&pool->closing))
            pthread_cond_wait(&pool->wcv, &pool->wmu);
    }
}

/* 1 when the first value `sql` gives on the connection reads `value` (as text). */
static int answers(sqlite3 *db, const char *sql, const char *value)
{
    sqlite3_stmt *st = NULL;
    int is = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *got = sqlite3_column_text(st, 0);
        is = got && strcmp((const char *)got, value) == 0;
    }
    sqlite3_finalize(st);
    return is;
}

/* After a statement changed a schema: the TEMP names whose reads belong to the writer, and
 * every route learned before is learned again (a name may be a TEMP table's now; the
 * classifier knows the names). A reader's statement that SQLite re-prepares after a change of
 * main's schema is classified again where it runs (reader_run). The writer. */
static void schema_changed(pasyn_pool *pool)
{
    if (!pool->use_readers)
        return;
    sqlite3 *db = pool->wc.db;
    /* Inside a transaction the change may be undone (ROLLBACK, ROLLBACK TO, an error that ends
     * it), and other coroutines must not see it before the COMMIT: the names known before are
     * kept too (their reads then go to the writer, which serves them once the transaction has
     * ended), and the exact names are taken after each task until it has (writer_settle). */
    pool->schema_in_txn = !sqlite3_get_autocommit(db);
    temp_names_refresh(&pool->temp_names, db, pool->schema_in_txn);
    atomic_store(&pool->writer_local,
                 atomic_load(&pool->temp_names.count) > 0 ||
                     answers(db, "SELECT count(*) > 0 FROM pragma_database_list WHERE name NOT IN "
                             "('main', 'temp')", "1")); /* ATTACHed databases */
    routes_forget(pool);
}

/* After a statement ran on the writer: what the rest of the pool must learn of it, a read
 * setting it set (`setting`, 1 + its index) or a schema it changed. `sql` is its text. */
static void writer_ran(pasyn_pool *pool, int setting, int changes_schema, const char *sql,
                       size_t len)
{
    if (setting && pool->use_readers)
        settings_note(pool, setting, sql, len);
    if (changes_schema)
        schema_changed(pool);
}

static void writer_exec(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->wc;
    cached_stmt *s = conn_acquire(c, t);
    if (!s)
        return;
    if (conn_bind(c, s, t, 0, t->params.len) == 0) {
        conn_watch_insert(c, s);
        int rc = conn_step_rows(c, s, t, 0, 1);
        int64_t rowid;
        int inserted = conn_inserted(c, &rowid);
        if (s->klass == CLASS_DML)
            pool->changes_stale = 0; /* SQLite's changes() is this statement's now */
        if (rc == SQLITE_DONE) {
            if (s->klass == CLASS_DML)
                t->rowcount = sqlite3_changes64(c->db);
            t->rowid = rowid;
            t->has_rowid = inserted;
            writer_ran(pool, s->setting, s->changes_schema, t->sql, t->sql_len);
        }
    }
    if (!t->route_known && pool->use_readers) /* e.g. TEMP objects the classifier lacks */
        route_put(pool, t->sql, t->sql_len, s->klass == CLASS_READ ? ROUTE_READ : ROUTE_WRITE,
                  ROUTE_ANY_GEN);
    conn_release(c, s);
}

static void writer_many(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->wc;
    cached_stmt *s = conn_acquire(c, t);
    if (!s)
        return;
    if (s->klass != CLASS_DML) {
        task_fail_programming(t, "executemany takes an INSERT, UPDATE, DELETE or REPLACE "
                                 "statement");
        conn_release(c, s);
        return;
    }
    /* All or nothing: a savepoint begins a transaction of its own outside one, and inside
     * the caller's it undoes just this call's rows. */
    int rc = conn_exec(c, "SAVEPOINT pasyn_executemany");
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
        conn_release(c, s);
        return;
    }
    const size_t *ends = (const size_t *)t->set_ends.p;
    size_t from = 0;
    int64_t total = 0;
    for (uint32_t k = 0; k < t->nsets; k++) {
        if (conn_bind(c, s, t, from, ends[k]) != 0)
            break;
        int rc_step = conn_step_rows(c, s, t, 0, 0);
        pool->changes_stale = 0;
        if (rc_step != SQLITE_DONE)
            break;
        t->rows.len = 0;
        t->nrows = 0;
        total += sqlite3_changes64(c->db);
        sqlite3_reset(s->stmt); /* the next set binds every parameter again */
        from = ends[k];
    }
    conn_release(c, s);
    if (t->err == PASYN_OK && (rc = conn_exec(c, "RELEASE pasyn_executemany")) != SQLITE_OK)
        task_fail_sqlite(t, c->db, rc);
    if (t->err != PASYN_OK) {
        if (!sqlite3_get_autocommit(c->db)) { /* an error may have ended it already */
            conn_exec(c, "ROLLBACK TO pasyn_executemany");
            conn_exec(c, "RELEASE pasyn_executemany");
        }
        return;
    }
    t->rowcount = total;
}

static void writer_script(pasyn_pool *pool, pasyn_task *t)
{
    sqlite3 *db = pool->wc.db;
    const char *p = t->sql, *end = t->sql + t->sql_len;
    while (p < end) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        pool->wc.seen = 0; /* the authorizer tells what it is */
        pool->wc.setting = 0;
        int rc = sqlite3_prepare_v2(db, p, (int)(end - p), &st, &tail);
        if (rc != SQLITE_OK) {
            conn_fail_prepare(&pool->wc, t, rc);
            return;
        }
        if (st) {
            int setting = pool->wc.setting, seen = (int)pool->wc.seen;
            while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                ;
            if (!sqlite3_stmt_readonly(st))
                pool->changes_stale = 0;
            if (rc != SQLITE_DONE)
                task_fail_sqlite(t, db, rc);
            else
                writer_ran(pool, setting, seen & SEEN_SCHEMA, p, (size_t)((tail ? tail : end) - p));
            sqlite3_finalize(st);
            if (rc != SQLITE_DONE)
                return;
        }
        p = tail && tail > p ? tail : end;
    }
}

/* Runs a task's statements, leaving the task uncompleted. */
static void writer_do(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->wc;
    conn_arm(c, t);
    switch (t->kind) {
    case PASYN_EXEC:
        writer_exec(pool, t);
        break;
    case PASYN_MANY:
        writer_many(pool, t);
        break;
    case PASYN_SCRIPT:
        writer_script(pool, t);
        break;
    case PASYN_ABANDON:
        /* The gate let it through, so a transaction still open is its owner's. */
        if (!sqlite3_get_autocommit(c->db))
            conn_exec(c, "ROLLBACK");
        break;
    default:
        task_fail_programming(t, "task kind %d cannot run on the writer", t->kind);
        break;
    }
    conn_disarm(c, t);
    atomic_fetch_add(&pool->w_executed, 1);
}

/* What changes() and total_changes() answer on the writer now: SQLite's counts, less what
 * group commits that were rolled back counted (see pasyn_pool). Until a statement (or a
 * trigger's, which SQLite counts the same way) completes after such a group commit, changes()
 * is what it was when the group commit began. Writer thread. */
static int64_t writer_changes_now(pasyn_pool *pool)
{
    sqlite3 *db = pool->wc.db;
    if (pool->changes_stale && sqlite3_changes64(db) == pool->stale_changes &&
        sqlite3_total_changes64(db) == pool->stale_total)
        return pool->changes_before;
    pool->changes_stale = 0;
    return sqlite3_changes64(db);
}

static int64_t writer_total_changes_now(pasyn_pool *pool)
{
    return sqlite3_total_changes64(pool->wc.db) - pool->uncounted;
}

/* After one task or a batch: who owns the writer now, and the change count readers see. */
static void writer_settle(pasyn_pool *pool, uint64_t owner)
{
    sqlite3 *db = pool->wc.db;
    atomic_store(&pool->txn_owner, sqlite3_get_autocommit(db) ? 0 : (owner ? owner : 1));
    atomic_store(&pool->total_changes, writer_total_changes_now(pool));
    if (pool->schema_in_txn)
        schema_changed(pool);
}

static void writer_run(pasyn_pool *pool, pasyn_task *t)
{
    writer_do(pool, t);
    writer_settle(pool, t->owner);
    complete(t);
}

/* ---- group commit ------------------------------------------------------------------ */

/* The statements a batch is made of, prepared once on the writer's connection. */
static const char *const ctl_sql[CTL_COUNT] = {
    [CTL_BEGIN] = "BEGIN IMMEDIATE",
    [CTL_COMMIT] = "COMMIT",
    [CTL_ROLLBACK] = "ROLLBACK",
};

static int ctl(pasyn_pool *pool, enum ctl which)
{
    sqlite3_stmt **st = &pool->ctl[which];
    if (!*st) {
        int rc = sqlite3_prepare_v3(pool->wc.db, ctl_sql[which], -1, SQLITE_PREPARE_PERSISTENT,
                                    st, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    int rc = sqlite3_step(*st);
    sqlite3_reset(*st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The most statements one batch holds: a bound on how long the first of them waits. */
#define BATCH_MAX 512

/* Only a plain write may join a batch: an INSERT, UPDATE or DELETE, or an executemany of
 * one. Anything else (transaction control, DDL, PRAGMA, VACUUM, reads) runs alone. */
static int joins_batch(pasyn_pool *pool, pasyn_task *t)
{
    if (t->kind != PASYN_EXEC && t->kind != PASYN_MANY)
        return 0;
    cached_stmt *s = conn_acquire(&pool->wc, t);
    if (!s) {
        task_reset_result(t); /* it runs alone and reports the error itself */
        return 0;
    }
    int dml = s->klass == CLASS_DML;
    conn_release(&pool->wc, s);
    return dml;
}

/* The task at the head of the writer's queue, taken, when no transaction gates the queue. */
static pasyn_task *writer_take_head(pasyn_pool *pool)
{
    pasyn_task *t = NULL;
    pthread_mutex_lock(&pool->wmu);
    if (pool->whead.next != &pool->whead && atomic_load(&pool->txn_owner) == 0) {
        t = pool->whead.next;
        t->prev->next = t->next;
        t->next->prev = t->prev;
        t->next = t->prev = NULL;
        pool->wlen--;
    }
    pthread_mutex_unlock(&pool->wmu);
    return t;
}

/* The next task for the batch. When the queue is empty but writes have come in since the batch
 * began, more are likely on their way (the callers of the last batch resume one by one): watch
 * for them before committing, since each one that comes saves a COMMIT of its own. For how
 * long: a few of the gaps seen between such writes, or the time a COMMIT takes if that is
 * longer, never more than SPIN_NS. Writes that were all queued at once never wait, unless
 * `expect` says that the callers of the last batch are likely to write again. */
static pasyn_task *writer_next_in_batch(pasyn_pool *pool, int expect, uint64_t pushed_at_start)
{
    uint64_t seen = atomic_load(&pool->w_pushed);
    pasyn_task *t = writer_take_head(pool);
    if (t || (!expect && seen == pushed_at_start))
        return t;
    uint64_t linger = 3 * pool->gap_ns > pool->commit_ns ? 3 * pool->gap_ns : pool->commit_ns;
    if (linger > SPIN_NS)
        linger = SPIN_NS;
    uint64_t start = now_ns();
    if (writer_spin(pool, seen, linger) && (t = writer_take_head(pool)) != NULL)
        pool->gap_ns = (pool->gap_ns * 7 + (now_ns() - start)) / 8;
    return t;
}

static void note_batch(pasyn_pool *pool, int n)
{
    atomic_fetch_add(&pool->w_batches, 1);
    atomic_fetch_add(&pool->w_batched, (uint64_t)n);
    uint64_t max = atomic_load(&pool->w_batch_max);
    if ((uint64_t)n > max)
        atomic_store(&pool->w_batch_max, (uint64_t)n);
}

/* A statement that leaves a deferred foreign key violation pending would fail alone, at its
 * own COMMIT (foreignkeys.html, 4.2); in a batch a later statement could mend it before the
 * shared COMMIT (c3ref/c_dbstatus_options.html, SQLITE_DBSTATUS_DEFERRED_FKS). */
static int defers_violation(sqlite3 *db)
{
    int pending = 0, highwater = 0;
    sqlite3_db_status(db, SQLITE_DBSTATUS_DEFERRED_FKS, &pending, &highwater, 0);
    return pending > 0;
}

/* A task the progress handler stopped (its timeout, or conn:interrupt()): it is not run again. */
static int was_stopped(const pasyn_task *t)
{
    return t->err == PASYN_ESQLITE && t->code == SQLITE_INTERRUPT;
}

/* Runs `first` and the plain writes queued right behind it as one transaction, and completes
 * them only once the COMMIT has succeeded. A statement that fails on its own keeps what SQLite
 * keeps of it alone, with no savepoint of ours: SQLite's statement journal undoes it after the
 * default ABORT, and OR FAIL keeps the rows before the failing one (lang_conflict.html). When
 * the batch cannot commit (a statement ended the transaction: RAISE(ROLLBACK), OR ROLLBACK, an
 * I/O error; or the COMMIT failed), nothing of it was kept, and every statement runs again
 * alone, in order, so that each gets the answer and leaves the connection state (changes(),
 * last_insert_rowid()) it would have alone; only a statement that was stopped (timeout,
 * interrupt) keeps its error. Returns a task taken from the queue that did not run in the batch
 * (it runs next, alone), or NULL. */
static pasyn_task *writer_group_commit(pasyn_pool *pool, pasyn_task *first, int expect)
{
    sqlite3 *db = pool->wc.db;
    pasyn_task *batch[BATCH_MAX], *next = NULL;
    int n = 0, broken = 0;
    uint64_t pushed_at_start = atomic_load(&pool->w_pushed);
    int64_t total_before = sqlite3_total_changes64(db);
    int64_t rowid_before = sqlite3_last_insert_rowid(db);
    int64_t changes_before = writer_changes_now(pool);
    if (ctl(pool, CTL_BEGIN) != SQLITE_OK) {
        if (!sqlite3_get_autocommit(db))
            ctl(pool, CTL_ROLLBACK);
        return first; /* e.g. busy: it runs alone and meets the error itself */
    }
    for (pasyn_task *t = first; t;) {
        batch[n++] = t;
        writer_do(pool, t);
        /* The statement ended the whole transaction, or it must meet a COMMIT of its own. */
        if (sqlite3_get_autocommit(db) || defers_violation(db)) {
            broken = 1;
            break;
        }
        if (n == BATCH_MAX || !(t = writer_next_in_batch(pool, expect, pushed_at_start)))
            break;
        if (!joins_batch(pool, t)) {
            next = t;
            break;
        }
    }
    if (!broken) {
        uint64_t start = now_ns();
        broken = ctl(pool, CTL_COMMIT) != SQLITE_OK;
        /* A running average, for writer_next_in_batch. */
        pool->commit_ns = (pool->commit_ns * 7 + (now_ns() - start)) / 8;
    }
    pool->last_batch = broken ? 0 : n;
    if (!broken && n > 1)
        note_batch(pool, n);
    if (broken) {
        if (!sqlite3_get_autocommit(db))
            ctl(pool, CTL_ROLLBACK);
        /* Back to the connection state of the batch's start, which one connection running
         * the statements alone would have when the first of them starts. */
        pool->uncounted += sqlite3_total_changes64(db) - total_before;
        sqlite3_set_last_insert_rowid(db, rowid_before);
        pool->changes_before = changes_before;
        pool->stale_changes = sqlite3_changes64(db);
        pool->stale_total = sqlite3_total_changes64(db);
        pool->changes_stale = 1;
        for (int i = 0; i < n; i++) {
            if (!was_stopped(batch[i])) {
                task_reset_result(batch[i]);
                writer_do(pool, batch[i]);
            } else { /* stopped alone, its statement would have set changes() to 0 */
                pool->changes_before = 0;
                pool->stale_changes = sqlite3_changes64(db);
                pool->stale_total = sqlite3_total_changes64(db);
                pool->changes_stale = 1;
            }
        }
    }
    writer_settle(pool, 0);
    for (int i = 0; i < n; i++)
        complete(batch[i]);
    return next;
}

/* Runs a task the writer took: with the plain writes queued behind it as one batch when it is
 * a plain write itself, no transaction is open and others wait (`more`); otherwise alone. */
static void writer_serve(pasyn_pool *pool, pasyn_task *t, int more)
{
    /* Worth a batch when writes wait behind this one, or when the last batch's callers are
     * likely to write again soon (they were all woken at once). */
    int expect = pool->last_batch > 1;
    if (pool->opts.group_commit && atomic_load(&pool->txn_owner) == 0 &&
        (expect || more) && joins_batch(pool, t))
        t = writer_group_commit(pool, t, expect);
    else
        pool->last_batch = 0;
    if (t)
        writer_run(pool, t);
}

static void writer_close_ctl(pasyn_pool *pool)
{
    for (int i = 0; i < CTL_COUNT; i++) {
        sqlite3_finalize(pool->ctl[i]);
        pool->ctl[i] = NULL;
    }
}

/* SQL's changes() and total_changes() on the writer (writer_changes_now and
 * writer_total_changes_now). */
static void writer_changes(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, writer_changes_now(sqlite3_user_data(ctx)));
}

static void writer_total_changes(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, writer_total_changes_now(sqlite3_user_data(ctx)));
}

/* Opens the writer, then waits until every reader has opened (or one failed). Reads go to the
 * readers only in WAL mode or in a read-only pool: in a rollback journal the readers and the
 * writer lock each other out, and the pool would answer "database is locked" to itself. */
static int writer_start(pasyn_pool *pool)
{
    char *err = NULL;
    int flags = pool->opts.readonly ? SQLITE_OPEN_READONLY
                                    : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = conn_open(&pool->wc, pool->path, flags, pool->opts.busy_timeout_ms,
                       pool->opts.statement_cache, &pool->interrupts, &err);
    if (rc == SQLITE_OK)
        rc = pool_apply_pragmas(pool, &pool->wc, 1, &err);
    if (rc == SQLITE_OK) {
        /* Innocuous, as SQLite's own are: trusted_schema = OFF allows them in views and
         * triggers (c3ref/c_deterministic.html). */
        int fn_flags = SQLITE_UTF8 | SQLITE_INNOCUOUS;
        rc = sqlite3_create_function_v2(pool->wc.db, "total_changes", 0, fn_flags, pool,
                                        writer_total_changes, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_create_function_v2(pool->wc.db, "changes", 0, fn_flags, pool,
                                            writer_changes, NULL, NULL, NULL);
        /* As SQLite reports them: it may refuse WAL; the pragmas option may set locking_mode. */
        sqlite3 *db = pool->wc.db;
        pool->use_readers = pool->nreaders > 0 &&
                            !answers(db, "PRAGMA locking_mode", "exclusive") &&
                            (pool->opts.readonly || answers(db, "PRAGMA journal_mode", "wal"));
        pool->wc.refuse_locks_out = pool->use_readers;
    }
    if (rc == SQLITE_OK && pool->use_readers) { /* after WAL is set, like the readers */
        rc = conn_open(&pool->classifier, pool->reader_path, SQLITE_OPEN_READONLY,
                       pool->opts.busy_timeout_ms, 0, NULL, &err);
        pool->classifier.temp_names = &pool->temp_names;
        pool->classifier.refuse_locks_out = 1;
    }
    pthread_mutex_lock(&pool->wmu);
    if (rc != SQLITE_OK) {
        task_fail(pool->open_task, PASYN_ESQLITE, rc & 0xff, rc, err ? err : sqlite3_errstr(rc));
        free(err);
        pool->phase = PHASE_FAILED;
    } else {
        pool->phase = PHASE_WRITER_READY;
        pthread_cond_broadcast(&pool->phase_cv);
        while (pool->readers_open + pool->readers_failed < pool->nreaders)
            pthread_cond_wait(&pool->phase_cv, &pool->wmu);
        pool->phase = pool->readers_failed ? PHASE_FAILED : PHASE_RUNNING;
    }
    pthread_cond_broadcast(&pool->phase_cv);
    int ok = pool->phase == PHASE_RUNNING;
    pthread_mutex_unlock(&pool->wmu);
    return ok;
}

static void remove_memfile(pasyn_pool *pool)
{
    if (!pool->memfile)
        return;
    size_t n = strlen(pool->memfile);
    char *name = malloc(n + sizeof "-journal");
    if (name) {
        static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
        for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
            memcpy(name, pool->memfile, n);
            strcpy(name + n, suffixes[i]);
            remove(name);
        }
        free(name);
    }
}

void *writer_main(void *arg)
{
    pasyn_pool *pool = arg;
    if (!writer_start(pool)) {
        stop_readers(pool);
        conn_close(&pool->classifier);
        conn_close(&pool->wc);
        remove_memfile(pool);
        pthread_mutex_lock(&pool->wmu);
        pasyn_task *close_task = pool->close_task; /* a close that came while opening */
        pthread_mutex_unlock(&pool->wmu);
        atomic_store(&pool->closed, 1);
        complete(pool->open_task);
        if (close_task)
            complete(close_task);
        return NULL;
    }
    complete(pool->open_task);
    pasyn_task *t;
    int more;
    while ((t = writer_take(pool, &more)) != NULL)
        writer_serve(pool, t, more);
    if (pool->wc.db && !sqlite3_get_autocommit(pool->wc.db))
        conn_exec(&pool->wc, "ROLLBACK");
    writer_close_ctl(pool);
    conn_close(&pool->classifier);
    conn_close(&pool->wc);
    remove_memfile(pool);
    atomic_store(&pool->closed, 1);
    complete(pool->close_task);
    return NULL;
}

/* ---- readers ----------------------------------------------------------------------- */

static void wake_reader(reader *r)
{
    pthread_mutex_lock(&r->q.mu);
    r->wake = 1;
    if (r->sleeping)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->q.mu);
}

/* Wakes one parked reader that holds no stream, if any. */
static void wake_idle_reader(pasyn_pool *pool, const reader *except)
{
    for (int i = 0; i < pool->nreaders; i++) {
        reader *r = &pool->readers[i];
        if (r != except && atomic_load(&r->sleeping_hint) && !atomic_load(&r->streaming)) {
            wake_reader(r);
            return;
        }
    }
}

/* A task no queue could take (out of memory) completes at once with that error. */
static void fail_unqueued(pasyn_task *t)
{
    task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
    complete(t);
}

void readers_push(pasyn_pool *pool, pasyn_task *t)
{
    if (t->kind == PASYN_FETCH || t->kind == PASYN_RELEASE) {
        reader *r = &pool->readers[(t->stream >> 48) - 1];
        if (deque_push_back(&r->pinned, t) != 0)
            fail_unqueued(t);
        else
            wake_reader(r);
        return;
    }
    /* A reader watching for work with nothing queued takes it at once; otherwise round-robin
     * over the readers that hold no stream (at least one always holds none). */
    reader *r = NULL;
    for (int k = 0; k < pool->nreaders && !r; k++)
        if (atomic_load(&pool->readers[k].spinning) && !atomic_load(&pool->readers[k].streaming) &&
            atomic_load(&pool->readers[k].q.size) == 0)
            r = &pool->readers[k];
    unsigned start = atomic_fetch_add_explicit(&pool->rr, 1, memory_order_relaxed);
    for (int k = 0; k < pool->nreaders && !r; k++) {
        reader *c = &pool->readers[(start + (unsigned)k) % (unsigned)pool->nreaders];
        if (!atomic_load(&c->streaming))
            r = c;
    }
    pthread_mutex_lock(&r->q.mu);
    if (deque_push_back_locked(&r->q, t) != 0) {
        pthread_mutex_unlock(&r->q.mu);
        fail_unqueued(t);
        return;
    }
    if (t->long_read)
        atomic_fetch_add(&pool->long_reads, 1); /* until a reader is done with it */
    /* Idle: it will take this task itself. Otherwise (busy, or work queued before this one,
     * e.g. a burst landing on a reader that has not looked up yet) a parked reader may come
     * and steal. */
    int idle = (r->sleeping || atomic_load(&r->spinning)) && r->q.len == 1;
    r->wake = 1;
    if (r->sleeping)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->q.mu);
    if (!idle && pool->opts.stealing)
        wake_idle_reader(pool, r); /* it is busy: let a parked one come and steal */
}

static void push_injector(pasyn_pool *pool, reader *from, pasyn_task *t)
{
    if (deque_push_back(&pool->injector, t) != 0)
        fail_unqueued(t);
    else
        wake_idle_reader(pool, from);
}

static pasyn_task *steal(pasyn_pool *pool, reader *self)
{
    reader *victim = NULL;
    size_t most = 0;
    for (int i = 0; i < pool->nreaders; i++) {
        reader *r = &pool->readers[i];
        size_t n = atomic_load_explicit(&r->q.size, memory_order_relaxed);
        if (r != self && n > most) {
            most = n;
            victim = r;
        }
    }
    return victim ? deque_pop_back(&victim->q) : NULL;
}

static int work_visible(pasyn_pool *pool, reader *self)
{
    if (self->q.len || atomic_load(&self->pinned.size) || self->wake)
        return 1;
    if (self->stream)
        return 0;
    if (atomic_load(&pool->injector.size))
        return 1;
    if (pool->opts.stealing)
        for (int i = 0; i < pool->nreaders; i++)
            if (atomic_load(&pool->readers[i].q.size))
                return 1;
    return 0;
}

static int try_stream(pasyn_pool *pool)
{
    int n = atomic_load(&pool->streaming);
    while (n + 1 < pool->nreaders)
        if (atomic_compare_exchange_weak(&pool->streaming, &n, n + 1))
            return 1;
    return 0;
}

static void end_stream(reader *r)
{
    conn_release(&r->c, r->stream);
    r->stream = NULL;
    r->stream_id = 0;
    atomic_store(&r->streaming, 0);
    atomic_fetch_sub(&r->pool->streaming, 1);
}

/* A parked reader costs a wake-up of 10-20 us when work comes, more than a point query, so
 * one reader at a time keeps watching for work for a short while before it parks. */
static int spin_for_work(pasyn_pool *pool, reader *r)
{
    if (!spinner_enter(pool))
        return 0;
    atomic_store(&r->spinning, 1);
    uint64_t deadline = now_ns() + SPIN_NS;
    int found = 0;
    do {
        for (int i = 0; i < 64 && !found; i++) {
            found = atomic_load_explicit(&r->q.size, memory_order_relaxed) ||
                    atomic_load_explicit(&r->pinned.size, memory_order_relaxed) ||
                    (!r->stream && atomic_load_explicit(&pool->injector.size,
                                                         memory_order_relaxed));
            for (int k = 0; k < pool->nreaders && !found && !r->stream && pool->opts.stealing; k++)
                found = atomic_load_explicit(&pool->readers[k].q.size, memory_order_relaxed) > 0;
            cpu_relax();
        }
    } while (!found && spin_go_on(deadline) && !atomic_load(&pool->readers_stop));
    atomic_store(&r->spinning, 0);
    atomic_fetch_sub(&pool->spinners, 1);
    return found;
}

/* While long reads are queued or running, a short read should not wait behind one: a reader
 * about to take its next task takes the first short read of its own queue, or else of another
 * reader's (a steal), before a long one; but never more than OVERTAKE_MAX in a row while a
 * long read waits at the front of its own queue. */
static pasyn_task *take_short(pasyn_pool *pool, reader *r)
{
    if (r->overtaken >= OVERTAKE_MAX) {
        r->overtaken = 0;
        return NULL;
    }
    for (int k = 0; k < pool->nreaders; k++) {
        reader *from = &pool->readers[(r->index + k) % pool->nreaders];
        size_t at;
        pasyn_task *t = deque_take_short(&from->q, &at);
        if (!t)
            continue;
        if (from != r)
            atomic_fetch_add_explicit(&r->stolen, 1, memory_order_relaxed);
        r->overtaken = at > 0 || from != r ? r->overtaken + 1 : 0;
        return t;
    }
    return NULL;
}

static pasyn_task *reader_take(reader *r)
{
    pasyn_pool *pool = r->pool;
    for (;;) {
        pasyn_task *t = deque_pop_front(&r->pinned);
        if (t)
            return t;
        if (r->stream && atomic_load(&pool->readers_stop))
            end_stream(r); /* closing: nobody will fetch the rest */
        if (r->stream) {
            /* Holding a stream: serve nothing else; pass queued reads on. */
            while ((t = deque_pop_front(&r->q)) != NULL)
                push_injector(pool, r, t);
        } else {
            if (pool->opts.stealing && atomic_load(&pool->long_reads) > 0 &&
                (t = take_short(pool, r)) != NULL)
                return t;
            if ((t = deque_pop_front(&r->q)) != NULL) {
                r->overtaken = 0;
                return t;
            }
            if (pool->opts.stealing && (t = steal(pool, r)) != NULL) {
                atomic_fetch_add_explicit(&r->stolen, 1, memory_order_relaxed);
                return t;
            }
            if ((t = deque_pop_front(&pool->injector)) != NULL)
                return t;
            if (atomic_load(&pool->readers_stop))
                return NULL;
        }
        if (spin_for_work(pool, r))
            continue;
        pthread_mutex_lock(&r->q.mu);
        r->sleeping = 1;
        atomic_store(&r->sleeping_hint, 1);
        if (!work_visible(pool, r) && !atomic_load(&pool->readers_stop))
            pthread_cond_wait(&r->cv, &r->q.mu);
        r->sleeping = 0;
        atomic_store(&r->sleeping_hint, 0);
        r->wake = 0;
        pthread_mutex_unlock(&r->q.mu);
    }
}

/* After a read ran: the route cache learns whether its SQL is a long read when that changed.
 * An average, so that a short read that lost its core for a while stays short. */
static void note_length(pasyn_pool *pool, cached_stmt *s, pasyn_task *t, uint64_t start)
{
    uint64_t took = now_ns() - start;
    s->run_ns = s->run_ns ? s->run_ns - s->run_ns / 8 + took / 8 : took;
    int long_read = s->run_ns >= LONG_READ_NS;
    if (long_read != t->long_read)
        route_note_long(pool, t->sql, t->sql_len, long_read);
}

/* A task that is no read after all (or not preparable here, e.g. a TEMP table's): the writer
 * runs it and reports any error with its own connection's view. Reads have no side effects,
 * so what the reader may have stepped of it is dropped. */
static void hand_to_writer(reader *r, pasyn_task *t, cached_stmt *s)
{
    if (s) {
        route_put(r->pool, t->sql, t->sql_len, ROUTE_WRITE, ROUTE_ANY_GEN); /* no read after all */
        conn_release(&r->c, s);
    }
    task_reset_result(t);
    writer_push(r->pool, t);
}

/* A read that failed here with "no such table" (column, function, ...) while the writer has
 * TEMP or attached objects may have met what this connection lacks: the writer's view is the
 * pool's, and it answers (with the same error when it is one). Any other error is the read's
 * own: retried on the writer it would wait behind another coroutine's transaction. */
static int reader_lacks(pasyn_pool *pool, const pasyn_task *t)
{
    return t->err == PASYN_ESQLITE && t->code == SQLITE_ERROR &&
           atomic_load_explicit(&pool->writer_local, memory_order_relaxed) && t->message &&
           strncmp(t->message, "no such ", 8) == 0;
}

static void reader_run(reader *r, pasyn_task *t)
{
    pasyn_pool *pool = r->pool;
    uint64_t start = now_ns();
    if (atomic_load_explicit(&pool->settings_gen, memory_order_acquire) != r->settings_gen)
        settings_apply(pool, r);
    cached_stmt *s = conn_acquire(&r->c, t);
    if (!s && t->err == PASYN_OK) {
        complete(t); /* empty statement */
        return;
    }
    if (!s || s->klass != CLASS_READ) {
        hand_to_writer(r, t, s);
        return;
    }
    atomic_fetch_add_explicit(&r->executed, 1, memory_order_relaxed);
    if (conn_bind(&r->c, s, t, 0, t->params.len) != 0) {
        conn_release(&r->c, s);
        complete(t);
        return;
    }
    conn_arm(&r->c, t);
    int rc = conn_step_rows(&r->c, s, t, CHUNK_BYTES, 1);
    if (conn_class_now(&r->c, s) != CLASS_READ || reader_lacks(pool, t)) {
        conn_disarm(&r->c, t);
        hand_to_writer(r, t, s);
        return;
    }
    if (rc == SQLITE_ROW && !try_stream(pool))
        rc = conn_step_rows(&r->c, s, t, 0, 0); /* the last free reader: all of it */
    conn_disarm(&r->c, t);
    note_length(pool, s, t, start);
    if (rc == SQLITE_ROW) { /* more to come: this reader keeps the statement */
        r->stream = s;
        r->stream_id = ((uint64_t)(r->index + 1) << 48) |
                       (atomic_fetch_add(&pool->stream_serial, 1) & 0xffffffffffffu);
        atomic_store(&r->streaming, 1);
        t->stream = r->stream_id;
        complete(t);
        return;
    }
    conn_release(&r->c, s);
    complete(t);
}

static void reader_exec(reader *r, pasyn_task *t)
{
    int long_read = t->long_read; /* t is not ours once it is completed */
    reader_run(r, t);
    if (long_read)
        atomic_fetch_sub(&r->pool->long_reads, 1);
}

static void reader_fetch(reader *r, pasyn_task *t)
{
    if (!r->stream || t->stream != r->stream_id) {
        t->stream = 0;
        if (t->kind == PASYN_FETCH)
            task_fail_programming(t, "the cursor's result is no longer available");
        complete(t);
        return;
    }
    atomic_fetch_add_explicit(&r->executed, 1, memory_order_relaxed);
    if (t->kind == PASYN_FETCH) {
        conn_arm(&r->c, t);
        int rc = conn_step_rows(&r->c, r->stream, t, CHUNK_BYTES, 0);
        conn_disarm(&r->c, t);
        if (rc == SQLITE_ROW) {
            complete(t);
            return;
        }
    }
    t->stream = 0;
    end_stream(r);
    complete(t);
}

/* Opens the reader's connection once the writer has opened (and set WAL), one reader after
 * the other: the first connection to read a WAL database whose index is not built yet builds
 * it, and another one reading meanwhile gets SQLITE_BUSY_RECOVERY, at once with busy_timeout 0;
 * the pool must not lose a race against itself. A reader the pool does not use (no WAL) opens
 * nothing and ends. */
static int reader_start(reader *r)
{
    pasyn_pool *pool = r->pool;
    pthread_mutex_lock(&pool->wmu);
    while (pool->phase == PHASE_OPENING ||
           (pool->phase == PHASE_WRITER_READY &&
            pool->readers_open + pool->readers_failed < r->index))
        pthread_cond_wait(&pool->phase_cv, &pool->wmu);
    int go = pool->phase == PHASE_WRITER_READY, open = go && pool->use_readers;
    pthread_mutex_unlock(&pool->wmu);
    if (!go)
        return 0;
    char *err = NULL;
    int rc = SQLITE_OK;
    if (open) {
        rc = conn_open(&r->c, pool->reader_path, SQLITE_OPEN_READONLY, pool->opts.busy_timeout_ms,
                       pool->opts.statement_cache, &pool->interrupts, &err);
        r->c.temp_names = &pool->temp_names;
        r->c.refuse_locks_out = 1;
        if (rc == SQLITE_OK)
            rc = pool_apply_pragmas(pool, &r->c, 0, &err);
    }
    pthread_mutex_lock(&pool->wmu);
    if (rc != SQLITE_OK) {
        if (pool->open_task->err == PASYN_OK)
            task_fail(pool->open_task, PASYN_ESQLITE, rc & 0xff, rc,
                      err ? err : sqlite3_errstr(rc));
        free(err);
        pool->readers_failed++;
    } else {
        pool->readers_open++;
    }
    pthread_cond_broadcast(&pool->phase_cv);
    while (pool->phase == PHASE_WRITER_READY)
        pthread_cond_wait(&pool->phase_cv, &pool->wmu);
    go = pool->phase == PHASE_RUNNING && open;
    pthread_mutex_unlock(&pool->wmu);
    return go;
}

/* Readers ask the kernel for a longer time slice than the default. Its scheduler (EEVDF,
 * Linux 6.12 on) lets a waking thread with a shorter slice preempt the running one at once
 * (PREEMPT_SHORT); so a caller's event loop that wakes up while the readers keep every core
 * busy gets a core at once instead of at the next tick, 4 ms later. 5 ms, not more: the
 * readers also share the cores among themselves. Elsewhere this does nothing. */
static void lengthen_slice(void)
{
#if defined(__linux__) && defined(SYS_sched_setattr) && defined(SYS_sched_getattr)
    struct { /* struct sched_attr, version 1 */
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime, deadline, period;
        uint32_t util_min, util_max;
    } a;
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, 0, &a, (unsigned)sizeof a, 0) == 0 && a.policy == SCHED_OTHER) {
        a.size = sizeof a;
        a.flags = 0;
        a.runtime = READER_SLICE_NS;
        syscall(SYS_sched_setattr, 0, &a, 0);
    }
#endif
}

void *reader_main(void *arg)
{
    reader *r = arg;
    lengthen_slice();
    if (reader_start(r)) {
        pasyn_task *t;
        while ((t = reader_take(r)) != NULL) {
            if (t->kind == PASYN_EXEC)
                reader_exec(r, t);
            else
                reader_fetch(r, t);
        }
    }
    if (r->stream)
        end_stream(r);
    conn_close(&r->c);
    return NULL;
}
