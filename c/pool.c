/*
 * pool.c - a pool's life: its options, opening it (the threads first, each opens its own
 * connection: writer.c, reader.c), closing it (a close task queued to the writer), freeing it,
 * its state and its counters.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pool.h"
#include "uri.h"

void pasyn_options_init(pasyn_options *o)
{
    memset(o, 0, sizeof *o);
    o->readers = 3;
    o->busy_timeout_ms = 5000;
    o->journal_mode = "wal";
    o->synchronous = "normal";
    o->statement_cache = 128;
    o->stealing = 1;
    o->group_commit = 1;
    o->inline_reads = 0;
    o->inline_budget = PASYN_INLINE_BUDGET;
}

/* ---- open -------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The image option: the bytes the memory database starts with, written into its file
 * (the descriptor that holds its lock is open on it). 0, or -1. */
static int write_image(pasyn_pool *pool)
{
    const unsigned char *p = pool->opts.image;
    size_t left = pool->opts.image_len;
    off_t at = 0;
    while (left > 0) {
        ssize_t n = pwrite(pool->memfile_lock, p, left, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        at += n;
        left -= (size_t)n;
    }
    return 0;
}

/* What the writer and the readers open (uri.c): a path or URI for each, or the pool's private
 * WAL file for a memory database. A read-only pool's writer opens the readers' string, whose
 * mode= asks no more than SQLITE_OPEN_READONLY allows. 0; -1 when out of memory or, with
 * *refused (malloc'd) saying why, when the database's URI is refused. */
static int plan_paths(pasyn_pool *pool, const char *database, char **refused)
{
    uri_plan plan;
    char *why = NULL;
    int rc = uri_plan_make(database, &plan, &why);
    if (rc == PASYN_EPROGRAMMING) {
        *refused = why ? why : strdup("connect: the database's URI is refused");
        return *refused ? 0 : -1;
    }
    free(why);
    if (rc == 0 && !plan.memory && pool->opts.image) {
        uri_plan_free(&plan);
        *refused = strdup("connect: a database image is for a \":memory:\" database alone");
        return *refused ? 0 : -1;
    }
    if (rc == 0 && plan.memory) {
        pool->memfile = memfile_create(&pool->memfile_lock);
        pool->path = dup_or_null(pool->memfile);
        pool->reader_path = dup_or_null(pool->memfile);
        if (pool->memfile && write_image(pool) != 0) {
            free(pool->path);
            pool->path = NULL;
        }
    } else if (rc == 0) {
        pool->path = strdup(pool->opts.readonly ? plan.reader : plan.writer);
        pool->reader_path = strdup(plan.reader);
    }
    uri_plan_free(&plan);
    return pool->path && pool->reader_path ? 0 : -1;
}

/* Frees what pasyn_open made; the threads have ended. */
static void pool_destroy(pasyn_pool *pool)
{
    for (int i = 0; i < pool->readers.count; i++) {
        deque_destroy(&pool->readers.all[i].queue);
        deque_destroy(&pool->readers.all[i].pinned);
        pthread_cond_destroy(&pool->readers.all[i].cv);
    }
    free(pool->readers.all);
    deque_destroy(&pool->readers.injector);
    routes_free(&pool->routes);
    pthread_mutex_destroy(&pool->writer.mu);
    pthread_cond_destroy(&pool->writer.cv);
    pthread_mutex_destroy(&pool->life.mu);
    pthread_cond_destroy(&pool->life.changed);
    pthread_rwlock_destroy(&pool->life.intake);
    pthread_mutex_destroy(&pool->read_settings.mu);
    pthread_mutex_destroy(&pool->inliner.mu);
    temp_names_free(&pool->temp_names);
    fn_registry_free(&pool->functions);
    for (int i = 0; i < READ_SETTINGS; i++)
        free(pool->read_settings.sql[i]);
    if (pool->pragmas)
        for (char **p = pool->pragmas; *p; p++)
            free(*p);
    free(pool->pragmas);
    if (pool->setup.extensions)
        for (char **p = pool->setup.extensions; *p; p++)
            free(*p);
    free(pool->setup.extensions);
    free((char *)pool->opts.journal_mode);
    free((char *)pool->opts.synchronous);
    free(pool->path);
    free(pool->reader_path);
    pool_remove_memfile(pool); /* when the open failed before the writer started */
    free(pool);
}

static int copy_options(pasyn_pool *pool, const pasyn_options *opts)
{
    pool->opts = *opts;
    pool->opts.pragmas = NULL;
    pool->opts.journal_mode = dup_or_null(opts->journal_mode);
    pool->opts.synchronous = dup_or_null(opts->synchronous);
    if (pool->opts.readers < 0)
        pool->opts.readers = 0;
    size_t n = 0;
    while (opts->pragmas && opts->pragmas[n])
        n++;
    pool->pragmas = calloc(n + 1, sizeof(char *));
    if (!pool->pragmas)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!(pool->pragmas[i] = strdup(opts->pragmas[i])))
            return -1;
    pool->opts.extensions = NULL;
    for (n = 0; opts->extensions && opts->extensions[n]; n += 2)
        ;
    if (n == 0)
        return 0;
    pool->setup.extensions = calloc(n + 1, sizeof(char *));
    if (!pool->setup.extensions)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *v = opts->extensions[i] ? opts->extensions[i] : "";
        if (!(pool->setup.extensions[i] = strdup(v)))
            return -1;
    }
    return 0;
}

void pool_remove_memfile(pasyn_pool *pool)
{
    if (pool->memfile) {
        memfile_remove(pool->memfile, pool->memfile_lock);
        free(pool->memfile);
        pool->memfile = NULL;
    }
}

pasyn_pool *pasyn_open(const char *database, const pasyn_options *opts, pasyn_hub *hub,
                       pasyn_task *open_task, int sync)
{
    pasyn_options defaults;
    if (!opts) {
        pasyn_options_init(&defaults);
        opts = &defaults;
    }
    pasyn_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->hub = hub;
    pool->writer.queue.next = pool->writer.queue.prev = &pool->writer.queue;
    pool->batch.gap_ns = SPIN_NS / 4; /* until batches have shown how writes arrive */
    pthread_mutex_init(&pool->writer.mu, NULL);
    pthread_cond_init(&pool->writer.cv, NULL);
    pthread_mutex_init(&pool->life.mu, NULL);
    pthread_cond_init(&pool->life.changed, NULL);
    pthread_rwlock_init(&pool->life.intake, NULL);
    pthread_mutex_init(&pool->read_settings.mu, NULL);
    pthread_mutex_init(&pool->temp_names.mu, NULL);
    fn_registry_init(&pool->functions, hub);
    pthread_mutex_init(&pool->routes.mu, NULL);
    pthread_mutex_init(&pool->routes.classifier_mu, NULL);
    pthread_mutex_init(&pool->inliner.mu, NULL);
    deque_init(&pool->readers.injector);
    pool->routes.lru.next = pool->routes.lru.prev = &pool->routes.lru;
    pool->routes.nbuckets = 1024;
    pool->routes.buckets = calloc(pool->routes.nbuckets, sizeof *pool->routes.buckets);
    int failed = copy_options(pool, opts) != 0 || !pool->routes.buckets;
    char *refused = NULL;
    if (!failed)
        failed = plan_paths(pool, database, &refused) != 0;
    pool->opts.image = NULL; /* written (or refused) by now: not the pool's to keep */
    pool->opts.image_len = 0;
    pool->readers.count = pool->opts.readers;
    pool->readers.all = calloc(pool->readers.count ? (size_t)pool->readers.count : 1,
                               sizeof *pool->readers.all);
    if (failed || !pool->readers.all) {
        free(refused);
        pool->readers.count = 0;
        pool_destroy(pool);
        return NULL;
    }
    for (int i = 0; i < pool->readers.count; i++) {
        reader *r = &pool->readers.all[i];
        r->pool = pool;
        r->index = i;
        deque_init(&r->queue);
        deque_init(&r->pinned);
        pthread_cond_init(&r->cv, NULL);
    }
    open_task->hub = hub;
    open_task->notify = sync ? NOTIFY_SYNC : NOTIFY_HUB;
    pool->life.open_task = open_task;
    if (refused) { /* a failed open, without threads: the task says why */
        task_fail(open_task, PASYN_EPROGRAMMING, 0, 0, refused);
        free(refused);
        atomic_store(&pool->life.state, PASYN_POOL_CLOSED);
        task_complete(open_task);
        return pool;
    }

    /* Named, so that a thread listing (top -H, /proc/<pid>/task/<tid>/comm, a debugger) tells
     * the pool's threads from the host's. */
    int ok = 1;
    for (int i = 0; i < pool->readers.count && ok; i++) {
        reader *r = &pool->readers.all[i];
        ok = pthread_create(&r->thread, NULL, reader_main, r) == 0;
        r->started = ok;
        if (ok)
            pthread_setname_np(r->thread, "pasyn-reader");
    }
    if (ok)
        ok = pthread_create(&pool->writer.thread, NULL, writer_main, pool) == 0;
    pool->writer.started = ok;
    if (ok)
        pthread_setname_np(pool->writer.thread, "pasyn-writer");
    if (!ok) {
        pthread_mutex_lock(&pool->life.mu);
        pool->life.writer_opened = -1; /* the readers started end at once */
        pthread_cond_broadcast(&pool->life.changed);
        pthread_mutex_unlock(&pool->life.mu);
        readers_join(pool);
        pool_destroy(pool);
        return NULL;
    }
    return pool;
}

/* ---- close ------------------------------------------------------------------------- */

int pasyn_close(pasyn_pool *pool, pasyn_task *close_task, int sync)
{
    lifecycle *life = &pool->life;
    pthread_rwlock_wrlock(&life->intake); /* no submit is half-way: each queued before this */
    pthread_mutex_lock(&life->mu);
    int state = atomic_load(&life->state);
    /* A pool still opening may be closed too: the writer queues the close task once it is open. */
    int refused = state >= PASYN_POOL_CLOSING || life->close_task != NULL;
    if (!refused) {
        close_task->kind = PASYN_CLOSE;
        close_task->hub = pool->hub;
        close_task->notify = sync ? NOTIFY_SYNC : NOTIFY_HUB;
        atomic_store_explicit(&close_task->done, 0, memory_order_relaxed);
        life->close_task = close_task;
        if (state == PASYN_POOL_OPEN) {
            atomic_store(&life->state, PASYN_POOL_CLOSING);
            writer_push(pool, close_task); /* behind every task submitted before */
        }
    }
    pthread_mutex_unlock(&life->mu);
    pthread_rwlock_unlock(&life->intake);
    return refused ? PASYN_ECLOSED : 0;
}

void pasyn_pool_free(pasyn_pool *pool)
{
    if (!pool)
        return;
    if (pool->writer.started)
        pthread_join(pool->writer.thread, NULL);
    backup_free_orphans(pool); /* no thread of the pool runs a step of them now */
    pool_destroy(pool);
}

/* ---- state and counters ------------------------------------------------------------- */

const char *pasyn_pool_path(const pasyn_pool *pool)
{
    return pool->path;
}

int pasyn_pool_state(const pasyn_pool *pool)
{
    return atomic_load(&((pasyn_pool *)pool)->life.state);
}

int pasyn_closed(const pasyn_pool *pool)
{
    return pasyn_pool_state(pool) == PASYN_POOL_CLOSED;
}

uint64_t pasyn_txn_owner(const pasyn_pool *pool)
{
    return atomic_load(&((pasyn_pool *)pool)->writer.txn_owner);
}

int64_t pasyn_total_changes(const pasyn_pool *pool)
{
    return atomic_load(&((pasyn_pool *)pool)->writer.total_changes);
}

int pasyn_stats(const pasyn_pool *cpool, pasyn_worker_stats *out, int n, uint64_t *injector)
{
    pasyn_pool *pool = (pasyn_pool *)cpool;
    if (n > 0) {
        pthread_mutex_lock(&pool->writer.mu);
        out[0] = (pasyn_worker_stats){
            .executed = atomic_load(&pool->writer.executed),
            .batches = atomic_load(&pool->batch.count),
            .batched = atomic_load(&pool->batch.statements),
            .batch_max = atomic_load(&pool->batch.most),
            .queued = pool->writer.queued,
        };
        pthread_mutex_unlock(&pool->writer.mu);
    }
    for (int i = 0; i < pool->readers.count && i + 1 < n; i++) {
        reader *r = &pool->readers.all[i];
        out[i + 1] = (pasyn_worker_stats){
            .executed = atomic_load(&r->executed),
            .stolen = atomic_load(&r->stolen),
            .queued = atomic_load(&r->queue.size) + atomic_load(&r->pinned.size),
            .streaming = atomic_load(&r->streaming),
        };
    }
    if (injector)
        *injector = atomic_load(&pool->readers.injector.size);
    return pool->readers.count + 1;
}

int pasyn_inline_counts(const pasyn_pool *cpool, pasyn_inline_stats *out)
{
    pasyn_pool *pool = (pasyn_pool *)cpool;
    inliner *in = &pool->inliner;
    *out = (pasyn_inline_stats){
        .executed = atomic_load(&in->runs),
        .overruns = atomic_load(&in->overruns),
        .busy = atomic_load(&in->busy),
        .failed = atomic_load(&in->failed),
    };
    return in->used;
}
