/*
 * internal.h - the core's private structures: tasks, queues, connections, the pool. Shared by
 * the files of c/ and by the C unit tests; never installed.
 */
#ifndef PASYN_INTERNAL_H
#define PASYN_INTERNAL_H

#include <pthread.h>
#include <sys/un.h>
#include <sched.h>
#include <time.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include "pasyn.h"

/* A growable byte buffer. It may start in storage it does not own (inside its task): then
 * `borrowed` is set, and the first growth moves it to memory of its own. */
typedef struct buf {
    unsigned char *p;
    size_t len, cap;
    int borrowed;
} buf;

int buf_reserve(buf *b, size_t extra);
int buf_put(buf *b, const void *p, size_t n);
void buf_free(buf *b);
int encode_value(buf *b, const pasyn_value *v);

enum notify { NOTIFY_HUB = 0, NOTIFY_SYNC = 1, NOTIFY_NONE = 2 };

/* The column names and declared types of a prepared statement, built once per prepare and
 * shared by its cache entry and every task that ran it; the last of them frees it. */
typedef struct columns {
    _Atomic int refs;
    int n;
    uint64_t id;            /* never reused: pasyn_task_columns_id */
    const char *text[];     /* n names, then n declared types (NULL: none); the strings follow */
} columns;

struct pasyn_task {
    pasyn_task *next;       /* queue and hub link */
    pasyn_task *prev;       /* writer queue only */
    int kind;
    int notify;             /* enum notify */
    _Atomic int done;       /* set for NOTIFY_SYNC completions */
    pasyn_hub *hub;         /* where it completes */
    uint64_t owner;
    void *user;
    char *sql;
    size_t sql_len;

    buf params;             /* per value: u32 name length, name, encoded value */
    uint32_t nsets;         /* PASYN_MANY: parameter sets closed by pasyn_task_next_set */
    int lone_null_optional; /* a single NULL that may stand for "no parameters" */
    int allow_packs;        /* a set whose lone parameter is n may be that many NULLs */
    int no_owner_wait;      /* fails rather than wait behind another owner's transaction */
    int route_known;        /* the route cache knew it at submit: workers need not learn it */
    int long_read;          /* a read whose SQL is a long read (LONG_READ_NS), as last learned */
    uint64_t timeout_ns;    /* 0, or how long it may run */
    buf set_ends;           /* PASYN_MANY: offsets (size_t) where each set ends */

    /* results */
    int err;                /* enum pasyn_error */
    int code, extended;
    char *message;
    int ncols;
    columns *cols;          /* their names and types, when described */
    buf rows;
    size_t nrows;
    int64_t rowcount;
    int has_rowid;
    int64_t rowid;
    uint64_t stream;        /* streamed result: (reader index + 1) << 48 | serial */
};

/* A mutex-protected deque of tasks: the owner takes from the front, thieves from the back. */
typedef struct deque {
    pthread_mutex_t mu;
    pasyn_task **ring;
    size_t head, len, cap;
    _Atomic size_t size;    /* len, readable without the lock */
} deque;

int deque_init(deque *d);
void deque_destroy(deque *d);
int deque_push_back(deque *d, pasyn_task *t);      /* locks */
pasyn_task *deque_pop_front(deque *d);              /* locks */
pasyn_task *deque_pop_back(deque *d);               /* locks */
pasyn_task *deque_take_short(deque *d, size_t *at); /* locks: the first that is no long read */
int deque_push_back_locked(deque *d, pasyn_task *t);
pasyn_task *deque_pop_front_locked(deque *d);

struct pasyn_hub {
    pthread_mutex_t mu;
    pthread_cond_t sync_cv;     /* NOTIFY_SYNC completions */
    pasyn_task *head, *tail;
    _Atomic int pending;        /* head != NULL, readable without the lock */
    _Atomic int watching;       /* the host spins on pending in pasyn_hub_poll */
    int signalled;              /* under mu: the descriptor (and sfd) written since the last drain */
    int efd;                    /* eventfd, or the read end of a pipe */
    int wfd;                    /* the write end (== efd for eventfd) */
    int sfd;                    /* under mu: a connected socket signalled too (pasyn_hub_accept),
                                 * or -1 */
    int lfd;                    /* listening socket of pasyn_hub_listen, or -1; owner thread */
    char lpath[sizeof ((struct sockaddr_un *)0)->sun_path]; /* its path, "" when none */
};

void hub_complete(pasyn_hub *hub, pasyn_task *t); /* any worker thread */

/* What the authorizer reported while a statement was prepared (conn.c, authorizer). */
enum seen_bits {
    SEEN_DML = 1,        /* INSERT/UPDATE/DELETE on a user table, at the top level */
    SEEN_NOT_READ = 2,   /* transaction control, savepoints, ATTACH/DETACH, PRAGMA, DDL, ... */
    SEEN_LOCAL = 4,      /* touches objects only the writer's connection has: TEMP or attached */
    SEEN_CONN_STATE = 8, /* reads state of the connection that runs it (see reads_conn_state) */
    SEEN_INSERT = 16,    /* a top-level INSERT: c->insert_names names its table and database */
    SEEN_SCHEMA = 32,    /* changes a schema: CREATE, DROP, ALTER, ATTACH, DETACH */
    SEEN_LOCKS_OUT = 64  /* a PRAGMA that would lock the pool's readers out, denied */
};

/* A prepared statement with what SQLite told us about it. */
enum stmt_class { CLASS_READ = 1, CLASS_DML = 2, CLASS_OTHER = 3 };

/* The names of the writer's TEMP tables and views, which the writer's connection finds before
 * main objects of the same names: the classifier and the readers, which have no TEMP schema,
 * treat a read of such a name as the writer's (conn.c, reads_local). Set by the writer after a
 * schema change; `count` is readable without the lock. */
typedef struct temp_names {
    pthread_mutex_t mu;
    char **names;
    size_t n;
    _Atomic size_t count;
} temp_names;

int temp_names_has(temp_names *tn, const char *name);              /* any thread */
/* Takes the names the writer's connection has now; with `keep`, also keeps those known
 * before (inside a transaction, whose changes other coroutines must not see yet). */
void temp_names_refresh(temp_names *tn, sqlite3 *writer_db, int keep); /* the writer */
void temp_names_free(temp_names *tn);

/* A link of the cache's recency list; the first member of cached_stmt. */
typedef struct lru_link {
    struct lru_link *prev, *next;
} lru_link;

typedef struct cached_stmt {
    lru_link lru;                       /* first: a link is also its statement */
    struct cached_stmt *hnext;          /* hash chain */
    sqlite3_stmt *stmt;
    int klass;                          /* enum stmt_class */
    columns *cols;                      /* described once per prepare, or NULL */
    int prepares;                       /* SQLite's re-prepare count when cols was built */
    uint64_t run_ns;                    /* how long it runs here: a moving average */
    int first_named;                    /* index of its first :a/@a/$a parameter, 0 when none */
    int setting;                        /* a PRAGMA setting a read setting: 1 + its index */
    int changes_schema;                 /* CREATE, DROP, ALTER, ATTACH, DETACH (SEEN_SCHEMA) */
    int classified_at;                  /* SQLite's re-prepare count when klass was learned */
    const char *insert_table;           /* a top-level INSERT: its table and database (in sql's */
    const char *insert_db;              /* block, after the SQL), else NULL */
    uint32_t hash;
    size_t sql_len;
    char sql[];
} cached_stmt;

/* One SQLite connection, its statement cache, the authorizer notes of its last prepare, and
 * what may stop the task running on it. */
typedef struct conn {
    sqlite3 *db;
    cached_stmt **buckets;
    size_t nbuckets, count, capacity;
    lru_link lru;                       /* sentinel: lru.next is the most recent */
    unsigned seen;                      /* authorizer notes, bits of enum seen_bits */
    int setting;                        /* a PRAGMA setting a read setting: 1 + its index */
    buf insert_names;                   /* with SEEN_INSERT: "table\0database\0" of the INSERT */
    temp_names *temp_names;             /* the writer's TEMP names, on the other connections */
    int refuse_locks_out;               /* deny PRAGMAs that would lock other connections out */

    /* the running task, between conn_arm and conn_disarm */
    int armed;
    uint64_t deadline;                  /* now_ns() past which it stops; 0 none */
    const _Atomic uint64_t *interrupts; /* the pool's interrupt count (pasyn_interrupt), or NULL */
    uint64_t interrupts_seen;           /* that count when the task started */
    int timed_out;                      /* the progress handler stopped it at its deadline */

    /* the statement whose insert conn_watch_insert watches */
    const cached_stmt *inserting;
    int64_t rowid_before;               /* last_insert_rowid() before it ran */
    int reinserted;                     /* its table got a row with that rowid again */
} conn;

/* Opens a connection with SQLite's `flags` (plus NOMUTEX, URI and PRIVATECACHE); `interrupts`
 * (may be NULL) is the counter whose change stops a task armed before it. SQLite's code, with
 * *errmsg (malloc'd) on failure. The thread that will use the connection. */
int conn_open(conn *c, const char *path, int flags, int busy_ms, int cache_capacity,
              const _Atomic uint64_t *interrupts, char **errmsg);
void conn_close(conn *c);
/* Runs a statement that returns nothing; SQLite's code. */
int conn_exec(conn *c, const char *sql);
/* Fills the task's error for a prepare that failed with `rc`: SQLite's, or why the authorizer
 * denied it. */
void conn_fail_prepare(conn *c, pasyn_task *t, int rc);
/* The statement for `sql` from the cache, or a newly prepared one. On failure fills the
 * task's error and returns NULL. A statement text holding more than one statement is refused
 * (PASYN_EPROGRAMMING). An empty one gives NULL with no error. */
cached_stmt *conn_acquire(conn *c, pasyn_task *t);
/* Around stepping a statement on the writer: whether it inserted a row itself (a top-level
 * INSERT that inserted, not a trigger's or an upsert's update), told without planting anything
 * in the connection: last_insert_rowid() changed, or the update hook (set meanwhile) saw the
 * statement's table get a row with the same rowid again (REPLACE). */
void conn_watch_insert(conn *c, const cached_stmt *s);
int conn_inserted(conn *c, int64_t *rowid);
/* The statement's class after it was stepped: when SQLite re-prepared it meanwhile (after a
 * schema change, made by another process too), the class of the new statement. */
int conn_class_now(conn *c, cached_stmt *s);
/* Gives a statement back to the cache (reset, bindings cleared). */
void conn_release(conn *c, cached_stmt *s);
/* Binds parameter set `set` of the task; 0, or fills the task's error. */
int conn_bind(conn *c, cached_stmt *s, pasyn_task *t, size_t from, size_t to);
/* Steps into the task's rows; returns SQLITE_ROW when it stopped because the chunk is full
 * (chunk 0: no limit), SQLITE_DONE, or fills the task's error. Sets the task's column count,
 * and with `describe` its column names and types. */
int conn_step_rows(conn *c, cached_stmt *s, pasyn_task *t, size_t chunk, int describe);
/* Around running a task: the connection's progress handler stops it at its deadline (a task
 * with a timeout) or when the pool is interrupted meanwhile; disarming names the timeout in the
 * task's error when that is what stopped it. Nothing unarmed is ever stopped. */
void conn_arm(conn *c, const pasyn_task *t);
void conn_disarm(conn *c, pasyn_task *t);
/* Gives the task the statement's column names and types (described once per prepare). */
int task_set_columns(pasyn_task *t, cached_stmt *s);
void columns_put(columns *c);
void task_fail(pasyn_task *t, int err, int code, int extended, const char *message);
void task_fail_sqlite(pasyn_task *t, sqlite3 *db, int rc);
void task_fail_programming(pasyn_task *t, const char *fmt, ...);
void task_reset_result(pasyn_task *t);

/* A small cache of statement routes, keyed by SQL text. */
enum route { ROUTE_UNKNOWN = 0, ROUTE_READ = 1, ROUTE_WRITE = 2 };

typedef struct route_entry {
    struct route_entry *next;
    uint32_t hash;
    int route;
    int long_read;          /* a long read, as a reader last found (LONG_READ_NS) */
    size_t len;
    char sql[];
} route_entry;

typedef struct route_cache {
    pthread_mutex_t mu;
    route_entry **buckets;
    size_t nbuckets, count;
    uint64_t gen;           /* routes_forget calls: a verdict learned before one is not kept */
} route_cache;

uint32_t hash_sql(const char *s, size_t n);

typedef struct reader {
    pasyn_pool *pool;
    int index;
    pthread_t thread;
    int started;
    conn c;
    deque q;                /* its own tasks; others may steal from the back */
    deque pinned;           /* tasks that only this reader may run (streams) */
    pthread_cond_t cv;      /* parks on q.mu */
    int sleeping;           /* under q.mu */
    _Atomic int sleeping_hint; /* the same, readable without the lock */
    _Atomic int spinning;   /* watching for work before parking */
    int wake;               /* under q.mu: a wake-up is pending */
    cached_stmt *stream;    /* the statement of the streamed result it holds */
    uint64_t stream_id;
    _Atomic uint64_t executed, stolen;
    int overtaken;          /* short reads taken in a row before a long one of its own */
    uint64_t settings_gen;  /* the pool's settings_gen it applied last */
    _Atomic int streaming;
} reader;

/* How many read settings conn.c knows (read_settings). */
#define READ_SETTINGS 5

/* The statements a group commit is made of (worker.c). */
enum ctl {
    CTL_BEGIN, CTL_COMMIT, CTL_ROLLBACK, CTL_COUNT
};

struct pasyn_pool {
    pasyn_hub *hub;
    pasyn_options opts;
    char *path;             /* what the writer opens */
    char *reader_path;      /* what readers open: a URI asking for mode=rw(c) asks mode=ro */
    char *memfile;          /* the private file behind ":memory:", removed at close */
    char **pragma_copy;
    int open_flags;

    /* writer */
    pthread_t writer_thread;
    int writer_started;
    conn wc;
    conn classifier;        /* read-only, prepares SQL text seen for the first time */
    pthread_mutex_t cmu;    /* guards the classifier; submitters of any thread use it */
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    pasyn_task whead;       /* sentinel of the writer's FIFO */
    size_t wlen;
    _Atomic uint64_t txn_owner;
    _Atomic int64_t total_changes;  /* what total_changes() answers (below), as of the last task */
    /* SQL's changes() and total_changes() on the writer (worker.c, writer_changes): as one
     * connection running the writes one by one would answer, not counting group commits that
     * were rolled back and whose statements ran again alone. Writer thread only. */
    int64_t uncounted;      /* changes SQLite counted in such group commits */
    int64_t changes_before; /* changes() when such a group commit began, */
    int changes_stale;      /* answered while changes() and total_changes() stay */
    int64_t stale_changes, stale_total; /* as the group commit's ROLLBACK left them */
    sqlite3_stmt *ctl[CTL_COUNT]; /* group commit's BEGIN, COMMIT, ...: prepared once */
    uint64_t commit_ns;     /* how long a group commit's COMMIT takes, on average */
    uint64_t gap_ns;        /* how long a batch waited for its next write, on average */
    int last_batch;         /* statements in the writer's last group commit, 0 after others */
    _Atomic uint64_t w_executed, w_batches, w_batched, w_batch_max;
    _Atomic uint64_t w_pushed;  /* tasks ever queued for the writer: a spinning writer watches it */

    /* readers */
    int nreaders;
    int use_readers;            /* reads go to them: some exist, WAL mode or read-only, no
                                   exclusive locking. Set by the writer before phase becomes
                                   RUNNING (an atomic store), which submitters load first */
    reader *readers;
    deque injector;
    _Atomic unsigned rr;        /* round-robin cursor */
    _Atomic int long_reads;     /* long reads queued or running on the readers */
    _Atomic int spinners;       /* readers watching for work before they park */
    _Atomic int streaming;      /* readers holding a stream */
    _Atomic uint64_t stream_serial;

    /* lifecycle, under wmu */
    _Atomic int phase;          /* enum phase; changed under wmu */
    int readers_open, readers_failed;
    pthread_cond_t phase_cv;
    pasyn_task *open_task, *close_task;
    pthread_rwlock_t intake;    /* submits hold it shared; close takes it alone */
    _Atomic int closing;        /* intake stopped */
    _Atomic int closed;         /* everything closed; the close task is completing */
    _Atomic int readers_stop;

    route_cache routes;
    _Atomic uint64_t interrupts; /* pasyn_interrupt calls: stops tasks started before one */

    /* Read settings (conn.c, read_settings) the writer ran through execute: the last PRAGMA
     * for each, which every reader applies before its next task once `settings_gen` moved. */
    pthread_mutex_t settings_mu;
    char *settings[READ_SETTINGS];
    _Atomic uint64_t settings_gen;

    temp_names temp_names;  /* the writer's TEMP tables and views, updated by schema changes */
    _Atomic int writer_local; /* the writer has TEMP objects or ATTACHed databases */
    int schema_in_txn;      /* the writer's open transaction changed a schema (writer only) */
};

/* Remembers the PRAGMA `sql` that set read setting `setting` (1 + index) on the writer, for the
 * readers to apply; and applies the ones a reader has not yet. Writer / that reader's thread. */
void settings_note(pasyn_pool *pool, int setting, const char *sql, size_t len);
void routes_forget(pasyn_pool *pool);
void settings_apply(pasyn_pool *pool, reader *r);

/* Bounded spinning before parking (workers) or sleeping (waiters). */
#ifndef SPIN_NS
#define SPIN_NS 50000
#endif
#define SPINNERS_MAX 1

/* A read that runs this long (on average, on the reader that ran it) is a long one: with
 * stealing on, short reads queued behind it are taken first. */
#define LONG_READ_NS 1000000
/* The time slice readers ask for (worker.c, lengthen_slice). */
#define READER_SLICE_NS 5000000
/* How many short reads a reader takes in a row ahead of a long one of its own queue. */
#define OVERTAKE_MAX 32

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Between rounds of watching: give the core away if another thread wants it (on a busy
 * machine the thread we wait for may need this very core), then say whether to go on. */
static inline int spin_go_on(uint64_t deadline)
{
    sched_yield();
    return now_ns() < deadline;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

enum phase { PHASE_OPENING = 0, PHASE_WRITER_READY, PHASE_RUNNING, PHASE_FAILED };

void *writer_main(void *arg);
void *reader_main(void *arg);
void writer_push(pasyn_pool *pool, pasyn_task *t);
void readers_push(pasyn_pool *pool, pasyn_task *t);
/* Learns a route; `gen` is the generation route_get gave before the verdict was learned (it is
 * dropped when routes were forgotten since), or ROUTE_ANY_GEN for the writer's own verdicts. */
void route_put(pasyn_pool *pool, const char *sql, size_t len, int route, uint64_t gen);
int route_get(pasyn_pool *pool, const char *sql, size_t len, int *long_read, uint64_t *gen);
#define ROUTE_ANY_GEN UINT64_MAX
void route_note_long(pasyn_pool *pool, const char *sql, size_t len, int long_read);
void complete(pasyn_task *t);
/* Applies the pool's pragmas to a connection just opened: SQLite's code, with a message. */
int pool_apply_pragmas(pasyn_pool *pool, conn *c, int is_writer, char **errmsg);

#endif
