/*
 * route.c - where a statement runs. What a statement is, learned from what SQLite reports while
 * it is prepared (sqlite3_stmt_readonly() and the authorizer's action codes, since SQLite calls
 * BEGIN, COMMIT, SAVEPOINT, ATTACH and PRAGMA optimize read-only), and the cache of routes
 * learned so far, keyed by SQL text.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "pool.h"

/* ---- what a statement is: the authorizer's notes ----------------------------------- */

/* SQL functions whose answer depends on the connection that runs them: the rowid of its last
 * INSERT, its change counts (SQLite's lang_corefunc.html: "... by the database connection that
 * invoked the function") and load_extension(), which changes that connection alone. The
 * authorizer reports each function a statement calls, in views and triggers too
 * (SQLITE_FUNCTION, c3ref/c_alter_table.html), under its registered lower-case name. */
static const char *const conn_state_functions[] = {
    "last_insert_rowid",
    "changes",
    "total_changes",
    "load_extension",
};

/* What else a statement reads of the connection that runs it, reported as a read of a table:
 * a PRAGMA's table-valued function (pragma.html#pragfunc: pragma_table_info,
 * pragma_data_version, ...), the eponymous virtual table "pragma_NAME", which like the PRAGMA
 * answers with that connection's settings and schema; and sqlite_stmt (stmt.html), its
 * prepared statements. */
static int reads_conn_state(int action, const char *a, const char *b)
{
    if (action == SQLITE_READ)
        return a && (strncmp(a, "pragma_", 7) == 0 || strcmp(a, "sqlite_stmt") == 0);
    if (action != SQLITE_FUNCTION || !b)
        return 0;
    for (size_t i = 0; i < sizeof conn_state_functions / sizeof *conn_state_functions; i++)
        if (strcasecmp(b, conn_state_functions[i]) == 0)
            return 1;
    return 0;
}

/* A read of a table that, on the writer's connection, is (or may be) a TEMP object: the TEMP
 * schema table itself, or a name the writer's TEMP schema holds, which shadows a main table of
 * that name there (lang_naming.html: temp is searched first). A read that names no column
 * (count(*)) is reported without its database, so the name decides. */
static int reads_local(conn *c, int action, const char *a)
{
    if (action != SQLITE_READ || !a)
        return 0;
    if (strcmp(a, "sqlite_temp_schema") == 0 || strcmp(a, "sqlite_temp_master") == 0)
        return 1;
    return c->temp_names && temp_names_has(c->temp_names, a);
}

/* PRAGMA journal_mode leaving WAL, or locking_mode = EXCLUSIVE, on main: one connection would
 * then hold the database for itself, and the pool's other connections keep it in use, so
 * SQLite would answer "database is locked" to the pool's own writer (pragma.html). A pool with
 * readers refuses them on every connection (conn->refuse_locks_out), in the authorizer: SQLite
 * asks it before a PRAGMA takes effect, and locking_mode takes effect when it is merely
 * prepared, on the classifier too. */
static int locks_readers_out(const char *name, const char *value, const char *dbname)
{
    if (!name || !value || (dbname && strcmp(dbname, "main") != 0))
        return 0;
    if (strcasecmp(name, "journal_mode") == 0)
        return strcasecmp(value, "wal") != 0;
    return strcasecmp(name, "locking_mode") == 0 && strcasecmp(value, "exclusive") == 0;
}

/* Keeps the names of a top-level INSERT's table and database (valid only during the
 * authorizer's call) in c->insert_names: "table\0db\0". 0, or -1 when out of memory. */
static int note_insert_target(conn *c, const char *table, const char *dbname)
{
    c->insert_names.len = 0;
    return buf_put(&c->insert_names, table, strlen(table) + 1) == 0 &&
                   buf_put(&c->insert_names, dbname ? dbname : "main",
                           strlen(dbname ? dbname : "main") + 1) == 0
               ? 0
               : -1;
}

int stmt_authorizer(void *arg, int action, const char *a, const char *b, const char *dbname,
                    const char *inner)
{
    conn *c = arg;
    if ((dbname && strcmp(dbname, "main") != 0) || reads_local(c, action, a))
        c->seen |= SEEN_LOCAL;
    if (reads_conn_state(action, a, b))
        c->seen |= SEEN_CONN_STATE;
    if ((action == SQLITE_PRAGMA && a && strcasecmp(a, "busy_timeout") == 0) ||
        (action == SQLITE_READ && a && strcasecmp(a, "pragma_busy_timeout") == 0)) {
        c->seen |= SEEN_BUSY_PRAGMA;
        /* It would replace the busy handler of the submitting thread's connection (one that
         * never waits) as it is prepared (pragma.html#pragma_busy_timeout): the writer runs it. */
        if (c->never_wait && action == SQLITE_PRAGMA)
            return SQLITE_DENY;
    }
    switch (action) {
    case SQLITE_INSERT:
        if (!inner && a && strncmp(a, "sqlite_", 7) != 0 && !(c->seen & SEEN_INSERT) &&
            note_insert_target(c, a, dbname) == 0)
            c->seen |= SEEN_INSERT; /* else out of memory: a REPLACE of the last rowid sets no
                                       lastrowid */
        /* fall through */
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        if (!inner && a && strncmp(a, "sqlite_", 7) != 0)
            c->seen |= SEEN_DML;
        break;
    case SQLITE_READ:
    case SQLITE_SELECT:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
        break;
    case SQLITE_PRAGMA:
        c->setting = read_setting(a, b);
        c->seen |= SEEN_NOT_READ;
        if (c->refuse_locks_out && locks_readers_out(a, b, dbname)) {
            c->seen |= SEEN_LOCKS_OUT;
            return SQLITE_DENY; /* stmt_fail_prepare says why */
        }
        break;
    case SQLITE_SAVEPOINT:
        /* Its name, for the writer's on_change log (hooks.c), in the buffer an INSERT's names
         * use: a savepoint statement inserts nothing. */
        c->seen |= SEEN_NOT_READ;
        c->insert_names.len = 0;
        if (a && b && buf_put(&c->insert_names, b, strlen(b) + 1) == 0) {
            c->seen |= SEEN_SAVEPOINT;
            c->savepoint = strcmp(a, "BEGIN") == 0     ? SAVEPOINT_BEGIN
                           : strcmp(a, "RELEASE") == 0 ? SAVEPOINT_RELEASE
                                                       : SAVEPOINT_ROLLBACK;
        }
        break;
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
        c->seen |= SEEN_LOCAL | SEEN_NOT_READ | SEEN_SCHEMA;
        break;
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_ALTER_TABLE:
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_VTABLE:
        c->seen |= SEEN_NOT_READ | SEEN_SCHEMA;
        break;
    default:
        c->seen |= SEEN_NOT_READ;
        break;
    }
    return SQLITE_OK;
}

/* Reads go to the readers; DML may join a batch or an executemany; the rest runs alone on
 * the writer. */
int stmt_kind_of(conn *c, sqlite3_stmt *st)
{
    if (sqlite3_stmt_isexplain(st)) /* runs nothing: no rowcount, no executemany; the writer's
                                       plan, which sees its TEMP objects */
        return STMT_OTHER;
    if (sqlite3_stmt_readonly(st) && !(c->seen & (SEEN_NOT_READ | SEEN_LOCAL | SEEN_CONN_STATE)))
        return STMT_READ;
    if ((c->seen & SEEN_DML) && !(c->seen & SEEN_NOT_READ))
        return STMT_DML;
    return STMT_OTHER;
}

/* ---- the route cache --------------------------------------------------------------- */

/* At most this many entries (and PASYN_ROUTE_CACHE_BYTES): hash chains stay short. */
#define ROUTE_CACHE_MAX 4096

static size_t route_charge(size_t len)
{
    return sizeof(route_entry) + len;
}

/* The entry for `sql`, made the most recent; NULL when none. Under rc->mu. */
static route_entry *route_find(routes *rc, uint32_t h, const char *sql, size_t len)
{
    for (route_entry *e = rc->buckets[h & (rc->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            if (rc->lru.next != &e->lru) {
                lru_unlink(&e->lru);
                lru_push_front(&rc->lru, &e->lru);
            }
            return e;
        }
    return NULL;
}

int route_get(pasyn_pool *pool, const char *sql, size_t len, int *long_read, int *fits_inline,
              uint64_t *gen)
{
    routes *rc = &pool->routes;
    *long_read = 0;
    *fits_inline = INLINE_UNKNOWN;
    if (len > PASYN_CACHE_SQL_MAX) { /* never cached (route_put keeps no verdict for it) */
        *gen = ROUTE_ANY_GEN;
        return ROUTE_UNKNOWN;
    }
    pthread_mutex_lock(&rc->mu);
    /* The text looked up last first (the front of the recency list): a caller that runs one
     * statement over and over is spared the hash, as in the statement cache (stmt_acquire). */
    route_entry *e = rc->lru.next != &rc->lru ? (route_entry *)rc->lru.next : NULL;
    if (!e || e->len != len || memcmp(e->sql, sql, len) != 0)
        e = route_find(rc, hash_sql(sql, len), sql, len);
    int route = e ? e->route : ROUTE_UNKNOWN;
    *long_read = e && e->long_read;
    if (e)
        *fits_inline = e->strikes >= INLINE_STRIKES ? INLINE_NEVER : e->fits_inline;
    *gen = rc->gen;
    pthread_mutex_unlock(&rc->mu);
    return route;
}

/* The cached entry of `sql` in *e (NULL when not cached), and the cache, its lock held; or NULL
 * (no lock taken) for a text too long to be cached. */
static routes *route_lock(pasyn_pool *pool, const char *sql, size_t len, route_entry **e)
{
    routes *rc = &pool->routes;
    if (len > PASYN_CACHE_SQL_MAX)
        return NULL;
    uint32_t h = hash_sql(sql, len);
    pthread_mutex_lock(&rc->mu);
    *e = route_find(rc, h, sql, len);
    return rc;
}

void route_note_long(pasyn_pool *pool, const char *sql, size_t len, int long_read)
{
    route_entry *e;
    routes *rc = route_lock(pool, sql, len, &e);
    if (!rc)
        return;
    if (e)
        e->long_read = long_read;
    pthread_mutex_unlock(&rc->mu);
}

void route_note_inline(pasyn_pool *pool, const char *sql, size_t len, int fits, int strike)
{
    route_entry *e;
    routes *rc = route_lock(pool, sql, len, &e);
    if (!rc)
        return;
    if (e) {
        e->strikes = e->strikes + strike < INLINE_STRIKES ? e->strikes + strike : INLINE_STRIKES;
        e->fits_inline = fits;
    }
    pthread_mutex_unlock(&rc->mu);
}

static void route_drop(routes *rc, route_entry *e)
{
    route_entry **at = &rc->buckets[e->hash & (rc->nbuckets - 1)];
    while (*at != e)
        at = &(*at)->next;
    *at = e->next;
    lru_unlink(&e->lru);
    rc->count--;
    rc->bytes -= route_charge(e->len);
    free(e);
}

static void routes_clear(routes *rc)
{
    for (size_t i = 0; i < rc->nbuckets; i++) {
        route_entry *e = rc->buckets[i];
        while (e) {
            route_entry *next = e->next;
            free(e);
            e = next;
        }
        rc->buckets[i] = NULL;
    }
    rc->lru.next = rc->lru.prev = &rc->lru;
    rc->count = 0;
    rc->bytes = 0;
}

void route_put(pasyn_pool *pool, const char *sql, size_t len, int route, uint64_t gen)
{
    routes *rc = &pool->routes;
    if (len > PASYN_CACHE_SQL_MAX) /* never cached: classified each time */
        return;
    uint32_t h = hash_sql(sql, len);
    pthread_mutex_lock(&rc->mu);
    if (gen != ROUTE_ANY_GEN && gen != rc->gen) { /* learned before a schema change */
        pthread_mutex_unlock(&rc->mu);
        return;
    }
    route_entry *known = route_find(rc, h, sql, len);
    if (known) {
        known->route = route;
        pthread_mutex_unlock(&rc->mu);
        return;
    }
    /* The least recently used go first, until the new one fits. */
    while (rc->count > 0 && (rc->count >= ROUTE_CACHE_MAX ||
                             rc->bytes + route_charge(len) > PASYN_ROUTE_CACHE_BYTES))
        route_drop(rc, (route_entry *)rc->lru.prev);
    route_entry *e = malloc(sizeof *e + len);
    if (e) {
        route_entry **head = &rc->buckets[h & (rc->nbuckets - 1)];
        e->hash = h;
        e->len = len;
        e->route = route;
        e->long_read = 0;
        e->fits_inline = INLINE_UNKNOWN;
        e->strikes = 0;
        memcpy(e->sql, sql, len);
        e->next = *head;
        *head = e;
        lru_push_front(&rc->lru, &e->lru);
        rc->count++;
        rc->bytes += route_charge(len);
    }
    pthread_mutex_unlock(&rc->mu);
}

/* Forgets every route: after a schema change a text may run elsewhere (a view that now calls
 * changes(), a name that now is a TEMP table's). The writer. */
void routes_forget(pasyn_pool *pool)
{
    pthread_mutex_lock(&pool->routes.mu);
    routes_clear(&pool->routes);
    pool->routes.gen++;
    pthread_mutex_unlock(&pool->routes.mu);
}

void routes_free(routes *rs)
{
    if (rs->buckets)
        routes_clear(rs);
    free(rs->buckets);
    pthread_mutex_destroy(&rs->mu);
    pthread_mutex_destroy(&rs->classifier_mu);
}
