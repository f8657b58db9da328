-- pasyn_sqlite: async SQLite for Lua. Connections and cursors in the manner of Python's
-- sqlite3; every call that talks to the database yields inside the built-in scheduler and
-- blocks anywhere else. The work itself runs on the C core's writer and reader threads.

local core
do
    local ok, loaded = pcall(require, "pasyn_sqlite.core")
    local path = not ok and tostring(loaded):match("from file '(.-)'")
    -- Built for another Lua, the C module fails in the dynamic linker ("undefined symbol:
    -- lua_...") or in luaL_checkversion: say which Lua it was built for (its file says) and
    -- how to build it for this one.
    if path and (loaded:find("undefined symbol: lua") or loaded:find("version mismatch")) then
        local f = io.open(path, "rb")
        local built = f and f:read("*a"):match("pasyn_sqlite%.core built for ([%w%. ]+)")
        if f then f:close() end
        local this = jit and "LuaJIT" or _VERSION -- luacheck: ignore jit
        local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
        loaded = string.format("pasyn_sqlite: the C module %s was built for %s, this is %s:"
            .. " rebuild it with make LUA_VERSION=%s (or luarocks --lua-version=%s)\n(%s)",
            path, built or "another Lua", this, version, version == "luajit" and "5.1" or version,
            loaded)
    end
    if not ok then error(loaded, 0) end
    core = loaded
end
local errors = require "pasyn_sqlite.errors"
core.set_errors(errors.new) -- the binding raises error objects too
local sched = require "pasyn_sqlite.scheduler"
core.set_idle_test(sched.idle) -- (run_exec: a statement of an idle loop's coroutine)

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
    set_host = sched.set_host,
}
for kind in pairs(errors.kinds) do
    M[kind] = kind
end

local co_running, co_status = coroutine.running, coroutine.status
local co_yield, SUSPEND = coroutine.yield, sched.SUSPEND
local type = type
local rawset = rawset
local unpack = table.unpack or unpack -- luacheck: ignore
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local function raise(kind, message, sql)
    error(errors.new(kind, message, sql), 3)
end

-- ---- who owns a transaction -------------------------------------------------------------

-- An owner is a coroutine, or what a host says stands for the coroutine's work now
-- (sched.owner: OpenResty's request, whose coroutine serves later requests too).
local owner_ids = setmetatable({}, { __mode = "k" }) -- owner -> the id the writer knows
local owner_of = setmetatable({}, { __mode = "kv" }) -- coroutine -> its owner, where not itself
local last_owner = 1
local end_owner -- below

-- Who calls: whether the call must block (it does not come from a coroutine of the scheduler
-- that may yield), the id the writer knows the caller's owner by (1: the main thread), and the
-- coroutine (nil for the main thread).
--
-- A coroutine of the running sqlite.run owns its own transactions for all its life, so its id
-- is kept in sched.loop_ids (a table of that run's, emptied when it ends): the next call
-- finds it there with one lookup and asks only whether it may yield now.
local isyieldable = core.isyieldable

local function caller()
    local co, ismain = co_running()
    if co == nil or ismain then
        return true, 1, nil
    end
    local known = sched.loop_ids[co]
    if known then
        return not isyieldable(), known, co
    end
    local owner = sched.owner(co)
    if owner ~= co and owner_of[co] ~= owner then
        -- The coroutine works for another owner now: the one before is gone, and nothing of
        -- it is in flight (its coroutine is running this). Roll back what it left open.
        local before = owner_of[co]
        owner_of[co] = owner
        if before ~= nil then
            end_owner(before)
        end
    end
    local id = owner_ids[owner]
    if not id then
        last_owner = last_owner + 1
        id = last_owner
        owner_ids[owner] = id
    end
    if sched.in_loop(co) then -- its own owner (sched.owner) until it ends
        sched.loop_ids[co] = id
        return not isyieldable(), id, co -- sched.can_yield's answer, one level up
    end
    return not sched.can_yield(co), id, co
end

-- An owner that has owned a transaction gets a guard: when the owner ends (the scheduler says
-- so of its coroutines, a host's coroutine serves another owner) or is collected, the guard
-- has the writer roll back what it left open, on every pool it began a transaction on. The
-- writer runs that after the owner's own queued tasks and only if it still owns the
-- transaction.
local guards = setmetatable({}, { __mode = "k" }) -- owner -> guard
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

-- After a statement of `co`: if it left its owner owning a transaction on the pool, guard it.
-- `owner_now` is the id of the transaction's owner on the pool now (0 for none), when the
-- caller knows it (the result record's `owner`), else nil: core.txn_owner is asked.
local function note_owner(pool, id, co, owner_now)
    if co and (owner_now or core.txn_owner(pool)) == id then
        local owner = owner_of[co] or co
        local guard = guards[owner]
        if not guard then
            -- new_guard allocates, so a finalizer may run there, run a statement of this owner's
            -- and guard it first: keep that guard (a second one, armed, would roll the
            -- transaction back once collected); this one guards nothing yet
            guard = new_guard(id)
            guard = guards[owner] or guard
            guards[owner] = guard
        end
        guard.pools[pool] = true
    end
end

-- An owner ended (a coroutine of the scheduler, or a host's owner whose coroutine moved on):
-- nothing of it is in flight, so what the writer says now is the truth; roll back what it
-- left open and disarm its guard.
end_owner = function(owner)
    local guard = guards[owner]
    if guard then
        guards[owner] = nil
        local pools = guard.pools
        guard.pools = {} -- disarmed: collecting it later does nothing
        for pool in pairs(pools) do
            if core.txn_owner(pool) == guard.id then
                core.abandon(pool, guard.id)
            end
        end
    end
end
sched.on_end = end_owner

-- A coroutine co is gone with a statement of `pool` in flight whose result it never takes
-- (sched.on_orphan). When co was its own owner (a host's coroutine that works for a
-- longer-lived owner is not), whatever transaction that statement began or left open is
-- rolled back once it has run: co never saw its end, so no guard may hold the transaction.
sched.on_orphan = function(co, pool)
    local id = owner_of[co] == nil and owner_ids[co]
    if id then
        core.abandon(pool, id)
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

-- A whole number from min to max: an integer, or a float with no fraction (2^31 - 1 is one
-- on Lua 5.3+), as Python's sqlite3 takes an int for such options.
local function whole(min, max)
    return function(v)
        return type(v) == "number" and v >= min and v <= max and v % 1 == 0,
               ("a whole number from %d to %d"):format(min, max)
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

-- LuaJIT's ffi, where there is one: the core binds int64_t/uint64_t cdata as INTEGERs and,
-- under integers = "int64", hands big INTEGERs back as fresh int64_t boxes; these tell it
-- which cdata are 64-bit integers and how to make a box.
local has_int64 = false
if jit then
    local ok, ffi = pcall(require, "ffi")
    if ok then
        local int64_t, uint64_t = ffi.typeof("int64_t"), ffi.typeof("uint64_t")
        local byte_c = ("c"):byte()
        core.set_int64(int64_t, function(v)
            local kind = ffi.istype(int64_t, v) and 1 or ffi.istype(uint64_t, v) and 2 or 0
            -- ffi.istype takes a ctype object (a cdata too) for its type: not a value to bind
            if kind ~= 0 and tostring(v):byte() == byte_c then -- "ctype<int64_t>"
                return 0
            end
            return kind
        end)
        has_int64 = true
    end
end

-- integers: how an INTEGER beyond +-2^53 comes back where numbers are doubles (LuaJIT, Lua
-- 5.1). On Lua 5.3+ every INTEGER is already an exact Lua integer: "number" and "string" are
-- accepted there and change nothing (portable code keeps working). "int64" needs LuaJIT's ffi:
-- without it (PUC 5.1, 5.3, 5.4) it is refused, rather than quietly giving another type.
local function integers_mode(v)
    return v == "number" or v == "string" or (v == "int64" and has_int64),
           has_int64 and '"number", "string" or "int64"'
               or '"number" or "string" ("int64" needs LuaJIT\'s ffi)'
end

-- extensions: an array whose items are a path, or {path [, entry_point]} (strings).
local function extension_list(v)
    local want = "an array of library paths (strings) or {path, entry_point} tables"
    if type(v) ~= "table" then
        return false, want
    end
    local n = 0
    for k in pairs(v) do
        if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then
            return false, want
        end
        n = math.max(n, k)
    end
    for i = 1, n do
        local x = v[i]
        local path, entry = x, nil
        if type(x) == "table" then
            path, entry = x[1], x[2]
        end
        if type(path) ~= "string" or path == "" or path:find("\0", 1, true)
            or (entry ~= nil and (type(entry) ~= "string" or entry:find("\0", 1, true))) then
            return false, want
        end
    end
    return true
end

local option_checks = {
    readers = whole(0, 64),
    busy_timeout = whole(0, 2 ^ 31 - 1),
    journal_mode = one_of("wal", "delete", "truncate", "persist", "memory", "off"),
    synchronous = one_of("off", "normal", "full", "extra"),
    foreign_keys = is("boolean"),
    readonly = is("boolean"),
    defensive = is("boolean"),
    pragmas = is("table"),
    statement_cache = whole(0, 100000),
    row = row_shape,
    group_commit = is("boolean"),
    timeout = seconds,
    stealing = is("boolean"),
    integers = integers_mode,
    max_pending = whole(1, 2 ^ 31 - 1),
    extensions = extension_list,
    inline_reads = is("boolean"),
    inline_budget = seconds,
}

local function check_options(options)
    if options == nil then
        return {}
    end
    if type(options) ~= "table" then
        raise("ProgrammingError", "connect: argument 'options' must be a table or nil, got " ..
              type(options))
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
        elseif t == "string" and value:find("\0", 1, true) then -- (check_c_string)
            raise("ProgrammingError", "connect: the value of pragma '" .. name .. "' holds a NUL byte")
        end
        pragmas[#pragmas + 1] = name
        pragmas[#pragmas + 1] = tostring(value)
    end
    out.pragmas = pragmas
    if out.extensions then -- flat, as the core takes them: path, entry point ("": default)
        local flat = {}
        for i = 1, #out.extensions do
            local x = out.extensions[i]
            local path, entry = x, ""
            if type(x) == "table" then
                path, entry = x[1], x[2] or ""
            end
            flat[#flat + 1] = path
            flat[#flat + 1] = entry
        end
        out.extensions = flat
    end
    return out
end

-- ---- talking to the core -----------------------------------------------------------------

local Connection, Cursor = {}, {}

-- Where a cursor keeps its private fields: in its array part, made by one table constructor
-- (new_cursor), so that making a cursor sets no hash key and reading a field indexes an
-- array. The binding fills a cursor by the same numbers (core.c, enum cursor_field).
--   CFG        its settings: row, timeout, and the connection (see "Fields"); also a
--              connection's [CFG]
--   ROWCOUNT   cur.rowcount
--   STMT       its statement's columns record (see remember), or false when it has no columns
--   ROWS, POS  the rows not fetched yet (see "A cursor's rows")
--   STREAM     the stream a streamed result goes on in, or false
--   BUSY       false, or who runs an operation of it now, or CLOSED (see "In use")
--   LASTROWID  cur.lastrowid, false until an insert gives one
local CFG, ROWCOUNT, STMT, ROWS, POS, STREAM, BUSY, LASTROWID = 1, 2, 3, 4, 5, 6, 7, 8

-- ---- arguments -------------------------------------------------------------------------

-- Every public entry point checks its arguments here, at the boundary, as luaL_check* does in
-- C (and the binding's own checks, core.c arg_error): a bad one raises a ProgrammingError
-- whose message names the function and the argument, before anything runs. Python raises
-- TypeError for these; of our kinds (API.md, "Errors") ProgrammingError is the one for a
-- program that calls the API wrongly, as Python's sqlite3 uses it for a closed cursor or a
-- bad parameter.

-- What a value is, for a message: our objects by their class, anything else by its type.
local function what_is(v)
    local mt = getmetatable(v)
    if mt == Connection then
        return "a Connection"
    elseif mt == Cursor then
        return "a Cursor"
    end
    return type(v)
end

-- Raises the ProgrammingError for argument `name` of `where` (e.g. "conn:execute"), which must
-- be `want` and is v.
local function bad_argument(where, name, want, v)
    error(errors.new("ProgrammingError", where .. ": argument '" .. name .. "' must be " ..
                     want .. ", got " .. what_is(v)), 3)
end

-- debug.getmetatable where there is one: getmetatable also looks up a __metatable field (a
-- string made on each call in Lua 5.4), and check_self is on every method's path.
local metatable_of = debug and debug.getmetatable or getmetatable

-- Every Connection that connect made (a weak set): a method on every statement's path checks
-- its self with one lookup here instead of a call (metatable_of).
local connections = setmetatable({}, { __mode = "k" })

-- The check of a method's self: `obj` must be an object of `class` (called with a colon).
-- A closed one passes: the method says what it does on a closed object.
local function check_self(obj, class, where)
    if metatable_of(obj) ~= class then
        local name = class == Connection and "Connection" or "Cursor"
        error(errors.new("ProgrammingError", where .. ": argument 'self' must be a " .. name ..
                         " (call it with a colon: " .. where .. "(...)), got " .. what_is(obj)), 3)
    end
end

local function check_string(v, where, name)
    if type(v) ~= "string" then
        bad_argument(where, name, "a string", v)
    end
end

-- The check of a string that SQLite takes as a C string (a path, a database or function
-- name): a NUL byte would end it there, and another file or name than the one written would
-- be used, so it is refused (Python's sqlite3 raises ValueError, "embedded null character").
local function check_c_string(v, where, name)
    check_string(v, where, name)
    local at = v:find("\0", 1, true)
    if at then
        error(errors.new("ProgrammingError", where .. ": argument '" .. name ..
                         "' holds a NUL byte (at byte " .. at .. ")"), 3)
    end
end

-- cur[BUSY] when the cursor is closed. Otherwise it is false, or who is running an operation
-- of the cursor now (see "In use" below).
local CLOSED = {}

-- Raises unless the connection is open. Where the pool is in its life is the core's to say
-- (core.state); the connection is closed once close() has freed it, and closing until then.
-- A submit to a pool that is not open fails with the same classes (errors.from_core).
-- core.state's answers: the core's enum pasyn_pool_state, then FREED once core.free has run.
local POOL_OPEN, POOL_CLOSING, POOL_CLOSED, POOL_FREED = 1, 2, 3, 4

local function not_open(state, sql)
    local class = state == POOL_FREED and "closed" or "closing"
    error(errors.from_core(class, 0, 0, "the connection is " .. class, sql), 4)
end

local function check_open(conn, sql)
    local state = core.state(conn._pool)
    if state ~= POOL_OPEN then
        not_open(state, sql)
    end
end

-- Raises the failure a core function reported for the statement `sql`: at submit (instead of
-- a task) or at completion (core.result), in the one shape both have.
local function fail(sql, class, code, extended, message)
    error(errors.from_core(class, code, extended, message, sql), 3)
end

-- Takes a slot of the connection's gate (max_pending) for a statement the caller (sync, id,
-- co) is about to submit, and returns the gate; waits when none is free (see the scheduler's
-- "Gates"). Give the slot back with sched.gate_release when the submit fails; the statement's
-- completion gives it back otherwise. Every statement that begins takes one; the fetches of a
-- streamed result do not: they continue a statement that has its slot, and never wait.
-- The slot counts as not submitted yet (gate.unsubmitted) until the caller says the submit
-- returned (submitted): a call that blocks in between (a finalizer, a debug hook) does not
-- wait for it.
local function admit(conn, sync, id, co)
    local gate = conn._gate
    if gate.pending < gate.max and gate.first > gate.last then
        gate.pending = gate.pending + 1
    else
        check_open(conn) -- no wait for a slot of a pool that will not take the statement
        if core.serving() then -- the wait would be for the statement that waits for us
            error(errors.new("ProgrammingError", "a SQL function defined in Lua cannot run " ..
                             "statements: the statement that called it waits for it"), 4)
        end
        sched.gate_wait(gate, sync, id, co)
    end
    gate.unsubmitted = gate.unsubmitted + 1
    return gate
end

-- The submit of the statement that took a slot of `gate` with admit returned: the task is
-- the core's now (or the submit failed). Passes the submit's results through.
local function submitted(gate, ...)
    gate.unsubmitted = gate.unsubmitted - 1
    return ...
end

-- The record core.result fills for every statement (see core.c, result): one for the module,
-- not a table per statement. Each field is present from the start (false for none), so that
-- filling it allocates nothing. A result is read out of it before anything else can run (no
-- yield, no allocation in between: see wait_statement), and the rows and the stream are moved
-- out of it, so that it keeps nothing alive that a cursor lets go of.
local result = { rows = false, rowcount = -1, lastrowid = false, stream = false, columns = false,
                 owner = 0 }

-- The description records a connection keeps (see describe): at most this many, and about
-- this many bytes (their SQL texts, and DESCRIBED_COLUMN_BYTES per column for the tables that
-- describe it); a SQL text longer than the core's cache_sql_max is not kept at all, as the
-- core keeps no statement or route for it either.
local DESCRIBED_MAX = 512
local DESCRIBED_BYTES = 1024 * 1024
local DESCRIBED_COLUMN_BYTES = 256
local CACHE_SQL_MAX = core.cache_sql_max

-- Waits for the task of the statement `sql` of `cur`, for the caller (sync, id, co) that
-- submitted it, and returns its result, in `result`, or raises the statement's error; `gate`
-- is the connection's gate when the statement took a slot of it (admit), nil for a fetch
-- (whose trace, when it ended a statement, runs here: a fetch is no statement of the gate's).
-- names and stream as core.result takes them; the column tables known for `sql` (see
-- describe) serve again when they describe this result. One function, the wait and the
-- result, on the path of every statement that is waited for.
--
-- While the task is on its way the cursor is in use: another coroutine that runs meanwhile
-- and touches it is refused (check_cursor). The mark is set around the wait alone and put
-- back as it was (executemany and a fetch with a row function hold it for longer). The wait
-- raises nothing in the normal course, and the statement's errors are raised after it, so
-- they never leave the mark behind, with no pcall on this path, which every statement takes.
-- (A coroutine closed while it waits leaves it, and refuse() sees that its holder is dead.)
local function settle(cur, sql, task, sync, id, co, gate, names, stream)
    local conn = cur[CFG].conn
    local pool = conn._pool
    local busy = cur[BUSY]
    cur[BUSY] = co or true
    if sched.begin_wait(task, sync, gate, co) then
        repeat -- here, not in sched.await: one level less while it waits (see await)
        until co_yield(SUSPEND) == task or sched.stray(co)
    end
    cur[BUSY] = busy
    if not gate then
        local fetched = conn._gate
        if fetched.hooks then
            sched.run_hooks(fetched, task)
        end
    end
    local known = #sql <= CACHE_SQL_MAX and conn._described[sql] or nil -- (no long text hashed)
    local res, class, code, extended, message = core.result(task, pool, result, names, stream,
                                                            known)
    if not res then
        if co then -- (nothing ran since the wait: the owner is the one the statement left)
            note_owner(pool, id, co)
        end
        fail(sql, class, code, extended, message)
    end
    -- The caller reads the record, its owner field too, then calls note_owner with it: a new
    -- guard allocates, and a finalizer run then may fill the record with its own statement's.
    return res
end

-- Fields of both objects: what cannot be assigned raises; what can is checked.
--
-- The settable settings (row, timeout) and the connection live in a small plain table, `cfg`
-- (no metatable: a setting that is nil, a timeout of none, is simply absent), at conn._cfg
-- and cur[CFG], that a connection shares with every cursor made from it, and that a change
-- replaces rather than modifies: a cursor keeps the settings it was made with (README,
-- "Cursors take conn.row"), and one that sets its own gets a table of its own.
--
-- The settings of `cfg`, the same on both objects: each one's public name (which is also its
-- key in `cfg`) -> the check an assignment makes, which raises, or false for none. A timeout
-- is checked when a statement uses it (checked_timeout), as it always was: setting one does
-- not raise, and a bad one (false included) is refused then. Reading one is `cfg[name]`.
local settings = {
    row = function(value)
        local ok, want = row_shape(value) -- the check connect makes of its `row` option
        if not ok then
            raise("ProgrammingError", "row must be " .. want .. ", got " .. tostring(value))
        end
    end,
    timeout = false,
}

-- obj[key] = value, for a key absent from obj's table (its __newindex): a setting of `settings`
-- is checked and goes into a new `cfg`, at obj[cfg_key]; any other key raises, as read-only
-- when `getters` or `methods` know it, else as a field `what` (the object, for the message)
-- does not have.
local function set_field(obj, cfg_key, key, value, getters, methods, what, settable)
    local check = settings[key]
    if check ~= nil then
        if check then
            check(value)
        end
        local cfg = {}
        for k, v in pairs(obj[cfg_key]) do
            cfg[k] = v
        end
        cfg[key] = value
        obj[cfg_key] = cfg
        return
    end
    if getters[key] ~= nil or methods[key] ~= nil then
        raise("ProgrammingError", tostring(key) .. " is read-only")
    end
    raise("ProgrammingError", what .. " has no field '" .. tostring(key) .. "' to set (its " ..
          "settable fields: " .. settable .. ")")
end

-- ---- Cursor ---------------------------------------------------------------------------------

-- The description of the columns record `columns` (Python's: each column's {name, name = ...,
-- decltype = ...}), made when a cursor's description is first read and kept in the record,
-- which every cursor of the same SQL text shares while its columns stay the same.
local function describe(columns)
    local names, decltypes = columns.names, columns.decltypes
    local d = {}
    for i = 1, #names do
        d[i] = { names[i], name = names[i], decltype = decltypes[i] }
    end
    columns.description = d
    return d
end

-- Fields. As in Python's sqlite3 (Modules/_sqlite/cursor.c, cursor_members), description,
-- rowcount, lastrowid and connection are read-only: assigning one raises ProgrammingError
-- (Python: AttributeError, "readonly attribute"). row, timeout and arraysize can be set; a row
-- shape is checked when it is set, a timeout or an arraysize when it is used. Any other field
-- raises too (Python: AttributeError, no attribute): a typo such as `cur.rows = "named"` would
-- otherwise do nothing, silently.
--
-- For __newindex to see an assignment the field must be absent from the cursor's table, so
-- the values live in private fields (its array part: CFG, ROWCOUNT, ...), and reading a public
-- one goes through __index. The private fields are always present (false for "none"): the
-- library's own reads and writes, a few dozen per statement, never reach a metamethod. What
-- that costs is the method lookup: `cur:fetchone()` finds its method through a function
-- instead of a table.
local cursor_getters = {
    description = function(cur)
        local stmt = cur[STMT]
        if not stmt then
            return nil
        end
        return stmt.description or describe(stmt)
    end,
    rowcount = function(cur)
        return cur[ROWCOUNT]
    end,
    lastrowid = function(cur)
        return cur[LASTROWID] or nil
    end,
    connection = function(cur)
        return cur[CFG].conn
    end,
}

-- The __index of a class whose objects keep their fields private: its methods first (the
-- lookup every call makes), then `getters` (name -> function(obj)), then the settings.
local function fields_index(class, getters, cfg_key)
    return function(obj, key)
        local member = class[key]
        if member ~= nil then
            return member
        end
        local get = getters[key]
        if get then
            return get(obj)
        elseif settings[key] ~= nil then
            return obj[cfg_key][key]
        end
    end
end

Cursor.__index = fields_index(Cursor, cursor_getters, CFG)

-- The rows of `cur` not fetched yet, made again as named rows (`named`) or as arrays: cur.row
-- applies to every row fetched after it is set, as a Python cursor's row_factory is read at
-- each fetch (Modules/_sqlite/cursor.c, pysqlite_cursor_iternext), also to rows that came
-- before it was set (see "A cursor's rows"). Named rows keep one value per name, so an array
-- made from one whose result had two columns of the same name holds the last one's value
-- twice (README, "Named rows with duplicate column names").
local function reshape(cur, named)
    local stmt = cur[STMT]
    if not stmt then
        return
    end
    local names = stmt.names
    local ncols = #names
    local function remake(row)
        local out
        if named then
            out = {}
            for i = 1, ncols do
                out[names[i]] = row[i]
            end
        else
            out = { n = ncols }
            for i = 1, ncols do
                out[i] = row[names[i]]
            end
        end
        return out
    end
    local rows, pos = cur[ROWS], cur[POS]
    if pos == 0 then
        if rows then
            cur[ROWS] = remake(rows)
        end
    else
        for i = pos, #rows do
            rows[i] = remake(rows[i])
        end
    end
end

function Cursor.__newindex(cur, key, value)
    if key == "arraysize" then -- here only while unset: then it stays in the table
        rawset(cur, key, value)
        return
    end
    local named = cur[CFG].row == "named"
    set_field(cur, CFG, key, value, cursor_getters, Cursor, "a cursor", "arraysize, row and timeout")
    if key == "row" and (value == "named") ~= named then
        reshape(cur, not named)
    end
end

-- A cursor's rows. A result of at most one row that has ended (every point read) is kept as
-- that row itself: cur[ROWS] is the row, or false once it is fetched or when there was none,
-- and cur[POS] is 0; so the row is the only table it makes (core.execute fills a cursor so,
-- from the core's buffer, before the task is freed). Any other result is an array of rows in
-- cur[ROWS], fetched from cur[POS] on (the ones before it are false), with more to come while
-- cur[STREAM] is set. Either way the rows are made, in the shape the cursor's row asks for ("named", or
-- arrays), when the statement's result (or a streamed chunk) comes in, and made again when
-- cur.row changes between named and not (reshape); a row function is applied when a row is
-- fetched.
--
-- The rows of a cursor that holds none, in the array form (a stream between chunks). Shared,
-- and never written: rows are only ever overwritten at positions up to #cur[ROWS], which is 0
-- here.
local NO_ROWS = setmetatable({}, { __newindex = function() error("NO_ROWS is read-only", 2) end })

Cursor.arraysize = 1 -- until a cursor sets its own

-- A cursor is made with every private field (CFG ... LASTROWID) in its array part, so that
-- the table does not grow while a statement's results come in (arraysize, set by the user,
-- goes into its hash part; see "Fields").
local function new_cursor(conn)
    return setmetatable({ conn._cfg, -1, false, false, 0, false, false, false }, Cursor)
end

-- The cursor's timeout as the core takes it (nil for none). A bad one raises here, when a
-- statement would use it.
local function checked_timeout(cur)
    local timeout = cur[CFG].timeout
    if timeout == nil then
        return nil
    end
    if not seconds(timeout) then
        raise("ProgrammingError", "the cursor's timeout must be nil or a number of seconds " ..
              "above 0, got " .. tostring(timeout))
    end
    return timeout
end

-- In use. As Python's sqlite3 refuses "Recursive use of cursors not allowed."
-- (Modules/_sqlite/cursor.c: check_cursor_locked(), called by check_cursor() for execute,
-- executemany, executescript and every fetch, and by close(); _pysqlite_query_execute() sets
-- self->locked for the whole call, its executemany iterator included, and clears it on every
-- way out; GH-80254 locks the per-row user code of a fetch), a cursor is refused while an
-- operation of its own is under way: from the executemany iterator, from a row function, or
-- from another coroutine that runs while the operation waits for its statement. cur[BUSY]
-- holds the coroutine running the operation (true for the main thread). A fetch's row
-- function is locked too, unlike Python's row_factory: a fetch from inside it would upset the
-- fetch that called it (collect_rows keeps its place in locals).
local function refuse(cur)
    local holder = cur[BUSY]
    if holder == CLOSED then
        raise("ProgrammingError", "the cursor is closed")
    elseif type(holder) == "thread" and co_status(holder) == "dead" then
        cur[BUSY] = false -- its coroutine ended inside the operation (coroutine.close): over
        return
    end
    raise("ProgrammingError", "Recursive use of cursors not allowed. (An operation of this " ..
          "cursor is under way: its executemany iterator, its row function, or another " ..
          "coroutine waiting on it.)")
end

-- Raises unless the cursor may run an operation now: not closed, not in use, and its
-- connection open. A fetch (`fetching`) may also run while the connection closes: close()
-- waits for the statements submitted before it, and their rows, which come before it is
-- done, can still be fetched; a streamed result's next chunk is refused then (PoolClosedError).
local function check_cursor(cur, fetching)
    if cur[BUSY] then
        refuse(cur)
    end
    local conn = cur[CFG].conn
    if fetching then -- only a freed pool refuses a fetch: told by the connection, no C call
        if conn._freed then
            not_open(POOL_FREED)
        end
        return
    end
    local state = core.state(conn._pool)
    if state ~= POOL_OPEN then
        not_open(state)
    end
end

-- Calls fn(...) with the cursor marked in use, for an operation that runs the user's code
-- (the executemany iterator, a row function), and clears the mark on every way out. Only these
-- paths pay for the pcall; a statement's wait marks the cursor without one (settle). The error
-- goes on unchanged.
local function while_busy(cur, fn, ...)
    cur[BUSY] = co_running() or true
    local ok, a, b = pcall(fn, ...)
    cur[BUSY] = false
    if not ok then
        error(a, 0)
    end
    return a, b
end

local function end_stream(cur)
    local stream = cur[STREAM]
    if stream then
        cur[STREAM] = false
        core.release(stream)
    end
end


-- Keeps `columns`, a columns record new from the core (see core.result) for the statement
-- `sql` of `conn`, and adds `sql` to it. Records are kept per connection and SQL text and
-- handed to the core as `known`, which gives the same record back while it still describes
-- the statement: then the same description serves again, and a statement makes no table for
-- its columns. SQL built on the fly fills the connection's records up to DESCRIBED_MAX or
-- DESCRIBED_BYTES; then they are dropped all at once (statements that come again make theirs
-- again).
local function remember(conn, sql, columns)
    columns.sql = sql
    local len = #sql
    if len > CACHE_SQL_MAX then
        return
    end
    local described = conn._described
    if not described[sql] then
        local bytes = len + DESCRIBED_COLUMN_BYTES * (#columns.names + 1)
        if conn._ndescribed >= DESCRIBED_MAX or conn._described_bytes + bytes > DESCRIBED_BYTES then
            described, conn._ndescribed, conn._described_bytes = {}, 0, 0
            conn._described = described
        end
        conn._ndescribed = conn._ndescribed + 1
        conn._described_bytes = conn._described_bytes + bytes
    end
    described[sql] = columns
end

-- Before a cursor runs another statement: lets go of what it holds, its rows and a streamed
-- result's reader (a new cursor holds nothing).
local function clear(cur)
    if cur[STREAM] then
        end_stream(cur)
    end
    cur[ROWS], cur[POS] = false, 0
end

-- The rest of a statement of `cur` that did not complete at once: `task` (with the failure
-- after it when it is nil) was submitted by the caller (sync, id, co) with a slot of `gate`.
-- Waits for it and takes its result into the cursor (named: its rows are named), or raises.
-- settle's work, with the result going straight into the cursor (core.result_cursor, in the
-- fields a statement the core ran at once fills: see run_exec) rather than through `result`.
-- The cursor is in use while the task is on its way, as in settle.
local function wait_statement(cur, sql, named, sync, id, co, gate, task, class, code, extended,
                              message)
    if not task then
        sched.gate_release(gate)
        fail(sql, class, code, extended, message)
    end
    local busy = cur[BUSY]
    cur[BUSY] = co or true
    if sched.begin_wait(task, sync, gate, co) then
        repeat -- here: one level less while it waits (see sched.await)
        until co_yield(SUSPEND) == task or sched.stray(co)
    end
    cur[BUSY] = busy
    local conn = cur[CFG].conn
    local pool = conn._pool
    local done, owner, columns
    done, owner, columns, extended, message = core.result_cursor(task, pool, cur, named,
                                                                 conn._described, sql)
    if not done then
        if co then
            note_owner(pool, id, co, nil)
        end
        fail(sql, owner, columns, extended, message)
    end
    if co and owner == id then -- (nothing ran since the wait: the owner the statement left)
        note_owner(pool, id, co, owner)
    end
    if columns then
        remember(conn, sql, columns)
    end
    if (cur[CFG].row == "named") ~= named then -- cur.row was set while it waited
        reshape(cur, not named)
    end
    return cur
end

-- Runs the statement sql (kind "script", submit's) on the cursor; the caller has checked that
-- the cursor and its connection are open, and cleared the cursor.
local function run_statement(cur, kind, sql, ...)
    local cfg = cur[CFG]
    local timeout = cfg.timeout
    if timeout ~= nil then
        timeout = checked_timeout(cur)
    end
    local sync, id, co = caller()
    local conn = cfg.conn
    local gate = admit(conn, sync, id, co)
    return wait_statement(cur, sql, cfg.row == "named", sync, id, co, gate,
                          submitted(gate, core.submit(conn._pool, kind, id, sync, timeout, sql, ...)))
end

-- The cursor whose execute is calling run_exec now (set just before the call, taken at once).
local executing = nil

-- conn:execute itself (obj a Connection: on a new cursor), and the rest of cur:execute (obj
-- the cursor `executing`, checked there): runs the statement sql on the cursor, as
-- run_statement does, and returns it. Any other obj is conn:execute's bad self. The path of
-- every statement, kept short: one Lua frame, and one call for the statement, where a short
-- read the core runs at once on this thread (README, "Reads the caller runs itself") comes
-- back in the cursor, with no wait.
local function run_exec(obj, sql, ...)
    local cur, cfg
    if connections[obj] then
        -- sql is checked below, once core.execute said it is not a string (on a connection
        -- not open, core.execute says so); the new cursor as new_cursor makes one
        cfg = obj._cfg
        cur = setmetatable({ cfg, -1, false, false, 0, false, false, false }, Cursor)
    elseif obj ~= nil and obj == executing then
        executing = nil
        cur, cfg = obj, obj[CFG]
    else
        -- a Connection connect did not make (a copy of one's fields): as new_cursor does
        check_self(obj, Connection, "conn:execute")
        cfg = obj._cfg
        cur = setmetatable({ cfg, -1, false, false, 0, false, false, false }, Cursor)
    end
    local timeout = cfg.timeout
    if timeout ~= nil then
        timeout = checked_timeout(cur)
    end
    -- caller()'s common cases, inline: the main thread, a coroutine of the running sqlite.run
    -- (whose sync, `not isyieldable()`, core.execute finds itself when given nil)
    local co, ismain = co_running()
    local sync, id, looped
    if co == nil or ismain then
        sync, id, co = true, 1, nil
    else
        id = sched.loop_ids[co]
        looped = id
        if not id then -- (a coroutine's first statement: caller() gives it its id)
            sync, id, co = caller()
            looped = sched.loop_ids[co]
        end
    end
    local conn = cfg.conn
    local gate = conn._gate
    -- admit's common case, inline: a slot is free and nobody waits for one. The statement
    -- takes it only if it must be waited for (below): one that the core runs at once has
    -- completed when the call returns, and nothing can run in between.
    local free = gate.pending < gate.max and gate.first > gate.last
    if not free then
        if type(sql) ~= "string" then -- (only conn:execute's is unchecked so far)
            check_string(sql, "conn:execute", "sql")
        end
        if sync == nil then
            sync = not isyieldable()
        end
        admit(conn, sync, id, co)
    end
    -- Busy (1): other statements in flight, or other coroutines to run
    -- (sched.has_ready(), read here without its call), or the scheduler's
    -- coroutines had their inline budget for this round of its loop (sched.pausing): a reader
    -- runs it meanwhile, while the machine has a core for one (else a hand-off costs more
    -- than the read: it runs here all the same). While a trace function is set, never here
    -- (2): the trace comes with a completion (sched.await). Otherwise a coroutine of
    -- sqlite.run asks (4): when the statement cannot run at once, the core calls sched.idle
    -- (core.set_idle_test, below), and in a loop with nothing else to do any known read, long
    -- ones too, runs here, as it does for a caller that blocks (0 with sync: the core sees
    -- that itself), and anything else is waited for as a blocking call waits (a yield would
    -- only go round the loop to poll for this completion); the core then answers sync true.
    local busy = gate.trace and 2 or
                 (not free or sched.pausing or gate.pending > 0 or
                  (co ~= nil and (sched.undelivered > 0 or sched.ready[1] ~= nil))) and 1 or
                 looped and 4 or 0
    local named = cfg.row == "named"
    local task, class, code, extended, message = core.execute(conn._pool, id, sync, busy,
        timeout, cur, named, conn._described, sql, ...)
    if not free then
        gate.unsubmitted = gate.unsubmitted - 1 -- (submitted's work, inline: the common path)
    end
    if task == cur then -- done, its result in the cursor; then pause, a new columns record
        if not free then
            sched.gate_release(gate)
        end
        if code then
            remember(conn, sql, code)
        end
        if class then -- inline reads held the thread for a budget: let the others run
            sched.pause(co)
        end
        return cur
    end
    if task == false then -- sql is not a string (only conn:execute's is unchecked so far)
        check_string(sql, "conn:execute", "sql")
    end
    if task and class == true then -- the loop was idle: submitted with sync
        sync, class = true, nil
    end
    if free then
        gate.pending = gate.pending + 1 -- its slot (wait_statement gives it back on a failure)
    end
    if sync == nil then
        sync = not isyieldable()
    end
    return wait_statement(cur, sql, named, sync, id, co, gate, task, class, code, extended,
                          message)
end

-- cur:execute(sql [, params | value, ...]) -> cur. Runs one statement on the cursor: its rows
-- replace what the cursor held, and description, rowcount and lastrowid follow it. `params`
-- is an array (for ?, ?NNN) or a map (for :name, @name, $name), or the values come as extra
-- arguments. Raises the statement's error (OperationalError, IntegrityError, ...);
-- ProgrammingError for SQL that is not one statement, bad parameters, a closed cursor, a bad
-- cur.timeout, or a cursor in use (see "In use"); ConnectionClosedError / PoolClosedError for
-- a closed or closing connection. As Python's Cursor.execute.
function Cursor:execute(sql, ...)
    if metatable_of(self) ~= Cursor then
        check_self(self, Cursor, "cur:execute")
    end
    check_cursor(self)
    if type(sql) ~= "string" then
        check_string(sql, "cur:execute", "sql")
    end
    if self[CFG].timeout ~= nil then -- a bad one raises before the cursor lets go of its rows
        checked_timeout(self)
    end
    clear(self)
    if executing == nil then
        executing = self
        return run_exec(self, sql, ...)
    end
    -- Another cursor's execute handed itself over, and this runs before run_exec took it (a
    -- debug hook, or a finalizer run by a garbage collection step at that call): it is put back
    -- on every way out.
    local outer = executing
    executing = self
    local ok, res = pcall(run_exec, self, sql, ...)
    executing = outer
    if not ok then
        error(res, 0)
    end
    return res
end

-- cur:executescript(script) -> cur. Runs ';'-separated statements without parameters on the
-- writer, in order; no rows come back. Raises as execute does; statements before a failing
-- one stay. As Python's Cursor.executescript, except that it does not COMMIT first.
function Cursor:executescript(script)
    check_self(self, Cursor, "cur:executescript")
    check_cursor(self)
    check_string(script, "cur:executescript", "script")
    checked_timeout(self) -- a bad one raises before the cursor lets go of its rows
    clear(self)
    return run_statement(self, "script", script)
end

local MANY_CHUNK = 10000

-- Sends one parameter-set chunk of executemany to the writer; many_wait waits for it and
-- returns its rowcount (or raises its error). Another coroutine may have closed the connection
-- (and freed its pool) while the iterator ran or the chunk before waited: that chunk is not
-- sent, and many_wait raises ConnectionClosedError for it.
local function many_submit(cur, sql, sets, timeout)
    local sync, id, co = caller()
    local conn = cur[CFG].conn
    local gate = admit(conn, sync, id, co)
    local sent = { sync = sync, id = id, co = co, gate = gate, -- then what submit_many returned
                   submitted(gate, core.submit_many(conn._pool, id, sync, timeout, sql, sets)) }
    if not sent[1] then
        sched.gate_release(gate)
    elseif not sync then
        sched.expect(sent[1], gate, co) -- awaited after the next chunk is built (many_chunks)
    end
    return sent
end

local function many_wait(cur, sql, sent)
    local task = sent[1]
    if not task then
        fail(sql, unpack(sent, 2, 5))
    end
    local res = settle(cur, sql, task, sent.sync, sent.id, sent.co, sent.gate)
    local rowcount, owner = res.rowcount, res.owner
    if sent.co then
        note_owner(cur[CFG].conn._pool, sent.id, sent.co, owner)
    end
    return rowcount
end

local function many_chunk(cur, sql, sets, timeout)
    return many_wait(cur, sql, many_submit(cur, sql, sets, timeout))
end

-- The next parameter tables of the iterator seq, up to MANY_CHUNK: the array, and whether
-- seq has ended.
local function next_chunk(seq)
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

-- The next chunk of the iterator seq, submitted (many_submit), and whether seq has ended.
local function next_submitted(cur, sql, seq, timeout)
    local sets, is_last = next_chunk(seq)
    return many_submit(cur, sql, sets, timeout), is_last
end

-- executemany over an iterator that gave more than one chunk (`sets` is the first), inside
-- conn:transaction (a transaction of its own, or a savepoint inside the caller's) so that the
-- whole call is all or nothing. Sets cur's rowcount, or raises the error that undid the call.
local function many_chunks(cur, sql, seq, sets, timeout)
    cur[CFG].conn:transaction(function()
        local total, sent, last = 0, many_submit(cur, sql, sets, timeout), false
        while not last do
            -- The next chunk is built, and sent to queue behind this one, while the writer
            -- inserts this one. An error of either stops the call: this chunk's first (it came
            -- first). A chunk queued behind a failed one is waited for, and undone with the rest.
            local built, following, is_last = pcall(next_submitted, cur, sql, seq, timeout)
            local done, inserted = pcall(many_wait, cur, sql, sent)
            if not done then
                if built then
                    pcall(many_wait, cur, sql, following)
                end
                error(inserted, 0)
            elseif not built then
                error(following, 0) -- the iterator's error, or the connection closed meanwhile
            end
            total = total + inserted
            sent, last = following, is_last
        end
        cur[ROWCOUNT] = total + many_wait(cur, sql, sent)
    end)
end

-- The arguments of executemany.
local function check_many(sql, seq, where)
    check_string(sql, where, "sql")
    if type(seq) ~= "table" and type(seq) ~= "function" then
        bad_argument(where, "seq", "an array of parameter tables or an iterator function", seq)
    end
end

-- cur:executemany(sql, seq) -> cur. Runs one INSERT, UPDATE, DELETE or REPLACE once per
-- parameter table: `seq` is an array of them, or an iterator function returning one per call
-- and nil at the end. All or nothing when the caller has no open transaction; rowcount is the
-- total, description nil. Raises as execute does, and ProgrammingError for another kind of
-- statement or a `seq` of another type; an error raised by the iterator goes on unchanged.
-- The cursor is in use until the call returns, so the iterator may not use it (Python's
-- executemany refuses it the same way: "Recursive use of cursors not allowed.").
function Cursor:executemany(sql, seq)
    check_self(self, Cursor, "cur:executemany")
    check_cursor(self)
    local timeout = checked_timeout(self)
    check_many(sql, seq, "cur:executemany")
    end_stream(self)
    self[ROWS], self[POS], self[STMT] = false, 0, false
    if type(seq) == "table" then
        self[ROWCOUNT] = many_chunk(self, sql, seq, timeout) -- one task: the core keeps it atomic
        return self
    end
    local sets, last = while_busy(self, next_chunk, seq)
    if last then
        self[ROWCOUNT] = many_chunk(self, sql, sets, timeout)
    else
        while_busy(self, many_chunks, self, sql, seq, sets, timeout)
    end
    return self
end

-- Brings the next chunk of a streamed result; false at the end.
local function more(cur)
    local stream = cur[STREAM]
    if not stream then
        return false
    end
    local timeout = checked_timeout(cur)
    local sync, id, co = caller()
    cur[STREAM] = false -- ended, unless the answer says it goes on
    local stmt = cur[STMT] -- a streamed result has columns
    -- named rows: the names the first chunk's rows have as keys
    local names = cur[CFG].row == "named" and stmt.names or nil
    local task, class, code, extended, message = core.fetch(stream, id, sync, timeout)
    if not task then
        fail(stmt.sql, class, code, extended, message)
    end
    local res = settle(cur, stmt.sql, task, sync, id, co, nil, names, stream)
    local rows, going_on, owner = res.rows, res.stream, res.owner
    res.rows, res.stream = false, false -- moved to the cursor (see wait_statement)
    if co then
        note_owner(cur[CFG].conn._pool, id, co, owner)
    end
    cur[ROWS], cur[POS], cur[STREAM] = rows or NO_ROWS, 1, going_on
    if (cur[CFG].row == "named") ~= (names ~= nil) then -- cur.row was set while it waited
        reshape(cur, names == nil)
    end
    return true
end

-- cur:fetchone() -> the next row (its shape: cur.row), or nil at the end. Raises
-- ProgrammingError on a closed cursor or one in use (a row function that fetches from its own
-- cursor, another coroutine's fetch under way), ConnectionClosedError after conn:close(), a
-- streamed result's error, and what a row function raises (its row is used up then). As
-- Python's Cursor.fetchone.
function Cursor:fetchone()
    if metatable_of(self) ~= Cursor then
        check_self(self, Cursor, "cur:fetchone")
    end
    if self[BUSY] or self[CFG].conn._freed then
        check_cursor(self, true)
    end
    local rows, pos = self[ROWS], self[POS]
    local row
    if pos == 0 then -- the one row of a result, or none (see "A cursor's rows")
        if not rows then
            return nil
        end
        row = rows
        self[ROWS] = false
    else
        while pos > #rows do
            if not more(self) then
                return nil
            end
            rows, pos = self[ROWS], self[POS]
        end
        row = rows[pos]
        rows[pos] = false -- let a long streamed chunk's rows go as they are read
        self[POS] = pos + 1
    end
    local shape = self[CFG].row
    if shape == "array" or shape == "named" then
        return row
    end
    return (while_busy(self, shape, self, row))
end

-- Up to `limit` rows of the cursor, shaped by `shape` (the cursor's row when the fetch began).
local function collect_rows(cur, limit, shape)
    local plain = shape == "array" or shape == "named"
    if cur[POS] == 0 then -- the one row of a result, or none (see "A cursor's rows")
        local row = cur[ROWS]
        if not row or limit < 1 then
            return {}
        end
        cur[ROWS] = false -- used up before the row function runs (see below)
        if plain then
            return { row }
        end
        return { shape(cur, row) }
    end
    local out, n = {}, 0
    while n < limit do
        local pos, rows = cur[POS], cur[ROWS]
        local last = #rows
        if pos > last then
            if not more(cur) then
                break
            end
        elseif n == 0 and pos == 1 and last <= limit and plain then
            out, n = rows, last -- a whole chunk: hand it over as it is
            cur[ROWS], cur[POS] = NO_ROWS, 1
        elseif plain then
            local take_n = math.min(limit - n, last - pos + 1)
            for i = pos, pos + take_n - 1 do
                n = n + 1
                out[n] = rows[i]
                rows[i] = false
            end
            cur[POS] = pos + take_n
        else
            -- The cursor moves on before the row function runs: if it raises, its row is
            -- used up (as in Python, whose row_factory runs after the step) and the next fetch
            -- goes on from the row after it.
            local row = rows[pos]
            rows[pos] = false
            cur[POS] = pos + 1
            n = n + 1
            out[n] = shape(cur, row)
        end
    end
    return out
end

local function collect(cur, limit)
    check_cursor(cur, true)
    local shape = cur[CFG].row
    if shape == "array" or shape == "named" then
        return collect_rows(cur, limit, shape)
    end
    return (while_busy(cur, collect_rows, cur, limit, shape))
end

local function is_count(n)
    return type(n) == "number" and n >= 0 and n % 1 == 0
end

-- cur:fetchmany([n]) -> an array of up to n rows (default cur.arraysize, 1 unless set); an
-- empty array at the end. n (or arraysize) must be a whole number >= 0, else ProgrammingError
-- before any row is used up. Raises as fetchone does. As Python's Cursor.fetchmany.
function Cursor:fetchmany(n)
    check_self(self, Cursor, "cur:fetchmany")
    n = n == nil and self.arraysize or n
    if not is_count(n) then
        raise("ProgrammingError", "cur:fetchmany: argument 'n' (or cur.arraysize) must be a " ..
              "non-negative whole number, got " .. tostring(n))
    end
    return collect(self, n)
end

-- cur:fetchall() -> an array of the remaining rows, possibly empty. Raises as fetchone does.
-- As Python's Cursor.fetchall.
function Cursor:fetchall()
    if metatable_of(self) ~= Cursor then
        check_self(self, Cursor, "cur:fetchall")
    end
    if self[BUSY] or self[CFG].conn._freed then
        check_cursor(self, true)
    end
    local shape = self[CFG].row
    if self[POS] == 0 and (shape == "array" or shape == "named") then -- collect_rows' first case
        local row = self[ROWS]
        if not row then
            return {}
        end
        self[ROWS] = false
        return { row }
    end
    return collect(self, math.huge)
end

-- cur:rows() -> an iterator for `for row in cur:rows() do ... end`, calling fetchone (and
-- raising what it raises). Python iterates the cursor itself.
function Cursor:rows()
    check_self(self, Cursor, "cur:rows")
    return function()
        return self:fetchone()
    end
end

-- cur:close(). Lets go of the cursor's result (and of its reader, for a streamed one);
-- fetches and executes raise ProgrammingError afterwards. Closing again does nothing. Raises
-- ProgrammingError ("Recursive use of cursors not allowed.") while an operation of the cursor
-- is under way (from its row function or executemany iterator, or from another coroutine
-- while it waits), as Python's Cursor.close does (check_cursor_locked): it leaves the cursor
-- and the operation as they were.
-- Also the cursor's __close (Lua 5.4 `<close>`).
function Cursor:close()
    check_self(self, Cursor, "cur:close")
    local busy = self[BUSY]
    if busy == CLOSED then
        return
    elseif busy then
        refuse(self) -- raises, unless the operation's coroutine is gone
    end
    end_stream(self)
    self[BUSY] = CLOSED
    self[ROWS], self[POS] = false, 0
end
Cursor.__close = Cursor.close

-- ---- Connection -------------------------------------------------------------------------

-- Fields. closed, in_transaction and total_changes are read-only: assigning one raises
-- ProgrammingError (Python's in_transaction and total_changes have no setter:
-- Modules/_sqlite/connection.c, connection_getset, "(setter)0", and assigning them raises
-- AttributeError; Python has no `closed`). row (Python's row_factory) is checked when it is
-- set, timeout when a statement uses it. Any other field raises too, as on a Python
-- Connection, so that a typo such as `conn.rows = "named"` is not silently ignored. The
-- values live in private fields, or come from the core, so that __newindex sees every
-- assignment; the library reads the private fields directly.
local conn_properties = {
    closed = function(conn)
        return core.state(conn._pool) == POOL_FREED
    end,
    in_transaction = function(conn)
        return core.txn_owner(conn._pool) == select(2, caller())
    end,
    total_changes = function(conn)
        check_open(conn)
        return core.total_changes(conn._pool)
    end,
}

Connection.__index = fields_index(Connection, conn_properties, "_cfg")

function Connection.__newindex(conn, key, value)
    set_field(conn, "_cfg", key, value, conn_properties, Connection, "a connection", "row and timeout")
end

-- conn:cursor() -> a new Cursor of this connection, with no statement yet; it takes conn.row
-- and conn.timeout. Raises ConnectionClosedError / PoolClosedError on a closed or closing
-- connection. As Python's Connection.cursor.
function Connection:cursor()
    check_self(self, Connection, "conn:cursor")
    check_open(self)
    return new_cursor(self)
end

-- conn:execute(sql [, params | value, ...]) -> a new Cursor holding the result: a cursor's
-- execute (see Cursor:execute for params and errors). As Python's Connection.execute.
-- (run_exec is it, without a frame of its own.)
Connection.execute = run_exec

-- conn:executemany(sql, seq) -> a new Cursor: a cursor's executemany (see Cursor:executemany).
-- As Python's Connection.executemany.
function Connection:executemany(sql, seq)
    check_self(self, Connection, "conn:executemany")
    check_open(self, sql)
    check_many(sql, seq, "conn:executemany")
    return new_cursor(self):executemany(sql, seq)
end

-- conn:executescript(script) -> a new Cursor: a cursor's executescript. As Python's
-- Connection.executescript, except that it does not COMMIT first.
function Connection:executescript(script)
    check_self(self, Connection, "conn:executescript")
    check_open(self, script)
    check_string(script, "conn:executescript", "script")
    return run_statement(new_cursor(self), "script", script)
end

-- Ends the caller's own transaction; a caller that owns none changes nothing.
local function end_transaction(conn, sql)
    check_open(conn, sql)
    if conn.in_transaction then
        conn:execute(sql)
    end
end

-- conn:commit(). Commits the calling coroutine's own open transaction; a no-op when it owns
-- none (a write outside BEGIN is committed when it returns). Raises the COMMIT's error, and
-- ConnectionClosedError / PoolClosedError. Python's commit, for transactions owned by
-- coroutines.
function Connection:commit()
    check_self(self, Connection, "conn:commit")
    end_transaction(self, "COMMIT")
end

-- conn:rollback(). Rolls back the calling coroutine's own open transaction; a no-op when it
-- owns none. Raises as commit does. Python's rollback, for transactions owned by coroutines.
function Connection:rollback()
    check_self(self, Connection, "conn:rollback")
    end_transaction(self, "ROLLBACK")
end

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

local begin_modes = {
    deferred = "BEGIN DEFERRED",
    immediate = "BEGIN IMMEDIATE",
    exclusive = "BEGIN EXCLUSIVE",
}

-- conn:transaction(fn [, mode]) -> fn's results. Runs fn(conn) in a transaction of the
-- caller's: BEGIN <mode> ("deferred", "immediate" (default) or "exclusive") ... COMMIT, or
-- inside one the caller already owns a savepoint; an error rolls back (to the savepoint) and
-- goes on up unchanged, as does a failed COMMIT's. Raises ProgrammingError for a fn that is
-- not a function or an unknown mode. Python's `with conn:`, with nesting.
function Connection:transaction(fn, mode)
    check_self(self, Connection, "conn:transaction")
    check_open(self)
    if type(fn) ~= "function" then
        bad_argument("conn:transaction", "fn", "a function", fn)
    end
    local begin = begin_modes[mode == nil and "immediate" or type(mode) == "string" and mode:lower()]
    if not begin then
        raise("ProgrammingError", "conn:transaction: argument 'mode' must be nil, \"deferred\", " ..
              "\"immediate\" or \"exclusive\", got " ..
              (type(mode) == "string" and "'" .. mode .. "'" or what_is(mode)))
    end
    local nested = self.in_transaction
    self:execute(nested and "SAVEPOINT pasyn_transaction" or begin)
    local results = pack(pcall(fn, self))
    local ok = results[1]
    local state = ok and core.state(self._pool)
    if ok and state ~= POOL_OPEN then
        -- Closed while fn ran (from another coroutine, or by fn): close rolls back what is still
        -- open, so fn's work is not committed. As Python's `with conn:`, whose commit raises on
        -- a closed connection.
        local _, err = pcall(not_open, state)
        ok, results = false, { false, err }
    elseif ok and self.in_transaction then -- fn may have ended it itself
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

-- conn:interrupt(). Stops the statements running now on every thread of the pool: they fail
-- with OperationalError. Statements issued later run as usual. Raises ConnectionClosedError /
-- PoolClosedError. As Python's Connection.interrupt.
function Connection:interrupt()
    check_self(self, Connection, "conn:interrupt")
    check_open(self)
    core.interrupt(self._pool)
end

-- ---- SQL functions defined in Lua ---------------------------------------------------------
--
-- They run on the Lua side, in the thread of this Lua state: a worker whose statement calls
-- one queues the call on the completion hub (the descriptor sqlite.fd() watches) and waits;
-- whoever waits on this side serves it (sqlite.dispatch, the built-in scheduler, a blocking
-- call, a wait for a max_pending slot), runs the function under pcall and hands the result
-- back. Inside the function no statement of any connection may run (ProgrammingError: the
-- statement that called it waits for it), and it cannot yield (the pcall is a C call: the
-- yield fails the statement with Lua's "attempt to yield across a C-call boundary").

local function callable(v)
    if type(v) == "function" then
        return true
    end
    local mt = getmetatable(v)
    return type(mt) == "table" and mt.__call ~= nil
end

local function define(conn, where, name, nargs, flags, fn)
    check_self(conn, Connection, where)
    check_c_string(name, where, "name")
    if type(nargs) ~= "number" or nargs ~= math.floor(nargs) or nargs < -1 or nargs > 127 then
        bad_argument(where, "nargs", "a whole number from -1 (any) to 127", nargs)
    end
    nargs = math.floor(nargs) -- (an integer on Lua 5.3+, also for 2.0)
    if fn ~= nil and not callable(fn) then
        bad_argument(where, flags == core.AGGREGATE and "factory" or "fn",
                     "a function or nil", fn)
    end
    check_open(conn)
    local ok, class, code, extended, message = core.create_function(conn._pool, name, nargs,
                                                                   flags, fn)
    if not ok then
        error(errors.from_core(class, code, extended, where .. ": " .. message), 3)
    end
end

-- conn:create_function(name, nargs, fn [, opts]). Defines the SQL function `name` (a string)
-- taking `nargs` arguments (-1: any number, up to 127) on every connection of the pool, for
-- statements issued after it returns; fn(...) gets the SQL values as rows carry them and
-- returns one (nil or sqlite.null: NULL; a boolean: 1/0; a number; a string: TEXT;
-- sqlite.blob(s): BLOB). An error it raises, or a result of another type, fails the statement
-- with OperationalError carrying its message. opts.deterministic: SQLITE_DETERMINISTIC (the
-- same arguments always give the same result: SQLite may then use it in indexes and call it
-- fewer times). fn = nil removes the function. Redefining a name and nargs replaces it.
-- Raises ProgrammingError for bad arguments, ConnectionClosedError / PoolClosedError. As
-- Python's Connection.create_function (sqlite.org/c3ref/create_function.html).
function Connection:create_function(name, nargs, fn, opts)
    if opts ~= nil and type(opts) ~= "table" then
        check_self(self, Connection, "conn:create_function")
        bad_argument("conn:create_function", "opts", "a table or nil", opts)
    end
    local flags = opts and opts.deterministic and core.DETERMINISTIC or 0
    define(self, "conn:create_function", name, nargs, flags, fn)
end

-- conn:create_aggregate(name, nargs, factory). Defines the aggregate SQL function `name`:
-- for each group, factory() makes an object, whose :step(...) is called with each row's
-- arguments and whose :finalize() returns the group's result (types as create_function's);
-- over no rows at all, a fresh object's :finalize() gives the result. An error raised in
-- factory, step or finalize fails the statement with its message. factory = nil removes it.
-- Raises as create_function. As Python's Connection.create_aggregate (whose class is the
-- factory).
function Connection:create_aggregate(name, nargs, factory)
    define(self, "conn:create_aggregate", name, nargs, core.AGGREGATE, factory)
end

-- conn:create_collation(name, fn). Defines the collation `name` (COLLATE name, ORDER BY ...
-- COLLATE name): fn(a, b) gets two strings and returns a negative number, zero or a positive
-- number as a sorts before, with or after b. An error it raises, or a result that is not a
-- number, counts as equal (SQLite gives a collation no way to fail the statement; Python's
-- sqlite3 does the same). fn = nil removes it. Raises as create_function. As Python's
-- Connection.create_collation (sqlite.org/c3ref/create_collation.html).
function Connection:create_collation(name, fn)
    define(self, "conn:create_collation", name, 2, core.COLLATION, fn)
end

-- Checks the hook argument of conn:trace / conn:on_change: a function (or a callable value,
-- as create_function takes) or nil.
local function check_hook(fn, where)
    if fn ~= nil and not callable(fn) then
        bad_argument(where, "fn", "a function or nil", fn)
    end
end

local function set_hooks(gate)
    gate.hooks = gate.trace ~= nil or gate.on_change ~= nil
end

-- conn:trace(fn). fn(sql, seconds) is called for each statement the connection runs, on any
-- of its threads, once it has finished (succeeded or failed): sql is its text with the
-- parameters bound (SQLite's sqlite3_expanded_sql), seconds its run time as SQLite measured it
-- (sqlite3_trace_v2, SQLITE_TRACE_PROFILE: nanoseconds, given in seconds). fn = nil removes
-- it (fn may be any callable value). Calls come on the Lua side, never on a worker: with the
-- statement's completion, before the coroutine that waits for it goes on (README,
-- "conn:trace"); fn must not yield, and an
-- error it raises is written to stderr, the statement's result unchanged. Statements
-- submitted before the call may go untraced; the pool's own (group commit's BEGIN/COMMIT,
-- savepoints of executemany, schema lookups) are not reported, nor is a streamed result
-- closed before its end. While no fn is set the workers install no hook at all. Raises
-- ProgrammingError for an fn that is neither, ConnectionClosedError / PoolClosedError. As
-- Python's Connection.set_trace_callback, with the run time (lsqlite3's db:profile).
function Connection:trace(fn)
    check_self(self, Connection, "conn:trace")
    check_open(self)
    check_hook(fn, "conn:trace")
    local gate = self._gate
    gate.trace = fn
    set_hooks(gate)
    core.set_trace(self._pool, fn ~= nil)
end

-- The default bound of on_change events kept per transaction: about 16 MB of C memory.
local ON_CHANGE_MAX = 1000000

-- conn:on_change(fn [, max_events]). fn(op, db, table, rowid) is called for each row that a
-- transaction changed, once its COMMIT succeeded (an autocommit statement's own, a COMMIT, the
-- RELEASE of an outermost savepoint, a group commit's), in commit order and, within one, in
-- the order the rows changed; never for work that was rolled back (ROLLBACK, ROLLBACK TO a
-- savepoint, a statement that failed). op is "insert", "update" or "delete"; db "main",
-- "temp" or an attached name. Beyond max_events rows in one transaction (default 1000000,
-- whole number >= 1) the rest are counted, not kept, and fn("overflow", nil, nil, count) comes
-- once after the ones kept. What SQLite's update hook does not report is not reported
-- (README, "conn:on_change": WITHOUT ROWID tables, REPLACE's deletes, DELETE without WHERE).
-- fn may be any callable value; nil removes it. Calls come on the Lua side as for conn:trace
-- (never on a worker, before the committing coroutine goes on; fn must not yield; its error
-- goes to stderr). Takes
-- effect from the writer's next transaction. Raises ProgrammingError for a bad argument,
-- ConnectionClosedError / PoolClosedError. Unlike lsqlite3's update_hook and Python's (none),
-- which report inside the transaction.
function Connection:on_change(fn, max_events)
    check_self(self, Connection, "conn:on_change")
    check_open(self)
    check_hook(fn, "conn:on_change")
    if max_events ~= nil and not (type(max_events) == "number" and max_events >= 1 and
                                  max_events % 1 == 0 and max_events < 2 ^ 53) then
        bad_argument("conn:on_change", "max_events", "nil or a whole number >= 1", max_events)
    end
    local gate = self._gate
    gate.on_change = fn
    set_hooks(gate)
    core.set_on_change(self._pool, fn and (max_events or ON_CHANGE_MAX) or 0)
end

-- Runs one task of the connection that returns no rows (submitted by `submit(owner, sync)`,
-- core's serialize or backup_step) for the caller, and gives back what `outcome(task)`
-- (core's bytes or done) makes of it, or raises its failure (naming `what`).
local function run_task(conn, what, submit, outcome)
    local sync, id, co = caller()
    local gate = admit(conn, sync, id, co)
    local task, class, code, extended, message = submitted(gate, submit(id, sync))
    if not task then
        sched.gate_release(gate)
        error(errors.from_core(class, code, extended, message, what), 3)
    end
    sched.await(task, sync, gate, co)
    local res
    res, class, code, extended, message = outcome(task)
    if res == nil then
        error(errors.from_core(class, code, extended, message, what), 3)
    end
    return res
end

-- conn:serialize([name]) -> the database `name` ("main" by default; "temp" or an attached
-- one) as a string of bytes: the content of its file, as SQLite's sqlite3_serialize gives it
-- (c3ref/serialize.html), in rollback-journal format (bytes 18 and 19 are 1, not WAL's 2: an
-- in-memory SQLite cannot open a WAL image), which sqlite.deserialize (or any SQLite) opens.
-- Runs on the writer, which holds the attached and TEMP databases: the caller's own open
-- transaction is in it, another coroutine's is waited for, as for a write. Raises
-- OperationalError for an unknown
-- name, ProgrammingError for a name that is not a string, ConnectionClosedError /
-- PoolClosedError. As Python's Connection.serialize.
function Connection:serialize(name)
    check_self(self, Connection, "conn:serialize")
    check_open(self)
    if name ~= nil then
        check_c_string(name, "conn:serialize", "name")
    end
    local pool = self._pool
    return run_task(self, "serialize", function(id, sync)
        return core.serialize(pool, id, sync, name or "main")
    end, core.bytes)
end

-- conn:backup(target [, opts]). An online backup (SQLite's backup API, backup.html) of the
-- connection's database into `target`: a path (a file made or replaced) or another
-- Connection (its database is replaced; its own writes wait for the backup, as for any
-- other process's lock, and fail after its busy_timeout). opts (a table, all optional):
-- pages (whole number >= 1: pages copied per step; default all at once), progress (a
-- function(remaining, total), or a callable value, called after each step with the pages
-- left and the page count, in the caller's coroutine: an error it raises ends the backup,
-- which is left unfinished, and goes on up), name (the database to copy: "main" by default,
-- "temp", an attached one).
-- Each step runs on the writer, between other statements: the pool keeps serving reads and
-- writes while it runs, and the writes made meanwhile go into the copy too (its source is
-- the writer's own connection), so it never starts over and ends with the database as it was
-- at its last step. Not inside the caller's own transaction (OperationalError, "locked").
-- Raises ProgrammingError for bad arguments (a target that is this connection, or the
-- source database's own file by another path or pool),
-- OperationalError for a target Connection opened readonly, OperationalError /
-- DatabaseError for SQLite's errors (the message names the target),
-- ConnectionClosedError / PoolClosedError. As Python's Connection.backup.
function Connection:backup(target, opts)
    check_self(self, Connection, "conn:backup")
    check_open(self)
    local dest
    if type(target) == "string" then
        check_c_string(target, "conn:backup", "target")
        dest = target
    elseif metatable_of(target) == Connection then
        if target == self then
            raise("ProgrammingError", "conn:backup: the target is this connection itself")
        end
        check_open(target)
        if target._readonly then
            raise("OperationalError", "conn:backup: the target connection is read-only")
        end
        dest = core.pool_path(target._pool)
    else
        bad_argument("conn:backup", "target", "a path or a Connection", target)
    end
    if opts ~= nil and type(opts) ~= "table" then
        bad_argument("conn:backup", "opts", "a table or nil", opts)
    end
    opts = opts or {}
    local pages, progress, name = opts.pages, opts.progress, opts.name
    if pages ~= nil and not (type(pages) == "number" and pages >= 1 and pages % 1 == 0) then
        bad_argument("conn:backup", "opts.pages", "nil or a whole number >= 1", pages)
    end
    if progress ~= nil and not callable(progress) then
        bad_argument("conn:backup", "opts.progress", "nil or a function", progress)
    end
    if name ~= nil then
        check_c_string(name, "conn:backup", "opts.name")
    end
    local backup, class, code, extended, message = core.backup_new(self._pool, dest,
        name or "main", pages and math.min(pages, 2 ^ 31 - 1) or -1)
    if not backup then
        error(errors.from_core(class, code, extended, message, "backup"), 2)
    end
    local function steps()
        repeat
            run_task(self, "backup", function(id, sync)
                return core.backup_step(backup, id, sync)
            end, core.done)
            local remaining, total, ended = core.backup_progress(backup)
            if progress then
                progress(remaining, total)
            end
        until ended
    end
    local ok, err = pcall(steps)
    core.backup_end(backup) -- what is left of it: on the writer, after its last step
    if not ok then
        error(err, 0)
    end
end

-- conn:stats() -> a table of per-thread counters (see the README), with `pending` (the
-- connection's statements submitted and not yet completed) and `waiting` (callers waiting for
-- one of them to complete: max_pending). Raises ConnectionClosedError / PoolClosedError. Not in
-- Python's sqlite3.
function Connection:stats()
    check_self(self, Connection, "conn:stats")
    check_open(self)
    local st = core.stats(self._pool)
    st.pending, st.waiting = self._gate.pending, sched.gate_waiting(self._gate)
    return st
end

-- conn:close(). Waits for the statements already submitted, rolls back an open transaction,
-- closes every connection of the pool and joins its threads; conn.closed is true afterwards.
-- Closing again does nothing; from another coroutine while a close is under way, it returns
-- once that close is done (a caller that blocks serves the calls of SQL functions defined in
-- Lua meanwhile). Raises ProgrammingError inside such a function (the statement that called it
-- waits for it). Also the connection's __close (Lua 5.4 `<close>`). As Python's
-- Connection.close.
function Connection:close()
    check_self(self, Connection, "conn:close")
    local pool = self._pool
    local state = core.state(pool)
    if state == POOL_OPEN or state == POOL_CLOSING then
        local sync = not sched.can_yield()
        -- core.close refuses a close inside a SQL function defined in Lua (the statement that
        -- called it waits for it), and one under way already ("closing")
        local task, class, code, extended, message = core.close(pool, sync)
        if task then
            sched.await(task, sync)
            core.free_task(task)
        elseif class ~= "closing" then -- inside a function, or out of memory: still as it was
            error(errors.from_core(class, code, extended, message), 2)
        else
            -- Another coroutine is closing it: return once it is closed, and finish the job
            -- if that coroutine was abandoned on the way. The close may wait for statements
            -- that call SQL functions defined in Lua: a caller that blocks serves those calls
            -- meanwhile (a coroutine that yields leaves them to the scheduler).
            repeat
                if sync then
                    core.serve()
                end
                sched.sleep(0.001)
                state = core.state(pool)
            until state == POOL_CLOSED or state == POOL_FREED
        end
    end
    core.free(pool) -- once closed; again does nothing
    self._freed = true -- what core.state says from now on (check_cursor reads it)
end
Connection.__close = Connection.close

-- The default of the max_pending option: statements of one connection submitted and not yet
-- completed, beyond which a caller waits (README, "Choices where the contract is silent").
local MAX_PENDING = 1024

-- Raises the failure core.open or the open task's result reported, naming the database.
local function open_failed(database, class, code, extended, message)
    local err = errors.from_core(class, code, extended, message)
    err.database = database
    error(err, 3)
end

-- sqlite.deserialize(bytes [, options]) -> a new Connection on a ":memory:" database that
-- starts as `bytes` (a database file's content, such as conn:serialize gives), written into
-- its private file before any of its connections opens it; then set to WAL like any
-- ":memory:" pool. options as for connect. Raises ProgrammingError for bytes that are not a
-- string and for bad options, DatabaseError ("file is not a database") for bytes that are not
-- a database, leaving nothing behind. As Python's Connection.deserialize, into a new pool.
function M.deserialize(bytes, options)
    if type(bytes) ~= "string" then
        bad_argument("deserialize", "bytes", "a string", bytes)
    end
    return M.connect(":memory:", options, bytes)
end

-- sqlite.connect(database [, options]) -> a Connection: a pool of one writer and
-- options.readers readers on `database` (a path, a file: URI, or ":memory:"). Options as in
-- the README. Raises ProgrammingError for a database that is not a string, for an unknown
-- option or a bad value (naming it), and for a URI the core refuses (nolock=1 or
-- vfs=unix-none, naming the part; with a `database` field); OperationalError or
-- DatabaseError (with a `database` field) when opening fails. Python's sqlite3.connect, for
-- a pool.
function M.connect(database, options, image)
    check_c_string(database, "connect", "database")
    local opts = check_options(options)
    opts.image = image -- sqlite.deserialize's bytes
    local sync = not sched.can_yield()
    local pool, task, code, extended, message = core.open(database, opts, sync)
    if not pool then
        open_failed(database, task, code, extended, message) -- task: the failure's class
    end
    sched.await(task, sync)
    local opened, class
    opened, class, code, extended, message = core.result(task, pool, result)
    if not opened then
        core.free(pool)
        open_failed(database, class, code, extended, message)
    end
    -- Every field is present (false for none): the library's reads and writes of them never
    -- reach __index or __newindex (see the Connection's fields). _cfg is a plain table, where
    -- nil is no timeout.
    local conn = setmetatable({
        _pool = pool,
        _described = {}, -- SQL text -> its column tables and description
        _ndescribed = 0,
        _described_bytes = 0,
        _cfg = false, -- below: it names conn
        _gate = sched.new_gate(pool, opts.max_pending or MAX_PENDING), -- (admit)
        _readonly = opts.readonly or false, -- (backup: no copy into it)
        _freed = false, -- core.free has run (close)
    }, Connection)
    conn._cfg = { conn = conn, row = opts.row or "array", timeout = opts.timeout }
    connections[conn] = true
    return conn
end

return M
