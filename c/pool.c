/*
 * pool.c - a pool's life: options, opening (threads first, connections in them), routing a
 * submitted task to the writer or the readers, the route cache, statistics, and closing.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "internal.h"
#include "uri.h"

#define ROUTE_CACHE_MAX 4096

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
}

/* ---- route cache ------------------------------------------------------------------- */

static route_entry *route_find(route_cache *rc, uint32_t h, const char *sql, size_t len)
{
    for (route_entry *e = rc->buckets[h & (rc->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0)
            return e;
    return NULL;
}

int route_get(pasyn_pool *pool, const char *sql, size_t len, int *long_read, uint64_t *gen)
{
    route_cache *rc = &pool->routes;
    uint32_t h = hash_sql(sql, len);
    pthread_mutex_lock(&rc->mu);
    route_entry *e = route_find(rc, h, sql, len);
    int route = e ? e->route : ROUTE_UNKNOWN;
    *long_read = e && e->long_read;
    *gen = rc->gen;
    pthread_mutex_unlock(&rc->mu);
    return route;
}

void route_note_long(pasyn_pool *pool, const char *sql, size_t len, int long_read)
{
    route_cache *rc = &pool->routes;
    uint32_t h = hash_sql(sql, len);
    pthread_mutex_lock(&rc->mu);
    route_entry *e = route_find(rc, h, sql, len);
    if (e)
        e->long_read = long_read;
    pthread_mutex_unlock(&rc->mu);
}

static void routes_clear(route_cache *rc)
{
    for (size_t i = 0; i < rc->nbuckets; i++) {
        route_entry *e = rc->buckets[i];
        while (e) {
            route_entry *next = e->next;
            free(e);
            e = next;
        }
        rc->buckets[i] = NULL;
    }
    rc->count = 0;
}

void route_put(pasyn_pool *pool, const char *sql, size_t len, int route, uint64_t gen)
{
    route_cache *rc = &pool->routes;
    uint32_t h = hash_sql(sql, len);
    pthread_mutex_lock(&rc->mu);
    if (gen != ROUTE_ANY_GEN && gen != rc->gen) { /* learned before a schema change */
        pthread_mutex_unlock(&rc->mu);
        return;
    }
    route_entry *known = route_find(rc, h, sql, len);
    if (known) {
        known->route = route;
        pthread_mutex_unlock(&rc->mu);
        return;
    }
    route_entry **head = &rc->buckets[h & (rc->nbuckets - 1)];
    if (rc->count >= ROUTE_CACHE_MAX)
        routes_clear(rc); /* crude, but bounded; a hot statement is learned again at once */
    route_entry *e = malloc(sizeof *e + len);
    if (e) {
        e->hash = h;
        e->len = len;
        e->route = route;
        e->long_read = 0;
        memcpy(e->sql, sql, len);
        e->next = *head;
        *head = e;
        rc->count++;
    }
    pthread_mutex_unlock(&rc->mu);
}

/* Forgets every route: after a schema change a text may run elsewhere (a view that now calls
 * changes(), a name that now is a TEMP table's). The writer. */
void routes_forget(pasyn_pool *pool)
{
    pthread_mutex_lock(&pool->routes.mu);
    routes_clear(&pool->routes);
    pool->routes.gen++;
    pthread_mutex_unlock(&pool->routes.mu);
}

/* ---- the writer's TEMP names ------------------------------------------------------- */

int temp_names_has(temp_names *tn, const char *name)
{
    if (atomic_load_explicit(&tn->count, memory_order_acquire) == 0)
        return 0;
    int found = 0;
    pthread_mutex_lock(&tn->mu);
    for (size_t i = 0; i < tn->n && !found; i++)
        found = strcasecmp(tn->names[i], name) == 0; /* SQL names ignore ASCII case */
    pthread_mutex_unlock(&tn->mu);
    return found;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Appends a copy of `name` to the array *names of *n names (room for *cap). 1, or 0 when out
 * of memory. */
static int names_push(char ***names, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t more = *cap ? 2 * *cap : 8;
        char **grown = realloc(*names, more * sizeof **names);
        if (!grown)
            return 0;
        *names = grown;
        *cap = more;
    }
    char *copy = strdup(name);
    if (!copy)
        return 0;
    (*names)[(*n)++] = copy;
    return 1;
}

void temp_names_refresh(temp_names *tn, sqlite3 *writer_db, int keep)
{
    sqlite3_stmt *st = NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int ok = sqlite3_prepare_v2(writer_db, "SELECT name FROM temp.sqlite_schema WHERE type IN "
                                "('table', 'view')", -1, &st, NULL) == SQLITE_OK;
    while (ok && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (name)
            ok = names_push(&names, &n, &cap, name);
    }
    sqlite3_finalize(st);
    pthread_mutex_lock(&tn->mu); /* only the writer changes the names: reading them is safe */
    for (size_t i = 0; ok && keep && i < tn->n; i++) {
        int known = 0;
        for (size_t k = 0; k < n && !known; k++)
            known = strcasecmp(names[k], tn->names[i]) == 0;
        if (!known)
            ok = names_push(&names, &n, &cap, tn->names[i]);
    }
    if (!ok) { /* out of memory: keep the names known before */
        pthread_mutex_unlock(&tn->mu);
        names_free(names, n);
        return;
    }
    names_free(tn->names, tn->n);
    tn->names = names;
    tn->n = n;
    atomic_store_explicit(&tn->count, n, memory_order_release);
    pthread_mutex_unlock(&tn->mu);
}

void temp_names_free(temp_names *tn)
{
    names_free(tn->names, tn->n);
    pthread_mutex_destroy(&tn->mu);
}

/* ---- read settings ----------------------------------------------------------------- */

void settings_note(pasyn_pool *pool, int setting, const char *sql, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return; /* out of memory: the readers keep the setting they had */
    memcpy(copy, sql, len);
    copy[len] = '\0';
    pthread_mutex_lock(&pool->settings_mu);
    free(pool->settings[setting - 1]);
    pool->settings[setting - 1] = copy;
    atomic_fetch_add_explicit(&pool->settings_gen, 1, memory_order_release);
    pthread_mutex_unlock(&pool->settings_mu);
}

void settings_apply(pasyn_pool *pool, reader *r)
{
    pthread_mutex_lock(&pool->settings_mu);
    for (int i = 0; i < READ_SETTINGS; i++)
        if (pool->settings[i])
            conn_exec(&r->c, pool->settings[i]); /* it ran on the writer: it runs here */
    r->settings_gen = atomic_load_explicit(&pool->settings_gen, memory_order_relaxed);
    pthread_mutex_unlock(&pool->settings_mu);
}

/* ---- pragmas ----------------------------------------------------------------------- */

static int is_word(const char *s, int dots)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || (dots && *s == '.')))
            return 0;
    return 1;
}

static int is_number(const char *s)
{
    char *end;
    if (!s || !*s)
        return 0;
    strtod(s, &end);
    return *end == '\0';
}

/* Runs PRAGMA name = value; value is used as it is when it is a number or a word, and
 * quoted as a string otherwise. SQLite's (extended) code; *errmsg (malloc'd) on failure. */
static int apply_pragma(conn *c, const char *name, const char *value, char **errmsg)
{
    if (!is_word(name, 1)) {
        size_t n = strlen(name) + 64;
        if ((*errmsg = malloc(n)) != NULL)
            snprintf(*errmsg, n, "pragma name '%s' is not a name", name);
        return SQLITE_MISUSE;
    }
    char *sql = is_number(value) || is_word(value, 0)
                    ? sqlite3_mprintf("PRAGMA %s = %s", name, value)
                    : sqlite3_mprintf("PRAGMA %s = %Q", name, value);
    if (!sql)
        return SQLITE_NOMEM;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(c->db);
        const char *err = sqlite3_errmsg(c->db);
        size_t n = strlen(sql) + strlen(err) + 8;
        if ((*errmsg = malloc(n)) != NULL)
            snprintf(*errmsg, n, "%s: %s", sql, err);
    }
    sqlite3_free(sql);
    return rc;
}

int pool_apply_pragmas(pasyn_pool *pool, conn *c, int is_writer, char **errmsg)
{
    const pasyn_options *o = &pool->opts;
    int rc = SQLITE_OK;
    *errmsg = NULL;
    if (is_writer && !o->readonly && o->journal_mode)
        rc = apply_pragma(c, "journal_mode", o->journal_mode, errmsg);
    if (rc == SQLITE_OK && is_writer && !o->readonly)
        rc = apply_pragma(c, "journal_size_limit", "67108864", errmsg);
    if (rc == SQLITE_OK && !is_writer) /* the writer alone checkpoints */
        rc = apply_pragma(c, "wal_autocheckpoint", "0", errmsg);
    if (rc == SQLITE_OK && o->synchronous)
        rc = apply_pragma(c, "synchronous", o->synchronous, errmsg);
    if (rc == SQLITE_OK)
        rc = apply_pragma(c, "foreign_keys", o->foreign_keys ? "ON" : "OFF", errmsg);
    for (char **p = pool->pragma_copy; rc == SQLITE_OK && p && p[0] && p[1]; p += 2)
        rc = apply_pragma(c, p[0], p[1], errmsg);
    return rc;
}

/* ---- open -------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ":memory:" becomes a private WAL database on tmpfs, so that every connection of the pool
 * shares it (the memdb VFS has no WAL, shared cache fails with SQLITE_LOCKED). */
static char *make_memfile(void)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    if (!path)
        return NULL;
    snprintf(path, n, "%s/pasyn-memory-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        free(path);
        return NULL;
    }
    close(fd);
    return path;
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
    if (rc == 0 && plan.memory) {
        pool->memfile = make_memfile();
        pool->path = dup_or_null(pool->memfile);
        pool->reader_path = dup_or_null(pool->memfile);
    } else if (rc == 0) {
        pool->path = strdup(pool->opts.readonly ? plan.reader : plan.writer);
        pool->reader_path = strdup(plan.reader);
    }
    uri_plan_free(&plan);
    return pool->path && pool->reader_path ? 0 : -1;
}

static void pool_destroy(pasyn_pool *pool)
{
    for (int i = 0; i < pool->nreaders; i++) {
        deque_destroy(&pool->readers[i].q);
        deque_destroy(&pool->readers[i].pinned);
        pthread_cond_destroy(&pool->readers[i].cv);
    }
    free(pool->readers);
    deque_destroy(&pool->injector);
    routes_clear(&pool->routes);
    free(pool->routes.buckets);
    pthread_mutex_destroy(&pool->routes.mu);
    pthread_mutex_destroy(&pool->wmu);
    pthread_cond_destroy(&pool->wcv);
    pthread_cond_destroy(&pool->phase_cv);
    pthread_rwlock_destroy(&pool->intake);
    pthread_mutex_destroy(&pool->cmu);
    pthread_mutex_destroy(&pool->settings_mu);
    temp_names_free(&pool->temp_names);
    for (int i = 0; i < READ_SETTINGS; i++)
        free(pool->settings[i]);
    if (pool->pragma_copy)
        for (char **p = pool->pragma_copy; *p; p++)
            free(*p);
    free(pool->pragma_copy);
    free((char *)pool->opts.journal_mode);
    free((char *)pool->opts.synchronous);
    free(pool->path);
    free(pool->reader_path);
    free(pool->memfile);
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
    pool->pragma_copy = calloc(n + 1, sizeof(char *));
    if (!pool->pragma_copy)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!(pool->pragma_copy[i] = strdup(opts->pragmas[i])))
            return -1;
    return 0;
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
    pool->whead.next = pool->whead.prev = &pool->whead;
    pool->gap_ns = SPIN_NS / 4; /* until batches have shown how writes arrive */
    pthread_mutex_init(&pool->wmu, NULL);
    pthread_cond_init(&pool->wcv, NULL);
    pthread_cond_init(&pool->phase_cv, NULL);
    pthread_rwlock_init(&pool->intake, NULL);
    pthread_mutex_init(&pool->cmu, NULL);
    pthread_mutex_init(&pool->settings_mu, NULL);
    pthread_mutex_init(&pool->temp_names.mu, NULL);
    pthread_mutex_init(&pool->routes.mu, NULL);
    deque_init(&pool->injector);
    pool->routes.nbuckets = 1024;
    pool->routes.buckets = calloc(pool->routes.nbuckets, sizeof *pool->routes.buckets);
    int failed = copy_options(pool, opts) != 0 || !pool->routes.buckets;
    char *refused = NULL;
    if (!failed)
        failed = plan_paths(pool, database, &refused) != 0;
    pool->nreaders = pool->opts.readers;
    pool->readers = calloc(pool->nreaders ? (size_t)pool->nreaders : 1, sizeof *pool->readers);
    if (failed || !pool->readers) {
        free(refused);
        pool->nreaders = 0;
        pool_destroy(pool);
        return NULL;
    }
    for (int i = 0; i < pool->nreaders; i++) {
        reader *r = &pool->readers[i];
        r->pool = pool;
        r->index = i;
        deque_init(&r->q);
        deque_init(&r->pinned);
        pthread_cond_init(&r->cv, NULL);
    }
    open_task->hub = hub;
    open_task->notify = sync ? NOTIFY_SYNC : NOTIFY_HUB;
    pool->open_task = open_task;
    if (refused) { /* a failed open, without threads: the task says why */
        task_fail(open_task, PASYN_EPROGRAMMING, 0, 0, refused);
        free(refused);
        pool->phase = PHASE_FAILED;
        atomic_store(&pool->closed, 1);
        complete(open_task);
        return pool;
    }

    int ok = 1;
    for (int i = 0; i < pool->nreaders && ok; i++) {
        ok = pthread_create(&pool->readers[i].thread, NULL, reader_main, &pool->readers[i]) == 0;
        pool->readers[i].started = ok;
    }
    if (ok)
        ok = pthread_create(&pool->writer_thread, NULL, writer_main, pool) == 0;
    pool->writer_started = ok;
    if (!ok) {
        pthread_mutex_lock(&pool->wmu);
        pool->phase = PHASE_FAILED;
        pthread_cond_broadcast(&pool->phase_cv);
        pthread_mutex_unlock(&pool->wmu);
        for (int i = 0; i < pool->nreaders; i++)
            if (pool->readers[i].started)
                pthread_join(pool->readers[i].thread, NULL);
        pool_destroy(pool);
        return NULL;
    }
    return pool;
}

/* ---- submit and close --------------------------------------------------------------- */

/* Where a statement runs. SQL text seen for the first time is prepared on the classifier
 * connection here, on the submitting thread, so that every write goes straight to the
 * writer's queue and writes keep their submission order. What cannot be prepared there
 * (TEMP or attached objects, errors) goes to the writer, which knows or reports it. */
static int route_of(pasyn_pool *pool, pasyn_task *t)
{
    uint64_t gen;
    int route = route_get(pool, t->sql, t->sql_len, &t->long_read, &gen);
    if (route != ROUTE_UNKNOWN) {
        t->route_known = 1;
        return route;
    }
    pthread_mutex_lock(&pool->cmu);
    cached_stmt *s = conn_acquire(&pool->classifier, t);
    if (s) {
        route = s->klass == CLASS_READ ? ROUTE_READ : ROUTE_WRITE;
        conn_release(&pool->classifier, s); /* a cache of 0: finalized */
        route_put(pool, t->sql, t->sql_len, route, gen);
        t->route_known = 1;
    }
    pthread_mutex_unlock(&pool->cmu);
    task_reset_result(t); /* any error is the writer's to report */
    return route == ROUTE_READ ? ROUTE_READ : ROUTE_WRITE;
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
    t->notify = t->kind == PASYN_RELEASE || t->kind == PASYN_ABANDON ? NOTIFY_NONE
                : sync                                                ? NOTIFY_SYNC
                                                                      : NOTIFY_HUB;
    atomic_store_explicit(&t->done, 0, memory_order_relaxed);
    pthread_rwlock_rdlock(&pool->intake);
    if (atomic_load(&pool->closing) || pool->phase != PHASE_RUNNING) {
        pthread_rwlock_unlock(&pool->intake);
        task_fail(t, PASYN_ECLOSED, 0, 0, "the pool is closed");
        return PASYN_ECLOSED;
    }
    switch (t->kind) {
    case PASYN_EXEC:
        if (!pool->use_readers || (t->owner && t->owner == atomic_load(&pool->txn_owner)) ||
            route_of(pool, t) == ROUTE_WRITE)
            writer_push(pool, t);
        else
            readers_push(pool, t);
        break;
    case PASYN_FETCH:
    case PASYN_RELEASE:
        if ((t->stream >> 48) == 0 || (t->stream >> 48) > (uint64_t)pool->nreaders) {
            pthread_rwlock_unlock(&pool->intake);
            task_fail_programming(t, "no such stream");
            return PASYN_EPROGRAMMING;
        }
        readers_push(pool, t);
        break;
    case PASYN_MANY:
    case PASYN_SCRIPT:
    case PASYN_ABANDON:
        writer_push(pool, t);
        break;
    default:
        pthread_rwlock_unlock(&pool->intake);
        task_fail_programming(t, "task kind %d cannot be submitted", t->kind);
        return PASYN_EPROGRAMMING;
    }
    pthread_rwlock_unlock(&pool->intake);
    return 0;
}

int pasyn_close(pasyn_pool *pool, pasyn_task *close_task, int sync)
{
    pthread_rwlock_wrlock(&pool->intake);
    pthread_mutex_lock(&pool->wmu);
    /* A pool still opening may be closed too: the writer stops right after the open. */
    int refused = atomic_load(&pool->closing) || pool->phase == PHASE_FAILED;
    if (!refused) {
        close_task->hub = pool->hub;
        close_task->notify = sync ? NOTIFY_SYNC : NOTIFY_HUB;
        atomic_store_explicit(&close_task->done, 0, memory_order_relaxed);
        pool->close_task = close_task;
        atomic_store(&pool->closing, 1);
        pthread_cond_signal(&pool->wcv);
    }
    pthread_mutex_unlock(&pool->wmu);
    pthread_rwlock_unlock(&pool->intake);
    return refused ? PASYN_ECLOSED : 0;
}

void pasyn_pool_free(pasyn_pool *pool)
{
    if (!pool)
        return;
    if (pool->writer_started)
        pthread_join(pool->writer_thread, NULL);
    pool_destroy(pool);
}

/* ---- state -------------------------------------------------------------------------- */

int pasyn_interrupt(pasyn_pool *pool)
{
    /* Each worker's progress handler compares this count with its value when the running task
     * started (conn_arm): only statements running now stop, each through its own task. Not
     * sqlite3_interrupt(), whose flag stays set while any statement of the connection is open
     * (a half-read streamed cursor), failing that cursor's next chunk too. */
    if (atomic_load(&pool->closing) || pool->phase != PHASE_RUNNING)
        return PASYN_ECLOSED;
    atomic_fetch_add(&pool->interrupts, 1);
    return 0;
}

uint64_t pasyn_txn_owner(const pasyn_pool *pool)
{
    return atomic_load(&((pasyn_pool *)pool)->txn_owner);
}

int pasyn_closed(const pasyn_pool *pool)
{
    return atomic_load(&((pasyn_pool *)pool)->closed);
}

int64_t pasyn_total_changes(const pasyn_pool *pool)
{
    return atomic_load(&((pasyn_pool *)pool)->total_changes);
}

int pasyn_stats(const pasyn_pool *cpool, pasyn_worker_stats *out, int n, uint64_t *injector)
{
    pasyn_pool *pool = (pasyn_pool *)cpool;
    if (n > 0) {
        pthread_mutex_lock(&pool->wmu);
        out[0] = (pasyn_worker_stats){
            .executed = atomic_load(&pool->w_executed),
            .batches = atomic_load(&pool->w_batches),
            .batched = atomic_load(&pool->w_batched),
            .batch_max = atomic_load(&pool->w_batch_max),
            .queued = pool->wlen,
        };
        pthread_mutex_unlock(&pool->wmu);
    }
    for (int i = 0; i < pool->nreaders && i + 1 < n; i++) {
        reader *r = &pool->readers[i];
        out[i + 1] = (pasyn_worker_stats){
            .executed = atomic_load(&r->executed),
            .stolen = atomic_load(&r->stolen),
            .queued = atomic_load(&r->q.size) + atomic_load(&r->pinned.size),
            .streaming = atomic_load(&r->streaming),
        };
    }
    if (injector)
        *injector = atomic_load(&pool->injector.size);
    return pool->nreaders + 1;
}
