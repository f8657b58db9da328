/*
 * stmt.c - running one statement on a connection: the prepared-statement cache (hash plus LRU)
 * that hands out a statement for a task's SQL, binding the task's parameters, and stepping rows
 * into the task's buffer (one contiguous encoding of types and values, task.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

/* ---- the statement cache ----------------------------------------------------------- */

uint32_t hash_sql(const char *s, size_t n)
{
    /* Eight bytes at a time (every statement's text is hashed twice on the submitting
     * thread: its route, then its cached statement), each word mixed in by a multiply and a
     * shift, as FNV-1a does a byte. */
    uint64_t h = 14695981039346656037u ^ n;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 1099511628211u;
        h ^= h >> 32;
    }
    for (; n > 0; s++, n--)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    h ^= h >> 29;
    return (uint32_t)h;
}

/* After the statement SQLite prepared, only white space, comments and ';' may remain. */
static int only_trivia(const char *p, const char *end)
{
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == ';') {
            p++;
        } else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (p + 1 < end && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p + 1 < end && !(p[0] == '*' && p[1] == '/'))
                p++;
            p = p + 1 < end ? p + 2 : end;
        } else {
            return 0;
        }
    }
    return 1;
}

static void hash_unlink(conn *c, cached_stmt *s)
{
    cached_stmt **at = &c->buckets[s->hash & (c->nbuckets - 1)];
    while (*at != s)
        at = &(*at)->hnext;
    *at = s->hnext;
}

/* The index of the statement's first named parameter (":a", "@a", "$a"), 0 when none. */
static int first_named(sqlite3_stmt *st)
{
    int n = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        if (name && name[0] != '?')
            return i;
    }
    return 0;
}

int stmt_cache_init(conn *c, int capacity)
{
    c->lru.next = c->lru.prev = &c->lru;
    c->capacity = capacity > 0 ? (size_t)capacity : 0;
    c->budget = c->capacity * PASYN_STMT_CACHE_SLOT_BYTES;
    c->bytes = 0;
    c->nbuckets = 16;
    while (c->nbuckets < 2 * c->capacity)
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    return c->buckets ? 0 : -1;
}

static void stmt_free(cached_stmt *s)
{
    sqlite3_finalize(s->stmt);
    columns_put(s->cols);
    free(s);
}

void stmt_cache_free(conn *c)
{
    if (c->held)
        stmt_free(c->held);
    c->held = NULL;
    lru_link *l = c->lru.next;
    while (l && l != &c->lru) {
        lru_link *next = l->next;
        stmt_free((cached_stmt *)l);
        l = next;
    }
    c->lru.next = c->lru.prev = &c->lru;
    free(c->buckets);
    c->buckets = NULL;
    c->count = 0;
    c->bytes = 0;
}

/* What a statement holds while it is cached: its block (the struct, its text and names), the
 * memory SQLite reports for the prepared statement (SQLITE_STMTSTATUS_MEMUSED: its program,
 * its copy of the text, ...; measured by walking the statement, so only when it was prepared
 * or re-prepared) and its column descriptions. */
static size_t stmt_charge(const cached_stmt *s)
{
    size_t block = sizeof *s + s->sql_len + 1;
    if (s->insert_table)
        block += strlen(s->insert_table) + strlen(s->insert_db) + 2;
    return block + (size_t)sqlite3_stmt_status(s->stmt, SQLITE_STMTSTATUS_MEMUSED, 0) +
           (s->cols ? s->cols->bytes : 0);
}

void stmt_fail_prepare(conn *c, pasyn_task *t, int rc)
{
    if (c->seen & SEEN_LOCKS_OUT)
        task_fail_programming(t, "a pool with readers cannot leave WAL mode or take "
                                 "locking_mode EXCLUSIVE while open: open it with the "
                                 "journal_mode option (or readers = 0)");
    else if (c->gave_up && (rc & 0xff) == SQLITE_ERROR)
        /* "no such table" (column, ...) from a schema that SQLite could not check was up to
         * date, since another process held the lock until the wait ended: it then keeps the
         * first error and drops the SQLITE_BUSY (prepare.c, schemaIsValid). The lock is the
         * true answer; the table may well exist. */
        task_fail(t, PASYN_ESQLITE, SQLITE_BUSY, SQLITE_BUSY, sqlite3_errstr(SQLITE_BUSY));
    else
        task_fail_sqlite(t, c->db, rc);
}

int conn_prepare(conn *c, const char *sql, int len, unsigned flags, sqlite3_stmt **st,
                 const char **tail)
{
    c->seen = 0;
    c->setting = 0;
    c->gave_up = 0;
    if (c->never_wait == NEVER_WAIT_RUN) /* the caller's thread: no schema load from disk */
        conn_refuse_loads(c, 1);
    int rc = sqlite3_prepare_v3(c->db, sql, len, flags, st, tail);
    if (c->never_wait == NEVER_WAIT_RUN)
        conn_refuse_loads(c, 0);
    if (rc == SQLITE_OK && (c->seen & SEEN_BUSY_PRAGMA) && !c->never_wait) {
        /* PRAGMA busy_timeout reads, or sets, the timeout of SQLite's own busy handler when it
         * is prepared (pragma.html#pragma_busy_timeout), and ours reads as 0: prepared again
         * with SQLite's in place, it answers the pool's busy_timeout, and a new one it sets is
         * the pool's from then on. Not on the classifier, whose statements never run (and
         * whose thread must not wait under SQLite's handler). */
        sqlite3_finalize(*st);
        *st = NULL;
        conn_busy_pragma_enter(c);
        c->seen = 0;
        c->setting = 0;
        rc = sqlite3_prepare_v3(c->db, sql, len, flags, st, tail);
        conn_busy_pragma_leave(c);
    }
    return rc;
}

/* Takes a statement out of the cache, for its caller to run and give back. */
static cached_stmt *cache_take(conn *c, cached_stmt *s)
{
    hash_unlink(c, s);
    lru_unlink(&s->lru);
    c->count--;
    c->bytes -= s->charge;
    return s;
}

cached_stmt *stmt_acquire(conn *c, pasyn_task *t)
{
    functions_check(c); /* the host's SQL functions defined since its last statement */
    cached_stmt *held = c->held;
    if (held) {
        c->held = NULL;
        if (held->sql_len == t->sql_len && memcmp(held->sql, t->sql, t->sql_len) == 0)
            return held;
        stmt_release(c, held);
    }
    /* The statement run last first: a caller that runs one text over and over is spared the
     * hash. (Only cached statements are in the recency list, each with its text.) */
    if (c->lru.next != &c->lru) {
        cached_stmt *s = (cached_stmt *)c->lru.next;
        if (s->sql_len == t->sql_len && memcmp(s->sql, t->sql, t->sql_len) == 0)
            return cache_take(c, s);
    }
    /* A text too long to cache is not looked up either (hashing it would cost as much as
     * reading it). */
    int cacheable = c->capacity && t->sql_len <= PASYN_CACHE_SQL_MAX;
    uint32_t h = cacheable ? hash_sql(t->sql, t->sql_len) : 0;
    for (cached_stmt *s = cacheable ? c->buckets[h & (c->nbuckets - 1)] : NULL; s; s = s->hnext) {
        if (s->hash == h && s->sql_len == t->sql_len && memcmp(s->sql, t->sql, t->sql_len) == 0)
            return cache_take(c, s);
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = conn_prepare(c, t->sql, (int)t->sql_len, cacheable ? SQLITE_PREPARE_PERSISTENT : 0,
                          &st, &tail);
    if (rc != SQLITE_OK) {
        stmt_fail_prepare(c, t, rc);
        return NULL;
    }
    if (!tail)
        tail = t->sql + t->sql_len;
    if (!only_trivia(tail, t->sql + t->sql_len)) {
        sqlite3_finalize(st);
        task_fail_programming(t, "execute takes one statement, and this SQL holds more than "
                                 "one (use executescript)");
        return NULL;
    }
    if (!st)
        return NULL; /* nothing but white space and comments */
    /* The SQL, then for a top-level INSERT the names of its table and database. */
    size_t names_len = c->seen & (SEEN_INSERT | SEEN_SAVEPOINT) ? c->insert_names.len : 0;
    size_t sql_len = cacheable ? t->sql_len : 0; /* an uncached one needs no key */
    cached_stmt *s = malloc(sizeof *s + sql_len + 1 + names_len);
    if (!s) {
        sqlite3_finalize(st);
        task_fail_nomem(t);
        return NULL;
    }
    s->stmt = st;
    s->cols = NULL;
    s->prepares = 0;
    s->run_ns = 0;
    s->low_ns = 0;
    s->kind = stmt_kind_of(c, st);
    s->classified_at = 0;
    s->busy_pragma = (c->seen & SEEN_BUSY_PRAGMA) != 0;
    s->first_named = first_named(st);
    s->setting = c->setting;
    s->changes_schema = (c->seen & SEEN_SCHEMA) != 0;
    s->hash = h;
    s->uncached = !cacheable;
    s->bound_bytes = 0;
    s->sql_len = sql_len;
    memcpy(s->sql, t->sql, sql_len);
    s->sql[sql_len] = '\0';
    s->insert_table = s->insert_db = s->sp_name = NULL;
    s->savepoint = SAVEPOINT_NONE;
    if (names_len) {
        char *names = memcpy(s->sql + sql_len + 1, c->insert_names.p, names_len);
        if (c->seen & SEEN_SAVEPOINT) {
            s->savepoint = c->savepoint;
            s->sp_name = names;
        } else {
            s->insert_table = names;
            s->insert_db = names + strlen(names) + 1;
        }
    }
    s->charge = cacheable ? stmt_charge(s) : 0;
    return s;
}

int stmt_kind_now(conn *c, cached_stmt *s)
{
    int prepares = sqlite3_stmt_status(s->stmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    if (prepares != s->classified_at) {
        s->kind = stmt_kind_of(c, s->stmt);
        s->classified_at = prepares;
        if (!s->uncached) /* SQLite's memory for the new program */
            s->charge = stmt_charge(s);
    }
    return s->kind;
}

void stmt_release(conn *c, cached_stmt *s)
{
    sqlite3_reset(s->stmt);
    /* Only text and blobs need clearing: one bound in place points into its task, which may
     * be freed next, and a copy holds memory. A number left bound is harmless: every run binds
     * every parameter again before it steps (bind_reading). */
    if (s->bound_bytes)
        sqlite3_clear_bindings(s->stmt);
    s->bound_bytes = 0;
    if (s->uncached || s->charge > c->budget / 4) {
        stmt_free(s);
        return;
    }
    size_t b = s->hash & (c->nbuckets - 1);
    s->hnext = c->buckets[b];
    c->buckets[b] = s;
    lru_push_front(&c->lru, &s->lru);
    c->count++;
    c->bytes += s->charge;
    while (c->count > c->capacity || c->bytes > c->budget) {
        cached_stmt *old = (cached_stmt *)c->lru.prev;
        hash_unlink(c, old);
        lru_unlink(&old->lru);
        c->count--;
        c->bytes -= old->charge;
        stmt_free(old);
    }
}

void stmt_hold(conn *c, cached_stmt *s)
{
    if (c->held)
        stmt_release(c, c->held);
    c->held = NULL;
    if (s->uncached) /* it has no text to be found by: finalized */
        stmt_release(c, s);
    else
        c->held = s;
}

/* ---- binding ------------------------------------------------------------------------ */

/* One parameter of the task's buffer. */
typedef struct param {
    const char *name; /* NULL: positional */
    size_t namelen;
    pasyn_value v;
} param;

static const unsigned char *next_param(const unsigned char *at, param *p)
{
    uint32_t n32;
    memcpy(&n32, at, 4);
    at += 4;
    if (n32 == UINT32_MAX) {
        p->name = NULL;
        p->namelen = 0;
    } else {
        p->name = (const char *)at;
        p->namelen = n32;
        at += n32;
    }
    return pasyn_row_value(at, &p->v);
}

/* Text and blobs are copied by SQLite (SQLITE_TRANSIENT), or on a connection whose statements
 * are given back (stmt_release clears their bindings) before their task can be freed, read in
 * place from the task's buffer (SQLITE_STATIC, c3ref/bind_blob.html). */
static int bind_one(const conn *c, cached_stmt *s, int i, const pasyn_value *v)
{
    sqlite3_stmt *st = s->stmt;
    sqlite3_destructor_type keep = c->bind_in_place ? SQLITE_STATIC : SQLITE_TRANSIENT;
    if (v->type == PASYN_TEXT || v->type == PASYN_BLOB)
        s->bound_bytes = 1; /* stmt_release clears it */
    switch (v->type) {
    case PASYN_INT:
        return sqlite3_bind_int64(st, i, v->i);
    case PASYN_FLOAT:
        return sqlite3_bind_double(st, i, v->d);
    case PASYN_TEXT:
        return sqlite3_bind_text64(st, i, v->p, v->n, keep, SQLITE_UTF8);
    case PASYN_BLOB:
        return sqlite3_bind_blob64(st, i, v->p, v->n, keep);
    default:
        return sqlite3_bind_null(st, i);
    }
}

/* Values given by position (an array) bind only to nameless placeholders ('?' and '?NNN'): a
 * ":a", "@a" or "$a" given the first value of an array would take it silently. Python's
 * sqlite3 refuses this since 3.14 (ProgrammingError "Binding 1 ('a') is a named parameter, but
 * you supplied a sequence ..."). 0, or fills the task's error. */
static int check_nameless(const cached_stmt *s, pasyn_task *t)
{
    if (!s->first_named)
        return 0;
    task_fail_programming(t,
                          "parameter %s is named, but the parameters were given as an array "
                          "(give a table of names)",
                          sqlite3_bind_parameter_name(s->stmt, s->first_named));
    return -1;
}

/* Whether a reading, [begin, end) of a task's params, gives its values by name; *count: how
 * many it gives. */
static int reading_named(const unsigned char *begin, const unsigned char *end, int *count)
{
    param p;
    int named = 0;
    *count = 0;
    for (const unsigned char *at = begin; at < end; ++*count) {
        at = next_param(at, &p);
        named |= p.name != NULL;
    }
    return named;
}

/* Where the reading that starts at `at` ends: at `end`, or at the mark of the next one. */
static const unsigned char *reading_end(const unsigned char *at, const unsigned char *end)
{
    param p;
    uint32_t n32;
    while (at < end && (memcpy(&n32, at, 4), n32 != READING_MARK))
        at = next_param(at, &p);
    return at;
}

/* Binds the values of one reading, [begin, end) of the task's params, to the statement. 0, or
 * fills the task's error. */
static int bind_reading(conn *c, cached_stmt *s, pasyn_task *t, const unsigned char *begin,
                        const unsigned char *end)
{
    sqlite3_stmt *st = s->stmt;
    int want = sqlite3_bind_parameter_count(st);
    param p;
    int given = 0, named = reading_named(begin, end, &given), rc = SQLITE_OK;
    if (!named) {
        if (check_nameless(s, t) != 0) /* Python names this one first, whatever the count */
            return -1;
        if (given != want) {
            task_fail_programming(t, "the statement takes %d parameter%s, %d %s supplied", want,
                                  want == 1 ? "" : "s", given, given == 1 ? "was" : "were");
            return -1;
        }
        const unsigned char *at = begin;
        for (int i = 1; i <= want && rc == SQLITE_OK; i++) {
            at = next_param(at, &p);
            rc = bind_one(c, s, i, &p.v);
        }
    } else {
        for (int i = 1; i <= want && rc == SQLITE_OK; i++) {
            const char *name = sqlite3_bind_parameter_name(st, i);
            if (!name || name[0] == '?') {
                task_fail_programming(t,
                                      "parameter %d is positional ('?'), but the parameters "
                                      "were given by name",
                                      i);
                return -1;
            }
            size_t len = strlen(name + 1);
            const unsigned char *at = begin;
            int found = 0;
            while (at < end && !found) {
                at = next_param(at, &p);
                found = p.name && p.namelen == len && memcmp(p.name, name + 1, len) == 0;
            }
            if (!found) {
                task_fail_programming(t, "no value was supplied for parameter %s", name);
                return -1;
            }
            rc = bind_one(c, s, i, &p.v);
        }
    }
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
        return -1;
    }
    return 0;
}

/* Whether the statement has the parameter `name` (without its ':', '@' or '$'). */
static int has_parameter(sqlite3_stmt *st, const char *name, size_t len)
{
    char full[256];
    if (len + 2 > sizeof full)
        return 0; /* only a reading's error is chosen by this */
    memcpy(full + 1, name, len);
    full[len + 1] = '\0';
    for (const char *prefix = ":@$"; *prefix; prefix++) {
        full[0] = *prefix;
        if (sqlite3_bind_parameter_index(st, full))
            return 1;
    }
    return 0;
}

/* Whether a reading was given the statement's way: by position to a statement with nameless
 * placeholders only, or by names that the statement all has. */
static int given_its_way(const cached_stmt *s, const unsigned char *begin, const unsigned char *end)
{
    int count;
    param p;
    if (!reading_named(begin, end, &count))
        return !s->first_named;
    for (const unsigned char *at = begin; at < end;) {
        at = next_param(at, &p);
        if (!p.name || !has_parameter(s->stmt, p.name, p.namelen))
            return 0;
    }
    return 1;
}

/* A failure taken off a task, to be put back. */
typedef struct failure {
    int err, code, extended;
    char *message;
} failure;

static void failure_take(failure *f, pasyn_task *t)
{
    *f = (failure){t->err, t->code, t->extended, t->message};
    t->message = NULL;
    t->err = PASYN_OK;
    t->code = t->extended = 0;
}

static void failure_put(failure *f, pasyn_task *t)
{
    free(t->message);
    t->err = f->err;
    t->code = f->code;
    t->extended = f->extended;
    t->message = f->message;
}

int stmt_bind(conn *c, cached_stmt *s, pasyn_task *t, size_t from, size_t to)
{
    const unsigned char *begin = t->params.p + from, *end = t->params.p + to;
    if (!t->alternatives)
        return bind_reading(c, s, t, begin, end);
    /* Several readings (pasyn_task_bind_alternative): the first that fits. Else the error of
     * the first one given the statement's way, or of the first. */
    int kept_fits_way = 0;
    failure kept = {0};
    for (const unsigned char *at = begin;; at += 4) {
        const unsigned char *stop = reading_end(at, end);
        if (bind_reading(c, s, t, at, stop) == 0) {
            free(kept.message);
            return 0;
        }
        if (t->err != PASYN_EPROGRAMMING) { /* out of memory, say: not a reading that misfits */
            free(kept.message);
            return -1;
        }
        int fits_way = given_its_way(s, at, stop);
        if (at == begin || (fits_way && !kept_fits_way)) {
            free(kept.message);
            failure_take(&kept, t);
            kept_fits_way = fits_way;
        }
        if (stop == end)
            break;
        at = stop;
    }
    failure_put(&kept, t);
    return -1;
}

/* ---- stepping ----------------------------------------------------------------------- */

/* Appends a type byte and the 8 bytes of a number (an int64_t or a double at v). 0, or
 * PASYN_ENOMEM. */
static int put_number(buf *b, unsigned char tag, const void *v)
{
    if (b->len + 9 > b->cap && buf_reserve(b, 9) != 0)
        return PASYN_ENOMEM;
    b->p[b->len] = tag;
    memcpy(b->p + b->len + 1, v, 8);
    b->len += 9;
    return 0;
}

/* Appends one column of the current row to the task's rows, in task.c's encoding (a type
 * byte, then 8 bytes for numbers or a 32-bit length and the bytes for text and blobs). The
 * column is looked up once, by sqlite3_column_value, and read through the value's own
 * accessors: sqlite3_column_type, _text and _bytes would each look it up again. The value is
 * "unprotected", which matters only to a connection that other threads may use at once; every
 * connection of the pool is opened SQLITE_OPEN_NOMUTEX and used by one thread at a time, where
 * protected and unprotected values are the same (c3ref/value.html). The text is read before
 * its length (c3ref/column_blob.html). 0, or PASYN_ENOMEM. */
static int put_column(buf *b, sqlite3_value *cv)
{
    size_t need;
    uint32_t n32;
    int64_t i;
    double d;
    const void *p;
    unsigned char tag;
    switch (sqlite3_value_type(cv)) {
    case SQLITE_INTEGER:
        i = sqlite3_value_int64(cv);
        return put_number(b, PASYN_INT, &i);
    case SQLITE_FLOAT:
        d = sqlite3_value_double(cv);
        return put_number(b, PASYN_FLOAT, &d);
    case SQLITE_TEXT:
        tag = PASYN_TEXT;
        p = sqlite3_value_text(cv);
        if (!p) /* it could not be given as UTF-8 text */
            return PASYN_ENOMEM;
        break;
    case SQLITE_BLOB:
        tag = PASYN_BLOB;
        p = sqlite3_value_blob(cv);
        break;
    default:
        if (b->len + 1 > b->cap && buf_reserve(b, 1) != 0)
            return PASYN_ENOMEM;
        b->p[b->len++] = PASYN_NULL;
        return 0;
    }
    need = (size_t)sqlite3_value_bytes(cv);
    if (need > UINT32_MAX || (b->len + 5 + need > b->cap && buf_reserve(b, 5 + need) != 0))
        return PASYN_ENOMEM;
    n32 = (uint32_t)need;
    b->p[b->len] = tag;
    memcpy(b->p + b->len + 1, &n32, 4);
    if (need)
        memcpy(b->p + b->len + 5, p, need);
    b->len += 5 + need;
    return 0;
}

int stmt_step_rows(conn *c, cached_stmt *s, pasyn_task *t, size_t chunk, int describe)
{
    sqlite3_stmt *st = s->stmt;
    int n = -1;
    c->seen = 0;    /* what the authorizer reports now comes from a re-prepare (stmt_kind_now) */
    c->traced = st; /* the statement the trace reports (hooks.c) */
    for (;;) {
        int rc = sqlite3_step(st);
        if (n < 0) {
            /* Only now: the first step may have re-prepared the statement after a schema
             * change, and SELECT * may have gained or lost columns. */
            n = sqlite3_column_count(st);
            t->ncols = n;
            if (describe && rc != SQLITE_ROW && rc != SQLITE_DONE)
                describe = 0;
            if (describe && task_set_columns(t, s) != 0) {
                task_fail_nomem(t);
                return SQLITE_NOMEM;
            }
        }
        if (rc == SQLITE_DONE)
            return SQLITE_DONE;
        if (rc != SQLITE_ROW) {
            task_fail_sqlite(t, c->db, rc);
            return rc;
        }
        for (int i = 0; i < n; i++) {
            if (put_column(&t->rows, sqlite3_column_value(st, i)) != 0) {
                task_fail_nomem(t);
                return SQLITE_NOMEM;
            }
        }
        t->nrows++;
        if (chunk && t->rows.len >= chunk)
            return SQLITE_ROW;
    }
}
