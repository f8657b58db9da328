/*
 * conn.h - one SQLite connection as a worker uses it (conn.c), the statements cached on it
 * (stmt.c), what its authorizer learns about a statement being prepared (route.c), and the
 * writer's TEMP names that the other connections consult (temp_names.c).
 */
#ifndef PASYN_CONN_H
#define PASYN_CONN_H

#include "internal.h"

/* ---- what a prepared statement is (route.c) ----------------------------------------- */

/* What the authorizer reported while a statement was prepared (route.c, stmt_authorizer). */
enum seen_bits {
    SEEN_DML = 1,           /* INSERT/UPDATE/DELETE on a user table, at the top level */
    SEEN_NOT_READ = 2,      /* transaction control, savepoints, ATTACH/DETACH, PRAGMA, DDL, ... */
    SEEN_LOCAL = 4,         /* touches objects only the writer's connection has: TEMP or attached */
    SEEN_CONN_STATE = 8,    /* reads state of the connection that runs it (route.c) */
    SEEN_INSERT = 16,       /* a top-level INSERT: c->insert_names names its table and database */
    SEEN_SCHEMA = 32,       /* changes a schema: CREATE, DROP, ALTER, ATTACH, DETACH */
    SEEN_LOCKS_OUT = 64,    /* a PRAGMA that would lock the pool's readers out, denied */
    SEEN_BUSY_PRAGMA = 128, /* reads or sets PRAGMA busy_timeout (conn_prepare) */
    SEEN_SAVEPOINT = 256    /* SAVEPOINT, RELEASE or ROLLBACK TO: c->savepoint says which, and
                               c->insert_names holds its name ("name\0") */
};

/* What a savepoint statement does (the authorizer's SQLITE_SAVEPOINT: hooks.c follows them). */
enum savepoint_op { SAVEPOINT_NONE = 0, SAVEPOINT_BEGIN, SAVEPOINT_RELEASE, SAVEPOINT_ROLLBACK };

/* What a prepared statement is, as far as where and how it runs goes. */
enum stmt_kind {
    STMT_READ = 1, /* reads only the database: any reader may run it */
    STMT_DML = 2,  /* a plain INSERT, UPDATE or DELETE: may join a group commit, executemany */
    STMT_OTHER = 3 /* anything else: the writer runs it, alone */
};

/* ---- the writer's TEMP names (temp_names.c) ---------------------------------------- */

/* The names of the writer's TEMP tables and views, which the writer's connection finds before
 * main objects of the same names: the classifier and the readers, which have no TEMP schema,
 * treat a read of such a name as the writer's (route.c, reads_local). Set by the writer after a
 * schema change; `count` is readable without the lock. */
typedef struct temp_names {
    pthread_mutex_t mu; /* guards names and n */
    char **names;       /* n names, malloc'd */
    size_t n;
    _Atomic size_t count; /* n, readable without the lock: 0 spares readers the lock */
} temp_names;

int temp_names_has(temp_names *tn, const char *name); /* any thread */
/* Takes the names the writer's connection has now; with `keep`, also keeps those known
 * before (inside a transaction, whose changes other coroutines must not see yet). */
void temp_names_refresh(temp_names *tn, sqlite3 *writer_db, int keep); /* the writer */
void temp_names_free(temp_names *tn);

/* ---- SQL functions defined by the host (functions.c) ----------------------------- */

/* One pasyn_create_function. */
typedef struct fn_spec {
    char *name;  /* malloc'd */
    int nargs;   /* -1: any */
    int flags;   /* enum pasyn_function_flags */
    uint64_t id; /* the host's; 0 removes */
} fn_spec;

/* The pool's definitions, in the order they were made: each connection applies those it has not
 * yet before its next statement (functions_sync). */
typedef struct fn_registry {
    pthread_mutex_t mu; /* guards log, n, cap */
    fn_spec *log;
    size_t n, cap;
    _Atomic size_t gen; /* n, readable without the lock */
    int refused;        /* under hub->mu: the host answers no more calls */
    pasyn_hub *hub;     /* where calls go (its agg_context numbers aggregate groups) */
} fn_registry;

void fn_registry_init(fn_registry *fs, pasyn_hub *hub);
void fn_registry_free(fn_registry *fs);

/* ---- the connection and its statement cache ---------------------------------------- */

/* A link of a cache's recency list (a circular list around a sentinel); the first member of
 * cached_stmt and of route_entry (pool.h). */
typedef struct lru_link {
    struct lru_link *prev, *next;
} lru_link;

static inline void lru_unlink(lru_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

/* Makes `l` the most recent of the list whose sentinel is `head`. */
static inline void lru_push_front(lru_link *head, lru_link *l)
{
    l->next = head->next;
    l->prev = head;
    head->next->prev = l;
    head->next = l;
}

/* A prepared statement with what SQLite told us about it. */
typedef struct cached_stmt {
    lru_link lru;              /* first: a link is also its statement */
    struct cached_stmt *hnext; /* hash chain */
    sqlite3_stmt *stmt;
    int kind;                 /* enum stmt_kind */
    columns *cols;            /* described once per prepare, or NULL */
    int prepares;             /* SQLite's re-prepare count when cols was built */
    uint64_t run_ns;          /* how long it runs here: a moving average */
    uint64_t low_ns;          /* how long it runs here at least: a run shorter than it sets
                                 it, a longer one raises it by at most a quarter (a run that
                                 lost its core for a while counts little). What decides
                                 whether it may run inline (reader.c, note_low) */
    int first_named;          /* index of its first :a/@a/$a parameter, 0 when none */
    int setting;              /* a PRAGMA setting a read setting: 1 + its index */
    int changes_schema;       /* CREATE, DROP, ALTER, ATTACH, DETACH (SEEN_SCHEMA) */
    int classified_at;        /* SQLite's re-prepare count when kind was learned */
    int busy_pragma;          /* reads or sets PRAGMA busy_timeout (SEEN_BUSY_PRAGMA) */
    const char *insert_table; /* a top-level INSERT: its table and database (in sql's */
    const char *insert_db;    /* block, after the SQL), else NULL */
    int savepoint;            /* enum savepoint_op */
    const char *sp_name;      /* the savepoint's name (in sql's block, after the SQL), or NULL */
    uint32_t hash;            /* hash_sql of sql */
    size_t charge;            /* bytes it holds: this block, SQLite's memory for it, cols */
    int uncached;             /* finalized when given back: its text is too long to cache */
    int bound_bytes;          /* text or a blob is bound: stmt_release clears the bindings */
    size_t sql_len;
    char sql[]; /* the text it was prepared from, NUL-terminated ("" when uncached) */
} cached_stmt;

/* What a pool gives every connection it opens, whatever opens it (pool.h, pasyn_pool.setup):
 * the extensions loaded at open (conn_open) and the switch of the trace hook (hooks.c). */
typedef struct conn_setup {
    char **extensions; /* path, entry point ("": SQLite's default), ..., NULL; or NULL */
    _Atomic int trace; /* non-zero: armed connections report each statement's run (hooks.c) */
} conn_setup;

struct change_log;

/* One SQLite connection, its statement cache, the authorizer notes of its last prepare, and
 * what may stop the task running on it. Used by one thread at a time. */
typedef struct conn {
    sqlite3 *db;
    cached_stmt **buckets;            /* the cache's hash table, nbuckets a power of two */
    size_t nbuckets, count, capacity; /* statements cached now, and at most */
    size_t bytes, budget;             /* their charges now, and at most */
    lru_link lru;                     /* sentinel: lru.next is the most recent */
    cached_stmt *held;                /* acquired and kept for the next acquire of its text
                                         (stmt_hold), outside the cache; or NULL */
    unsigned seen;                    /* authorizer notes, bits of enum seen_bits */
    int setting;                      /* a PRAGMA setting a read setting: 1 + its index */
    int savepoint;                    /* with SEEN_SAVEPOINT: enum savepoint_op */
    buf insert_names;                 /* with SEEN_INSERT: "table\0database\0" of the INSERT */
    temp_names *temp_names;           /* the writer's TEMP names, on the other connections */
    int refuse_locks_out;             /* deny PRAGMAs that would lock other connections out */
    fn_registry *functions;           /* the host's SQL functions it takes, or NULL: none */
    int bind_in_place;                /* text and blobs bind without a copy (stmt.c, bind_one):
                                         each statement is given back before its task ends */
    size_t functions_seen;            /* how many of their definitions it applied */

    /* the running task, between conn_arm and conn_disarm */
    int armed;
    uint64_t deadline;                  /* now_ns() past which it stops; 0 none */
    const _Atomic uint64_t *interrupts; /* the pool's interrupt count (pasyn_interrupt), or NULL */
    uint64_t interrupts_seen;           /* that count when the task started */
    int timed_out;                      /* the progress handler stopped it at its deadline */
    uint64_t budget_deadline;           /* an inline run: now_ns() past which it is abandoned
                                           (reader.c, inline_run); 0 none */
    uint64_t budget_start, budget_ns;   /* the inline run's start (now_ns()) and budget */
    int budget_loaded;                  /* no core was spare at the run's start */
    int budget_by;                      /* what its budget counts, from its first progress
                                           check on (enum budget_by); 0 before */
    uint64_t budget_at;                 /* now_ns() at that check */
    uint64_t budget_lead;               /* the time from the start to that check, counted as
                                           held (stop_check) */
    uint64_t budget_base;               /* the thread's run_delay (BUDGET_HELD) or CPU time
                                           (BUDGET_CPU) at that check */
    cpu_sched sched;                    /* the thread's schedstat, kept open (cpu_run_delay) */
    int over_budget;                    /* the progress handler stopped it at budget_deadline:
                                           1, or 2 when the machine's load, not the read, may
                                           have taken the budget (stop_check) */

    /* waiting on a lock another process holds (busy_wait, after conn_busy_own) */
    int busy_ms;            /* how long a statement may wait: busy_timeout, in ms */
    int never_wait;         /* enum never_wait: a submitting thread's connection gets
                               SQLITE_BUSY at once, and loads no schema from disk while it
                               prepares unless may_load is set */
    int may_load;           /* never_wait: a worker loads the schema now (writer.c) */
    uint64_t busy_deadline; /* now_ns() past which a wait ends; 0: busy_ms from its start */
    uint64_t busy_cap;      /* a group commit's earliest member's deadline, or 0 */
    uint64_t busy_since;    /* when the current wait began */
    int gave_up;            /* a wait ended (SQLITE_BUSY) or a schema load was refused, since
                               the last prepare began (conn_prepare) */
    int busy_stopped;       /* the armed task's timeout or an interrupt ended its wait */

    /* the statement whose insert conn_watch_insert watches */
    const cached_stmt *inserting;
    int64_t rowid_before; /* last_insert_rowid() before it ran */
    int reinserted;       /* its table got a row with that rowid again */
    int watches_inserts;  /* the update hook is set for good: an INSERT was watched */

    /* hooks.c: trace and on_change */
    const conn_setup *setup;    /* the pool's, or NULL */
    int tracing;                /* the profile hook is installed */
    pasyn_task *task;           /* the armed task (conn_arm), which trace events go to */
    sqlite3_stmt *traced;       /* the task's statement being run: the one reported */
    struct change_log *changes; /* the writer's changes while on_change is on, or NULL */
} conn;

/* The connections a submitting thread uses (conn_busy_own): they never wait on a lock. */
enum never_wait {
    NEVER_WAIT_NO = 0,
    NEVER_WAIT_CLASSIFY = 1, /* the classifier: runs no statement at all (a VM instruction is
                                a schema load, refused) */
    NEVER_WAIT_RUN = 2       /* the inline connection: runs reads; a schema load is refused
                                while a statement is prepared (conn_prepare), not while one
                                runs (SQLite re-prepares it after a schema change) */
};

/* What an inline run's budget counts from its first progress check on (stop_check). */
enum budget_by {
    BUDGET_WALL = 1, /* a core was spare at its start: the wall time (nothing to read); if
                        none is at the deadline, it goes on as BUDGET_HELD from there */
    BUDGET_HELD = 2, /* none was: the time it held its thread, the wall time less the thread's
                        wait for a core (cpu_run_delay), for as long as that takes */
    BUDGET_CPU = 3   /* none was, and that cannot be read: its CPU time, for at most
                        BUDGET_WALL_MAX budgets of wall time */
};

/* conn.c: opening and closing, and the hooks that watch the running task. */

/* Opens a connection with SQLite's `flags` (plus NOMUTEX, URI and PRIVATECACHE); `interrupts`
 * (may be NULL) is the counter whose change stops a task armed before it. With `setup` (may be
 * NULL) it loads the pool's extensions (sqlite3_load_extension through the C API alone:
 * SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION is on only while they load, and SQL's
 * load_extension() stays off) and follows its trace switch. Until conn_busy_own,
 * SQLite's own busy handler waits up to `busy_ms` on each lock (the steps of the open). SQLite's
 * code, with *errmsg (malloc'd) on failure. The thread that will use the connection. */
int conn_open(conn *c, const char *path, int flags, int busy_ms, int cache_capacity,
              const _Atomic uint64_t *interrupts, const conn_setup *setup, char **errmsg);
void conn_close(conn *c);
/* Runs a statement that returns nothing; SQLite's code. */
int conn_exec(conn *c, const char *sql);
/* Rolls back the transaction open on the connection, if one is (an error may have ended it). */
void conn_rollback_open(conn *c);
/* Around running a task: the connection's progress handler stops it at its deadline (a task
 * with a timeout) or when the pool is interrupted meanwhile; disarming names the timeout in the
 * task's error when that is what stopped it. Nothing unarmed is ever stopped. */
void conn_arm(conn *c, const pasyn_task *t);
void conn_disarm(conn *c, pasyn_task *t);

/* Locks held by other processes (c3ref/busy_handler.html). Once the connection is open (with
 * the pragmas option, which may set busy_timeout), conn_busy_own puts the pool's busy handler in
 * place of SQLite's: a task armed on the connection waits, in SQLite's steps, until
 * busy_timeout after it was *submitted* (or its own timeout, or an interrupt: then it fails as
 * stopped), however long it queued and whatever else ran meanwhile; so it waits busy_timeout
 * once. Outside a task a wait lasts busy_timeout from its start, as SQLite's does. With
 * `never_wait` (the classifier, used by the submitting thread) nothing waits: SQLITE_BUSY at
 * once, and a schema that would have to be loaded from disk is refused (SQLITE_INTERRUPT), both
 * noted in c->gave_up, so that a worker takes the statement. The connection's thread. */
void conn_busy_own(conn *c, int never_wait);
/* On a NEVER_WAIT_RUN connection, around a prepare: with `refuse` set, any VM instruction (a
 * schema load) stops it and sets gave_up; unset, the task's progress handler is back. */
void conn_refuse_loads(conn *c, int refuse);
/* The deadline of a wait for task `t`: its submission plus busy_timeout. */
uint64_t conn_busy_deadline(const conn *c, const pasyn_task *t);
/* Caps every wait until conn_busy_cap(c, 0): a group commit's statements (BEGIN, COMMIT, its
 * members) wait no longer than its earliest member may. */
void conn_busy_cap(conn *c, uint64_t deadline);
/* Around a statement that reads or sets PRAGMA busy_timeout: SQLite's own handler while it is
 * prepared or run, so that it answers the pool's busy_timeout (ours reads as 0); after it, the
 * pool's again, with the timeout the statement left. Any worker's connection (conn_prepare);
 * never the classifier's. */
void conn_busy_pragma_enter(conn *c);
void conn_busy_pragma_leave(conn *c);
/* Around stepping a statement on the writer: whether it inserted a row itself (a top-level
 * INSERT that inserted, not a trigger's or an upsert's update), told without planting anything
 * in the connection: last_insert_rowid() changed, or the update hook (set from the first INSERT
 * on) saw the statement's table get a row with the same rowid again (REPLACE). */
void conn_watch_insert(conn *c, const cached_stmt *s);
int conn_inserted(conn *c, int64_t *rowid);

/* functions.c: applies the definitions made since the connection's last look (a cheap check
 * when none were). A definition SQLite refuses now (SQLITE_BUSY: a replaced function while a
 * statement of the connection is running, e.g. a streamed result) is tried again next time.
 * The connection's thread (the classifier: under its lock). */
void functions_sync(conn *c);
static inline void functions_check(conn *c)
{
    if (c->functions &&
        atomic_load_explicit(&c->functions->gen, memory_order_acquire) != c->functions_seen)
        functions_sync(c);
}

/* hooks.c, for every connection: around a task (conn_arm, conn_disarm) the trace hook follows
 * the pool's switch (installed or removed there, between statements) and reports the armed
 * task's statement (c->traced); the update hook's reports go to the writer's on_change log. */
void hooks_arm(conn *c, pasyn_task *t);
void hooks_disarm(conn *c);
void hooks_note_change(conn *c, int op, const char *db, const char *table, sqlite3_int64 rowid);
/* Installs the update hook while something listens (an INSERT was ever watched, the on_change
 * log), removes it otherwise. */
void conn_hook_updates(conn *c);

/* route.c: the authorizer every connection runs, and what it makes of a statement. */

int stmt_authorizer(void *conn, int action, const char *a, const char *b, const char *dbname,
                    const char *inner);
/* The kind of a statement just prepared (or re-prepared) on `c`, from sqlite3_stmt_readonly()
 * and the authorizer's notes of that prepare. */
int stmt_kind_of(conn *c, sqlite3_stmt *st);

/* stmt.c: running one statement on a connection. */

uint32_t hash_sql(const char *s, size_t n);
/* Sets up an empty cache of at most `capacity` statements and `capacity` *
 * PASYN_STMT_CACHE_SLOT_BYTES bytes (0: each is finalized when given back), or finalizes every
 * cached statement and frees the cache. 0, or -1 when out of memory. */
int stmt_cache_init(conn *c, int capacity);
void stmt_cache_free(conn *c);
/* The statement for the task's SQL from the cache, or a newly prepared one (SQL longer than
 * PASYN_CACHE_SQL_MAX is never looked up: always prepared anew). On failure fills
 * the task's error and returns NULL. A statement text holding more than one statement is refused
 * (PASYN_EPROGRAMMING). An empty one gives NULL with no error. */
cached_stmt *stmt_acquire(conn *c, pasyn_task *t);
/* sqlite3_prepare_v3 with the connection's notes of it: c->seen and c->setting from the
 * authorizer, c->gave_up when a lock or a schema load ended it (conn_busy_own); and PRAGMA
 * busy_timeout prepared as on a plain connection (conn_busy_pragma_enter). */
int conn_prepare(conn *c, const char *sql, int len, unsigned flags, sqlite3_stmt **st,
                 const char **tail);
/* Gives a statement back to the cache (reset, bindings cleared), which then drops its least
 * recently used statements while it holds more than its capacity or budget; a statement too
 * big to cache (an uncached one, or one charged more than a quarter of the budget) is
 * finalized instead. */
void stmt_release(conn *c, cached_stmt *s);
/* Keeps a statement just acquired (not yet bound or stepped) for the next stmt_acquire of the
 * same text, which then takes it without a look in the cache: the writer learns a statement's
 * kind before it runs it (group_commit.c, joins_batch). A statement held before goes back to
 * the cache. One thread at a time, like the connection. */
void stmt_hold(conn *c, cached_stmt *s);
/* Fills the task's error for a prepare that failed with `rc`: SQLite's, or why the authorizer
 * denied it. */
void stmt_fail_prepare(conn *c, pasyn_task *t, int rc);
/* Binds the task's parameters between byte offsets `from` and `to` of its buffer (one set);
 * 0, or fills the task's error. */
int stmt_bind(conn *c, cached_stmt *s, pasyn_task *t, size_t from, size_t to);
/* Steps into the task's rows; returns SQLITE_ROW when it stopped because the chunk is full
 * (chunk 0: no limit), SQLITE_DONE, or fills the task's error. Sets the task's column count,
 * and with `describe` its column names and types. */
int stmt_step_rows(conn *c, cached_stmt *s, pasyn_task *t, size_t chunk, int describe);
/* The statement's kind after it was stepped: when SQLite re-prepared it meanwhile (after a
 * schema change, made by another process too), the kind of the new statement. */
int stmt_kind_now(conn *c, cached_stmt *s);
/* Gives the task the statement's column names and types (described once per prepare; task.c). */
int task_set_columns(pasyn_task *t, cached_stmt *s);

#endif
