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

/* Sets up an empty cache of at most `capacity` statements (0: each is finalized when given
 * back). 0, or -1 when out of memory. */
int stmt_cache_init(conn *c, int capacity)
{
    c->lru.next = c->lru.prev = &c->lru;
    c->capacity = capacity > 0 ? (size_t)capacity : 0;
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
}

void stmt_fail_prepare(conn *c, pasyn_task *t, int rc)
{
    if (c->seen & SEEN_LOCKS_OUT)
        task_fail_programming(t, "a pool with readers cannot leave WAL mode or take "
                                 "locking_mode EXCLUSIVE while open: open it with the "
                                 "journal_mode option (or readers = 0)");
    else
        task_fail_sqlite(t, c->db, rc);
}

cached_stmt *stmt_acquire(conn *c, pasyn_task *t)
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
    c->setting = 0;
    int rc = sqlite3_prepare_v3(c->db, t->sql, (int)t->sql_len,
                                c->capacity ? SQLITE_PREPARE_PERSISTENT : 0, &st, &tail);
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
    size_t names_len = c->seen & SEEN_INSERT ? c->insert_names.len : 0;
    cached_stmt *s = malloc(sizeof *s + t->sql_len + 1 + names_len);
    if (!s) {
        sqlite3_finalize(st);
        task_fail_nomem(t);
        return NULL;
    }
    s->stmt = st;
    s->cols = NULL;
    s->prepares = 0;
    s->run_ns = 0;
    s->kind = stmt_kind_of(c, st);
    s->classified_at = 0;
    s->first_named = first_named(st);
    s->setting = c->setting;
    s->changes_schema = (c->seen & SEEN_SCHEMA) != 0;
    s->hash = h;
    s->sql_len = t->sql_len;
    memcpy(s->sql, t->sql, t->sql_len);
    s->sql[t->sql_len] = '\0';
    s->insert_table = s->insert_db = NULL;
    if (names_len) {
        char *names = memcpy(s->sql + t->sql_len + 1, c->insert_names.p, names_len);
        s->insert_table = names;
        s->insert_db = names + strlen(names) + 1;
    }
    return s;
}

int stmt_kind_now(conn *c, cached_stmt *s)
{
    int prepares = sqlite3_stmt_status(s->stmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    if (prepares != s->classified_at) {
        s->kind = stmt_kind_of(c, s->stmt);
        s->classified_at = prepares;
    }
    return s->kind;
}

void stmt_release(conn *c, cached_stmt *s)
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

int stmt_bind(conn *c, cached_stmt *s, pasyn_task *t, size_t from, size_t to)
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
    /* {n = k} where the statement has no :n: an array of k NULLs (pasyn_task_allow_packs). */
    int nulls = t->allow_packs && given == 1 && first.name && first.namelen == 1 &&
                first.name[0] == 'n' && first.v.type == PASYN_INT &&
                !sqlite3_bind_parameter_index(st, ":n") &&
                !sqlite3_bind_parameter_index(st, "@n") && !sqlite3_bind_parameter_index(st, "$n");
    if (nulls || !named) {
        if (!nulls && given == 1 && want == 0 && t->lone_null_optional &&
            first.v.type == PASYN_NULL)
            return 0;
        if (check_nameless(s, t) != 0) /* Python names this one first, whatever the count */
            return -1;
        long long count = nulls ? (long long)first.v.i : given;
        if (count != want) {
            task_fail_programming(t, "the statement takes %d parameter%s, %lld %s supplied", want,
                                  want == 1 ? "" : "s", count, count == 1 ? "was" : "were");
            return -1;
        }
        const unsigned char *at = begin;
        for (int i = 1; i <= want && rc == SQLITE_OK; i++) {
            if (nulls) {
                rc = sqlite3_bind_null(st, i);
            } else {
                at = next_param(at, &p);
                rc = bind_one(st, i, &p.v);
            }
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
            rc = bind_one(st, i, &p.v);
        }
    }
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
        return -1;
    }
    return 0;
}

/* ---- stepping ----------------------------------------------------------------------- */

int stmt_step_rows(conn *c, cached_stmt *s, pasyn_task *t, size_t chunk, int describe)
{
    sqlite3_stmt *st = s->stmt;
    int n = -1;
    c->seen = 0; /* what the authorizer reports now comes from a re-prepare (stmt_kind_now) */
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
                task_fail_nomem(t);
                return SQLITE_NOMEM;
            }
        }
        t->nrows++;
        if (chunk && t->rows.len >= chunk)
            return SQLITE_ROW;
    }
}
