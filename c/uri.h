/*
 * uri.h - what the pool's connections open for the `database` given to pasyn_open: the
 * writer's string, the readers' string, or the pool's private in-memory database. URI forms
 * that would split the pool into several databases, switch on shared-cache locking or drop
 * file locks are mapped onto the pool's own mechanism or refused here (rules in uri.c).
 */
#ifndef PASYN_URI_H
#define PASYN_URI_H

/* What the pool's connections open. Filled in by uri_plan_make, released by uri_plan_free. */
typedef struct uri_plan {
    int memory;   /* 1: the pool's private in-memory database (":memory:", "", a "file:" URI
                       whose path is ":memory:" or empty, mode=memory, vfs=memdb). The pool
                       opens its own WAL file for it; `writer` and `reader` are then NULL */
    char *writer; /* what the writer opens (malloc'd; NULL if memory) */
    char *reader; /* what a reader opens: the writer's string, asking mode=ro where that asks
                       mode=rw or mode=rwc (malloc'd; NULL if memory) */
} uri_plan;

/* Plans the connections for `database` (a path, ":memory:", "" or a "file:" URI).
 *
 * Returns 0 and fills *out; PASYN_EPROGRAMMING when `database` (or `out`) is NULL or the
 * URI asks for something the pool refuses, with *errmsg a message naming the refused URI
 * part; PASYN_ENOMEM when out of memory, with *errmsg NULL. On any return *out holds no
 * memory to leak unless it is 0, and uri_plan_free(out) is always safe afterwards.
 *
 * `database` is only read and may be freed once this returns. `errmsg` may be NULL (no
 * message is made); otherwise *errmsg is set on every return, to NULL or to a malloc'd
 * string the caller frees with free(). Pure computation, no global state: any thread. */
int uri_plan_make(const char *database, uri_plan *out, char **errmsg);

/* Frees the strings of a plan made by uri_plan_make (on success or failure) and zeroes it.
 * NULL is a no-op. Any thread. */
void uri_plan_free(uri_plan *p);

#endif
