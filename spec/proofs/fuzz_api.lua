-- The random-call fuzzer of the Lua API: from many coroutines of the built-in scheduler,
-- seeded random calls over the whole public API (connect and its options; execute,
-- executemany, executescript with SQL from a small grammar of valid and invalid statements and
-- parameters of random types and shapes; cursors and their fetches; transaction(fn), commit,
-- rollback, interrupt, close at random moments, timeouts, fields, row shapes; SQL functions,
-- aggregates and collations in Lua, trace, on_change, serialize, deserialize and backup;
-- calls from a coroutine the scheduler does not know, which block). It checks that:
--   - nothing crashes (under make fuzz the module is the ASan build);
--   - nothing hangs: a watchdog coroutine fails the run when a call has not returned after
--     STUCK_SECONDS (statements carry timeouts; transactions are ended after a few calls);
--   - every error raised is an error object with a known kind (API.md, "Errors"), or the very
--     value the fuzzer's own function raised through transaction or an executemany iterator;
--     anything else (a raw string) fails the run, printed with the seed and the call;
--   - at the end, a fresh connection reads every table and PRAGMA integrity_check is "ok".
--
-- As a script, from the top of the tree (make fuzz runs it under the ASan build):
--   lua5.4 spec/proofs/fuzz_api.lua [--seconds N] [--calls N] [--seed N] [--no-wrong-self] [-v]
-- Calls with a wrong self (conn.execute(cur, ...), ...) are among the random calls unless
-- --no-wrong-self. spec/fuzz_api_spec.lua runs it briefly through M.run.
local sqlite = require "pasyn_sqlite"
local errors = require "pasyn_sqlite.errors"

local M = {}

local WORKERS = 12
local STUCK_SECONDS = 60
local MAX_TXN_CALLS = 6 -- a worker that owns a transaction ends it after this many calls
local unpack = table.unpack or unpack -- luacheck: ignore
local now = os.time

-- ---- random values ------------------------------------------------------------------------

local rnd -- math.random, seeded per run

local function pick(list)
    return list[rnd(1, #list)]
end

local function chance(p)
    return rnd() < p
end

local BIG = { 0, 1, -1, 2 ^ 53, -(2 ^ 53), math.maxinteger or 2 ^ 63, math.mininteger or -(2 ^ 63) }

local function random_string(n)
    local t = {}
    for i = 1, n do
        t[i] = string.char(rnd(0, 255))
    end
    return table.concat(t)
end

-- A value to bind: mostly ones the API takes, now and then one it must refuse.
local function random_value()
    local r = rnd(1, 20)
    if r <= 4 then
        return rnd(-1000, 1000)
    elseif r == 5 then
        return pick(BIG)
    elseif r <= 7 then
        return rnd() * 1e6 - 5e5
    elseif r == 8 then
        return pick({ 0 / 0, 1 / 0, -1 / 0, -0.0, 1e308, 5e-324 })
    elseif r <= 11 then
        return random_string(rnd(0, 12))
    elseif r == 12 then
        return string.rep("x", rnd(1000, 300000))
    elseif r == 13 then
        return sqlite.blob(random_string(rnd(0, 40)))
    elseif r == 14 then
        return sqlite.null
    elseif r == 15 then
        return chance(0.5)
    elseif r == 16 then
        return nil
    elseif r == 17 then
        return pick({ {}, { 1 }, function() end, coroutine.create(function() end), io.stdout })
    else
        return rnd(1, 50)
    end
end

-- Parameters in one of the shapes execute takes (or not): an array, a map, the values as
-- extra arguments, nothing. Returns them as a packed list of arguments.
local function random_params(count, names)
    local shape = rnd(1, 6)
    if chance(0.15) then
        count = count + rnd(-1, 1) -- a wrong count
    end
    if shape == 1 and names then
        local map = {}
        for _, name in ipairs(names) do
            if not chance(0.05) then
                map[name] = random_value()
            end
        end
        return { n = 1, map }
    elseif shape <= 3 then
        local arr = { n = count }
        for i = 1, count do
            arr[i] = random_value()
        end
        return { n = 1, arr }
    elseif shape == 4 then
        local args = { n = count }
        for i = 1, count do
            args[i] = random_value()
        end
        return args
    elseif shape == 5 then
        return { n = 0 }
    end
    return { n = 1, random_value() }
end

-- ---- SQL ------------------------------------------------------------------------------------

-- name, SQL text, parameter count, named parameters (or nil)
local STATEMENTS = {
    { "select range", "SELECT id, a, b FROM t1 WHERE id > ? ORDER BY id LIMIT ?", 2 },
    { "select all", "SELECT * FROM t1", 0 },
    { "count", "SELECT count(*), sum(length(b)) FROM t1", 0 },
    { "insert", "INSERT INTO t1 (a, b) VALUES (?, ?)", 2 },
    { "insert id", "INSERT INTO t1 (id, a) VALUES (?, ?)", 2 },
    { "insert returning", "INSERT INTO t1 (a) VALUES (?) RETURNING id, a", 1 },
    { "update", "UPDATE t1 SET a = ? WHERE id = ?", 2 },
    { "delete some", "DELETE FROM t1 WHERE id % ? = 0", 1 },
    { "delete many", "DELETE FROM t1 WHERE id < (SELECT max(id) - 200 FROM t1)", 0 },
    { "upsert", "INSERT OR REPLACE INTO t2 (k, v) VALUES (?, ?)", 2 },
    { "t2", "SELECT k, v FROM t2 ORDER BY k", 0 },
    { "named", "SELECT :a, @b, $c", 3, { "a", "b", "c" } },
    { "named insert", "INSERT INTO t2 (k, v) VALUES (:k, :v)", 2, { "k", "v" } },
    { "numbered", "SELECT ?2, ?1, ?2", 2 },
    { "cte", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        .. "SELECT x, zeroblob(100) FROM c", 1 },
    { "cte endless", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        .. "SELECT sum(x) FROM c", 0 },
    { "zeroblob", "SELECT zeroblob(?)", 1 },
    { "begin", "BEGIN", 0 },
    { "begin immediate", "BEGIN IMMEDIATE", 0 },
    { "commit", "COMMIT", 0 },
    { "rollback", "ROLLBACK", 0 },
    { "savepoint", "SAVEPOINT fz", 0 },
    { "release", "RELEASE fz", 0 },
    { "rollback to", "ROLLBACK TO fz", 0 },
    { "user_version", "PRAGMA user_version", 0 },
    { "set user_version", "PRAGMA user_version = 7", 0 },
    { "journal_mode", "PRAGMA journal_mode", 0 },
    { "leave wal", "PRAGMA journal_mode = delete", 0 },
    { "conn state", "SELECT last_insert_rowid(), changes(), total_changes()", 0 },
    { "temp table", "CREATE TEMP TABLE IF NOT EXISTS tt (x)", 0 },
    { "temp insert", "INSERT INTO tt VALUES (?)", 1 },
    { "temp read", "SELECT count(*) FROM tt", 0 },
    { "create", "CREATE TABLE IF NOT EXISTS t3 (x, y)", 0 },
    { "drop", "DROP TABLE IF EXISTS t3", 0 },
    { "t3 insert", "INSERT INTO t3 VALUES (?, ?)", 2 },
    { "index", "CREATE INDEX IF NOT EXISTS t1_a ON t1 (a)", 0 },
    { "drop index", "DROP INDEX IF EXISTS t1_a", 0 },
    { "attach", "ATTACH ':memory:' AS aux", 0 },
    { "detach", "DETACH aux", 0 },
    { "syntax", "SELEC 1", 0 },
    { "no table", "SELECT * FROM nosuch", 0 },
    { "two", "SELECT 1; SELECT 2", 0 },
    { "empty", "", 0 },
    { "blank", "  -- nothing\n", 0 },
    { "nul", "SELECT 1\0 + 2", 0 },
    { "constraint", "INSERT INTO t2 (k, v) VALUES (NULL, 1)", 0 },
    { "type", "SELECT abs(?)", 1 },
    { "explain", "EXPLAIN QUERY PLAN SELECT * FROM t1 WHERE a = ?", 1 },
    -- the SQL functions of the "extend" calls (no such function where none is defined)
    { "lua function", "SELECT fz_f(a), fz_f(?) FROM t1 LIMIT 50", 1 },
    { "lua function write", "UPDATE t1 SET b = fz_f(b) WHERE id % 7 = ?", 1 },
    { "lua aggregate", "SELECT fz_agg(a) FROM t1 GROUP BY id % 3", 0 },
    { "lua collation", "SELECT a FROM t1 ORDER BY CAST(a AS TEXT) COLLATE fz_coll LIMIT 20", 0 },
}

local WRITES = { "INSERT INTO t1 (a, b) VALUES (?, ?)", "UPDATE t1 SET b = ? WHERE id = ?",
                 "INSERT OR REPLACE INTO t2 (k, v) VALUES (?, ?)", "DELETE FROM t1 WHERE id = ? OR a = ?",
                 "SELECT ?, ?" --[[ not a write: executemany refuses it ]] }

local function random_statement()
    if chance(0.03) then
        return "garbage", random_string(rnd(0, 30)):gsub("%z", " "), 0
    end
    local s = pick(STATEMENTS)
    return s[1], s[2], s[3], s[4]
end

-- A statement that ends by itself (without a timeout) and, with `no_begin`, begins no
-- transaction.
local function bounded_statement(no_begin)
    local name, sql, count, names = random_statement()
    while name == "cte endless" or (no_begin and (name:find("begin") or name == "savepoint")) do
        name, sql, count, names = random_statement()
    end
    return name, sql, count, names
end

local function random_script()
    local parts = {}
    for i = 1, rnd(1, 5) do
        local _, sql, count = bounded_statement()
        if count == 0 then
            parts[#parts + 1] = sql
        else
            parts[#parts + 1] = "INSERT INTO t1 (a) VALUES (" .. i .. ")"
        end
    end
    return table.concat(parts, ";\n")
end

-- ---- the run's state ----------------------------------------------------------------------

local SCHEMA = [[
    CREATE TABLE IF NOT EXISTS t1 (id INTEGER PRIMARY KEY, a, b);
    CREATE TABLE IF NOT EXISTS t2 (k TEXT PRIMARY KEY NOT NULL, v)]]

local state -- per run: path, conns, cursors, failures, ...

local function random_options()
    local o = {}
    if chance(0.7) then o.readers = rnd(0, 3) end
    if chance(0.3) then o.group_commit = chance(0.5) end
    if chance(0.3) then o.synchronous = pick({ "off", "normal", "full", "extra", "FULL" }) end
    if chance(0.3) then o.statement_cache = rnd(0, 8) end
    if chance(0.3) then o.timeout = pick({ 0.05, 0.5, 2 }) end
    if chance(0.2) then o.row = pick({ "array", "named", function(_, row) return row end }) end
    -- Short waits for another pool's lock (the pools share the file): the default's 5 s,
    -- met by a call that blocks, would stall every coroutine that long.
    o.busy_timeout = rnd(0, 100)
    if chance(0.2) then o.stealing = chance(0.5) end
    if chance(0.1) then o.foreign_keys = true end
    if chance(0.1) then o.defensive = true end
    if chance(0.05) then o.readonly = true end
    if chance(0.1) then o.pragmas = { cache_size = rnd(-2000, 2000), temp_store = "memory" } end
    if chance(0.03) then o.journal_mode = pick({ "wal", "delete", "memory" }) end
    -- refused ones
    if chance(0.03) then o.readers = pick({ -1, 1.5, "2", 1000 }) end
    if chance(0.03) then o.no_such_option = 1 end
    if chance(0.03) then o.pragmas = { ["bad name"] = 1 } end
    if chance(0.03) then o.pragmas = { no_such_pragma = "x" } end
    if chance(0.03) then o.timeout = pick({ 0, -1, "x" }) end
    return o
end

local function open_conn(database, options)
    options.busy_timeout = options.busy_timeout or 50
    local conn = sqlite.connect(database or state.path, options)
    if database == ":memory:" then
        state.memory[conn] = true
        pcall(conn.executescript, conn, SCHEMA)
    end
    return conn
end

-- ---- checking what a call raised ----------------------------------------------------------

local OWN = setmetatable({}, { __tostring = function() return "the fuzzer's own error" end })

local function fail(what, err, trace)
    local msg = string.format("seed %d, worker %s, call %d: %s raised %s: %s\n%s", state.seed,
                              tostring(state.names[coroutine.running()]), state.calls, what, type(err),
                              tostring(err), trace or "")
    state.failures[#state.failures + 1] = msg
    if state.log then state.log("FAILURE " .. msg) end
end

-- Runs fn(...) as the call `what`; an error must be an error object of a known kind, or OWN.
local function call(what, fn, ...)
    state.calls = state.calls + 1
    if state.trace then
        state.trace(string.format("%.3f %s call %d: %s", os.clock(),
                                  tostring(state.names[coroutine.running()]), state.calls, what))
    end
    local trace
    local res = { xpcall(fn, function(e)
        if not (sqlite.is_error(e) or e == OWN) then
            trace = debug.traceback("", 2)
        end
        return e
    end, ...) }
    if res[1] then
        return true, unpack(res, 2)
    end
    local err = res[2]
    if err == OWN then
        state.own = state.own + 1
    elseif sqlite.is_error(err) and errors.kinds[err.kind] ~= nil and type(err.message) == "string" then
        state.kinds[err.kind] = (state.kinds[err.kind] or 0) + 1
    else
        fail(what, err, trace)
    end
    return false, err
end

-- ---- the calls ------------------------------------------------------------------------------

local function some_conn()
    return state.conns[rnd(1, #state.conns)]
end

-- A kept cursor of `conn` (any connection's when conn is nil), or nil. A coroutine that owns a
-- transaction on one pool must not wait on another pool's writer: a coroutine owning a
-- transaction there may wait on ours, and neither wait has a bound (see the README, Tests).
local function some_cursor(conn)
    local n = #state.cursors
    local from = rnd(1, n + 1)
    for k = 0, n - 1 do
        local cur = state.cursors[(from + k - 1) % n + 1]
        if conn == nil or cur.connection == conn then
            return cur
        end
    end
    return nil
end

local function keep_cursor(cur)
    if type(cur) == "table" then
        if #state.cursors < 16 then
            state.cursors[#state.cursors + 1] = cur
        else
            state.cursors[rnd(1, 16)] = cur
        end
    end
end

local ops -- name -> function(conn, depth)

local function do_execute(target, depth)
    local name, sql, count, names = random_statement()
    if name == "cte" then
        return call("execute " .. name, function()
            keep_cursor(target:execute(sql, rnd(0, 30000)))
        end)
    elseif name == "cte endless" then -- it ends only when its timeout stops it
        return call("execute " .. name, function()
            local cur = target.cursor and target:cursor() or target
            cur.timeout = pick({ 0.01, 0.1 })
            keep_cursor(cur:execute(sql))
        end)
    elseif name == "zeroblob" then
        return call("execute " .. name, function()
            keep_cursor(target:execute(sql, pick({ 0, 10, 1e6, -5 })))
        end)
    end
    local params = random_params(count, names)
    local ok, cur = call("execute " .. name, function()
        return target:execute(sql, unpack(params, 1, params.n))
    end)
    if ok then
        keep_cursor(cur)
        if chance(0.5) then
            ops.fetch(nil, depth, cur)
        end
    end
end

local function do_executemany(target)
    local sql = pick(WRITES)
    local n = rnd(0, 40)
    local seq
    local shape = rnd(1, 6)
    if shape <= 3 then
        seq = {}
        for i = 1, n do
            seq[i] = chance(0.97) and { random_value(), rnd(1, 100) } or random_value()
        end
    elseif shape <= 5 then
        local i = 0
        local limit = shape == 5 and 25000 or n -- over the chunk size: many chunks
        local raise_at = chance(0.2) and rnd(1, limit + 1) or nil
        seq = function()
            i = i + 1
            if i == raise_at then
                error(OWN, 0)
            end
            if i <= limit then
                return { rnd(1, 1000), i }
            end
        end
    else
        seq = random_value()
    end
    call("executemany", function() keep_cursor(target:executemany(sql, seq)) end)
end

ops = {
    execute = function(conn, depth)
        do_execute(chance(0.8) and conn or (some_cursor(conn) or conn), depth)
    end,
    executemany = function(conn)
        do_executemany(chance(0.8) and conn or (some_cursor(conn) or conn))
    end,
    executescript = function(conn)
        call("executescript", function() keep_cursor(conn:executescript(random_script())) end)
    end,
    fetch = function(conn, _, cur)
        cur = cur or some_cursor(conn)
        if not cur then return end
        local how = rnd(1, 6)
        if how == 1 then
            call("fetchone", cur.fetchone, cur)
        elseif how == 2 then
            call("fetchmany", cur.fetchmany, cur, pick({ nil, 0, 1, 5, 1000, -1, 1.5, "x" }))
        elseif how == 3 then
            call("fetchall", cur.fetchall, cur)
        elseif how == 4 then
            call("rows", function()
                local k = 0
                for _ in cur:rows() do
                    k = k + 1
                    if k > 50 then break end
                end
            end)
        elseif how == 5 then
            call("cursor close", cur.close, cur)
        else
            call("cursor fields", function()
                local _ = { cur.description, cur.rowcount, cur.lastrowid, cur.connection, cur.arraysize }
                if chance(0.3) then cur.arraysize = pick({ 1, 3, 0 }) end
                if chance(0.2) then cur.rowcount = 5 end -- read-only: ProgrammingError
                if chance(0.2) then cur.timeout = pick({ 0.01, 1, 0, "x", false }) end
                if chance(0.2) then cur.row = pick({ "array", "named", "bad", 5 }) end
                if chance(0.1) then cur.no_such_field = 1 end
            end)
        end
    end,
    cursor = function(conn)
        call("cursor", function() keep_cursor(conn:cursor()) end)
    end,
    transaction = function(conn, depth)
        local mode = pick({ nil, "deferred", "immediate", "exclusive", "IMMEDIATE", "bogus", 5 })
        call("transaction", conn.transaction, conn, function(c)
            for _ = 1, rnd(1, 4) do
                local op = pick({ "execute", "execute", "executemany", "fetch", "sleep" })
                if depth < 2 and chance(0.2) then op = "transaction" end
                ops[op](c, depth + 1)
            end
            if chance(0.15) then error(OWN, 0) end
            if chance(0.05) then c:commit() end -- ends it itself
            return 1, 2
        end, mode)
    end,
    commit = function(conn)
        call("commit", conn.commit, conn)
    end,
    rollback = function(conn)
        call("rollback", conn.rollback, conn)
    end,
    interrupt = function(conn)
        call("interrupt", conn.interrupt, conn)
    end,
    stats = function(conn)
        call("stats", conn.stats, conn)
    end,
    fields = function(conn)
        call("connection fields", function()
            local _ = { conn.closed, conn.in_transaction }
            _ = conn.total_changes
            if chance(0.3) then conn.row = pick({ "array", "named", function(_, r) return r end, "bad" }) end
            if chance(0.3) then conn.timeout = pick({ nil, 0.05, 1, 0, -2 }) end
            if chance(0.1) then conn.closed = false end -- read-only
            if chance(0.1) then conn.nope = 1 end
        end)
    end,
    sleep = function()
        sqlite.sleep(pick({ 0, 0, 0.001, 0.01 }))
    end,
    extend = function(conn)
        -- SQL functions, aggregates and collations in Lua: defined, replaced, removed, some
        -- raising or returning what SQL cannot hold; and with arguments the API refuses.
        local fns = {
            function(...) return (...) end,
            function(x) return type(x) == "number" and x + 1 or x end,
            function() error(OWN, 0) end, -- becomes the statement's OperationalError
            function() return {} end,
            function() return sqlite.blob("b") end,
            function() coroutine.yield() end,
            function() return conn:execute("SELECT 1") end, -- refused inside a function
            nil,
        }
        local how = rnd(1, 5)
        if how == 1 then
            call("create_function", conn.create_function, conn, pick({ "fz_f", "fz_f", "", 5 }),
                 pick({ -1, 1, 2, 128, 1.5 }), pick(fns), pick({ nil, { deterministic = true }, 5 }))
        elseif how == 2 then
            local factory = pick({
                function() return { n = 0, step = function(o) o.n = o.n + 1 end,
                                    finalize = function(o) return o.n end } end,
                function() return { step = function() error(OWN, 0) end } end,
                function() return 5 end,
                nil, "factory",
            })
            call("create_aggregate", conn.create_aggregate, conn, "fz_agg", pick({ 1, -1, 0 }), factory)
        elseif how == 3 then
            call("create_collation", conn.create_collation, conn, pick({ "fz_coll", "fz_coll", {} }),
                 pick({ function(a, b) return a < b and -1 or a > b and 1 or 0 end,
                        function() error(OWN, 0) end, function() return "x" end, nil, 5 }))
        elseif how == 4 then
            call("trace", conn.trace, conn, pick({ function() state.traced = (state.traced or 0) + 1 end,
                                                    nil, nil, 5 }))
        else
            call("on_change", conn.on_change, conn,
                 pick({ function() state.changed = (state.changed or 0) + 1 end, nil, nil, "fn" }),
                 pick({ nil, nil, 1, 10, 0, 1.5 }))
        end
    end,
    copy = function(conn)
        -- serialize, deserialize and backup, good and bad. Every pool of the run but the
        -- ":memory:" ones is on the run's file: a backup from one of them into another is
        -- refused (the same file); one that would replace the run's file (from a ":memory:"
        -- pool, or of another database than main) is not made.
        local how = rnd(1, 4)
        if how == 1 then
            call("serialize", conn.serialize, conn, pick({ nil, "main", "temp", "aux", "nope", 5 }))
        elseif how == 2 then
            local bytes = pick({ "", "garbage", string.rep("\0", 512) })
            if chance(0.5) then
                local ok, b = call("serialize", conn.serialize, conn)
                bytes = ok and b or bytes
            end
            call("deserialize", function()
                local c = sqlite.deserialize(bytes, { readers = rnd(0, 2) })
                if chance(0.5) then c:execute("SELECT count(*) FROM sqlite_master"):fetchall() end
                c:close()
            end)
        else
            local opts = pick({ nil, { pages = pick({ 1, 5, 0, "x" }) }, { name = pick({ "temp", "nope" }) },
                                { pages = 2, progress = function()
                                    if chance(0.2) then error(OWN, 0) end
                                    sqlite.sleep(0)
                                end } })
            local dest = pick({ state.path .. "-copy", some_conn(), ":memory:", "/nonexistent/x.db", 5 })
            if type(dest) == "table" and not state.memory[dest] and (state.memory[conn] or
                                                                      (opts and opts.name)) then
                dest = state.path .. "-copy"
            end
            call("backup", conn.backup, conn, dest, opts)
        end
    end,
    close = function(conn, depth)
        if depth > 0 or chance(0.7) then return end -- rarely, and not inside a transaction
        call("close", conn.close, conn)
        for i, c in ipairs(state.conns) do
            if c == conn then
                local ok, new = call("connect", open_conn, chance(0.1) and ":memory:" or nil,
                                     random_options())
                if not ok then
                    ok, new = call("connect", open_conn, nil, {})
                end
                state.conns[i] = ok and new or conn
            end
        end
    end,
    connect = function()
        local ok, conn = call("connect", open_conn, chance(0.1) and ":memory:" or nil, random_options())
        if ok then
            if chance(0.5) then
                local name, sql = bounded_statement()
                call("execute " .. name, conn.execute, conn, sql)
            end
            call("close", conn.close, conn)
        end
    end,
    foreign = function(conn)
        -- From a coroutine the scheduler does not know: the call blocks (and fails rather than
        -- wait for another coroutine's transaction).
        local co = coroutine.create(function()
            -- No BEGIN: a transaction would stay open until the coroutine is collected.
            local name, sql = bounded_statement(true)
            call("foreign execute " .. name, function() keep_cursor(conn:execute(sql)) end)
        end)
        local ok, err = coroutine.resume(co)
        if not ok then fail("foreign coroutine", err) end
    end,
    bad_args = function(conn)
        local cases = {
            { "connect(nil)", sqlite.connect, nil },
            { "connect({})", sqlite.connect, {} },
            { "connect(path, 5)", sqlite.connect, state.path, 5 },
            { "execute(123)", conn.execute, conn, 123 },
            { "execute(nil)", conn.execute, conn },
            { "executescript({})", conn.executescript, conn, {} },
            { "executemany(sql, 5)", conn.executemany, conn, WRITES[1], 5 },
            { "executemany(sql, {1, 2})", conn.executemany, conn, WRITES[1], { 1, 2 } },
            { "transaction('x')", conn.transaction, conn, "x" },
            { "transaction(fn, 5)", conn.transaction, conn, function() end, 5 },
        }
        local c = pick(cases)
        call(c[1], c[2], unpack(c, 3, 5))
    end,
    wrong_self = function(conn)
        local cur = some_cursor()
        if not cur then -- conn may be closing: cursor() raises then
            local ok, c = call("cursor", conn.cursor, conn)
            if not ok then return end
            cur = c
        end
        local cases = {
            { "Connection.execute(cursor)", conn.execute, cur, "SELECT 1" },
            { "Connection.execute(nil)", conn.execute, nil, "SELECT 1" },
            { "Connection.close(5)", conn.close, 5 },
            { "Connection.commit({})", conn.commit, {} },
            { "Connection.transaction(cursor)", conn.transaction, cur, function() end },
            { "Cursor.fetchone(connection)", cur.fetchone, conn },
            { "Cursor.fetchall(nil)", cur.fetchall, nil },
            { "Cursor.execute('x')", cur.execute, "x", "SELECT 1" },
            { "Cursor.close({})", cur.close, {} },
            { "sqlite.blob(5)", sqlite.blob, 5 },
            { "Connection.create_function(cursor)", conn.create_function, cur, "f", 1, print },
            { "Connection.create_aggregate(nil)", conn.create_aggregate, nil, "f", 1, print },
            { "Connection.create_collation(5)", conn.create_collation, 5, "f", print },
            { "Connection.trace(cursor)", conn.trace, cur, print },
            { "Connection.on_change({})", conn.on_change, {}, print },
            { "Connection.backup(cursor)", conn.backup, cur, state.path .. "-copy" },
            { "Connection.serialize(nil)", conn.serialize, nil },
            { "sqlite.deserialize(5)", sqlite.deserialize, 5 },
        }
        local c = pick(cases)
        call(c[1], c[2], unpack(c, 3, 6))
    end,
}

local WEIGHTS = {
    execute = 30, executemany = 6, executescript = 3, fetch = 20, cursor = 2, transaction = 6,
    commit = 3, rollback = 3, interrupt = 1, stats = 1, fields = 2, sleep = 4, close = 1,
    connect = 1, foreign = 2, bad_args = 2, wrong_self = 2, extend = 2, copy = 1,
}

local function weighted(names)
    local total = 0
    for _, n in ipairs(names) do total = total + WEIGHTS[n] end
    local r = rnd() * total
    for _, n in ipairs(names) do
        r = r - WEIGHTS[n]
        if r <= 0 then return n end
    end
    return names[#names]
end

-- ---- the run --------------------------------------------------------------------------------

local function worker(name, op_names, deadline)
    local running = { name = name, since = false }
    state.names[coroutine.running()] = name
    state.running[#state.running + 1] = running
    local txn_calls, owned = 0, nil
    while now() < deadline and state.calls < state.max_calls and #state.failures == 0 do
        local conn = owned or some_conn()
        local op = weighted(op_names)
        running.since, running.op = now(), op
        ops[op](conn, 0)
        running.since = false
        -- A transaction this worker owns ends after a few calls: other writers wait for it.
        owned = nil
        for _, c in ipairs(state.conns) do
            if not c.closed and c.in_transaction then
                owned = c
                txn_calls = txn_calls + 1
                if txn_calls > MAX_TXN_CALLS or chance(0.3) then
                    call("end transaction", chance(0.5) and c.commit or c.rollback, c)
                    owned = (not c.closed and c.in_transaction) and c or nil
                end
            end
        end
        if not owned then txn_calls = 0 end
    end
end

-- The watchdog: fails the run when a call has not returned after STUCK_SECONDS.
local function watchdog()
    while not state.done do
        sqlite.sleep(0.25)
        for _, r in ipairs(state.running) do
            if r.since and now() - r.since > STUCK_SECONDS then
                fail("watchdog", "the call " .. tostring(r.op) .. " of worker " .. r.name
                     .. " has not returned after " .. STUCK_SECONDS .. " s")
                io.stderr:write(state.failures[#state.failures], "\n")
                os.exit(1)
            end
        end
    end
end

-- Runs the fuzzer. opts: seed, seconds (default 10), calls (a cap), wrong_self (bool, default
-- true), log
-- (function(line)). Returns true and the figures { calls, errors = {kind = n}, own, rows,
-- seed }, or false and the failures (with the seed and the call).
function M.run(opts)
    local seed = opts.seed or os.time()
    math.randomseed(seed)
    rnd = math.random
    local path = os.tmpname()
    state = { seed = seed, path = path, conns = {}, cursors = {}, failures = {}, calls = 0, own = 0,
              kinds = {}, running = {}, trace = opts.trace, log = opts.log,
              memory = setmetatable({}, { __mode = "k" }), -- the ":memory:" pools
              names = setmetatable({}, { __mode = "k" }), max_calls = opts.calls or math.huge }
    local names = {}
    for n in pairs(WEIGHTS) do
        if n ~= "wrong_self" or opts.wrong_self ~= false then
            names[#names + 1] = n
        end
    end
    table.sort(names)
    local deadline = now() + (opts.seconds or 10)
    local ok, err = pcall(sqlite.run, function()
        state.conns[1] = open_conn(nil, {})
        state.conns[1]:executescript(SCHEMA)
        for i = 2, 3 do
            local opened, conn = call("connect", open_conn, nil, random_options())
            state.conns[i] = opened and conn or open_conn(nil, {})
        end
        sqlite.spawn(watchdog)
        local handles = {}
        for w = 1, WORKERS do
            handles[w] = sqlite.spawn(function()
                -- An error outside call() is the fuzzer's own bug: where it came from.
                local ok, err = xpcall(function() worker("w" .. w, names, deadline) end,
                                       function(e) return debug.traceback(tostring(e), 2) end)
                if not ok then
                    fail("worker w" .. w, err)
                end
            end)
        end
        for _, h in ipairs(handles) do
            h:join()
        end
        state.done = true
        for _, c in ipairs(state.conns) do
            call("close", c.close, c)
        end
    end)
    if not ok then
        fail("the run", err)
    end
    -- A fresh connection reads it all, and the file is whole.
    local rows
    ok, err = pcall(function()
        local conn = sqlite.connect(path)
        local check = conn:execute("PRAGMA integrity_check"):fetchall()
        if #check ~= 1 or check[1][1] ~= "ok" then
            error("integrity_check: " .. tostring(check[1] and check[1][1]))
        end
        rows = conn:execute("SELECT count(*) FROM t1"):fetchone()[1]
            + conn:execute("SELECT count(*) FROM t2"):fetchone()[1]
        conn:close()
    end)
    if not ok then
        fail("the final check", err)
    end
    for _, suffix in ipairs({ "", "-wal", "-shm", "-journal", "-copy", "-copy-wal", "-copy-shm",
                              "-copy-journal" }) do
        os.remove(path .. suffix)
    end
    if #state.failures > 0 then
        return false, table.concat(state.failures, "\n")
    end
    return true, { calls = state.calls, errors = state.kinds, own = state.own, rows = rows, seed = seed }
end

local name = ...
if name == "proofs.fuzz_api" then
    return M
end

-- As a script.
local args, opts = { ... }, { seconds = 30 }
local i = 1
while args[i] do
    local a = args[i]
    if a == "--seconds" then opts.seconds = tonumber(args[i + 1]); i = i + 1
    elseif a == "--calls" then opts.calls = tonumber(args[i + 1]); i = i + 1
    elseif a == "--seed" then opts.seed = tonumber(args[i + 1]); i = i + 1
    elseif a == "--no-wrong-self" then opts.wrong_self = false
    elseif a == "-v" then opts.log = print
    elseif a == "--trace" then opts.trace = function(l) io.stderr:write(l, "\n") end
    else error("fuzz_api.lua: unknown argument " .. a) end
    i = i + 1
end
opts.seed = opts.seed or os.time()
print(string.format("fuzz_api: seed %d, %s s%s", opts.seed, opts.seconds,
                    opts.wrong_self == false and ", without wrong-self calls" or ""))
local ok, result = M.run(opts)
if not ok then
    io.stderr:write("fuzz_api FAILED:\n", result, "\n")
    os.exit(1)
end
local kinds = {}
for k, n in pairs(result.errors) do kinds[#kinds + 1] = k .. " " .. n end
table.sort(kinds)
print(string.format("fuzz_api: %d calls, seed %d; errors raised: %s; the fuzzer's own errors passed "
                    .. "through: %d; rows at the end: %d; integrity_check ok", result.calls, result.seed,
                    table.concat(kinds, ", "), result.own, result.rows))
