/*
 * ext_hello.c - a tiny SQLite extension for the specs of the `extensions` option
 * (spec/extensions_spec.lua): hello() answers 'hello from <thread's connection>' and
 * ext_twice(x) answers 2 * x, deterministic. Built by the Makefile into $(BUILD)/ext_hello.so;
 * ext_hello_alt is a second entry point that registers hello_alt() instead.
 * (c3ref/load_extension.html, loadext.html)
 */
#include <stddef.h>
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

static void hello(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_text(ctx, "hello", -1, SQLITE_STATIC);
}

static void twice(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int64(ctx, 2 * sqlite3_value_int64(argv[0]));
}

int sqlite3_exthello_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api);
int sqlite3_exthello_alt(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api);

int sqlite3_exthello_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api)
{
    (void)errmsg;
    SQLITE_EXTENSION_INIT2(api);
    int rc = sqlite3_create_function(db, "hello", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL, hello,
                                     NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "ext_twice", 1,
                                     SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                     twice, NULL, NULL);
    return rc;
}

int sqlite3_exthello_alt(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api)
{
    (void)errmsg;
    SQLITE_EXTENSION_INIT2(api);
    return sqlite3_create_function(db, "hello_alt", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL, hello,
                                   NULL, NULL);
}
