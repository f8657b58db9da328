/*
 * test_powerloss.c - the proof that a pool loses nothing it acknowledged when the power goes,
 * printed as TAP for prove(1). Uses the public C API (pasyn.h) and, to look at the files, plain
 * SQLite.
 *
 * Each round forks a child that registers the test VFS in power-loss mode (testvfs.h: nothing
 * reaches the real files but what an xSync wrote), opens a pool on the round's database (2
 * readers, the synchronous setting under test, a checkpoint every 50 WAL pages) and drives it
 * from one event loop as several submitters would, each waiting for its last task before the
 * next: six that INSERT one unique id at a time (group commits form), one that inserts eight at a
 * time (PASYN_MANY), two that move money between ten accounts in transactions of their own
 * (BEGIN IMMEDIATE, two UPDATEs, a row in the transfer log, COMMIT) and one that reads the total
 * (which must never change). Each id, and each transfer, whose task completed without error is
 * written to a pipe: the acknowledged ones. At a random durable operation (an xWrite, xTruncate
 * or xSync, counted by the VFS; or after a random time if that comes first) the child's power is
 * cut: what was not synced is dropped, or in half the rounds a random share of it is written (a
 * disk may have written some of what it was given), and the child is killed (SIGKILL).
 *
 * The parent then copies the files as the cut left them and opens the copy with plain SQLite
 * (no test VFS): PRAGMA integrity_check says ok; the accounts still hold the total; each
 * account's balance is its first balance plus what the transfer log moved in and out of it (so
 * no transaction was kept in part); every id and transfer acknowledged in this round is there
 * when synchronous = full, and those that are missing are counted when synchronous = normal; and
 * whatever was there after an earlier round is still there. The next child opens the files the
 * cut left (a hot WAL, a stale -shm): the pool's own open recovers them.
 *
 * PASYN_ROUNDS (default 60) rounds at synchronous = full, half as many at normal; PASYN_SEED
 * repeats a run (the seed is printed).
 *
 *   make build/lua5.4/test_powerloss && build/lua5.4/test_powerloss
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sqlite3.h>
#include "pasyn.h"
#include "tap.h"
#include "testvfs.h"

#define ACCOUNTS 10
#define BALANCE 1000
#define FAILED 3 /* the child's status when something went wrong (a power cut kills it) */
/* A random durable operation of the child's first MAX_OPS cuts its power, unless a random time
 * of up to MAX_MS comes first. */
#define MAX_OPS 1500
#define MAX_MS 400

enum ack_kind {
    ACK_ID = 1,
    ACK_TRANSFER = 2,
    ACK_KEEP = 3, /* not acknowledgements: the share of unsynced writes the cut keeps, */
    ACK_LATE = 4  /* and the cut comes at the chosen time, not at a durable operation */
};

/* A small seeded generator (splitmix64). */
static uint64_t rng_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15u;
    return testvfs_mix(*state);
}

static uint64_t rng_below(uint64_t *state, uint64_t n)
{
    return rng_next(state) % n;
}

/* ============================ the child: a pool until the power goes ===================== */

static void child_fail(const char *what, const pasyn_task *t)
{
    const char *message = "";
    int code = 0;
    if (t)
        pasyn_task_error(t, &code, NULL, &message);
    fprintf(stderr, "# child: %s: SQLite %d, %s\n", what, code, message);
    _exit(FAILED);
}

enum sub_kind { SUB_INSERT, SUB_MANY, SUB_TRANSFER, SUB_READ };

/* One submitter, as a coroutine of a host would be: one task in flight at a time. */
typedef struct submitter {
    int kind;
    int step;      /* SUB_TRANSFER: the next statement of its transaction */
    uint64_t next; /* the next id it inserts, or transfer it makes */
    uint64_t rng;
    int64_t amount, src, dst; /* the transfer under way */
    int inflight;
} submitter;

static pasyn_pool *child_pool;
static int ack_fd;

static void ack(int kind, uint64_t id)
{
    uint64_t rec = (uint64_t)kind << 56 | id;
    /* 8 bytes: one write to a pipe, whole or not at all (PIPE_BUF) */
    if (write(ack_fd, &rec, sizeof rec) != (ssize_t)sizeof rec)
        _exit(FAILED);
}

static pasyn_task *new_task(int kind, const char *sql)
{
    pasyn_task *t = pasyn_task_new(kind, sql, sql ? strlen(sql) : 0);
    if (!t)
        child_fail("out of memory", NULL);
    return t;
}

static void bind_int(pasyn_task *t, int64_t v)
{
    pasyn_value val = {.type = PASYN_INT, .i = v};
    if (pasyn_task_bind(t, NULL, 0, &val) != 0)
        child_fail("out of memory", NULL);
}

static void bind_text(pasyn_task *t, const char *s)
{
    pasyn_value val = {.type = PASYN_TEXT, .p = s, .n = strlen(s)};
    if (pasyn_task_bind(t, NULL, 0, &val) != 0)
        child_fail("out of memory", NULL);
}

static const char *const transfer_sql[] = {
    "BEGIN IMMEDIATE",
    "UPDATE accounts SET balance = balance - ? WHERE id = ?",
    "UPDATE accounts SET balance = balance + ? WHERE id = ?",
    "INSERT INTO transfers (id, src, dst, amount) VALUES (?, ?, ?, ?)",
    "COMMIT",
};

static void submit_next(submitter *s, int index)
{
    static const char payload[] = "a row that must outlive the power cut, if acknowledged";
    pasyn_task *t;
    switch (s->kind) {
    case SUB_INSERT:
        t = new_task(PASYN_EXEC, "INSERT INTO items (id, payload) VALUES (?, ?)");
        bind_int(t, (int64_t)s->next);
        bind_text(t, payload);
        break;
    case SUB_MANY:
        t = new_task(PASYN_MANY, "INSERT INTO items (id, payload) VALUES (?, ?)");
        for (int i = 0; i < 8; i++) {
            bind_int(t, (int64_t)(s->next + (uint64_t)i));
            bind_text(t, payload);
            if (pasyn_task_next_set(t) != 0)
                child_fail("out of memory", NULL);
        }
        break;
    case SUB_TRANSFER:
        if (s->step == 0) {
            s->src = 1 + (int64_t)rng_below(&s->rng, ACCOUNTS);
            s->dst = 1 + (int64_t)rng_below(&s->rng, ACCOUNTS - 1);
            s->dst += s->dst >= s->src;
            s->amount = 1 + (int64_t)rng_below(&s->rng, 50);
        }
        t = new_task(PASYN_EXEC, transfer_sql[s->step]);
        pasyn_task_set_owner(t, 100 + (uint64_t)index);
        if (s->step == 1 || s->step == 2) {
            bind_int(t, s->amount);
            bind_int(t, s->step == 1 ? s->src : s->dst);
        } else if (s->step == 3) {
            bind_int(t, (int64_t)s->next);
            bind_int(t, s->src);
            bind_int(t, s->dst);
            bind_int(t, s->amount);
        }
        break;
    default:
        t = new_task(PASYN_EXEC, "SELECT count(*), sum(balance) FROM accounts");
        break;
    }
    pasyn_task_set_user(t, s);
    if (pasyn_submit(child_pool, t, 0) != 0)
        child_fail("submit refused", t);
    s->inflight = 1;
}

static void completed(submitter *s, pasyn_task *t)
{
    s->inflight = 0;
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        child_fail("a task failed", t);
    switch (s->kind) {
    case SUB_INSERT:
        ack(ACK_ID, s->next);
        s->next++;
        break;
    case SUB_MANY:
        for (int i = 0; i < 8; i++)
            ack(ACK_ID, s->next + (uint64_t)i);
        s->next += 8;
        break;
    case SUB_TRANSFER:
        if (++s->step == 5) {
            ack(ACK_TRANSFER, s->next);
            s->next++;
            s->step = 0;
        }
        break;
    default: {
        size_t nrows;
        const unsigned char *at = pasyn_task_rows(t, &nrows);
        pasyn_value count, sum;
        at = pasyn_row_value(at, &count);
        pasyn_row_value(at, &sum);
        if (nrows != 1 || count.i != ACCOUNTS || sum.i != (int64_t)ACCOUNTS * BALANCE)
            child_fail("a read saw the total change", NULL);
        break;
    }
    }
    pasyn_task_free(t);
}

static _Noreturn void child(const char *path, const char *sync, uint64_t round, uint64_t seed,
                            int fd)
{
    ack_fd = fd;
    uint64_t rng = seed;
    uint64_t crash_ops = 1 + rng_below(&rng, MAX_OPS);
    int crash_ms = (int)rng_below(&rng, MAX_MS);
    unsigned keep = rng_below(&rng, 2) ? (unsigned)rng_below(&rng, 101) : 0;
    if (testvfs_register() != SQLITE_OK)
        child_fail("testvfs_register failed", NULL);
    testvfs_powerloss(1);
    testvfs_crash_at(crash_ops, keep, rng_next(&rng));
    ack(ACK_KEEP, keep);

    pasyn_hub *hub = pasyn_hub_new();
    if (!hub)
        child_fail("pasyn_hub_new failed", NULL);
    pasyn_options opts;
    pasyn_options_init(&opts);
    opts.readers = 2;
    opts.synchronous = sync;
    static const char *const pragmas[] = {"wal_autocheckpoint", "50", NULL};
    opts.pragmas = pragmas;
    pasyn_task *open_task = new_task(PASYN_OPEN, NULL);
    double deadline = now_s() + crash_ms / 1000.0;
    child_pool = pasyn_open(path, &opts, hub, open_task, 1);
    if (!child_pool)
        child_fail("pasyn_open failed", NULL);
    pasyn_task_wait(open_task);
    if (pasyn_task_error(open_task, NULL, NULL, NULL) != PASYN_OK)
        child_fail("the pool did not open", open_task);
    pasyn_task_free(open_task);

    /* ids of this round: round << 32 | submitter << 24 | serial */
    submitter subs[10];
    for (int i = 0; i < 10; i++) {
        subs[i] = (submitter){
            .kind = i < 6    ? SUB_INSERT
                    : i == 6 ? SUB_MANY
                    : i < 9  ? SUB_TRANSFER
                             : SUB_READ,
            .next = round << 32 | (uint64_t)i << 24,
            .rng = testvfs_mix(seed + (uint64_t)i),
        };
    }
    for (;;) {
        for (int i = 0; i < 10; i++)
            if (!subs[i].inflight)
                submit_next(&subs[i], i);
        if (now_s() >= deadline) {
            ack(ACK_LATE, 0);
            testvfs_crash(keep, rng_next(&rng));
        }
        if (pasyn_hub_poll(hub, 10000) == 0)
            child_fail("no completion within 10 s", NULL);
        for (pasyn_task *t = pasyn_hub_drain(hub), *next; t; t = next) {
            next = pasyn_task_next(t);
            completed(pasyn_task_user(t), t);
        }
    }
}

/* ============================ the parent: what the files kept ============================ */

typedef struct ids {
    uint64_t *v;
    size_t n, cap;
} ids;

static void ids_add(ids *s, uint64_t id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) {
            printf("Bail out! out of memory\n");
            exit(2);
        }
    }
    s->v[s->n++] = id;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int ids_has(const ids *sorted, uint64_t id)
{
    /* bsearch's base must not be NULL, even for no elements (C11 7.22.5) */
    return sorted->n > 0 && bsearch(&id, sorted->v, sorted->n, sizeof id, cmp_u64) != NULL;
}

/* The ids of a table, sorted. */
static int load_ids(sqlite3 *db, const char *sql, ids *out)
{
    sqlite3_stmt *st;
    out->n = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ids_add(out, (uint64_t)sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int64_t one_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = INT64_MIN;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static char *one_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    char *v = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static int copy_file(const char *from, const char *to)
{
    unlink(to);
    int in = open(from, O_RDONLY);
    if (in < 0)
        return errno == ENOENT ? 0 : -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char buf[65536];
    ssize_t n;
    int rc = out < 0 ? -1 : 0;
    while (rc == 0 && (n = read(in, buf, sizeof buf)) > 0)
        rc = write(out, buf, (size_t)n) == n ? 0 : -1;
    close(in);
    if (out >= 0)
        close(out);
    return rc;
}

/* Copies the database's files as they are (the -shm aside: recovery rebuilds it). */
static int copy_database(const char *from, const char *to)
{
    static const char *const suffixes[] = {"", "-wal", "-journal"};
    char a[600], b[600];
    for (size_t i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s%s", from, suffixes[i]);
        snprintf(b, sizeof b, "%s%s", to, suffixes[i]);
        if (copy_file(a, b) != 0)
            return -1;
    }
    snprintf(b, sizeof b, "%s-shm", to);
    unlink(b);
    return 0;
}

static void remove_database(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char a[600];
    for (size_t i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s%s", path, suffixes[i]);
        unlink(a);
    }
}

static int setup_database(const char *path)
{
    sqlite3 *db;
    remove_database(path);
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(
            db,
            "PRAGMA journal_mode = wal;"
            "CREATE TABLE items (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);"
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
            "CREATE TABLE transfers (id INTEGER PRIMARY KEY, src INTEGER NOT NULL,"
            "  dst INTEGER NOT NULL, amount INTEGER NOT NULL);"
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
            "  WHERE i < 10) INSERT INTO accounts SELECT i, 1000 FROM n",
            NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

typedef struct figures {
    int rounds, by_ops, by_time, kept_some;
    uint64_t acks, lost, checked_again, max_rows;
} figures;

/* Runs one child until its power cut; collects what it acknowledged. 0, or -1 (diagnosed). */
static int run_child(const char *path, const char *sync, uint64_t round, uint64_t seed,
                     ids *acked_ids, ids *acked_transfers, figures *fig)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        alarm(0);
        child(path, sync, round, seed, fds[1]);
    }
    close(fds[1]);
    acked_ids->n = acked_transfers->n = 0;
    unsigned char buf[4096];
    size_t have = 0;
    double give_up = now_s() + 30;
    int killed = 0, late = 0;
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int n = poll(&p, 1, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            if (now_s() > give_up) {
                kill(pid, SIGKILL);
                killed = 1;
                break;
            }
            continue;
        }
        ssize_t r = read(fds[0], buf + have, sizeof buf - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        size_t whole = have / 8 * 8;
        for (size_t at = 0; at < whole; at += 8) {
            uint64_t rec;
            memcpy(&rec, buf + at, 8);
            uint64_t id = rec & ((1ull << 56) - 1);
            if (rec >> 56 == ACK_KEEP)
                fig->kept_some += id > 0;
            else if (rec >> 56 == ACK_LATE)
                late = 1;
            else
                ids_add(rec >> 56 == ACK_ID ? acked_ids : acked_transfers, id);
        }
        memmove(buf, buf + whole, have - whole);
        have -= whole;
    }
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int cut = !killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    fig->by_ops += cut && !late;
    fig->by_time += cut && late;
    if (!cut) {
        diag("round %" PRIu64 ": the child %s (status %d)", round,
             killed ? "hung and was killed" : "did not end by its power cut", status);
        return -1;
    }
    return 0;
}

/* Checks a copy of the files the cut left. Returns 0 when every check held. */
static int check_round(const char *path, const char *copy, int full, uint64_t round,
                       const ids *acked_ids, const ids *acked_transfers, ids *known_ids,
                       ids *known_transfers, figures *fig)
{
    if (copy_database(path, copy) != 0) {
        diag("round %" PRIu64 ": copying the files failed", round);
        return -1;
    }
    sqlite3 *db;
    if (sqlite3_open_v2(copy, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        diag("round %" PRIu64 ": open: %s", round, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    int bad = 0;
    char *integrity = one_text(db, "PRAGMA integrity_check");
    for (char *c = integrity; c && *c; c++)
        if (*c == '\n')
            *c = ' '; /* one diag line */
    if (!integrity || strcmp(integrity, "ok") != 0) {
        diag("round %" PRIu64 ": integrity_check: %s", round, integrity ? integrity : "(none)");
        bad = 1;
    }
    free(integrity);
    int64_t total = one_int(db, "SELECT sum(balance) FROM accounts");
    int64_t accounts = one_int(db, "SELECT count(*) FROM accounts");
    if (total != (int64_t)ACCOUNTS * BALANCE || accounts != ACCOUNTS) {
        diag("round %" PRIu64 ": %" PRId64 " accounts hold %" PRId64, round, accounts, total);
        bad = 1;
    }
    int64_t unexplained = one_int(
        db, "SELECT count(*) FROM accounts a WHERE a.balance != 1000"
            " - (SELECT coalesce(sum(amount), 0) FROM transfers WHERE src = a.id)"
            " + (SELECT coalesce(sum(amount), 0) FROM transfers WHERE dst = a.id)");
    if (unexplained != 0) {
        diag("round %" PRIu64 ": %" PRId64 " balances differ from the transfer log", round,
             unexplained);
        bad = 1;
    }
    ids present_ids = {0}, present_transfers = {0};
    if (load_ids(db, "SELECT id FROM items ORDER BY id", &present_ids) != 0 ||
        load_ids(db, "SELECT id FROM transfers ORDER BY id", &present_transfers) != 0) {
        diag("round %" PRIu64 ": reading the ids failed: %s", round, sqlite3_errmsg(db));
        bad = 1;
    }
    sqlite3_close(db);
    remove_database(copy);
    if (present_ids.n > fig->max_rows)
        fig->max_rows = present_ids.n;

    /* What an earlier round found must still be there, in either mode. */
    for (size_t i = 0; i < known_ids->n; i++)
        if (!ids_has(&present_ids, known_ids->v[i])) {
            diag("round %" PRIu64 ": id %#" PRIx64 " seen before is gone", round, known_ids->v[i]);
            bad = 1;
        }
    for (size_t i = 0; i < known_transfers->n; i++)
        if (!ids_has(&present_transfers, known_transfers->v[i])) {
            diag("round %" PRIu64 ": transfer %#" PRIx64 " seen before is gone", round,
                 known_transfers->v[i]);
            bad = 1;
        }
    fig->checked_again += known_ids->n + known_transfers->n;
    /* This round's acknowledgements. */
    uint64_t lost = 0;
    for (int k = 0; k < 2; k++) {
        const ids *acked = k ? acked_transfers : acked_ids;
        const ids *present = k ? &present_transfers : &present_ids;
        ids *known = k ? known_transfers : known_ids;
        for (size_t i = 0; i < acked->n; i++) {
            if (ids_has(present, acked->v[i])) {
                ids_add(known, acked->v[i]);
            } else {
                if (full && lost < 5)
                    diag("round %" PRIu64 ": acknowledged %s %#" PRIx64 " is missing", round,
                         k ? "transfer" : "id", acked->v[i]);
                lost++;
            }
        }
    }
    fig->acks += acked_ids->n + acked_transfers->n;
    fig->lost += lost;
    if (full && lost)
        bad = 1;
    free(present_ids.v);
    free(present_transfers.v);
    return bad ? -1 : 0;
}

/* Rounds on one database with one synchronous setting. */
static void run_mode(const char *dir, const char *sync, int rounds, uint64_t seed)
{
    int full = strcmp(sync, "full") == 0;
    char path[512], copy[512];
    snprintf(path, sizeof path, "%s/%s.db", dir, sync);
    snprintf(copy, sizeof copy, "%s/%s-check.db", dir, sync);
    if (!ok(setup_database(path) == SQLITE_OK, "synchronous = %s: the database is made", sync))
        return;
    ids acked_ids = {0}, acked_transfers = {0}, known_ids = {0}, known_transfers = {0};
    figures fig = {0};
    int failed_rounds = 0;
    double started = now_s();
    for (int r = 1; r <= rounds; r++) {
        uint64_t round_seed = testvfs_mix(seed ^ testvfs_mix((uint64_t)r * 2 + (uint64_t)full));
        if (run_child(path, sync, (uint64_t)r, round_seed, &acked_ids, &acked_transfers, &fig) !=
                0 ||
            check_round(path, copy, full, (uint64_t)r, &acked_ids, &acked_transfers, &known_ids,
                        &known_transfers, &fig) != 0)
            failed_rounds++;
        fig.rounds++;
        if (failed_rounds >= 3)
            break;
    }
    ok(failed_rounds == 0, "synchronous = %s: %d rounds, integrity ok, total and log kept%s", sync,
       fig.rounds, full ? ", every acknowledged write kept" : "");
    diag("synchronous = %s: %d rounds in %.1f s, %" PRIu64 " acknowledgements checked, %" PRIu64
         " lost, %" PRIu64 " rows checked again after later cuts, up to %" PRIu64 " rows",
         sync, fig.rounds, now_s() - started, fig.acks, fig.lost, fig.checked_again, fig.max_rows);
    diag("synchronous = %s: power cut at a durable operation in %d rounds, at a time in %d; "
         "a share of the unsynced writes kept in %d",
         sync, fig.by_ops, fig.by_time, fig.kept_some);
    if (full)
        ok(fig.lost == 0, "synchronous = full: acknowledged writes lost: %" PRIu64, fig.lost);
    else
        ok(1, "synchronous = normal: acknowledged writes lost (allowed): %" PRIu64, fig.lost);
    ok(fig.acks > 0, "the children acknowledged writes before their power cuts: %" PRIu64,
       fig.acks);
    free(acked_ids.v);
    free(acked_transfers.v);
    free(known_ids.v);
    free(known_transfers.v);
    remove_database(path);
}

int main(void)
{
    tap_start("Bail out! test_powerloss: watchdog expired\n", 600);
    const char *e = getenv("PASYN_ROUNDS");
    int rounds = e && atoi(e) > 0 ? atoi(e) : 60;
    e = getenv("PASYN_SEED");
    uint64_t seed = e && *e ? strtoull(e, NULL, 0)
                            : testvfs_mix((uint64_t)time(NULL) ^ (uint64_t)getpid());
    diag("seed %" PRIu64 " (PASYN_SEED=%" PRIu64 " repeats it), %d rounds", seed, seed, rounds);
    char dir[256];
    if (tap_scratch_dir("pasyn-powerloss", dir, sizeof dir) != 0) {
        printf("Bail out! no scratch folder\n");
        return 2;
    }
    run_mode(dir, "full", rounds, seed);
    run_mode(dir, "normal", (rounds + 1) / 2, seed);
    rmdir(dir);
    return tap_done();
}
