/*
 * uri.c - turns the `database` given to pasyn_open into what the pool's connections open
 * (uri.h): one writer (read-write) and N readers (read-only), all with SQLITE_OPEN_URI.
 *
 * The pool must be one database seen by all its connections, each with its own locks: a URI
 * that gives every connection a database of its own, puts them in shared-cache mode or takes
 * their locks away must be mapped onto the pool's own mechanism or refused. Parsing follows
 * SQLite's rules (https://www.sqlite.org/uri.html, https://www.sqlite.org/c3ref/open.html):
 * only a string starting with "file:" (case-sensitive) is a URI; "file://" is followed by an
 * authority that is empty or "localhost" (it runs up to the next '/'; SQLite rejects any
 * other); the path runs to '?' or '#'; the query to '#', as key=value pairs split at '&'
 * (the first '=' splits); a fragment is ignored. "%HH" decodes; "%00" ends the path, key or
 * value it is in; any other '%' is a literal. A query parameter with an empty key is ignored.
 * For vfs=, mode= and cache= the last one counts; keys and values compare case-sensitively.
 *
 * Rules:
 *   - Not a URI: used as it is; ":memory:" and "" are memory.
 *   - Memory (each connection would get a private, empty database): a decoded path of
 *     ":memory:" or "" (uri.html 3.1, open.html: "" is a private temporary database), the
 *     last mode= being "memory", the last vfs= being "memdb". The pool then opens its own
 *     shared WAL file, not the memdb VFS (no WAL: readers and the writer would block each
 *     other with SQLITE_BUSY). A memory URI's other parameters are dropped with it.
 *   - cache=shared is dropped (cache=private stays): the pool's connections already share
 *     the file through WAL, and shared cache's table locks fail with SQLITE_LOCKED, which
 *     busy_timeout does not retry (sharedcache.html; SQLite discourages its use).
 *   - Refused, any occurrence:
 *       nolock=<true>: uri.html: "If two or more database connections try to interact with
 *         the same SQLite database and one or more of those connections has enabled nolock,
 *         then database corruption can result." The pool is several connections. <true> is
 *         SQLite's boolean (sqlite3_uri_boolean): "yes", "true", "on" in any case, or a
 *         number that is not zero (decimal or 0x hex); judged on the side of refusing.
 *       vfs=unix-none: the unix VFS without any locking (vfs.html, os_unix.c), the same
 *         corruption as nolock.
 *     Looked at and kept: vfs=unix-excl (one process-wide lock; connections of one process
 *     still lock each other in memory, so the pool works, and SQLite's unixexcl test shows
 *     it), vfs=unix-dotfile (exclusive dot-file locks, no shared memory so no WAL: readers
 *     and the writer take turns, retried by busy_timeout; nothing is corrupted), immutable=1
 *     (read-only for every connection: nothing in the pool can change the file),
 *     readonly_shm=1 (SQLite fails loudly on write).
 *   - Everything else (immutable, psow, modeof, other vfs names, unknown keys, an authority
 *     SQLite will reject) is passed on as written. The readers' copy asks mode=ro where the
 *     URI asks mode=rw or mode=rwc: SQLite refuses a mode less restrictive than the open
 *     flags, and readers open with SQLITE_OPEN_READONLY.
 * The URIs are rebuilt from the kept parts, each in its original encoding, so a dropped
 * parameter leaves no stray '&' or '?'; empty parameters and the fragment are left out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pasyn.h"
#include "uri.h"

/* Bytes of a part as the caller wrote them (still percent-encoded). */
typedef struct span {
    const char *p;
    size_t n;
} span;

typedef struct param {
    span raw; /* "key=value", or "key" alone */
    span key;
    span value; /* empty when there is no '=' */
} param;

typedef struct parsed_uri {
    int has_authority; /* written as "file://..." */
    span authority;
    span path;
    param *params; /* the query's non-empty parameters, in order */
    size_t nparams;
} parsed_uri;

/* ---- percent-decoding, one byte at a time ------------------------------------------ */

/* Reads the decoded bytes of a span, so decisions need no decoded copy. */
typedef struct pct {
    const char *p, *end;
} pct;

static pct pct_open(span s)
{
    pct d = {s.p, s.p + s.n};
    return d;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The next decoded byte, or -1 at the end. Only "%HH" decodes, each digit checked before the
 * next is read, so a '%' near the end never reads past it. "%00" ends the part, as it does
 * for SQLite, which skips what follows up to the next delimiter. */
static int pct_getc(pct *d)
{
    if (d->p >= d->end)
        return -1;
    unsigned char c = (unsigned char)*d->p++;
    if (c != '%' || d->end - d->p < 2)
        return c;
    int hi = hex_value((unsigned char)d->p[0]);
    int lo = hi < 0 ? -1 : hex_value((unsigned char)d->p[1]);
    if (lo < 0)
        return c;
    d->p += 2;
    if (hi == 0 && lo == 0) {
        d->p = d->end;
        return -1;
    }
    return hi * 16 + lo;
}

static int ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Whether the decoded span equals `lit`, exactly or ignoring ASCII case. */
static int decoded_is(span s, const char *lit, int nocase)
{
    pct d = pct_open(s);
    for (const unsigned char *l = (const unsigned char *)lit; *l; l++) {
        int c = pct_getc(&d);
        if (c < 0 || (nocase ? ascii_lower(c) != ascii_lower(*l) : c != *l))
            return 0;
    }
    return pct_getc(&d) < 0;
}

/* ---- SQLite's boolean spelling ----------------------------------------------------- */

/* A value starting with a digit: SQLite reads it as a number (decimal, or 0x hex) and any
 * non-zero number is true. It calls an out-of-range number false; here any non-zero digit
 * counts as true, so a doubtful value errs towards refusing. */
static int number_is_true(int first, pct d)
{
    pct peek = d;
    int x = pct_getc(&peek);
    if (first == '0' && (x == 'x' || x == 'X')) {
        int c = pct_getc(&peek);
        if (hex_value(c) >= 0) {
            for (; hex_value(c) >= 0; c = pct_getc(&peek))
                if (hex_value(c) != 0)
                    return 1;
            return 0;
        }
    }
    for (int c = first; c >= '0' && c <= '9'; c = pct_getc(&d))
        if (c != '0')
            return 1;
    return 0;
}

/* sqlite3_uri_boolean's "true", with a default of false: a number that is not zero, or
 * "yes", "true", "on" in any case. Anything else (including no value) is false. */
static int value_is_true(span v)
{
    pct d = pct_open(v);
    int first = pct_getc(&d);
    if (first >= '0' && first <= '9')
        return number_is_true(first, d);
    return decoded_is(v, "yes", 1) || decoded_is(v, "true", 1) || decoded_is(v, "on", 1);
}

/* ---- parsing ----------------------------------------------------------------------- */

static span span_of(const char *p, const char *end)
{
    span s = {p, (size_t)(end - p)};
    return s;
}

/* Splits one "key=value" (or "key") at its first '='. */
static param param_of(span raw)
{
    param pa = {raw, raw, {raw.p + raw.n, 0}};
    const char *eq = memchr(raw.p, '=', raw.n);
    if (eq) {
        pa.key = span_of(raw.p, eq);
        pa.value = span_of(eq + 1, raw.p + raw.n);
    }
    return pa;
}

/* Whether the key is empty once decoded: SQLite ignores such a parameter, value and all. */
static int key_is_empty(span key)
{
    pct d = pct_open(key);
    return pct_getc(&d) < 0;
}

/* Collects the query's parameters between `q` and `end`, skipping empty ones. */
static int parse_query(const char *q, const char *end, parsed_uri *u)
{
    size_t most = 1;
    for (const char *c = q; c < end; c++)
        most += *c == '&';
    u->params = malloc(most * sizeof *u->params);
    if (!u->params)
        return PASYN_ENOMEM;
    while (q <= end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        param pa = param_of(span_of(q, stop));
        if (!key_is_empty(pa.key))
            u->params[u->nparams++] = pa;
        q = stop + 1;
    }
    return 0;
}

/* Splits a "file:" URI into authority, path and parameters (see the top of the file). */
static int parse_uri(const char *uri, parsed_uri *u)
{
    memset(u, 0, sizeof *u);
    const char *p = uri + 5; /* after "file:" */
    if (p[0] == '/' && p[1] == '/') {
        const char *a = p + 2;
        p = a + strcspn(a, "/");
        u->has_authority = 1;
        u->authority = span_of(a, p);
    }
    const char *path_end = p + strcspn(p, "?#");
    u->path = span_of(p, path_end);
    if (*path_end != '?')
        return 0;
    const char *q = path_end + 1;
    return parse_query(q, q + strcspn(q, "#"), u);
}

/* ---- decisions --------------------------------------------------------------------- */

static int authority_is_local(const parsed_uri *u)
{
    span a = u->authority;
    return !u->has_authority || a.n == 0 || (a.n == 9 && memcmp(a.p, "localhost", 9) == 0);
}

/* The last parameter named `key`: of several vfs=, mode= or cache=, SQLite obeys the last. */
static const param *last_param(const parsed_uri *u, const char *key)
{
    for (size_t i = u->nparams; i-- > 0;)
        if (decoded_is(u->params[i].key, key, 0))
            return &u->params[i];
    return NULL;
}

static int uri_is_memory(const parsed_uri *u)
{
    if (!authority_is_local(u)) /* SQLite reports the authority; no database at all */
        return 0;
    const param *mode = last_param(u, "mode");
    const param *vfs = last_param(u, "vfs");
    return decoded_is(u->path, "", 0) || decoded_is(u->path, ":memory:", 0) ||
           (mode && decoded_is(mode->value, "memory", 0)) ||
           (vfs && decoded_is(vfs->value, "memdb", 0));
}

static const char NO_LOCKS[] =
    "without locks the pool's own connections would corrupt the database";

/* The first parameter the pool refuses, and why; NULL when there is none. */
static const param *refused_param(const parsed_uri *u, const char **why)
{
    for (size_t i = 0; i < u->nparams; i++) {
        const param *pa = &u->params[i];
        if ((decoded_is(pa->key, "nolock", 0) && value_is_true(pa->value)) ||
            (decoded_is(pa->key, "vfs", 0) && decoded_is(pa->value, "unix-none", 0))) {
            *why = NO_LOCKS;
            return pa;
        }
    }
    return NULL;
}

static int is_shared_cache(const param *pa)
{
    return decoded_is(pa->key, "cache", 0) && decoded_is(pa->value, "shared", 0);
}

static int asks_read_write(const param *pa)
{
    return decoded_is(pa->key, "mode", 0) &&
           (decoded_is(pa->value, "rw", 0) || decoded_is(pa->value, "rwc", 0));
}

/* ---- building the strings ---------------------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    int failed;
} strbuf;

static void put(strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put_span(strbuf *b, span s)
{
    put(b, s.p, s.n);
}

/* The string a connection opens: the kept parts as written, separators only between them.
 * For a reader, mode=rw and mode=rwc become mode=ro (the key keeps its spelling). */
static char *rebuild(const parsed_uri *u, int for_reader)
{
    strbuf b = {0};
    put(&b, "file:", 5);
    if (u->has_authority) {
        put(&b, "//", 2);
        put_span(&b, u->authority);
    }
    put_span(&b, u->path);
    const char *sep = "?";
    for (size_t i = 0; i < u->nparams; i++) {
        const param *pa = &u->params[i];
        if (is_shared_cache(pa))
            continue;
        put(&b, sep, 1);
        sep = "&";
        if (for_reader && asks_read_write(pa)) {
            put_span(&b, pa->key);
            put(&b, "=ro", 3);
        } else {
            put_span(&b, pa->raw);
        }
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* "connect: the URI's <part> is not supported: <why>", with a very long part shortened. */
static char *refusal_message(const param *pa, const char *why)
{
    enum { MAX_SHOWN = 80 };
    int shown = pa->raw.n > MAX_SHOWN ? MAX_SHOWN : (int)pa->raw.n;
    const char *more = pa->raw.n > MAX_SHOWN ? "..." : "";
    const char *fmt = "connect: the URI's %.*s%s is not supported: %s";
    int n = snprintf(NULL, 0, fmt, shown, pa->raw.p, more, why);
    char *msg = n < 0 ? NULL : malloc((size_t)n + 1);
    if (msg)
        snprintf(msg, (size_t)n + 1, fmt, shown, pa->raw.p, more, why);
    return msg;
}

/* ---- the interface ----------------------------------------------------------------- */

static int fail(char **errmsg, const char *msg)
{
    if (errmsg && !(*errmsg = strdup(msg)))
        return PASYN_ENOMEM;
    return PASYN_EPROGRAMMING;
}

static int plan_plain(const char *database, uri_plan *out)
{
    if (strcmp(database, ":memory:") == 0 || database[0] == '\0') {
        out->memory = 1;
        return 0;
    }
    out->writer = strdup(database);
    out->reader = strdup(database);
    return out->writer && out->reader ? 0 : PASYN_ENOMEM;
}

static int plan_uri(const parsed_uri *u, uri_plan *out, char **errmsg)
{
    const char *why = NULL;
    const param *bad = refused_param(u, &why);
    if (bad) {
        if (!errmsg)
            return PASYN_EPROGRAMMING;
        *errmsg = refusal_message(bad, why);
        return *errmsg ? PASYN_EPROGRAMMING : PASYN_ENOMEM;
    }
    if (uri_is_memory(u)) {
        out->memory = 1;
        return 0;
    }
    out->writer = rebuild(u, 0);
    out->reader = rebuild(u, 1);
    return out->writer && out->reader ? 0 : PASYN_ENOMEM;
}

int uri_plan_make(const char *database, uri_plan *out, char **errmsg)
{
    if (errmsg)
        *errmsg = NULL;
    if (!out)
        return fail(errmsg, "uri_plan_make: no plan to fill in");
    memset(out, 0, sizeof *out);
    if (!database)
        return fail(errmsg, "connect: no database given");
    int rc;
    if (strncmp(database, "file:", 5) != 0) {
        rc = plan_plain(database, out);
    } else {
        parsed_uri u;
        rc = parse_uri(database, &u);
        if (rc == 0)
            rc = plan_uri(&u, out, errmsg);
        free(u.params);
    }
    if (rc != 0)
        uri_plan_free(out);
    return rc;
}

void uri_plan_free(uri_plan *p)
{
    if (!p)
        return;
    free(p->writer);
    free(p->reader);
    memset(p, 0, sizeof *p);
}
