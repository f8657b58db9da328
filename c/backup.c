/*
 * backup.c - copies of the whole database, on the writer: pasyn_submit's PASYN_SERIALIZE
 * (sqlite3_serialize of one of the writer's databases into the task) and the steps of an
 * online backup (PASYN_BACKUP: sqlite3_backup_init/step/finish from the writer's connection
 * into a file of its own).
 *
 * Why the writer. The backup's source is the writer's own connection: SQLite applies every
 * write made through the source connection to the backup as it goes (backup.html, "if the
 * source database is modified by ... the same database connection ... the backup ...
 * [is] automatically updated"), so a backup in steps never restarts and ends with the
 * database as its last step saw it, whatever the pool wrote between steps; and only the
 * writer holds the pool's attached and TEMP databases. Between steps the writer runs other
 * tasks and the readers go on reading.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "pool.h"

struct pasyn_backup {
    char *dest;         /* the destination file (a path or a "file:" URI) */
    char *name;         /* the source database: "main", "temp", an attached name */
    int pages;          /* pages per step; -1: all at once */
    sqlite3 *dest_db;   /* open from the first step to the last */
    sqlite3_backup *bk; /* the same */
    int remaining, total;
    int done;                  /* finished (successfully or not) */
    int abandon;               /* the abandon task: finish and free */
    pasyn_backup *next_orphan; /* in its pool's life.orphans */
};

pasyn_backup *pasyn_backup_new(const char *dest, const char *name, int pages)
{
    pasyn_backup *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->dest = strdup(dest);
    b->name = strdup(name && *name ? name : "main");
    b->pages = pages > 0 ? pages : -1;
    if (!b->dest || !b->name) {
        pasyn_backup_free(b);
        return NULL;
    }
    return b;
}

/* Ends the copy (sqlite3_backup_finish), keeping the destination open for its message.
 * SQLite's code of the backup as a whole. */
static int backup_end(pasyn_backup *b)
{
    int rc = SQLITE_OK;
    if (b->bk)
        rc = sqlite3_backup_finish(b->bk);
    b->bk = NULL;
    b->done = 1;
    return rc;
}

/* Ends the copy and closes the destination. The writer (or, once the pool is closed, the
 * owner thread). */
static int backup_finish(pasyn_backup *b)
{
    int rc = backup_end(b);
    if (b->dest_db)
        sqlite3_close_v2(b->dest_db);
    b->dest_db = NULL;
    return rc;
}

void pasyn_backup_free(pasyn_backup *b)
{
    if (!b)
        return;
    backup_finish(b);
    free(b->dest);
    free(b->name);
    free(b);
}

int pasyn_backup_progress(const pasyn_backup *b, int *remaining, int *total)
{
    if (remaining)
        *remaining = b->remaining;
    if (total)
        *total = b->total;
    return b->done;
}

void pasyn_task_set_backup(pasyn_task *t, pasyn_backup *b)
{
    t->backup = b;
}

/* Fails the task with the backup's error: SQLite's message from the destination connection,
 * which sqlite3_backup_finish sets (c3ref/backup_finish.html). */
static void backup_fail(pasyn_task *t, pasyn_backup *b, int rc)
{
    char msg[512];
    const char *why = b->dest_db ? sqlite3_errmsg(b->dest_db) : sqlite3_errstr(rc);
    snprintf(msg, sizeof msg, "backup into '%s': %s", b->dest, why);
    task_fail(t, PASYN_ESQLITE, rc & 0xff, rc, msg);
}

/* Whether the file `path` is the file `b` (stat'ed): by another path, a link, a URI's. */
static int is_file(const char *path, const struct stat *b)
{
    struct stat a;
    return path && *path && stat(path, &a) == 0 && a.st_dev == b->st_dev && a.st_ino == b->st_ino;
}

/* Whether the destination's file is one of the source connection's own databases (the one
 * copied, or another attached there; reached by another path, a link, a URI, or the file of
 * another pool on it): a copy into it would hold the file's write lock from its first step to
 * its last, and the pool's own writes between steps would wait for it until their
 * busy_timeout. ":memory:" and temporary databases have no file. */
static int same_file(sqlite3 *src, const char *name, sqlite3 *dest)
{
    const char *b = sqlite3_db_filename(dest, "main");
    struct stat sb;
    if (!b || !*b || stat(b, &sb) != 0)
        return 0;
    if (is_file(sqlite3_db_filename(src, name), &sb))
        return 1;
#if SQLITE_VERSION_NUMBER >= 3039000 /* sqlite3_db_name */
    for (int i = 0; sqlite3_db_name(src, i); i++)
        if (is_file(sqlite3_db_filename(src, sqlite3_db_name(src, i)), &sb))
            return 1;
#endif
    return 0;
}

/* One step of the backup (the first opens the destination and starts it), or the end of an
 * abandoned one. Writer thread. */
static void backup_step(pasyn_pool *pool, pasyn_task *t)
{
    pasyn_backup *b = t->backup;
    sqlite3 *src = pool->writer.conn.db;
    if (!b) {
        task_fail_programming(t, "a backup task needs its backup (pasyn_task_set_backup)");
        return;
    }
    if (b->abandon || b->done) {
        backup_finish(b);
        if (b->abandon)
            pasyn_backup_free(b);
        t->backup = NULL;
        return;
    }
    if (!b->bk) {
        int rc = sqlite3_open_v2(b->dest, &b->dest_db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI |
                                     SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE,
                                 NULL);
        if (rc == SQLITE_OK && same_file(src, b->name, b->dest_db)) {
            task_fail_programming(t,
                                  "backup into '%s': that is the source database's own file "
                                  "(or the file of a database attached to it)",
                                  b->dest);
            backup_finish(b);
            return;
        }
        if (rc == SQLITE_OK) {
            sqlite3_extended_result_codes(b->dest_db, 1);
            sqlite3_busy_timeout(b->dest_db, pool->opts.busy_timeout_ms);
            b->bk = sqlite3_backup_init(b->dest_db, "main", src, b->name);
            rc = b->bk ? SQLITE_OK : sqlite3_extended_errcode(b->dest_db);
        }
        if (rc != SQLITE_OK) {
            backup_fail(t, b, rc);
            backup_finish(b);
            return;
        }
    }
    int rc = sqlite3_backup_step(b->bk, b->pages);
    b->remaining = sqlite3_backup_remaining(b->bk);
    b->total = sqlite3_backup_pagecount(b->bk);
    if (rc == SQLITE_OK)
        return; /* more steps to come */
    int end = backup_end(b);
    if (rc != SQLITE_DONE || end != SQLITE_OK)
        backup_fail(t, b, rc != SQLITE_DONE ? rc : end);
    backup_finish(b);
}

/* An open pool's writer ends the backup at once (a task behind any step of it still queued).
 * Otherwise (the pool closing or closed, or no memory for the task) the pool keeps it until
 * pasyn_pool_free, when no thread can still run a step of it: the caller never waits here,
 * where it may be the only thread that answers the calls a closing pool's statements make of
 * SQL functions defined in Lua. */
void pasyn_backup_abandon(pasyn_pool *pool, pasyn_backup *b)
{
    pasyn_task *t = pasyn_task_new(PASYN_BACKUP, NULL, 0);
    int pushed = 0;
    if (t) {
        b->abandon = 1;
        t->backup = b;
        t->hub = pool->hub;
        t->notify = NOTIFY_NONE; /* the pool frees it */
        pthread_rwlock_rdlock(&pool->life.intake);
        pushed = atomic_load(&pool->life.state) == PASYN_POOL_OPEN;
        if (pushed)
            writer_push(pool, t);
        pthread_rwlock_unlock(&pool->life.intake);
    }
    if (!pushed) {
        pasyn_task_free(t);
        b->abandon = 0; /* a step still queued runs as usual */
        b->next_orphan = pool->life.orphans;
        pool->life.orphans = b;
    }
}

void backup_free_orphans(pasyn_pool *pool)
{
    while (pool->life.orphans) {
        pasyn_backup *b = pool->life.orphans;
        pool->life.orphans = b->next_orphan;
        pasyn_backup_free(b);
    }
}

/* sqlite3_serialize (c3ref/serialize.html) of the database the task's SQL names ("main" when
 * empty), into the task (pasyn_task_bytes). */
static void serialize(pasyn_pool *pool, pasyn_task *t)
{
    sqlite3 *db = pool->writer.conn.db;
    const char *name = t->sql && t->sql_len ? t->sql : "main";
    if (!sqlite3_db_filename(db, name)) {
        char msg[256];
        snprintf(msg, sizeof msg, "unknown database %s", name);
        task_fail(t, PASYN_ESQLITE, SQLITE_ERROR, SQLITE_ERROR, msg);
        return;
    }
    sqlite3_int64 size = 0;
    unsigned char *p = sqlite3_serialize(db, name, &size, 0);
    if (!p && size > 0) {
        task_fail_nomem(t);
        return;
    }
    /* The file format bytes (fileformat2.html, offsets 18 and 19): 2 in a WAL database, as the
     * pool's are. SQLite's in-memory database cannot open a WAL image (sqlite3_deserialize:
     * "unable to open database file"), so the copy says 1, as a file does after
     * journal_mode=DELETE; the pages are the same, and a pool opened on it sets WAL again. */
    if (p && size >= 100 && memcmp(p, "SQLite format 3", 16) == 0 && p[18] == 2 && p[19] == 2)
        p[18] = p[19] = 1;
    t->bytes = p;
    t->bytes_len = (size_t)size;
}

void backup_run(pasyn_pool *pool, pasyn_task *t)
{
    if (t->kind == PASYN_SERIALIZE)
        serialize(pool, t);
    else
        backup_step(pool, t);
}

const unsigned char *pasyn_task_bytes(const pasyn_task *t, size_t *len)
{
    *len = t->bytes_len;
    return t->bytes ? t->bytes : (const unsigned char *)"";
}
