/*
 * test_deque.c - unit tests of c/deque.c, printed as TAP for prove(1).
 *
 * Single-threaded: empty pops, FIFO from the front, LIFO from the back, growth while the
 * ring is wrapped around, the _locked variants, take_short, the `size` mirror, and a randomized
 * comparison against a reference model. Concurrent: 2 producers push tasks into 3 deques;
 * 3 owners pop from the front of their own deque (stealing from the back of the busiest
 * other one when theirs is empty) and 3 thieves steal from the back of the busiest deque;
 * every task must run exactly once.
 *
 * PASYN_TEST_SCALE (a factor, default 1) scales the concurrent test's 1,000,000 tasks, e.g.
 * PASYN_TEST_SCALE=0.1 under a slow sanitizer.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -O2 -g -Ic c/test/test_deque.c c/deque.c \
 *      c/hub.c c/task.c -lsqlite3 -lpthread -o /tmp/test_deque
 */
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "tap.h"

/* ---- single-threaded ------------------------------------------------------------------ */

#define NSTATIC 64
static pasyn_task tk[NSTATIC];

static uintptr_t id_of(const pasyn_task *t)
{
    return t ? (uintptr_t)t->user : (uintptr_t)-1;
}

static size_t dsize(deque *d)
{
    return atomic_load(&d->size);
}

static void test_empty(void)
{
    deque d;
    ok(deque_init(&d) == 0, "deque_init returns 0");
    ok(dsize(&d) == 0 && d.len == 0, "a new deque has size 0");
    ok(deque_pop_front(&d) == NULL, "pop_front of an empty deque returns NULL");
    ok(deque_pop_back(&d) == NULL, "pop_back of an empty deque returns NULL");
    pthread_mutex_lock(&d.mu);
    pasyn_task *t = deque_pop_front_locked(&d);
    pthread_mutex_unlock(&d.mu);
    ok(t == NULL, "pop_front_locked of an empty deque returns NULL");
    deque_destroy(&d);
}

static void test_fifo_lifo(void)
{
    deque d;
    deque_init(&d);
    int good = 1;
    for (uintptr_t i = 0; i < 10; i++)
        good &= deque_push_back(&d, &tk[i]) == 0;
    ok(good && dsize(&d) == 10, "push_back of 10 tasks returns 0, size 10");
    good = 1;
    for (uintptr_t i = 0; i < 10; i++) {
        pasyn_task *t = deque_pop_front(&d);
        if (id_of(t) != i) {
            good = 0;
            diag("pop_front #%zu gave %zu", (size_t)i, (size_t)id_of(t));
        }
        good &= dsize(&d) == 9 - i;
    }
    ok(good, "pop_front gives FIFO order and size follows");
    ok(deque_pop_front(&d) == NULL && deque_pop_back(&d) == NULL,
       "pops of the emptied deque return NULL");

    for (uintptr_t i = 0; i < 10; i++)
        deque_push_back(&d, &tk[i]);
    good = 1;
    for (uintptr_t i = 10; i-- > 0;) {
        pasyn_task *t = deque_pop_back(&d);
        if (id_of(t) != i) {
            good = 0;
            diag("pop_back expected %zu got %zu", (size_t)i, (size_t)id_of(t));
        }
        good &= dsize(&d) == i;
    }
    ok(good, "pop_back gives LIFO order and size follows");
    ok(deque_pop_back(&d) == NULL && dsize(&d) == 0, "pop_back of the emptied deque returns NULL");

    /* both ends: 0 5 1 4 2 3 */
    for (uintptr_t i = 0; i < 6; i++)
        deque_push_back(&d, &tk[i]);
    static const uintptr_t want[6] = {0, 5, 1, 4, 2, 3};
    good = 1;
    for (int i = 0; i < 6; i++) {
        pasyn_task *t = (i & 1) ? deque_pop_back(&d) : deque_pop_front(&d);
        good &= id_of(t) == want[i];
    }
    ok(good && dsize(&d) == 0, "alternating pop_front/pop_back meet in the middle");
    deque_destroy(&d);
}

/* Puts the ring into a wrapped state (head near the end, elements continuing at slot 0), then
 * grows it and checks the order from the front (from_back == 0) or from the back. */
static void test_wrap_growth(int from_back)
{
    deque d;
    deque_init(&d);
    uintptr_t next = 0, first = 0;
    for (int i = 0; i < 12; i++)
        deque_push_back(&d, &tk[next++]);
    size_t cap0 = d.cap;
    for (int i = 0; i < 10; i++)
        deque_pop_front(&d), first++;
    while (d.len < d.cap)
        deque_push_back(&d, &tk[next++]);
    ok(d.cap == cap0 && d.head + d.len > d.cap && d.head != 0,
       "%s: ring full and wrapped (head %zu len %zu cap %zu)", from_back ? "back" : "front", d.head,
       d.len, d.cap);
    /* grow while wrapped, then grow once more */
    while (next < NSTATIC - 4)
        deque_push_back(&d, &tk[next++]);
    ok(d.cap > cap0 && d.len == next - first && dsize(&d) == d.len,
       "%s: grew past the wrap (cap %zu -> %zu, len %zu)", from_back ? "back" : "front", cap0,
       d.cap, d.len);
    int good = 1;
    if (!from_back) {
        for (uintptr_t i = first; i < next; i++)
            good &= id_of(deque_pop_front(&d)) == i;
    } else {
        for (uintptr_t i = next; i-- > first;)
            good &= id_of(deque_pop_back(&d)) == i;
    }
    ok(good && deque_pop_front(&d) == NULL && deque_pop_back(&d) == NULL,
       "%s: every element survived the growth in order", from_back ? "back" : "front");
    deque_destroy(&d);
}

static void test_locked(void)
{
    deque d;
    deque_init(&d);
    int good = 1;
    pthread_mutex_lock(&d.mu);
    for (uintptr_t i = 0; i < 40; i++) /* crosses two growths under the lock */
        good &= deque_push_back_locked(&d, &tk[i]) == 0;
    good &= dsize(&d) == 40;
    for (uintptr_t i = 0; i < 15; i++)
        good &= id_of(deque_pop_front_locked(&d)) == i;
    for (uintptr_t i = 40; i < 50; i++) /* pushes wrap around now */
        good &= deque_push_back_locked(&d, &tk[i]) == 0;
    for (uintptr_t i = 15; i < 50; i++)
        good &= id_of(deque_pop_front_locked(&d)) == i;
    good &= deque_pop_front_locked(&d) == NULL && dsize(&d) == 0;
    pthread_mutex_unlock(&d.mu);
    ok(good, "push_back_locked/pop_front_locked keep FIFO order across growth and wrap");

    /* the locked and locking variants share one deque */
    deque_push_back(&d, &tk[1]);
    pthread_mutex_lock(&d.mu);
    deque_push_back_locked(&d, &tk[2]);
    pthread_mutex_unlock(&d.mu);
    deque_push_back(&d, &tk[3]);
    pthread_mutex_lock(&d.mu);
    good = id_of(deque_pop_front_locked(&d)) == 1;
    pthread_mutex_unlock(&d.mu);
    good &= id_of(deque_pop_back(&d)) == 3 && id_of(deque_pop_front(&d)) == 2;
    ok(good && dsize(&d) == 0, "locked and locking variants interoperate");
    deque_destroy(&d);

    ok(deque_init(&d) == 0 && deque_push_back(&d, &tk[7]) == 0 && id_of(deque_pop_back(&d)) == 7 &&
           deque_pop_back(&d) == NULL,
       "a destroyed deque can be initialised and used again");
    deque_destroy(&d);
}

/* take_short removes the first task that is not a long read, wherever it is, and closes the
 * gap: on a ring wrapped around, the others keep their order. */
static void test_take_short(void)
{
    deque d;
    deque_init(&d);
    uintptr_t next = 0;
    for (int i = 0; i < 12; i++)
        deque_push_back(&d, &tk[next++]);
    for (int i = 0; i < 10; i++)
        deque_pop_front(&d);
    while (d.len < d.cap) /* wrapped: ids 10 .. 25 */
        deque_push_back(&d, &tk[next++]);
    uintptr_t first = 10, last = next; /* ids first .. last-1 are queued */
    for (uintptr_t i = first; i < last; i++)
        tk[i].long_read = i % 3 != 0; /* the short ones: 12, 15, 18, 21, 24 */
    int good = d.head + d.len > d.cap;
    size_t at, pos = 0;
    uintptr_t want = 12;
    pasyn_task *t;
    while ((t = deque_take_short(&d, &at)) != NULL) {
        good &= id_of(t) == want && at == want - first - pos && dsize(&d) == d.len;
        want += 3;
        pos++;
    }
    good &= want == 27 && d.len == last - first - 5;
    for (uintptr_t i = first; i < last; i++)
        if (i % 3 != 0)
            good &= id_of(deque_pop_front(&d)) == i;
    good &= deque_pop_front(&d) == NULL && deque_take_short(&d, &at) == NULL;
    ok(good, "take_short takes the short tasks in order from a wrapped ring, and the long ones "
             "stay in order");
    for (uintptr_t i = first; i < last; i++)
        tk[i].long_read = 0;
    deque_destroy(&d);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Random operations against a reference model. */
static void test_model(void)
{
    enum { MODEL_CAP = 8192, DISTINCT = 4096, OPS = 300000 };
    pasyn_task *pool = calloc(DISTINCT, sizeof *pool);
    pasyn_task **model = malloc(MODEL_CAP * sizeof *model);
    for (uintptr_t i = 0; i < DISTINCT; i++)
        pool[i].user = (void *)i;
    size_t mhead = 0, mlen = 0, maxlen = 0;
    deque d;
    deque_init(&d);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    size_t counter = 0, bad = 0, pushes = 0, pops = 0;
    for (long op = 0; op < OPS && bad == 0; op++) {
        /* drift: grow for a while, then shrink, so the ring wraps and grows repeatedly */
        int phase = (op / 10000) % 2;
        unsigned r = (unsigned)(rng_next(&s) % 100);
        int push = phase == 0 ? r < 65 : r < 35;
        if (mlen >= DISTINCT - 1)
            push = 0;
        if (push) {
            pasyn_task *t = &pool[counter++ % DISTINCT];
            int rc;
            if (r & 1) {
                rc = deque_push_back(&d, t);
            } else {
                pthread_mutex_lock(&d.mu);
                rc = deque_push_back_locked(&d, t);
                pthread_mutex_unlock(&d.mu);
            }
            if (rc != 0)
                bad++;
            model[(mhead + mlen++) % MODEL_CAP] = t;
            pushes++;
        } else {
            int kind = (int)(rng_next(&s) % 3);
            pasyn_task *got, *want = NULL;
            if (kind == 0) {
                got = deque_pop_front(&d);
            } else if (kind == 1) {
                pthread_mutex_lock(&d.mu);
                got = deque_pop_front_locked(&d);
                pthread_mutex_unlock(&d.mu);
            } else {
                got = deque_pop_back(&d);
            }
            if (mlen && kind < 2) {
                want = model[mhead];
                mhead = (mhead + 1) % MODEL_CAP;
                mlen--;
            } else if (mlen) {
                want = model[(mhead + --mlen) % MODEL_CAP];
            }
            if (got != want) {
                bad++;
                diag("op %ld: pop kind %d gave %zu, model %zu", op, kind, (size_t)id_of(got),
                     (size_t)id_of(want));
            }
            pops++;
        }
        if (dsize(&d) != mlen || d.len != mlen) {
            bad++;
            diag("op %ld: size %zu len %zu, model %zu", op, dsize(&d), d.len, mlen);
        }
        if (mlen > maxlen)
            maxlen = mlen;
    }
    ok(bad == 0,
       "%d random operations match a reference model (%zu pushes, %zu pops, "
       "max length %zu, final cap %zu)",
       OPS, pushes, pops, maxlen, d.cap);
    deque_destroy(&d);
    free(model);
    free(pool);
}

/* ---- concurrent ------------------------------------------------------------------------ */

#define NDQ 3
#define NPROD 2
#define NTHIEF 3

static deque dq[NDQ];
static pasyn_task *tasks;
static size_t ntasks;
static _Atomic unsigned *counts;
static _Atomic size_t executed;
static _Atomic int producers_done, stop;
static _Atomic size_t push_failures, bad_pointers;

typedef struct worker_stat {
    size_t own, own_batched, stolen;
} worker_stat;

static worker_stat owner_stat[NDQ], thief_stat[NTHIEF];

static void run_task(pasyn_task *t)
{
    if (t < tasks || t >= tasks + ntasks) {
        atomic_fetch_add(&bad_pointers, 1);
        return;
    }
    size_t idx = (size_t)(t - tasks);
    /* the producer wrote user before pushing; the deque's lock must publish it */
    if ((uintptr_t)t->user != idx + 1)
        atomic_fetch_add(&bad_pointers, 1);
    atomic_fetch_add_explicit(&counts[idx], 1, memory_order_relaxed);
    atomic_fetch_add(&executed, 1);
}

/* pop_back from the deque (other than `skip`) with the largest size, read without locks */
static pasyn_task *steal(int skip)
{
    int best = -1;
    size_t best_size = 0;
    for (int j = 0; j < NDQ; j++) {
        if (j == skip)
            continue;
        size_t s = atomic_load_explicit(&dq[j].size, memory_order_relaxed);
        if (s > best_size) {
            best_size = s;
            best = j;
        }
    }
    return best < 0 ? NULL : deque_pop_back(&dq[best]);
}

static int finished(void)
{
    return atomic_load(&executed) >= ntasks || atomic_load(&stop);
}

static void *producer_main(void *arg)
{
    int p = (int)(intptr_t)arg;
    size_t from = ntasks * (size_t)p / NPROD, to = ntasks * (size_t)(p + 1) / NPROD;
    uint64_t s = 0x2545F4914F6CDD1Dull * (uint64_t)(p + 1);
    size_t i = from;
    while (i < to) {
        /* skewed: producer p favours deque p, so deque 2 mostly lives by stealing */
        unsigned r = (unsigned)(rng_next(&s) % 10);
        int d = r < 6 ? p : r < 9 ? (p + 1) % NDQ : (p + 2) % NDQ;
        if ((i & 63) == 0) {
            /* a batch under one lock */
            size_t n = to - i < 16 ? to - i : 16;
            pthread_mutex_lock(&dq[d].mu);
            for (size_t k = 0; k < n; k++, i++) {
                tasks[i].user = (void *)(uintptr_t)(i + 1);
                if (deque_push_back_locked(&dq[d], &tasks[i]) != 0)
                    atomic_fetch_add(&push_failures, 1);
            }
            pthread_mutex_unlock(&dq[d].mu);
        } else {
            tasks[i].user = (void *)(uintptr_t)(i + 1);
            if (deque_push_back(&dq[d], &tasks[i]) != 0)
                atomic_fetch_add(&push_failures, 1);
            i++;
        }
        if ((i & 1023) == 0)
            sched_yield(); /* let the consumers in on a 2-CPU box */
    }
    atomic_fetch_add(&producers_done, 1);
    return NULL;
}

static void *owner_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    worker_stat *st = &owner_stat[me];
    unsigned long iter = 0;
    while (!finished()) {
        iter++;
        if ((iter & 15) == 0) {
            /* take up to 8 at once under the lock */
            pasyn_task *batch[8];
            int n = 0;
            pthread_mutex_lock(&dq[me].mu);
            while (n < 8 && (batch[n] = deque_pop_front_locked(&dq[me])) != NULL)
                n++;
            pthread_mutex_unlock(&dq[me].mu);
            for (int k = 0; k < n; k++)
                run_task(batch[k]);
            st->own_batched += (size_t)n;
            if (n)
                continue;
        }
        pasyn_task *t = deque_pop_front(&dq[me]);
        if (t) {
            run_task(t);
            st->own++;
            continue;
        }
        t = steal(me);
        if (t) {
            run_task(t);
            st->stolen++;
            continue;
        }
        sched_yield();
    }
    return NULL;
}

static void *thief_main(void *arg)
{
    worker_stat *st = &thief_stat[(int)(intptr_t)arg];
    while (!finished()) {
        pasyn_task *t = steal(-1);
        if (t) {
            run_task(t);
            st->stolen++;
        } else {
            sched_yield();
        }
    }
    return NULL;
}

static void test_concurrent(double scale)
{
    ntasks = tap_scaled(1000000.0, scale, 1000);
    tasks = calloc(ntasks, sizeof *tasks);
    counts = calloc(ntasks, sizeof *counts);
    if (!tasks || !counts) {
        ok(0, "allocate %zu tasks", ntasks);
        return;
    }
    for (int j = 0; j < NDQ; j++)
        deque_init(&dq[j]);

    double t0 = now_s();
    pthread_t prod[NPROD], own[NDQ], thief[NTHIEF];
    for (int j = 0; j < NDQ; j++)
        pthread_create(&own[j], NULL, owner_main, (void *)(intptr_t)j);
    for (int j = 0; j < NTHIEF; j++)
        pthread_create(&thief[j], NULL, thief_main, (void *)(intptr_t)j);
    for (int j = 0; j < NPROD; j++)
        pthread_create(&prod[j], NULL, producer_main, (void *)(intptr_t)j);
    for (int j = 0; j < NPROD; j++)
        pthread_join(prod[j], NULL);

    /* a lost task would leave everyone spinning: stop when no progress for 10 s */
    size_t last = atomic_load(&executed);
    double last_change = now_s();
    while (atomic_load(&executed) < ntasks) {
        sleep_ms(5);
        size_t e = atomic_load(&executed);
        if (e != last) {
            last = e;
            last_change = now_s();
        } else if (now_s() - last_change > 10.0) {
            diag("no progress for 10 s at %zu of %zu tasks", e, ntasks);
            break;
        }
    }
    atomic_store(&stop, 1);
    for (int j = 0; j < NDQ; j++)
        pthread_join(own[j], NULL);
    for (int j = 0; j < NTHIEF; j++)
        pthread_join(thief[j], NULL);
    double elapsed = now_s() - t0;

    size_t own_total = 0, batched = 0, owner_steals = 0, thief_steals = 0;
    for (int j = 0; j < NDQ; j++) {
        diag("owner %d: %zu popped (%zu in batches), %zu stolen", j,
             owner_stat[j].own + owner_stat[j].own_batched, owner_stat[j].own_batched,
             owner_stat[j].stolen);
        own_total += owner_stat[j].own + owner_stat[j].own_batched;
        batched += owner_stat[j].own_batched;
        owner_steals += owner_stat[j].stolen;
    }
    for (int j = 0; j < NTHIEF; j++) {
        diag("thief %d: %zu stolen", j, thief_stat[j].stolen);
        thief_steals += thief_stat[j].stolen;
    }
    diag("%zu tasks in %.3f s: %zu from the front (%zu in batches), %zu stolen by owners, "
         "%zu by thieves",
         ntasks, elapsed, own_total, batched, owner_steals, thief_steals);

    ok(atomic_load(&push_failures) == 0, "concurrent: every push succeeded");
    ok(atomic_load(&bad_pointers) == 0,
       "concurrent: every popped pointer is a pushed task with its index intact");
    size_t ones = 0, sum = 0, first_bad = (size_t)-1;
    for (size_t i = 0; i < ntasks; i++) {
        unsigned c = atomic_load_explicit(&counts[i], memory_order_relaxed);
        sum += c;
        if (c == 1)
            ones++;
        else if (first_bad == (size_t)-1)
            first_bad = i;
    }
    if (first_bad != (size_t)-1)
        diag("task %zu ran %u times", first_bad,
             atomic_load_explicit(&counts[first_bad], memory_order_relaxed));
    ok(ones == ntasks, "concurrent: each of %zu tasks ran exactly once (%zu did)", ntasks, ones);
    ok(sum == ntasks && atomic_load(&executed) == ntasks,
       "concurrent: %zu runs in total (%zu counted)", ntasks, sum);
    ok(own_total + owner_steals + thief_steals == ntasks,
       "concurrent: pops from the front plus steals add up to %zu", ntasks);
    int empty = 1;
    for (int j = 0; j < NDQ; j++)
        empty &= dsize(&dq[j]) == 0 && dq[j].len == 0 && deque_pop_front(&dq[j]) == NULL &&
                 deque_pop_back(&dq[j]) == NULL;
    ok(empty, "concurrent: all deques are empty at the end");

    for (int j = 0; j < NDQ; j++)
        deque_destroy(&dq[j]);
    free(tasks);
    free((void *)counts);
}

int main(void)
{
    tap_start("Bail out! watchdog: test_deque hung\n", 600);
    double scale = tap_scale();

    for (uintptr_t i = 0; i < NSTATIC; i++)
        tk[i].user = (void *)i;

    test_empty();
    test_fifo_lifo();
    test_wrap_growth(0);
    test_wrap_growth(1);
    test_locked();
    test_take_short();
    test_model();
    test_concurrent(scale);

    return tap_done();
}
