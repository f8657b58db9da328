/*
 * pool.h - the pool's state, grouped by the part that owns it (writer, group commit, readers,
 * routes, lifecycle, settings), and the calls one part makes into another along a statement's
 * path: submit.c -> writer.c / reader.c -> stmt.c -> the hub.
 */
#ifndef PASYN_POOL_H
#define PASYN_POOL_H

#include "conn.h"

/* ---- tuning ------------------------------------------------------------------------- */

/* How many of the pool's workers may spin at once: on a small machine more would take the
 * cores that the busy threads need. */
#define SPINNERS_MAX 1
/* A read that runs this long (on average, on the reader that ran it) is a long one: with
 * stealing on, short reads queued behind it are taken first. */
#define LONG_READ_NS 1000000
/* The time slice readers ask for (reader.c, lengthen_slice). */
#define READER_SLICE_NS 5000000
/* How many short reads a reader takes in a row ahead of a long one of its own queue. */
#define OVERTAKE_MAX 32
/* How many read settings settings.c knows (read_setting_names). */
#define READ_SETTINGS 5
/* A read whose run went over the inline budget this many times is not run inline again
 * (until its route is learned again); nor is one that failed there to prepare. */
#define INLINE_STRIKES 3
/* A read may run inline while its average run on a reader is under the budget divided by
 * this (and stays so while its average inline is under twice that). */
#define INLINE_FIT_SHARE 4

/* ---- the parts of a pool ------------------------------------------------------------ */

/* The writer: one connection that runs everything that is not a read, a FIFO, and the
 * transaction-owner gate (writer.c). */
typedef struct writer {
    pthread_t thread;
    int started;                   /* the thread was created: pasyn_pool_free joins it */
    conn conn;                     /* its connection */
    pthread_mutex_t mu;            /* guards queue and queued */
    pthread_cond_t cv;             /* the writer parks on it, with mu, when nothing may run */
    pasyn_task queue;              /* sentinel of the FIFO: queue.next is the oldest task. The
                                       close task (PASYN_CLOSE) ends it */
    size_t queued;                 /* tasks in the FIFO */
    _Atomic uint64_t pushed;       /* tasks ever queued: a spinning writer watches it */
    _Atomic uint64_t txn_owner;    /* the owner of the transaction open on conn, 0 none */
    _Atomic int64_t total_changes; /* what total_changes() answers, as of the last task */
    _Atomic uint64_t executed;     /* tasks run (pasyn_stats) */
    _Atomic int has_local;         /* conn has TEMP objects or ATTACHed databases */
    int schema_in_txn;             /* the open transaction changed a schema (writer thread) */
    int orphan_txn;                /* a transaction nobody owns any more (a failed group commit,
                                      an executemany's savepoint, an abandoned or closing
                                      owner's) is open because its ROLLBACK failed too
                                      (writer thread; writer.c, writer_end_orphan) */
} writer;

/* The statements a group commit is made of (group_commit.c). */
enum batch_stmt { BATCH_BEGIN, BATCH_COMMIT, BATCH_ROLLBACK, BATCH_STMTS };

/* The most statements one batch holds: a bound on how long the first of them waits. */
#define BATCH_MAX 512

/* Group commit: what the writer learned of batches (writer thread) and their counters. */
typedef struct batching {
    sqlite3_stmt *stmts[BATCH_STMTS]; /* BEGIN IMMEDIATE, COMMIT, ROLLBACK: prepared once */
    uint64_t commit_ns;               /* how long a batch's COMMIT takes: a running average */
    uint64_t gap_ns;                  /* how long a batch waited for its next write: the same */
    uint64_t stmt_ns;                 /* a batch's time before its COMMIT per statement: the same */
    int last;                         /* statements in the last batch; 0 after a task run alone */
    int writers;                      /* how many writes wait at once, as lately seen (batch_cap) */
    int last_owners_n;                /* the owners of the last batch that committed ... */
    uint64_t last_owners[BATCH_MAX];  /* ... (batch_learn_writers) */
    _Atomic uint64_t count;           /* batches of two or more statements (pasyn_stats) */
    _Atomic uint64_t statements;      /* statements run in them */
    _Atomic uint64_t most;            /* the most statements one of them held */
} batching;

/* SQL's changes() and total_changes() on the writer (changes.c): as one connection running the
 * writes one by one would answer, not counting group commits that were rolled back and whose
 * statements ran again alone. Writer thread. */
typedef struct change_counts {
    int64_t uncounted;                  /* changes SQLite counted in such group commits */
    int64_t before;                     /* changes() when such a group commit began, */
    int stale;                          /* answered while changes() and total_changes() stay */
    int64_t stale_changes, stale_total; /* as the group commit's ROLLBACK left them */
} change_counts;

/* One reader thread, its connection and its queues (reader.c). */
typedef struct reader {
    pasyn_pool *pool;
    int index; /* in pool->readers.all */
    pthread_t thread;
    int started;                       /* the thread was created: it is joined at close */
    conn conn;                         /* its read-only connection */
    deque queue;                       /* its own tasks; others may steal from the back */
    deque pinned;                      /* tasks that only this reader may run (streams) */
    pthread_cond_t cv;                 /* parks on queue.mu */
    int sleeping;                      /* under queue.mu: parked on cv */
    _Atomic int sleeping_hint;         /* the same, readable without the lock */
    _Atomic int spinning;              /* watching for work before parking */
    int wake_pending;                  /* under queue.mu: a wake-up is pending */
    cached_stmt *stream;               /* the statement of the streamed result it holds */
    uint64_t stream_id;                /* and its id (pasyn_task_stream) */
    _Atomic int streaming;             /* stream != NULL, readable by the other threads */
    _Atomic uint64_t executed, stolen; /* tasks run, and taken from another reader (stats) */
    int overtaken;                     /* short reads taken in a row before a long one of its own */
    uint64_t settings_gen;             /* the pool's read_settings.gen it applied last */
    pasyn_task exit_task;              /* queued on pinned to end its loop (readers_stop) */
} reader;

/* The readers as a whole (reader.c). */
typedef struct readers {
    int count;                      /* reader threads (the readers option) */
    int used;                       /* reads go to them: some exist, WAL mode or read-only, no
                                       exclusive locking. Set by the writer before the pool
                                       serves (an atomic store), which submitters load first */
    reader *all;                    /* count of them */
    deque injector;                 /* reads a reader holding a stream passed on */
    _Atomic unsigned next;          /* round-robin cursor of readers_push */
    _Atomic int long_reads;         /* long reads queued or running */
    _Atomic int unknown_reads;      /* reads no reader ran before (their cost unknown) queued or
                                       running, in a pool that runs reads inline */
    _Atomic int streaming;          /* readers holding a stream */
    _Atomic uint64_t stream_serial; /* the last stream's serial */
} readers;

/* A small cache of statement routes, keyed by SQL text (route.c), and the connection that
 * learns the route of SQL seen for the first time (submit.c, route_of). */
enum route { ROUTE_UNKNOWN = 0, ROUTE_READ = 1, ROUTE_WRITE = 2 };

/* Whether a read's learned cost lets its caller run it (reader.c, inline_run): unknown until
 * a reader has run it; a reader says FITS while its average run stays under the inline
 * pool's fit_ns, LOADED while it stays under twice that (the caller runs it only when a
 * hand-off does not pay: inline_rule), and NO once it is above; an inline run says NO when
 * its own average went past twice fit_ns, or it overran the budget (a strike). NEVER:
 * INLINE_STRIKES strikes (route_get answers it; the entry keeps the last verdict). */
enum inline_fit {
    INLINE_UNKNOWN = 0,
    INLINE_FITS = 1,
    INLINE_NO = 2,
    INLINE_NEVER = 3,
    INLINE_LOADED = 4
};

typedef struct route_entry {
    lru_link lru;             /* first: the recency list's link is also its entry */
    struct route_entry *next; /* hash chain */
    uint32_t hash;            /* hash_sql of sql */
    int route;                /* enum route */
    int long_read;            /* a long read, as a reader last found (LONG_READ_NS) */
    int fits_inline;          /* enum inline_fit: whether the caller may run it (reader.c) */
    int strikes;              /* its inline runs that overran the budget; INLINE_STRIKES:
                                 never inline (it failed there, or its result streams) */
    size_t len;
    char sql[];
} route_entry;

typedef struct routes {
    pthread_mutex_t mu;    /* guards the cache: buckets, lru, count, bytes, gen */
    route_entry **buckets; /* nbuckets, a power of two */
    lru_link lru;          /* sentinel of the recency list: lru.next is the most recent */
    size_t nbuckets, count;
    size_t bytes;                  /* what its entries take, at most PASYN_ROUTE_CACHE_BYTES */
    uint64_t gen;                  /* routes_forget calls: a verdict learned before one is
                                       not kept */
    conn classifier;               /* read-only, prepares SQL text seen for the first time */
    pthread_mutex_t classifier_mu; /* guards it: submitters of any thread use it */
    _Atomic int classifier_stale;  /* its schema is to be loaded by the writer (writer.c) */
} routes;

/* The caller's own read-only connection (reader.c, inline_run): a submitting thread that
 * takes `mu` with a trylock runs a short read on it at once, under a budget, instead of
 * handing it to a reader. Opened like a reader's connection (reader_conn_open); it never
 * waits on a lock, and never loads a schema from disk while it prepares (a worker does:
 * inline_load). */
typedef struct inliner {
    int used;                  /* the pool runs reads inline: the option is on, reads go to the
                                 readers, the database is in WAL mode. Set by the writer before
                                 the pool serves */
    conn conn;                 /* read-only, never waits (conn_busy_own, NEVER_WAIT_RUN) */
    pthread_mutex_t mu;        /* guards conn and settings_gen: trylock by submitters; workers
                                 lock it to load the schema */
    uint64_t budget_ns;        /* how long an inline run may take before it is abandoned */
    uint64_t fit_ns;           /* a read whose average run is under this may run inline */
    uint64_t settings_gen;     /* the pool's read_settings.gen it applied last */
    _Atomic int stale;         /* its schema is to be loaded by a worker (inline_load) */
    _Atomic uint64_t runs;     /* reads completed inline */
    _Atomic uint64_t overruns; /* abandoned: went over the budget */
    _Atomic uint64_t busy;     /* abandoned: a lock of another process (SQLITE_BUSY) */
    _Atomic uint64_t failed;   /* abandoned: anything else (prepare error, big result, ...) */
} inliner;

/* The pool's life (pool.c): its state, the steps of the open, the tasks that report the open
 * and the close, and the gate that keeps submits out once it closes. */
typedef struct lifecycle {
    _Atomic int state;            /* enum pasyn_pool_state; changed under mu */
    pthread_mutex_t mu;           /* guards state changes and what follows (not intake) */
    pthread_cond_t changed;       /* a step of the open was made */
    int writer_opened;            /* 1 once the writer opened (and set WAL), -1: it failed */
    int readers_opened;           /* readers that opened, in index order, */
    int readers_failed;           /* and that failed to */
    pasyn_task *open_task;        /* completes when every connection opened or one failed */
    pasyn_task *close_task;       /* pasyn_close's: queued to the writer once the pool opened */
    pthread_rwlock_t intake;      /* submits hold it shared; close takes it alone */
    struct pasyn_backup *orphans; /* backups abandoned when the writer could not end them
                                     (pasyn_backup_abandon): freed with the pool. Owner thread */
} lifecycle;

/* Read settings (settings.c) the writer ran through execute: the last PRAGMA for each, which
 * every reader applies before its next task once `gen` moved. */
typedef struct read_settings {
    pthread_mutex_t mu;       /* guards sql */
    char *sql[READ_SETTINGS]; /* malloc'd, or NULL: never set */
    _Atomic uint64_t gen;     /* changes of sql */
} read_settings;

struct pasyn_pool {
    pasyn_hub *hub;     /* where every task completes */
    pasyn_options opts; /* copied at open; strings owned by the pool */
    char **pragmas;     /* the pragmas option, copied: name, value, ..., NULL */
    char *path;         /* what the writer opens */
    char *reader_path;  /* what readers open: a URI asking for mode=rw(c) asks ro */
    char *memfile;      /* the private file behind ":memory:", removed at close (memfile.c) */
    int memfile_lock;   /* the descriptor that holds memfile's lock, while memfile is set */

    lifecycle life;
    writer writer;
    batching batch;
    change_counts changes;
    readers readers;
    routes routes;
    inliner inliner;
    read_settings read_settings;
    temp_names temp_names;       /* the writer's TEMP tables and views (temp_names.c) */
    fn_registry functions;       /* the host's SQL functions (functions.c) */
    conn_setup setup;            /* extensions and the trace switch, for every connection */
    _Atomic size_t on_change;    /* on_change's bound of events per transaction; 0: off */
    _Atomic int spinners;        /* workers watching for work before they park */
    _Atomic uint64_t interrupts; /* pasyn_interrupt calls: stops tasks started before one */
};

/* ---- calls between the parts -------------------------------------------------------- */

/* Watches `ready(pool, arg)` for up to `ns` before the caller parks: 1 once it was true, 0 at
 * once when SPINNERS_MAX workers spin already or no core is spare (cpu_core_spare). `spinning` (or NULL) is set meanwhile. Inlined,
 * so `ready` is too. Worker threads. */
static inline int pool_spin(pasyn_pool *pool, uint64_t ns, _Atomic int *spinning,
                            int (*ready)(pasyn_pool *, void *), void *arg)
{
    if (!cpu_core_spare())
        return 0;
    if (atomic_fetch_add(&pool->spinners, 1) >= SPINNERS_MAX) {
        atomic_fetch_sub(&pool->spinners, 1);
        return 0;
    }
    if (spinning)
        atomic_store(spinning, 1);
    uint64_t deadline = now_ns() + ns;
    int found = 0;
    do {
        for (int i = 0; i < 64 && !found; i++) {
            found = ready(pool, arg);
            cpu_relax();
        }
    } while (!found && spin_go_on(deadline));
    if (spinning)
        atomic_store(spinning, 0);
    atomic_fetch_sub(&pool->spinners, 1);
    return found;
}

/* writer.c */
void *writer_main(void *pool);
void writer_push(pasyn_pool *pool, pasyn_task *t); /* any thread */
/* The oldest queued task, taken, when no transaction gates the queue; else NULL. Writer. */
pasyn_task *writer_take_head(pasyn_pool *pool);
/* How many tasks are queued now. Writer. */
int writer_queued(pasyn_pool *pool);
/* Runs a task's statements on the writer's connection, leaving it uncompleted. Writer. */
void writer_run_task(pasyn_pool *pool, pasyn_task *t);
/* After one task or a batch: who owns the writer now, the change count readers see. Writer. */
void writer_settle(pasyn_pool *pool, uint64_t owner);
/* Watches for a task queued after `seen` (writer.pushed) for up to `ns`: 1 when one was. */
int writer_spin(pasyn_pool *pool, uint64_t seen, uint64_t ns);

/* backup.c (writer thread): runs a PASYN_SERIALIZE or PASYN_BACKUP task. */
void backup_run(pasyn_pool *pool, pasyn_task *t);
/* Frees the backups abandoned to the pool (pasyn_backup_abandon); pasyn_pool_free, after the
 * writer ended. */
void backup_free_orphans(pasyn_pool *pool);

/* group_commit.c (writer thread) */
/* Runs `t` (taken with `more` tasks behind it) in one transaction with the plain writes queued
 * behind it when that is worth it, and completes them. Returns the task to run alone: `t` when
 * no batch was worth it, a task the batch took but could not join, or NULL. */
pasyn_task *group_commit_run(pasyn_pool *pool, pasyn_task *t, int more);
void group_commit_close(pasyn_pool *pool);

/* changes.c (writer thread) */
int changes_register(pasyn_pool *pool); /* SQL's changes(), total_changes() */
int64_t changes_now(pasyn_pool *pool);
int64_t changes_total_now(pasyn_pool *pool);
void changes_fresh(pasyn_pool *pool); /* a statement set changes() itself */
/* A batch that began with `total_before`, `changes_before` was rolled back: its changes do not
 * count; until a statement completes, changes() answers `changes_before`. */
void changes_batch_undone(pasyn_pool *pool, int64_t total_before, int64_t changes_before);

/* reader.c */
void *reader_main(void *reader);
void readers_push(pasyn_pool *pool, pasyn_task *t); /* any thread */
/* Ends every reader that serves: each gets its exit task behind what is pinned to it, finishes
 * what is queued for it, and is joined. The writer, at close, once intake has stopped. */
void readers_stop(pasyn_pool *pool);
/* Joins the reader threads, which end by themselves when the open failed. */
void readers_join(pasyn_pool *pool);
/* Opens a connection the way every reader opens its own: read-only on the readers' path, the
 * pool's pragmas (and `defensive`), TEMP names, PRAGMAs that lock readers out refused, the
 * pool's busy handler (never_wait as conn_busy_own takes it). SQLite's code, *err (malloc'd)
 * on failure. The thread that opens it. */
int reader_conn_open(pasyn_pool *pool, conn *c, int never_wait, char **err);
/* Runs the read `t` (an EXEC task whose route is a known read that fits, outside a
 * transaction of its caller's) on the caller's own connection, if nobody else holds it: 1
 * when it completed there (the caller's again; nothing went through the hub), 0 when it is
 * to be handed to the readers as usual (its result reset). The submitting thread. */
int inline_run(pasyn_pool *pool, pasyn_task *t);
/* Loads the inline connection's schema when a submitter found it out of date. Workers. */
void inline_load(pasyn_pool *pool);
/* Whether handing a short read to the readers pays now: some reader is not taken by a long
 * read or a stream (else the read would wait behind one for milliseconds), and the machine
 * has a core for it beside the other processes' threads and the readers busy with long reads
 * (cpu_handoff_pays). A read no reader ran before counts as a long one (readers.unknown_reads:
 * the first scans of a pool). Any thread. */
int readers_handoff_pays(pasyn_pool *pool);
/* Whether the caller runs a known read itself, from its verdict `fits` (enum inline_fit),
 * whether the caller has other work meanwhile (`busy`: pasyn_task_set_caller_busy) and
 * whether a hand-off pays now (`handoff`: readers_handoff_pays): a read that FITS runs inline
 * when the caller is not busy, and like a LOADED one, when a hand-off does not pay. Pure. */
int inline_rule(int fits, int busy, int handoff);
/* Whether the caller runs the known read `t` itself: any read but one that may NEVER run
 * inline when the caller would only wait for it (pasyn_task_set_caller_idle: nobody waits for
 * this thread meanwhile, so its cost does not matter), else a read that is not long as
 * inline_rule says, looking at the readers and the machine only when the rule needs it.
 * Inlined: a point read's common case costs three comparisons. The submitting thread. */
static inline int inline_wanted(pasyn_pool *pool, const pasyn_task *t)
{
    if (t->caller == CALLER_IDLE)
        return t->fits_inline != INLINE_NEVER;
    if (t->long_read)
        return 0;
    if (t->fits_inline == INLINE_FITS && t->caller != CALLER_BUSY)
        return 1;
    if (t->fits_inline != INLINE_FITS && t->fits_inline != INLINE_LOADED)
        return 0;
    return inline_rule(t->fits_inline, t->caller == CALLER_BUSY, readers_handoff_pays(pool));
}

/* route.c: the route cache. Learns a route; `gen` is the generation route_get gave before the
 * verdict was learned (it is dropped when routes were forgotten since), or ROUTE_ANY_GEN for the
 * workers' own verdicts. Any thread. */
void route_put(pasyn_pool *pool, const char *sql, size_t len, int route, uint64_t gen);
int route_get(pasyn_pool *pool, const char *sql, size_t len, int *long_read, int *fits_inline,
              uint64_t *gen);
#define ROUTE_ANY_GEN UINT64_MAX
void route_note_long(pasyn_pool *pool, const char *sql, size_t len, int long_read);
/* What a run says of whether the read may run inline: `fits` (enum inline_fit), and
 * `strike` 1 for an overrun, INLINE_STRIKES for never. A reader's FITS does not undo
 * INLINE_STRIKES strikes. Any thread. */
void route_note_inline(pasyn_pool *pool, const char *sql, size_t len, int fits, int strike);
/* Forgets every route: after a schema change a text may run elsewhere. The writer. */
void routes_forget(pasyn_pool *pool);
void routes_free(routes *rs);

/* settings.c */
/* Applies the pool's pragmas to a connection just opened: SQLite's code, with a message. */
int settings_apply_pragmas(pasyn_pool *pool, conn *c, int is_writer, char **errmsg);
/* 1 + the index of the read setting a PRAGMA `name` = `value` sets, else 0. Any thread. */
int read_setting(const char *name, const char *value);
/* Remembers the PRAGMA `sql` that set read setting `setting` (1 + index) on the writer, for
 * the readers to apply; and applies them all to a reader's connection (or the inline one),
 * noting in *gen the read_settings.gen applied. Writer / the connection's user. */
void settings_note(pasyn_pool *pool, int setting, const char *sql, size_t len);
void settings_apply(pasyn_pool *pool, conn *c, uint64_t *gen);

/* pool.c */
/* Removes the pool's memory file and its companions, once its connections are closed;
 * idempotent. Writer thread, or the thread that frees a pool whose writer never started. */
void pool_remove_memfile(pasyn_pool *pool);

/* memfile.c */
/* Removes the memory files of dead processes, then makes a new one (0600) for a ":memory:"
 * pool, locked for the pool's life: its path (malloc'd, the caller's) and, in *lock_fd, the
 * descriptor that holds the lock; NULL when it cannot (out of memory, no writable directory).
 * Any thread. */
char *memfile_create(int *lock_fd);
/* Removes the memory file `path` that memfile_create made and its companions, then lets go of
 * its lock (closes lock_fd). Call it once every connection to the file is closed: closing a
 * descriptor drops the process's fcntl locks on the file. Any thread. */
void memfile_remove(const char *path, int lock_fd);

#endif
