-- pasyn_ngx_app.lua: the request handlers that spec/nginx/nginx.t drives in a real nginx.
-- Every location calls one function of this module. The settings come from pasyn_ngx_conf.lua,
-- which the harness writes into its temporary prefix.
local cfg = require "pasyn_ngx_conf"

-- The adapter under test. The harness picks it (PASYN_NGX_MODULE, default "pasyn_sqlite.ngx";
-- "pasyn_sqlite" blocks the worker): this is the one line.
local sqlite = require(cfg.module)
local DBI = require "DBI"

local ngx = ngx
local M = {}

-- One Connection per worker, kept at module level and shared by every request of the worker.
-- init_worker uses it first (so that is where it opens); `opening` guards a concurrent first
-- use from two light threads, where connect itself yields.
local conn, opening
local function db()
    while opening do ngx.sleep(0.001) end
    if not conn then
        opening = true
        local ok, c = pcall(sqlite.connect, cfg.db, {
            synchronous = cfg.synchronous, readers = cfg.readers, busy_timeout = 10000 })
        opening = false
        if not ok then error(c, 0) end
        conn = c
    end
    return conn
end

-- LuaDBI (blocking) for comparison: one handle per worker on its own file (same content), so
-- that the two do not contend for one write lock; statements prepared once.
local dbh, sths = nil, {}
local function dbi(sql)
    if not dbh then
        dbh = assert(DBI.Connect("SQLite3", cfg.dbi_db))
        dbh:autocommit(true)
        for _, p in ipairs { "PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=10000",
                             "PRAGMA synchronous=" .. cfg.synchronous } do
            local s = assert(dbh:prepare(p)); assert(s:execute()); s:close()
        end
    end
    local sth = sths[sql]
    if not sth then
        sth = assert(dbh:prepare(sql))
        sths[sql] = sth
    end
    return sth
end
local function dbi_rows(sql, ...)
    local sth = dbi(sql)
    assert(sth:execute(...))
    local out = {}
    for row in sth:rows(false) do out[#out + 1] = row end
    return out
end

local function fail(status, msg)
    ngx.log(status >= 500 and ngx.ERR or ngx.INFO, "pasyn_ngx_app: ", msg)
    ngx.status = status
    ngx.say(msg)
    return ngx.exit(status)
end

-- Runs fn(); an error answers 500 with its text (and goes to error.log).
local function guarded(fn)
    local ok, err = pcall(fn)
    if not ok then return fail(500, tostring(err)) end
end

local POINT = "SELECT id, v FROM kv WHERE id = ?"
local INSERT = "INSERT INTO w(v, pid) VALUES(?, ?)"
local SCAN = "SELECT count(*), sum(x), max(s) FROM big WHERE id <= ?"

local function elapsed_ms(t0)
    ngx.update_time()
    return math.floor((ngx.now() - t0) * 1000 + 0.5)
end

function M.ping() ngx.say("pong") end

-- /point?id=N: one row by primary key, checked against what the harness stored.
local function point_reply(id, row)
    if not row then return fail(404, "no row " .. id) end
    if row[1] ~= id or row[2] ~= "v" .. id then
        return fail(500, ("wrong row for %d: %s %s"):format(id, tostring(row[1]), tostring(row[2])))
    end
    ngx.say(row[1], " ", row[2])
end
function M.point()
    local id = tonumber(ngx.var.arg_id)
    if not id then return fail(400, "id?") end
    guarded(function() point_reply(id, db():execute(POINT, { id }):fetchone()) end)
end
function M.dbi_point()
    local id = tonumber(ngx.var.arg_id)
    if not id then return fail(400, "id?") end
    guarded(function() point_reply(id, dbi_rows(POINT, id)[1]) end)
end

-- /write: INSERT one row; 200 only once the call returned (committed), counted in a shared
-- dict so that the harness can compare the table with the acknowledgements.
local stats = ngx.shared.stats
function M.write()
    guarded(function()
        local cur = db():execute(INSERT, { "w", ngx.worker.pid() })
        stats:incr("acked", 1, 0)
        ngx.say(cur.lastrowid)
    end)
end
function M.dbi_write()
    guarded(function()
        local sth = dbi(INSERT)
        assert(sth:execute("w", ngx.worker.pid()))
        stats:incr("dbi_acked", 1, 0)
        ngx.say("ok")
    end)
end

-- /scan?n=N: the long read; answers "count sum max elapsed_ms".
function M.scan()
    local n = tonumber(ngx.var.arg_n) or cfg.scan_n
    ngx.update_time()
    local t0 = ngx.now()
    guarded(function()
        local r = db():execute(SCAN, { n }):fetchone()
        ngx.say(r[1], " ", r[2], " ", r[3], " ", elapsed_ms(t0))
    end)
end
function M.dbi_scan()
    local n = tonumber(ngx.var.arg_n) or cfg.scan_n
    ngx.update_time()
    local t0 = ngx.now()
    guarded(function()
        local r = dbi_rows(SCAN, n)[1]
        ngx.say(r[1], " ", r[2], " ", r[3], " ", elapsed_ms(t0))
    end)
end

-- /count?t=w|events: rows in a table of the pasyn database (for the harness's checks).
function M.count()
    local t = ngx.var.arg_t
    if t ~= "w" and t ~= "events" and t ~= "kv" then return fail(400, "t?") end
    guarded(function()
        ngx.say(db():execute("SELECT count(*) FROM " .. t):fetchone()[1], " ",
                stats:get("acked") or 0)
    end)
end

-- /null: sqlite.null is ngx.null, and SQL NULL comes back as it.
function M.null()
    guarded(function()
        local v = db():execute("SELECT NULL, ?", { ngx.null }):fetchone()
        ngx.say(tostring(sqlite.null == ngx.null), " ", tostring(v[1] == ngx.null), " ",
                tostring(v[2] == ngx.null))
    end)
end

-- init_worker: cannot yield; the calls block and must work. Opens the shared connection,
-- reads a value and records the worker in `events`.
local init_value, init_error
function M.init_worker()
    local ok, err = pcall(function()
        local c = db()
        init_value = c:execute("SELECT v FROM kv WHERE id = 42"):fetchone()[1]
        c:execute("INSERT INTO events(kind, token) VALUES('init_worker', ?)",
                  { tostring(ngx.worker.pid()) })
    end)
    if not ok then
        init_error = tostring(err)
        ngx.log(ngx.ERR, "pasyn_ngx_app init_worker: ", init_error)
    end
end
function M.init_value()
    ngx.say(init_value or "nil", " ", init_error or "")
end

-- log phase: a write there (cannot yield: blocks), checked later through /event?t=TOKEN.
function M.log_write()
    local t = ngx.var.arg_t
    if not t then return end
    local ok, err = pcall(function()
        db():execute("INSERT INTO events(kind, token) VALUES('log', ?)", { t })
    end)
    if not ok then ngx.log(ngx.ERR, "pasyn_ngx_app log phase: ", tostring(err)) end
end
function M.event()
    guarded(function()
        local r = db():execute("SELECT kind FROM events WHERE token = ?",
                               { ngx.var.arg_t or "" }):fetchone()
        ngx.say(r and r[1] or "none")
    end)
end

-- header_filter: a read there sets a response header.
function M.header_filter()
    local ok, r = pcall(function()
        return db():execute("SELECT v FROM kv WHERE id = 7"):fetchone()[1]
    end)
    ngx.header["X-Pasyn"] = ok and r or ("error: " .. tostring(r)):gsub("%c", " ")
end

-- A request that leaves a transaction open (BEGIN, an insert, then ngx.exit), and one that
-- says whether it is in a transaction and inserts a row: ngx_lua runs later requests on the
-- same coroutine, which must not find the first one's transaction.
function M.txn_leak()
    local c = db()
    c:execute("BEGIN")
    c:execute("INSERT INTO events(kind, token) VALUES('leak', ?)", { ngx.var.arg_t })
    return ngx.exit(200)
end
function M.txn_after()
    guarded(function()
        local c = db()
        local inside = c.in_transaction
        c:execute("INSERT INTO events(kind, token) VALUES('after', ?)", { ngx.var.arg_t })
        ngx.say(tostring(inside))
    end)
end

-- Keeps a timer running for ?s= seconds (to use up lua_max_running_timers).
function M.hog_timer()
    local seconds = tonumber(ngx.var.arg_s) or 1
    local ok, err = ngx.timer.at(0, function()
        ngx.sleep(seconds)
    end)
    ngx.say(ok and "ok" or err)
end

-- rewrite and access handlers query (and yield there); content says what they read.
function M.rewrite_read()
    ngx.ctx.rewrite = db():execute(POINT, { 44 }):fetchone()[2]
end
function M.access_read()
    ngx.ctx.access = db():execute(POINT, { 55 }):fetchone()[2]
end
function M.phases()
    ngx.say(tostring(ngx.ctx.rewrite), " ", tostring(ngx.ctx.access))
end

-- Queries where a C call lies between the handler and the query (they block): at the top
-- level of a required module, and in a table.sort comparator.
function M.c_boundary()
    guarded(function()
        local top = require "pasyn_ngx_toplevel"
        local ids = { 3, 1, 2 }
        local looked = 0
        table.sort(ids, function(a, b)
            looked = looked + 1
            return db():execute(POINT, { a }):fetchone()[1] < db():execute(POINT, { b }):fetchone()[1]
        end)
        ngx.say(top, " ", table.concat(ids, ","), " ", looked > 0)
    end)
end

-- sqlite.run inside a handler: the built-in scheduler waits on sqlite.fd() (blocking the
-- worker), also while the adapter's dispatcher holds the hub's socket.
function M.run()
    guarded(function()
        local a = db():execute(POINT, { 77 }):fetchone()[2] -- yields: the dispatcher runs
        local b, c = sqlite.run(function()
            local h = sqlite.spawn(function() return db():execute(POINT, { 78 }):fetchone()[2] end)
            return db():execute(POINT, { 79 }):fetchone()[2], h:join()
        end)
        ngx.say(a, " ", b, " ", c)
    end)
end

-- two ngx.threads querying at once, waited for both.
function M.threads()
    guarded(function()
        local function q(id) return db():execute(POINT, { id }):fetchone()[2] end
        local t1 = ngx.thread.spawn(q, 11)
        local t2 = ngx.thread.spawn(q, 22)
        local ok1, a = ngx.thread.wait(t1)
        local ok2, b = ngx.thread.wait(t2)
        ngx.say(tostring(ok1 and a), " ", tostring(ok2 and b))
    end)
end

-- a timer (ngx.timer.at 0) reads and writes; the handler waits for its answer in the dict.
function M.timer()
    local key = "timer:" .. (ngx.var.arg_t or "x")
    local ok, err = ngx.timer.at(0, function(premature)
        if premature then return end
        local ok2, v = pcall(function()
            local c = db()
            local r = c:execute(POINT, { 33 }):fetchone()[2]
            c:execute("INSERT INTO events(kind, token) VALUES('timer', ?)", { key })
            return r
        end)
        stats:set(key, ok2 and v or ("error: " .. tostring(v)))
    end)
    if not ok then return fail(500, "timer: " .. tostring(err)) end
    for _ = 1, 300 do
        local v = stats:get(key)
        if v then return ngx.say(v) end
        ngx.sleep(0.01)
    end
    return fail(504, "timer gave no answer")
end

-- connect, query and close inside a request (connect and close may yield too).
function M.fresh()
    guarded(function()
        local c = sqlite.connect(cfg.db, { readers = 1 })
        local v = c:execute(POINT, { 44 }):fetchone()[2]
        c:close()
        ngx.say(v, " ", tostring(c.closed))
    end)
end

return M
