/*
 * group_commit.c - the writer's batches. When plain writes (INSERT, UPDATE, DELETE, or an
 * executemany of one) queue up, the writer runs them as BEGIN IMMEDIATE; ...; COMMIT and
 * completes them, each with its own result, only once the COMMIT has succeeded.
 */
#include "hooks.h"

/* The fewest statements a batch may be capped at (batch_cap). */
#define BATCH_MIN 16

/* The statements a batch is made of, prepared once on the writer's connection. */
static const char *const batch_sql[BATCH_STMTS] = {
    [BATCH_BEGIN] = "BEGIN IMMEDIATE",
    [BATCH_COMMIT] = "COMMIT",
    [BATCH_ROLLBACK] = "ROLLBACK",
};

static int batch_exec(pasyn_pool *pool, enum batch_stmt which)
{
    sqlite3_stmt **st = &pool->batch.stmts[which];
    if (!*st) {
        int rc = sqlite3_prepare_v3(pool->writer.conn.db, batch_sql[which], -1,
                                    SQLITE_PREPARE_PERSISTENT, st, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    int rc = sqlite3_step(*st);
    sqlite3_reset(*st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Ends the batch's transaction unless an error already did. */
static void batch_undo(pasyn_pool *pool)
{
    if (!sqlite3_get_autocommit(pool->writer.conn.db))
        batch_exec(pool, BATCH_ROLLBACK);
}

void group_commit_close(pasyn_pool *pool)
{
    for (int i = 0; i < BATCH_STMTS; i++) {
        sqlite3_finalize(pool->batch.stmts[i]);
        pool->batch.stmts[i] = NULL;
    }
}

/* Only a plain write may join a batch: an INSERT, UPDATE or DELETE, or an executemany of
 * one. Anything else (transaction control, DDL, PRAGMA, VACUUM, reads) runs alone. */
static int joins_batch(pasyn_pool *pool, pasyn_task *t)
{
    if (t->kind != PASYN_EXEC && t->kind != PASYN_MANY)
        return 0;
    /* A text too long to cache would be prepared here and again to run it: it runs alone. */
    if (t->sql_len > PASYN_CACHE_SQL_MAX)
        return 0;
    conn *c = &pool->writer.conn;
    uint64_t cap = c->busy_cap, deadline = conn_busy_deadline(c, t);
    if (!cap || (deadline && deadline < cap))
        conn_busy_cap(c, deadline); /* a prepare that reads the schema waits as t may */
    cached_stmt *s = stmt_acquire(c, t);
    conn_busy_cap(c, cap);
    if (!s) {
        task_reset_result(t); /* it runs alone and reports the error itself */
        return 0;
    }
    int dml = s->kind == STMT_DML;
    stmt_hold(c, s); /* it runs next, in the batch or alone: no second look in the cache */
    return dml;
}

/* True once a write was queued since `seen` (writer.pushed), or the submitting host waits for
 * completions with nothing else to run (its hub's `idle`): it will submit no more before this
 * batch completes. */
static int batch_fed_or_starved(pasyn_pool *pool, void *seen)
{
    return atomic_load_explicit(&pool->writer.pushed, memory_order_acquire) != *(uint64_t *)seen ||
           atomic_load_explicit(&pool->hub->idle, memory_order_relaxed);
}

/* The next task for the batch. When the queue is empty but writes have come in since the batch
 * began, more are likely on their way (the callers of the last batch resume one by one): watch
 * for them before committing, since each one that comes saves a COMMIT of its own. For how
 * long: a few of the gaps seen between such writes, or the time a COMMIT takes if that is
 * longer, never more than SPIN_NS; and not at all, or no longer, once the host that submits
 * them waits in pasyn_hub_poll with nothing to run (hub's `idle`: the rest of its writers wait
 * for this batch's completions, and the batch would only keep them waiting). Writes that were
 * all queued at once never wait, unless `expect` says that the callers of the last batch are
 * likely to write again. */
static pasyn_task *batch_next(pasyn_pool *pool, int expect, uint64_t pushed_at_start)
{
    batching *b = &pool->batch;
    uint64_t seen = atomic_load(&pool->writer.pushed);
    pasyn_task *t = writer_take_head(pool);
    if (t || (!expect && seen == pushed_at_start) || atomic_load(&pool->hub->idle))
        return t;
    uint64_t linger = 3 * b->gap_ns > b->commit_ns ? 3 * b->gap_ns : b->commit_ns;
    if (linger > SPIN_NS)
        linger = SPIN_NS;
    uint64_t start = now_ns();
    if (pool_spin(pool, linger, NULL, batch_fed_or_starved, &seen) &&
        (t = writer_take_head(pool)) != NULL)
        b->gap_ns = (b->gap_ns * 7 + (now_ns() - start)) / 8;
    return t;
}

/* How many statements this batch may hold. One batch for all the writers waiting takes as long
 * as running their statements (at the pace the submitting thread hands them in) plus its
 * COMMIT, while that thread sits idle. Two batches of half as many, one running while the other
 * commits, take as long as two COMMITs or the running, whichever is longer: less when a COMMIT
 * takes less than running all the writers' statements does (a COMMIT that syncs, with
 * synchronous = FULL, and many writers). Then a batch holds half the writers seen waiting (those
 * in the last batch and those queued behind it when it committed), never below BATCH_MIN.
 * Writer thread. */
static int batch_cap(const pasyn_pool *pool)
{
    const batching *b = &pool->batch;
    if (b->commit_ns >= (uint64_t)b->writers * b->stmt_ns)
        return BATCH_MAX;
    int cap = b->writers / 2;
    return cap < BATCH_MIN ? BATCH_MIN : cap > BATCH_MAX ? BATCH_MAX : cap;
}

/* How many owners (coroutines, for the Lua binding) the `n` statements of `batch` and those of
 * the batch that committed before it have, each counted once; then `batch`'s are the last. A
 * writer that waits for its statement's completion is in no queue: between two of its writes it
 * is the submitter's (a coroutine the host thread resumes). So the queue at a COMMIT shows few
 * of the writers; two batches in a row, which alternate once batch_cap halves them, hold them
 * all. (Statements of no owner, 0, count as one.) Writer thread. */
static int batch_owners(batching *b, pasyn_task *const *batch, int n)
{
    enum { BITS = 11, SLOTS = 1 << BITS }; /* at most 2 * BATCH_MAX keys: never above half full */
    uint64_t set[SLOTS];                   /* owner + 1; 0 for an empty slot */
    memset(set, 0, sizeof set);
    int distinct = 0, before = b->last_owners_n;
    for (int i = 0; i < before + n; i++) {
        uint64_t key = (i < before ? b->last_owners[i] : batch[i - before]->owner) + 1;
        size_t at = (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - BITS));
        while (set[at] && set[at] != key)
            at = (at + 1) & (SLOTS - 1);
        if (!set[at]) {
            set[at] = key;
            distinct++;
        }
    }
    for (int i = 0; i < n; i++)
        b->last_owners[i] = batch[i]->owner;
    b->last_owners_n = n;
    return distinct;
}

/* Learns how many writers wait at once from a batch of `n` that commits with `queued` more
 * behind it: the owners of it and the batch before (batch_owners), or its own statements when
 * they are more (writes of no owner), and the queue; the most seen lately, forgotten by 1/16 a
 * batch. Writer thread. */
static void batch_learn_writers(pasyn_pool *pool, pasyn_task *const *batch, int n, int queued)
{
    int owners = batch_owners(&pool->batch, batch, n);
    int seen = (owners > n ? owners : n) + queued, *w = &pool->batch.writers;
    *w = seen > *w - *w / 16 ? seen : *w - *w / 16;
}

static void batch_count(pasyn_pool *pool, int n)
{
    batching *b = &pool->batch;
    atomic_fetch_add(&b->count, 1);
    atomic_fetch_add(&b->statements, (uint64_t)n);
    if ((uint64_t)n > atomic_load(&b->most))
        atomic_store(&b->most, (uint64_t)n);
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

/* A statement that met a lock another process held until its wait ended. */
static int met_lock(const pasyn_task *t)
{
    return t->err == PASYN_ESQLITE && t->code == SQLITE_BUSY;
}

/* Runs `first` and the plain writes queued right behind it as one transaction, and completes
 * them only once the COMMIT has succeeded. A statement that fails on its own keeps what SQLite
 * keeps of it alone, with no savepoint of ours: SQLite's statement journal undoes it after the
 * default ABORT, and OR FAIL keeps the rows before the failing one (lang_conflict.html). When
 * the batch cannot commit (a statement ended the transaction: RAISE(ROLLBACK), OR ROLLBACK, an
 * I/O error; or the COMMIT failed), nothing of it was kept, and every statement runs again
 * alone, in order, so that each gets the answer and leaves the connection state (changes(),
 * last_insert_rowid()) it would have alone; only a statement that was stopped (timeout,
 * interrupt) keeps its error. A lock another process holds is waited for no longer than the
 * batch's earliest member may wait (busy_timeout from its submission): a batch that meets it
 * runs again alone too, each statement then waiting until its own deadline, which those
 * already past it do not (SQLITE_BUSY at once, unless the lock is gone). Returns a task taken
 * from the queue that did not run in the batch (it runs next, alone), or NULL. */
static pasyn_task *batch_run(pasyn_pool *pool, pasyn_task *first, int expect)
{
    sqlite3 *db = pool->writer.conn.db;
    pasyn_task *batch[BATCH_MAX], *next = NULL;
    int n = 0, broken = 0, cap_n = batch_cap(pool);
    uint64_t pushed_at_start = atomic_load(&pool->writer.pushed), started = now_ns();
    int64_t total_before = sqlite3_total_changes64(db);
    int64_t rowid_before = sqlite3_last_insert_rowid(db);
    int64_t changes_before = changes_now(pool);
    conn *c = &pool->writer.conn;
    uint64_t cap = conn_busy_deadline(c, first);
    conn_busy_cap(c, cap);
    hooks_follow(pool); /* on_change set since the last task: this transaction is logged */
    if (batch_exec(pool, BATCH_BEGIN) != SQLITE_OK) {
        batch_undo(pool);
        conn_busy_cap(c, 0);
        return first; /* e.g. busy: it runs alone and meets the error itself */
    }
    for (pasyn_task *t = first; t;) {
        uint64_t deadline = conn_busy_deadline(c, t);
        if (deadline && deadline < cap)
            conn_busy_cap(c, cap = deadline); /* one handed over by a reader: queued earlier */
        batch[n++] = t;
        writer_run_task(pool, t);
        /* The statement ended the whole transaction, or it must meet a COMMIT of its own, or
         * it met a lock: alone, it may wait longer; or on_change's bound dropped changes of
         * it that it would keep alone. */
        if (sqlite3_get_autocommit(db) || defers_violation(db) || met_lock(t) ||
            hooks_batch_overflowed(pool)) {
            broken = 1;
            break;
        }
        if (n == cap_n || !(t = batch_next(pool, expect, pushed_at_start)))
            break;
        if (!joins_batch(pool, t) || hooks_batch_full(pool)) {
            next = t;
            break;
        }
    }
    if (!broken) {
        batch_learn_writers(pool, batch, n, writer_queued(pool));
        uint64_t start = now_ns();
        broken = batch_exec(pool, BATCH_COMMIT) != SQLITE_OK;
        /* Running averages, for batch_next and batch_cap. */
        pool->batch.commit_ns = (pool->batch.commit_ns * 7 + (now_ns() - start)) / 8;
        pool->batch.stmt_ns = (pool->batch.stmt_ns * 7 + (start - started) / (uint64_t)n) / 8;
    }
    conn_busy_cap(c, 0);
    /* each member's changes, now durable; or none, and its statements run again alone */
    hooks_batch_end(pool, batch, n, !broken);
    pool->batch.last = broken ? 0 : n;
    if (!broken && n > 1)
        batch_count(pool, n);
    if (broken) {
        batch_undo(pool);
        /* Its ROLLBACK may fail too (out of memory): then the statements must not run again
         * inside a transaction that nobody will commit (writer_run_task ends it first). */
        pool->writer.orphan_txn = !sqlite3_get_autocommit(db);
        /* Back to the connection state of the batch's start, which one connection running
         * the statements alone would have when the first of them starts. */
        sqlite3_set_last_insert_rowid(db, rowid_before);
        changes_batch_undone(pool, total_before, changes_before);
        for (int i = 0; i < n; i++) {
            if (!task_stopped(batch[i])) {
                task_reset_result(batch[i]);
                writer_run_task(pool, batch[i]);
            } else { /* stopped alone, its statement would have set changes() to 0 */
                changes_batch_undone(pool, sqlite3_total_changes64(db), 0);
            }
        }
    }
    writer_settle(pool, 0);
    for (int i = 0; i < n; i++)
        task_complete(batch[i]);
    return next;
}

pasyn_task *group_commit_run(pasyn_pool *pool, pasyn_task *t, int more)
{
    /* Worth a batch when writes wait behind this one, or when the last batch's callers are
     * likely to write again soon (they were all woken at once). */
    int expect = pool->batch.last > 1;
    if (pool->opts.group_commit && atomic_load(&pool->writer.txn_owner) == 0 && (expect || more) &&
        joins_batch(pool, t))
        return batch_run(pool, t, expect);
    pool->batch.last = 0;
    return t;
}
