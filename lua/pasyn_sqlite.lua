-- pasyn_sqlite: async SQLite for Lua. Connections and cursors in the manner of Python's
-- sqlite3; every call that talks to the database yields inside the built-in scheduler and
-- blocks anywhere else. The work itself runs on the C core's writer and reader threads.

local core = require "pasyn_sqlite.core"
local errors = require "pasyn_sqlite.errors"
local sched = require "pasyn_sqlite.scheduler"

local M = {
    version = core.version,
    sqlite_version = core.sqlite_version,
    null = core.null,
    blob = core.blob,
    is_error = errors.is_error,
    run = sched.run,
    spawn = sched.spawn,
    sleep = sched.sleep,
    fd = core.fd,
    dispatch = sched.dispatch,
}
for kind in pairs(errors.kinds) do
    M[kind] = kind
end

local co_running = coroutine.running
local rawget = rawget
local unpack = table.unpack or unpack -- luacheck: ignore
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local function raise(kind, message, sql)
    error(errors.new(kind, message, sql), 3)
end

-- ---- who owns a transaction -------------------------------------------------------------

local owner_ids = setmetatable({}, { __mode = "k" })
local last_owner = 1

-- Who calls: whether the call must block (it does not come from a coroutine of the scheduler
-- that may yield), the id the writer knows the caller by (1: the main thread), and the
-- coroutine (nil for the main thread).
local function caller()
    local co, ismain = co_running()
    if co == nil or ismain then
        return true, 1, nil
    end
    local id = owner_ids[co]
    if not id then
        last_owner = last_owner + 1
        id = last_owner
        owner_ids[co] = id
    end
    return not sched.can_yield(co), id, co
end

-- A coroutine that has owned a transaction gets a guard: when the coroutine ends (the
-- scheduler says so) or is collected, the guard has the writer roll back what the coroutine
-- left open, on every pool it began a transaction on. The writer runs that after the
-- coroutine's own queued tasks and only if the coroutine still owns the transaction.
local guards = setmetatable({}, { __mode = "k" }) -- coroutine -> guard
local newproxy = newproxy -- luacheck: ignore (Lua 5.1 and LuaJIT: no __gc on tables)

local function new_guard(id)
    local guard = { id = id, pools = setmetatable({}, { __mode = "k" }) } -- pool -> true
    local function gone()
        for pool in pairs(guard.pools) do
            core.abandon(pool, id)
        end
    end
    if newproxy then
        guard.proxy = newproxy(true)
        getmetatable(guard.proxy).__gc = gone
    else
        setmetatable(guard, { __gc = gone })
    end
    return guard
end

-- After a statement of `co`: if it left `co` owning a transaction on the pool, guard it.
local function note_owner(pool, id, co)
    if co and core.txn_owner(pool) == id then
        local guard = guards[co]
        if not guard then
            guard = new_guard(id)
            guards[co] = guard
        end
        guard.pools[pool] = true
    end
end

-- A coroutine of the scheduler ended: nothing of it is in flight, so what the writer says now
-- is the truth; roll back what it left open and disarm its guard.
sched.on_end = function(co)
    local guard = guards[co]
    if guard then
        guards[co] = nil
        local pools = guard.pools
        guard.pools = {} -- disarmed: collecting it later does nothing
        for pool in pairs(pools) do
            if core.txn_owner(pool) == guard.id then
                core.abandon(pool, guard.id)
            end
        end
    end
end

-- ---- options ---------------------------------------------------------------------------

local function one_of(...)
    local set, list = {}, table.concat({ ... }, ", ")
    for _, v in ipairs({ ... }) do
        set[v] = true
    end
    return function(v)
        return type(v) == "string" and set[v:lower()] ~= nil, "one of: " .. list
    end
end

local function count(max)
    return function(v)
        return math.type and math.type(v) == "integer" and v >= 0 and v <= max
                   or (not math.type and type(v) == "number" and v >= 0 and v <= max and v % 1 == 0),
               "a whole number from 0 to " .. max
    end
end

local function is(t)
    return function(v)
        return type(v) == t, "a " .. t
    end
end

local function seconds(v)
    return type(v) == "number" and v > 0 and v < math.huge, "a number of seconds above 0"
end

local function row_shape(v)
    return v == "array" or v == "named" or type(v) == "function", '"array", "named" or a function'
end

local option_checks = {
    readers = count(64),
    busy_timeout = count(2 ^ 31 - 1),
    journal_mode = one_of("wal", "delete", "truncate", "persist", "memory", "off"),
    synchronous = one_of("off", "normal", "full", "extra"),
    foreign_keys = is("boolean"),
    readonly = is("boolean"),
    pragmas = is("table"),
    statement_cache = count(100000),
    row = row_shape,
    group_commit = is("boolean"),
    timeout = seconds,
    stealing = is("boolean"),
}

local function check_options(options)
    if options == nil then
        return {}
    end
    if type(options) ~= "table" then
        raise("ProgrammingError", "connect: options must be a table, got " .. type(options))
    end
    local out = {}
    for k, v in pairs(options) do
        local check = option_checks[k]
        if not check then
            raise("ProgrammingError", "connect: unknown option '" .. tostring(k) .. "'")
        end
        local ok, want = check(v)
        if not ok then
            raise("ProgrammingError",
                  "connect: option '" .. k .. "' must be " .. want .. ", got " .. tostring(v))
        end
        out[k] = v
    end
    local pragmas = {}
    for name, value in pairs(out.pragmas or {}) do
        if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
            raise("ProgrammingError", "connect: pragma name '" .. tostring(name) .. "' is not a name")
        end
        local t = type(value)
        if t == "boolean" then
            value = value and "ON" or "OFF"
        elseif t ~= "string" and t ~= "number" then
            raise("ProgrammingError", "connect: pragma '" .. name .. "' needs a string, number or boolean")
        end
        pragmas[#pragmas + 1] = name
        pragmas[#pragmas + 1] = tostring(value)
    end
    out.pragmas = pragmas
    return out
end

-- ---- talking to the core -----------------------------------------------------------------

local Connection, Cursor = {}, {}

local function check_open(conn, sql)
    if conn.closed then
        raise("ConnectionClosedError", "the connection is closed", sql)
    elseif conn._closing then
        raise("PoolClosedError", "the connection is closing", sql)
    end
end

-- Takes what a core submit function returned (a task, or nil and an error it reported),
-- waits for the task and returns core.result's values, raising the statement's error.
local function finish(conn, sync, id, co, sql, names, stream, task, ekind, emsg)
    if not task then
        error(errors.new(ekind, emsg, sql), 3)
    end
    local pool = conn._pool
    sched.await(task, sync, pool, co)
    note_owner(pool, id, co)
    local known = conn._described[sql]
    local ok, a, b, c, d, e, f, g = core.result(task, pool, names, stream, known and known.ids,
                                                known and known.names, known and known.decltypes)
    if not ok then
        error(errors.from_result(a, b, c, d, sql), 3)
    end
    return a, b, c, d, e, f, g
end

-- ---- Cursor ---------------------------------------------------------------------------------

Cursor.__index = Cursor

-- The rows of a cursor that holds none. Shared, and never written: rows are only ever
-- overwritten at positions up to #cur._rows, which is 0 here.
local NO_ROWS = setmetatable({}, { __newindex = function() error("NO_ROWS is read-only", 2) end })

Cursor.arraysize = 1 -- until a cursor sets its own

-- A cursor is made with room for the 8 fields below (_sql and description, named as nil,
-- come with its first statement; lastrowid takes description's place after a write), so that
-- the table does not grow while a statement's results come in. A streamed result (_stream)
-- makes it grow.
local function new_cursor(conn)
    return setmetatable({
        connection = conn,
        rowcount = -1,
        row = conn.row,
        timeout = rawget(conn, "timeout"), -- nil would go to Connection.__index
        _rows = NO_ROWS, -- rows not fetched yet from _pos on; the ones before it are false
        _pos = 1,
        _sql = nil,
        description = nil,
    }, Cursor)
end

local function check_timeout(cur)
    local timeout = cur.timeout
    if timeout ~= nil and not seconds(timeout) then
        raise("ProgrammingError", "the cursor's timeout must be nil or a number of seconds " ..
              "above 0, got " .. tostring(timeout))
    end
end

local function check_cursor(cur)
    if cur._closed then
        raise("ProgrammingError", "the cursor is closed")
    end
    check_open(cur.connection)
end

local function end_stream(cur)
    if cur._stream then
        core.release(cur._stream)
        cur._stream = nil
    end
end

local DESCRIBED_MAX = 512

-- Sets cur.description from the result's column names and types. Descriptions are kept per
-- connection and SQL text with the core's ids for those columns: core.result hands back the
-- same name tables while they still describe the statement, and then the same description
-- serves again.
local function describe(cur, names, decltypes, id)
    if not names then
        cur.description = nil
        return
    end
    local described = cur.connection._described
    local known = described[cur._sql]
    if known and known.names == names then
        cur.description = known.description
        return
    end
    local d = {}
    for i = 1, #names do
        d[i] = { names[i], name = names[i], decltype = decltypes[i] }
    end
    if not known then
        local conn = cur.connection
        if conn._ndescribed >= DESCRIBED_MAX then -- SQL built on the fly: keep it bounded
            described, conn._ndescribed = {}, 0
            conn._described = described
        end
        conn._ndescribed = conn._ndescribed + 1
    end
    described[cur._sql] = { ids = { id }, names = names, decltypes = decltypes, description = d }
    cur.description = d
end

-- Takes a finished statement's results into the cursor.
local function take(cur, rows, rowcount, lastrowid, stream, names, decltypes, columns_id)
    cur._rows, cur._pos = rows or NO_ROWS, 1
    cur._stream = stream
    cur.rowcount = rowcount
    if lastrowid ~= nil then
        cur.lastrowid = lastrowid
    end
    describe(cur, names, decltypes, columns_id)
    return cur
end

-- Runs sql on the cursor; the caller has checked that the cursor and its connection are open.
local function run_statement(cur, kind, sql, ...)
    check_timeout(cur)
    if type(sql) ~= "string" then
        raise("ProgrammingError", "the SQL must be a string, got " .. type(sql))
    end
    if cur._stream then
        end_stream(cur)
    end
    cur._rows, cur._pos = NO_ROWS, 1
    cur._sql = sql
    local conn = cur.connection
    local sync, id, co = caller()
    return take(cur, finish(conn, sync, id, co, sql, cur.row == "named", nil,
                            core.submit(conn._pool, kind, id, sync, cur.timeout, sql, ...)))
end

function Cursor:execute(sql, ...)
    check_cursor(self) -- run_statement checks the timeout
    return run_statement(self, "exec", sql, ...)
end

function Cursor:executescript(script)
    check_cursor(self)
    return run_statement(self, "script", script)
end

local MANY_CHUNK = 10000

-- Rolls back the caller's transaction, or with `savepoint` just what that savepoint covers.
-- Errors are ignored: the one to raise is the error that made the caller undo.
local function undo(conn, savepoint)
    if savepoint then
        pcall(conn.execute, conn, "ROLLBACK TO " .. savepoint)
        pcall(conn.execute, conn, "RELEASE " .. savepoint)
    else
        pcall(conn.execute, conn, "ROLLBACK")
    end
end

-- Sends one parameter-set chunk of executemany to the writer; many_wait waits for it and
-- returns its rowcount (or raises its error).
local function many_submit(cur, sql, sets)
    local sync, id, co = caller()
    return { sync = sync, id = id, co = co, -- then what submit_many returned
             core.submit_many(cur.connection._pool, id, sync, cur.timeout, sql, sets) }
end

local function many_wait(cur, sql, sent)
    local _, rowcount = finish(cur.connection, sent.sync, sent.id, sent.co, sql, nil, nil, sent[1],
                               sent[2], sent[3])
    return rowcount
end

local function many_chunk(cur, sql, sets)
    return many_wait(cur, sql, many_submit(cur, sql, sets))
end

function Cursor:executemany(sql, seq)
    check_cursor(self)
    check_timeout(self)
    if type(sql) ~= "string" then
        raise("ProgrammingError", "the SQL must be a string, got " .. type(sql))
    end
    end_stream(self)
    self._rows, self._pos, self.description = NO_ROWS, 1, nil
    if type(seq) == "table" then
        self.rowcount = many_chunk(self, sql, seq) -- one task: the core keeps it atomic
        return self
    elseif type(seq) ~= "function" then
        raise("ProgrammingError", "executemany needs an array of parameter tables or an " ..
              "iterator function, got " .. type(seq), sql)
    end
    local function next_chunk()
        local sets = {}
        for i = 1, MANY_CHUNK do
            local params = seq()
            if params == nil then
                return sets, true
            end
            sets[i] = params
        end
        return sets, false
    end
    local sets, last = next_chunk()
    if last then
        self.rowcount = many_chunk(self, sql, sets)
        return self
    end
    -- Several chunks: a transaction of its own, or inside the caller's a savepoint, around
    -- them keeps the whole call all or nothing.
    local conn = self.connection
    local own = not conn.in_transaction
    conn:execute(own and "BEGIN IMMEDIATE" or "SAVEPOINT pasyn_executemany_all")
    local ok, err = pcall(function()
        local total, sent = 0, many_submit(self, sql, sets)
        while not last do
            -- The next chunk is built, and sent to queue behind this one, while the writer
            -- inserts this one. An error of either stops the call: this chunk's first (it came
            -- first). A chunk queued behind a failed one is waited for, and undone with the rest.
            local built, more, is_last = pcall(next_chunk)
            local following = built and many_submit(self, sql, more)
            local done, inserted = pcall(many_wait, self, sql, sent)
            if not done then
                if following then
                    pcall(many_wait, self, sql, following)
                end
                error(inserted, 0)
            elseif not built then
                error(more, 0)
            end
            total = total + inserted
            sent, last = following, is_last
        end
        self.rowcount = total + many_wait(self, sql, sent)
    end)
    if ok then
        ok, err = pcall(conn.execute, conn, own and "COMMIT" or "RELEASE pasyn_executemany_all")
    end
    if not ok then
        undo(conn, not own and "pasyn_executemany_all")
        error(err, 0)
    end
    return self
end

-- Brings the next chunk of a streamed result; false at the end.
local function more(cur)
    if not cur._stream then
        return false
    end
    check_timeout(cur)
    local stream = cur._stream
    local sync, id, co = caller()
    cur._stream = nil -- ended, unless the answer says it goes on
    local names
    if cur.row == "named" then -- the names the first chunk's rows have as keys
        names = {}
        for i, column in ipairs(cur.description) do
            names[i] = column[1]
        end
    end
    local rows, _, _, going_on = finish(cur.connection, sync, id, co, cur._sql, names, stream,
                                        core.fetch(stream, id, sync, cur.timeout))
    if cur._closed then -- closed by another coroutine while this chunk was on its way
        if going_on then
            core.release(going_on)
        end
        return false
    end
    cur._rows, cur._pos, cur._stream = rows or NO_ROWS, 1, going_on
    return true
end

local function shaped(cur, row)
    local shape = cur.row
    if shape == "array" or shape == "named" or shape == nil then
        return row
    end
    return (shape(cur, row))
end

function Cursor:fetchone()
    check_cursor(self)
    local pos = self._pos
    while pos > #self._rows do
        if not more(self) then
            return nil
        end
        pos = self._pos
    end
    local row = self._rows[pos]
    self._rows[pos] = false -- let a long streamed chunk's rows go as they are read
    self._pos = pos + 1
    return shaped(self, row)
end

local function collect(cur, limit)
    check_cursor(cur)
    local out, n = {}, 0
    while n < limit do
        local pos, last = cur._pos, #cur._rows
        if pos > last then
            if not more(cur) then
                break
            end
        elseif n == 0 and pos == 1 and last <= limit and type(cur.row) ~= "function" then
            out, n = cur._rows, last -- a whole chunk: hand it over as it is
            cur._rows, cur._pos = NO_ROWS, 1
        else
            local take_n = math.min(limit - n, last - pos + 1)
            local rows = cur._rows
            for i = 0, take_n - 1 do
                n = n + 1
                out[n] = shaped(cur, rows[pos + i])
                rows[pos + i] = false
            end
            cur._pos = pos + take_n
        end
    end
    return out
end

local function is_count(n)
    return type(n) == "number" and n >= 0 and n % 1 == 0
end

function Cursor:fetchmany(n)
    n = n == nil and self.arraysize or n
    if not is_count(n) then
        raise("ProgrammingError", "fetchmany: the size (or cursor.arraysize) must be a " ..
              "non-negative whole number, got " .. tostring(n))
    end
    return collect(self, n)
end

function Cursor:fetchall()
    return collect(self, math.huge)
end

function Cursor:rows()
    return function()
        return self:fetchone()
    end
end

function Cursor:close()
    if self._closed then
        return
    end
    end_stream(self)
    self._closed = true
    self._rows, self._pos = NO_ROWS, 1
end
Cursor.__close = Cursor.close

-- ---- Connection -------------------------------------------------------------------------

local properties = {
    in_transaction = function(conn)
        return not conn.closed and core.txn_owner(conn._pool) == select(2, caller())
    end,
    total_changes = function(conn)
        check_open(conn)
        return core.total_changes(conn._pool)
    end,
}

Connection.__index = function(conn, key)
    local method = Connection[key]
    if method ~= nil then
        return method
    end
    local property = properties[key]
    if property then
        return property(conn)
    end
end

function Connection:cursor()
    check_open(self)
    return new_cursor(self)
end

function Connection:execute(sql, ...)
    check_open(self, sql)
    return run_statement(new_cursor(self), "exec", sql, ...)
end

function Connection:executemany(sql, seq)
    check_open(self, sql)
    return new_cursor(self):executemany(sql, seq)
end

function Connection:executescript(script)
    check_open(self, script)
    return run_statement(new_cursor(self), "script", script)
end

-- Ends the caller's own transaction; a caller that owns none changes nothing.
local function end_transaction(conn, sql)
    check_open(conn, sql)
    if conn.in_transaction then
        conn:execute(sql)
    end
end

function Connection:commit()
    end_transaction(self, "COMMIT")
end

function Connection:rollback()
    end_transaction(self, "ROLLBACK")
end

local begin_modes = {
    deferred = "BEGIN DEFERRED",
    immediate = "BEGIN IMMEDIATE",
    exclusive = "BEGIN EXCLUSIVE",
}

-- Runs fn(conn) in a transaction of the caller's: BEGIN <mode> ... COMMIT, or inside one the
-- caller already owns a savepoint; an error rolls back (to the savepoint) and goes on up.
function Connection:transaction(fn, mode)
    check_open(self)
    if type(fn) ~= "function" then
        raise("ProgrammingError", "transaction: a function is needed, got " .. type(fn))
    end
    local begin = begin_modes[mode == nil and "immediate" or type(mode) == "string" and mode:lower()]
    if not begin then
        raise("ProgrammingError", 'transaction: the mode must be "deferred", "immediate" or ' ..
              '"exclusive", got ' .. tostring(mode))
    end
    local nested = self.in_transaction
    self:execute(nested and "SAVEPOINT pasyn_transaction" or begin)
    local results = pack(pcall(fn, self))
    local ok = results[1]
    if ok and self.in_transaction then -- fn may have ended it itself
        if nested then
            self:execute("RELEASE pasyn_transaction")
        else
            local committed, err = pcall(self.execute, self, "COMMIT")
            if not committed then
                ok, results = false, { false, err }
            end
        end
    end
    if ok then
        return unpack(results, 2, results.n)
    end
    if self.in_transaction then
        undo(self, nested and "pasyn_transaction")
    end
    error(results[2], 0)
end

-- Stops the statements running now on every thread of the pool: they fail with
-- OperationalError. Statements issued later run as usual.
function Connection:interrupt()
    check_open(self)
    core.interrupt(self._pool)
end

function Connection:stats()
    check_open(self)
    return core.stats(self._pool)
end

function Connection:close()
    if self.closed then
        return
    end
    if self._closing then
        -- Another coroutine is closing it: return once it is closed, and finish the job if
        -- that coroutine was abandoned on the way.
        while not core.closed(self._pool) do
            sched.sleep(0.001)
        end
        core.free(self._pool)
        self.closed = true
        self._closing = false
        return
    end
    self._closing = true
    local sync = not sched.can_yield()
    local task = core.close(self._pool, sync)
    if task then
        sched.await(task, sync)
        core.free_task(task)
    end
    core.free(self._pool)
    self.closed = true
    self._closing = false
end
Connection.__close = Connection.close

function M.connect(database, options)
    if type(database) ~= "string" then
        raise("ProgrammingError", "connect: the database must be a string, got " .. type(database))
    end
    local opts = check_options(options)
    local sync = not sched.can_yield()
    local pool, task = core.open(database, opts, sync)
    sched.await(task, sync)
    local ok, class, code, extended, message = core.result(task, pool)
    if not ok then
        core.free(pool)
        local err = errors.from_result(class, code, extended, message)
        err.database = database
        error(err, 2)
    end
    return setmetatable({
        _pool = pool,
        _described = {}, -- SQL text -> its column tables and description
        _ndescribed = 0,
        closed = false,
        _closing = false, -- a field, not nil: every call reads it, and nil would go to __index
        row = opts.row or "array",
        timeout = opts.timeout,
    }, Connection)
end

return M
