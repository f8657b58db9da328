/*
 * route.c - libFuzzer harness: SQL of any kind through the pool, for where it is routed
 * (route.c's classification on the classifier connection, the readers' hand-over to the
 * writer, the route cache) and how it is run. The input is a flags byte (task kind, a
 * transaction owner) and SQL text; any answer is fine, a crash, a leak or a hang is not, and
 * rows that come back must decode to the bytes encoded (fuzz_walk_rows). Every statement has
 * a timeout, and a transaction the input leaves open is rolled back.
 *
 * The pool lives on through the inputs (its schema, TEMP objects and settings too), so the
 * routes of later inputs depend on earlier ones, as in a program's life. Run it in a scratch
 * folder: ATTACH and VACUUM INTO make files where they are told to.
 */
#include "fuzz.h"

#define OWNER 9

/* Checks the rows of a result, chunk after chunk; an endless one (a recursive CTE) is let go
 * after a few. */
static void walk(const pasyn_task *t)
{
    int chunks = 0;
    for (const pasyn_task *chunk = t; chunk; chunks++) {
        if (pasyn_task_error(chunk, NULL, NULL, NULL) != PASYN_OK) { /* a fetch may fail */
            pasyn_task_free((pasyn_task *)chunk);
            break;
        }
        fuzz_walk_rows(chunk, NULL, NULL);
        pasyn_task *next = NULL;
        if (chunks < 4)
            next = fuzz_fetch(chunk);
        else
            fuzz_release(chunk);
        if (chunk != t)
            pasyn_task_free((pasyn_task *)chunk);
        chunk = next;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pasyn_pool *pool = fuzz_pool_get(2);
    if (size == 0)
        return 0;
    uint8_t flags = data[0];
    int kind = flags % 3 == 0 ? PASYN_SCRIPT : flags % 3 == 1 ? PASYN_EXEC : PASYN_MANY;
    pasyn_task *t = pasyn_task_new(kind, (const char *)data + 1, size - 1);
    FUZZ_CHECK(t, "out of memory");
    pasyn_task_set_timeout(t, 0.05);
    pasyn_task_set_owner(t, flags & 0x80 ? OWNER : 0);
    pasyn_task_set_no_owner_wait(t);
    if (kind == PASYN_MANY) {
        /* two sets of one NULL each (a statement of another count fails, which is fine) */
        pasyn_value null = {.type = PASYN_NULL};
        for (int i = 0; i < 2; i++)
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &null) == 0 && pasyn_task_next_set(t) == 0,
                       "bind");
    }
    int err = fuzz_run(t);
    FUZZ_CHECK(err >= PASYN_OK && err <= PASYN_ENOMEM, "error %d", err);
    if (err == PASYN_OK)
        walk(t);
    else
        FUZZ_CHECK(!pasyn_task_stream(t, NULL), "a failed task holds a stream");
    pasyn_task_free(t);

    uint64_t owner = pasyn_txn_owner(pool);
    if (owner) {
        pasyn_task *rollback = pasyn_task_new(PASYN_EXEC, "ROLLBACK", 8);
        FUZZ_CHECK(rollback, "out of memory");
        pasyn_task_set_owner(rollback, owner);
        const char *msg;
        FUZZ_CHECK(fuzz_run(rollback) == PASYN_OK, "ROLLBACK: %s",
                   (pasyn_task_error(rollback, NULL, NULL, &msg), msg));
        pasyn_task_free(rollback);
        FUZZ_CHECK(pasyn_txn_owner(pool) == 0, "a transaction is still open");
    }
    return 0;
}
