/*
 * conn.c - one SQLite connection as a worker uses it: opening, the prepared-statement cache
 * (hash plus LRU), what the authorizer tells about a statement (is it a read, a DML write, or
 * something else; does it read the connection's own state; which table a top-level INSERT
 * fills), binding a task's parameters, stepping rows into the task's buffer, and stopping the
 * running statement at its deadline or on an interrupt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "internal.h"


/* SQL functions whose answer depends on the connection that runs them: the rowid of its last
 * INSERT, its change counts (SQLite's lang_corefunc.html: "... by the database connection that
 * invoked the function") and load_extension(), which changes that connection alone. The
 * authorizer reports each function a statement calls, in views and triggers too
 * (SQLITE_FUNCTION, c3ref/c_alter_table.html), under its registered lower-case name. */
static const char *const conn_state_functions[] = {
    "last_insert_rowid", "changes", "total_changes", "load_extension",
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

/* PRAGMAs that set a setting of the connection that runs them which changes what a read on it
 * answers (pragma.html): LIKE's case, the order of unordered rows, whether the schema's
 * functions and virtual tables may run, result column names. Run through execute they reach
 * the writer alone; the readers apply them too (pasyn_pool's settings). */
static const char *const read_settings[] = {
    "case_sensitive_like", "reverse_unordered_selects", "trusted_schema",
    "full_column_names", "short_column_names",
};
_Static_assert(sizeof read_settings / sizeof *read_settings == READ_SETTINGS, "READ_SETTINGS");

/* 1 + the index in read_settings of the setting a PRAGMA `name` = `value` sets, else 0. */
static int read_setting(const char *name, const char *value)
{
    for (size_t i = 0; value && name && i < sizeof read_settings / sizeof *read_settings; i++)
        if (strcasecmp(name, read_settings[i]) == 0)
            return (int)i + 1;
    return 0;
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

static int authorizer(void *arg, int action, const char *a, const char *b, const char *dbname,
                      const char *inner)
{
    conn *c = arg;
    if ((dbname && strcmp(dbname, "main") != 0) || reads_local(c, action, a))
        c->seen |= SEEN_LOCAL;
    if (reads_conn_state(action, a, b))
        c->seen |= SEEN_CONN_STATE;
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
            return SQLITE_DENY; /* conn_fail_prepare says why */
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

/* VM instructions between two looks at the running task's stop conditions: a few microseconds
 * of work. */
#define PROGRESS_OPS 1000

/* The progress handler, installed for good: stops the running task once it is past its
 * deadline, or once the pool was interrupted after the task started. Between tasks (nothing
 * armed) it lets everything run. */
static int stop_check(void *arg)
{
    conn *c = arg;
    if (!c->armed)
        return 0;
    if (c->interrupts &&
        atomic_load_explicit(c->interrupts, memory_order_relaxed) != c->interrupts_seen)
        return 1;
    if (c->deadline && now_ns() >= c->deadline) {
        c->timed_out = 1;
        return 1;
    }
    return 0;
}

int conn_open(conn *c, const char *path, int flags, int busy_ms, int cache_capacity,
              const _Atomic uint64_t *interrupts, char **errmsg)
{
    memset(c, 0, sizeof *c);
    c->interrupts = interrupts;
    c->lru.next = c->lru.prev = &c->lru;
    c->capacity = cache_capacity > 0 ? (size_t)cache_capacity : 0;
    c->nbuckets = 16;
    while (c->nbuckets < 2 * c->capacity)
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        *errmsg = strdup("out of memory");
        return SQLITE_NOMEM;
    }
    /* A private cache whatever sqlite3_enable_shared_cache() the host set: shared-cache
     * locking fails with SQLITE_LOCKED, which busy_timeout does not retry. */
    flags |= SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI | SQLITE_OPEN_PRIVATECACHE;
    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        *errmsg = strdup(c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        if (c->db)
            rc = sqlite3_extended_errcode(c->db);
        conn_close(c);
        return rc;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, busy_ms);
    sqlite3_set_authorizer(c->db, authorizer, c);
    sqlite3_progress_handler(c->db, PROGRESS_OPS, stop_check, c);
    return SQLITE_OK;
}

static void stmt_free(cached_stmt *s)
{
    sqlite3_finalize(s->stmt);
    columns_put(s->cols);
    free(s);
}

/* Finalizes every statement of the cache. */
static void forget_statements(conn *c)
{
    lru_link *l = c->lru.next;
    while (l && l != &c->lru) {
        lru_link *next = l->next;
        stmt_free((cached_stmt *)l);
        l = next;
    }
    c->lru.next = c->lru.prev = &c->lru;
    if (c->buckets)
        memset(c->buckets, 0, c->nbuckets * sizeof *c->buckets);
    c->count = 0;
}

void conn_close(conn *c)
{
    forget_statements(c);
    free(c->buckets);
    c->buckets = NULL;
    buf_free(&c->insert_names);
    if (c->db)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

int conn_exec(conn *c, const char *sql)
{
    return sqlite3_exec(c->db, sql, NULL, NULL, NULL);
}

uint32_t hash_sql(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* After the statement SQLite prepared, only white space, comments and ';' may remain. */
static int only_trivia(const char *p, const char *end)
{
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == ';') {
            p++;
        } else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (p + 1 < end && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p + 1 < end && !(p[0] == '*' && p[1] == '/'))
                p++;
            p = p + 1 < end ? p + 2 : end;
        } else {
            return 0;
        }
    }
    return 1;
}

static void lru_unlink(lru_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void hash_unlink(conn *c, cached_stmt *s)
{
    cached_stmt **at = &c->buckets[s->hash & (c->nbuckets - 1)];
    while (*at != s)
        at = &(*at)->hnext;
    *at = s->hnext;
}

/* The index of the statement's first named parameter (":a", "@a", "$a"), 0 when none. */
static int first_named(sqlite3_stmt *st)
{
    int n = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        if (name && name[0] != '?')
            return i;
    }
    return 0;
}

static int classify(conn *c, sqlite3_stmt *st)
{
    if (sqlite3_stmt_isexplain(st)) /* runs nothing: no rowcount, no executemany; the writer's
                                       plan, which sees its TEMP objects */
        return CLASS_OTHER;
    if (sqlite3_stmt_readonly(st) && !(c->seen & (SEEN_NOT_READ | SEEN_LOCAL | SEEN_CONN_STATE)))
        return CLASS_READ;
    if ((c->seen & SEEN_DML) && !(c->seen & SEEN_NOT_READ))
        return CLASS_DML;
    return CLASS_OTHER;
}

void conn_fail_prepare(conn *c, pasyn_task *t, int rc)
{
    if (c->seen & SEEN_LOCKS_OUT)
        task_fail_programming(t, "a pool with readers cannot leave WAL mode or take "
                                 "locking_mode EXCLUSIVE while open: open it with the "
                                 "journal_mode option (or readers = 0)");
    else
        task_fail_sqlite(t, c->db, rc);
}

cached_stmt *conn_acquire(conn *c, pasyn_task *t)
{
    uint32_t h = hash_sql(t->sql, t->sql_len);
    for (cached_stmt *s = c->buckets[h & (c->nbuckets - 1)]; s; s = s->hnext) {
        if (s->hash == h && s->sql_len == t->sql_len && memcmp(s->sql, t->sql, t->sql_len) == 0) {
            hash_unlink(c, s);
            lru_unlink(&s->lru);
            c->count--;
            return s;
        }
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    c->seen = 0;
    c->setting = 0;
    int rc = sqlite3_prepare_v3(c->db, t->sql, (int)t->sql_len,
                                c->capacity ? SQLITE_PREPARE_PERSISTENT : 0, &st, &tail);
    if (rc != SQLITE_OK) {
        conn_fail_prepare(c, t, rc);
        return NULL;
    }
    if (!tail)
        tail = t->sql + t->sql_len;
    if (!only_trivia(tail, t->sql + t->sql_len)) {
        sqlite3_finalize(st);
        task_fail_programming(t, "execute takes one statement, and this SQL holds more than "
                                 "one (use executescript)");
        return NULL;
    }
    if (!st)
        return NULL; /* nothing but white space and comments */
    /* The SQL, then for a top-level INSERT the names of its table and database. */
    size_t names_len = c->seen & SEEN_INSERT ? c->insert_names.len : 0;
    cached_stmt *s = malloc(sizeof *s + t->sql_len + 1 + names_len);
    if (!s) {
        sqlite3_finalize(st);
        task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
        return NULL;
    }
    s->stmt = st;
    s->cols = NULL;
    s->prepares = 0;
    s->run_ns = 0;
    s->klass = classify(c, st);
    s->classified_at = 0;
    s->first_named = first_named(st);
    s->setting = c->setting;
    s->changes_schema = (c->seen & SEEN_SCHEMA) != 0;
    s->hash = h;
    s->sql_len = t->sql_len;
    memcpy(s->sql, t->sql, t->sql_len);
    s->sql[t->sql_len] = '\0';
    s->insert_table = s->insert_db = NULL;
    if (names_len) {
        char *names = memcpy(s->sql + t->sql_len + 1, c->insert_names.p, names_len);
        s->insert_table = names;
        s->insert_db = names + strlen(names) + 1;
    }
    return s;
}

/* The update hook, set while a top-level INSERT runs: a row of the statement's own table
 * inserted with the rowid that last_insert_rowid() already held (sqlite3_update_hook: not
 * called for WITHOUT ROWID tables, whose inserts set no rowid either). */
static void note_insert(void *arg, int op, const char *db, const char *table, sqlite3_int64 rowid)
{
    conn *c = arg;
    const cached_stmt *s = c->inserting;
    if (op == SQLITE_INSERT && rowid == c->rowid_before && strcmp(table, s->insert_table) == 0 &&
        strcmp(db, s->insert_db) == 0)
        c->reinserted = 1;
}

void conn_watch_insert(conn *c, const cached_stmt *s)
{
    c->inserting = s->insert_table ? s : NULL;
    c->rowid_before = sqlite3_last_insert_rowid(c->db);
    c->reinserted = 0;
    if (c->inserting)
        sqlite3_update_hook(c->db, note_insert, c);
}

/* A trigger's INSERT sets last_insert_rowid() only while the trigger runs
 * (c3ref/last_insert_rowid), so a value that changed was set by the statement itself. */
int conn_inserted(conn *c, int64_t *rowid)
{
    const cached_stmt *s = c->inserting;
    c->inserting = NULL;
    if (s)
        sqlite3_update_hook(c->db, NULL, NULL);
    *rowid = sqlite3_last_insert_rowid(c->db);
    return s && (*rowid != c->rowid_before || c->reinserted);
}

int conn_class_now(conn *c, cached_stmt *s)
{
    int prepares = sqlite3_stmt_status(s->stmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    if (prepares != s->classified_at) {
        s->klass = classify(c, s->stmt);
        s->classified_at = prepares;
    }
    return s->klass;
}

void conn_release(conn *c, cached_stmt *s)
{
    sqlite3_reset(s->stmt);
    sqlite3_clear_bindings(s->stmt);
    if (c->capacity == 0) {
        stmt_free(s);
        return;
    }
    size_t b = s->hash & (c->nbuckets - 1);
    s->hnext = c->buckets[b];
    c->buckets[b] = s;
    s->lru.next = c->lru.next;
    s->lru.prev = &c->lru;
    c->lru.next->prev = &s->lru;
    c->lru.next = &s->lru;
    if (++c->count > c->capacity) {
        cached_stmt *old = (cached_stmt *)c->lru.prev;
        hash_unlink(c, old);
        lru_unlink(&old->lru);
        c->count--;
        stmt_free(old);
    }
}

/* One parameter of the task's buffer. */
typedef struct param {
    const char *name; /* NULL: positional */
    size_t namelen;
    pasyn_value v;
} param;

static const unsigned char *next_param(const unsigned char *at, param *p)
{
    uint32_t n32;
    memcpy(&n32, at, 4);
    at += 4;
    if (n32 == UINT32_MAX) {
        p->name = NULL;
        p->namelen = 0;
    } else {
        p->name = (const char *)at;
        p->namelen = n32;
        at += n32;
    }
    return pasyn_row_value(at, &p->v);
}

static int bind_one(sqlite3_stmt *st, int i, const pasyn_value *v)
{
    switch (v->type) {
    case PASYN_INT:
        return sqlite3_bind_int64(st, i, v->i);
    case PASYN_FLOAT:
        return sqlite3_bind_double(st, i, v->d);
    case PASYN_TEXT:
        return sqlite3_bind_text64(st, i, v->p, v->n, SQLITE_TRANSIENT, SQLITE_UTF8);
    case PASYN_BLOB:
        return sqlite3_bind_blob64(st, i, v->p, v->n, SQLITE_TRANSIENT);
    default:
        return sqlite3_bind_null(st, i);
    }
}

/* Values given by position (an array) bind only to nameless placeholders ('?' and '?NNN'): a
 * ":a", "@a" or "$a" given the first value of an array would take it silently. Python's
 * sqlite3 refuses this since 3.14 (ProgrammingError "Binding 1 ('a') is a named parameter, but
 * you supplied a sequence ..."). 0, or fills the task's error. */
static int check_nameless(const cached_stmt *s, pasyn_task *t)
{
    if (!s->first_named)
        return 0;
    task_fail_programming(t, "parameter %s is named, but the parameters were given as an array "
                             "(give a table of names)",
                          sqlite3_bind_parameter_name(s->stmt, s->first_named));
    return -1;
}

int conn_bind(conn *c, cached_stmt *s, pasyn_task *t, size_t from, size_t to)
{
    sqlite3_stmt *st = s->stmt;
    int want = sqlite3_bind_parameter_count(st);
    const unsigned char *begin = t->params.p + from, *end = t->params.p + to;
    param p, first = {0};
    int given = 0, named = 0, rc = SQLITE_OK;
    for (const unsigned char *at = begin; at < end; given++) {
        at = next_param(at, &p);
        if (given == 0)
            first = p;
        named |= p.name != NULL;
    }
    /* {n = k} where the statement has no :n: an array of k NULLs (pasyn_task_allow_packs). */
    int nulls = t->allow_packs && given == 1 && first.name && first.namelen == 1 &&
                first.name[0] == 'n' && first.v.type == PASYN_INT &&
                !sqlite3_bind_parameter_index(st, ":n") &&
                !sqlite3_bind_parameter_index(st, "@n") && !sqlite3_bind_parameter_index(st, "$n");
    if (nulls || !named) {
        if (!nulls && given == 1 && want == 0 && t->lone_null_optional)
            return 0;
        if (check_nameless(s, t) != 0) /* Python names this one first, whatever the count */
            return -1;
        long long count = nulls ? (long long)first.v.i : given;
        if (count != want) {
            task_fail_programming(t, "the statement takes %d parameter%s, %lld %s supplied", want,
                                  want == 1 ? "" : "s", count, count == 1 ? "was" : "were");
            return -1;
        }
        const unsigned char *at = begin;
        for (int i = 1; i <= want && rc == SQLITE_OK; i++) {
            if (nulls) {
                rc = sqlite3_bind_null(st, i);
            } else {
                at = next_param(at, &p);
                rc = bind_one(st, i, &p.v);
            }
        }
    } else {
        for (int i = 1; i <= want && rc == SQLITE_OK; i++) {
            const char *name = sqlite3_bind_parameter_name(st, i);
            if (!name || name[0] == '?') {
                task_fail_programming(t, "parameter %d is positional ('?'), but the parameters "
                                         "were given by name", i);
                return -1;
            }
            size_t len = strlen(name + 1);
            const unsigned char *at = begin;
            int found = 0;
            while (at < end && !found) {
                at = next_param(at, &p);
                found = p.name && p.namelen == len && memcmp(p.name, name + 1, len) == 0;
            }
            if (!found) {
                task_fail_programming(t, "no value was supplied for parameter %s", name);
                return -1;
            }
            rc = bind_one(st, i, &p.v);
        }
    }
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
        return -1;
    }
    return 0;
}

void conn_arm(conn *c, const pasyn_task *t)
{
    c->timed_out = 0;
    c->deadline = t->timeout_ns ? now_ns() + t->timeout_ns : 0;
    if (c->interrupts)
        c->interrupts_seen = atomic_load_explicit(c->interrupts, memory_order_relaxed);
    c->armed = 1;
}

void conn_disarm(conn *c, pasyn_task *t)
{
    c->armed = 0;
    if (c->timed_out && t->err == PASYN_ESQLITE && t->code == SQLITE_INTERRUPT) {
        char msg[96];
        snprintf(msg, sizeof msg, "statement timed out after %.3g s", t->timeout_ns / 1e9);
        task_fail(t, PASYN_ESQLITE, SQLITE_INTERRUPT, SQLITE_INTERRUPT, msg);
    }
}

int conn_step_rows(conn *c, cached_stmt *s, pasyn_task *t, size_t chunk, int describe)
{
    sqlite3_stmt *st = s->stmt;
    int n = -1;
    c->seen = 0; /* what the authorizer reports now comes from a re-prepare (conn_class_now) */
    for (;;) {
        int rc = sqlite3_step(st);
        if (n < 0) {
            /* Only now: the first step may have re-prepared the statement after a schema
             * change, and SELECT * may have gained or lost columns. */
            n = sqlite3_column_count(st);
            t->ncols = n;
            if (describe && rc != SQLITE_ROW && rc != SQLITE_DONE)
                describe = 0;
            if (describe && task_set_columns(t, s) != 0) {
                task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
                return SQLITE_NOMEM;
            }
        }
        if (rc == SQLITE_DONE)
            return SQLITE_DONE;
        if (rc != SQLITE_ROW) {
            task_fail_sqlite(t, c->db, rc);
            return rc;
        }
        for (int i = 0; i < n; i++) {
            pasyn_value v = {.type = sqlite3_column_type(st, i)};
            switch (v.type) {
            case SQLITE_INTEGER:
                v.type = PASYN_INT;
                v.i = sqlite3_column_int64(st, i);
                break;
            case SQLITE_FLOAT:
                v.type = PASYN_FLOAT;
                v.d = sqlite3_column_double(st, i);
                break;
            case SQLITE_TEXT:
                v.type = PASYN_TEXT;
                v.p = (const char *)sqlite3_column_text(st, i);
                v.n = (size_t)sqlite3_column_bytes(st, i);
                break;
            case SQLITE_BLOB:
                v.type = PASYN_BLOB;
                v.p = sqlite3_column_blob(st, i);
                v.n = (size_t)sqlite3_column_bytes(st, i);
                break;
            default:
                v.type = PASYN_NULL;
                break;
            }
            if (encode_value(&t->rows, &v) != 0) {
                task_fail(t, PASYN_ENOMEM, SQLITE_NOMEM, SQLITE_NOMEM, "out of memory");
                return SQLITE_NOMEM;
            }
        }
        t->nrows++;
        if (chunk && t->rows.len >= chunk)
            return SQLITE_ROW;
    }
}
