/* c_api.c - the C core without Lua: a program that uses only pasyn.h. It opens a pool (a writer
 * and two readers) on a database file, creates a table with a script, inserts rows with one
 * statement and several parameter sets, runs reads side by side, reads a result that comes in
 * chunks, rolls back a transaction and meets the failures a caller branches on. Every task comes
 * back through the hub, whose descriptor the program's own loop watches with poll(). It checks
 * what it reads and prints TAP: make test builds and runs it as build/lib/c_api. README,
 * "Embedding the C core":
 *   make lib && cc -Ic examples/c_api.c -Lbuild/lib -lpasyn -o c_api
 *   LD_LIBRARY_PATH=build/lib ./c_api
 *   cc examples/c_api.c $(pkg-config --cflags --libs pasyn) -o c_api     (after make install) */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pasyn.h>

/* SQLite's result codes that the checks below expect (sqlite3.h has them all). */
#define SQLITE_ERROR 1
#define SQLITE_CONSTRAINT 19
#define SQLITE_CONSTRAINT_CHECK (SQLITE_CONSTRAINT | (1 << 8))

/* ---- TAP ------------------------------------------------------------------------------ */

static int ntests, nfailed;

static int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", cond ? "ok" : "not ok", ++ntests);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    nfailed += !cond;
    return cond;
}

static void die(const char *what)
{
    printf("Bail out! %s\n", what);
    exit(1);
}

/* ---- the program's side: tasks in flight and the loop that waits for them ---------------- */

static pasyn_hub *hub;
static pasyn_pool *pool;
static int in_flight; /* submitted tasks that have not come back yet */

/* A task of `kind` on `sql` (NULL for kinds without SQL). */
static pasyn_task *task(int kind, const char *sql)
{
    pasyn_task *t = pasyn_task_new(kind, sql, sql ? strlen(sql) : 0);
    if (!t)
        die("out of memory");
    return t;
}

/* Binds the next positional parameter (name NULL) or a named one. Strings are copied. */
static void bind(pasyn_task *t, const char *name, pasyn_value v)
{
    if (pasyn_task_bind(t, name, name ? strlen(name) : 0, &v) != 0)
        die("out of memory");
}

static pasyn_value integer(int64_t i)
{
    return (pasyn_value){.type = PASYN_INT, .i = i};
}

static pasyn_value text(const char *s)
{
    return (pasyn_value){.type = PASYN_TEXT, .p = s, .n = strlen(s)};
}

/* Queues the task; `slot` receives it when it has come back (its user word points there). */
static int submit(pasyn_task *t, pasyn_task **slot)
{
    *slot = NULL;
    pasyn_task_set_user(t, slot);
    int rc = pasyn_submit(pool, t, 0);
    if (rc == 0)
        in_flight++;
    return rc;
}

/* The event loop: poll() on the hub's descriptor (a program would watch its own descriptors
 * in the same call) and drain, until every task in flight has come back. The descriptor may
 * be readable with nothing to drain: that is harmless. -1 after 10 s without a completion. */
static int wait_all(void)
{
    while (in_flight > 0) {
        struct pollfd pfd = {.fd = pasyn_hub_fd(hub), .events = POLLIN};
        int n = poll(&pfd, 1, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        for (pasyn_task *t = pasyn_hub_drain(hub); t; t = pasyn_task_next(t)) {
            pasyn_task **slot = pasyn_task_user(t);
            *slot = t;
            in_flight--;
        }
    }
    return 0;
}

/* Submits one task and waits for it: the completed task, or NULL (with a failed test) when the
 * pool refused it or it did not come back. */
static pasyn_task *run(pasyn_task *t)
{
    pasyn_task *done;
    int rc = submit(t, &done);
    if (rc != 0) {
        ok(0, "the pool refused the task: %d", rc);
        pasyn_task_free(t);
        return NULL;
    }
    if (wait_all() != 0)
        die("no completion within 10 s");
    return done;
}

/* 1 when the task succeeded, else 0 with its error as a TAP comment. */
static int succeeded(const pasyn_task *t)
{
    int code, extended;
    const char *message;
    int err = t ? pasyn_task_error(t, &code, &extended, &message) : PASYN_ENOMEM;
    if (err != PASYN_OK && t)
        printf("# error %d (SQLite %d/%d): %s\n", err, code, extended, message);
    return err == PASYN_OK;
}

/* The values of the task's rows, row after row, at most `max`; returns the number of rows. The
 * texts and blobs live as long as the task. */
static size_t values(const pasyn_task *t, pasyn_value *out, size_t max)
{
    size_t nrows, ncols = (size_t)pasyn_task_columns(t);
    const unsigned char *at = pasyn_task_rows(t, &nrows);
    for (size_t i = 0; i < nrows * ncols && i < max; i++)
        at = pasyn_row_value(at, &out[i]);
    return nrows;
}

static int is_text(const pasyn_value *v, const char *s)
{
    return v->type == PASYN_TEXT && v->n == strlen(s) && memcmp(v->p, s, v->n) == 0;
}

/* ---- the example ------------------------------------------------------------------------ */

static void create_and_insert(void)
{
    pasyn_task *t = run(task(PASYN_SCRIPT, "CREATE TABLE people (id INTEGER PRIMARY KEY,"
                                           " name TEXT NOT NULL, age INTEGER CHECK (age >= 0),"
                                           " score REAL, photo BLOB);"
                                           "CREATE INDEX people_age ON people (age)"));
    ok(succeeded(t), "a script of two statements creates the table and its index");
    pasyn_task_free(t);

    /* One statement, three parameter sets, run together on the writer: pasyn_task_next_set
     * ends each set, the last one too. */
    static const char photo[] = {'P', 0, 'N', 'G'}; /* a blob may hold NULs */
    static const char *const names[] = {"ada", "grace", "linus"};
    static const int ages[] = {36, 45, 28};
    t = task(PASYN_MANY, "INSERT INTO people (name, age, score, photo) VALUES (?, ?, ?, ?)");
    for (int i = 0; i < 3; i++) {
        bind(t, NULL, text(names[i]));
        bind(t, NULL, integer(ages[i]));
        if (i == 0) {
            bind(t, NULL, (pasyn_value){.type = PASYN_FLOAT, .d = 1.5});
            bind(t, NULL, (pasyn_value){.type = PASYN_BLOB, .p = photo, .n = sizeof photo});
        } else {
            bind(t, NULL, (pasyn_value){.type = PASYN_NULL});
            bind(t, NULL, (pasyn_value){.type = PASYN_NULL});
        }
        if (pasyn_task_next_set(t) != 0)
            die("out of memory");
    }
    t = run(t);
    int64_t rowcount = succeeded(t) ? pasyn_task_rowcount(t) : -1;
    ok(rowcount == 3, "PASYN_MANY inserts three rows: rowcount %" PRId64, rowcount);
    pasyn_task_free(t);

    /* Named parameters, with or without their prefix. */
    t = task(PASYN_EXEC, "INSERT INTO people (name, age) VALUES (:name, $age)");
    bind(t, "name", text("barbara"));
    bind(t, "$age", integer(52));
    t = run(t);
    int64_t rowid = 0;
    int inserted = succeeded(t) && pasyn_task_lastrowid(t, &rowid) && pasyn_task_rowcount(t) == 1;
    ok(inserted && rowid == 4, "named parameters: one row inserted, lastrowid %" PRId64, rowid);
    pasyn_task_free(t);
}

/* Four counts in flight at once: the readers run them side by side. */
static void reads_side_by_side(void)
{
    static const int64_t older_than[4] = {0, 30, 40, 100}, expected[4] = {4, 3, 2, 0};
    pasyn_task *done[4];
    for (int i = 0; i < 4; i++) {
        pasyn_task *t = task(PASYN_EXEC, "SELECT count(*) FROM people WHERE age > ?");
        bind(t, NULL, integer(older_than[i]));
        if (submit(t, &done[i]) != 0)
            die("submit refused");
    }
    ok(in_flight == 4 && wait_all() == 0, "four reads submitted before waiting all come back");
    for (int i = 0; i < 4; i++) {
        pasyn_value v = {0};
        int one_row = succeeded(done[i]) && values(done[i], &v, 1) == 1;
        ok(one_row && v.type == PASYN_INT && v.i == expected[i],
           "count of age > %" PRId64 ": %" PRId64, older_than[i], v.i);
        pasyn_task_free(done[i]);
    }
}

static void columns_and_types(void)
{
    pasyn_task *t = task(PASYN_EXEC, "SELECT id, name, age, score, photo FROM people"
                                     " WHERE name IN (?, ?) ORDER BY id");
    bind(t, NULL, text("ada"));
    bind(t, NULL, text("grace"));
    t = run(t);
    if (!ok(succeeded(t) && pasyn_task_columns(t) == 5, "a SELECT of five columns")) {
        pasyn_task_free(t);
        return;
    }
    ok(strcmp(pasyn_task_column_name(t, 1), "name") == 0 &&
           strcmp(pasyn_task_column_decltype(t, 3), "REAL") == 0,
       "column names and declared types: %s %s", pasyn_task_column_name(t, 1),
       pasyn_task_column_decltype(t, 3));
    pasyn_value v[10];
    ok(values(t, v, 10) == 2, "two rows");
    ok(v[0].type == PASYN_INT && v[0].i == 1 && is_text(&v[1], "ada") && v[2].i == 36 &&
           v[3].type == PASYN_FLOAT && v[3].d == 1.5,
       "integer, text and float values");
    ok(v[4].type == PASYN_BLOB && v[4].n == 4 && memcmp(v[4].p, "P\0NG", 4) == 0,
       "a blob with a NUL byte, of %zu bytes", v[4].n);
    ok(is_text(&v[6], "grace") && v[8].type == PASYN_NULL && v[9].type == PASYN_NULL, "NULLs");
    pasyn_task_free(t);
}

/* A result larger than a chunk (about 256 KiB) streams: the reader keeps the statement, and
 * each PASYN_FETCH task with the stream's id brings the next chunk, until one has no stream. */
static void streamed_result(void)
{
    pasyn_task *t = run(task(PASYN_EXEC, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
                                         " SELECT i + 1 FROM n WHERE i < 20000)"
                                         " SELECT i, zeroblob(100) FROM n"));
    int64_t rows = 0, sum = 0, chunks = 0;
    uint64_t stream;
    while (succeeded(t)) {
        size_t nrows;
        const unsigned char *at = pasyn_task_rows(t, &nrows);
        for (size_t r = 0; r < nrows; r++) {
            pasyn_value i, blob;
            at = pasyn_row_value(at, &i);
            at = pasyn_row_value(at, &blob);
            sum += i.i;
        }
        rows += (int64_t)nrows;
        chunks++;
        if (!pasyn_task_stream(t, &stream))
            break;
        pasyn_task_free(t);
        t = task(PASYN_FETCH, NULL);
        pasyn_task_set_stream(t, stream);
        t = run(t);
    }
    pasyn_task_free(t);
    ok(rows == 20000 && sum == 200010000 && chunks > 1, "20000 rows in %" PRId64 " chunks", chunks);
}

/* A transaction belongs to an owner (an id of the caller's choosing): until it ends, the writer
 * runs only that owner's tasks. Tasks of one owner run in the order they were submitted. */
static void transaction(void)
{
    static const char *const steps[] = {"BEGIN IMMEDIATE", "DELETE FROM people", "ROLLBACK"};
    pasyn_task *done[3];
    for (int i = 0; i < 3; i++) {
        pasyn_task *t = task(PASYN_EXEC, steps[i]);
        pasyn_task_set_owner(t, 7);
        if (submit(t, &done[i]) != 0)
            die("submit refused");
    }
    if (wait_all() != 0)
        die("no completion within 10 s");
    ok(succeeded(done[0]) && succeeded(done[1]) && pasyn_task_rowcount(done[1]) == 4 &&
           succeeded(done[2]) && pasyn_txn_owner(pool) == 0,
       "BEGIN, DELETE of 4 rows, ROLLBACK by one owner; no transaction left");
    for (int i = 0; i < 3; i++)
        pasyn_task_free(done[i]);
    pasyn_task *t = run(task(PASYN_EXEC, "SELECT count(*) FROM people"));
    pasyn_value v = {0};
    int one_row = succeeded(t) && values(t, &v, 1) == 1;
    ok(one_row && v.i == 4, "the rows are still there: %" PRId64, v.i);
    pasyn_task_free(t);
}

/* Failures come back as tasks too: where it failed, SQLite's codes, a message. */
static void failures(void)
{
    int code = 0, extended = 0;
    const char *message = "";
    pasyn_task *t = run(task(PASYN_EXEC, "SELECT * FROM nowhere"));
    int err = t ? pasyn_task_error(t, &code, NULL, &message) : -1;
    ok(err == PASYN_ESQLITE && code == SQLITE_ERROR && strstr(message, "no such table"),
       "an unknown table: PASYN_ESQLITE, SQLITE_ERROR, \"%s\"", message);
    pasyn_task_free(t);

    t = task(PASYN_EXEC, "INSERT INTO people (name, age) VALUES (?, ?)");
    bind(t, NULL, text("nobody"));
    bind(t, NULL, integer(-1));
    t = run(t);
    err = t ? pasyn_task_error(t, &code, &extended, &message) : -1;
    ok(err == PASYN_ESQLITE && code == SQLITE_CONSTRAINT && extended == SQLITE_CONSTRAINT_CHECK,
       "a CHECK constraint: SQLite %d/%d, \"%s\"", code, extended, message);
    pasyn_task_free(t);

    t = task(PASYN_EXEC, "SELECT ?, ?");
    bind(t, NULL, integer(1));
    t = run(t);
    err = t ? pasyn_task_error(t, NULL, NULL, &message) : -1;
    ok(err == PASYN_EPROGRAMMING, "one value for two parameters: PASYN_EPROGRAMMING, \"%s\"",
       message);
    pasyn_task_free(t);
}

int main(void)
{
    char dir[] = "/tmp/pasyn-c-api-XXXXXX", path[64];
    if (!mkdtemp(dir))
        die("mkdtemp failed");
    snprintf(path, sizeof path, "%s/example.db", dir);

    hub = pasyn_hub_new();
    if (!hub)
        die("pasyn_hub_new failed");

    pasyn_options opts;
    pasyn_options_init(&opts);
    opts.readers = 2;
    opts.foreign_keys = 1;
    static const char *const pragmas[] = {"cache_size", "-4000", NULL};
    opts.pragmas = pragmas;
    pasyn_task *opened = task(PASYN_OPEN, NULL), *done;
    pasyn_task_set_user(opened, &done);
    pool = pasyn_open(path, &opts, hub, opened, 0);
    if (!pool)
        die("pasyn_open failed");
    in_flight++;
    if (wait_all() != 0)
        die("the open did not complete within 10 s");
    ok(succeeded(done), "a pool with 2 readers opens on %s (SQLite %s)", path,
       pasyn_sqlite_version());
    pasyn_task_free(done);

    create_and_insert();
    reads_side_by_side();
    columns_and_types();
    streamed_result();
    transaction();
    failures();

    pasyn_worker_stats stats[3];
    int workers = pasyn_stats(pool, stats, 3, NULL);
    ok(workers == 3 && stats[1].executed + stats[2].executed > 0,
       "the readers ran %" PRIu64 " tasks, the writer %" PRIu64,
       stats[1].executed + stats[2].executed, stats[0].executed);

    /* Close: intake stops, queued work finishes, the connections close, the threads end. */
    pasyn_task *closed = task(PASYN_CLOSE, NULL);
    pasyn_task_set_user(closed, &done);
    ok(pasyn_close(pool, closed, 0) == 0, "pasyn_close accepted");
    in_flight++;
    ok(wait_all() == 0 && succeeded(done) && pasyn_closed(pool), "the pool closed");
    pasyn_task_free(done);
    pasyn_task *late = task(PASYN_EXEC, "SELECT 1");
    ok(pasyn_submit(pool, late, 0) == PASYN_ECLOSED, "a submit after close: PASYN_ECLOSED");
    pasyn_task_free(late);
    pasyn_pool_free(pool);
    pasyn_hub_free(hub);

    /* The writer closed last checkpoints the WAL: its files are gone. */
    char wal[80];
    snprintf(wal, sizeof wal, "%s-wal", path);
    ok(access(wal, F_OK) != 0, "no -wal file left");
    unlink(path);
    rmdir(dir);

    printf("1..%d\n", ntests);
    return nfailed ? 1 : 0;
}
