/*
 * internal.h - what every part of the core shares: tasks and their buffers, the deque, the
 * hub's structure, the clock and the spinning primitives. Connections are in conn.h, the pool
 * in pool.h. Shared by the files of c/ and by the C unit tests; never installed.
 */
#ifndef PASYN_INTERNAL_H
#define PASYN_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>
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

/* What the submitter said it does while a task runs (pasyn.h): nothing said; other work
 * (pasyn_task_set_caller_busy); nothing but wait (pasyn_task_set_caller_idle); it says once
 * the task cannot run at once (pasyn_task_set_caller_asks). */
enum caller_state { CALLER_UNSAID = 0, CALLER_BUSY = 1, CALLER_IDLE = 2, CALLER_ASKS = 3 };

/* The column names and declared types of a prepared statement, built once per prepare and
 * shared by its cache entry and every task that ran it; the last of them frees it. */
typedef struct columns {
    _Atomic int refs;
    int n;
    size_t bytes;       /* its size: a statement cache charges it to its statement */
    uint64_t id;        /* never reused: pasyn_task_columns_id */
    const char *text[]; /* n names, then n declared types (NULL: none); the strings follow */
} columns;

/* In a task's params, the length word that starts the next reading of a parameter set
 * (pasyn_task_bind_alternative) instead of a parameter; UINT32_MAX marks a positional one. */
#define READING_MARK (UINT32_MAX - 1)

struct pasyn_task {
    pasyn_task *next; /* queue and hub link */
    pasyn_task *prev; /* writer queue only */
    int kind;
    int notify;       /* enum notify */
    _Atomic int done; /* the submitter's again: drained, completed for pasyn_task_wait, or
                         PASYN_DONE (pasyn_task_completed) */
    pasyn_hub *hub;   /* where it completes */
    uint64_t owner;
    void *user;
    char *sql;
    size_t sql_len;

    buf params;            /* per value: u32 name length, name, encoded value */
    uint32_t nsets;        /* PASYN_MANY: parameter sets closed by pasyn_task_next_set */
    int alternatives;      /* a parameter set holds several readings (READING_MARK) */
    int no_owner_wait;     /* fails rather than wait behind another owner's transaction */
    int route_known;       /* the route cache knew it at submit: workers need not learn it */
    int long_read;         /* a read whose SQL is a long read (LONG_READ_NS), as last learned */
    int fits_inline;       /* what the route cache said of running it inline (enum inline_fit) */
    int no_inline;         /* pasyn_task_set_no_inline */
    int caller;            /* enum caller_state: pasyn_task_set_caller_busy, _idle */
    uint64_t timeout_ns;   /* 0, or how long it may run */
    uint64_t submitted_ns; /* now_ns() when it was submitted: its busy_timeout counts from
                              then (conn.c, busy_wait) */
    buf set_ends;          /* PASYN_MANY: offsets (size_t) where each set ends */

    /* results */
    int err; /* enum pasyn_error */
    int code, extended;
    char *message;
    int ncols;
    columns *cols; /* their names and types, when described */
    buf rows;
    size_t nrows;
    int64_t rowcount;
    int has_rowid;
    int64_t rowid;
    uint64_t stream;            /* streamed result: (reader index + 1) << 48 | serial */
    struct task_events *events; /* what trace and on_change report of it (hooks.c), or NULL */
    pasyn_backup *backup;       /* PASYN_BACKUP: the backup it steps (backup.c) */
    unsigned char *bytes;       /* PASYN_SERIALIZE: the database (sqlite3_malloc'd), or NULL */
    size_t bytes_len;
};

/* A mutex-protected deque of tasks: the owner takes from the front, thieves from the back. */
typedef struct deque {
    pthread_mutex_t mu;
    pasyn_task **ring;
    size_t head, len, cap;
    _Atomic size_t size; /* len, readable without the lock */
} deque;

int deque_init(deque *d);
void deque_destroy(deque *d);
int deque_push_back(deque *d, pasyn_task *t);       /* locks */
pasyn_task *deque_pop_front(deque *d);              /* locks */
pasyn_task *deque_pop_back(deque *d);               /* locks */
pasyn_task *deque_take_short(deque *d, size_t *at); /* locks: the first that is no long read */
int deque_push_back_locked(deque *d, pasyn_task *t);
pasyn_task *deque_pop_front_locked(deque *d);

struct pasyn_hub {
    pthread_mutex_t mu;
    pthread_cond_t sync_cv; /* NOTIFY_SYNC completions */
    pasyn_task *head, *tail;
    _Atomic int pending;  /* head != NULL, readable without the lock */
    _Atomic int watching; /* the host spins on pending in pasyn_hub_poll */
    _Atomic int idle;     /* the host waits in pasyn_hub_poll, nothing drained left to run:
                             it submits nothing more before a completion (group_commit.c) */
    int signalled;        /* under mu: the descriptor (and sfd) written since the last drain */
    int stray;            /* under mu: a write that trailed a drain may have landed since it
                             (hub_write_unlocked): the next drain clears the descriptor */
    int efd;              /* eventfd, or the read end of a pipe */
    int wfd;              /* the write end (== efd for eventfd) */
    int sfd;              /* under mu: a connected socket signalled too (pasyn_hub_accept),
                                 * or -1 */
    int lfd;              /* listening socket of pasyn_hub_listen, or -1; owner thread */
    pasyn_call *calls, *calls_tail; /* under mu: calls of SQL functions waiting for the host
                                       (functions.c); they keep `pending` set too */
    _Atomic int calling;            /* calls != NULL, readable without the lock */
    /* The last aggregate group context handed out, for every pool whose calls come here: the
     * host keeps the groups of all of them by context (functions.c). */
    _Atomic uint64_t agg_context;
    _Atomic uint64_t drains; /* drains that cleared the descriptor; written under mu */
    char lpath[sizeof((struct sockaddr_un *)0)->sun_path]; /* its path, "" when none */
};

void hub_complete(pasyn_hub *hub, pasyn_task *t); /* any worker thread */
/* Under mu: writes the descriptor (and the host's socket) unless it is written already or the
 * host watches `pending` (hub.c). */
void hub_signal_locked(pasyn_hub *hub);
/* Under mu: fails every queued call (of the host functions `fs`, or of all when NULL): its
 * worker goes on with an error result (functions.c). */
struct fn_registry;
void hub_fail_calls_locked(pasyn_hub *hub, const struct fn_registry *fs, const char *message);

/* Hands a task that has run back to its submitter, through its hub. Any worker thread; the task
 * is not the worker's any more. */
static inline void task_complete(pasyn_task *t)
{
    hub_complete(t->hub, t);
}

/* Filling a task's error (task.c); each replaces an error set before. */
void task_fail(pasyn_task *t, int err, int code, int extended, const char *message);
void task_fail_sqlite(pasyn_task *t, sqlite3 *db, int rc);
void task_fail_programming(pasyn_task *t, const char *fmt, ...);
void task_fail_nomem(pasyn_task *t);
/* Forgets a result (rows, counts, error) so the task can run again elsewhere. */
void task_reset_result(pasyn_task *t);
/* Whether the progress handler stopped the task (its timeout, or pasyn_interrupt): its error
 * is its own, and it is not run again anywhere. */
int task_stopped(const pasyn_task *t);
void columns_put(columns *c);
/* What a task holds for the trace and on_change hooks (hooks.c): freed with it; a task that
 * runs again keeps its trace and drops its changes. */
void hooks_task_free(pasyn_task *t);
void hooks_task_reset(pasyn_task *t);

/* Bounded spinning before parking (workers) or sleeping (waiters). */
/* 1 while no more threads are runnable than the machine has cores (a look at the run queue,
 * at most every 2 ms); 0 then nobody spins. Any thread. cpu.c */
int cpu_core_spare(void);
/* 1 while a core is left for a worker beside the caller and other processes' runnable threads
 * (the same look, unless pasyn_set_handoff decided it for the process): a hand-off then costs
 * no wait for a core. `long_workers` of this process's workers are busy with long reads: they
 * keep their cores, as other processes' threads do. 0 at once when `free_workers` is 0: no
 * worker would take it soon (readers_handoff_pays). Any thread. cpu.c */
int cpu_handoff_pays(int free_workers, int long_workers);
/* What a look at the run queue says, from its numbers: `running` runnable threads on the
 * machine (-1: unknown), `awake_workers` of them this process's workers not parked, and
 * `long_workers` of this process's workers busy with long reads now, `n_cores` cores. *is_spare: no more runnable
 * threads than cores (spinning pays); *pays: a core is left for a worker beside the caller and
 * the other runnable threads (a hand-off pays). Pure. cpu.c */
void cpu_judge(int running, int awake_workers, int long_workers, long n_cores, int *is_spare,
               int *pays);
/* A worker thread starts or wakes (+1), parks or ends (-1). Worker threads. cpu.c */
void cpu_worker_awake(int delta);
/* The calling thread's CPU time in ns (CLOCK_THREAD_CPUTIME_ID: a system call, about 0.2 us).
 * Any thread. cpu.c */
uint64_t cpu_thread_ns(void);
/* Where the thread's scheduler statistics cannot be read (cpu_run_delay), an inline run that
 * lost its core goes on past its budget by its CPU time, but never past this many budgets of
 * wall time (a read waiting on the disk uses no CPU either): 12.8 ms at the default budget,
 * about what four processes' threads on two cores may keep one waiting. */
#define BUDGET_WALL_MAX 64
/* What is left of an inline run's budget of `budget_ns` once its thread used `cpu_ns` of CPU
 * in `wall_ns`: 0 when it used the budget up, or when going on for the rest would take it past
 * BUDGET_WALL_MAX budgets of wall time. Pure. cpu.c */
uint64_t cpu_budget_left(uint64_t budget_ns, uint64_t cpu_ns, uint64_t wall_ns);
/* What is left of an inline run's budget of `budget_ns` by the time it held its thread: the
 * `lead_ns` before its first progress check, then `wall_ns` of wall time since, less the
 * `delay_ns` of it the thread spent runnable, waiting for a core (run_delay, cpu_run_delay).
 * What is held is CPU time and time blocked (a pread of a page not in the page cache, a
 * lock): the host's loop is held as long, while waiting for a core it would wait anyway. 0
 * when the budget is used up. No bound on the wall time: however long the thread waits for a
 * core, the read holds the loop for no more than the budget (abandoning it would not give the
 * core back, only drop the work done). Pure. cpu.c */
uint64_t cpu_held_left(uint64_t budget_ns, uint64_t lead_ns, uint64_t wall_ns, uint64_t delay_ns);
/* A reader of the calling thread's scheduler statistics (/proc/thread-self/schedstat), kept
 * open by its owner (a connection, for its inline runs): all zeros is closed. */
typedef struct cpu_sched {
    int fd;    /* the open file, + 1 (0: none) */
    pid_t tid; /* the thread it describes */
} cpu_sched;
/* The calling thread's run_delay, in ns: its time spent runnable on a run queue, waiting for
 * a core, since it started ("cpu_ns run_delay_ns timeslices", the kernel's
 * Documentation/scheduler/sched-stats.rst). `check` (a run's first read) makes sure the file
 * open is this thread's (gettid), opening it when not (about 8 us; a read of the open file is
 * one pread, about 0.3 us). 0, or -1 where it cannot be read (no /proc, a kernel without
 * schedstats: all zeros). The thread that owns `s`. cpu.c */
int cpu_run_delay(cpu_sched *s, int check, uint64_t *delay_ns);
/* Closes what cpu_run_delay opened; a zeroed one is left alone. cpu.c */
void cpu_sched_close(cpu_sched *s);
/* The run_delay field of a schedstat text of `len` bytes: 0, or -1 when it is not three
 * numbers or its count of time slices is 0 (no statistics kept). Pure. cpu.c */
int cpu_parse_schedstat(const char *text, size_t len, uint64_t *delay_ns);
#ifndef SPIN_NS
#define SPIN_NS 50000
#endif

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

#endif
