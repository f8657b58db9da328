/*
 * reader.c - the reader threads. A submitted read lands on one reader's deque (readers_push).
 * A reader takes from its own deque (while long reads are about, short reads first, from any
 * deque), then steals from the back of the busiest other deque, then takes from the shared
 * injector, then watches for work a while and parks. It runs reads, hands anything else to the
 * writer, and may keep one streamed result (and its snapshot) while it serves nothing else. Its
 * exit task, queued at close, ends the loop once nothing is left for it.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "pool.h"

/* Rows a task carries per round trip before a reader considers streaming the rest. */
#define CHUNK_BYTES (256 * 1024)

/* ---- queueing a read ---------------------------------------------------------------- */

static void wake_reader(reader *r)
{
    pthread_mutex_lock(&r->queue.mu);
    r->wake_pending = 1;
    if (r->sleeping)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->queue.mu);
}

/* Wakes one parked reader that holds no stream, if any. */
static void wake_idle_reader(pasyn_pool *pool, const reader *except)
{
    for (int i = 0; i < pool->readers.count; i++) {
        reader *r = &pool->readers.all[i];
        if (r != except && atomic_load(&r->sleeping_hint) && !atomic_load(&r->streaming)) {
            wake_reader(r);
            return;
        }
    }
}

/* A task no queue could take (out of memory) completes at once with that error. */
static void fail_unqueued(pasyn_task *t)
{
    task_fail_nomem(t);
    task_complete(t);
}

/* A read whose cost no reader has learned yet, in a pool that runs reads inline (elsewhere
 * nobody asks): counted in readers.unknown_reads from its push until a reader is done with
 * it. The same answer at both ends: the task's fields do not change in between. */
static int cost_unknown(pasyn_pool *pool, const pasyn_task *t)
{
    return pool->inliner.used && !t->long_read && t->fits_inline == INLINE_UNKNOWN;
}

void readers_push(pasyn_pool *pool, pasyn_task *t)
{
    readers *rs = &pool->readers;
    if (t->kind == PASYN_FETCH || t->kind == PASYN_RELEASE) {
        reader *r = &rs->all[(t->stream >> 48) - 1];
        if (deque_push_back(&r->pinned, t) != 0)
            fail_unqueued(t);
        else
            wake_reader(r);
        return;
    }
    /* A reader watching for work with nothing queued takes it at once; otherwise round-robin
     * over the readers that hold no stream (at least one always holds none). */
    reader *r = NULL;
    for (int k = 0; k < rs->count && !r; k++)
        if (atomic_load(&rs->all[k].spinning) && !atomic_load(&rs->all[k].streaming) &&
            atomic_load(&rs->all[k].queue.size) == 0)
            r = &rs->all[k];
    unsigned start = atomic_fetch_add_explicit(&rs->next, 1, memory_order_relaxed);
    for (int k = 0; k < rs->count && !r; k++) {
        reader *c = &rs->all[(start + (unsigned)k) % (unsigned)rs->count];
        if (!atomic_load(&c->streaming))
            r = c;
    }
    pthread_mutex_lock(&r->queue.mu);
    if (deque_push_back_locked(&r->queue, t) != 0) {
        pthread_mutex_unlock(&r->queue.mu);
        fail_unqueued(t);
        return;
    }
    if (t->long_read)
        atomic_fetch_add(&rs->long_reads, 1); /* until a reader is done with it */
    else if (cost_unknown(pool, t))
        atomic_fetch_add(&rs->unknown_reads, 1); /* the same */
    /* Idle: it will take this task itself. Otherwise (busy, or work queued before this one,
     * e.g. a burst landing on a reader that has not looked up yet) a parked reader may come
     * and steal. */
    int idle = (r->sleeping || atomic_load(&r->spinning)) && r->queue.len == 1;
    r->wake_pending = 1;
    if (r->sleeping)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->queue.mu);
    if (!idle && pool->opts.stealing)
        wake_idle_reader(pool, r); /* it is busy: let a parked one come and steal */
}

static void push_injector(pasyn_pool *pool, reader *from, pasyn_task *t)
{
    if (deque_push_back(&pool->readers.injector, t) != 0)
        fail_unqueued(t);
    else
        wake_idle_reader(pool, from);
}

void readers_join(pasyn_pool *pool)
{
    for (int i = 0; i < pool->readers.count; i++) {
        reader *r = &pool->readers.all[i];
        if (r->started)
            pthread_join(r->thread, NULL);
        r->started = 0;
    }
}

void readers_stop(pasyn_pool *pool)
{
    for (int i = 0; i < pool->readers.count; i++) {
        reader *r = &pool->readers.all[i];
        r->exit_task.kind = PASYN_CLOSE;
        /* Out of memory only while the pinned ring is full, and its reader is emptying it
         * (nothing new is pinned once intake has stopped): room comes. */
        while (deque_push_back(&r->pinned, &r->exit_task) != 0)
            sched_yield();
        wake_reader(r);
    }
    readers_join(pool);
}

/* ---- taking a task ------------------------------------------------------------------ */

static pasyn_task *steal(pasyn_pool *pool, reader *self)
{
    reader *victim = NULL;
    size_t most = 0;
    for (int i = 0; i < pool->readers.count; i++) {
        reader *r = &pool->readers.all[i];
        size_t n = atomic_load_explicit(&r->queue.size, memory_order_relaxed);
        if (r != self && n > most) {
            most = n;
            victim = r;
        }
    }
    return victim ? deque_pop_back(&victim->queue) : NULL;
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
    for (int k = 0; k < pool->readers.count; k++) {
        reader *from = &pool->readers.all[(r->index + k) % pool->readers.count];
        size_t at;
        pasyn_task *t = deque_take_short(&from->queue, &at);
        if (!t)
            continue;
        if (from != r)
            atomic_fetch_add_explicit(&r->stolen, 1, memory_order_relaxed);
        r->overtaken = at > 0 || from != r ? r->overtaken + 1 : 0;
        return t;
    }
    return NULL;
}

/* Whether work for `r` is queued: its own or pinned to it, or (when it holds no stream) the
 * injector's or, with stealing, another reader's. Read without locks: a reader about to park
 * looks again under its lock (reader_park). */
static int work_for(pasyn_pool *pool, void *arg)
{
    reader *r = arg;
    if (atomic_load(&r->queue.size) || atomic_load(&r->pinned.size))
        return 1;
    if (r->stream)
        return 0;
    if (atomic_load(&pool->readers.injector.size))
        return 1;
    if (pool->opts.stealing)
        for (int i = 0; i < pool->readers.count; i++)
            if (atomic_load(&pool->readers.all[i].queue.size))
                return 1;
    return 0;
}

/* A task from the reader's queues, another's or the injector, in that order; NULL when none. */
static pasyn_task *reader_find_work(pasyn_pool *pool, reader *r)
{
    pasyn_task *t;
    if (r->stream) {
        /* Holding a stream: serve nothing else; pass queued reads on. */
        while ((t = deque_pop_front(&r->queue)) != NULL)
            push_injector(pool, r, t);
        return NULL;
    }
    if (pool->opts.stealing && atomic_load(&pool->readers.long_reads) > 0 &&
        (t = take_short(pool, r)) != NULL)
        return t;
    if ((t = deque_pop_front(&r->queue)) != NULL) {
        r->overtaken = 0;
        return t;
    }
    if (pool->opts.stealing && (t = steal(pool, r)) != NULL) {
        atomic_fetch_add_explicit(&r->stolen, 1, memory_order_relaxed);
        return t;
    }
    return deque_pop_front(&pool->readers.injector);
}

static void end_stream(reader *r)
{
    stmt_release(&r->conn, r->stream);
    r->stream = NULL;
    r->stream_id = 0;
    atomic_store(&r->streaming, 0);
    atomic_fetch_sub(&r->pool->readers.streaming, 1);
}

/* Parks until work may have come (or a wake-up was asked for). */
static void reader_park(pasyn_pool *pool, reader *r)
{
    pthread_mutex_lock(&r->queue.mu);
    r->sleeping = 1;
    atomic_store(&r->sleeping_hint, 1);
    if (!r->wake_pending && !work_for(pool, r)) {
        cpu_worker_awake(-1);
        pthread_cond_wait(&r->cv, &r->queue.mu);
        cpu_worker_awake(1);
    }
    r->sleeping = 0;
    atomic_store(&r->sleeping_hint, 0);
    r->wake_pending = 0;
    pthread_mutex_unlock(&r->queue.mu);
}

/* The next task for the reader, waiting for one: what is pinned to it first, then what
 * reader_find_work finds; watching for a while (a parked reader costs a wake-up of 10-20 us
 * when work comes, more than a point query), then parked. Its exit task comes last: once it
 * is taken, nobody will fetch the rest of a stream, and what is still queued runs first. */
static pasyn_task *reader_take(reader *r)
{
    pasyn_pool *pool = r->pool;
    for (;;) {
        pasyn_task *t = deque_pop_front(&r->pinned);
        if (t && t->kind == PASYN_CLOSE) {
            if (r->stream)
                end_stream(r);
            pasyn_task *work = reader_find_work(pool, r);
            if (!work)
                return t;
            deque_push_back(&r->pinned, t); /* cannot fail: it was in the ring just now */
            return work;
        }
        if (t || (t = reader_find_work(pool, r)) != NULL)
            return t;
        if (!pool_spin(pool, SPIN_NS, &r->spinning, work_for, r))
            reader_park(pool, r);
    }
}

/* ---- running a read ----------------------------------------------------------------- */

static int try_stream(pasyn_pool *pool)
{
    int n = atomic_load(&pool->readers.streaming);
    while (n + 1 < pool->readers.count)
        if (atomic_compare_exchange_weak(&pool->readers.streaming, &n, n + 1))
            return 1;
    return 0;
}

/* The statement's low estimate after a run that took `took` (cached_stmt.low_ns): a shorter
 * run sets it; a longer one raises it by a quarter of the difference, and by at most a
 * quarter of the estimate, so that one run that lost its core for milliseconds moves it
 * little, while a read that became slower for good gets there in a few runs. */
static void note_low(cached_stmt *s, uint64_t took)
{
    if (!s->low_ns || took < s->low_ns) {
        s->low_ns = took;
        return;
    }
    uint64_t rise = took - s->low_ns;
    s->low_ns += (rise < s->low_ns ? rise : s->low_ns) / 4;
}

/* After a read ran: the route cache learns whether its SQL is a long read when that changed.
 * An average, so that a short read that lost its core for a while stays short. */
static void note_length(pasyn_pool *pool, cached_stmt *s, pasyn_task *t, uint64_t start,
                        uint64_t cpu_start)
{
    uint64_t cpu = cpu_start ? cpu_thread_ns() : 0;
    uint64_t took = cpu > cpu_start ? cpu - cpu_start : now_ns() - start;
    s->run_ns = s->run_ns ? s->run_ns - s->run_ns / 8 + took / 8 : took;
    note_low(s, took);
    int long_read = s->run_ns >= LONG_READ_NS;
    if (long_read != t->long_read)
        route_note_long(pool, t->sql, t->sql_len, long_read);
    if (pool->inliner.used && t->fits_inline != INLINE_NEVER) { /* may its caller run it */
        uint64_t fit = pool->inliner.fit_ns;
        int fits = s->low_ns < fit ? INLINE_FITS : s->low_ns < 2 * fit ? INLINE_LOADED : INLINE_NO;
        if (fits != t->fits_inline)
            route_note_inline(pool, t->sql, t->sql_len, fits, 0);
    }
}

/* A task that is no read after all (or not preparable here, e.g. a TEMP table's): the writer
 * runs it and reports any error with its own connection's view. Reads have no side effects,
 * so what the reader may have stepped of it is dropped. */
static void hand_to_writer(reader *r, pasyn_task *t, cached_stmt *s)
{
    if (s) {
        route_put(r->pool, t->sql, t->sql_len, ROUTE_WRITE, ROUTE_ANY_GEN); /* no read after all */
        stmt_release(&r->conn, s);
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
           atomic_load_explicit(&pool->writer.has_local, memory_order_relaxed) && t->message &&
           strncmp(t->message, "no such ", 8) == 0;
}

static void reader_run_read(reader *r, pasyn_task *t)
{
    pasyn_pool *pool = r->pool;
    uint64_t start = now_ns();
    if (atomic_load_explicit(&pool->read_settings.gen, memory_order_acquire) != r->settings_gen)
        settings_apply(pool, &r->conn, &r->settings_gen);
    conn_arm(&r->conn, t); /* from the prepare on: it may wait on a lock to read the schema */
    cached_stmt *s = stmt_acquire(&r->conn, t);
    if (!s && t->err == PASYN_OK) {
        conn_disarm(&r->conn, t);
        task_complete(t); /* empty statement */
        return;
    }
    if (!s || s->kind != STMT_READ) {
        conn_disarm(&r->conn, t);
        if (!s && task_stopped(t)) /* its timeout or an interrupt came while it prepared */
            task_complete(t);
        else
            hand_to_writer(r, t, s);
        return;
    }
    atomic_fetch_add_explicit(&r->executed, 1, memory_order_relaxed);
    /* The statement's first run here, with no core spare: its cost is its CPU time, its wall
     * time being the machine's load as much as its own (a point read preempted for
     * milliseconds is no long read, and it sets the low estimate that later runs only nudge). */
    uint64_t cpu_start = !s->low_ns && !cpu_core_spare() ? cpu_thread_ns() : 0;
    if (stmt_bind(&r->conn, s, t, 0, t->params.len) != 0) {
        conn_disarm(&r->conn, t);
        stmt_release(&r->conn, s);
        task_complete(t);
        return;
    }
    int rc = stmt_step_rows(&r->conn, s, t, CHUNK_BYTES, 1);
    if (stmt_kind_now(&r->conn, s) != STMT_READ || reader_lacks(pool, t)) {
        conn_disarm(&r->conn, t);
        hand_to_writer(r, t, s);
        return;
    }
    if (rc == SQLITE_ROW && !try_stream(pool))
        rc = stmt_step_rows(&r->conn, s, t, 0, 0); /* the last free reader: all of it */
    conn_disarm(&r->conn, t);
    note_length(pool, s, t, start, cpu_start);
    if (rc == SQLITE_ROW) { /* more to come: this reader keeps the statement */
        r->stream = s;
        r->stream_id = ((uint64_t)(r->index + 1) << 48) |
                       (atomic_fetch_add(&pool->readers.stream_serial, 1) & 0xffffffffffffu);
        atomic_store(&r->streaming, 1);
        t->stream = r->stream_id;
        task_complete(t);
        return;
    }
    stmt_release(&r->conn, s);
    task_complete(t);
}

/* The next chunk of the reader's stream (PASYN_FETCH), or its end (PASYN_RELEASE). */
static void reader_fetch(reader *r, pasyn_task *t)
{
    if (!r->stream || t->stream != r->stream_id) {
        t->stream = 0;
        if (t->kind == PASYN_FETCH)
            task_fail_programming(t, "the cursor's result is no longer available");
        task_complete(t);
        return;
    }
    atomic_fetch_add_explicit(&r->executed, 1, memory_order_relaxed);
    if (t->kind == PASYN_FETCH) {
        conn_arm(&r->conn, t);
        int rc = stmt_step_rows(&r->conn, r->stream, t, CHUNK_BYTES, 0);
        conn_disarm(&r->conn, t);
        if (rc == SQLITE_ROW) {
            task_complete(t);
            return;
        }
    }
    t->stream = 0;
    end_stream(r);
    task_complete(t);
}

/* ---- the caller helps: reads run on the submitting thread ------------------------------ */

int readers_handoff_pays(pasyn_pool *pool)
{
    readers *rs = &pool->readers;
    int long_reads = atomic_load_explicit(&rs->long_reads, memory_order_relaxed) +
                     atomic_load_explicit(&rs->unknown_reads, memory_order_relaxed);
    int streams = atomic_load_explicit(&rs->streaming, memory_order_relaxed);
    int busy_long = long_reads < rs->count ? long_reads : rs->count;
    return cpu_handoff_pays(rs->count - long_reads - streams, busy_long);
}

int inline_rule(int fits, int busy, int handoff)
{
    if (fits == INLINE_FITS)
        return !busy || !handoff;
    return fits == INLINE_LOADED && !handoff;
}

/* How an inline run ended. */
enum inline_outcome {
    RAN,     /* completed there, with its result or its own error (timeout, interrupt) */
    OVERRUN, /* went over the budget: abandoned */
    BUSY,    /* a lock another process holds, or a schema it may not load: abandoned */
    FAILED   /* anything else: abandoned, the readers give the true answer */
};

/* Runs the task on the inline connection, armed with the budget since `start`. *strike: what
 * the route cache is to learn when it did not run (route_note_inline). The caller holds
 * in->mu. */
static int inline_steps(pasyn_pool *pool, conn *c, pasyn_task *t, uint64_t start, int *strike)
{
    cached_stmt *s = stmt_acquire(c, t);
    int outcome = RAN;
    if (!s) {
        if (t->err == PASYN_OK) /* nothing but white space and comments */
            return RAN;
        if (c->over_budget) {
            *strike = c->over_budget == 1; /* not for the machine's load */
            return OVERRUN;
        }
        if (c->gave_up) { /* a lock, or a schema to load: a worker loads it (inline_load) */
            atomic_store(&pool->inliner.stale, 1);
            return BUSY;
        }
        *strike = INLINE_STRIKES; /* what this connection lacks: a function, a collation, ... */
        return FAILED;
    }
    /* An idle caller's run teaches the route cache as a reader's does (note_length), from
     * its CPU time when it is the statement's first run here with no core spare. */
    int idle = t->caller == CALLER_IDLE;
    uint64_t cpu_start = idle && !s->low_ns && c->budget_loaded ? cpu_thread_ns() : 0;
    if (s->kind != STMT_READ) {
        *strike = INLINE_STRIKES;
        outcome = FAILED;
    } else if (stmt_bind(c, s, t, 0, t->params.len) != 0) {
        outcome = FAILED; /* a reader reports it */
    } else {
        int rc = stmt_step_rows(c, s, t, CHUNK_BYTES, 1);
        if (rc == SQLITE_DONE && stmt_kind_now(c, s) == STMT_READ) {
            outcome = RAN;
        } else if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
            *strike = INLINE_STRIKES; /* no read after all, or a result that would stream */
            outcome = FAILED;
        } else if (c->over_budget) {
            *strike = c->over_budget == 1;
            outcome = OVERRUN;
        } else if (task_stopped(t)) {
            outcome = RAN; /* its own timeout, or pasyn_interrupt */
        } else if (t->code == SQLITE_BUSY || c->gave_up) {
            outcome = BUSY;
        } else {
            outcome = FAILED;
        }
    }
    /* Grown too long for the caller: readers take it (until they find it short again). Not
     * learned from a run begun with no core spare: its wall time is the machine's load as
     * much as its own (the budget still stops it, by the time it held the thread). An idle
     * caller's run, which no budget stopped, teaches everything a reader's run does: its text
     * may never reach a reader (a script that only blocks). */
    if (outcome == RAN && idle) {
        note_length(pool, s, t, start, cpu_start);
    } else if (outcome == RAN && !c->budget_loaded) {
        note_low(s, now_ns() - start);
        if (s->low_ns > 2 * pool->inliner.fit_ns)
            route_note_inline(pool, t->sql, t->sql_len, INLINE_NO, 0);
    }
    stmt_release(c, s);
    return outcome;
}

int inline_run(pasyn_pool *pool, pasyn_task *t)
{
    inliner *in = &pool->inliner;
    if (pthread_mutex_trylock(&in->mu) != 0)
        return 0; /* another thread of the host's runs one: hand it off */
    conn *c = &in->conn;
    if (atomic_load_explicit(&pool->read_settings.gen, memory_order_acquire) != in->settings_gen)
        settings_apply(pool, c, &in->settings_gen);
    uint64_t start = t->submitted_ns; /* pasyn_submit's, a moment ago: one clock read less */
    conn_arm(c, t);
    c->over_budget = 0;
    c->budget_deadline = t->caller == CALLER_IDLE ? 0 : start + in->budget_ns; /* 0: none */
    /* With more runnable threads than cores, this thread may lose its core for milliseconds
     * in the middle of a short read: then the budget counts the time the read held the thread,
     * its wall time less the thread's wait for a core (stop_check), and a read is not struck
     * off for the machine's load. What that needs is read at the run's first progress check (a
     * point read, done before one, costs no system call). */
    c->budget_start = start;
    c->budget_ns = in->budget_ns;
    c->budget_loaded = !cpu_core_spare();
    c->budget_by = 0;
    int strike = 0;
    int outcome = inline_steps(pool, c, t, start, &strike);
    c->budget_deadline = 0;
    conn_disarm(c, t);
    pthread_mutex_unlock(&in->mu);
    switch (outcome) {
    case RAN:
        atomic_fetch_add_explicit(&in->runs, 1, memory_order_relaxed);
        return 1;
    case OVERRUN:
        atomic_fetch_add_explicit(&in->overruns, 1, memory_order_relaxed);
        break;
    case BUSY:
        atomic_fetch_add_explicit(&in->busy, 1, memory_order_relaxed);
        break;
    default:
        atomic_fetch_add_explicit(&in->failed, 1, memory_order_relaxed);
        break;
    }
    if (strike)
        route_note_inline(pool, t->sql, t->sql_len, INLINE_NO, strike);
    task_reset_result(t); /* reads have no side effects: what ran here is dropped */
    return 0;
}

/* The schema is read the way the writer reads the classifier's (writer.c, classifier_load):
 * reading sqlite_schema loads it when it is not, or no longer, up to date. Not waiting on a
 * lock: the connection stays marked and is loaded after a later task. */
void inline_load(pasyn_pool *pool)
{
    inliner *in = &pool->inliner;
    if (!in->used || !atomic_exchange(&in->stale, 0))
        return;
    pthread_mutex_lock(&in->mu); /* a submitter holds it for one read, within the budget */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(in->conn.db, "SELECT 1 FROM sqlite_schema LIMIT 1", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        atomic_store(&in->stale, 1);
    pthread_mutex_unlock(&in->mu);
}

/* ---- open and loop ------------------------------------------------------------------ */

int reader_conn_open(pasyn_pool *pool, conn *c, int never_wait, char **err)
{
    int rc = conn_open(c, pool->reader_path, SQLITE_OPEN_READONLY, pool->opts.busy_timeout_ms,
                       pool->opts.statement_cache, &pool->interrupts, &pool->setup, err);
    c->temp_names = &pool->temp_names;
    c->refuse_locks_out = 1;
    if (rc == SQLITE_OK)
        rc = settings_apply_pragmas(pool, c, 0, err);
    if (rc == SQLITE_OK)
        conn_busy_own(c, never_wait);
    return rc;
}

/* Opens the reader's connection once the writer has opened (and set WAL), one reader after
 * the other: the first connection to read a WAL database whose index is not built yet builds
 * it, and another one reading meanwhile gets SQLITE_BUSY_RECOVERY, at once with busy_timeout 0;
 * the pool must not lose a race against itself. A reader the pool does not use (no WAL) opens
 * nothing and ends. 1 when the pool serves and this reader takes part. */
static int reader_open(reader *r)
{
    pasyn_pool *pool = r->pool;
    lifecycle *life = &pool->life;
    pthread_mutex_lock(&life->mu);
    while (life->writer_opened == 0 ||
           (life->writer_opened > 0 && life->readers_opened + life->readers_failed < r->index))
        pthread_cond_wait(&life->changed, &life->mu);
    int go = life->writer_opened > 0, open = go && pool->readers.used;
    pthread_mutex_unlock(&life->mu);
    if (!go)
        return 0;
    char *err = NULL;
    int rc = SQLITE_OK;
    if (open) {
        rc = reader_conn_open(pool, &r->conn, NEVER_WAIT_NO, &err);
        r->conn.functions = &pool->functions; /* not on the inline connection: no calls there */
    }
    pthread_mutex_lock(&life->mu);
    if (rc != SQLITE_OK) {
        if (life->open_task->err == PASYN_OK)
            task_fail(life->open_task, PASYN_ESQLITE, rc & 0xff, rc,
                      err ? err : sqlite3_errstr(rc));
        free(err);
        life->readers_failed++;
    } else {
        life->readers_opened++;
    }
    pthread_cond_broadcast(&life->changed);
    while (atomic_load(&life->state) == PASYN_POOL_OPENING)
        pthread_cond_wait(&life->changed, &life->mu);
    go = life->readers_failed == 0 && open;
    pthread_mutex_unlock(&life->mu);
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
    cpu_worker_awake(1);
    if (reader_open(r)) {
        pasyn_task *t;
        while ((t = reader_take(r))->kind != PASYN_CLOSE) {
            if (t->kind == PASYN_EXEC) {
                int long_read = t->long_read; /* t is not ours once it is completed */
                int unknown = !long_read && cost_unknown(r->pool, t);
                reader_run_read(r, t);
                if (long_read)
                    atomic_fetch_sub(&r->pool->readers.long_reads, 1);
                else if (unknown)
                    atomic_fetch_sub(&r->pool->readers.unknown_reads, 1);
                if (atomic_load_explicit(&r->pool->inliner.stale, memory_order_relaxed))
                    inline_load(r->pool);
            } else {
                reader_fetch(r, t);
            }
        }
    }
    if (r->stream)
        end_stream(r);
    conn_close(&r->conn);
    cpu_worker_awake(-1);
    return NULL;
}
