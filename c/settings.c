/*
 * settings.c - the settings of the pool's connections: the pragmas every connection gets when it
 * opens (the pool's options), and the read settings a PRAGMA run through execute changes on the
 * writer, which the readers then apply too so that a read answers as on the writer.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "pool.h"

/* ---- pragmas at open ---------------------------------------------------------------- */

static int is_word(const char *s, int dots)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || (dots && *s == '.')))
            return 0;
    return 1;
}

static int is_number(const char *s)
{
    char *end;
    if (!s || !*s)
        return 0;
    strtod(s, &end);
    return *end == '\0';
}

/* Runs PRAGMA name = value; value is used as it is when it is a number or a word, and
 * quoted as a string otherwise. SQLite's (extended) code; *errmsg (malloc'd) on failure. */
static int apply_pragma(conn *c, const char *name, const char *value, char **errmsg)
{
    if (!is_word(name, 1)) {
        size_t n = strlen(name) + 64;
        if ((*errmsg = malloc(n)) != NULL)
            snprintf(*errmsg, n, "pragma name '%s' is not a name", name);
        return SQLITE_MISUSE;
    }
    char *sql = is_number(value) || is_word(value, 0)
                    ? sqlite3_mprintf("PRAGMA %s = %s", name, value)
                    : sqlite3_mprintf("PRAGMA %s = %Q", name, value);
    if (!sql)
        return SQLITE_NOMEM;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(c->db);
        const char *err = sqlite3_errmsg(c->db);
        size_t n = strlen(sql) + strlen(err) + 8;
        if ((*errmsg = malloc(n)) != NULL)
            snprintf(*errmsg, n, "%s: %s", sql, err);
    }
    sqlite3_free(sql);
    return rc;
}

int settings_apply_pragmas(pasyn_pool *pool, conn *c, int is_writer, char **errmsg)
{
    const pasyn_options *o = &pool->opts;
    int rc = SQLITE_OK;
    *errmsg = NULL;
    if (is_writer && !o->readonly && o->journal_mode)
        rc = apply_pragma(c, "journal_mode", o->journal_mode, errmsg);
    if (rc == SQLITE_OK && is_writer && !o->readonly)
        rc = apply_pragma(c, "journal_size_limit", "67108864", errmsg);
    if (rc == SQLITE_OK && !is_writer) /* the writer alone checkpoints */
        rc = apply_pragma(c, "wal_autocheckpoint", "0", errmsg);
    if (rc == SQLITE_OK && o->synchronous)
        rc = apply_pragma(c, "synchronous", o->synchronous, errmsg);
    if (rc == SQLITE_OK)
        rc = apply_pragma(c, "foreign_keys", o->foreign_keys ? "ON" : "OFF", errmsg);
    if (rc == SQLITE_OK && o->defensive) {
        /* SQLite's advice for files from elsewhere (security.html): no writes to the schema
         * through writable_schema, and no functions with side effects run from the schema
         * (views, triggers, CHECKs) on this connection's behalf. */
        rc = sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
        if (rc == SQLITE_OK)
            rc = apply_pragma(c, "trusted_schema", "OFF", errmsg);
    }
    for (char **p = pool->pragmas; rc == SQLITE_OK && p && p[0] && p[1]; p += 2)
        rc = apply_pragma(c, p[0], p[1], errmsg);
    return rc;
}

/* ---- read settings ----------------------------------------------------------------- */

/* PRAGMAs that set a setting of the connection that runs them which changes what a read on it
 * answers (pragma.html): LIKE's case, the order of unordered rows, whether the schema's
 * functions and virtual tables may run, result column names. Run through execute they reach
 * the writer alone; the readers apply them too (pool->read_settings). */
static const char *const read_setting_names[] = {
    "case_sensitive_like", "reverse_unordered_selects", "trusted_schema",
    "full_column_names",   "short_column_names",
};
_Static_assert(sizeof read_setting_names / sizeof *read_setting_names == READ_SETTINGS,
               "READ_SETTINGS");

/* 1 + the index in read_setting_names of the setting a PRAGMA `name` = `value` sets, else 0. */
int read_setting(const char *name, const char *value)
{
    for (int i = 0; value && name && i < READ_SETTINGS; i++)
        if (strcasecmp(name, read_setting_names[i]) == 0)
            return i + 1;
    return 0;
}

void settings_note(pasyn_pool *pool, int setting, const char *sql, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return; /* out of memory: the readers keep the setting they had */
    memcpy(copy, sql, len);
    copy[len] = '\0';
    pthread_mutex_lock(&pool->read_settings.mu);
    free(pool->read_settings.sql[setting - 1]);
    pool->read_settings.sql[setting - 1] = copy;
    atomic_fetch_add_explicit(&pool->read_settings.gen, 1, memory_order_release);
    pthread_mutex_unlock(&pool->read_settings.mu);
}

void settings_apply(pasyn_pool *pool, conn *c, uint64_t *gen)
{
    pthread_mutex_lock(&pool->read_settings.mu);
    for (int i = 0; i < READ_SETTINGS; i++)
        if (pool->read_settings.sql[i])
            conn_exec(c, pool->read_settings.sql[i]); /* it ran on the writer: here too */
    *gen = atomic_load_explicit(&pool->read_settings.gen, memory_order_relaxed);
    pthread_mutex_unlock(&pool->read_settings.mu);
}
