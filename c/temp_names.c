/*
 * temp_names.c - the names of the writer's TEMP tables and views. The writer's connection finds
 * them before main objects of the same names; the classifier and the readers, which have no TEMP
 * schema, look a name up here to know that a read of it is the writer's.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "conn.h"

int temp_names_has(temp_names *tn, const char *name)
{
    if (atomic_load_explicit(&tn->count, memory_order_acquire) == 0)
        return 0;
    int found = 0;
    pthread_mutex_lock(&tn->mu);
    for (size_t i = 0; i < tn->n && !found; i++)
        found = strcasecmp(tn->names[i], name) == 0; /* SQL names ignore ASCII case */
    pthread_mutex_unlock(&tn->mu);
    return found;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Appends a copy of `name` to the array *names of *n names (room for *cap). 1, or 0 when out
 * of memory. */
static int names_push(char ***names, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t more = *cap ? 2 * *cap : 8;
        char **grown = realloc(*names, more * sizeof **names);
        if (!grown)
            return 0;
        *names = grown;
        *cap = more;
    }
    char *copy = strdup(name);
    if (!copy)
        return 0;
    (*names)[(*n)++] = copy;
    return 1;
}

void temp_names_refresh(temp_names *tn, sqlite3 *writer_db, int keep)
{
    sqlite3_stmt *st = NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int ok = sqlite3_prepare_v2(writer_db,
                                "SELECT name FROM temp.sqlite_schema WHERE type IN "
                                "('table', 'view')",
                                -1, &st, NULL) == SQLITE_OK;
    while (ok && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (name)
            ok = names_push(&names, &n, &cap, name);
    }
    sqlite3_finalize(st);
    pthread_mutex_lock(&tn->mu); /* only the writer changes the names: reading them is safe */
    for (size_t i = 0; ok && keep && i < tn->n; i++) {
        int known = 0;
        for (size_t k = 0; k < n && !known; k++)
            known = strcasecmp(names[k], tn->names[i]) == 0;
        if (!known)
            ok = names_push(&names, &n, &cap, tn->names[i]);
    }
    if (!ok) { /* out of memory: keep the names known before */
        pthread_mutex_unlock(&tn->mu);
        names_free(names, n);
        return;
    }
    names_free(tn->names, tn->n);
    tn->names = names;
    tn->n = n;
    atomic_store_explicit(&tn->count, n, memory_order_release);
    pthread_mutex_unlock(&tn->mu);
}

void temp_names_free(temp_names *tn)
{
    names_free(tn->names, tn->n);
    pthread_mutex_destroy(&tn->mu);
}
