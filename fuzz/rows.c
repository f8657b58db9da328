/*
 * rows.c - libFuzzer harness: many rows through executemany and back through a streamed
 * result. The input gives a column count and rows of values (fuzz.h, in_value; long ones make
 * results of several 256 KiB chunks); executemany inserts them (all or nothing: a misfit set
 * fails the whole call and leaves no row), and a SELECT must give back every value, in order,
 * chunk after chunk (PASYN_FETCH), from a reader or, inside a transaction, from the writer;
 * or it is let go early (PASYN_RELEASE). Then the rows are deleted.
 *
 * Input: a flags byte, a column-count byte, then the rows' values.
 */
#include "fuzz.h"

#define MAX_COLS 4
#define MAX_ROWS 64
#define LONG_VALUES 6

enum flags {
    MISFIT = 1,         /* one set has a value too many: executemany fails, nothing stays */
    IN_TRANSACTION = 2, /* BEGIN ... COMMIT around it: the writer answers the SELECT */
    RELEASE_EARLY = 4,  /* let the result go after its first chunk */
};

#define OWNER 7

typedef struct expect {
    pasyn_value *values;
    int n, i;
} expect;

static void check_value(const pasyn_value *got, void *arg)
{
    expect *e = arg;
    FUZZ_CHECK(e->i < e->n, "more values than the %d inserted", e->n);
    fuzz_check_value(got, &e->values[e->i], "value", e->i);
    e->i++;
}

static void run_sql(const char *sql, uint64_t owner)
{
    pasyn_task *t = pasyn_task_new(PASYN_EXEC, sql, strlen(sql));
    FUZZ_CHECK(t, "out of memory");
    pasyn_task_set_owner(t, owner);
    const char *msg;
    FUZZ_CHECK(fuzz_run(t) == PASYN_OK, "%s: %s", sql,
               (pasyn_task_error(t, NULL, NULL, &msg), msg));
    pasyn_task_free(t);
}

static char stores[LONG_VALUES][256 * 1024];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int created;
    fuzz_pool_get(3);
    if (!created) {
        run_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, c0, c1, c2, c3)", 0);
        created = 1;
    }
    input in = {data, data + size};
    int flags = in_byte(&in);
    int ncols = 1 + in_byte(&in) % MAX_COLS;
    static pasyn_value values[MAX_ROWS * MAX_COLS];
    int n = 0, longs = 0;
    while (in.p < in.end && n < MAX_ROWS * ncols) {
        values[n] = in_value(&in, longs < LONG_VALUES ? stores[longs] : NULL);
        if (values[n].p == stores[longs] && values[n].n > 0)
            longs++;
        n++;
    }
    int nrows = n / ncols;
    n = nrows * ncols;

    char sql[128];
    int len = snprintf(sql, sizeof sql, "INSERT INTO t (c0%s%s%s) VALUES (?%s%s%s)",
                       ncols > 1 ? ", c1" : "", ncols > 2 ? ", c2" : "", ncols > 3 ? ", c3" : "",
                       ncols > 1 ? ", ?" : "", ncols > 2 ? ", ?" : "", ncols > 3 ? ", ?" : "");
    uint64_t owner = flags & IN_TRANSACTION ? OWNER : 0;
    if (owner)
        run_sql("BEGIN", owner);

    pasyn_task *many = pasyn_task_new(PASYN_MANY, sql, (size_t)len);
    FUZZ_CHECK(many, "out of memory");
    pasyn_task_set_owner(many, owner);
    int misfit = (flags & MISFIT) && nrows > 0;
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++)
            FUZZ_CHECK(pasyn_task_bind(many, NULL, 0, &values[r * ncols + c]) == 0, "bind");
        if (misfit && r == nrows - 1)
            FUZZ_CHECK(pasyn_task_bind(many, NULL, 0, &values[0]) == 0, "bind");
        FUZZ_CHECK(pasyn_task_next_set(many) == 0, "next set");
    }
    int err = fuzz_run(many);
    const char *msg;
    pasyn_task_error(many, NULL, NULL, &msg);
    if (misfit) {
        FUZZ_CHECK(err == PASYN_EPROGRAMMING, "a misfit set: error %d (%s)", err, msg);
        n = 0; /* all or nothing */
    } else {
        FUZZ_CHECK(err == PASYN_OK, "executemany of %d rows: %s", nrows, msg);
        FUZZ_CHECK(pasyn_task_rowcount(many) == nrows, "rowcount %lld, %d rows",
                   (long long)pasyn_task_rowcount(many), nrows);
    }
    pasyn_task_free(many);

    len = snprintf(sql, sizeof sql, "SELECT c0%s%s%s FROM t ORDER BY id", ncols > 1 ? ", c1" : "",
                   ncols > 2 ? ", c2" : "", ncols > 3 ? ", c3" : "");
    pasyn_task *t = pasyn_task_new(PASYN_EXEC, sql, (size_t)len);
    FUZZ_CHECK(t, "out of memory");
    pasyn_task_set_owner(t, owner);
    FUZZ_CHECK(fuzz_run(t) == PASYN_OK, "%s: %s", sql,
               (pasyn_task_error(t, NULL, NULL, &msg), msg));
    expect e = {values, n, 0};
    int chunks = 0;
    for (pasyn_task *chunk = t; chunk;) {
        FUZZ_CHECK(chunks == 0 || pasyn_task_columns(chunk) == ncols, "a chunk of %d columns",
                   pasyn_task_columns(chunk));
        fuzz_walk_rows(chunk, check_value, &e);
        pasyn_task *next = NULL;
        if ((flags & RELEASE_EARLY) && chunks == 0)
            fuzz_release(chunk);
        else if ((next = fuzz_fetch(chunk)) != NULL)
            FUZZ_CHECK(pasyn_task_error(next, NULL, NULL, &msg) == PASYN_OK, "fetch: %s", msg);
        if (chunk != t)
            pasyn_task_free(chunk);
        chunk = next;
        chunks++;
    }
    FUZZ_CHECK(e.i == n || ((flags & RELEASE_EARLY) && e.i < n), "%d values back of %d", e.i, n);
    pasyn_task_free(t);

    run_sql("DELETE FROM t", owner);
    if (owner)
        run_sql("COMMIT", owner);
    return 0;
}
