/*
 * task.c - one unit of work and its result: the SQL, the copied parameters, and what the
 * worker produced (rows encoded into one buffer, counts, or an error). Also the value
 * encoding shared by parameters and rows: a type byte, then 8 bytes for numbers or a
 * 32-bit length and the bytes for text and blobs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

int buf_reserve(buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    unsigned char *p = realloc(b->borrowed ? NULL : b->p, cap);
    if (!p)
        return PASYN_ENOMEM;
    if (b->borrowed && b->len)
        memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    b->borrowed = 0;
    return 0;
}

int buf_put(buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return PASYN_ENOMEM;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void buf_free(buf *b)
{
    if (!b->borrowed)
        free(b->p);
    b->borrowed = 0;
    b->p = NULL;
    b->len = b->cap = 0;
}

/* The bytes encode_at writes for v: its type byte, then 8 bytes for a number, or a 32-bit
 * length and the bytes for text and blobs, nothing more for NULL. */
static inline size_t encoded_size(const pasyn_value *v)
{
    switch (v->type) {
    case PASYN_INT:
    case PASYN_FLOAT:
        return 9;
    case PASYN_TEXT:
    case PASYN_BLOB:
        return 5 + v->n;
    default:
        return 1;
    }
}

/* Writes v at `at`, which has room for encoded_size(v) bytes; returns the end. */
static inline unsigned char *encode_at(unsigned char *at, const pasyn_value *v)
{
    uint32_t n32;
    switch (v->type) {
    case PASYN_INT:
    case PASYN_FLOAT:
        *at = (unsigned char)v->type;
        memcpy(at + 1, v->type == PASYN_INT ? (const void *)&v->i : (const void *)&v->d, 8);
        return at + 9;
    case PASYN_TEXT:
    case PASYN_BLOB:
        n32 = (uint32_t)v->n;
        *at = (unsigned char)v->type;
        memcpy(at + 1, &n32, 4);
        if (v->n)
            memcpy(at + 5, v->p, v->n);
        return at + 5 + v->n;
    default:
        *at = PASYN_NULL;
        return at + 1;
    }
}

int encode_value(buf *b, const pasyn_value *v)
{
    if ((v->type == PASYN_TEXT || v->type == PASYN_BLOB) && v->n > UINT32_MAX)
        return PASYN_ENOMEM;
    if (buf_reserve(b, encoded_size(v)) != 0)
        return PASYN_ENOMEM;
    b->len = (size_t)(encode_at(b->p + b->len, v) - b->p);
    return 0;
}

const unsigned char *pasyn_row_value(const unsigned char *at, pasyn_value *out)
{
    uint32_t n32;
    out->type = *at++;
    switch (out->type) {
    case PASYN_INT:
        memcpy(&out->i, at, 8);
        return at + 8;
    case PASYN_FLOAT:
        memcpy(&out->d, at, 8);
        return at + 8;
    case PASYN_TEXT:
    case PASYN_BLOB:
        memcpy(&n32, at, 4);
        out->n = n32;
        out->p = (const char *)at + 4;
        return at + 4 + n32;
    default:
        return at;
    }
}

/* A point query's parameters, its row and the SQL fit in the task's own allocation: the
 * parameters from the front of one inline area, the rows in what they leave of it (the rows
 * are written only after the last parameter is bound, and never over them: a statement that
 * runs again, on another thread or after a retry, binds them again). A statement without
 * parameters has the whole area for its rows. */
enum { INLINE_BYTES = 192 };

static unsigned char *inline_area(pasyn_task *t)
{
    return (unsigned char *)(t + 1);
}

/* The rows get the inline area that the parameters leave free (all of it once they moved to
 * a buffer of their own). Only while no row is written yet: at bind time. */
static void rows_after_params(pasyn_task *t)
{
    if (!t->rows.borrowed || t->rows.len)
        return;
    size_t used = t->params.borrowed ? t->params.len : 0;
    t->rows.p = inline_area(t) + used;
    t->rows.cap = INLINE_BYTES - used;
}

pasyn_task *pasyn_task_new(int kind, const char *sql, size_t len)
{
    size_t sql_bytes = sql ? len + 1 : 0;
    unsigned char *block = malloc(sizeof(pasyn_task) + INLINE_BYTES + sql_bytes);
    if (!block)
        return NULL;
    pasyn_task *t = (pasyn_task *)block;
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->rowcount = -1;
    unsigned char *at = inline_area(t);
    t->params = (buf){.p = at, .cap = INLINE_BYTES, .borrowed = 1};
    t->rows = (buf){.p = at, .cap = INLINE_BYTES, .borrowed = 1};
    at += INLINE_BYTES;
    if (sql) {
        t->sql = (char *)at;
        memcpy(t->sql, sql, len);
        t->sql[len] = '\0';
        t->sql_len = len;
    }
    return t;
}

void task_reset_result(pasyn_task *t)
{
    free(t->message);
    t->message = NULL;
    t->err = PASYN_OK;
    t->code = t->extended = 0;
    t->rows.len = 0;
    t->nrows = 0;
    t->rowcount = -1;
    t->has_rowid = 0;
    hooks_task_reset(t);
}

void pasyn_task_free(pasyn_task *t)
{
    if (!t)
        return;
    /* Most tasks hold nothing but their block (a point read's parameters and row are in it):
     * each call only when there is something to free. */
    if (t->message)
        free(t->message);
    columns_put(t->cols);
    if (!t->params.borrowed && t->params.p)
        buf_free(&t->params);
    if (t->set_ends.p)
        buf_free(&t->set_ends);
    if (!t->rows.borrowed && t->rows.p)
        buf_free(&t->rows);
    if (t->events)
        hooks_task_free(t);
    if (t->bytes)
        sqlite3_free(t->bytes);
    free(t);
}

pasyn_task *pasyn_task_next(const pasyn_task *t)
{
    return t->next;
}
void pasyn_task_set_owner(pasyn_task *t, uint64_t owner)
{
    t->owner = owner;
}
void pasyn_task_set_user(pasyn_task *t, void *user)
{
    t->user = user;
}
void *pasyn_task_user(const pasyn_task *t)
{
    return t->user;
}
void pasyn_task_set_stream(pasyn_task *t, uint64_t stream)
{
    t->stream = stream;
}
void pasyn_task_set_no_inline(pasyn_task *t)
{
    t->no_inline = 1;
}

void pasyn_task_set_caller_busy(pasyn_task *t)
{
    t->caller = CALLER_BUSY;
}

void pasyn_task_set_caller_idle(pasyn_task *t)
{
    t->caller = CALLER_IDLE;
}

void pasyn_task_set_caller_asks(pasyn_task *t)
{
    t->caller = CALLER_ASKS;
}

void pasyn_task_set_no_owner_wait(pasyn_task *t)
{
    t->no_owner_wait = 1;
}

void pasyn_task_set_timeout(pasyn_task *t, double seconds)
{
    t->timeout_ns = seconds > 0 ? (seconds < 1e9 ? (uint64_t)(seconds * 1e9) : UINT64_MAX / 2) : 0;
}

int pasyn_task_bind_values(pasyn_task *t, const pasyn_value *values, int n)
{
    /* each value after the nameless mark, as encode_value writes it */
    size_t size = 0;
    for (int k = 0; k < n; k++) {
        const pasyn_value *v = &values[k];
        if ((v->type == PASYN_TEXT || v->type == PASYN_BLOB) &&
            (v->n > UINT32_MAX || v->n > SIZE_MAX - 9 - size))
            return PASYN_ENOMEM; /* as encode_value; or the sum would wrap (32 bits) */
        size += 4 + encoded_size(v);
    }
    buf *b = &t->params;
    if (b->len + size > b->cap && buf_reserve(b, size) != 0)
        return PASYN_ENOMEM;
    unsigned char *at = b->p + b->len;
    uint32_t mark = UINT32_MAX;
    for (int k = 0; k < n; k++) {
        memcpy(at, &mark, 4);
        at = encode_at(at + 4, &values[k]);
    }
    b->len += size;
    rows_after_params(t);
    return 0;
}

int pasyn_task_bind(pasyn_task *t, const char *name, size_t namelen, const pasyn_value *v)
{
    if (!name)
        return pasyn_task_bind_values(t, v, 1);
    if (namelen && (name[0] == ':' || name[0] == '@' || name[0] == '$')) {
        name++;
        namelen--;
    }
    uint32_t n32 = (uint32_t)namelen;
    int err = PASYN_ENOMEM;
    if (buf_put(&t->params, &n32, 4) == 0 && buf_put(&t->params, name, namelen) == 0)
        err = encode_value(&t->params, v);
    rows_after_params(t);
    return err;
}

int pasyn_task_bind_alternative(pasyn_task *t)
{
    uint32_t mark = READING_MARK;
    int err = buf_put(&t->params, &mark, 4);
    rows_after_params(t);
    if (err != 0)
        return PASYN_ENOMEM;
    t->alternatives = 1;
    return 0;
}

int pasyn_task_next_set(pasyn_task *t)
{
    size_t end = t->params.len;
    buf *b = &t->set_ends;
    if (b->len + sizeof end > b->cap && buf_reserve(b, sizeof end) != 0)
        return PASYN_ENOMEM;
    memcpy(b->p + b->len, &end, sizeof end);
    b->len += sizeof end;
    t->nsets++;
    return 0;
}

/* The most pasyn_task_reserve_sets reserves at once. */
#define RESERVE_MAX ((size_t)16 << 20)

void pasyn_task_reserve_sets(pasyn_task *t, size_t more)
{
    if (!t->nsets || !more)
        return;
    /* each set's parameters, and its end in set_ends */
    size_t per = t->params.len / t->nsets + 1 + sizeof(size_t);
    if (more > RESERVE_MAX / per)
        return;
    (void)buf_reserve(&t->params, per * more);
    (void)buf_reserve(&t->set_ends, sizeof(size_t) * more);
    rows_after_params(t);
}

void task_fail(pasyn_task *t, int err, int code, int extended, const char *message)
{
    free(t->message);
    t->err = err;
    t->code = code;
    t->extended = extended;
    t->message = message ? strdup(message) : NULL;
}

int task_stopped(const pasyn_task *t)
{
    return t->err == PASYN_ESQLITE && t->code == SQLITE_INTERRUPT;
}

void task_fail_nomem(pasyn_task *t)
{
    task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
}

void task_fail_sqlite(pasyn_task *t, sqlite3 *db, int rc)
{
    int ext = db ? sqlite3_extended_errcode(db) : rc;
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    /* sqlite3_errmsg may describe an older error after an API misuse; prefer the code's. */
    if ((ext & 0xff) != (rc & 0xff)) {
        ext = rc;
        msg = sqlite3_errstr(rc);
    }
    task_fail(t, PASYN_ESQLITE, rc & 0xff, ext, msg);
}

void task_fail_programming(pasyn_task *t, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    task_fail(t, PASYN_EPROGRAMMING, 0, 0, msg);
}

static columns *columns_new(sqlite3_stmt *st)
{
    static _Atomic uint64_t last_id;
    int n = sqlite3_column_count(st);
    size_t bytes = sizeof(columns) + 2 * (size_t)n * sizeof(char *);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(st, i), *type = sqlite3_column_decltype(st, i);
        bytes += (name ? strlen(name) : 0) + 1 + (type ? strlen(type) + 1 : 0);
    }
    columns *c = malloc(bytes);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->n = n;
    c->bytes = bytes;
    c->id = atomic_fetch_add(&last_id, 1) + 1;
    char *at = (char *)(c->text + 2 * n);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(st, i), *type = sqlite3_column_decltype(st, i);
        size_t len = name ? strlen(name) : 0;
        c->text[i] = at;
        memcpy(at, name ? name : "", len + 1);
        at += len + 1;
        c->text[n + i] = NULL;
        if (type) {
            len = strlen(type);
            c->text[n + i] = at;
            memcpy(at, type, len + 1);
            at += len + 1;
        }
    }
    return c;
}

void columns_put(columns *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        free(c);
}

/* Gives the task the statement's columns, described again only when SQLite has re-prepared
 * the statement since (a schema change may have changed what SELECT * returns). */
int task_set_columns(pasyn_task *t, cached_stmt *s)
{
    int prepares = sqlite3_stmt_status(s->stmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    if (!s->cols || s->prepares != prepares) {
        columns *c = columns_new(s->stmt);
        if (!c)
            return PASYN_ENOMEM;
        if (!s->uncached) /* the statement cache counts them as the statement's */
            s->charge += c->bytes - (s->cols ? s->cols->bytes : 0);
        columns_put(s->cols);
        s->cols = c;
        s->prepares = prepares;
    }
    columns_put(t->cols);
    t->cols = NULL;
    if (s->cols->n > 0) {
        atomic_fetch_add(&s->cols->refs, 1);
        t->cols = s->cols;
    }
    return 0;
}

int pasyn_task_error(const pasyn_task *t, int *code, int *extended, const char **message)
{
    if (code)
        *code = t->code;
    if (extended)
        *extended = t->extended;
    if (message)
        *message = t->message ? t->message : "";
    return t->err;
}

int pasyn_task_columns(const pasyn_task *t)
{
    return t->ncols;
}

const char *pasyn_task_column_name(const pasyn_task *t, int i)
{
    return t->cols && i >= 0 && i < t->cols->n ? t->cols->text[i] : NULL;
}

const char *pasyn_task_column_decltype(const pasyn_task *t, int i)
{
    return t->cols && i >= 0 && i < t->cols->n ? t->cols->text[t->cols->n + i] : NULL;
}

uint64_t pasyn_task_columns_id(const pasyn_task *t)
{
    return t->cols ? t->cols->id : 0;
}

const unsigned char *pasyn_task_rows(const pasyn_task *t, size_t *nrows)
{
    *nrows = t->nrows;
    return t->rows.p;
}

int64_t pasyn_task_rowcount(const pasyn_task *t)
{
    return t->rowcount;
}

int pasyn_task_lastrowid(const pasyn_task *t, int64_t *rowid)
{
    if (t->has_rowid)
        *rowid = t->rowid;
    return t->has_rowid;
}

int pasyn_task_stream(const pasyn_task *t, uint64_t *stream)
{
    if (stream)
        *stream = t->stream;
    return t->stream != 0 && t->err == PASYN_OK;
}

const char *pasyn_sqlite_version(void)
{
    return sqlite3_libversion();
}
