/*
 * core.c - the binding: the only code that sees a lua_State. It turns Lua values into a task
 * (C memory only), submits it, and turns a completed task back into Lua values. Policy
 * (routing, transactions, row shapes, error objects) lives in the C core or in
 * pasyn_sqlite.lua, not here.
 *
 * Two shapes cross the boundary: a completed task's result fills a record the caller reuses
 * (result()), and every failure, at submit as at completion, is nil, class, code, extended,
 * message (push_failure), with the class as the core names it; errors.lua alone maps it to
 * an error kind.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "compat.h"
#include "pasyn.h"

#define POOL_MT "pasyn_sqlite.pool"
#define STREAM_MT "pasyn_sqlite.stream"
#define BACKUP_MT "pasyn_sqlite.backup"
#define HUB_KEY "pasyn_sqlite.hub"
#define BLOB_MT_KEY "pasyn_sqlite.blob"
#define INT64_NEW_KEY "pasyn_sqlite.int64_new"   /* LuaJIT: ffi.typeof("int64_t") */
#define INT64_KIND_KEY "pasyn_sqlite.int64_kind" /* LuaJIT: cdata -> 1 int64_t, 2 uint64_t, 0 */
#define ERROR_NEW_KEY "pasyn_sqlite.error_new"   /* errors.new(kind, message) */
#define NAMES_KEY "pasyn_sqlite.names"           /* the module's functions -> their names */
#define FUNCS_KEY "pasyn_sqlite.functions"       /* id -> {fn, name, integers, pool} */
#define GROUPS_KEY "pasyn_sqlite.groups"         /* aggregate context -> the group's object */

/* The `integers` option: how an INTEGER beyond +-2^53 comes back where numbers are doubles. */
enum integers_mode { INTEGERS_NUMBER = 0, INTEGERS_STRING, INTEGERS_INT64 };

/* A pool as Lua holds it. Where the pool is in its life is the core's to say
 * (pasyn_pool_state); the binding knows only whether it has freed it. */
typedef struct lhub lhub;

typedef struct lpool {
    pasyn_pool *pool;      /* NULL once freed */
    lhub *lhub;            /* the Lua state's hub record (get_lhub), which outlives the pool */
    int integers;          /* enum integers_mode */
    uint64_t inline_since; /* when the first of the reads this thread has run inline in a row
                              ended: since a statement of the pool last went to a worker, or
                              execute last asked for a pause (now_ns; 0: none) */
    uint64_t pause_ns;     /* after that long, execute asks for a pause: the inline_budget */
} lpool;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct lstream {
    lpool *owner; /* kept alive by the anchor */
    uint64_t id;  /* 0 once the result has ended */
} lstream;

/* The Lua state's hub, made on first use rather than when the module loads: OpenResty
 * loads modules in its master process, which then forks the workers, and a descriptor made
 * there would be shared by all of them. A hub made before a fork is left to the parent: the
 * child makes its own (the old one's memory stays, as its lock may be held by a thread that
 * does not exist in the child). */
struct lhub {
    pasyn_hub *hub;
    pid_t pid;                 /* the process that made it */
    unsigned forks;            /* `forks` when it was made (get_hub) */
    int serving;               /* SQL functions running now (serve_calls), nested */
    uint64_t last_function_id; /* ids of SQL functions are never reused (create_function) */
};

static void forget_functions(lua_State *L, const lpool *p);

/* ---- raising --------------------------------------------------------------------- */

/* Raises an error object of `kind` (errors.lua's, made by the errors.new that the Lua layer
 * registered with set_errors) whose message is the formatted text, as luaL_error does for a
 * string; where none was registered (the core loaded on its own), the string
 * "<kind>: <message>". Every error the binding raises goes through here: a user sees error
 * objects only (API.md, "Errors"). */
static int raise_error(lua_State *L, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_getfield(L, LUA_REGISTRYINDEX, ERROR_NEW_KEY);
    lua_pushstring(L, kind);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    if (lua_isfunction(L, -3))
        lua_call(L, 2, 1);
    else
        lua_pushfstring(L, "%s: %s", kind, lua_tostring(L, -1));
    return lua_error(L);
}

/* The name of the running function of this module, for messages: "sqlite.blob" for those the
 * Lua layer hands on as they are, "core.submit" for the others (see luaopen). Looked up by the
 * function itself, as the name it was called by is unknown to a pcall. */
static const char *function_name(lua_State *L)
{
    lua_Debug ar;
    const char *name = NULL;
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "f", &ar)) {
        lua_getfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
        lua_pushvalue(L, -2);
        lua_rawget(L, -2);
        name = lua_tostring(L, -1); /* a string of the registry's table: stays alive */
        lua_pop(L, 3);
    }
    return name ? name : "pasyn_sqlite";
}

/* Raises a ProgrammingError for argument i (named `name`) that is not `want`: the binding's
 * luaL_argerror, with an error object. */
static int arg_error(lua_State *L, int i, const char *name, const char *want)
{
    return raise_error(L, "ProgrammingError", "%s: argument #%d '%s' must be %s, got %s",
                       function_name(L), i, name, want, luaL_typename(L, i));
}

/* The module's functions hold the metatables of its userdata as upvalues (luaopen): a check
 * compares with one instead of looking the metatable up in the registry by name, on every
 * statement's path. Likewise the string "n", which every parameter table is asked for. */
enum { UPVALUE_POOL_MT = 1, UPVALUE_STREAM_MT = 2, UPVALUE_HUB = 3, UPVALUE_N = 4 };

/* The binding's luaL_check*: each raises arg_error for an argument of another type. */
static void *check_udata(lua_State *L, int i, int upvalue, const char *tname, const char *name,
                         const char *want)
{
    void *p = lua_touserdata(L, i);
    int ok = 0;
    if (p && lua_getmetatable(L, i)) {
        if (lua_rawequal(L, -1, lua_upvalueindex(upvalue))) { /* the common case: one call */
            ok = 1;
        } else if (!lua_istable(L, lua_upvalueindex(upvalue))) { /* a metamethod: no upvalues */
            luaL_getmetatable(L, tname);
            ok = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (!ok)
        arg_error(L, i, name, want);
    return p;
}

static void check_type(lua_State *L, int i, int type, const char *name)
{
    if (lua_type(L, i) != type) {
        const char *want = type == LUA_TSTRING     ? "a string"
                           : type == LUA_TTABLE    ? "a table"
                           : type == LUA_TFUNCTION ? "a function"
                                                   : lua_typename(L, type);
        arg_error(L, i, name, want);
    }
}

static const char *check_lstring(lua_State *L, int i, const char *name, size_t *len)
{
    check_type(L, i, LUA_TSTRING, name); /* no number turned into a string */
    return lua_tolstring(L, i, len);
}

static lua_Integer check_integer(lua_State *L, int i, const char *name)
{
    if (lua_type(L, i) != LUA_TNUMBER)
        arg_error(L, i, name, "an integer");
    return lua_tointeger(L, i);
}

static lua_Number opt_number(lua_State *L, int i, const char *name, lua_Number dflt)
{
    if (lua_isnoneornil(L, i))
        return dflt;
    if (lua_type(L, i) != LUA_TNUMBER)
        arg_error(L, i, name, "a number or nil");
    return lua_tonumber(L, i);
}

/* The state's lhub (the registry's HUB_KEY), an upvalue of every function of the module: only
 * they may call this. */
static lhub *get_lhub(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(UPVALUE_HUB));
}

/* How many times this process was made by fork() (counted in the child, pthread_atfork): a
 * hub made before the last fork is the parent's, whose threads the child does not have. Looked
 * at on every poll and drain of the event loop, where getpid() would be a system call each. */
static atomic_uint forks;
static pthread_once_t forks_counted = PTHREAD_ONCE_INIT;

static void count_fork(void)
{
    atomic_fetch_add(&forks, 1);
}

static void count_forks(void)
{
    pthread_atfork(NULL, NULL, count_fork);
}

/* The state's hub, made on first use, and again in a child process forked since (the
 * parent's is left alone: its threads are not in this process). */
static pasyn_hub *get_hub(lua_State *L)
{
    lhub *h = get_lhub(L);
    unsigned now = atomic_load_explicit(&forks, memory_order_relaxed);
    if (!h->hub || h->forks != now) {
        h->hub = pasyn_hub_new();
        if (!h->hub)
            raise_error(L, "OperationalError", "cannot create the completion hub: %s",
                        strerror(errno));
        h->pid = getpid();
        h->forks = now;
    }
    return h->hub;
}

/* A pool (the userdata core.open made), of any state. */
static lpool *to_pool(lua_State *L, int i)
{
    return check_udata(L, i, UPVALUE_POOL_MT, POOL_MT, "pool", "a pool");
}

/* The pool's state (enum pasyn_pool_state); a freed pool is closed. */
static int pool_state(const lpool *p)
{
    return p->pool ? pasyn_pool_state(p->pool) : PASYN_POOL_CLOSED;
}

/* A pool that is not freed: after conn:close() it is, and using it is using a closed
 * connection. */
static lpool *check_pool(lua_State *L, int i)
{
    lpool *p = to_pool(L, i);
    if (!p->pool)
        raise_error(L, "ConnectionClosedError", "the connection is closed");
    return p;
}

static pasyn_task *check_task(lua_State *L, int i)
{
    check_type(L, i, LUA_TLIGHTUSERDATA, "task");
    return lua_touserdata(L, i);
}

/* A task that has completed (pasyn_task_completed), to read or free. One still in flight
 * raises ProgrammingError and stays the pool's: its worker may be writing it. (The Lua layer
 * only asks for a task's result once it came back; a coroutine resumed by other code than
 * its scheduler while it waits goes on waiting.) */
static pasyn_task *check_completed(lua_State *L, int i)
{
    pasyn_task *t = check_task(L, i);
    if (!pasyn_task_completed(t))
        raise_error(L, "ProgrammingError", "the statement has not completed yet");
    return t;
}

/* ---- failures ---------------------------------------------------------------------- */

/* How every failure reaches Lua, at submit as at completion: nil, class, code, extended,
 * message. The class is the core's name for where it failed (enum pasyn_error); code and
 * extended are SQLite's result codes for "sqlite", else 0. Only errors.lua turns these into
 * an error object of some kind. */
static const char *const error_classes[] = {"ok", "sqlite", "programming", "closed", "nomem"};

static int push_failure(lua_State *L, int err, int code, int extended, const char *message)
{
    int known = err > PASYN_OK && err < (int)(sizeof error_classes / sizeof *error_classes);
    lua_pushnil(L);
    lua_pushstring(L, known ? error_classes[err] : "unknown"); /* errors.lua: InternalError */
    lua_pushinteger(L, code);
    lua_pushinteger(L, extended);
    lua_pushstring(L, message);
    return 5;
}

/* A failure the binding found itself (err: enum pasyn_error, never PASYN_ESQLITE); frees t,
 * which may be NULL. */
static int fail(lua_State *L, pasyn_task *t, int err, const char *message)
{
    push_failure(L, err, 0, 0, message);
    pasyn_task_free(t);
    return 5;
}

/* The failure the core set on t (a refused submit, a failed task); frees t. */
static int fail_task(lua_State *L, pasyn_task *t)
{
    int code, extended;
    const char *message;
    int err = pasyn_task_error(t, &code, &extended, &message);
    push_failure(L, err, code, extended, message);
    pasyn_task_free(t);
    return 5;
}

/* ---- parameters --------------------------------------------------------------------- */

/* Leaves "parameter <pos or name>: <why>" on the stack; returns 0. */
static int bad_param(lua_State *L, int pos, const char *name, const char *why)
{
    if (name)
        lua_pushfstring(L, "parameter %s%s: %s",
                        name[0] == ':' || name[0] == '@' || name[0] == '$' ? "" : ":", name, why);
    else
        lua_pushfstring(L, "parameter %d: %s", pos, why);
    return 0;
}

#ifdef COMPAT_TCDATA
/* LuaJIT: the cdata at i as an INTEGER when it is a boxed int64_t or uint64_t (1, or 0 with a
 * message for a uint64_t above INT64_MAX); -1 for any other cdata. Which ctype it has is asked
 * of the helper the Lua layer registered (ffi.istype); its 8-byte payload is read where
 * lua_topointer says. Only cdata parameters come here: other values never call Lua. */
static int cdata_to_value(lua_State *L, int i, pasyn_value *v, int pos, const char *name)
{
    if (i < 0)
        i = lua_gettop(L) + i + 1;
    lua_getfield(L, LUA_REGISTRYINDEX, INT64_KIND_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    int kind = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (kind != 1 && kind != 2)
        return -1;
    uint64_t u;
    memcpy(&u, lua_topointer(L, i), sizeof u);
    if (kind == 2 && u > (uint64_t)INT64_MAX) {
        char why[96];
        snprintf(why, sizeof why,
                 "the uint64_t %" PRIu64 " is beyond INTEGER's range "
                 "(at most 9223372036854775807)",
                 u);
        return bad_param(L, pos, name, why);
    }
    v->type = PASYN_INT;
    v->i = (int64_t)u;
    return 1;
}
#endif

/* The value at i, of Lua type `type` (lua_type's), when it is of a kind every binding takes:
 * a number, a string, nil or a boolean (1); else 0, v untouched. One Lua call each. */
static inline int plain_value(lua_State *L, int i, int type, pasyn_value *v)
{
    switch (type) {
    case LUA_TNUMBER:
        if (compat_tointeger(L, i, &v->i)) {
            v->type = PASYN_INT;
        } else {
            v->type = PASYN_FLOAT;
            v->d = (double)lua_tonumber(L, i);
        }
        return 1;
    case LUA_TSTRING:
        v->type = PASYN_TEXT;
        v->p = lua_tolstring(L, i, &v->n);
        return 1;
    case LUA_TNIL:
        v->type = PASYN_NULL;
        return 1;
    case LUA_TBOOLEAN:
        v->type = PASYN_INT;
        v->i = lua_toboolean(L, i);
        return 1;
    default:
        return 0;
    }
}

/* Converts the Lua value at i; on failure leaves a message naming the parameter (position
 * `pos`, or `name` when it is not NULL) on the stack and returns 0. */
static int to_value(lua_State *L, int i, pasyn_value *v, int pos, const char *name)
{
    memset(v, 0, sizeof *v);
    int type = lua_type(L, i);
    if (plain_value(L, i, type, v))
        return 1;
    switch (type) {
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, i) == NULL) {
            v->type = PASYN_NULL;
            return 1;
        }
        break;
    case LUA_TTABLE:
        if (lua_getmetatable(L, i)) {
            lua_getfield(L, LUA_REGISTRYINDEX, BLOB_MT_KEY);
            int is_blob = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
            if (is_blob) {
                lua_rawgeti(L, i, 1);
                v->type = PASYN_BLOB;
                v->p = lua_tolstring(L, -1, &v->n); /* anchored by the blob table */
                lua_pop(L, 1);
                return 1;
            }
        }
        break;
    default:
#ifdef COMPAT_TCDATA
        if (lua_type(L, i) == COMPAT_TCDATA) {
            int done = cdata_to_value(L, i, v, pos, name);
            if (done >= 0)
                return done;
        }
#endif
        break;
    }
    char why[64];
    snprintf(why, sizeof why, "cannot bind a %s", luaL_typename(L, i));
    return bad_param(L, pos, name, why);
}

/* Converts the value at i, of Lua type `type` (lua_type's), as to_value does: the common kinds
 * at once (plain_value), the others by to_value (which names a bad one by position). */
static int convert(lua_State *L, int i, int type, pasyn_value *v, int pos)
{
    return plain_value(L, i, type, v) || to_value(L, i, v, pos, NULL);
}

/* Positional values are converted up to BIND_BATCH at a time, then bound in one call
 * (bind_batch); their strings stay on the stack meanwhile. */
enum { BIND_BATCH = 16 };

/* Binds the m converted values vs. PASYN_OK, or PASYN_ENOMEM with a message on the stack. */
static int bind_batch(lua_State *L, pasyn_task *t, const pasyn_value *vs, int m)
{
    if (pasyn_task_bind_values(t, vs, m) == 0)
        return PASYN_OK;
    lua_pushliteral(L, "out of memory");
    return PASYN_ENOMEM;
}

/* Binds n values by position: those from stack index i on, or (from_table) t[1] to t[n] of
 * the table at i, read raw and left pushed (the caller pops them). PASYN_OK; or, with a
 * message on the stack, PASYN_EPROGRAMMING for a value that cannot bind, PASYN_ENOMEM. */
static int bind_values(lua_State *L, pasyn_task *t, int i, int n, int from_table)
{
    pasyn_value vs[BIND_BATCH];
    for (int k = 1, m = 0; k <= n; k++) {
        int at = from_table ? -1 : i + k - 1;
        int type = from_table ? compat_rawgeti(L, i, k) : lua_type(L, at);
        if (!convert(L, at, type, &vs[m], k))
            return PASYN_EPROGRAMMING;
        if (++m == BIND_BATCH || k == n) {
            int err = bind_batch(L, t, vs, m);
            if (err != PASYN_OK)
                return err;
            m = 0;
        }
    }
    return PASYN_OK;
}

/* Binds the n values from i on. Returns as bind_values does. */
static int bind_positional(lua_State *L, pasyn_task *t, int i, int n)
{
    return bind_values(L, t, i, n, 0);
}

/* 1 when the table at i has a string key other than "n". */
static int has_names_besides_n(lua_State *L, int i)
{
    int found = 0;
    lua_pushnil(L);
    while (!found && lua_next(L, i)) {
        lua_pop(L, 1);
        found = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "n") != 0;
    }
    if (found)
        lua_pop(L, 1);
    return found;
}

/* Binds count NULLs by position, then (`then_alternative`) starts another reading of the
 * parameters (pasyn_task_bind_alternative). Returns as bind_positional does. */
static int bind_nulls(lua_State *L, pasyn_task *t, int count, int then_alternative)
{
    pasyn_value null = {.type = PASYN_NULL};
    int err = 0;
    for (int k = 0; k < count && err == 0; k++)
        err = pasyn_task_bind(t, NULL, 0, &null);
    if (err == 0 && then_alternative)
        err = pasyn_task_bind_alternative(t);
    if (err != 0)
        lua_pushliteral(L, "out of memory");
    return err != 0 ? PASYN_ENOMEM : PASYN_OK;
}

/* The parameters held by the table at i: an array (t.n or #t long) or a map of names. A
 * table whose only key is n is both (table.pack of n nils, or {n = value} for :n): it is bound
 * both ways, the NULLs first, and the statement decides (pasyn_task_bind_alternative).
 * PASYN_OK, the stack then cut to `keep` slots (at most i: the caller's, or with the table
 * popped too); or, as bind_positional, a failure with its message on top. */
static int bind_table(lua_State *L, pasyn_task *t, int i, int keep)
{
    /* raw, as every read of a parameter table: no metamethod runs */
    lua_pushvalue(L, lua_upvalueindex(UPVALUE_N));
    int has_n = compat_rawget(L, i) == LUA_TNUMBER;
    lua_Number count = has_n ? lua_tonumber(L, -1) : 0; /* left there until the end */
    int len = (int)compat_rawlen(L, i);
    int is_count = has_n && count >= 0 && count <= 32766 && count == (lua_Number)(int)count;
    if (len > 0 && has_n && !is_count) {
        lua_pushliteral(L, "the parameter count t.n must be a whole number from 0 to 32766");
        return PASYN_EPROGRAMMING;
    }
    if (len > 0) {
        int n = has_n ? (int)count : len;
        /* Each value is converted as it is pushed, and all popped at the end. A few fit in
         * the LUA_MINSTACK slots a C function has without asking. */
        if (n > 8 && !lua_checkstack(L, n + 3)) {
            lua_pushfstring(L, "too many parameters (%d)", n);
            return PASYN_EPROGRAMMING;
        }
        int err = bind_values(L, t, i, n, 1);
        if (err == PASYN_OK)
            lua_settop(L, keep);
        return err;
    }
    if (has_n && is_count && !has_names_besides_n(L, i)) {
        int err = bind_nulls(L, t, (int)count, 1); /* then n by name, below */
        if (err != PASYN_OK)
            return err;
    }
    lua_pushnil(L);
    while (lua_next(L, i)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            lua_pushliteral(L, "parameter names must be strings (mixing an array part and "
                               "names is not supported)");
            return PASYN_EPROGRAMMING;
        }
        size_t namelen;
        const char *name = lua_tolstring(L, -2, &namelen);
        pasyn_value v;
        if (!to_value(L, -1, &v, 0, name)) {
            lua_replace(L, -3);
            lua_pop(L, 1);
            return PASYN_EPROGRAMMING;
        }
        if (pasyn_task_bind(t, name, namelen, &v) != 0) {
            lua_pop(L, 2);
            lua_pushliteral(L, "out of memory");
            return PASYN_ENOMEM;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, keep);
    return PASYN_OK;
}

/* ---- submitting ------------------------------------------------------------------- */

/* The failure of a submit to a pool that is not open, in result()'s shape: class "closing"
 * until the pool is freed (its close is under way, or done but not yet returned to its caller,
 * who frees it), "closed" afterwards. Frees t. */
static int fail_closed(lua_State *L, lpool *p, pasyn_task *t)
{
    int closing = p->pool != NULL;
    pasyn_task_free(t);
    lua_pushnil(L);
    lua_pushstring(L, closing ? "closing" : "closed");
    lua_pushinteger(L, 0);
    lua_pushinteger(L, 0);
    lua_pushstring(L, closing ? "the connection is closing" : "the connection is closed");
    return 5;
}

/* Queues t (see pasyn_submit): the task as a light userdata, or the failure (t freed). */
static const char in_function[] =
    "a SQL function defined in Lua cannot run statements or close a connection: the statement "
    "that called it waits for it";

static int submit(lua_State *L, lpool *p, pasyn_task *t, int sync)
{
    if (p->lhub->serving)
        return fail(L, t, PASYN_EPROGRAMMING, in_function);
    if (pool_state(p) != PASYN_POOL_OPEN)
        return fail_closed(L, p, t);
    /* Every owner of the pool is a coroutine of this thread: a call that blocks it while
     * another one's transaction holds the writer would wait for ever. */
    if (sync)
        pasyn_task_set_no_owner_wait(t);
    int err = pasyn_submit(p->pool, t, sync);
    if (err == PASYN_ECLOSED)
        return fail_closed(L, p, t);
    if (err == PASYN_DONE) { /* ran on this thread: complete, and ours */
        lua_pushlightuserdata(L, t);
        lua_pushboolean(L, 1);
        return 2;
    }
    if (err == PASYN_ASK) /* not queued, still ours: l_execute asks the Lua layer */
        return 0;
    if (err != 0)
        return fail_task(L, t); /* the core set the task's error */
    lua_pushlightuserdata(L, t);
    return 1;
}

/* A task of `kind`, or NULL when out of memory. */
static pasyn_task *new_task(lua_State *L, int kind, const char *sql, size_t len, lua_Integer owner,
                            int timeout_idx)
{
    double timeout = (double)opt_number(L, timeout_idx, "timeout", 0); /* before anything to free */
    pasyn_task *t = pasyn_task_new(kind, sql, len);
    if (t) {
        pasyn_task_set_owner(t, (uint64_t)owner);
        pasyn_task_set_timeout(t, timeout);
    }
    return t;
}

/* submit(pool, kind, owner, sync, timeout, sql [, params_table | values...])
 *   -> task | nil, class, code, extended, message
 * Arguments: kind "exec" or "script"; owner the id of the transaction owner the statement acts
 * for; sync true to complete through wait() instead of the hub; timeout seconds or nil. With
 * exactly one extra argument that is a plain table, it holds the parameters (an array, or a map
 * of names); otherwise every extra argument is one value.
 * Results: the task (a light userdata) to wait for and hand to result(); or the failure, in the
 * shape result() gives one: class "programming" (a value that cannot bind, SQL the core
 * refuses), "closing" (a close is under way, or done and the pool not yet freed), "closed"
 * (freed), "nomem"; code and extended 0.
 * Errors raised: only for arguments of the wrong type (a bug of the Lua layer).
 * Thread: the Lua state's (the hub's owner thread). */
/* Binds the arguments from `first` on to t, as submit takes them (one plain table, or
 * values). PASYN_OK, or the failure with its message on the stack. */
static int bind_args(lua_State *L, pasyn_task *t, int first)
{
    int nargs = lua_gettop(L) - first + 1, err;
    if (nargs == 1 && lua_type(L, first) == LUA_TTABLE && lua_getmetatable(L, first) == 0)
        err = bind_table(L, t, first, first);
    else if (nargs == 1 && lua_type(L, first) == LUA_TTABLE)
        lua_pop(L, 1), err = bind_positional(L, t, first, 1);
    else
        err = bind_positional(L, t, first, nargs);
    if (err == PASYN_OK && nargs == 1 && lua_isnil(L, first))
        err = bind_nulls(L, t, 0, 1); /* execute(sql, params) with params nil: or none */
    return err;
}

static int l_submit(lua_State *L)
{
    lpool *p = to_pool(L, 1); /* a freed pool: submit() fails it as closed */
    const char *kind = check_lstring(L, 2, "kind", NULL);
    lua_Integer owner = check_integer(L, 3, "owner");
    int sync = lua_toboolean(L, 4);
    size_t len;
    const char *sql = check_lstring(L, 6, "sql", &len);
    int script = strcmp(kind, "script") == 0;
    pasyn_task *t = new_task(L, script ? PASYN_SCRIPT : PASYN_EXEC, sql, len, owner, 5);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    int err = bind_args(L, t, 7);
    if (err != PASYN_OK)
        return fail(L, t, err, lua_tostring(L, -1));
    return submit(L, p, t, sync);
}

/* result()'s stack: its arguments (task to known), then the values of the record's fields. */
enum result_slot {
    SLOT_TASK = 1,
    SLOT_POOL,
    SLOT_RECORD,
    SLOT_NAMES,
    SLOT_STREAM,
    SLOT_KNOWN,
    SLOT_ROW_KEYS, /* the names that key named rows, or nil for array rows */
    SLOT_COLUMNS   /* then rows, rowcount, lastrowid, stream */
};

static int take_result(lua_State *L, pasyn_task *t, lpool *p, lstream *prev);
static int fill_cursor(lua_State *L, pasyn_task *t, lpool *p);

/* The registry key of the Lua layer's test of an idle loop (set_idle_test). */
static char idle_test_key;

/* set_idle_test(fn): fn() -> true when the calling coroutine's loop has nothing else to run,
 * wait for or time; execute calls it (for busy 4) only when a statement cannot run at once.
 * Thread: the Lua state's. */
static int l_set_idle_test(lua_State *L)
{
    check_type(L, 1, LUA_TFUNCTION, "fn");
    lua_pushlightuserdata(L, &idle_test_key);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

/* execute(pool, owner, sync, busy, timeout, cursor, names, described, sql [, params_table |
 *          values...]) -> cursor, pause [, columns] | task | nil, class, code, extended, message
 *                           | false
 * One statement (kind "exec" of submit) in one call: it is submitted, and when the core ran
 * it at once on this thread (an inline read: pasyn_submit gave PASYN_DONE) its result goes
 * into `cursor` (fill_cursor says which fields) and the task is freed.
 * Arguments: as submit's, except that sync nil stands for `not isyieldable()` of the calling
 * coroutine (asked here, which spares the Lua layer a call); busy 0 (with sync: the caller
 * blocks, pasyn_task_set_caller_idle), or 1 when the caller has other work meanwhile or has
 * had its share of inline reads for now (pasyn_task_set_caller_busy: a reader runs it while
 * the machine has a core for one), or 2 when it must not run here (pasyn_task_set_no_inline:
 * what it reports must come with a completion, as a trace does), or 4 when the caller's loop
 * may have nothing else to run or time, which set_idle_test's function is asked only if the
 * statement cannot run at once (pasyn_task_set_caller_asks; idle: pasyn_task_set_caller_idle,
 * and it is submitted again with sync); cursor a table holding every
 * field fill_cursor sets in its array part (a Cursor of the Lua layer); names as result takes
 * it; described a table of SQL texts -> their columns records (or nil), where the one for sql,
 * if any, is result()'s `known` (looked up only for a text of at most cache_sql_max bytes).
 * Results: when the statement is done, the cursor; then true when reads run inline in a row
 * (and the code between them) have held this thread for the pool's inline_budget (the caller
 * should let the other coroutines run), else false; then, when the result's columns record
 * is a new one, that record (for the caller to keep and give as `known` later). Or the task
 * (a light userdata) to wait for and hand to result(), then true when the idle test said
 * the caller waits as a blocking call does (it was submitted with sync); or a failure in result()'s shape (at
 * submit, or the statement's own error when it ran here); or false alone, before anything
 * else is looked at, when sql is not a string (the caller raises the error that names its own
 * argument).
 * Errors raised: as submit's and result's. Thread: the Lua state's. */
static int l_execute(lua_State *L)
{
    if (lua_type(L, 9) != LUA_TSTRING) { /* the caller names its own argument */
        lua_pushboolean(L, 0);
        return 1;
    }
    lpool *p = to_pool(L, 1);
    lua_Integer owner = check_integer(L, 2, "owner");
    int sync = lua_isnil(L, 3) ? !compat_isyieldable(L) : lua_toboolean(L, 3);
    lua_Integer busy = lua_tointeger(L, 4);
    check_type(L, 6, LUA_TTABLE, "cursor");
    size_t len;
    const char *sql = lua_tolstring(L, 9, &len);
    pasyn_task *t = new_task(L, PASYN_EXEC, sql, len, owner, 5);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    if (busy == 2)
        pasyn_task_set_no_inline(t);
    else if (busy == 1)
        pasyn_task_set_caller_busy(t);
    else if (sync)
        pasyn_task_set_caller_idle(t);
    else if (busy == 4)
        pasyn_task_set_caller_asks(t);
    int err = bind_args(L, t, 10);
    if (err != PASYN_OK)
        return fail(L, t, err, lua_tostring(L, -1));
    int n = submit(L, p, t, sync);
    int idle = 0;
    if (n == 0) { /* it did not run at once: is the caller's loop idle? (set_idle_test) */
        lua_pushlightuserdata(L, &idle_test_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        if (lua_isfunction(L, -1)) {
            lua_call(L, 0, 1);
            idle = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
        if (idle)
            pasyn_task_set_caller_idle(t);
        sync = idle; /* (an asking task is not a blocking caller's: see above) */
        n = submit(L, p, t, sync);
    }
    if (n != 2) {
        p->inline_since = 0; /* its caller waits: the others run meanwhile */
        if (idle && n == 1) {
            lua_pushboolean(L, 1); /* the caller waits as a blocking call does */
            return 2;
        }
        return n; /* a task to wait for, or a failure */
    }
    /* Wall time, the Lua code between the reads included: what holds the loop; from the end
     * of the first read in a row (one clock read per statement). */
    uint64_t now = now_ns();
    if (!p->inline_since)
        p->inline_since = now;
    int pause = now - p->inline_since >= p->pause_ns;
    if (pause)
        p->inline_since = 0;
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        return fail_task(L, t); /* its own error */
    /* Done: result()'s arguments in its slots (the parameters are in the task already), moved
     * down in place; the arguments were checked above. SLOT_STREAM is left as it is: a
     * statement run here continues no stream. */
    lua_copy(L, 1, SLOT_POOL);
    lua_copy(L, 6, SLOT_RECORD);
    lua_copy(L, 7, SLOT_NAMES);
    /* known: described[sql], for a text short enough to be kept there (no longer one is
     * hashed for the lookup) */
    if (len <= PASYN_CACHE_SQL_MAX && lua_istable(L, 8)) {
        lua_pushvalue(L, 9);
        lua_rawget(L, 8);
    } else {
        lua_pushnil(L);
    }
    lua_copy(L, -1, SLOT_KNOWN); /* fill_cursor then sets the top there */
    int fresh = fill_cursor(L, t, p);
    lua_pushvalue(L, SLOT_RECORD);
    lua_pushboolean(L, pause);
    if (fresh)
        lua_pushvalue(L, SLOT_COLUMNS);
    return fresh ? 3 : 2;
}

/* submit_many(pool, owner, sync, timeout, sql, sets) -> task | nil, class, code, extended,
 * message
 * Arguments as for submit; sets: an array of parameter tables, one run of the statement each.
 * Results and errors as for submit ("programming" also for a set that is not a table: the
 * message names the set). Thread: the Lua state's. */
static int l_submit_many(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    lua_Integer owner = check_integer(L, 2, "owner");
    int sync = lua_toboolean(L, 3);
    size_t len;
    const char *sql = check_lstring(L, 5, "sql", &len);
    check_type(L, 6, LUA_TTABLE, "sets");
    pasyn_task *t = new_task(L, PASYN_MANY, sql, len, owner, 4);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    int n = (int)compat_rawlen(L, 6);
    lua_settop(L, 6); /* each set at 7, popped by bind_table */
    for (int k = 1; k <= n; k++) {
        int err = PASYN_OK;
        if (compat_rawgeti(L, 6, k) != LUA_TTABLE) {
            err = PASYN_EPROGRAMMING;
            lua_pushfstring(L, "parameter set %d is a %s, not a table", k, luaL_typename(L, -1));
        } else if ((err = bind_table(L, t, 7, 6)) == PASYN_EPROGRAMMING) {
            lua_pushfstring(L, "parameter set %d: %s", k, lua_tostring(L, -1));
        }
        if (err != PASYN_OK)
            return fail(L, t, err, lua_tostring(L, -1));
        if (pasyn_task_next_set(t) != 0)
            return fail(L, t, PASYN_ENOMEM, "out of memory");
        if (k == 1)
            pasyn_task_reserve_sets(t, (size_t)(n - 1)); /* the rest, as large as the first */
    }
    return submit(L, p, t, sync);
}

/* abandon(pool, owner): the owner is gone; its open transaction, if any, is rolled back once
 * its tasks already queued have run. Nobody waits for it; safe from a finalizer. */
static int l_abandon(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    lua_Integer owner = check_integer(L, 2, "owner");
    if (pool_state(p) != PASYN_POOL_OPEN)
        return 0;
    pasyn_task *t = pasyn_task_new(PASYN_ABANDON, NULL, 0);
    if (t) {
        pasyn_task_set_owner(t, (uint64_t)owner);
        if (pasyn_submit(p->pool, t, 0) != 0)
            pasyn_task_free(t);
    }
    return 0;
}

/* interrupt(pool) -> true, or false when the pool is closing or closed */
static int l_interrupt(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    lua_pushboolean(L, p->pool && pasyn_interrupt(p->pool) == 0);
    return 1;
}

static lstream *check_stream(lua_State *L, int i)
{
    return check_udata(L, i, UPVALUE_STREAM_MT, STREAM_MT, "stream", "a stream");
}

/* fetch(stream, owner, sync, timeout) -> task | nil, class, code, extended, message
 * The next chunk of a streamed result (a stream from a result record). Arguments as for
 * submit. Results as for submit: "programming" also once the stream has ended. Thread: the Lua
 * state's. */
static int l_fetch(lua_State *L)
{
    lstream *s = check_stream(L, 1);
    if (!s->id)
        return fail(L, NULL, PASYN_EPROGRAMMING, "the result has ended");
    pasyn_task *t = new_task(L, PASYN_FETCH, NULL, 0, check_integer(L, 2, "owner"), 4);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    pasyn_task_set_stream(t, s->id);
    return submit(L, s->owner, t, lua_toboolean(L, 3));
}

/* Ends a stream early; nobody waits for the answer. */
static void stream_release(lstream *s)
{
    if (s->id && pool_state(s->owner) == PASYN_POOL_OPEN) {
        pasyn_task *t = pasyn_task_new(PASYN_RELEASE, NULL, 0);
        if (t) {
            pasyn_task_set_stream(t, s->id);
            if (pasyn_submit(s->owner->pool, t, 0) != 0)
                pasyn_task_free(t);
        }
    }
    s->id = 0;
}

static int l_release(lua_State *L)
{
    stream_release(check_stream(L, 1));
    return 0;
}

static int serve_calls(lua_State *L);

/* wait(task): blocks until a task submitted with sync has completed, serving the calls of SQL
 * functions defined in Lua meanwhile (the task's statement may be the one calling them).
 * Thread: the Lua state's. */
static int l_wait(lua_State *L)
{
    pasyn_task *t = check_task(L, 1);
    while (!pasyn_task_wait_calls(t))
        serve_calls(L);
    return 0;
}

static int l_free_task(lua_State *L)
{
    pasyn_task_free(check_completed(L, 1));
    return 0;
}

/* ---- results --------------------------------------------------------------------------- */

#ifdef COMPAT_DOUBLES
/* An INTEGER beyond +-2^53 where numbers are doubles, as the pool's `integers` says: a double
 * (may round), its exact decimal string, or a boxed int64_t (LuaJIT): a fresh one made by
 * calling the int64_t ctype the Lua layer registered, its 8-byte payload then written where
 * lua_topointer says (the box is nobody else's yet). */
static void push_big_int(lua_State *L, int64_t i, int integers)
{
    if (integers == INTEGERS_STRING) {
        char digits[24];
        snprintf(digits, sizeof digits, "%" PRId64, i);
        lua_pushstring(L, digits);
        return;
    }
    if (integers == INTEGERS_INT64) {
        lua_getfield(L, LUA_REGISTRYINDEX, INT64_NEW_KEY);
        if (!lua_isnil(L, -1)) {
            lua_call(L, 0, 1); /* int64_t(): 0LL */
            void *payload = (void *)(uintptr_t)lua_topointer(L, -1);
            if (payload) {
                memcpy(payload, &i, sizeof i);
                return;
            }
        }
        lua_pop(L, 1);
    }
    lua_pushnumber(L, (lua_Number)i);
}

/* Integers within +-2^53 (the exact doubles) are plain numbers whatever the option says:
 * one unsigned comparison on the common path. */
#define push_int(L, i, integers)                                                                   \
    ((uint64_t)(i) + (UINT64_C(1) << 53) <= (UINT64_C(1) << 54)                                    \
         ? lua_pushnumber(L, (lua_Number)(i))                                                      \
         : push_big_int(L, (i), (integers)))
#else
/* Lua 5.3+: every INTEGER is an exact Lua integer; the `integers` option changes nothing. */
#define push_int(L, i, integers) ((void)(integers), compat_pushint64(L, (i)))
#endif

static void push_value(lua_State *L, const pasyn_value *v, int integers)
{
    switch (v->type) {
    case PASYN_INT:
        push_int(L, v->i, integers);
        break;
    case PASYN_FLOAT:
        lua_pushnumber(L, (lua_Number)v->d);
        break;
    case PASYN_TEXT:
    case PASYN_BLOB:
        lua_pushlstring(L, v->p, v->n);
        break;
    default:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

/* Pushes one row of ncols values read from *at (moved past them): an array {v1, ..., vn, n =
 * ncols} when names_idx is 0, else a table keyed by the names in the table at names_idx.
 * integers: the pool's `integers` option. */
static void push_row(lua_State *L, const unsigned char **at, int ncols, int names_idx, int integers)
{
    pasyn_value v;
    if (names_idx) {
        lua_createtable(L, 0, ncols);
        for (int c = 1; c <= ncols; c++) {
            lua_rawgeti(L, names_idx, c);
            *at = pasyn_row_value(*at, &v);
            push_value(L, &v, integers);
            lua_rawset(L, -3);
        }
    } else {
        lua_createtable(L, ncols, 1);
        for (int c = 1; c <= ncols; c++) {
            *at = pasyn_row_value(*at, &v);
            push_value(L, &v, integers);
            lua_rawseti(L, -2, c);
        }
        lua_pushinteger(L, ncols);
        lua_setfield(L, -2, "n");
    }
}

/* Pushes the rows of t. An array of them, or false for none; or, with `single` set, a result
 * of at most one row (the caller knows it has ended) as that row itself, or false for none.
 * names_idx and integers as push_row takes them. */
static void push_rows(lua_State *L, const pasyn_task *t, int names_idx, int integers, int single)
{
    size_t nrows;
    const unsigned char *at = pasyn_task_rows(t, &nrows);
    int ncols = pasyn_task_columns(t);
    if (nrows == 0) { /* most writes: no table to make */
        lua_pushboolean(L, 0);
        return;
    }
    if (single && nrows == 1) {
        push_row(L, &at, ncols, names_idx, integers);
        return;
    }
    lua_createtable(L, nrows > 0x7fffffff ? 0 : (int)nrows, 0);
    for (size_t r = 1; r <= nrows; r++) {
        push_row(L, &at, ncols, names_idx, integers);
        lua_rawseti(L, -2, (int)r);
    }
}

/* 1 when the tables at names_idx and types_idx hold exactly the task's column names and
 * declared types. */
static int same_columns(lua_State *L, const pasyn_task *t, int names_idx, int types_idx)
{
    int ncols = pasyn_task_columns(t);
    if (!lua_istable(L, names_idx) || !lua_istable(L, types_idx) ||
        (int)compat_rawlen(L, names_idx) != ncols)
        return 0;
    int same = 1;
    for (int c = 0; c < ncols && same; c++) {
        const char *type = pasyn_task_column_decltype(t, c);
        lua_rawgeti(L, names_idx, c + 1);
        lua_rawgeti(L, types_idx, c + 1);
        const char *known_name = lua_tostring(L, -2), *known_type = lua_tostring(L, -1);
        same = known_name && strcmp(known_name, pasyn_task_column_name(t, c)) == 0 &&
               (type ? known_type && strcmp(known_type, type) == 0 : known_type == NULL);
        lua_pop(L, 2);
    }
    return same;
}

#define KNOWN_IDS_MAX 8

/* Makes id the first of the ids of the columns record `known` (SLOT_KNOWN), the one looked
 * at first, and puts the one that was first at position `at` (2 to KNOWN_IDS_MAX). */
static void known_first(lua_State *L, lua_Number id, int at)
{
    lua_rawgeti(L, SLOT_KNOWN, 1);
    lua_rawseti(L, SLOT_KNOWN, at);
    lua_pushnumber(L, id);
    lua_rawseti(L, SLOT_KNOWN, 1);
}

/* 1 when the columns record `known` describes the task's columns: its array part holds the
 * task's columns id, or its names and types are the task's (then the id joins the array: each
 * connection of a pool describes a statement under an id of its own). The ids are the array
 * part rather than a field of their own: one table lookup less on every result. The id found
 * or added becomes the first, so that a statement that keeps running on one connection (the
 * caller's inline one, say) finds its id at once. */
static int known_columns(lua_State *L, const pasyn_task *t, lua_Number id)
{
    if (!lua_istable(L, SLOT_KNOWN))
        return 0;
    lua_rawgeti(L, SLOT_KNOWN, 1); /* the common case */
    int same = lua_tonumber(L, -1) == id;
    lua_pop(L, 1);
    if (same)
        return 1;
    int n = (int)compat_rawlen(L, SLOT_KNOWN);
    for (int i = 2; i <= n; i++) {
        lua_rawgeti(L, SLOT_KNOWN, i);
        same = lua_tonumber(L, -1) == id;
        lua_pop(L, 1);
        if (same) {
            known_first(L, id, i);
            return 1;
        }
    }
    lua_getfield(L, SLOT_KNOWN, "names");
    lua_getfield(L, SLOT_KNOWN, "decltypes");
    same = same_columns(L, t, lua_gettop(L) - 1, lua_gettop(L));
    lua_pop(L, 2);
    if (same) /* at the end; or, all places taken, instead of one of them but the first */
        known_first(L, id,
                    n < KNOWN_IDS_MAX ? n + 1 : (int)((uint64_t)id % (KNOWN_IDS_MAX - 1)) + 2);
    return same;
}

/* Pushes the names that key named rows (SLOT_ROW_KEYS: nil for array rows), then the
 * record's `columns`: false for a task without columns; `known` when it describes them; else
 * a new columns record {the task's columns id, names = {...}, decltypes = {...}}, with room
 * for the two fields the Lua layer adds (sql, description). Returns 1 when it made a new one. */
static int push_columns(lua_State *L, const pasyn_task *t)
{
    uint64_t id = pasyn_task_columns_id(t);
    int named = lua_toboolean(L, SLOT_NAMES);
    if (lua_istable(L, SLOT_NAMES))
        lua_pushvalue(L, SLOT_NAMES); /* a fetched chunk: the first chunk's names */
    else
        lua_pushnil(L);
    if (id == 0) {
        lua_pushboolean(L, 0);
        return 0;
    }
    if (known_columns(L, t, (lua_Number)id)) {
        if (named && lua_isnil(L, SLOT_ROW_KEYS)) {
            lua_getfield(L, SLOT_KNOWN, "names");
            lua_replace(L, SLOT_ROW_KEYS);
        }
        lua_pushvalue(L, SLOT_KNOWN);
        return 0;
    }
    int ncols = pasyn_task_columns(t);
    lua_createtable(L, 1, 4);
    lua_pushnumber(L, (lua_Number)id);
    lua_rawseti(L, SLOT_COLUMNS, 1);
    lua_createtable(L, ncols, 0);
    lua_createtable(L, ncols, 0);
    for (int c = 0; c < ncols; c++) {
        const char *type = pasyn_task_column_decltype(t, c);
        lua_pushstring(L, pasyn_task_column_name(t, c));
        lua_rawseti(L, -3, c + 1);
        if (type) {
            lua_pushstring(L, type);
            lua_rawseti(L, -2, c + 1);
        }
    }
    lua_setfield(L, SLOT_COLUMNS, "decltypes");
    if (named && lua_isnil(L, SLOT_ROW_KEYS)) {
        lua_pushvalue(L, -1);
        lua_replace(L, SLOT_ROW_KEYS);
    }
    lua_setfield(L, SLOT_COLUMNS, "names");
    return 1;
}

/* Pushes the stream the result goes on in, or false when it has ended: the one the fetch
 * continued (prev), or a new one that keeps the pool alive. */
static void push_stream(lua_State *L, const pasyn_task *t, lpool *p, lstream *prev)
{
    uint64_t id;
    if (!pasyn_task_stream(t, &id)) {
        lua_pushboolean(L, 0);
    } else if (prev) {
        prev->id = id;
        lua_pushvalue(L, SLOT_STREAM);
    } else {
        lstream *s = lua_newuserdata(L, sizeof *s);
        s->owner = p;
        s->id = id;
        luaL_getmetatable(L, STREAM_MT);
        lua_setmetatable(L, -2);
        lua_pushvalue(L, SLOT_POOL);
        compat_anchor(L, lua_gettop(L) - 1);
    }
}

/* result(task, pool, record [, names [, stream [, known]]]) -> record | nil, class, code,
 * extended, message
 * Takes a completed task (from submit, submit_many, fetch or open, once wait() returned or the
 * hub gave it back) and frees it, whatever the outcome.
 * Arguments:
 *   record  a table of the caller's that every call fills again: reuse one, so that no table
 *           is made for the answer. Give it every field below from the start (false will
 *           do): setting a field a table has allocates nothing.
 *   names   nil or false for array rows ({v1, ..., vn, n = n}); true for named rows keyed by
 *           the column names; a table of names for named rows of a fetched chunk.
 *   stream  the stream a fetch continued.
 *   known   the columns record an earlier result of the same SQL gave, or nil.
 * Results: on success the record, with every field set:
 *   rows       an array of rows, or false when the task gave none
 *   rowcount   rows changed by an INSERT, UPDATE or DELETE (summed over submit_many); else -1
 *   lastrowid  the rowid the statement itself inserted, or false
 *   stream     the stream to fetch the rest from, or false when the result has ended
 *   columns    false for a statement without columns; else a columns record {id, ...,
 *              names = array of column names, decltypes = array of declared types (a hole
 *              where a column has none)}, its array part the columns ids (the core's) it
 *              describes: `known` itself when it describes this result (nothing is made
 *              again; a new id joins the array), else a new one the caller may add fields to
 *              and pass as `known` later. Column tables are shared: never modify them.
 *   owner      the id of the owner whose transaction holds the pool's writer now (as
 *              txn_owner gives it, 0 for none; read after the task completed)
 * On failure: nil, class ("sqlite", "programming", "closed", "nomem"), SQLite's primary and
 * extended codes (for "sqlite"; else as the core set them), the message.
 * Errors raised: for arguments of the wrong type; Lua's own when it runs out of memory.
 * Thread: the Lua state's. */
static int l_result(lua_State *L)
{
    pasyn_task *t = check_completed(L, SLOT_TASK);
    lpool *p = to_pool(L, SLOT_POOL);
    check_type(L, SLOT_RECORD, LUA_TTABLE, "record");
    lstream *prev = lua_isnoneornil(L, SLOT_STREAM) ? NULL : check_stream(L, SLOT_STREAM);
    return take_result(L, t, p, prev);
}

/* result()'s work once its arguments are checked: t from SLOT_TASK, p from SLOT_POOL, prev
 * from SLOT_STREAM (NULL for none). */
static int take_result(lua_State *L, pasyn_task *t, lpool *p, lstream *prev)
{
    if (prev)
        prev->id = 0; /* ended unless the task says it goes on */
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        return fail_task(L, t);
    lua_settop(L, SLOT_KNOWN);
    push_columns(L, t); /* first: named rows use the names */
    push_rows(L, t, lua_isnil(L, SLOT_ROW_KEYS) ? 0 : SLOT_ROW_KEYS, p->integers, 0);
    lua_pushinteger(L, (lua_Integer)pasyn_task_rowcount(t));
    int64_t rowid;
    if (pasyn_task_lastrowid(t, &rowid))
        push_int(L, rowid, p->integers);
    else
        lua_pushboolean(L, 0);
    push_stream(L, t, p, prev);
    pasyn_task_free(t);
    lua_pushinteger(L, p->pool ? (lua_Integer)pasyn_txn_owner(p->pool) : 0);
    /* Every value first, then the fields (each pops the top value): setting them allocates
     * nothing, so no finalizer runs in between, and a statement one runs (filling the record
     * too) cannot leave it half ours and half its own. */
    lua_setfield(L, SLOT_RECORD, "owner");
    lua_setfield(L, SLOT_RECORD, "stream");
    lua_setfield(L, SLOT_RECORD, "lastrowid");
    lua_setfield(L, SLOT_RECORD, "rowcount");
    lua_setfield(L, SLOT_RECORD, "rows");
    lua_setfield(L, SLOT_RECORD, "columns");
    lua_settop(L, SLOT_RECORD);
    return 1;
}

/* Where a cursor of the Lua layer keeps its fields: its array part (pasyn_sqlite.lua, CFG,
 * ROWCOUNT, ...; keep the two in step). */
enum cursor_field {
    CURSOR_CFG = 1,
    CURSOR_ROWCOUNT,
    CURSOR_STMT,
    CURSOR_ROWS,
    CURSOR_POS,
    CURSOR_STREAM,
    CURSOR_BUSY,
    CURSOR_LASTROWID
};

/* execute()'s work once the statement ran on this thread and succeeded: the task's result
 * goes straight into the cursor at SLOT_RECORD, in the fields the Lua layer keeps it in
 * (pasyn_sqlite.lua, "A cursor's rows"), and the task is freed:
 *   STMT         result()'s `columns`
 *   ROWS, POS    a result of at most one row that has ended: that row itself (false for
 *                none) and 0; else the array of rows (perhaps empty) and 1
 *   STREAM       the stream the rest comes from, or false
 *   ROWCOUNT     result()'s `rowcount`
 *   LASTROWID    set only when the statement inserted a row itself
 * Every value is made first, then the fields are set: the cursor's array part holds each of
 * them already, so setting them allocates nothing and no finalizer runs in between (as in
 * take_result). Leaves the stack at SLOT_COLUMNS, the columns there; returns 1 when the
 * columns record is a new one (push_columns), else 0. */
static int fill_cursor(lua_State *L, pasyn_task *t, lpool *p)
{
    lua_settop(L, SLOT_KNOWN);
    int fresh = push_columns(L, t); /* first: named rows use the names */
    uint64_t stream;
    size_t nrows;
    pasyn_task_rows(t, &nrows);
    int single = !pasyn_task_stream(t, &stream) && nrows <= 1;
    push_rows(L, t, lua_isnil(L, SLOT_ROW_KEYS) ? 0 : SLOT_ROW_KEYS, p->integers, single);
    if (!single && !lua_istable(L, -1)) { /* a stream, its first chunk empty */
        lua_pop(L, 1);
        lua_createtable(L, 0, 0);
    }
    lua_pushinteger(L, single ? 0 : 1);
    lua_pushinteger(L, (lua_Integer)pasyn_task_rowcount(t));
    int64_t rowid;
    int inserted = pasyn_task_lastrowid(t, &rowid);
    if (inserted)
        push_int(L, rowid, p->integers);
    push_stream(L, t, p, NULL);
    pasyn_task_free(t);
    lua_rawseti(L, SLOT_RECORD, CURSOR_STREAM);
    if (inserted)
        lua_rawseti(L, SLOT_RECORD, CURSOR_LASTROWID);
    lua_rawseti(L, SLOT_RECORD, CURSOR_ROWCOUNT);
    lua_rawseti(L, SLOT_RECORD, CURSOR_POS);
    lua_rawseti(L, SLOT_RECORD, CURSOR_ROWS);
    lua_pushvalue(L, SLOT_COLUMNS);
    lua_rawseti(L, SLOT_RECORD, CURSOR_STMT);
    return fresh;
}

/* result_cursor(task, pool, cursor, names, described, sql) -> cursor, owner [, columns] | nil,
 * class, code, extended, message
 * result() for a statement of a cursor that was waited for (execute's task): its result goes
 * straight into `cursor`, in the fields fill_cursor sets (as execute puts a result it ran at
 * once), instead of into a record the caller then copies; the task is freed, whatever the
 * outcome.
 * Arguments: task a completed task of execute or submit ("exec" or "script"), not of a fetch;
 * pool and names as result takes them; cursor a table holding every field fill_cursor sets in
 * its array part (a Cursor of the Lua layer); described and sql as execute takes them: the
 * columns record known for sql, result()'s `known`, is looked up only for a result that has
 * columns (a write's has none).
 * Results: on success the cursor; then result()'s `owner`; then, when the result's columns
 * record is a new one, that record (as execute gives it). On failure result()'s.
 * Errors raised: for arguments of the wrong type; Lua's own when it runs out of memory.
 * Thread: the Lua state's. */
static int l_result_cursor(lua_State *L)
{
    pasyn_task *t = check_completed(L, SLOT_TASK);
    lpool *p = to_pool(L, SLOT_POOL);
    check_type(L, SLOT_RECORD, LUA_TTABLE, "cursor");
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        return fail_task(L, t);
    /* result()'s slots: no stream, and known */
    lua_settop(L, 6);
    size_t len;
    if (pasyn_task_columns_id(t) != 0 && lua_istable(L, 5) && lua_type(L, 6) == LUA_TSTRING &&
        (lua_tolstring(L, 6, &len), len <= PASYN_CACHE_SQL_MAX)) {
        lua_pushvalue(L, 6);
        lua_rawget(L, 5);
    } else {
        lua_pushnil(L);
    }
    lua_replace(L, SLOT_KNOWN);
    lua_pushnil(L);
    lua_replace(L, SLOT_STREAM);
    lua_settop(L, SLOT_KNOWN);
    int fresh = fill_cursor(L, t, p);
    lua_pushvalue(L, SLOT_RECORD);
    lua_pushinteger(L, p->pool ? (lua_Integer)pasyn_txn_owner(p->pool) : 0);
    if (fresh)
        lua_pushvalue(L, SLOT_COLUMNS);
    return fresh ? 3 : 2;
}

/* ---- hooks: trace and on_change ------------------------------------------------------- */

/* set_trace(pool, on): turns the pool's trace on or off (pasyn_set_trace). Thread: the Lua
 * state's. */
static int l_set_trace(lua_State *L)
{
    lpool *p = check_pool(L, 1);
    pasyn_set_trace(p->pool, lua_toboolean(L, 2));
    return 0;
}

/* set_on_change(pool, max_events): on_change on with that bound per transaction, or off (0)
 * (pasyn_set_on_change). Thread: the Lua state's. */
static int l_set_on_change(lua_State *L)
{
    lpool *p = check_pool(L, 1);
    lua_Integer max = check_integer(L, 2, "max_events");
    pasyn_set_on_change(p->pool, max > 0 ? (size_t)max : 0);
    return 0;
}

/* Calls the function at `fn` with the `nargs` values on top of the stack, protected; keeps the
 * first error (at `first`, nil until one) and drops later ones. */
static void call_hook(lua_State *L, int fn, int nargs, int first)
{
    lua_pushvalue(L, fn);
    lua_insert(L, -nargs - 1);
    if (lua_pcall(L, nargs, 0, 0) != 0) {
        if (lua_isnil(L, first))
            lua_replace(L, first);
        else
            lua_pop(L, 1);
    }
}

/* deliver(task, on_change, trace [, pool]) -> nil | the first error a hook raised
 * Calls the hooks with what a completed task (not yet given to result()) reports: trace(sql,
 * seconds) for each statement it ran, in the order they finished, then on_change(op, db,
 * table, rowid) for each row change it committed, in the order they were made (op "insert",
 * "update" or "delete"; rowid as the pool's integers option gives INTEGERs, as rows do), then,
 * when the transaction changed more rows than the bound, on_change("overflow", db, nil, count)
 * once with how many were not reported (db nil). Either function may be nil (not called). A
 * hook's error does not stop the others: the first is returned. The task stays the caller's.
 * Thread: the Lua state's. */
static int l_deliver(lua_State *L)
{
    pasyn_task *t = check_completed(L, 1);
    int integers = lua_isnoneornil(L, 4) ? INTEGERS_NUMBER : to_pool(L, 4)->integers;
    lua_settop(L, 3);
    lua_pushnil(L); /* 4: the first error */
    if (!lua_isnil(L, 3)) {
        const unsigned char *at = NULL;
        for (size_t i = 0, n = pasyn_task_traces(t); i < n; i++) {
            const char *sql;
            size_t len;
            uint64_t ns;
            at = pasyn_task_trace(t, at, &sql, &len, &ns);
            lua_pushlstring(L, sql, len);
            lua_pushnumber(L, (lua_Number)ns / 1e9);
            call_hook(L, 3, 2, 4);
        }
    }
    uint64_t dropped;
    size_t n = pasyn_task_changes(t, &dropped);
    if (!lua_isnil(L, 2) && (n || dropped)) {
        static const char *const ops[] = {"?", "insert", "update", "delete"};
        for (size_t i = 0; i < n; i++) {
            pasyn_change ch;
            pasyn_task_change(t, i, &ch);
            lua_pushstring(L, ops[ch.op >= 1 && ch.op <= 3 ? ch.op : 0]);
            lua_pushstring(L, ch.db);
            lua_pushstring(L, ch.table);
            pasyn_value rowid = {PASYN_INT, ch.rowid, 0, NULL, 0};
            push_value(L, &rowid, integers);
            call_hook(L, 2, 4, 4);
        }
        if (dropped) {
            lua_pushliteral(L, "overflow");
            lua_pushnil(L);
            lua_pushnil(L);
            compat_pushint64(L, (int64_t)dropped);
            call_hook(L, 2, 4, 4);
        }
    }
    return 1;
}

/* ---- copies: serialize and backup ------------------------------------------------------- */

/* serialize(pool, owner, sync, name) -> task | nil, class, code, extended, message
 * Submits a PASYN_SERIALIZE task for the database `name` ("main", "temp", an attached one);
 * wait for it, then take its bytes with bytes(). Thread: the Lua state's. */
static int l_serialize(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    lua_Integer owner = check_integer(L, 2, "owner");
    size_t len;
    const char *name = check_lstring(L, 4, "name", &len);
    pasyn_task *t = pasyn_task_new(PASYN_SERIALIZE, name, len);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    pasyn_task_set_owner(t, (uint64_t)owner);
    return submit(L, p, t, lua_toboolean(L, 3));
}

/* bytes(task) -> string | nil, class, code, extended, message
 * The bytes of a completed serialize task, or its failure; frees the task. */
static int l_bytes(lua_State *L)
{
    pasyn_task *t = check_completed(L, 1);
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        return fail_task(L, t);
    size_t len;
    const unsigned char *p = pasyn_task_bytes(t, &len);
    lua_pushlstring(L, (const char *)p, len);
    pasyn_task_free(t);
    return 1;
}

/* done(task) -> true | nil, class, code, extended, message
 * Whether a completed task without rows (a backup step) succeeded; frees it. */
static int l_done(lua_State *L)
{
    pasyn_task *t = check_completed(L, 1);
    if (pasyn_task_error(t, NULL, NULL, NULL) != PASYN_OK)
        return fail_task(L, t);
    pasyn_task_free(t);
    lua_pushboolean(L, 1);
    return 1;
}

/* A backup as Lua holds it: its pool is anchored to it (the user value). */
typedef struct lbackup {
    lpool *owner;
    pasyn_backup *b; /* NULL once freed */
} lbackup;

static lbackup *check_backup(lua_State *L, int i)
{
    return luaL_checkudata(L, i, BACKUP_MT);
}

/* backup_new(pool, dest, name, pages) -> backup | nil, "nomem", 0, 0, message
 * A backup of the pool's database `name` into the file `dest`, `pages` per step (<= 0: all).
 * Steps with backup_step; ended by its last step, or at collection (pasyn_backup_abandon).
 * Thread: the Lua state's. */
static int l_backup_new(lua_State *L)
{
    lpool *p = check_pool(L, 1);
    const char *dest = check_lstring(L, 2, "dest", NULL);
    const char *name = check_lstring(L, 3, "name", NULL);
    lua_Integer pages = check_integer(L, 4, "pages");
    lbackup *lb = lua_newuserdata(L, sizeof *lb);
    lb->owner = p;
    lb->b = NULL;
    luaL_getmetatable(L, BACKUP_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 1);
    compat_anchor(L, lua_gettop(L) - 1);
    lb->b = pasyn_backup_new(dest, name, pages > 0 && pages < INT32_MAX ? (int)pages : -1);
    if (!lb->b)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    return 1;
}

/* backup_step(backup, owner, sync) -> task | nil, class, code, extended, message
 * Submits the backup's next step; wait for it, then done() and backup_progress(). */
static int l_backup_step(lua_State *L)
{
    lbackup *lb = check_backup(L, 1);
    if (!lb->b)
        return fail(L, NULL, PASYN_EPROGRAMMING, "the backup has ended");
    pasyn_task *t = pasyn_task_new(PASYN_BACKUP, NULL, 0);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    pasyn_task_set_owner(t, (uint64_t)check_integer(L, 2, "owner"));
    pasyn_task_set_backup(t, lb->b);
    return submit(L, lb->owner, t, lua_toboolean(L, 3));
}

/* backup_progress(backup) -> remaining, total, ended: pages left to copy and the source's
 * page count as of the last step, and whether the backup has ended. */
static int l_backup_progress(lua_State *L)
{
    lbackup *lb = check_backup(L, 1);
    int remaining = 0, total = 0, ended = 1;
    if (lb->b)
        ended = pasyn_backup_progress(lb->b, &remaining, &total);
    lua_pushinteger(L, remaining);
    lua_pushinteger(L, total);
    lua_pushboolean(L, ended);
    return 3;
}

/* The backup's __gc and end: its pool ends it (pasyn_backup_abandon: after any step of it
 * still queued, from a coroutine that was abandoned while it waited), never waiting here; a
 * freed pool left nothing that runs it. */
static int l_backup_gc(lua_State *L)
{
    lbackup *lb = check_backup(L, 1);
    pasyn_backup *b = lb->b;
    lb->b = NULL;
    if (b && lb->owner->pool)
        pasyn_backup_abandon(lb->owner->pool, b);
    else if (b)
        pasyn_backup_free(b);
    return 0;
}

/* pool_path(pool) -> the file its writer opens (pasyn_pool_path). */
static int l_pool_path(lua_State *L)
{
    lpool *p = check_pool(L, 1);
    lua_pushstring(L, pasyn_pool_path(p->pool));
    return 1;
}

static int l_stream_gc(lua_State *L)
{
    stream_release(check_stream(L, 1));
    return 0;
}

/* ---- pools ----------------------------------------------------------------------------- */

static int opt_int(lua_State *L, int i, const char *name, int dflt)
{
    lua_getfield(L, i, name);
    int v = lua_isnil(L, -1) ? dflt : (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static double opt_seconds(lua_State *L, int i, const char *name, double dflt)
{
    lua_getfield(L, i, name);
    double v = lua_isnil(L, -1) ? dflt : (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int i, const char *name, int dflt)
{
    lua_getfield(L, i, name);
    int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, int i, const char *name, const char *dflt)
{
    lua_getfield(L, i, name);
    const char *v = lua_isnil(L, -1) ? dflt : lua_tostring(L, -1);
    lua_pop(L, 1); /* still anchored by the options table */
    return v;
}

/* The strings of the array opts[field] (a table the Lua layer checked; none when absent) as a
 * NULL-terminated C array, its count in *n. Pushes the table and the array (a userdata): both
 * stay on the stack, which anchors the strings while the caller uses them. Thread: the Lua
 * state's. */
static const char **string_array(lua_State *L, int opts, const char *field, int *n)
{
    lua_getfield(L, opts, field);
    *n = lua_istable(L, -1) ? (int)compat_rawlen(L, -1) : 0;
    const char **a = lua_newuserdata(L, (size_t)(*n + 1) * sizeof(char *));
    for (int k = 0; k < *n; k++) {
        lua_rawgeti(L, -2, k + 1);
        a[k] = lua_tostring(L, -1); /* anchored by the table */
        lua_pop(L, 1);
    }
    a[*n] = NULL;
    return a;
}
/* open(database, options, sync) -> pool, task | nil, class, code, extended, message
 * Arguments: database a path, ":memory:" or a "file:" URI; options the checked options of
 * connect (options.pragmas an array {name, value, name, value, ...} of strings); sync true to
 * complete the open task through wait() instead of the hub.
 * Results: the pool (a full userdata) and its open task, whose result() says whether the open
 * succeeded (free the pool if not); or the failure in result()'s shape, class "nomem" (no
 * memory for the task, or the pool's threads would not start).
 * Errors raised: for arguments of the wrong type, and when the Lua state's hub cannot be made
 * (out of descriptors). Thread: the Lua state's. */
static int l_open(lua_State *L)
{
    const char *database = check_lstring(L, 1, "database", NULL);
    check_type(L, 2, LUA_TTABLE, "options");
    int sync = lua_toboolean(L, 3);
    pasyn_options o;
    pasyn_options_init(&o);
    o.readers = opt_int(L, 2, "readers", o.readers);
    o.busy_timeout_ms = opt_int(L, 2, "busy_timeout", o.busy_timeout_ms);
    o.journal_mode = opt_string(L, 2, "journal_mode", o.journal_mode);
    o.synchronous = opt_string(L, 2, "synchronous", o.synchronous);
    o.foreign_keys = opt_bool(L, 2, "foreign_keys", o.foreign_keys);
    o.readonly = opt_bool(L, 2, "readonly", o.readonly);
    o.defensive = opt_bool(L, 2, "defensive", o.defensive);
    o.statement_cache = opt_int(L, 2, "statement_cache", o.statement_cache);
    o.stealing = opt_bool(L, 2, "stealing", o.stealing);
    o.group_commit = opt_bool(L, 2, "group_commit", o.group_commit);
    o.inline_reads = opt_bool(L, 2, "inline_reads", 1);
    o.inline_budget = opt_seconds(L, 2, "inline_budget", o.inline_budget);
    int npragmas, nx;
    o.pragmas = string_array(L, 2, "pragmas", &npragmas);
    /* extensions: the Lua layer's checked array {path, entry_point, ...} ("" for the default) */
    const char **extensions = string_array(L, 2, "extensions", &nx);
    o.extensions = nx ? extensions : NULL;
    lua_getfield(L, 2, "image"); /* sqlite.deserialize's bytes (anchored by the options) */
    if (lua_type(L, -1) == LUA_TSTRING)
        o.image = lua_tolstring(L, -1, &o.image_len);
    lua_pop(L, 1);

    lpool *p = lua_newuserdata(L, sizeof *p);
    p->pool = NULL;
    p->lhub = get_lhub(L);
    p->inline_since = 0;
    p->pause_ns = (uint64_t)(o.inline_budget * 1e9);
    const char *integers = opt_string(L, 2, "integers", NULL); /* checked by the Lua layer */
    p->integers = !integers                         ? INTEGERS_NUMBER
                  : strcmp(integers, "string") == 0 ? INTEGERS_STRING
                  : strcmp(integers, "int64") == 0  ? INTEGERS_INT64
                                                    : INTEGERS_NUMBER;
    luaL_getmetatable(L, POOL_MT);
    lua_setmetatable(L, -2);
    pasyn_hub *hub = get_hub(L);
    pasyn_task *t = pasyn_task_new(PASYN_OPEN, NULL, 0);
    if (!t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    p->pool = pasyn_open(database, &o, hub, t, sync);
    if (!p->pool)
        return fail(L, t, PASYN_ENOMEM, "cannot start the pool: out of memory or threads");
    lua_pushlightuserdata(L, t);
    return 2;
}

/* close(pool, sync) -> task | nil, class, code, extended, message
 * Stops the pool's intake and closes it once its work is done (pasyn_close). sync as for open.
 * Results: the close task to wait for and free (free_task), then free the pool; or the
 * failure in result()'s shape: class "closing" or "closed" when a close was under way already
 * or the open had failed (nothing to wait for), "nomem". Thread: the Lua state's. */
static int l_close(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    if (get_lhub(L)->serving)
        return fail(L, NULL, PASYN_EPROGRAMMING, in_function);
    pasyn_task *t = p->pool ? pasyn_task_new(PASYN_CLOSE, NULL, 0) : NULL;
    if (p->pool && !t)
        return fail(L, NULL, PASYN_ENOMEM, "out of memory");
    if (!p->pool || pasyn_close(p->pool, t, lua_toboolean(L, 2)) != 0)
        return fail_closed(L, p, t);
    lua_pushlightuserdata(L, t);
    return 1;
}

/* free(pool): joins the threads and frees it; after a failed open or once state() says
 * "closed". Freeing again does nothing. */
static int l_free(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    if (p->pool) {
        pasyn_pool_free(p->pool);
        p->pool = NULL;
        forget_functions(L, p);
    }
    return 0;
}

/* A pool nobody closed: finish its work, close it, free it. A close under way (or a failed
 * open) leaves pasyn_close nothing to do. */
static int l_pool_gc(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    /* Calls of its Lua functions can no longer be served here (the Lua state may be closing):
     * they fail, and the statements calling them with them. */
    if (p->pool)
        pasyn_pool_refuse_calls(p->pool);
    pasyn_task *t = p->pool ? pasyn_task_new(PASYN_CLOSE, NULL, 0) : NULL;
    if (t && pasyn_close(p->pool, t, 1) == 0)
        pasyn_task_wait(t);
    pasyn_task_free(t);
    return l_free(L);
}

/* txn_owner(pool) -> the owner id of the writer's open transaction, 0 when none (or freed) */
static int l_txn_owner(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    lua_pushinteger(L, p->pool ? (lua_Integer)pasyn_txn_owner(p->pool) : 0);
    return 1;
}

/* state(pool) -> an integer: the core's pasyn_pool_state (the one record of where a pool is in
 * its life: 0 opening, 1 open, 2 closing, 3 closed), or 4 once free() was called. A number, not
 * a name: it is asked on every fetch. Thread: the Lua state's. */
static int l_state(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    lua_pushinteger(L, p->pool ? pasyn_pool_state(p->pool) : PASYN_POOL_CLOSED + 1);
    return 1;
}

static int l_total_changes(lua_State *L)
{
    lpool *p = check_pool(L, 1);
    compat_pushint64(L, pasyn_total_changes(p->pool));
    return 1;
}

static void set_counter(lua_State *L, const char *name, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, name);
}

static int l_stats(lua_State *L)
{
    lpool *p = check_pool(L, 1);
    pasyn_worker_stats ws[65];
    uint64_t injector;
    int n = pasyn_stats(p->pool, ws, 65, &injector);
    if (n > 65)
        n = 65;
    lua_createtable(L, 0, 3);
    lua_createtable(L, 0, 3);
    set_counter(L, "executed", ws[0].executed);
    set_counter(L, "queued", ws[0].queued);
    set_counter(L, "batches", ws[0].batches);
    set_counter(L, "batched", ws[0].batched);
    set_counter(L, "batch_max", ws[0].batch_max);
    lua_setfield(L, -2, "writer");
    lua_createtable(L, n - 1, 0);
    for (int i = 1; i < n; i++) {
        lua_createtable(L, 0, 4);
        set_counter(L, "executed", ws[i].executed);
        set_counter(L, "stolen", ws[i].stolen);
        set_counter(L, "queued", ws[i].queued);
        lua_pushboolean(L, ws[i].streaming);
        lua_setfield(L, -2, "streaming");
        lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, "readers");
    set_counter(L, "injector", injector);
    pasyn_inline_stats is;
    pasyn_inline_counts(p->pool, &is);
    lua_createtable(L, 0, 4);
    set_counter(L, "executed", is.executed);
    set_counter(L, "overruns", is.overruns);
    set_counter(L, "busy", is.busy);
    set_counter(L, "failed", is.failed);
    lua_setfield(L, -2, "inline");
    return 1;
}

/* ---- SQL functions defined in Lua ----------------------------------------------------- */

/* The functions live in the registry's FUNCS_KEY table under ids that the core hands back in
 * each call (pasyn_create_function); an aggregate's groups in GROUPS_KEY under their contexts.
 * Calls are served on this thread only, by serve_calls: from dispatch, from a blocking wait
 * (wait) and from a blocked wait for a gate's slot (the scheduler's gate_block). */

/* How long serve_calls watches for the next call once it has served those waiting. */
#define CALL_LINGER_S 20e-6

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
} /* ids are never reused; the Lua state's thread */

/* create_function(pool, name, nargs, flags, fn_or_nil) -> true | nil, class, code, extended,
 * message
 * Defines (fn a function or callable value) or removes (fn nil) the SQL function, aggregate
 * (flags has PASYN_FUNCTION_AGGREGATE: fn makes each group's object) or collation (flags has
 * PASYN_FUNCTION_COLLATION) `name` on every connection of the pool (pasyn_create_function).
 * Failures in result()'s shape: "programming" for a name or nargs SQLite would refuse,
 * "closing"/"closed", "nomem". Thread: the Lua state's. */
static int l_create_function(lua_State *L)
{
    lpool *p = to_pool(L, 1);
    const char *name = check_lstring(L, 2, "name", NULL);
    int nargs = (int)check_integer(L, 3, "nargs");
    int flags = (int)check_integer(L, 4, "flags");
    int removing = lua_isnoneornil(L, 5);
    if (!p->pool)
        return fail_closed(L, p, NULL);
    uint64_t id = removing ? 0 : ++get_lhub(L)->last_function_id, replaced = 0;
    int err = pasyn_create_function(p->pool, name, nargs, flags, id, &replaced);
    if (err == PASYN_ECLOSED)
        return fail_closed(L, p, NULL);
    if (err != 0)
        return fail(L, NULL, err,
                    err == PASYN_ENOMEM ? "out of memory"
                                        : "SQLite takes a name of 1 to 255 bytes and nargs from "
                                          "-1 to 127");
    lua_getfield(L, LUA_REGISTRYINDEX, FUNCS_KEY);
    if (id) {
        lua_createtable(L, 4, 0);
        lua_pushvalue(L, 5);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, 2);
        lua_pushinteger(L, p->integers);
        lua_rawseti(L, -2, 3);
        lua_pushlightuserdata(L, p);
        lua_rawseti(L, -2, 4);
        compat_pushint64(L, id);
        lua_insert(L, -2);
        lua_rawset(L, -3);
    }
    if (replaced) { /* a call of it still running fails: "was replaced or removed" */
        compat_pushint64(L, replaced);
        lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Drops the functions of a freed pool. */
static void forget_functions(lua_State *L, const lpool *p)
{
    lua_getfield(L, LUA_REGISTRYINDEX, FUNCS_KEY);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    int tbl = lua_gettop(L);
    lua_newtable(L); /* the ids to drop: a table is not changed while it is traversed */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, tbl)) {
        lua_rawgeti(L, -1, 4);
        if (lua_touserdata(L, -1) == p) {
            lua_pushvalue(L, -3);
            lua_rawseti(L, tbl + 1, ++n);
        }
        lua_pop(L, 2);
    }
    for (int k = 1; k <= n; k++) {
        lua_rawgeti(L, tbl + 1, k);
        lua_pushnil(L);
        lua_rawset(L, tbl);
    }
    lua_pop(L, 2);
}

/* A call being served: whether it has been answered yet. */
typedef struct serving {
    pasyn_call *call;
    int answered;
} serving;

/* Answers the call with the Lua value at i, or raises (in run_call's protection) for a value
 * SQL cannot hold. */
static void answer_value(lua_State *L, serving *sv, int i, const char *fname)
{
    pasyn_value v;
    if (!to_value(L, i, &v, 0, NULL)) {
        lua_pop(L, 1);
        lua_pushfstring(L,
                        "SQL function '%s' returned a %s: it may return nil, sqlite.null, a "
                        "boolean, a number, a string or sqlite.blob(s)",
                        fname, luaL_typename(L, i));
        lua_error(L);
    }
    sv->answered = 1;
    pasyn_call_return(sv->call, &v);
}

/* Pushes the call's arguments; their count. */
static int push_args(lua_State *L, pasyn_call *c, int integers)
{
    const unsigned char *at;
    int argc = pasyn_call_args(c, &at);
    luaL_checkstack(L, argc + 4, "too many arguments for a SQL function");
    for (int k = 0; k < argc; k++) {
        pasyn_value v;
        at = pasyn_row_value(at, &v);
        push_value(L, &v, integers);
    }
    return argc;
}

/* Pushes the method `name` of the group object at obj, then the object; raises for none. */
static void push_method(lua_State *L, int obj, const char *name, const char *fname)
{
    lua_getfield(L, obj, name);
    if (lua_isnil(L, -1))
        luaL_error(L, "the object of aggregate '%s' has no %s method", fname, name);
    lua_pushvalue(L, obj);
}

/* run_call(serving): runs one call's Lua code and answers it; under lua_pcall (serve_one). */
static int run_call(lua_State *L)
{
    serving *sv = lua_touserdata(L, 1);
    pasyn_call *c = sv->call;
    int op = pasyn_call_op(c);
    lua_getfield(L, LUA_REGISTRYINDEX, FUNCS_KEY); /* 2 */
    compat_pushint64(L, pasyn_call_id(c));
    lua_rawget(L, 2);
    if (!lua_istable(L, -1))
        return luaL_error(L, "the SQL function was replaced or removed while a statement "
                             "called it");
    int rec = lua_gettop(L); /* 3 */
    lua_rawgeti(L, rec, 2);
    const char *fname = lua_tostring(L, -1); /* 4, anchored */
    lua_rawgeti(L, rec, 3);
    int integers = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_rawgeti(L, rec, 1); /* the function, or the aggregate's factory */
    int fn = lua_gettop(L); /* 5 */
    if (op == PASYN_CALL_FUNCTION) {
        lua_pushvalue(L, fn);
        int argc = push_args(L, c, integers);
        lua_call(L, argc, 1);
        answer_value(L, sv, -1, fname);
        return 0;
    }
    if (op == PASYN_CALL_COMPARE) {
        lua_pushvalue(L, fn);
        push_args(L, c, integers);
        lua_call(L, 2, 1);
        pasyn_value v = {PASYN_NULL, 0, 0, NULL, 0};
        if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Number d = lua_tonumber(L, -1);
            v.type = PASYN_INT;
            v.i = d < 0 ? -1 : d > 0;
        }
        sv->answered = 1;
        pasyn_call_return(c, &v);
        return 0;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, GROUPS_KEY); /* 6 */
    int groups = lua_gettop(L);
    int first;
    uint64_t context = pasyn_call_context(c, &first);
    if (op == PASYN_CALL_FINAL && context) {
        compat_pushint64(L, context);
        lua_rawget(L, groups);
        compat_pushint64(L, context); /* forgotten whatever finalize does */
        lua_pushnil(L);
        lua_rawset(L, groups);
    } else if (op == PASYN_CALL_STEP && !first) {
        compat_pushint64(L, context);
        lua_rawget(L, groups);
    } else { /* a new group (or an empty input's FINAL) */
        lua_pushvalue(L, fn);
        lua_call(L, 0, 1);
        if (lua_isnil(L, -1))
            return luaL_error(L, "the factory of aggregate '%s' returned nil", fname);
        if (op == PASYN_CALL_STEP) {
            compat_pushint64(L, context);
            lua_pushvalue(L, -2);
            lua_rawset(L, groups);
        }
    }
    if (lua_isnil(L, -1))
        return luaL_error(L, "aggregate '%s' lost its group", fname);
    int obj = lua_gettop(L);
    if (op == PASYN_CALL_STEP) {
        push_method(L, obj, "step", fname);
        int argc = push_args(L, c, integers);
        lua_call(L, argc + 1, 0);
        sv->answered = 1;
        pasyn_call_return(c, NULL);
        return 0;
    }
    push_method(L, obj, "finalize", fname);
    lua_call(L, 1, 1);
    answer_value(L, sv, -1, fname);
    return 0;
}

/* tostring(err) for the message of a failed call, under lua_pcall. */
static int error_text(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER &&
        !luaL_callmeta(L, 1, "__tostring"))
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    else if (lua_gettop(L) == 1)
        lua_pushvalue(L, 1);
    return 1;
}

/* Runs one call, always answering it: the Lua error of a failed one becomes its message. */
static void serve_one(lua_State *L, lhub *h, pasyn_call *c)
{
    int top = lua_gettop(L);
    serving sv = {c, 0};
    lua_pushcfunction(L, run_call);
    lua_pushlightuserdata(L, &sv);
    h->serving++;
    int rc = lua_pcall(L, 1, 0, 0);
    h->serving--;
    if (rc != 0 && !sv.answered) {
        if (pasyn_call_op(c) == PASYN_CALL_STEP) { /* the core sends no FINAL for it */
            lua_getfield(L, LUA_REGISTRYINDEX, GROUPS_KEY);
            compat_pushint64(L, pasyn_call_context(c, NULL));
            lua_pushnil(L);
            lua_rawset(L, -3);
            lua_pop(L, 1);
        }
        lua_pushcfunction(L, error_text);
        lua_insert(L, -2);
        const char *message = lua_pcall(L, 1, 1, 0) == 0 ? lua_tostring(L, -1) : NULL;
        pasyn_call_fail(c, message ? message : "SQL function failed (its error has no text)");
    } else if (!sv.answered) {
        pasyn_call_fail(c, "SQL function failed");
    }
    lua_settop(L, top);
}

/* Serves every call waiting on the hub; how many. */
static int serve_calls(lua_State *L)
{
    lhub *h = get_lhub(L);
    if (!h->hub)
        return 0;
    int n = 0;
    pasyn_call *c = pasyn_hub_calls(h->hub);
    while (c) {
        for (; c; n++) {
            pasyn_call *next = pasyn_call_next(c); /* an answered call is gone */
            serve_one(L, h, c);
            c = next;
        }
        /* A statement that called once calls again a moment later, for its next row: watch
         * for that a little while, which spares both threads a sleep and a wake-up per row. */
        double deadline = now_seconds() + CALL_LINGER_S;
        while (!(c = pasyn_hub_calls(h->hub)) && now_seconds() < deadline)
            ;
    }
    return n;
}

/* serve() -> how many calls of SQL functions it ran: those waiting now. After drain() (see
 * pasyn_hub_calls). Thread: the Lua state's. */
static int l_serve(lua_State *L)
{
    lua_pushinteger(L, serve_calls(L));
    return 1;
}

/* serving() -> true while a SQL function defined in Lua runs (statements are refused then). */
static int l_serving(lua_State *L)
{
    lua_pushboolean(L, get_lhub(L)->serving > 0);
    return 1;
}

/* ---- the hub ------------------------------------------------------------------------- */

static int l_fd(lua_State *L)
{
    lua_pushinteger(L, pasyn_hub_fd(get_hub(L)));
    return 1;
}

static int l_poll(lua_State *L)
{
    lua_Number seconds = opt_number(L, 1, "seconds", -1);
    int ms = seconds < 0 ? -1 : seconds > 86400 ? 86400000 : (int)(seconds * 1000 + 0.999);
    lua_pushboolean(L, pasyn_hub_poll(get_hub(L), ms));
    return 1;
}

/* drain([list]) -> array of completed tasks (light userdata, in the order they completed), or
 * nil when none. With `list` (a table), the tasks fill it from 1 on and what it held after them
 * is cleared, and it is the array returned: a caller that drains often reuses one table instead
 * of making one each time. Without it, a new table. Thread: the Lua state's. */
static int l_drain(lua_State *L)
{
    pasyn_task *t = pasyn_hub_drain(get_hub(L));
    if (!t)
        return 0;
    int reuse = lua_istable(L, 1);
    if (reuse)
        lua_settop(L, 1);
    else
        lua_newtable(L);
    int i = 1;
    for (; t; i++) {
        pasyn_task *next = pasyn_task_next(t);
        lua_pushlightuserdata(L, t);
        lua_rawseti(L, -2, i);
        t = next;
    }
    for (; reuse; i++) { /* what an earlier drain left behind the tasks */
        lua_rawgeti(L, -1, i);
        int more = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!more)
            break;
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* hub_listen() -> the path of a unix-domain socket for the host to connect to, or nil and a
 * message; hub_accept() -> true once that connection is the hub's signal target, or nil and a
 * message; hub_unaccept(): back to sqlite.fd(). Host thread. See pasyn_hub_listen. */
static int l_hub_listen(lua_State *L)
{
    const char *path;
    int rc = pasyn_hub_listen(get_hub(L), &path);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(-rc));
        return 2;
    }
    lua_pushstring(L, path);
    return 1;
}

static int l_hub_accept(lua_State *L)
{
    int rc = pasyn_hub_accept(get_hub(L));
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(-rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_hub_unaccept(lua_State *L)
{
    pasyn_hub_unaccept(get_hub(L));
    return 0;
}

/* isyieldable() -> whether the calling coroutine may yield here: coroutine.isyieldable, also
 * where a host hides it (ngx_lua replaces LuaJIT's coroutine table with one without it). */
static int l_isyieldable(lua_State *L)
{
    lua_pushboolean(L, compat_isyieldable(L));
    return 1;
}

/* set_handoff(mode): mode "look" (the default: a busy caller's read goes to a reader while the
 * machine has a core for it), "always" or "never" (decided without looking), for the whole
 * process: pasyn_set_handoff. For tests and benchmarks. Raises ProgrammingError for another
 * mode. Thread: any Lua state's. */
static int l_set_handoff(lua_State *L)
{
    static const char *const modes[] = {"look", "always", "never"};
    const char *mode = lua_isnoneornil(L, 1)           ? "look"
                       : lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1)
                                                       : "";
    for (int i = 0; i < 3; i++)
        if (strcmp(mode, modes[i]) == 0) {
            pasyn_set_handoff(i == 0   ? PASYN_HANDOFF_LOOK
                              : i == 1 ? PASYN_HANDOFF_ALWAYS
                                       : PASYN_HANDOFF_NEVER);
            return 0;
        }
    return arg_error(L, 1, "mode", "\"look\", \"always\" or \"never\"");
}

/* is_dead(co) -> true when the coroutine co has ended (returned, raised, or was closed):
 * coroutine.status(co) == "dead" as lcorolib's auxstatus tells it, without making a string,
 * for the scheduler's every delivery. Thread: the Lua state's. */
static int l_is_dead(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    lua_Debug ar;
    int status = co ? lua_status(co) : LUA_OK;
    lua_pushboolean(L, co && co != L &&
                           (status == LUA_OK ? lua_getstack(co, 0, &ar) == 0 && lua_gettop(co) == 0
                                             : status != LUA_YIELD));
    return 1;
}

/* hub_wake(): makes the signal target readable now (pasyn_hub_wake). Host thread. */
static int l_hub_wake(lua_State *L)
{
    pasyn_hub_wake(get_hub(L));
    return 0;
}

static int l_hub_gc(lua_State *L)
{
    lhub *h = lua_touserdata(L, 1);
    if (h->hub && h->pid == getpid())
        pasyn_hub_free(h->hub);
    h->hub = NULL;
    return 0;
}

static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int l_sleep(lua_State *L)
{
    lua_Number seconds = opt_number(L, 1, "seconds", 0);
    if (seconds > 0) {
        struct timespec ts;
        ts.tv_sec = (time_t)seconds;
        ts.tv_nsec = (long)((seconds - (lua_Number)ts.tv_sec) * 1e9);
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return 0;
}

/* blob(s) -> a value that binds as a BLOB holding the bytes of s. Raises ProgrammingError for
 * an s that is not a string. Thread: the Lua state's. */
static int l_blob(lua_State *L)
{
    check_type(L, 1, LUA_TSTRING, "s");
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, BLOB_MT_KEY);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_is_blob(lua_State *L)
{
    int yes = 0;
    if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
        lua_getfield(L, LUA_REGISTRYINDEX, BLOB_MT_KEY);
        yes = lua_rawequal(L, -1, -2);
    }
    lua_pushboolean(L, yes);
    return 1;
}

/* set_int64(int64_t ctype, kind function): LuaJIT's ffi, registered by the Lua layer at load:
 * kind(v) is 1 for an int64_t cdata, 2 for a uint64_t one, else 0. With them, such cdata bind
 * as INTEGERs and the `integers` option "int64" can make boxes. */
static int l_set_int64(lua_State *L)
{
    check_type(L, 2, LUA_TFUNCTION, "kind");
    lua_pushvalue(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, INT64_NEW_KEY);
    lua_pushvalue(L, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, INT64_KIND_KEY);
    return 0;
}

/* set_errors(new): errors.new(kind, message), registered by the Lua layer at load: what
 * raise_error makes the binding's error objects with. */
static int l_set_errors(lua_State *L)
{
    check_type(L, 1, LUA_TFUNCTION, "new");
    lua_pushvalue(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, ERROR_NEW_KEY);
    return 0;
}

/* The Lua this module was built for, also as plain text in the file: built for another Lua, the
 * module fails in the dynamic linker ("undefined symbol: lua_...") before it can say so, and
 * pasyn_sqlite.lua then reads it from the file to tell the user. */
#ifdef LUA_JITLIBNAME
#define BUILT_FOR "LuaJIT"
#else
#define BUILT_FOR LUA_VERSION
#endif
static const char built_for[] = "pasyn_sqlite.core built for " BUILT_FOR;

LUALIB_API int luaopen_pasyn_sqlite_core(lua_State *L);

LUALIB_API int luaopen_pasyn_sqlite_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"open", l_open},
        {"close", l_close},
        {"free", l_free},
        {"submit", l_submit},
        {"execute", l_execute},
        {"submit_many", l_submit_many},
        {"fetch", l_fetch},
        {"release", l_release},
        {"wait", l_wait},
        {"result", l_result},
        {"result_cursor", l_result_cursor},
        {"free_task", l_free_task},
        {"txn_owner", l_txn_owner},
        {"total_changes", l_total_changes},
        {"state", l_state},
        {"stats", l_stats},
        {"fd", l_fd},
        {"poll", l_poll},
        {"drain", l_drain},
        {"now", l_now},
        {"sleep", l_sleep},
        {"blob", l_blob},
        {"is_blob", l_is_blob},
        {"abandon", l_abandon},
        {"interrupt", l_interrupt},
        {"set_trace", l_set_trace},
        {"set_on_change", l_set_on_change},
        {"deliver", l_deliver},
        {"serialize", l_serialize},
        {"bytes", l_bytes},
        {"done", l_done},
        {"backup_new", l_backup_new},
        {"backup_step", l_backup_step},
        {"backup_progress", l_backup_progress},
        {"backup_end", l_backup_gc},
        {"pool_path", l_pool_path},
        {"hub_listen", l_hub_listen},
        {"hub_accept", l_hub_accept},
        {"hub_unaccept", l_hub_unaccept},
        {"hub_wake", l_hub_wake},
        {"set_int64", l_set_int64},
        {"set_errors", l_set_errors},
        {"isyieldable", l_isyieldable},
        {"is_dead", l_is_dead},
        {"set_handoff", l_set_handoff},
        {"set_idle_test", l_set_idle_test},
        {"create_function", l_create_function},
        {"serve", l_serve},
        {"serving", l_serving},
        {NULL, NULL},
    };
#if LUA_VERSION_NUM >= 502
    luaL_checkversion(L); /* a running Lua of another version that has every symbol we use */
#endif
    lua_getfield(L, LUA_REGISTRYINDEX, HUB_KEY);
    if (lua_isnil(L, -1)) {
        lhub *h = lua_newuserdata(L, sizeof *h);
        h->hub = NULL; /* made on first use: get_hub */
        h->pid = 0;
        h->forks = 0;
        h->serving = 0;
        h->last_function_id = 0;
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, l_hub_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, HUB_KEY);
    }
    lua_pop(L, 1);
    const char *tables[] = {FUNCS_KEY, GROUPS_KEY};
    for (int k = 0; k < 2; k++) {
        lua_getfield(L, LUA_REGISTRYINDEX, tables[k]);
        if (lua_isnil(L, -1)) {
            lua_newtable(L);
            lua_setfield(L, LUA_REGISTRYINDEX, tables[k]);
        }
        lua_pop(L, 1);
    }

    luaL_newmetatable(L, POOL_MT);
    lua_pushcfunction(L, l_pool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, STREAM_MT);
    lua_pushcfunction(L, l_stream_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, BACKUP_MT);
    lua_pushcfunction(L, l_backup_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, BLOB_MT_KEY);
    if (lua_isnil(L, -1)) {
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "pasyn_sqlite.blob");
        lua_setfield(L, -2, "__name");
        lua_setfield(L, LUA_REGISTRYINDEX, BLOB_MT_KEY);
    }
    lua_pop(L, 1);

    pthread_once(&forks_counted, count_forks);
    lua_newtable(L);
    luaL_getmetatable(L, POOL_MT);               /* UPVALUE_POOL_MT */
    luaL_getmetatable(L, STREAM_MT);             /* UPVALUE_STREAM_MT */
    lua_getfield(L, LUA_REGISTRYINDEX, HUB_KEY); /* UPVALUE_HUB */
    lua_pushliteral(L, "n");                     /* UPVALUE_N: the key of a parameter count */
    compat_setfuncs(L, funcs, 4);
    /* The names function_name gives: the module's functions that pasyn_sqlite.lua hands on to
     * the user as they are go by the user's name for them. */
    lua_newtable(L);
    for (const luaL_Reg *f = funcs; f->name; f++) {
        int public = strcmp(f->name, "blob") == 0 || strcmp(f->name, "fd") == 0;
        lua_getfield(L, -2, f->name);
        lua_pushfstring(L, "%s.%s", public ? "sqlite" : "core", f->name);
        lua_rawset(L, -3);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, PASYN_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, pasyn_sqlite_version());
    lua_setfield(L, -2, "sqlite_version");
    lua_pushstring(L, built_for + sizeof "pasyn_sqlite.core built for " - 1);
    lua_setfield(L, -2, "built_for");
    lua_pushinteger(L, PASYN_CACHE_SQL_MAX); /* SQL longer than this is cached nowhere */
    lua_setfield(L, -2, "cache_sql_max");
    lua_pushinteger(L, PASYN_FUNCTION_DETERMINISTIC); /* create_function's flags */
    lua_setfield(L, -2, "DETERMINISTIC");
    lua_pushinteger(L, PASYN_FUNCTION_AGGREGATE);
    lua_setfield(L, -2, "AGGREGATE");
    lua_pushinteger(L, PASYN_FUNCTION_COLLATION);
    lua_setfield(L, -2, "COLLATION");
    return 1;
}
