/*
 * conn.c - one SQLite connection as a worker uses it: opening, the prepared-statement cache
 * (hash plus LRU), what the authorizer tells about a statement (is it a read, a DML write, or
 * something else), binding a task's parameters, and stepping rows into the task's buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum seen_bits {
    SEEN_DML = 1,       /* INSERT/UPDATE/DELETE on a user table, at the top level */
    SEEN_NOT_READ = 2,  /* transaction control, savepoints, ATTACH/DETACH, PRAGMA, DDL, ... */
    SEEN_LOCAL = 4      /* touches objects only this connection has: TEMP or attached ones */
};

static int authorizer(void *arg, int action, const char *a, const char *b, const char *dbname,
                      const char *inner)
{
    conn *c = arg;
    (void)b;
    if (dbname && strcmp(dbname, "main") != 0)
        c->seen |= SEEN_LOCAL;
    switch (action) {
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        if (!inner && a && strncmp(a, "sqlite_", 7) != 0)
            c->seen |= SEEN_DML;
        break;
    case SQLITE_READ:
    case SQLITE_SELECT:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
        break;
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
        c->seen |= SEEN_LOCAL | SEEN_NOT_READ;
        break;
    default:
        c->seen |= SEEN_NOT_READ;
        break;
    }
    return SQLITE_OK;
}

int conn_open(conn *c, const char *path, int flags, int busy_ms, int cache_capacity,
              char **errmsg)
{
    memset(c, 0, sizeof *c);
    c->lru.next = c->lru.prev = &c->lru;
    c->capacity = cache_capacity > 0 ? (size_t)cache_capacity : 0;
    c->nbuckets = 16;
    while (c->nbuckets < 2 * c->capacity)
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        *errmsg = strdup("out of memory");
        return SQLITE_NOMEM;
    }
    int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, NULL);
    if (rc != SQLITE_OK) {
        *errmsg = strdup(c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        if (c->db)
            rc = sqlite3_extended_errcode(c->db);
        conn_close(c);
        return rc;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, busy_ms);
    sqlite3_set_authorizer(c->db, authorizer, c);
    return SQLITE_OK;
}

static void stmt_free(cached_stmt *s)
{
    sqlite3_finalize(s->stmt);
    columns_put(s->cols);
    free(s);
}

void conn_close(conn *c)
{
    lru_link *l = c->lru.next;
    while (l && l != &c->lru) {
        lru_link *next = l->next;
        stmt_free((cached_stmt *)l);
        l = next;
    }
    c->lru.next = c->lru.prev = &c->lru;
    free(c->buckets);
    c->buckets = NULL;
    if (c->db)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

int conn_exec(conn *c, const char *sql)
{
    return sqlite3_exec(c->db, sql, NULL, NULL, NULL);
}

uint32_t hash_sql(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
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

static void lru_unlink(lru_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void hash_unlink(conn *c, cached_stmt *s)
{
    cached_stmt **at = &c->buckets[s->hash & (c->nbuckets - 1)];
    while (*at != s)
        at = &(*at)->hnext;
    *at = s->hnext;
}

static int classify(conn *c, sqlite3_stmt *st)
{
    if (sqlite3_stmt_readonly(st) && !(c->seen & (SEEN_NOT_READ | SEEN_LOCAL)))
        return CLASS_READ;
    if ((c->seen & SEEN_DML) && !(c->seen & SEEN_NOT_READ))
        return CLASS_DML;
    return CLASS_OTHER;
}

cached_stmt *conn_acquire(conn *c, pasyn_task *t)
{
    uint32_t h = hash_sql(t->sql, t->sql_len);
    for (cached_stmt *s = c->buckets[h & (c->nbuckets - 1)]; s; s = s->hnext) {
        if (s->hash == h && s->sql_len == t->sql_len && memcmp(s->sql, t->sql, t->sql_len) == 0) {
            hash_unlink(c, s);
            lru_unlink(&s->lru);
            c->count--;
            return s;
        }
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    c->seen = 0;
    int rc = sqlite3_prepare_v3(c->db, t->sql, (int)t->sql_len,
                                c->capacity ? SQLITE_PREPARE_PERSISTENT : 0, &st, &tail);
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
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
    cached_stmt *s = malloc(sizeof *s + t->sql_len + 1);
    if (!s) {
        sqlite3_finalize(st);
        task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
        return NULL;
    }
    s->stmt = st;
    s->cols = NULL;
    s->prepares = 0;
    s->run_ns = 0;
    s->klass = classify(c, st);
    s->hash = h;
    s->sql_len = t->sql_len;
    memcpy(s->sql, t->sql, t->sql_len);
    s->sql[t->sql_len] = '\0';
    return s;
}

void conn_release(conn *c, cached_stmt *s)
{
    sqlite3_reset(s->stmt);
    sqlite3_clear_bindings(s->stmt);
    if (c->capacity == 0) {
        stmt_free(s);
        return;
    }
    size_t b = s->hash & (c->nbuckets - 1);
    s->hnext = c->buckets[b];
    c->buckets[b] = s;
    s->lru.next = c->lru.next;
    s->lru.prev = &c->lru;
    c->lru.next->prev = &s->lru;
    c->lru.next = &s->lru;
    if (++c->count > c->capacity) {
        cached_stmt *old = (cached_stmt *)c->lru.prev;
        hash_unlink(c, old);
        lru_unlink(&old->lru);
        c->count--;
        stmt_free(old);
    }
}

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

static int bind_one(sqlite3_stmt *st, int i, const pasyn_value *v)
{
    switch (v->type) {
    case PASYN_INT:
        return sqlite3_bind_int64(st, i, v->i);
    case PASYN_FLOAT:
        return sqlite3_bind_double(st, i, v->d);
    case PASYN_TEXT:
        return sqlite3_bind_text64(st, i, v->p, v->n, SQLITE_TRANSIENT, SQLITE_UTF8);
    case PASYN_BLOB:
        return sqlite3_bind_blob64(st, i, v->p, v->n, SQLITE_TRANSIENT);
    default:
        return sqlite3_bind_null(st, i);
    }
}

int conn_bind(conn *c, cached_stmt *s, pasyn_task *t, size_t from, size_t to)
{
    sqlite3_stmt *st = s->stmt;
    int want = sqlite3_bind_parameter_count(st);
    const unsigned char *begin = t->params.p + from, *end = t->params.p + to;
    param p, first = {0};
    int given = 0, named = 0, rc = SQLITE_OK;
    for (const unsigned char *at = begin; at < end; given++) {
        at = next_param(at, &p);
        if (given == 0)
            first = p;
        named |= p.name != NULL;
    }
    if (t->allow_packs && given == 1 && first.name && first.namelen == 1 && first.name[0] == 'n' &&
        first.v.type == PASYN_INT && !sqlite3_bind_parameter_index(st, ":n") &&
        !sqlite3_bind_parameter_index(st, "@n") && !sqlite3_bind_parameter_index(st, "$n")) {
        if (first.v.i != want) { /* an array of n NULLs */
            task_fail_programming(t, "the statement takes %d parameter%s, %lld %s supplied", want,
                                  want == 1 ? "" : "s", (long long)first.v.i,
                                  first.v.i == 1 ? "was" : "were");
            return -1;
        }
        for (int i = 1; i <= want && rc == SQLITE_OK; i++)
            rc = sqlite3_bind_null(st, i);
        if (rc != SQLITE_OK) {
            task_fail_sqlite(t, c->db, rc);
            return -1;
        }
        return 0;
    }
    if (!named) {
        if (given == 1 && want == 0 && t->lone_null_optional)
            return 0;
        if (given != want) {
            task_fail_programming(t, "the statement takes %d parameter%s, %d %s supplied", want,
                                  want == 1 ? "" : "s", given, given == 1 ? "was" : "were");
            return -1;
        }
        int i = 1;
        for (const unsigned char *at = begin; at < end && rc == SQLITE_OK; i++) {
            at = next_param(at, &p);
            rc = bind_one(st, i, &p.v);
        }
    } else {
        for (int i = 1; i <= want && rc == SQLITE_OK; i++) {
            const char *name = sqlite3_bind_parameter_name(st, i);
            if (!name || name[0] == '?') {
                task_fail_programming(t, "parameter %d is positional ('?'), but the parameters "
                                         "were given by name", i);
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
            rc = bind_one(st, i, &p.v);
        }
    }
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
        return -1;
    }
    return 0;
}

/* VM instructions between two looks at the clock: a few microseconds of work. */
#define PROGRESS_OPS 1000

static int past_deadline(void *arg)
{
    conn *c = arg;
    if (now_ns() < c->deadline)
        return 0;
    c->timed_out = 1;
    return 1;
}

void conn_arm(conn *c, const pasyn_task *t)
{
    c->timed_out = 0;
    if (!t->timeout_ns)
        return;
    c->deadline = now_ns() + t->timeout_ns;
    sqlite3_progress_handler(c->db, PROGRESS_OPS, past_deadline, c);
}

void conn_disarm(conn *c, pasyn_task *t)
{
    if (!c->deadline)
        return;
    sqlite3_progress_handler(c->db, 0, NULL, NULL);
    c->deadline = 0;
    if (c->timed_out && t->err == PASYN_ESQLITE && t->code == SQLITE_INTERRUPT) {
        char msg[96];
        snprintf(msg, sizeof msg, "statement timed out after %.3g s", t->timeout_ns / 1e9);
        task_fail(t, PASYN_ESQLITE, SQLITE_INTERRUPT, SQLITE_INTERRUPT, msg);
    }
}

int conn_step_rows(conn *c, cached_stmt *s, pasyn_task *t, size_t chunk, int describe)
{
    sqlite3_stmt *st = s->stmt;
    int n = -1;
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
                task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
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
            pasyn_value v = {.type = sqlite3_column_type(st, i)};
            switch (v.type) {
            case SQLITE_INTEGER:
                v.type = PASYN_INT;
                v.i = sqlite3_column_int64(st, i);
                break;
            case SQLITE_FLOAT:
                v.type = PASYN_FLOAT;
                v.d = sqlite3_column_double(st, i);
                break;
            case SQLITE_TEXT:
                v.type = PASYN_TEXT;
                v.p = (const char *)sqlite3_column_text(st, i);
                v.n = (size_t)sqlite3_column_bytes(st, i);
                break;
            case SQLITE_BLOB:
                v.type = PASYN_BLOB;
                v.p = sqlite3_column_blob(st, i);
                v.n = (size_t)sqlite3_column_bytes(st, i);
                break;
            default:
                v.type = PASYN_NULL;
                break;
            }
            if (encode_value(&t->rows, &v) != 0) {
                task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
                return SQLITE_NOMEM;
            }
        }
        t->nrows++;
        if (chunk && t->rows.len >= chunk)
            return SQLITE_ROW;
    }
}
