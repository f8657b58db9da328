/*
 * submit.c - where a submitted task goes: the writer's FIFO (writes, and everything inside a
 * transaction of the caller's), the submitting thread itself (short reads, reader.c
 * inline_run) or a reader's deque (reads), decided on the submitting thread; and
 * pasyn_interrupt, which reaches the tasks running now.
 */
#include <string.h>
#include "pool.h"

/* Where a statement runs. SQL text seen for the first time is prepared on the classifier
 * connection here, on the submitting thread, so that every write goes straight to the
 * writer's queue and writes keep their submission order. That thread is the host's event loop:
 * it never waits here. The classifier gives up at once on a lock another process holds, and
 * refuses to load a schema from disk (conn_busy_own, never_wait: the writer loads it); while
 * another thread uses it, it is not waited for either. What it cannot learn so goes to the
 * writer (ROUTE_UNKNOWN), and so do TEMP or attached objects and errors: the writer knows or
 * reports them, and learns the route itself. Only a classification that completed is kept. */
static int route_of(pasyn_pool *pool, pasyn_task *t)
{
    uint64_t gen;
    int route = route_get(pool, t->sql, t->sql_len, &t->long_read, &t->fits_inline, &gen);
    if (route != ROUTE_UNKNOWN) {
        t->route_known = 1;
        return route;
    }
    routes *rs = &pool->routes;
    if (pthread_mutex_trylock(&rs->classifier_mu) != 0)
        return ROUTE_UNKNOWN;
    conn *c = &rs->classifier;
    cached_stmt *s = stmt_acquire(c, t);
    int learned = s && !c->gave_up;
    if (s) {
        route = s->kind == STMT_READ ? ROUTE_READ : ROUTE_WRITE;
        stmt_release(c, s); /* a cache of 0: finalized */
    }
    if (learned) {
        route_put(pool, t->sql, t->sql_len, route, gen);
        t->route_known = 1;
    } else if (c->gave_up) {
        atomic_store(&rs->classifier_stale, 1);
    }
    pthread_mutex_unlock(&rs->classifier_mu);
    task_reset_result(t); /* any error is the writer's to report */
    return learned ? route : ROUTE_UNKNOWN;
}

/* SQLite reads SQL text only up to a NUL byte: what follows would be dropped silently (Python's
 * sqlite3 refuses it too: "the query contains a null character"). */
static int holds_nul(pasyn_task *t)
{
    const char *nul = t->sql ? memchr(t->sql, '\0', t->sql_len) : NULL;
    if (nul)
        task_fail_programming(t, "the SQL holds a NUL byte (at byte %zu); nothing was run",
                              (size_t)(nul - t->sql));
    return nul != NULL;
}

int pasyn_submit(pasyn_pool *pool, pasyn_task *t, int sync)
{
    if (holds_nul(t))
        return PASYN_EPROGRAMMING;
    t->hub = pool->hub;
    t->submitted_ns = now_ns();
    t->notify = t->kind == PASYN_RELEASE || t->kind == PASYN_ABANDON ? NOTIFY_NONE
                : sync                                               ? NOTIFY_SYNC
                                                                     : NOTIFY_HUB;
    atomic_store_explicit(&t->done, 0, memory_order_relaxed);
    pthread_rwlock_rdlock(&pool->life.intake);
    if (atomic_load(&pool->life.state) != PASYN_POOL_OPEN) {
        pthread_rwlock_unlock(&pool->life.intake);
        task_fail(t, PASYN_ECLOSED, 0, 0, "the pool is closed");
        return PASYN_ECLOSED;
    }
    switch (t->kind) {
    case PASYN_EXEC: {
        uint64_t holder = atomic_load(&pool->writer.txn_owner);
        int route = !pool->readers.used || (t->owner && t->owner == holder) ? ROUTE_WRITE
                                                                            : route_of(pool, t);
        /* A known read (not the caller's transaction's: that went to the writer above)
         * whose runs were short, or which the caller would only wait for, runs here and now
         * when the inline connection is free and inline_wanted says so; it takes a fresh
         * snapshot, so it sees every write whose call has returned. */
        if (route == ROUTE_READ && pool->inliner.used && !t->no_inline && inline_wanted(pool, t) &&
            inline_run(pool, t)) {
            pthread_rwlock_unlock(&pool->life.intake);
            atomic_store_explicit(&t->done, 1, memory_order_release);
            return PASYN_DONE;
        }
        if (t->caller == CALLER_ASKS) { /* not at once: the caller says whether it is idle */
            pthread_rwlock_unlock(&pool->life.intake);
            t->caller = CALLER_UNSAID;
            return PASYN_ASK;
        }
        /* What could not be classified goes to the writer, which runs anything; but while
         * another owner's transaction holds it, a reader tries it first: a read runs there
         * instead of waiting for that COMMIT, anything else it hands on to the writer. */
        if (route == ROUTE_READ || (route == ROUTE_UNKNOWN && holder != 0))
            readers_push(pool, t);
        else
            writer_push(pool, t);
        break;
    }
    case PASYN_FETCH:
    case PASYN_RELEASE:
        if ((t->stream >> 48) == 0 || (t->stream >> 48) > (uint64_t)pool->readers.count) {
            pthread_rwlock_unlock(&pool->life.intake);
            task_fail_programming(t, "no such stream");
            return PASYN_EPROGRAMMING;
        }
        readers_push(pool, t);
        break;
    case PASYN_MANY:
    case PASYN_SCRIPT:
    case PASYN_ABANDON:
    case PASYN_SERIALIZE:
    case PASYN_BACKUP: /* backup.c: the writer's connection is the source */
        writer_push(pool, t);
        break;
    default:
        pthread_rwlock_unlock(&pool->life.intake);
        task_fail_programming(t, "task kind %d cannot be submitted", t->kind);
        return PASYN_EPROGRAMMING;
    }
    pthread_rwlock_unlock(&pool->life.intake);
    return 0;
}

int pasyn_interrupt(pasyn_pool *pool)
{
    /* Each worker's progress handler compares this count with its value when the running task
     * started (conn_arm): only statements running now stop, each through its own task. Not
     * sqlite3_interrupt(), whose flag stays set while any statement of the connection is open
     * (a half-read streamed cursor), failing that cursor's next chunk too. */
    if (atomic_load(&pool->life.state) != PASYN_POOL_OPEN)
        return PASYN_ECLOSED;
    atomic_fetch_add(&pool->interrupts, 1);
    return 0;
}
