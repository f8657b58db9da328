/*
 * test_cpu.c - unit tests of the rules that follow the machine's load, printed as TAP for
 * prove(1): what a look at the run queue says (cpu_judge, c/cpu.c), what is left of an inline
 * run's budget (cpu_budget_left), whether the caller runs a read itself (inline_rule,
 * c/reader.c), and that a read handed to readers all taken by long reads or streams is run by
 * the caller instead (readers_handoff_pays on a pool whose counters are set by hand).
 *
 *   make build/lua5.4/test_cpu && build/lua5.4/test_cpu
 */
#include <stdio.h>
#include <string.h>
#include "pool.h"
#include "tap.h"

static void judge_long(int running, int awake, int busy_long, long cores, int spare, int pays,
                       const char *what)
{
    int s = -1, p = -1;
    cpu_judge(running, awake, busy_long, cores, &s, &p);
    ok(s == spare && p == pays,
       "%s: %d runnable, %d awake workers (%d on long reads), %ld cores -> spare %d, "
       "hand-off %d (want %d, %d)",
       what, running, awake, busy_long, cores, s, p, spare, pays);
}

static void judge(int running, int awake, long cores, int spare, int pays, const char *what)
{
    judge_long(running, awake, 0, cores, spare, pays, what);
}

static void test_judge(void)
{
    judge(-1, 0, 2, 1, 1, "run queue unknown: as on an idle machine");
    judge(1, 0, 2, 1, 1, "the caller alone");
    judge(2, 1, 2, 1, 1, "the caller and one worker of its own");
    judge(2, 0, 2, 1, 0, "the caller and one other process's thread: no core left for a worker");
    judge(3, 0, 2, 0, 0, "two other threads beside the caller: neither spin nor hand-off");
    judge(4, 3, 2, 0, 1, "own workers busy, nobody else: a hand-off waits for no other process");
    judge(5, 3, 2, 0, 0, "own workers busy and one other process's thread");
    judge(12, 4, 2, 0, 0, "four processes' threads on two cores");
    judge(3, 0, 4, 1, 1, "two other threads on four cores: a core is left");
    judge(4, 0, 4, 1, 0, "three other threads on four cores");
    judge(1, 0, 1, 1, 0, "one core: a worker never has one of its own");
    judge_long(4, 3, 2, 2, 0, 0, "two of three readers on long reads, the caller: no core left");
    judge_long(4, 3, 3, 2, 0, 0, "three readers on long reads: no core left");
    judge_long(3, 2, 1, 2, 0, 0, "a reader on a long read and the caller: no core for a free one");
    judge_long(3, 2, 1, 3, 1, 1, "the same on three cores: a core for the free one");
    judge_long(3, 1, 5, 2, 0, 0, "long reads begun after the look count all the same");
    judge_long(5, 4, 2, 4, 0, 1, "four cores, two readers on long reads: a core is left");
}

static void test_budget(void)
{
    ok(cpu_budget_left(200000, 0, 0) == 200000, "no CPU used: the whole budget is left");
    ok(cpu_budget_left(200000, 60000, 250000) == 140000,
       "60 us of CPU used of 200, in 250 us: 140 us left");
    ok(cpu_budget_left(200000, 200000, 300000) == 0, "the budget used up: nothing left");
    ok(cpu_budget_left(200000, 5000000, 5000000) == 0, "far past the budget: nothing left");
    ok(cpu_budget_left(200000, 60000, 12000000) == 140000,
       "12 ms without its core (60 budgets), 60 us of CPU: 140 us left");
    ok(cpu_budget_left(200000, 60000, 12700000) == 0,
       "that would end past 64 budgets of wall time: nothing left");
}

static void test_rule(void)
{
    /* fits, busy, handoff -> runs inline */
    static const struct {
        int fits, busy, handoff, want;
        const char *what;
    } cases[] = {
        {INLINE_FITS, 0, 1, 1, "a short read, caller idle, a core for a reader: inline"},
        {INLINE_FITS, 0, 0, 1, "a short read, caller idle, no core for a reader: inline"},
        {INLINE_FITS, 1, 1, 0, "a short read, caller busy, a hand-off pays: to a reader"},
        {INLINE_FITS, 1, 0, 1, "a short read, caller busy, a hand-off does not pay: inline"},
        {INLINE_LOADED, 0, 1, 0, "a longer read, a hand-off pays: to a reader"},
        {INLINE_LOADED, 1, 1, 0, "a longer read, caller busy, a hand-off pays: to a reader"},
        {INLINE_LOADED, 0, 0, 1, "a longer read, a hand-off does not pay: inline"},
        {INLINE_LOADED, 1, 0, 1, "a longer read, caller busy, a hand-off does not pay: inline"},
        {INLINE_NO, 0, 0, 0, "a long read: never inline"},
        {INLINE_NO, 1, 0, 0, "a long read, caller busy: never inline"},
        {INLINE_NEVER, 0, 0, 0, "struck off: never inline"},
        {INLINE_UNKNOWN, 0, 0, 0, "not yet run by a reader: not inline"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ok(inline_rule(cases[i].fits, cases[i].busy, cases[i].handoff) == cases[i].want, "%s",
           cases[i].what);
}

/* readers_handoff_pays on a pool that is only its counters: the readers taken by long reads
 * and streams decide it before any look at the machine (pasyn_set_handoff decides that). */
static void test_readers_taken(void)
{
    static pasyn_pool pool; /* zeroed: only readers.count, long_reads and streaming are read */
    pool.readers.count = 3;
    pasyn_set_handoff(PASYN_HANDOFF_LOOK);
    atomic_store(&pool.readers.long_reads, 3);
    ok(!readers_handoff_pays(&pool), "three readers, three long reads: no hand-off");
    atomic_store(&pool.readers.long_reads, 7);
    ok(!readers_handoff_pays(&pool), "three readers, seven long reads: no hand-off");
    atomic_store(&pool.readers.long_reads, 2);
    atomic_store(&pool.readers.streaming, 1);
    ok(!readers_handoff_pays(&pool), "two long reads and a stream: no hand-off");
    pasyn_set_handoff(PASYN_HANDOFF_ALWAYS);
    ok(!readers_handoff_pays(&pool), "the process says always, every reader taken: no hand-off");
    atomic_store(&pool.readers.long_reads, 1);
    ok(readers_handoff_pays(&pool), "the process says always, a reader free: a hand-off");
    atomic_store(&pool.readers.streaming, 0);
    atomic_store(&pool.readers.long_reads, 1);
    atomic_store(&pool.readers.unknown_reads, 2);
    ok(!readers_handoff_pays(&pool), "one long read and two reads of unknown cost: no hand-off");
    atomic_store(&pool.readers.unknown_reads, 1);
    ok(readers_handoff_pays(&pool), "one long read and one of unknown cost: a hand-off");
    pasyn_set_handoff(PASYN_HANDOFF_NEVER);
    atomic_store(&pool.readers.long_reads, 0);
    atomic_store(&pool.readers.unknown_reads, 0);
    atomic_store(&pool.readers.streaming, 0);
    ok(!readers_handoff_pays(&pool), "the process says never: no hand-off");
    pasyn_set_handoff(PASYN_HANDOFF_LOOK);
}

int main(void)
{
    test_judge();
    test_budget();
    test_rule();
    test_readers_taken();
    return tap_done();
}
