/*
 * functions.c - SQL functions, aggregates and collations that the host defines and runs on its
 * own thread. A definition is logged in the pool's registry; each connection applies what it has
 * not yet before its next statement (functions_sync). When SQLite calls one on a worker, the
 * worker encodes the arguments as a task's row is encoded, queues a call on the hub (the list
 * beside the completions, signalled through the same descriptor) and waits on the call's own
 * condition variable until the host answers; then it hands SQLite the result. The worker never
 * runs host code: it only waits.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pool.h"

/* The longest function name SQLite takes (sqlite3CreateFunc: 255 bytes). */
#define NAME_MAX_BYTES 255

struct pasyn_call {
    pasyn_call *next;
    const fn_registry *fs; /* whose function it is (pasyn_pool_refuse_calls) */
    int op;                /* enum pasyn_call_op */
    uint64_t id;
    uint64_t context; /* aggregates */
    int first;        /* the group's first step */
    int argc;
    buf args;                       /* encode_value, one after the other */
    unsigned char inline_args[128]; /* (call_init clears what is around it) */

    /* the answer, from here to the end, under hub->mu */
    int answered;
    _Atomic int answered_hint; /* the same, watched without the lock */
    pthread_cond_t cv;
    int failed;
    pasyn_value result; /* its bytes in `out` */
    buf out;            /* the result's bytes, or the error message (NUL-terminated) */
};

/* What a connection's SQLite holds for one function: freed by SQLite (xDestroy) when the
 * function is replaced or removed, or the connection closes. */
typedef struct fn_entry {
    fn_registry *fs;
    uint64_t id;
    int refuse; /* on the classifier: its statements never run, and it must not wait */
} fn_entry;

/* An aggregate's group, in SQLite's aggregate context. */
typedef struct agg_state {
    uint64_t context; /* 0 until the first step */
    int failed;       /* a step failed: the host has forgotten the group */
} agg_state;

void fn_registry_init(fn_registry *fs, pasyn_hub *hub)
{
    memset(fs, 0, sizeof *fs);
    pthread_mutex_init(&fs->mu, NULL);
    fs->hub = hub;
}

void fn_registry_free(fn_registry *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        free(fs->log[i].name);
    free(fs->log);
    fs->log = NULL;
    fs->n = fs->cap = 0;
    pthread_mutex_destroy(&fs->mu);
}

/* Whether definition `a` is the one a new definition of name, nargs and flags replaces: SQLite
 * keeps a scalar function and an aggregate of one name and nargs in one slot; collations have
 * their own. */
static int same_kind(const fn_spec *a, const char *name, int nargs, int flags)
{
    int collation = (flags & PASYN_FUNCTION_COLLATION) != 0;
    if (((a->flags & PASYN_FUNCTION_COLLATION) != 0) != collation ||
        sqlite3_stricmp(a->name, name) != 0)
        return 0;
    return collation || a->nargs == nargs;
}

int pasyn_create_function(pasyn_pool *pool, const char *name, int nargs, int flags, uint64_t id,
                          uint64_t *replaced)
{
    if (replaced)
        *replaced = 0;
    if (!name || !*name || strlen(name) > NAME_MAX_BYTES ||
        (!(flags & PASYN_FUNCTION_COLLATION) && (nargs < -1 || nargs > 127)))
        return PASYN_EPROGRAMMING;
    if (flags & PASYN_FUNCTION_COLLATION)
        nargs = 2;
    int state = pasyn_pool_state(pool);
    if (state != PASYN_POOL_OPEN && state != PASYN_POOL_OPENING)
        return PASYN_ECLOSED;
    fn_registry *fs = &pool->functions;
    char *copy = strdup(name);
    if (!copy)
        return PASYN_ENOMEM;
    pthread_mutex_lock(&fs->mu);
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 8;
        fn_spec *log = realloc(fs->log, cap * sizeof *log);
        if (!log) {
            pthread_mutex_unlock(&fs->mu);
            free(copy);
            return PASYN_ENOMEM;
        }
        fs->log = log;
        fs->cap = cap;
    }
    for (size_t i = fs->n; i-- > 0;)
        if (same_kind(&fs->log[i], name, nargs, flags)) {
            if (replaced)
                *replaced = fs->log[i].id;
            break;
        }
    fs->log[fs->n] = (fn_spec){copy, nargs, flags, id};
    fs->n++;
    atomic_store_explicit(&fs->gen, fs->n, memory_order_release);
    pthread_mutex_unlock(&fs->mu);
    return 0;
}

/* ---- a call, on the worker ------------------------------------------------------------ */

/* Makes the call's answer the error `message`. */
static void fill_failure(pasyn_call *c, const char *message)
{
    c->failed = 1;
    c->out.len = 0;
    if (!message)
        message = "SQL function failed";
    if (buf_put(&c->out, message, strlen(message) + 1) != 0)
        c->out.len = 0;
}

static const char host_gone[] = "the SQL function's host is gone";

/* Queues the call on the hub and waits for its answer; a host that refuses calls (gone) fails
 * it at once. */
static void call_host(fn_registry *fs, pasyn_call *c)
{
    pasyn_hub *hub = fs->hub;
    pthread_cond_init(&c->cv, NULL);
    pthread_mutex_lock(&hub->mu);
    if (fs->refused) {
        c->answered = 1;
        fill_failure(c, host_gone);
    } else {
        c->next = NULL;
        if (hub->calls_tail)
            hub->calls_tail->next = c;
        else
            hub->calls = c;
        hub->calls_tail = c;
        atomic_store(&hub->calling, 1);
        atomic_store(&hub->pending, 1); /* before `watching`: see hub_complete */
        hub_signal_locked(hub);
        pthread_cond_broadcast(&hub->sync_cv); /* a blocked pasyn_task_wait_calls */
    }
    pthread_mutex_unlock(&hub->mu);
    /* The host on another core often answers within microseconds: watch a while first, when
     * a core is spare (cpu_core_spare: else the watch takes the core the host needs). */
    uint64_t deadline = cpu_core_spare() ? now_ns() + SPIN_NS : 0;
    while (!atomic_load_explicit(&c->answered_hint, memory_order_acquire) && now_ns() < deadline)
        for (int i = 0; i < 64; i++)
            cpu_relax();
    /* Under the lock even when the hint is set: the host is done with the call only once it
     * has let go of the lock after answering. */
    pthread_mutex_lock(&hub->mu);
    while (!c->answered)
        pthread_cond_wait(&c->cv, &hub->mu);
    pthread_mutex_unlock(&hub->mu);
    pthread_cond_destroy(&c->cv);
}

static void call_init(pasyn_call *c, fn_entry *e, int op)
{
    memset(c, 0, offsetof(pasyn_call, inline_args));
    memset(&c->answered, 0, sizeof *c - offsetof(pasyn_call, answered));
    c->fs = e->fs;
    c->op = op;
    c->id = e->id;
    c->args = (buf){c->inline_args, 0, sizeof c->inline_args, 1};
    c->out = (buf){NULL, 0, 0, 0};
}

static void call_free(pasyn_call *c)
{
    buf_free(&c->args);
    buf_free(&c->out);
}

/* Encodes SQLite's arguments; 0, or PASYN_ENOMEM. */
static int encode_args(pasyn_call *c, int argc, sqlite3_value **argv)
{
    c->argc = argc;
    for (int i = 0; i < argc; i++) {
        pasyn_value v;
        memset(&v, 0, sizeof v);
        switch (sqlite3_value_type(argv[i])) {
        case SQLITE_INTEGER:
            v.type = PASYN_INT;
            v.i = sqlite3_value_int64(argv[i]);
            break;
        case SQLITE_FLOAT:
            v.type = PASYN_FLOAT;
            v.d = sqlite3_value_double(argv[i]);
            break;
        case SQLITE_TEXT:
            v.type = PASYN_TEXT;
            v.p = (const char *)sqlite3_value_text(argv[i]);
            v.n = (size_t)sqlite3_value_bytes(argv[i]);
            break;
        case SQLITE_BLOB:
            v.type = PASYN_BLOB;
            v.p = sqlite3_value_blob(argv[i]);
            v.n = (size_t)sqlite3_value_bytes(argv[i]);
            break;
        default:
            v.type = PASYN_NULL;
            break;
        }
        if ((v.type == PASYN_TEXT || v.type == PASYN_BLOB) && !v.p && v.n)
            return PASYN_ENOMEM;
        if (encode_value(&c->args, &v) != 0)
            return PASYN_ENOMEM;
    }
    return 0;
}

/* Hands SQLite the call's answer. */
static void give_result(sqlite3_context *ctx, pasyn_call *c)
{
    if (c->failed) {
        sqlite3_result_error(ctx, c->out.len ? (const char *)c->out.p : "SQL function failed", -1);
        return;
    }
    const pasyn_value *v = &c->result;
    switch (v->type) {
    case PASYN_INT:
        sqlite3_result_int64(ctx, v->i);
        break;
    case PASYN_FLOAT:
        sqlite3_result_double(ctx, v->d);
        break;
    case PASYN_TEXT:
        sqlite3_result_text64(ctx, v->n ? (const char *)c->out.p : "", v->n, SQLITE_TRANSIENT,
                              SQLITE_UTF8);
        break;
    case PASYN_BLOB:
        sqlite3_result_blob64(ctx, v->n ? c->out.p : (const void *)"", v->n, SQLITE_TRANSIENT);
        break;
    default:
        sqlite3_result_null(ctx);
        break;
    }
}

static const char refused_here[] = "SQL functions defined by the host do not run on this "
                                   "connection";

/* xFunc and xStep: one call per row. */
static void on_call(sqlite3_context *ctx, int argc, sqlite3_value **argv, int op)
{
    fn_entry *e = sqlite3_user_data(ctx);
    if (e->refuse) {
        sqlite3_result_error(ctx, refused_here, -1);
        return;
    }
    agg_state *agg = NULL;
    if (op == PASYN_CALL_STEP) {
        agg = sqlite3_aggregate_context(ctx, sizeof *agg);
        if (!agg) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        if (agg->failed)
            return;
    }
    pasyn_call c;
    call_init(&c, e, op);
    if (encode_args(&c, argc, argv) != 0) {
        call_free(&c);
        sqlite3_result_error_nomem(ctx);
        return;
    }
    if (agg) {
        c.first = agg->context == 0;
        if (c.first)
            agg->context = atomic_fetch_add(&e->fs->hub->agg_context, 1) + 1;
        c.context = agg->context;
    }
    call_host(e->fs, &c);
    if (agg && c.failed)
        agg->failed = 1; /* the host forgot the group; its FINAL is not sent */
    if (op == PASYN_CALL_FUNCTION || c.failed)
        give_result(ctx, &c);
    call_free(&c);
}

static void on_function(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    on_call(ctx, argc, argv, PASYN_CALL_FUNCTION);
}

static void on_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    on_call(ctx, argc, argv, PASYN_CALL_STEP);
}

/* xFinal: also when the statement is reset or finalized before its end (SQLite releases a
 * group's context that way), so that the host forgets the group. */
static void on_final(sqlite3_context *ctx)
{
    fn_entry *e = sqlite3_user_data(ctx);
    if (e->refuse) {
        sqlite3_result_error(ctx, refused_here, -1);
        return;
    }
    agg_state *agg = sqlite3_aggregate_context(ctx, 0);
    if (agg && agg->failed)
        return;
    pasyn_call c;
    call_init(&c, e, PASYN_CALL_FINAL);
    c.context = agg ? agg->context : 0;
    call_host(e->fs, &c);
    give_result(ctx, &c);
    call_free(&c);
}

/* xCompare: an error, or a result that is no integer, counts as equal (0), as in Python's
 * sqlite3: SQLite gives a collation no way to fail the statement. */
static int on_compare(void *arg, int n1, const void *p1, int n2, const void *p2)
{
    fn_entry *e = arg;
    if (e->refuse)
        return 0;
    pasyn_call c;
    call_init(&c, e, PASYN_CALL_COMPARE);
    pasyn_value a = {PASYN_TEXT, 0, 0, p1, (size_t)n1}, b = {PASYN_TEXT, 0, 0, p2, (size_t)n2};
    int r = 0;
    c.argc = 2;
    if (encode_value(&c.args, &a) == 0 && encode_value(&c.args, &b) == 0) {
        call_host(e->fs, &c);
        if (!c.failed && c.result.type == PASYN_INT)
            r = c.result.i < 0 ? -1 : c.result.i > 0;
        else if (!c.failed && c.result.type == PASYN_FLOAT)
            r = c.result.d < 0 ? -1 : c.result.d > 0;
    }
    call_free(&c);
    return r;
}

static void entry_free(void *p)
{
    free(p);
}

/* Applies one definition to the connection: SQLite's code. */
static int apply(conn *c, const fn_spec *s)
{
    fn_entry *e = NULL;
    if (s->id) {
        e = malloc(sizeof *e);
        if (!e)
            return SQLITE_NOMEM;
        e->fs = c->functions;
        e->id = s->id;
        e->refuse = c->never_wait;
    }
    if (s->flags & PASYN_FUNCTION_COLLATION) {
        int rc = sqlite3_create_collation_v2(c->db, s->name, SQLITE_UTF8, e, e ? on_compare : NULL,
                                             e ? entry_free : NULL);
        if (rc != SQLITE_OK)
            free(e); /* unlike a function's, a collation's failed definition leaves it ours */
        return rc;
    }
    int flags = SQLITE_UTF8 | (s->flags & PASYN_FUNCTION_DETERMINISTIC ? SQLITE_DETERMINISTIC : 0);
    int agg = (s->flags & PASYN_FUNCTION_AGGREGATE) != 0;
    /* On failure SQLite calls xDestroy itself (c3ref/create_function: "if the function fails"). */
    return sqlite3_create_function_v2(c->db, s->name, s->nargs, flags, e,
                                      e && !agg ? on_function : NULL, e && agg ? on_step : NULL,
                                      e && agg ? on_final : NULL, e ? entry_free : NULL);
}

void functions_sync(conn *c)
{
    fn_registry *fs = c->functions;
    pthread_mutex_lock(&fs->mu);
    while (c->functions_seen < fs->n) {
        int rc = apply(c, &fs->log[c->functions_seen]);
        if (rc == SQLITE_BUSY || rc == SQLITE_NOMEM)
            break; /* a running statement uses the one replaced, or no memory: next time */
        c->functions_seen++;
    }
    pthread_mutex_unlock(&fs->mu);
}

/* ---- calls, on the host's side --------------------------------------------------------- */

pasyn_call *pasyn_hub_calls(pasyn_hub *hub)
{
    if (!atomic_load_explicit(&hub->calling, memory_order_acquire))
        return NULL;
    pthread_mutex_lock(&hub->mu);
    pasyn_call *list = hub->calls;
    hub->calls = hub->calls_tail = NULL;
    atomic_store(&hub->calling, 0);
    atomic_store_explicit(&hub->pending, hub->head != NULL, memory_order_relaxed);
    pthread_mutex_unlock(&hub->mu);
    return list;
}

pasyn_call *pasyn_call_next(const pasyn_call *c)
{
    return c->next;
}

int pasyn_call_op(const pasyn_call *c)
{
    return c->op;
}

uint64_t pasyn_call_id(const pasyn_call *c)
{
    return c->id;
}

uint64_t pasyn_call_context(const pasyn_call *c, int *first)
{
    if (first)
        *first = c->first;
    return c->context;
}

int pasyn_call_args(const pasyn_call *c, const unsigned char **at)
{
    *at = c->args.p;
    return c->argc;
}

/* Under hub->mu: hands the answer to the waiting worker. */
static void answer_locked(pasyn_call *c)
{
    c->answered = 1;
    atomic_store_explicit(&c->answered_hint, 1, memory_order_release);
    pthread_cond_signal(&c->cv);
}

void pasyn_call_return(pasyn_call *c, const pasyn_value *v)
{
    if (v) {
        c->result = *v;
        if ((v->type == PASYN_TEXT || v->type == PASYN_BLOB) && v->n) {
            if (buf_put(&c->out, v->p, v->n) != 0)
                fill_failure(c, "out of memory");
        }
        c->result.p = NULL;
    }
    pthread_mutex_t *mu = &c->fs->hub->mu;
    pthread_mutex_lock(mu);
    answer_locked(c);
    pthread_mutex_unlock(mu);
}

void pasyn_call_fail(pasyn_call *c, const char *message)
{
    fill_failure(c, message);
    pthread_mutex_t *mu = &c->fs->hub->mu;
    pthread_mutex_lock(mu);
    answer_locked(c);
    pthread_mutex_unlock(mu);
}

void hub_fail_calls_locked(pasyn_hub *hub, const fn_registry *fs, const char *message)
{
    pasyn_call **link = &hub->calls;
    hub->calls_tail = NULL;
    while (*link) {
        pasyn_call *c = *link;
        if (!fs || c->fs == fs) {
            *link = c->next;
            fill_failure(c, message);
            answer_locked(c);
        } else {
            hub->calls_tail = c;
            link = &c->next;
        }
    }
    atomic_store(&hub->calling, hub->calls != NULL);
    atomic_store(&hub->pending, hub->head != NULL || hub->calls != NULL);
}

void pasyn_pool_refuse_calls(pasyn_pool *pool)
{
    pasyn_hub *hub = pool->hub;
    pthread_mutex_lock(&hub->mu);
    pool->functions.refused = 1;
    hub_fail_calls_locked(hub, &pool->functions, host_gone);
    pthread_mutex_unlock(&hub->mu);
}

int pasyn_task_wait_calls(pasyn_task *t)
{
    pasyn_hub *hub = t->hub;
    /* A short watch first, when a core is spare (as pasyn_task_wait's) */
    uint64_t deadline = cpu_core_spare() ? now_ns() + SPIN_NS : 0;
    do {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&hub->calling, memory_order_acquire))
                return 0;
            if (atomic_load_explicit(&t->done, memory_order_acquire))
                return 1;
            cpu_relax();
        }
    } while (now_ns() < deadline);
    pthread_mutex_lock(&hub->mu);
    while (!hub->calls && !atomic_load_explicit(&t->done, memory_order_acquire))
        pthread_cond_wait(&hub->sync_cv, &hub->mu);
    int calls = hub->calls != NULL;
    pthread_mutex_unlock(&hub->mu);
    return !calls;
}
