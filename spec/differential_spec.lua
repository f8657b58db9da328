-- Differential spec: a fixed script of mixed statements runs through the pool and through ONE
-- plain SQLite connection (LuaDBI); every answer of the pool must be that connection's.
--
-- The contract says the pool is invisible: every statement answers exactly as one SQLite
-- connection would for the same sequence of calls. So each step of SCRIPT (below) runs on the
-- pool and on a reference connection, and the two must agree on success or failure, SQLite's
-- message, the column names, every value with its Lua type, cur.rowcount (the reference's
-- changes() for INSERT/UPDATE/DELETE/REPLACE, else -1), cur.lastrowid where a row was inserted
-- (the reference's last_insert_rowid()), and conn.total_changes after every step. It runs under
-- readers 0, 1 and 3 with group_commit on and off, on a file, and once on ":memory:".
--
-- Bursts: group commit only batches autocommit writes that are queued together, so a burst
-- runs its writes in one coroutine each, all queued behind a transaction the main coroutine
-- holds for that moment (BEGIN IMMEDIATE, spawn, yield, COMMIT): the writer then finds them
-- all waiting. The reference runs BEGIN IMMEDIATE, COMMIT and then the same writes one after
-- another, in the same order. conn:stats().writer.batches must grow with every burst (with
-- group_commit on; it counts committed batches, so a burst whose batch a RAISE(ROLLBACK) or OR
-- ROLLBACK breaks ends with two writes that form one) and stay 0 (off), or the bursts would
-- prove nothing.
--
-- The reference: LuaDBI 0.7 (Debian's lua-dbi-sqlite3) runs each statement on one connection
-- in autocommit mode (prepare, execute, fetch every row, close). It reads INTEGERs with
-- sqlite3_column_int, which keeps only 32 bits, so the reference never takes an integer from
-- it: a query's values come through `WITH q(c1, ...) AS (<query>) SELECT typeof(c1),
-- quote(c1), c1, ...` and a RETURNING list is run as `RETURNING typeof(e), quote(e), e, ...`
-- (same statement, same effects; SQLite spells integers and blobs exactly in quote()).
-- changes() and last_insert_rowid() of the reference are read with a SELECT after each write
-- (a SELECT changes neither; LuaDBI's affected() is stale for RETURNING). LuaDBI reports
-- errors as "Execute failed <message>" and the like: the part SQLite produced is compared.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local has_dbi, DBI = pcall(require, "DBI")

local NULL = sqlite.null
local mtype = math.type -- nil on LuaJIT, where every number is a double

-- ---- the script ----------------------------------------------------------------------------
-- A step is a SQL string, or { sql, ret = {expr, ...}, ins = true | false }:
--   ret  the RETURNING list (the step runs `sql RETURNING expr, ...`; no `*`);
--   ins  true: the statement inserts a row into a rowid table, so cur.lastrowid must be the
--        reference's last_insert_rowid(); false: it inserts nothing, so cur.lastrowid stays
--        nil (README, "lastrowid"); absent: lastrowid is not checked.
-- { burst = {step, ...} } runs its writes concurrently on the pool (see above).
-- DUMP stands for a SELECT of every table.

local STATE = "SELECT last_insert_rowid(), changes(), total_changes()"
local PID = { "INSERT INTO c (pid) VALUES (last_insert_rowid())", ins = true }
local PID_RET = { "INSERT INTO c (pid) VALUES (last_insert_rowid())", ret = { "id", "pid" }, ins = true }
local VIEW = "SELECT ch, tc, lr FROM vc"
local DUMP = {}
local DUMP_QUERIES = {
    "SELECT id, v, n FROM t ORDER BY id",
    "SELECT id, pid FROM c ORDER BY id",
    "SELECT id, what FROM log ORDER BY id",
    "SELECT k, v FROM w ORDER BY k",
    "SELECT k, v, hits FROM kv ORDER BY k",
    "SELECT id, note FROM e ORDER BY id",
}

local SCRIPT = {
    -- schema: rowid, WITHOUT ROWID, UNIQUE, CHECK, logging and RAISE triggers, a view of
    -- the connection's state. Rowids past 2^62 live in e alone: next to the largest rowid
    -- SQLite picks new ones at random.
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE, n INTEGER CHECK (n >= 0))",
    "CREATE TABLE w (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID",
    "CREATE TABLE log (id INTEGER PRIMARY KEY, what TEXT NOT NULL)",
    "CREATE TABLE c (id INTEGER PRIMARY KEY, pid INTEGER)",
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER, hits INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE e (id INTEGER PRIMARY KEY, note TEXT)",
    "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log (what) VALUES ('t+ ' || NEW.v); END",
    "CREATE TRIGGER t_upd AFTER UPDATE OF n ON t BEGIN INSERT INTO log (what) VALUES ('t~ ' || NEW.v); END",
    "CREATE TRIGGER w_log AFTER INSERT ON w BEGIN INSERT INTO log (what) VALUES ('w+ ' || NEW.k); END",
    "CREATE TRIGGER t_rollback BEFORE INSERT ON t WHEN NEW.v = 'rollback' "
        .. "BEGIN SELECT RAISE(ROLLBACK, 'rolled back by t_rollback'); END",
    "CREATE TRIGGER t_abort BEFORE INSERT ON t WHEN NEW.v = 'abort' "
        .. "BEGIN SELECT RAISE(ABORT, 'aborted by t_abort'); END",
    "CREATE VIEW vc AS SELECT changes() AS ch, total_changes() AS tc, last_insert_rowid() AS lr",
    STATE,
    VIEW,
    -- every type, and the integer extremes
    "SELECT 1, -1, 1.0, 0.1, 'text', x'00ff41', NULL, 9007199254740993, 2.5e-300, "
        .. "9223372036854775807, -9223372036854775808",
    -- inserts, with and without a rowid
    { "INSERT INTO t (v, n) VALUES ('a', 1)", ins = true },
    STATE,
    PID,
    { "INSERT INTO t (id, v, n) VALUES (10, 'b', 2)", ins = true },
    { "INSERT INTO e (id, note) VALUES (-9223372036854775808, 'min')", ins = true },
    STATE,
    PID,
    { "INSERT INTO e (note) VALUES ('after min')", ins = true },
    { "INSERT INTO e (id, note) VALUES (9223372036854775807, 'max')", ins = true },
    STATE,
    PID,
    "SELECT id, note FROM e ORDER BY id",
    -- failed inserts
    "INSERT INTO t (v, n) VALUES ('a', 5)",
    STATE,
    PID,
    "INSERT INTO t (v, n) VALUES ('neg', -1)",
    "INSERT INTO e (id, note) VALUES (9223372036854775807, 'again')",
    STATE,
    -- updates (the trigger's insert into log does not stay in last_insert_rowid)
    "UPDATE t SET n = n + 10 WHERE v IN ('a', 'b')",
    STATE,
    PID,
    "UPDATE t SET n = 0 WHERE v = 'nobody'",
    STATE,
    -- a delete
    "DELETE FROM t WHERE v = 'b'",
    STATE,
    PID,
    -- INSERT OR IGNORE that ignores its row
    { "INSERT OR IGNORE INTO t (v, n) VALUES ('a', 9)", ins = false },
    STATE,
    PID,
    -- INSERT OR REPLACE on the rowid, REPLACE on the UNIQUE column
    { "INSERT OR REPLACE INTO t (id, v, n) VALUES (1, 'a2', 7)", ins = true },
    STATE,
    { "REPLACE INTO t (v, n) VALUES ('a2', 8)", ins = true },
    PID,
    -- upserts
    { "INSERT INTO kv (k, v) VALUES ('x', 1) ON CONFLICT (k) DO UPDATE SET hits = hits + 1", ins = true },
    { "INSERT INTO kv (k, v) VALUES ('x', 2) ON CONFLICT (k) DO UPDATE SET hits = hits + 1, v = excluded.v",
      ins = false },
    STATE,
    PID,
    { "INSERT INTO kv (k, v) VALUES ('x', 3) ON CONFLICT DO NOTHING", ins = false },
    STATE,
    PID,
    -- RETURNING
    { "INSERT INTO t (v, n) VALUES ('r1', 1), ('r2', 2)", ret = { "id", "v", "n * 1.5" }, ins = true },
    STATE,
    { "UPDATE t SET n = n + 1 WHERE v LIKE 'r%'", ret = { "id", "n" } },
    { "DELETE FROM t WHERE v = 'r1'", ret = { "id", "v" } },
    STATE,
    PID,
    -- a WITHOUT ROWID table and the view whose columns are changes() & co.
    "INSERT INTO w (k, v) VALUES ('k1', 1)",
    VIEW,
    PID,
    "INSERT INTO w (k, v) VALUES ('k1', 2) ON CONFLICT (k) DO UPDATE SET v = v + excluded.v",
    VIEW,
    -- OR FAIL keeps the rows before the failure; ABORT and OR ROLLBACK keep none
    "INSERT OR FAIL INTO t (v, n) VALUES ('f1', 1), ('f2', 2), ('a2', 3), ('f4', 4)",
    STATE,
    PID,
    "SELECT v FROM t WHERE v LIKE 'f%' ORDER BY v",
    "INSERT INTO t (v, n) VALUES ('g1', 1), ('a2', 2)",
    STATE,
    "INSERT OR ROLLBACK INTO t (v, n) VALUES ('h1', 1), ('a2', 2)",
    STATE,
    PID,
    "UPDATE OR FAIL t SET n = 5 - n * 3 WHERE v LIKE 'f%'",
    STATE,
    "SELECT v, n FROM t WHERE v LIKE 'f%' ORDER BY v",
    -- triggers' RAISE(ROLLBACK) and RAISE(ABORT)
    "INSERT INTO t (v, n) VALUES ('rollback', 1)",
    STATE,
    PID,
    "INSERT INTO t (v, n) VALUES ('x1', 1), ('abort', 2)",
    STATE,
    -- an explicit transaction, its own rows seen inside, a failure that keeps it open,
    -- savepoints rolled back to and released
    "BEGIN",
    { "INSERT INTO t (v, n) VALUES ('tx1', 1)", ins = true },
    "SELECT id, v, n FROM t WHERE v LIKE 'tx%' ORDER BY id",
    STATE,
    VIEW,
    "INSERT INTO t (v, n) VALUES ('tx1', 2)",
    STATE,
    "SAVEPOINT a",
    { "INSERT INTO t (v, n) VALUES ('tx2', 2)", ins = true },
    PID,
    "ROLLBACK TO a",
    "SELECT v FROM t WHERE v LIKE 'tx%' ORDER BY v",
    STATE,
    { "INSERT INTO t (v, n) VALUES ('tx3', 3)", ins = true },
    "RELEASE a",
    "COMMIT",
    "SELECT v FROM t WHERE v LIKE 'tx%' ORDER BY v",
    STATE,
    -- a transaction rolled back, then ROLLBACK with none open
    "BEGIN",
    { "INSERT INTO t (v, n) VALUES ('gone', 1)", ins = true },
    "UPDATE t SET n = n + 1",
    STATE,
    "ROLLBACK",
    "SELECT count(*), sum(n) FROM t",
    STATE,
    "ROLLBACK",
    -- a trigger's RAISE(ROLLBACK) ends the transaction: COMMIT then has none to commit
    "BEGIN",
    { "INSERT INTO t (v, n) VALUES ('tx4', 4)", ins = true },
    "INSERT INTO t (v, n) VALUES ('rollback', 1)",
    "SELECT count(*) FROM t WHERE v = 'tx4'",
    "COMMIT",
    STATE,
    -- a SAVEPOINT as the transaction: OR ROLLBACK ends it, a second one is released
    "SAVEPOINT s1",
    { "INSERT INTO t (v, n) VALUES ('s1', 1)", ins = true },
    "INSERT OR ROLLBACK INTO t (v, n) VALUES ('a2', 1)",
    "RELEASE s1",
    STATE,
    "SAVEPOINT s2",
    { "INSERT INTO t (v, n) VALUES ('s2', 2)", ins = true },
    "RELEASE s2",
    "SELECT v FROM t WHERE v LIKE 's%' ORDER BY v",
    -- reads that fail
    "SELECT * FROM nosuch",
    "SELECT abs(-9223372036854775807 - 1)",
    STATE,
    DUMP,
    -- burst 1: plain inserts, failing ones, OR IGNORE, an OR FAIL failing half way, RETURNING,
    -- an upsert, a WITHOUT ROWID insert, last_insert_rowid() read by writes in the batch
    { burst = {
        { "INSERT INTO t (v, n) VALUES ('b1', 1)", ins = true },
        PID_RET,
        "INSERT INTO t (v, n) VALUES ('a2', 1)",
        "INSERT INTO t (v, n) VALUES ('b2', -5)",
        "UPDATE t SET n = n + 100 WHERE v = 'b1'",
        { "INSERT OR IGNORE INTO t (v, n) VALUES ('b1', 0)", ins = false },
        "INSERT OR FAIL INTO t (v, n) VALUES ('b3', 1), ('b4', 2), ('b1', 3), ('b5', 4)",
        PID_RET,
        { "INSERT INTO t (v, n) VALUES ('b6', 6)", ret = { "id", "v" }, ins = true },
        "DELETE FROM t WHERE v = 'b2'",
        { "INSERT INTO kv (k, v) VALUES ('x', 5) ON CONFLICT (k) DO UPDATE SET hits = hits + 1",
          ins = false },
        "INSERT INTO w (k, v) VALUES ('k3', 3)",
        PID_RET,
    } },
    STATE,
    VIEW,
    DUMP,
    -- burst 2: a trigger's RAISE(ROLLBACK) ends the writer's batch transaction
    { burst = {
        { "INSERT INTO t (v, n) VALUES ('c1', 1)", ins = true },
        "UPDATE t SET n = n + 1 WHERE v = 'c1'",
        PID_RET,
        "INSERT INTO t (v, n) VALUES ('rollback', 1)",
        { "INSERT INTO t (v, n) VALUES ('c2', 2)", ins = true },
        PID_RET,
    } },
    STATE,
    VIEW,
    DUMP,
    -- burst 3: INSERT OR ROLLBACK, RAISE(ABORT) and UPDATE OR FAIL failing half way
    { burst = {
        { "INSERT INTO t (v, n) VALUES ('d1', 1)", ins = true },
        "INSERT OR ROLLBACK INTO t (v, n) VALUES ('d2', 1), ('c1', 2)",
        PID_RET,
        "INSERT INTO t (v, n) VALUES ('d3', 1), ('abort', 2)",
        PID_RET,
        { "INSERT INTO t (v, n) VALUES ('d4', 4)", ins = true },
        "UPDATE OR FAIL t SET n = 5 - n * 3 WHERE v IN ('d1', 'd4')",
    } },
    STATE,
    VIEW,
    DUMP,
    -- burst 4: RAISE(ROLLBACK) ends a batch whose first write inserts nothing, so a write that
    -- runs again after it must not see the last_insert_rowid() its first run left (the two
    -- writes after the failing one form the batch that conn:stats() counts)
    { burst = {
        "UPDATE t SET n = n + 1 WHERE v = 'c2'",
        PID_RET,
        "INSERT INTO t (v, n) VALUES ('rollback', 3)",
        PID_RET,
        "UPDATE t SET n = n + 1 WHERE v = 'c1'",
    } },
    STATE,
    "SELECT id, pid FROM c ORDER BY id",
    -- burst 5: OR ROLLBACK ends a batch whose first write reads changes(), which must be the
    -- update's before it, also when it runs again
    "UPDATE t SET n = n + 1 WHERE v LIKE 'c%'",
    { burst = {
        { "INSERT INTO c (pid) VALUES (changes())", ret = { "id", "pid" }, ins = true },
        { "INSERT INTO c (pid) VALUES (total_changes())", ret = { "id", "pid" }, ins = true },
        "INSERT OR ROLLBACK INTO t (v, n) VALUES ('c1', 9)",
        { "INSERT INTO c (pid) VALUES (changes())", ret = { "id", "pid" }, ins = true },
        "UPDATE t SET n = n + 1 WHERE v = 'c2'",
    } },
    STATE,
    VIEW,
    DUMP,
}

-- ---- the script as numbered steps ------------------------------------------------------------

local function is_dml(sql)
    local word = sql:match("^%s*(%a+)")
    word = word and word:upper()
    return word == "INSERT" or word == "UPDATE" or word == "DELETE" or word == "REPLACE"
end

-- SCRIPT as a flat list of items: a step { no, sql, base, ret, ins, dml } or a burst
-- { burst = n, open = step, steps = {step, ...}, close = step }.
local function build(script)
    local items, count, bursts = {}, 0, 0
    local function step(s, where)
        if type(s) == "string" then
            s = { s }
        end
        count = count + 1
        local sql = s[1]
        if s.ret then
            sql = sql .. " RETURNING " .. table.concat(s.ret, ", ")
        end
        return { no = count, sql = sql, base = s[1], ret = s.ret, ins = s.ins, dml = is_dml(s[1]),
                 where = where }
    end
    for _, s in ipairs(script) do
        if s == DUMP then
            for _, q in ipairs(DUMP_QUERIES) do
                items[#items + 1] = step(q)
            end
        elseif type(s) == "table" and s.burst then
            bursts = bursts + 1
            local b = { burst = bursts, steps = {} }
            b.open = step("BEGIN IMMEDIATE", "burst " .. bursts .. ", its gate")
            for i, w in ipairs(s.burst) do
                b.steps[i] = step(w, "burst " .. bursts .. ", write " .. i)
            end
            b.close = step("COMMIT", "burst " .. bursts .. ", its gate")
            items[#items + 1] = b
        else
            items[#items + 1] = step(s)
        end
    end
    return items, count, bursts
end

local ITEMS, STEP_COUNT, BURST_COUNT = build(SCRIPT)

-- ---- values and how they are shown -------------------------------------------------------------

-- Equal values of the same Lua type (integer and float differ on Lua 5.3+).
local function same_value(a, b)
    if type(a) ~= type(b) then
        return false
    end
    if type(a) == "number" and mtype and mtype(a) ~= mtype(b) then
        return false
    end
    return a == b
end

local function show(v)
    if v == NULL then
        return "NULL"
    elseif type(v) == "string" then
        return string.format("%q", v)
    elseif type(v) == "number" then
        if mtype and mtype(v) == "integer" then
            return string.format("%d", v)
        elseif mtype then
            return string.format("%.17g (float)", v)
        end
        if v == math.floor(v) and math.abs(v) <= 2 ^ 63 then
            return string.format("%.0f", v) -- LuaJIT: an integral double, as an integer
        end
        return string.format("%.17g", v)
    end
    return tostring(v)
end

local function show_row(row)
    local out = {}
    for i = 1, row.n or #row do
        out[i] = show(row[i])
    end
    return "{" .. table.concat(out, ", ") .. "}"
end

local function show_result(res)
    if not res.ok then
        return "error " .. string.format("%q", res.message)
    end
    local rows = {}
    for i = 1, math.min(#res.rows, 6) do
        rows[i] = show_row(res.rows[i])
    end
    if #res.rows > 6 then
        rows[#rows + 1] = "... (" .. #res.rows .. " rows)"
    end
    return "ok, rows [" .. table.concat(rows, ", ") .. "]"
end

-- ---- the pool --------------------------------------------------------------------------------

-- Runs sql on the pool: { ok = true, names, rows, rowcount, lastrowid } or
-- { ok = false, message }. Never raises.
local function pool_exec(conn, sql)
    local ok, res = pcall(function()
        local cur = conn:execute(sql)
        local rows = cur:fetchall()
        local names = {}
        for i, d in ipairs(cur.description or {}) do
            names[i] = d.name
        end
        local out = { ok = true, names = names, rows = rows, rowcount = cur.rowcount,
                      lastrowid = cur.lastrowid }
        cur:close()
        return out
    end)
    if ok then
        return res
    end
    if sqlite.is_error(res) then
        return { ok = false, message = tostring(res.message), kind = res.kind }
    end
    return { ok = false, message = "(not an error object) " .. tostring(res) }
end

-- ---- the reference: one plain connection through LuaDBI ------------------------------------

-- SQLite's own message, from LuaDBI's "<what> failed <message>".
local function sqlite_message(err)
    err = tostring(err)
    local prefixes = { "^Error preparing statement handle: ", "^Execute failed ", "^Fetch failed " }
    for _, prefix in ipairs(prefixes) do
        local rest, n = err:gsub(prefix, "", 1)
        if n > 0 then
            return rest
        end
    end
    return err
end

-- Runs sql on the LuaDBI connection, every row fetched and the statement closed (so it holds no
-- lock). Returns the raw rows (NULL is a hole) and the column names, or nil and the message.
local function dbi_run(db, sql)
    local st, err = db:prepare(sql)
    if not st then
        return nil, sqlite_message(err)
    end
    local ok, e = st:execute()
    if not ok then
        st:close()
        return nil, sqlite_message(e)
    end
    local names = st:columns()
    local rows = {}
    local fetched, ferr = pcall(function()
        while true do
            local row = st:fetch(false)
            if not row then
                break
            end
            rows[#rows + 1] = row
        end
    end)
    st:close()
    if not fetched then
        return nil, sqlite_message(ferr)
    end
    return rows, names
end

-- The names of sql's result columns (nothing runs), or nil and the prepare error.
local function dbi_columns(db, sql)
    local st, err = db:prepare(sql)
    if not st then
        return nil, sqlite_message(err)
    end
    local names = st:columns()
    st:close()
    return names
end

-- "typeof(e), quote(e), e" for each expression: what the reference selects to read exactly.
local function exact_list(exprs)
    local out = {}
    for i, e in ipairs(exprs) do
        out[i] = string.format("typeof(%s), quote(%s), %s", e, e, e)
    end
    return table.concat(out, ", ")
end

local function unhex(h)
    return (h:gsub("%x%x", function(byte) return string.char(tonumber(byte, 16)) end))
end

-- A value from its typeof(), quote() and LuaDBI's own reading of it.
local function decode(kind, quoted, raw)
    if kind == "null" then
        return NULL
    elseif kind == "integer" then
        return tonumber(quoted) -- exact on 5.3+ (LuaDBI's own reading keeps 32 bits)
    elseif kind == "real" then
        return raw -- sqlite3_column_double: exact
    elseif kind == "text" then
        return raw
    elseif kind == "blob" then
        return unhex(quoted:match("^[xX]'(%x*)'$"))
    end
    error("unknown SQLite type " .. tostring(kind))
end

-- Rows of an exact query (typeof, quote, raw per column) decoded, each {v..., n = ncols}.
local function decode_rows(raw_rows, ncols)
    local rows = {}
    for r, raw in ipairs(raw_rows) do
        local row = { n = ncols }
        for i = 1, ncols do
            row[i] = decode(raw[3 * i - 2], raw[3 * i - 1], raw[3 * i])
        end
        rows[r] = row
    end
    return rows
end

-- One integer the reference computes (its connection state is not changed by a SELECT).
local function dbi_integer(db, expr)
    local rows, err = dbi_run(db, "SELECT quote(" .. expr .. ")")
    assert(rows, err)
    return tonumber(rows[1][1])
end

-- Runs a step on the reference: { ok = true, names, rows, changes, last_rowid } (changes and
-- last_rowid for INSERT/UPDATE/DELETE/REPLACE) or { ok = false, message }.
local function ref_exec(db, step)
    local names, err = dbi_columns(db, step.sql)
    if not names then
        return { ok = false, message = err }
    end
    local sql, ncols = step.sql, #names
    if ncols > 0 then
        if step.ret then
            sql = step.base .. " RETURNING " .. exact_list(step.ret)
        elseif step.sql:match("^%s*[Ss][Ee][Ll][Ee][Cc][Tt]%f[%W]") then
            local cols = {}
            for i = 1, ncols do
                cols[i] = "c" .. i
            end
            sql = string.format("WITH pasyn_ref(%s) AS (%s) SELECT %s FROM pasyn_ref",
                                table.concat(cols, ", "), step.sql, exact_list(cols))
        else
            error("step " .. step.no .. ": the reference cannot read exact values of `" .. step.sql
                  .. "` (give a SELECT, or a RETURNING list as ret)")
        end
    end
    local raw_rows, e = dbi_run(db, sql)
    if not raw_rows then
        return { ok = false, message = e }
    end
    local res = { ok = true, names = names, rows = decode_rows(raw_rows, ncols) }
    if step.dml then
        res.changes = dbi_integer(db, "changes()")
        res.last_rowid = dbi_integer(db, "last_insert_rowid()")
    end
    return res
end

local function open_reference(path)
    local db = assert(DBI.Connect("SQLite3", path))
    db:autocommit(true) -- LuaDBI would wrap everything in its own transaction otherwise
    assert(dbi_run(db, "PRAGMA journal_mode = WAL")) -- as the pool's file
    return db
end

-- ---- comparing -------------------------------------------------------------------------------

-- The rows of `list` that are not in `other` (as multisets, by their shown form), shown.
local function rows_missing_from(list, other)
    local left = {}
    for _, row in ipairs(other) do
        local key = show_row(row)
        left[key] = (left[key] or 0) + 1
    end
    local out = {}
    for _, row in ipairs(list) do
        local key = show_row(row)
        if (left[key] or 0) > 0 then
            left[key] = left[key] - 1
        else
            out[#out + 1] = key
        end
    end
    return "[" .. table.concat(out, ", ") .. "]"
end

-- How the pool's rows differ from the reference's, in one line; nil when they do not.
local function rows_difference(got, want, names)
    if #got ~= #want then
        return string.format("%d rows from the pool, %d from one connection; rows only the pool "
                             .. "returned: %s; rows only one connection returned: %s", #got, #want,
                             rows_missing_from(got, want), rows_missing_from(want, got))
    end
    local cells, count, first = {}, 0, nil
    for r = 1, #want do
        local g, w = got[r], want[r]
        if g.n ~= w.n then
            return string.format("row %d has %s values from the pool, %d from one connection", r,
                                 tostring(g.n), w.n)
        end
        for i = 1, w.n do
            if not same_value(g[i], w[i]) then
                count = count + 1
                first = first or r
                if #cells < 3 then
                    cells[#cells + 1] = string.format("row %d, column %d (%s): pool %s, one connection %s",
                                                      r, i, tostring(names[i]), show(g[i]), show(w[i]))
                end
            end
        end
    end
    if count == 0 then
        return nil
    end
    return string.format("%s%s (row %d: pool %s; one connection %s)", table.concat(cells, "; "),
                         count > #cells and string.format("; and %d more values", count - #cells) or "",
                         first, show_row(got[first]), show_row(want[first]))
end

-- Appends to `bad` every difference between the pool's answer and the reference's for step.
local function compare(bad, config, step, got, want)
    local function miss(fmt, ...)
        bad[#bad + 1] = string.format("[%s] step %d%s `%s`: ", config, step.no,
                                      step.where and " (" .. step.where .. ")" or "", step.sql)
            .. string.format(fmt, ...)
    end
    if got.ok ~= want.ok or (not got.ok and got.message ~= want.message) then
        miss("pool %s; one connection %s", show_result(got), show_result(want))
        return
    end
    if not got.ok then
        return
    end
    if #got.names ~= #want.names then
        miss("%d result columns from the pool, %d from one connection", #got.names, #want.names)
    else
        for i = 1, #got.names do
            if got.names[i] ~= want.names[i] then
                miss("column %d is named %q by the pool, %q by one connection", i,
                     tostring(got.names[i]), tostring(want.names[i]))
            end
        end
    end
    local rows_differ = rows_difference(got.rows, want.rows, want.names)
    if rows_differ then
        miss("%s", rows_differ)
    end
    local rowcount = step.dml and want.changes or -1
    if not same_value(got.rowcount, rowcount) then
        miss("cur.rowcount: pool %s, one connection %s (%s)", show(got.rowcount), show(rowcount),
             step.dml and "changes()" or "not a write")
    end
    if step.ins == true and not same_value(got.lastrowid, want.last_rowid) then
        miss("cur.lastrowid: pool %s, one connection %s (last_insert_rowid())", show(got.lastrowid),
             show(want.last_rowid))
    elseif step.ins == false and got.lastrowid ~= nil then
        miss("cur.lastrowid: pool %s, expected nil (the statement inserted no row)", show(got.lastrowid))
    end
end

-- Compares conn.total_changes with the reference's total_changes() after a step; tells of a
-- difference only when it changes, so one wrong count is not reported again at every step.
local function compare_total(bad, config, conn, db, label, state)
    local got, want = conn.total_changes, dbi_integer(db, "total_changes()")
    local diff = same_value(got, want) and 0 or (type(got) == "number" and got - want or tostring(got))
    if diff ~= state.diff then
        if diff ~= 0 then
            bad[#bad + 1] = string.format("[%s] after %s: conn.total_changes: pool %s, one connection %s",
                                          config, label, show(got), show(want))
        else
            bad[#bad + 1] = string.format("[%s] after %s: conn.total_changes agrees again (%s)",
                                          config, label, show(want))
        end
        state.diff = diff
    end
end

-- ---- one configuration ---------------------------------------------------------------------

local function batches(conn)
    return conn:stats().writer.batches
end

-- A burst: on the pool, every write in a coroutine of its own, all queued behind a transaction
-- the main coroutine holds until they are; on the reference, the same statements in order.
local function run_burst(bad, config, cfg, conn, db, burst)
    local before = batches(conn)
    local got = { open = pool_exec(conn, burst.open.sql) }
    local handles = {}
    for i, s in ipairs(burst.steps) do
        handles[i] = sqlite.spawn(pool_exec, conn, s.sql)
    end
    coroutine.yield() -- the spawned coroutines run up to their write, which waits for COMMIT
    got.close = pool_exec(conn, burst.close.sql)
    for i, h in ipairs(handles) do
        got[i] = h:join()
    end
    local formed = batches(conn) - before

    compare(bad, config, burst.open, got.open, ref_exec(db, burst.open))
    compare(bad, config, burst.close, got.close, ref_exec(db, burst.close))
    for i, s in ipairs(burst.steps) do
        compare(bad, config, s, got[i], ref_exec(db, s))
    end
    if cfg.group_commit and formed < 1 then
        bad[#bad + 1] = string.format("[%s] burst %d: formed no group-commit batch (writer.batches "
                                      .. "went from %s to %s): it proves nothing", config, burst.burst,
                                      show(before), show(before + formed))
    elseif not cfg.group_commit and formed ~= 0 then
        bad[#bad + 1] = string.format("[%s] burst %d: %s group-commit batches with group_commit = false",
                                      config, burst.burst, show(formed))
    end
end

-- Runs the whole script on a pool opened with cfg and on a reference connection; returns the
-- differences (a burst that formed no batch with group_commit on is one).
local function run_config(cfg, config)
    local path, cleanup = support.tmpdb()
    local ref_path = support.temp_path()
    local conn = sqlite.connect(cfg.memory and ":memory:" or path,
                                { readers = cfg.readers, group_commit = cfg.group_commit })
    local db = open_reference(ref_path)
    local bad, total_state = {}, { diff = 0 }
    local ok, err = pcall(sqlite.run, function()
        for _, item in ipairs(ITEMS) do
            if item.burst then
                run_burst(bad, config, cfg, conn, db, item)
                compare_total(bad, config, conn, db, "burst " .. item.burst, total_state)
            else
                compare(bad, config, item, pool_exec(conn, item.sql), ref_exec(db, item))
                compare_total(bad, config, conn, db, "step " .. item.no, total_state)
            end
        end
    end)
    conn:close()
    db:close()
    cleanup()
    support.remove_db(ref_path)
    if not ok then
        error(err, 0)
    end
    return bad
end

local CONFIGS = {}
for _, readers in ipairs({ 0, 1, 3 }) do
    for _, group_commit in ipairs({ false, true }) do
        CONFIGS[#CONFIGS + 1] = { readers = readers, group_commit = group_commit }
    end
end
CONFIGS[#CONFIGS + 1] = { readers = 3, group_commit = true, memory = true }

describe("the pool answers as one SQLite connection (differential, " .. STEP_COUNT .. " statements, "
         .. BURST_COUNT .. " bursts)", function()
    if not has_dbi then
        it("needs LuaDBI as the reference connection", function()
            error("LuaDBI is not installed (Debian: apt-get install lua-dbi-sqlite3): " .. tostring(DBI))
        end)
        return
    end

    it("runs a script of 60+ statements with bursts and RETURNING steps", function()
        local seen = { burst = 0, ret = 0 }
        for _, item in ipairs(ITEMS) do
            if item.burst then
                seen.burst = seen.burst + 1
            elseif item.ret then
                seen.ret = seen.ret + 1
            end
        end
        assert.is_true(STEP_COUNT >= 60, "only " .. STEP_COUNT .. " statements")
        assert.is_true(seen.burst >= 3, "only " .. seen.burst .. " bursts")
        assert.is_true(seen.ret >= 3, "only " .. seen.ret .. " RETURNING steps outside bursts")
    end)

    for _, cfg in ipairs(CONFIGS) do
        local config = string.format("readers = %d, group_commit = %s, %s", cfg.readers,
                                     tostring(cfg.group_commit), cfg.memory and ":memory:" or "file")
        it("answers every statement as one connection does, with " .. config
           .. (cfg.group_commit and ", every burst forming a group-commit batch" or ""), function()
            local bad = run_config(cfg, config)
            assert.is_true(#bad == 0, #bad .. " differences from one SQLite connection:\n"
                           .. table.concat(bad, "\n"))
        end)
    end
end)
