/*
 * fuzz.h - what the libFuzzer harnesses of fuzz/ share: one pool per process, opened on the
 * first input and closed at exit; running a task to its end (a streamed result fetched or
 * released); reading the fuzz input as typed values; and the check that a task's rows decode
 * to exactly the bytes the worker encoded. Included by one harness per program.
 */
#ifndef PASYN_FUZZ_H
#define PASYN_FUZZ_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static pasyn_hub *fuzz_hub;
static pasyn_pool *fuzz_pool;

static void fuzz_close_pool(void)
{
    pasyn_task *t = pasyn_task_new(PASYN_CLOSE, NULL, 0);
    if (t && pasyn_close(fuzz_pool, t, 1) == 0)
        pasyn_task_wait(t);
    pasyn_task_free(t);
    pasyn_pool_free(fuzz_pool);
    pasyn_hub_free(fuzz_hub);
}

/* The process's pool on ":memory:" (a private file the close removes), opened once. */
static pasyn_pool *fuzz_pool_get(int readers)
{
    if (fuzz_pool)
        return fuzz_pool;
    pasyn_options o;
    pasyn_options_init(&o);
    o.readers = readers;
    o.busy_timeout_ms = 100;
    o.defensive = 1; /* no writable_schema, no sqlite_dbpage: what we fuzz is ours */
    fuzz_hub = pasyn_hub_new();
    pasyn_task *open = pasyn_task_new(PASYN_OPEN, NULL, 0);
    FUZZ_CHECK(fuzz_hub && open, "out of memory");
    fuzz_pool = pasyn_open(":memory:", &o, fuzz_hub, open, 1);
    FUZZ_CHECK(fuzz_pool, "pasyn_open");
    pasyn_task_wait(open);
    const char *msg;
    FUZZ_CHECK(pasyn_task_error(open, NULL, NULL, &msg) == PASYN_OK, "open: %s", msg);
    pasyn_task_free(open);
    atexit(fuzz_close_pool);
    return fuzz_pool;
}

/* Submits `t` and waits for it; PASYN_OK or the task's error. */
static int fuzz_run(pasyn_task *t)
{
    if (pasyn_submit(fuzz_pool, t, 1) != 0)
        return pasyn_task_error(t, NULL, NULL, NULL);
    pasyn_task_wait(t);
    return pasyn_task_error(t, NULL, NULL, NULL);
}

/* Walks the task's rows with pasyn_row_value: nrows rows of ncols values must take exactly
 * the bytes the worker encoded, each of a known type. Calls `each(value, arg)` per value when
 * given. */
static void fuzz_walk_rows(const pasyn_task *t, void (*each)(const pasyn_value *, void *),
                           void *arg)
{
    size_t nrows;
    const unsigned char *at = pasyn_task_rows(t, &nrows);
    const unsigned char *end = t->rows.p + t->rows.len;
    int ncols = pasyn_task_columns(t);
    FUZZ_CHECK(nrows == 0 || ncols > 0, "%zu rows of no columns", nrows);
    for (size_t r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            FUZZ_CHECK(at < end, "row %zu column %d starts past the rows' %zu bytes", r, c,
                       t->rows.len);
            pasyn_value v;
            at = pasyn_row_value(at, &v);
            FUZZ_CHECK(v.type >= PASYN_NULL && v.type <= PASYN_BLOB, "type %d", v.type);
            FUZZ_CHECK(at <= end, "row %zu column %d ends past the rows' bytes", r, c);
            if (each)
                each(&v, arg);
        }
    }
    FUZZ_CHECK(at == end, "%zu rows of %d columns took %zu of %zu bytes", nrows, ncols,
               (size_t)(at - t->rows.p), t->rows.len);
}

/* Ends a streamed result of `t` without reading it further. */
static void fuzz_release(const pasyn_task *t)
{
    uint64_t stream;
    if (!pasyn_task_stream(t, &stream))
        return;
    pasyn_task *r = pasyn_task_new(PASYN_RELEASE, NULL, 0);
    FUZZ_CHECK(r, "out of memory");
    pasyn_task_set_stream(r, stream);
    FUZZ_CHECK(pasyn_submit(fuzz_pool, r, 0) == 0, "release"); /* the pool frees it */
}

/* The next chunk of a streamed result of `t`, as a new task (the caller frees it and checks
 * its error), or NULL when `t` holds the whole result. */
static pasyn_task *fuzz_fetch(const pasyn_task *t)
{
    uint64_t stream;
    if (!pasyn_task_stream(t, &stream))
        return NULL;
    pasyn_task *f = pasyn_task_new(PASYN_FETCH, NULL, 0);
    FUZZ_CHECK(f, "out of memory");
    pasyn_task_set_stream(f, stream);
    pasyn_task_set_timeout(f, 1);
    fuzz_run(f);
    return f;
}

/* ---- the fuzz input as typed values ------------------------------------------------ */

typedef struct input {
    const uint8_t *p, *end;
} input;

static uint8_t in_byte(input *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

static uint64_t in_u64(input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in_byte(in);
    return v;
}

/* Up to `n` bytes of the input (fewer at its end). */
static const uint8_t *in_bytes(input *in, size_t *n)
{
    size_t left = (size_t)(in->end - in->p);
    if (*n > left)
        *n = left;
    const uint8_t *at = in->p;
    in->p += *n;
    return at;
}

/* A value: a type byte, then 8 bytes for a number, or a length byte and that many bytes for
 * text and blobs; a type byte with its high bit set makes a long blob or text of one byte
 * repeated (a length byte in KiB, then the byte), kept in `store` (at least 256 KiB; NULL:
 * no long values, the high bit is ignored). */
static pasyn_value in_value(input *in, char *store)
{
    pasyn_value v = {.type = PASYN_NULL};
    uint8_t tag = in_byte(in);
    v.type = (tag & 0x7f) % 5;
    switch (v.type) {
    case PASYN_INT:
        v.i = (int64_t)in_u64(in);
        break;
    case PASYN_FLOAT: {
        uint64_t bits = in_u64(in);
        memcpy(&v.d, &bits, 8);
        break;
    }
    case PASYN_TEXT:
    case PASYN_BLOB:
        if ((tag & 0x80) && store) {
            v.n = (size_t)in_byte(in) * 1024;
            memset(store, in_byte(in), v.n);
            v.p = store;
        } else {
            v.n = in_byte(in);
            v.p = (const char *)in_bytes(in, &v.n);
        }
        break;
    default:
        break;
    }
    return v;
}

/* What SQLite gives back for a value bound to a parameter: the same, but a NaN binds as NULL
 * (sqlite3_bind_double: "a NaN ... is converted into a NULL"). */
static pasyn_value fuzz_expected(pasyn_value v)
{
    if (v.type == PASYN_FLOAT && isnan(v.d))
        v.type = PASYN_NULL;
    return v;
}

static int fuzz_same(const pasyn_value *a, const pasyn_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case PASYN_INT:
        return a->i == b->i;
    case PASYN_FLOAT:
        return memcmp(&a->d, &b->d, 8) == 0;
    case PASYN_TEXT:
    case PASYN_BLOB:
        return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
    default:
        return 1;
    }
}

static void fuzz_describe(const pasyn_value *v, char *out, size_t n)
{
    switch (v->type) {
    case PASYN_INT:
        snprintf(out, n, "integer %lld", (long long)v->i);
        break;
    case PASYN_FLOAT:
        snprintf(out, n, "float %a", v->d);
        break;
    case PASYN_TEXT:
    case PASYN_BLOB:
        snprintf(out, n, "%s of %zu bytes", v->type == PASYN_TEXT ? "text" : "blob", v->n);
        break;
    default:
        snprintf(out, n, "null");
        break;
    }
}

/* Aborts, naming both, unless `got` is what binding `given` gives back. */
static void fuzz_check_value(const pasyn_value *got, const pasyn_value *given, const char *where,
                             int i)
{
    pasyn_value want = fuzz_expected(*given);
    if (fuzz_same(got, &want))
        return;
    char a[96], b[96];
    fuzz_describe(got, a, sizeof a);
    fuzz_describe(&want, b, sizeof b);
    FUZZ_CHECK(0, "%s %d: got %s, bound %s", where, i, a, b);
}

#endif
