/*
 * bind.c - libFuzzer harness: parameter binding and the row that carries the values back.
 * The input gives parameters (null, integer, float, text, blob) and how they are passed: by
 * position to '?', by position to '?NNN' in a shuffled order, by name (':a', '@a', '$a', the
 * name given with or without its sign, in another order than the SQL's), as a pack {n = k},
 * or as the optional lone NULL of a statement without parameters. `SELECT <placeholders>`
 * must then give back one row holding exactly the values bound (stmt.c's binding, task.c's
 * encoding and pasyn_row_value's decoding), and a count or naming that does not fit must
 * fail with PASYN_EPROGRAMMING and no row.
 *
 * Input: a mode byte, a count byte, a shuffle byte, then the values (fuzz.h, in_value).
 */
#include "fuzz.h"

#define MAX_PARAMS 16

enum mode { POSITIONAL, NUMBERED, NAMED, PACK, LONE_NULL, MODES };

typedef struct expect {
    const pasyn_value *values; /* what column i must hold: values[order[i]] */
    const int *order;
    int i;
} expect;

static void check_column(const pasyn_value *got, void *arg)
{
    expect *e = arg;
    if (e->values) {
        fuzz_check_value(got, &e->values[e->order[e->i]], "column", e->i);
    } else {
        FUZZ_CHECK(got->type == PASYN_NULL, "column %d of a pack is of type %d", e->i, got->type);
    }
    e->i++;
}

static char store[MAX_PARAMS][256 * 1024];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_pool_get(2);
    input in = {data, data + size};
    uint8_t mode_byte = in_byte(&in);
    int mode = mode_byte % MODES;
    int misfit = (mode_byte >> 3) % 4 == 0; /* one value too few or too many, or a wrong name */
    int k = 1 + in_byte(&in) % MAX_PARAMS;
    uint8_t shuffle = in_byte(&in);

    pasyn_value values[MAX_PARAMS];
    for (int i = 0; i < k; i++)
        values[i] = in_value(&in, store[i]);

    /* order[j]: the value column j shows; a rotation by `shuffle`, reversed on its high bit. */
    int order[MAX_PARAMS];
    for (int j = 0; j < k; j++) {
        int r = (j + shuffle % k) % k;
        order[j] = shuffle & 0x80 ? k - 1 - r : r;
    }

    char sql[16 * MAX_PARAMS + 16];
    size_t len = (size_t)snprintf(sql, sizeof sql, "SELECT ");
    static const char signs[] = ":@$";
    for (int j = 0; j < k; j++) {
        const char *sep = j ? ", " : "";
        switch (mode) {
        case NUMBERED:
            len += (size_t)snprintf(sql + len, sizeof sql - len, "%s?%d", sep, order[j] + 1);
            break;
        case NAMED:
            len += (size_t)snprintf(sql + len, sizeof sql - len, "%s%cp%d", sep,
                                    signs[(shuffle >> 4) % 3], order[j]);
            break;
        case LONE_NULL:
            len += (size_t)snprintf(sql + len, sizeof sql - len, "%s%d", sep, j);
            order[j] = j;
            break;
        default:
            len += (size_t)snprintf(sql + len, sizeof sql - len, "%s?", sep);
            order[j] = j;
            break;
        }
    }

    pasyn_task *t = pasyn_task_new(PASYN_EXEC, sql, len);
    FUZZ_CHECK(t, "out of memory");
    int given = misfit ? (k == 1 || (shuffle & 1) ? k + 1 : k - 1) : k;
    int expect_ok = !misfit;
    switch (mode) {
    case POSITIONAL:
    case NUMBERED:
        for (int i = 0; i < given; i++)
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &values[i % k]) == 0, "bind");
        break;
    case NAMED:
        /* In an order of their own; a misfit leaves one name out (extra names are ignored, as
         * Python's sqlite3 ignores unused keys of a mapping) or binds them by position. */
        for (int i = 0; i < k; i++) {
            int v = (i + shuffle / 3) % k;
            if (misfit && (shuffle & 2) && v == 0)
                continue;
            char name[8];
            int with_sign = (shuffle >> 2) & 1;
            int n = snprintf(name, sizeof name, "%sp%d",
                             with_sign ? (char[]){signs[(shuffle >> 4) % 3], 0} : "", v);
            int positional = misfit && !(shuffle & 2);
            FUZZ_CHECK(pasyn_task_bind(t, positional ? NULL : name, positional ? 0 : (size_t)n,
                                       &values[v]) == 0,
                       "bind");
        }
        break;
    case PACK: {
        /* As the binding reads {n = given}: that many NULLs, or a value for :n. */
        pasyn_value n = {.type = PASYN_INT, .i = given}, null = {.type = PASYN_NULL};
        for (int i = 0; i < given; i++)
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &null) == 0, "bind");
        FUZZ_CHECK(pasyn_task_bind_alternative(t) == 0, "bind");
        FUZZ_CHECK(pasyn_task_bind(t, "n", 1, &n) == 0, "bind");
        break;
    }
    case LONE_NULL: {
        /* A statement without parameters given one NULL or none (two readings): fine; given
         * one value or two, with no other reading, it has too many. */
        pasyn_value null = {.type = PASYN_NULL};
        if (!misfit) { /* as the binding reads a nil params argument: one NULL, or none */
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &null) == 0, "bind");
            FUZZ_CHECK(pasyn_task_bind_alternative(t) == 0, "bind");
        } else if (shuffle & 1) {
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &null) == 0, "bind");
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &null) == 0, "bind");
        } else {
            pasyn_value one = {.type = PASYN_INT, .i = 1};
            FUZZ_CHECK(pasyn_task_bind(t, NULL, 0, &one) == 0, "bind");
        }
        break;
    }
    }

    int err = fuzz_run(t);
    const char *msg;
    pasyn_task_error(t, NULL, NULL, &msg);
    size_t nrows;
    pasyn_task_rows(t, &nrows);
    if (!expect_ok) {
        FUZZ_CHECK(err == PASYN_EPROGRAMMING, "mode %d, %d placeholders, %d given: error %d (%s)",
                   mode, k, given, err, msg);
        FUZZ_CHECK(nrows == 0, "a failed binding gave %zu rows", nrows);
    } else {
        FUZZ_CHECK(err == PASYN_OK, "mode %d, %d values: error %d (%s)", mode, k, err, msg);
        FUZZ_CHECK(nrows == 1 && pasyn_task_columns(t) == k, "%zu rows of %d columns, not 1 of %d",
                   nrows, pasyn_task_columns(t), k);
        if (mode == LONE_NULL) {
            pasyn_value numbers[MAX_PARAMS];
            for (int j = 0; j < k; j++)
                numbers[j] = (pasyn_value){.type = PASYN_INT, .i = j};
            fuzz_walk_rows(t, check_column, &(expect){numbers, order, 0});
        } else {
            fuzz_walk_rows(t, check_column, &(expect){mode == PACK ? NULL : values, order, 0});
        }
    }
    fuzz_release(t); /* 16 columns of 256 KiB may come as a stream */
    pasyn_task_free(t);
    return 0;
}
