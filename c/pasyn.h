/*
 * pasyn.h - the public interface of the pasyn core: a pool of SQLite connections run by one
 * writer thread and N reader threads, with completions delivered through a hub (a queue plus
 * a file descriptor). No Lua here: any host can drive it.
 *
 * Threads. "Any thread" means the function may be called from any thread at any time the
 * object is alive. "Owner thread" means the one thread that drives a hub (drains it, frees
 * tasks and pools); calls marked so must not run concurrently with each other for the same
 * hub. Workers never call back into user code.
 *
 * Ownership. A task is created by the caller, handed to the pool by pasyn_submit (or
 * pasyn_open / pasyn_close), and handed back when it completes: through the hub (drained by
 * pasyn_hub_drain), for a task submitted with PASYN_SYNC through pasyn_task_wait, or at once
 * when pasyn_submit returns PASYN_DONE (an inline read: the hub never sees it). From
 * then on it belongs to the caller again, who reads its results and frees it with
 * pasyn_task_free. Between submission and completion the caller must not touch it.
 */
#ifndef PASYN_H
#define PASYN_H

#include <stddef.h>
#include <stdint.h>

#define PASYN_VERSION "0.1.0"

typedef struct pasyn_hub pasyn_hub;
typedef struct pasyn_backup pasyn_backup;
typedef struct pasyn_pool pasyn_pool;
typedef struct pasyn_task pasyn_task;
typedef struct pasyn_call pasyn_call;

/* ---- values: parameters in, column values out ------------------------------------ */

enum pasyn_type { PASYN_NULL = 0, PASYN_INT = 1, PASYN_FLOAT = 2, PASYN_TEXT = 3, PASYN_BLOB = 4 };

typedef struct pasyn_value {
    int type;      /* enum pasyn_type */
    int64_t i;     /* PASYN_INT */
    double d;      /* PASYN_FLOAT */
    const char *p; /* PASYN_TEXT, PASYN_BLOB: bytes (may hold NULs), not NUL-terminated */
    size_t n;      /* their length */
} pasyn_value;

/* ---- the hub: where completed tasks go ------------------------------------------- */

/* A new hub, or NULL when out of memory or file descriptors. Any thread. */
pasyn_hub *pasyn_hub_new(void);
/* Frees the hub and any task still queued on it. Owner thread, after every pool using it
 * has been freed. */
void pasyn_hub_free(pasyn_hub *hub);
/* A descriptor that polls readable while completed tasks wait to be drained. It stays
 * readable until the next pasyn_hub_drain. It may now and then be readable with nothing to
 * drain (a completion's signal can trail its task into a drain already done): a drain that
 * returns NULL is normal. Owned by the hub: do not close it. Any thread. */
int pasyn_hub_fd(const pasyn_hub *hub);
/* Takes every completed task at once, oldest first, as a list walked with pasyn_task_next.
 * NULL when none. Never blocks. Owner thread. */
pasyn_task *pasyn_hub_drain(pasyn_hub *hub);
/* Blocks until completions wait or timeout_ms passes (negative: no limit): watches for a
 * short while, then sleeps in poll() on the descriptor. Completions that come while it watches
 * do not write the descriptor, so after it returns 1 drain before polling the descriptor
 * anywhere else. Returns 1 when completions wait, 0 on timeout. While it blocks, the writers
 * of the pools completing here take it that this host submits nothing more before a
 * completion: a group commit then stops waiting for more writes and commits what it holds (so a
 * host whose other threads submit meanwhile gets smaller batches). Owner thread. */
int pasyn_hub_poll(pasyn_hub *hub, int timeout_ms);

/* For hosts that can watch only connections they open themselves (OpenResty's cosockets
 * connect to a path; no API there wraps a descriptor). pasyn_hub_listen makes a listening
 * unix-domain stream socket in a fresh folder of mode 0700 under $TMPDIR (default /tmp) and
 * points *path at it (owned by the hub, valid until the next call on the hub); the host then
 * connects to that path, and pasyn_hub_accept takes the connection and removes the path and
 * its folder. From then on each empty->non-empty transition of the completion list also
 * writes one byte to that connection (never blocking, never raising SIGPIPE); the hub's
 * descriptor and pasyn_hub_poll go on as before. The host reads those bytes itself (any number
 * at once) and then drains; a signal pending when it connected is written at once. A later
 * accept replaces the connection; pasyn_hub_unaccept closes it. 0 or a negative errno (-EAGAIN
 * from accept: the host has not connected). Owner thread. */
int pasyn_hub_listen(pasyn_hub *hub, const char **path);
int pasyn_hub_accept(pasyn_hub *hub);
void pasyn_hub_unaccept(pasyn_hub *hub);
/* Makes the descriptor (and the connected socket) readable now, as a completion would, with or
 * without anything to drain: a host wakes its own watcher with it (to stop it, say). Cleared
 * as usual: by the next drain (and, for the socket, the host's read). Any thread. */
void pasyn_hub_wake(pasyn_hub *hub);

/* ---- opening and closing a pool ---------------------------------------------------- */

typedef struct pasyn_options {
    int readers;                   /* reader threads; 0 runs everything on the writer (default 3) */
    int busy_timeout_ms;           /* how long a statement waits on a lock another process
                                 * holds, counted from its submission, once (default 5000) */
    const char *journal_mode;      /* set by the writer on open unless readonly (default "wal") */
    const char *synchronous;       /* "off", "normal", "full", "extra" (default "normal") */
    int foreign_keys;              /* default 0 */
    int readonly;                  /* default 0 */
    int defensive;                 /* for database files from untrusted sources: every connection
                                 * gets SQLITE_DBCONFIG_DEFENSIVE and trusted_schema = OFF
                                 * (before `pragmas`) (default 0) */
    int statement_cache;           /* prepared statements kept per connection (default 128);
                                 * they also stay within statement_cache times
                                 * PASYN_STMT_CACHE_SLOT_BYTES of memory (below) */
    int stealing;                  /* idle readers steal queued reads (default 1) */
    int group_commit;              /* commit queued autocommit writes together (default 1) */
    const char *const *pragmas;    /* NULL, or name, value, name, value, ..., NULL */
    const char *const *extensions; /* NULL, or path, entry_point, path, entry_point, ..., NULL:
                                    * shared libraries every connection of the pool (writer,
                                    * readers, the classifier) loads when it opens
                                    * (c3ref/load_extension.html; entry_point "": SQLite's
                                    * default). Loaded through the C API alone: SQL's
                                    * load_extension() stays refused. One that fails to load
                                    * fails the open (PASYN_ESQLITE, the message names the
                                    * path and gives SQLite's) */
    const void *image;             /* a ":memory:" pool only (else the open fails with
                                    * PASYN_EPROGRAMMING): the database starts as these
                                    * image_len bytes (a database file's, such as
                                    * PASYN_SERIALIZE gives), written into its private file
                                    * before any connection opens it; bytes that are not a
                                    * database fail the open (SQLITE_NOTADB). NULL: empty */
    size_t image_len;
    int inline_reads;     /* the submitting thread runs short reads itself, on a
                                    * connection of its own: pasyn_submit then returns PASYN_DONE
                                    * (default 0: a host must know PASYN_DONE to turn it on) */
    double inline_budget; /* seconds an inline read may run before it is abandoned and
                                    * handed to the readers (default PASYN_INLINE_BUDGET); 0 or
                                    * less: no inline reads */
} pasyn_options;

/* The default inline_budget, in seconds. */
#define PASYN_INLINE_BUDGET 0.0002

/* Fills in the defaults. Any thread. */
void pasyn_options_init(pasyn_options *opts);

/* What the pool's caches may hold. Each connection's statement cache keeps at most
 * statement_cache statements and statement_cache * PASYN_STMT_CACHE_SLOT_BYTES bytes (2 MiB
 * with the default 128), counting for each statement its text, its names and column
 * descriptions and the memory SQLite reports for it (sqlite3_stmt_status,
 * SQLITE_STMTSTATUS_MEMUSED); the least recently used go first, and a statement that alone
 * would take more than a quarter of that is finalized when it has run. The pool's route cache
 * (where each SQL text runs) keeps at most PASYN_ROUTE_CACHE_BYTES of entries, the least
 * recently used going first. A SQL text longer than PASYN_CACHE_SQL_MAX bytes is cached
 * nowhere: it is classified, prepared, run and finalized each time. */
#define PASYN_STMT_CACHE_SLOT_BYTES (16 * 1024)
#define PASYN_ROUTE_CACHE_BYTES (1024 * 1024)
#define PASYN_CACHE_SQL_MAX (64 * 1024)

/* Starts a pool on `database` (a path, ":memory:" or a "file:" URI): threads start at once and
 * open their connections; `open_task` (from pasyn_task_new(PASYN_OPEN, NULL, 0)) completes when
 * all are open or one failed. A URI that would give each connection a database of its own
 * (file::memory:, mode=memory, vfs=memdb, an empty path) opens the pool's one private memory
 * database, as ":memory:" and "" do; cache=shared is dropped; nolock=1 and vfs=unix-none fail
 * the open task with PASYN_EPROGRAMMING naming the part (uri.c). The writer opens first and
 * sets the journal mode, then the readers open one after another (at once they would race to
 * build a new WAL's index). Reads go to the readers only in WAL mode (or a read-only pool)
 * without locking_mode EXCLUSIVE: otherwise everything runs on the writer and the reader
 * threads end at once. Check the open task with pasyn_task_error; on failure the pool serves
 * nothing and must be freed with pasyn_pool_free. NULL only when out of memory or threads
 * (open_task then untouched). The strings in opts are copied. `sync` as for pasyn_submit. Any
 * thread. */
pasyn_pool *pasyn_open(const char *database, const pasyn_options *opts, pasyn_hub *hub,
                       pasyn_task *open_task, int sync);

/* `close_task` from pasyn_task_new(PASYN_CLOSE, NULL, 0). Stops intake (later submits fail with
 * PASYN_ECLOSED; the pool's state becomes PASYN_POOL_CLOSING), lets every submitted task finish,
 * rolls back a transaction left open, releases streamed cursors, closes every connection
 * (the writer last) and stops every thread; then `close_task` completes. A pool still
 * opening stops as soon as it is open (or has failed). Returns 0, or PASYN_ECLOSED when the
 * pool was already closing or its open failed (close_task untouched). Any thread. */
int pasyn_close(pasyn_pool *pool, pasyn_task *close_task, int sync);

/* Joins the threads and frees the pool. Only after its open task failed, its close task
 * completed or pasyn_pool_state said PASYN_POOL_CLOSED. Owner thread. */
void pasyn_pool_free(pasyn_pool *pool);

/* ---- tasks --------------------------------------------------------------------------- */

enum pasyn_kind {
    PASYN_EXEC = 1,  /* one statement, routed by what SQLite reports about it */
    PASYN_MANY,      /* one statement run once per parameter set, on the writer */
    PASYN_SCRIPT,    /* several ';'-separated statements without parameters, on the writer */
    PASYN_FETCH,     /* the next chunk of a streamed result (pasyn_task_stream) */
    PASYN_RELEASE,   /* ends a streamed result early */
    PASYN_ABANDON,   /* its owner is gone: roll back the transaction it holds, if any */
    PASYN_OPEN,      /* for pasyn_open */
    PASYN_CLOSE,     /* for pasyn_close */
    PASYN_SERIALIZE, /* the writer's database named by the task's SQL text ("" or NULL: "main")
                        as bytes (sqlite3_serialize): pasyn_task_bytes */
    PASYN_BACKUP     /* the next step of a backup (pasyn_task_set_backup) */
};

/* Where a task failed. PASYN_ESQLITE carries SQLite's codes (pasyn_task_error). */
enum pasyn_error {
    PASYN_OK = 0,
    PASYN_ESQLITE,      /* SQLite reported an error */
    PASYN_EPROGRAMMING, /* misuse: several statements in one, wrong parameters, ... */
    PASYN_ECLOSED,      /* the pool is closing or closed */
    PASYN_ENOMEM        /* out of memory */
};

/* A task of `kind` on the `len` bytes of SQL at `sql` (copied; NULL for kinds without SQL).
 * NULL when out of memory. Any thread. */
pasyn_task *pasyn_task_new(int kind, const char *sql, size_t len);
/* Frees a task that is not queued in a pool. Owner thread (or the creator before submit). */
void pasyn_task_free(pasyn_task *t);
/* The next task of a drained list. */
pasyn_task *pasyn_task_next(const pasyn_task *t);

/* The transaction owner the task acts for (a caller-chosen non-zero id; 0 = nobody). A
 * statement that leaves the writer inside a transaction makes its owner the owner of the
 * writer: until autocommit returns, the writer runs only that owner's tasks. */
void pasyn_task_set_owner(pasyn_task *t, uint64_t owner);
/* Stops the task's statement with SQLITE_INTERRUPT once it has run `seconds` (counted from
 * when a worker starts it, not while it waits in a queue; for a streamed result, per chunk).
 * 0: no limit. Before submit only. */
void pasyn_task_set_timeout(pasyn_task *t, double seconds);
/* A word of the caller's own, kept with the task (e.g. to find who waits for it). */
void pasyn_task_set_user(pasyn_task *t, void *user);
void *pasyn_task_user(const pasyn_task *t);

/* Parameters. `name` NULL binds the next positional parameter; otherwise the named one (with or
 * without its ':', '@' or '$'). Positional values bind only to nameless placeholders ('?',
 * '?NNN'): given to a statement with a ":a", "@a" or "$a", the task fails with
 * PASYN_EPROGRAMMING, as does a count of values unlike the statement's. For PASYN_MANY,
 * pasyn_task_next_set closes the parameter set bound since the last call (the first set: since
 * pasyn_task_new) and starts the next; only closed sets run, so call it after the last set too
 * (n sets, n calls). Strings are copied. 0, or PASYN_ENOMEM. Before submit only. */
int pasyn_task_bind(pasyn_task *t, const char *name, size_t namelen, const pasyn_value *v);
/* Binds the n values at `values` (n >= 0) by position, in order: as n calls of
 * pasyn_task_bind(t, NULL, 0, &values[k]), with one check of the room they need. Strings are
 * copied. 0, or PASYN_ENOMEM (then none of them, or some, is bound: free the task). Before
 * submit only; the caller's thread. */
int pasyn_task_bind_values(pasyn_task *t, const pasyn_value *values, int n);
int pasyn_task_next_set(pasyn_task *t);
/* PASYN_MANY: makes room for `more` parameter sets beyond those closed so far, each the size of
 * their average, so that binding them does not grow the buffer set by set. A hint: nothing is
 * reserved before the first set closes, nor when it would take more than 16 MiB or the memory
 * is short; binding grows the buffer as it needs either way. Before submit only; the caller's
 * thread. */
void pasyn_task_reserve_sets(pasyn_task *t, size_t more);
/* Starts another reading of the parameter set being bound: the values bound since the set began
 * (or since the last call) are one reading, those bound after it the next. The worker binds the
 * first reading that fits the statement: as many values as it has placeholders, by position
 * for '?' and '?NNN', or one for each of its ':a', '@a' and '$a' by name. When none fits, the
 * task fails with PASYN_EPROGRAMMING and the error of the first reading given the statement's
 * way (by position to nameless placeholders, or by names the statement all has), or else of
 * the first. For arguments a host cannot tell apart without the statement: in Lua, a nil
 * params argument is one NULL or no parameters, and {n = 2} is two NULLs packed by table.pack
 * or a value for :n. 0, or PASYN_ENOMEM. Before submit only. */
int pasyn_task_bind_alternative(pasyn_task *t);
/* The task never runs inline (pasyn_submit): e.g. what it reports (a trace) is delivered with
 * completions. Before submit only. */
void pasyn_task_set_no_inline(pasyn_task *t);
/* The caller has other work to do while the task runs (other tasks in flight, other coroutines
 * ready to run): a reader runs it meanwhile, unless no core is left for a reader beside the
 * caller and other processes' runnable threads (a look at /proc/loadavg, at most every 2 ms),
 * when a hand-off costs more context switches than the read, or every reader is taken by a
 * long read (1 ms or more), a stream or a read no reader ran before (its cost unknown), when
 * it would wait behind one: then it runs inline as any read may. Before submit only. */
void pasyn_task_set_caller_busy(pasyn_task *t);
/* The caller has nothing to do but wait for this task (a call that blocks its thread, an event
 * loop with nothing else to run or time): a read the route cache knows runs inline even when
 * it is long or its cost is not learned yet, with no inline_budget (its own timeout and
 * pasyn_interrupt still hold), since a hand-off would only add two wake-ups to the wait. It is
 * still handed to the readers when it meets a lock of another process, fails there, or its
 * result would stream, and so is a text that may never run inline (see pasyn_submit). Before
 * submit only; the last of set_caller_busy and set_caller_idle holds. */
void pasyn_task_set_caller_idle(pasyn_task *t);
/* The caller tells whether it is idle only if it must: pasyn_submit runs the task inline when
 * it would for a caller that said nothing, and otherwise returns PASYN_ASK with the task not
 * queued, still the caller's, no error set and its caller state back to "nothing said"; the
 * caller then says (pasyn_task_set_caller_idle, or nothing) and submits it again. For a host
 * whose test of being idle costs more than a short read's hand-off decision. Before submit. */
void pasyn_task_set_caller_asks(pasyn_task *t);
/* Whether a busy caller's read is handed off (pasyn_task_set_caller_busy), for the whole
 * process: PASYN_HANDOFF_LOOK (the default) looks at the machine; PASYN_HANDOFF_ALWAYS and
 * PASYN_HANDOFF_NEVER decide without looking (tests, benchmarks, a host that knows its
 * machine). ALWAYS still runs it inline while every reader is taken by a long read, a stream
 * or a read of unknown cost. Any thread. */
enum { PASYN_HANDOFF_LOOK = 0, PASYN_HANDOFF_ALWAYS = 1, PASYN_HANDOFF_NEVER = 2 };
void pasyn_set_handoff(int mode);

/* When the writer comes to this task while another owner's transaction holds it, the task
 * fails with SQLITE_BUSY (PASYN_ESQLITE, "the writer is held by another owner's transaction
 * ...") instead of waiting for that transaction to end. For a host that runs every owner on
 * the thread that blocks on a PASYN_SYNC task: the other owner could never end it, and the
 * wait would never end either. Before submit only. */
void pasyn_task_set_no_owner_wait(pasyn_task *t);

/* What pasyn_submit returns for a task it ran to completion on the calling thread (below). */
#define PASYN_DONE 16
/* What pasyn_submit returns for a pasyn_task_set_caller_asks task it did not run at once. */
#define PASYN_ASK 17

/* Queues the task. With `sync` set it completes through pasyn_task_wait instead of the hub. 0;
 * PASYN_DONE when the task is already complete, run on the calling thread (a short read, with
 * inline_reads on, below): it is the caller's again, with its result or its error, and it
 * never comes through the hub (with `sync`, pasyn_task_wait returns at once); PASYN_ASK for a
 * task that asks (pasyn_task_set_caller_asks) and did not run at once; or, with the
 * task not queued and still the caller's (its error set): PASYN_ECLOSED when the
 * pool is closing or closed, PASYN_EPROGRAMMING for SQL holding a NUL byte, a kind that cannot
 * be submitted or a stream the pool does not have. SQL text the pool has not seen before (and
 * every text longer than PASYN_CACHE_SQL_MAX) is prepared here, on the calling thread, to learn
 * where it runs; that never waits on a lock another process holds nor loads a schema from disk
 * (the writer takes such a text). The task's busy_timeout counts from this call. PASYN_RELEASE
 * and PASYN_ABANDON
 * tasks complete silently: the pool frees them and nobody is told. A PASYN_ABANDON task (with
 * the gone owner's id) runs after that owner's tasks already queued, so it ends the transaction
 * even if the owner's BEGIN had not run yet when the owner went. Any thread.
 *
 * Inline reads (inline_reads on, in WAL mode with readers > 0). A PASYN_EXEC task whose SQL the
 * route cache knows as a read whose runs on the readers were short (their shortest recent run,
 * rising slowly with longer ones, under a quarter of inline_budget; and no long read, 1 ms),
 * or as any read when its caller would only wait for it (pasyn_task_set_caller_idle),
 * submitted by a caller that does not own the writer's transaction, not marked
 * pasyn_task_set_no_inline, runs here on the pool's inline connection (read-only, opened as
 * the readers' are, without any function a host registers on the workers) when no other
 * thread holds it (a trylock: it is never waited for). It takes a fresh snapshot, so it sees
 * every write whose task has completed. Its own timeout and pasyn_interrupt hold as on a
 * reader. It is abandoned (its partial result dropped: reads have no side effects) and queued
 * to the readers as usual when it has held the thread for inline_budget (never for an idle
 * caller's; with no core spare, its wall time less the thread's wait for a core:
 * /proc/thread-self/schedstat's run_delay, or its CPU time where that cannot be read), meets
 * a lock of another process (this thread never waits on one, nor loads a schema from disk
 * while it prepares), fails in any other way (the reader gives the true answer or error), or
 * its result would stream (more than a chunk of rows). A SQL text that overran three times,
 * failed to prepare there, or streams is not tried inline again until routes are learned
 * again (a schema change); one whose inline runs average past half the budget goes back to
 * the readers until they find it short again. Streamed fetches, PASYN_MANY, PASYN_SCRIPT and
 * writes never run inline. Counters: pasyn_inline_counts.
 *
 * What a task answers is what one SQLite connection would answer (the writer's, which holds the
 * pool's TEMP and attached objects and its connection state): statements that read connection
 * state (last_insert_rowid(), changes(), total_changes(), PRAGMAs and their table-valued
 * functions, TEMP names) run on the writer; a read a reader cannot answer (SQLITE_ERROR, or a
 * statement SQLite re-prepared into a non-read) runs again on the writer; routes are learned
 * again after each schema change; the PRAGMAs that change what reads answer
 * (case_sensitive_like, ...) reach every reader. In a pool that uses readers, a PRAGMA leaving
 * WAL or taking locking_mode EXCLUSIVE fails with PASYN_EPROGRAMMING: it would lock the
 * readers out. */
int pasyn_submit(pasyn_pool *pool, pasyn_task *t, int sync);
/* Blocks until a task submitted with `sync` has completed. The thread that submitted it. */
void pasyn_task_wait(pasyn_task *t);

/* 1 once the task is the caller's again: drained from the hub (pasyn_hub_drain), completed
 * for pasyn_task_wait, or run at once (PASYN_DONE); its result may be read then and it may be
 * freed. 0 while it is the pool's (queued, running, or completed but not yet drained), when
 * reading or freeing it would race with the worker that has it or leave the hub's list a
 * dangling link. The thread that submitted it (the hub's owner thread). */
int pasyn_task_completed(const pasyn_task *t);

/* ---- results of a completed task --------------------------------------------------- */

/* enum pasyn_error; for PASYN_ESQLITE *code and *extended are SQLite's result codes; *message
 * (owned by the task) says what went wrong. Out-pointers may be NULL. */
int pasyn_task_error(const pasyn_task *t, int *code, int *extended, const char **message);

/* Result columns (0 for statements without any). Names and declared types (NULL when none)
 * live as long as the task. */
int pasyn_task_columns(const pasyn_task *t);
const char *pasyn_task_column_name(const pasyn_task *t, int i);
const char *pasyn_task_column_decltype(const pasyn_task *t, int i);
/* Names the task's column names and types: tasks with the same id have the same ones (an id
 * is never reused), so what was built from one serves the others. 0: no names. */
uint64_t pasyn_task_columns_id(const pasyn_task *t);

/* The rows of this chunk: *nrows rows of pasyn_task_columns values each, read in order with
 * pasyn_row_value starting from the returned cursor. */
const unsigned char *pasyn_task_rows(const pasyn_task *t, size_t *nrows);
const unsigned char *pasyn_row_value(const unsigned char *at, pasyn_value *out);

/* Rows changed by an INSERT, UPDATE or DELETE (summed over a PASYN_MANY); -1 for other
 * statements. */
int64_t pasyn_task_rowcount(const pasyn_task *t);
/* 1 and *rowid when the statement itself inserted a row (a top-level INSERT or REPLACE that
 * inserted; not a trigger's insert, an upsert that updated, an ignored row or a WITHOUT ROWID
 * table): *rowid is then sqlite3_last_insert_rowid() after it, any 64-bit value. Else 0. */
int pasyn_task_lastrowid(const pasyn_task *t, int64_t *rowid);

/* Non-zero when the result goes on: one reader keeps the statement (and its snapshot) and
 * serves nothing else until a PASYN_FETCH task with the same stream reaches the end, or a
 * PASYN_RELEASE task ends it. *stream identifies it for pasyn_task_set_stream. */
int pasyn_task_stream(const pasyn_task *t, uint64_t *stream);
void pasyn_task_set_stream(pasyn_task *t, uint64_t stream);

/* ---- SQL functions defined by the host ------------------------------------------------ */

/* The host defines SQL functions, aggregates and collations on every connection of the pool,
 * but runs them itself, on its own thread: when SQLite calls one on a worker, the worker queues
 * a call on the pool's hub (its descriptor polls readable, pasyn_hub_poll returns, and a
 * PASYN_SYNC task's waiter in pasyn_task_wait_calls wakes), and waits until the host answers it
 * with pasyn_call_return or pasyn_call_fail. A host that never takes calls holds up only the
 * statements that call its functions. See sqlite.org/c3ref/create_function.html and
 * c3ref/create_collation.html. */
enum pasyn_function_flags {
    PASYN_FUNCTION_DETERMINISTIC = 1, /* SQLITE_DETERMINISTIC */
    PASYN_FUNCTION_AGGREGATE = 2,     /* an aggregate: PASYN_CALL_STEP per row, then FINAL */
    PASYN_FUNCTION_COLLATION = 4      /* a collation: PASYN_CALL_COMPARE; nargs is ignored */
};

/* Defines (id != 0) or removes (id == 0) the SQL function `name` of `nargs` arguments (-1: any
 * number, 0..127) on every connection of the pool: the writer, the readers and the connection
 * that classifies new SQL text (whose statements never run: a call there fails at once). Each
 * connection takes it before it prepares or looks up its next statement, so a statement
 * submitted after this returns sees it; a statement running meanwhile keeps what it had. `id`
 * is the host's name for the function, handed back in each call. *replaced (may be NULL) gets
 * the id of the definition this one replaces (a function or aggregate of the same name and
 * nargs, or a collation of the same name; names compared as SQLite does, without case), or 0.
 * Returns 0; PASYN_EPROGRAMMING for a NULL, empty or too long name or an nargs out of range;
 * PASYN_ECLOSED once the pool is closing; PASYN_ENOMEM. Any thread. */
int pasyn_create_function(pasyn_pool *pool, const char *name, int nargs, int flags, uint64_t id,
                          uint64_t *replaced);

/* What a call asks of the host. */
enum pasyn_call_op {
    PASYN_CALL_FUNCTION = 1, /* a scalar function: its result */
    PASYN_CALL_STEP,         /* an aggregate's row: no result (pasyn_call_return with NULL) */
    PASYN_CALL_FINAL,        /* an aggregate's group ends: its result */
    PASYN_CALL_COMPARE       /* a collation: an integer, negative, 0 or positive */
};

/* Takes every call waiting on the hub, oldest first, as a list walked with pasyn_call_next
 * (read the next one before answering a call: an answered call is gone). NULL when none. Never
 * blocks. Owner thread; after pasyn_hub_drain when both are done, so that calls queued before
 * the drain cleared the descriptor are taken. */
pasyn_call *pasyn_hub_calls(pasyn_hub *hub);
pasyn_call *pasyn_call_next(const pasyn_call *c);
/* enum pasyn_call_op, and the id the function was defined with. */
int pasyn_call_op(const pasyn_call *c);
uint64_t pasyn_call_id(const pasyn_call *c);
/* Aggregates: the group's context, a non-zero number never reused among the calls of one hub
 * (of every pool that delivers to it: a host keeps their groups apart by it), the same for
 * every STEP of one group and its FINAL; *first (may be NULL) is 1 on the group's first STEP.
 * A FINAL with context 0 ends a group that had no rows (an aggregate over an empty input).
 * When a STEP fails, no FINAL comes for its context: the host forgets the group then. */
uint64_t pasyn_call_context(const pasyn_call *c, int *first);
/* The arguments: their count, and in *at where the first is, read one after the other with
 * pasyn_row_value (a collation's two are TEXT). Valid until the call is answered. */
int pasyn_call_args(const pasyn_call *c, const unsigned char **at);
/* Answers the call: `v` is its result (copied; NULL: SQL NULL), or `message` the error that
 * fails the statement (SQLITE_ERROR with that text; a collation takes 0). The call is not the
 * host's any more. Owner thread. */
void pasyn_call_return(pasyn_call *c, const pasyn_value *v);
void pasyn_call_fail(pasyn_call *c, const char *message);

/* Blocks like pasyn_task_wait, but returns early when calls wait on the task's hub: 1 once the
 * task has completed, 0 when calls are to be taken (pasyn_hub_calls) and answered before
 * waiting again. A host that blocks on PASYN_SYNC tasks while its functions may be called
 * waits with it, or a statement that calls them waits for ever. The submitting thread. */
int pasyn_task_wait_calls(pasyn_task *t);

/* The host will answer no more calls of this pool's functions (it is going away): those queued
 * fail now, and those to come fail at once, with "the SQL function's host is gone". Any
 * thread; then close and free the pool as usual. */
void pasyn_pool_refuse_calls(pasyn_pool *pool);

/* ---- what hooks report: trace and on_change (hooks.c) ------------------------------- */

/* Turns the trace on (non-zero) or off. While it is on, each statement a task runs, on any
 * connection of the pool, leaves a record in the task when it finishes (successfully or not):
 * its SQL with the parameters bound (sqlite3_expanded_sql; the text as written when SQLite
 * cannot expand it) and how long it ran, in nanoseconds (sqlite3_trace_v2,
 * SQLITE_TRACE_PROFILE). Workers see the change from their next task on; while it is off they
 * install no hook at all. The pool's own statements (BEGIN and COMMIT of a group commit, the
 * savepoint of an executemany, schema lookups) are not reported. Any thread. */
void pasyn_set_trace(pasyn_pool *pool, int on);
/* The trace records of a completed task: their count, and each in turn from
 * pasyn_task_trace(t, NULL, ...) on, giving back where the next one starts (NULL after the
 * last). *sql (owned by the task, NUL-terminated) and *len are its text, *ns its run time. In
 * the order the statements finished. */
size_t pasyn_task_traces(const pasyn_task *t);
const unsigned char *pasyn_task_trace(const pasyn_task *t, const unsigned char *at,
                                      const char **sql, size_t *len, uint64_t *ns);

/* Turns on_change on with a bound of `max_events` per transaction (0: off). While it is on,
 * the writer collects each row change (sqlite3_update_hook) of a transaction in C memory and,
 * once its COMMIT has succeeded, hands them to the task whose statement committed it (an
 * autocommit statement, a COMMIT, a RELEASE of the outermost savepoint; each member of a group
 * commit gets its own): nothing of work that was rolled back (ROLLBACK, ROLLBACK TO a
 * savepoint, a statement that failed and undid its changes, a group commit run again). Changes
 * beyond max_events in one transaction are only counted (pasyn_task_changes' *dropped). What
 * the update hook does not report is not reported (c3ref/update_hook.html): changes to WITHOUT
 * ROWID tables, rows deleted by REPLACE conflict resolution or by the truncate optimization
 * (DELETE without WHERE on a table without triggers), changes to sqlite_ tables. Takes effect
 * when the writer is outside a transaction, from its next task on. Any thread. */
void pasyn_set_on_change(pasyn_pool *pool, size_t max_events);

enum pasyn_change_op { PASYN_INSERT = 1, PASYN_UPDATE = 2, PASYN_DELETE = 3 };

typedef struct pasyn_change {
    int op;            /* enum pasyn_change_op */
    const char *db;    /* "main", "temp" or an attached name (owned by the task) */
    const char *table; /* owned by the task */
    int64_t rowid;
} pasyn_change;

/* The row changes committed by a completed task, in the order they were made; *dropped (may be
 * NULL) gets how many more there were beyond the bound. */
size_t pasyn_task_changes(const pasyn_task *t, uint64_t *dropped);
/* The i-th of them (i < pasyn_task_changes). */
void pasyn_task_change(const pasyn_task *t, size_t i, pasyn_change *out);

/* ---- copies of the database: serialize and backup (backup.c) ------------------------- */

/* The bytes a completed PASYN_SERIALIZE task holds, owned by the task: the database file's
 * content, as one connection (the writer's, with its transaction if the task's owner holds
 * one) sees it, its file format bytes (18 and 19) set to 1 where WAL's 2 were (an in-memory
 * SQLite, sqlite3_deserialize, cannot open a WAL image). "" and *len 0 for other tasks. */
const unsigned char *pasyn_task_bytes(const pasyn_task *t, size_t *len);

/* An online backup (backup.html) of the pool's database `name` (NULL or "": "main"; "temp",
 * an attached name) into the file `dest` (a path or a "file:" URI, created when missing,
 * replaced otherwise), `pages` pages per step (<= 0: all at once). Each PASYN_BACKUP task
 * (pasyn_task_new(PASYN_BACKUP, NULL, 0), then pasyn_task_set_backup) runs one step on the
 * writer, between other tasks: the first opens `dest` and starts the copy, and the step that
 * copies the last page ends it. Writes the pool makes between steps go into the copy too (the
 * source is the writer's own connection), so it never restarts, and ends as the database was at
 * its last step. Not from inside the caller's own transaction (SQLITE_BUSY at once), nor into
 * the file of one of the writer's databases, the one copied or another attached (the first
 * step fails with PASYN_EPROGRAMMING: the copy would hold its write lock across steps). A step that fails ends the backup; its task says why
 * (PASYN_ESQLITE, the message naming dest). NULL when out of memory. Any thread. */
pasyn_backup *pasyn_backup_new(const char *dest, const char *name, int pages);
void pasyn_task_set_backup(pasyn_task *t, pasyn_backup *b);
/* After a step's task completed: pages left to copy and the source's page count as of that
 * step (sqlite3_backup_remaining, sqlite3_backup_pagecount); 1 once the backup has ended
 * (copied all, or failed), 0 while more steps are to come. Owner thread, between steps. */
int pasyn_backup_progress(const pasyn_backup *b, int *remaining, int *total);
/* Ends a backup that will take no more steps and frees it; nobody is told, and the caller never
 * waits. On an open pool the writer does it, after any step of it already queued; on a pool
 * closing or closed (or without memory for that task) the pool keeps it and frees it in
 * pasyn_pool_free. Either way b is the pool's from this call on. Owner thread, before
 * pasyn_pool_free. */
void pasyn_backup_abandon(pasyn_pool *pool, pasyn_backup *b);
/* Frees a backup that has ended, or whose pool has been freed (it ends it first). Never while a
 * task of it is queued or running. Owner thread. */
void pasyn_backup_free(pasyn_backup *b);
/* The file the pool's writer opens: its database's path or URI (a ":memory:" pool: its
 * private file), owned by the pool; a backup's dest that makes another pool's copy. Any
 * thread. */
const char *pasyn_pool_path(const pasyn_pool *pool);

/* ---- pool state -------------------------------------------------------------------- */

/* Makes the statements running now, on every connection of the pool, fail with SQLITE_INTERRUPT
 * ("interrupted"): each worker's task that started before this call stops at its next check
 * (the progress handler, about every 1000 SQLite VM instructions; not while SQLite waits for a
 * lock of another process, nor inside one long instruction such as a sort's). A streamed result
 * between two fetches is not running: its next chunk comes as usual. Statements that start
 * afterwards are not affected. 0, or PASYN_ECLOSED once the pool is closing. Any thread. */
int pasyn_interrupt(pasyn_pool *pool);

/* Where a pool is in its life. The core alone changes it, forward only:
 * OPENING -> OPEN -> CLOSING -> CLOSED, or OPENING -> CLOSING -> CLOSED when the open fails. */
enum pasyn_pool_state {
    PASYN_POOL_OPENING = 0, /* its threads are opening their connections (the open task has not
                               completed): submits fail with PASYN_ECLOSED; a pasyn_close now
                               takes effect once the open ends */
    PASYN_POOL_OPEN,        /* every connection opened: submits are taken */
    PASYN_POOL_CLOSING,     /* pasyn_close was called, or the open failed: submits and
                               pasyn_interrupt fail with PASYN_ECLOSED; what was submitted before
                               runs to its end; connections are being closed */
    PASYN_POOL_CLOSED       /* every connection is closed and every thread is ending; the close
                               (or failed open) task is completing: pasyn_pool_free will not wait
                               long */
};

/* The pool's state, enum pasyn_pool_state. It may move on as soon as it has been read, but only
 * forward: PASYN_POOL_CLOSED stays. Any thread, until pasyn_pool_free. */
int pasyn_pool_state(const pasyn_pool *pool);
/* Non-zero when pasyn_pool_state(pool) is PASYN_POOL_CLOSED; kept for programs written
 * before pasyn_pool_state. Any thread. */
int pasyn_closed(const pasyn_pool *pool);
/* The owner of the writer's open transaction, 0 when none. Any thread. */
uint64_t pasyn_txn_owner(const pasyn_pool *pool);
/* What SQL's total_changes() answers on the writer, as of its last task: sqlite3_total_changes()
 * less the changes of group commits that were rolled back and ran again alone. Any thread. */
int64_t pasyn_total_changes(const pasyn_pool *pool);

typedef struct pasyn_worker_stats {
    uint64_t executed;  /* tasks run */
    uint64_t stolen;    /* tasks taken from another reader's deque */
    uint64_t queued;    /* tasks waiting in its queue now */
    uint64_t batches;   /* group-commit transactions of two or more statements (writer) */
    uint64_t batched;   /* statements run inside them (writer) */
    uint64_t batch_max; /* the most statements one of them held (writer) */
    int streaming;      /* holds a streamed result now */
} pasyn_worker_stats;

/* Counters: out[0] is the writer, out[1..readers] the readers; fills at most n entries and
 * returns how many there are. *injector gets the shared queue's length. Any thread. */
int pasyn_stats(const pasyn_pool *pool, pasyn_worker_stats *out, int n, uint64_t *injector);

typedef struct pasyn_inline_stats {
    uint64_t executed; /* reads run to completion on the submitting thread */
    uint64_t overruns; /* abandoned there: ran past inline_budget */
    uint64_t busy;     /* abandoned there: a lock another process held, or a schema to load */
    uint64_t failed;   /* abandoned there: any other failure, or a result that streams */
} pasyn_inline_stats;

/* The counters of inline reads (every abandoned read was then run by a reader). Returns 1 when
 * the pool runs reads inline, else 0 (the counters stay 0). Any thread. */
int pasyn_inline_counts(const pasyn_pool *pool, pasyn_inline_stats *out);

/* The SQLite library's version. */
const char *pasyn_sqlite_version(void);

#endif
