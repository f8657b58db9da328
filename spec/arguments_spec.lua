-- Arguments: every public entry point (module functions, Connection and Cursor methods and
-- fields, the scheduler's functions and handles, set_host), called with each bad shape of each
-- argument (a wrong self: nil, a number, a string, a plain table, the other class's object, a
-- closed one; wrong types; missing ones), raises an error object of the documented kind whose
-- message names the function and the argument; the pool keeps working afterwards. And an
-- operation that waits while another coroutine closes the connection (an executemany fed by
-- an iterator, a fetch loop, transaction(fn)) raises an error object too.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local unpack = support.unpack

-- Calls fn(...), which must raise an error object of `kind` whose message holds each string
-- of `names` (plain text); `label` says which case failed.
local function refuses(label, kind, names, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, label .. ": the call succeeded")
    assert.is_true(sqlite.is_error(err), label .. ": not an error object: " .. tostring(err))
    assert.are.equal(kind, err.kind, label .. ": " .. tostring(err))
    for _, name in ipairs(names) do
        assert.truthy(tostring(err.message):find(name, 1, true),
                      label .. ": the message does not name " .. name .. ": " .. tostring(err))
    end
    return err
end

describe("arguments", function()
    local path, cleanup, conn, closed_conn
    before_each(function()
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x)")
        closed_conn = sqlite.connect(":memory:")
        closed_conn:close()
    end)
    after_each(function()
        -- every refusal gave its slot of max_pending back, and the pool keeps working
        assert.are.equal(0, conn:stats().pending)
        assert.are.equal(42, support.scalar(conn, "SELECT 42"))
        conn:close()
        cleanup()
    end)

    -- Each method with arguments that are right, so that only self is wrong.
    local conn_methods = {
        cursor = {},
        execute = { "SELECT 1" },
        executemany = { "INSERT INTO t VALUES (?)", { { 1 } } },
        executescript = { "SELECT 1" },
        commit = {},
        rollback = {},
        transaction = { function() end },
        interrupt = {},
        stats = {},
        create_function = { "f", 1, print },
        create_aggregate = { "a", 1, print },
        create_collation = { "c", print },
        close = {},
    }
    local cur_methods = {
        execute = { "SELECT 1" },
        executemany = { "INSERT INTO t VALUES (?)", { { 1 } } },
        executescript = { "SELECT 1" },
        fetchone = {},
        fetchmany = { 1 },
        fetchall = {},
        rows = {},
        close = {},
    }

    -- The wrong selves, and what each is called in the message.
    local function wrong_selves(other_class_object)
        return {
            { "nil", nil, "got nil" },
            { "a number", 42, "got number" },
            { "a string", "conn", "got string" },
            { "a plain table", {}, "got table" },
            { "the other class's object", other_class_object, "got a " },
        }
    end

    it("a Connection method called with a wrong self raises ProgrammingError naming 'self'", function()
        local cur = conn:cursor()
        for method, args in pairs(conn_methods) do
            for _, case in ipairs(wrong_selves(cur)) do
                local label, self, got = case[1], case[2], case[3]
                refuses("conn:" .. method .. " with " .. label, "ProgrammingError",
                        { "conn:" .. method, "'self'", got }, conn[method], self, unpack(args))
            end
        end
    end)

    it("conn:execute on a table holding a Connection's fields, with its metatable, runs", function()
        local copy = {}
        for k, v in pairs(conn) do
            copy[k] = v
        end
        setmetatable(copy, getmetatable(conn))
        assert.are.same({ 7, n = 1 }, copy:execute("SELECT 7"):fetchone())
        assert.are.same({ 8, n = 1 }, copy:cursor():execute("SELECT 8"):fetchone())
    end)

    it("cur:execute runs when a hook runs another cursor's execute as it calls on (a finalizer "
       .. "may too); a Cursor as conn:execute's self is refused after that as before", function()
        local cur, other = conn:cursor(), conn:cursor()
        local execute, inner = getmetatable(conn).execute, nil
        debug.sethook(function()
            if inner == nil and debug.getinfo(2, "f").func == execute then
                inner = other:execute("SELECT 2"):fetchone()
            end
        end, "c")
        local ok, res = pcall(function()
            return cur:execute("SELECT 1"):fetchone()
        end)
        debug.sethook()
        assert.is_true(ok, tostring(res))
        assert.are.same({ 1, n = 1 }, res)
        assert.are.same({ 2, n = 1 }, inner)
        refuses("conn.execute(cur)", "ProgrammingError", { "conn:execute", "'self'", "got a Cursor" },
                conn.execute, cur, "SELECT 1")
        refuses("conn.execute(other)", "ProgrammingError", { "conn:execute", "'self'", "got a Cursor" },
                conn.execute, other, "SELECT 1")
    end)

    it("a Cursor method called with a wrong self raises ProgrammingError naming 'self'", function()
        local cur = conn:cursor()
        for method, args in pairs(cur_methods) do
            for _, case in ipairs(wrong_selves(conn)) do
                local label, self, got = case[1], case[2], case[3]
                refuses("cur:" .. method .. " with " .. label, "ProgrammingError",
                        { "cur:" .. method, "'self'", got }, cur[method], self, unpack(args))
            end
        end
    end)

    it("a closed Connection raises ConnectionClosedError for every method but close", function()
        for method, args in pairs(conn_methods) do
            if method == "close" then
                closed_conn:close() -- again: a no-op
            else
                refuses("conn:" .. method, "ConnectionClosedError", {}, closed_conn[method],
                        closed_conn, unpack(args))
            end
        end
        refuses("conn.total_changes", "ConnectionClosedError", {}, function()
            return closed_conn.total_changes
        end)
    end)

    it("a closed Cursor raises ProgrammingError for every method but close; one of a closed "
       .. "connection raises ConnectionClosedError", function()
        local cur = conn:execute("SELECT 1")
        cur:close()
        local other = sqlite.connect(":memory:")
        local orphan = other:execute("SELECT 1")
        other:close()
        for method, args in pairs(cur_methods) do
            if method == "close" then
                cur:close() -- again: a no-op
            elseif method == "rows" then
                refuses("cur:rows", "ProgrammingError", { "closed" }, cur:rows())
                refuses("orphan:rows", "ConnectionClosedError", {}, orphan:rows())
            else
                refuses("cur:" .. method, "ProgrammingError", { "closed" }, cur[method], cur,
                        unpack(args))
                refuses("orphan:" .. method, "ConnectionClosedError", {}, orphan[method], orphan,
                        unpack(args))
            end
        end
    end)

    -- method, the arguments (`false` marks the bad one's place), the bad values, and what the
    -- message must name.
    local bad_arguments = {
        { "execute", { false }, { nil, 42, {}, true }, "'sql'" },
        { "executescript", { false }, { nil, 42, {}, true }, "'script'" },
        { "executemany", { false, { { 1 } } }, { nil, 42, {} }, "'sql'" },
        { "executemany", { "INSERT INTO t VALUES (?)", false }, { nil, 42, "x", true }, "'seq'" },
        { "executemany", { "INSERT INTO t VALUES (?)", false }, { { 42 } }, "parameter set 1" },
        { "execute", { "SELECT ?", false }, { print, coroutine.create(print) }, "parameter 1" },
        { "execute", { "SELECT :a", false }, { { a = print } }, "parameter :a" },
    }

    for _, on in ipairs({ "conn", "cur" }) do
        it("each argument of a wrong type, or missing, raises ProgrammingError naming it (" .. on
           .. ")", function()
            for _, case in ipairs(bad_arguments) do
                local method, args, values, name = case[1], case[2], case[3], case[4]
                for i = 1, #values + (values[1] == nil and 1 or 0) do
                    local bad = values[i]
                    local call = {}
                    for k = 1, #args do
                        if args[k] == false then
                            call[k] = bad
                        else
                            call[k] = args[k]
                        end
                    end
                    local self = on == "conn" and conn or conn:cursor()
                    refuses(on .. ":" .. method .. " with " .. tostring(bad), "ProgrammingError",
                            { name }, self[method], self, unpack(call, 1, #args))
                end
            end
        end)
    end

    it("missing arguments raise ProgrammingError naming them", function()
        refuses("conn:execute()", "ProgrammingError", { "conn:execute", "'sql'" }, conn.execute, conn)
        refuses("cur:execute()", "ProgrammingError", { "cur:execute", "'sql'" }, conn:cursor().execute,
                conn:cursor())
        refuses("conn:executemany(sql)", "ProgrammingError", { "'seq'" }, conn.executemany, conn,
                "INSERT INTO t VALUES (?)")
        refuses("conn:executescript()", "ProgrammingError", { "'script'" }, conn.executescript, conn)
        refuses("conn:transaction()", "ProgrammingError", { "'fn'" }, conn.transaction, conn)
        refuses("sqlite.connect()", "ProgrammingError", { "connect", "'database'" }, sqlite.connect)
        refuses("sqlite.blob()", "ProgrammingError", { "blob", "'s'" }, sqlite.blob)
        refuses("sqlite.run()", "ProgrammingError", { "sqlite.run", "'fn'" }, sqlite.run)
        refuses("sqlite.sleep()", "ProgrammingError", { "sqlite.sleep", "'seconds'" }, sqlite.sleep)
        -- a wrong number of statement parameters
        refuses("execute with too few", "ProgrammingError", {}, conn.execute, conn, "SELECT ?, ?", 1)
    end)

    it("transaction's fn and mode, and fetchmany's n, are checked", function()
        for _, fn in ipairs({ 42, "f", {}, true }) do
            refuses("transaction fn " .. tostring(fn), "ProgrammingError", { "conn:transaction", "'fn'" },
                    conn.transaction, conn, fn)
        end
        for _, mode in ipairs({ 42, "sometimes", {}, true }) do
            refuses("transaction mode " .. tostring(mode), "ProgrammingError",
                    { "conn:transaction", "'mode'" }, conn.transaction, conn, function() end, mode)
        end
        assert.is_false(conn.in_transaction) -- refused before BEGIN
        for _, n in ipairs({ -1, 1.5, "x", {}, true }) do
            local cur = conn:execute("SELECT 1")
            refuses("fetchmany " .. tostring(n), "ProgrammingError", { "cur:fetchmany", "'n'" },
                    cur.fetchmany, cur, n)
            assert.are.same({ 1, n = 1 }, cur:fetchone()) -- nothing used up
        end
    end)

    it("connect's database and options are checked", function()
        for _, database in ipairs({ 42, {}, true, print }) do
            refuses("connect " .. tostring(database), "ProgrammingError", { "connect", "'database'" },
                    sqlite.connect, database)
        end
        for _, options in ipairs({ 42, "x", true }) do
            refuses("connect options " .. tostring(options), "ProgrammingError",
                    { "connect", "'options'" }, sqlite.connect, ":memory:", options)
        end
        refuses("an unknown option", "ProgrammingError", { "'nope'" }, sqlite.connect, ":memory:",
                { nope = 1 })
        refuses("a bad option value", "ProgrammingError", { "'readers'" }, sqlite.connect,
                ":memory:", { readers = "many" })
    end)

    it("the module's functions check their arguments; fd, dispatch and is_error take any", function()
        for _, s in ipairs({ 42, {}, true }) do
            refuses("blob " .. tostring(s), "ProgrammingError", { "blob", "'s'" }, sqlite.blob, s)
        end
        for _, fn in ipairs({ 42, "f", {} }) do
            refuses("run " .. tostring(fn), "ProgrammingError", { "sqlite.run", "'fn'" }, sqlite.run, fn)
        end
        for _, seconds in ipairs({ "1", {}, true }) do
            refuses("sleep " .. tostring(seconds), "ProgrammingError", { "sqlite.sleep", "'seconds'" },
                    sqlite.sleep, seconds)
        end
        refuses("spawn outside run", "ProgrammingError", { "sqlite.spawn" }, sqlite.spawn, print)
        sqlite.run(function()
            for _, fn in ipairs({ 42, "f", {} }) do
                refuses("spawn " .. tostring(fn), "ProgrammingError", { "sqlite.spawn", "'fn'" },
                        sqlite.spawn, fn)
            end
            refuses("run inside run", "ProgrammingError", { "sqlite.run" }, sqlite.run, print)
            local h = sqlite.spawn(function() sqlite.sleep(0.01) end)
            for _, self in ipairs({ 42, {}, "h" }) do
                refuses("join with " .. tostring(self), "ProgrammingError", { "handle:join", "'self'" },
                        h.join, self)
            end
            refuses("join on itself", "ProgrammingError", { "handle:join" }, function()
                local me
                me = sqlite.spawn(function() return me:join() end)
                sqlite.sleep(0)
                return me:join()
            end)
            h:join()
        end)
        for _, h in ipairs({ 42, "x", true }) do
            refuses("set_host " .. tostring(h), "ProgrammingError", { "set_host", "'h'" },
                    sqlite.set_host, h)
        end
        refuses("set_host with a bad field", "ProgrammingError", { "set_host", "h.suspend" },
                sqlite.set_host, { suspend = 1 })
        assert.is_number(sqlite.fd(1, 2))
        assert.are.equal(0, sqlite.dispatch("x"))
        assert.is_false(sqlite.is_error(nil))
        assert.is_false(sqlite.is_error({ kind = "ProgrammingError" }))
    end)

    it("fields that cannot be set raise ProgrammingError naming the field", function()
        local cur = conn:execute("SELECT 1")
        for _, case in ipairs({
            { conn, "closed", true }, { conn, "in_transaction", true }, { conn, "total_changes", 1 },
            { conn, "row", 42 }, { conn, "rows", "named" }, { cur, "rowcount", 1 },
            { cur, "description", {} }, { cur, "connection", conn }, { cur, "row", {} },
            { cur, "fetchone", print },
        }) do
            local obj, key, value = case[1], case[2], case[3]
            refuses("setting " .. key, "ProgrammingError", { key }, function()
                obj[key] = value
            end)
        end
    end)

    it("parameter tables are read raw, and too many values is a ProgrammingError", function()
        local strict = setmetatable({ 1 }, { __index = function(_, k)
            error("strict table: no field " .. tostring(k))
        end })
        conn:executemany("INSERT INTO t VALUES (?)", { strict }) -- a set: its metatable unused
        assert.are.equal(1, support.scalar(conn, "SELECT count(*) FROM t"))
        local many = {}
        for i = 1, 1000001 do
            many[i] = i
        end
        refuses("a million parameters", "ProgrammingError", { "too many parameters" },
                conn.execute, conn, "SELECT ?", many)
    end)

    it("the binding's own functions raise error objects too", function()
        local core = require "pasyn_sqlite.core"
        refuses("core.submit with no pool", "ProgrammingError", { "submit", "'pool'" }, core.submit,
                nil, "exec", 1, true, nil, "SELECT 1")
        refuses("core.submit with a bad owner", "ProgrammingError", { "submit", "'owner'" },
                core.submit, conn._pool, "exec", "me", true, nil, "SELECT 1")
        refuses("core.submit with a bad timeout", "ProgrammingError", { "submit", "'timeout'" },
                core.submit, conn._pool, "exec", 1, true, "soon", "SELECT 1")
        refuses("core.fetch with no stream", "ProgrammingError", { "fetch", "'stream'" }, core.fetch,
                {}, 1, true)
        refuses("core.poll with a bad timeout", "ProgrammingError", { "poll", "'seconds'" }, core.poll,
                "x")
        -- a failure the Lua layer raises, in the shape of every core failure
        local task, class = core.submit(closed_conn._pool, "exec", 1, true, nil, "SELECT 1")
        assert.same({ nil, "closed" }, { task, class })
    end)
end)

describe("closing while an operation waits", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x)")
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    local function rows_in_t()
        local check = sqlite.connect(path)
        local n = support.scalar(check, "SELECT count(*) FROM t")
        check:close()
        return n
    end

    -- Runs `operation` in one coroutine and closes conn from another while it waits (it sleeps
    -- where `pause` is called); returns what the operation raised.
    -- Runs operation(pause) in a coroutine and closes the connection while it is in pause()
    -- (or once it ended without pausing): pause() returns once close() has (however long a
    -- loaded machine takes), at most after 10 s. Returns what operation raised, or "no error".
    local function close_during(operation)
        local raised, paused
        sqlite.run(function()
            sqlite.spawn(function()
                local ok, err = pcall(operation, function()
                    paused = true
                    for _ = 1, 2000 do
                        if conn.closed then
                            break
                        end
                        sqlite.sleep(0.005)
                    end
                end)
                raised = ok and "no error" or err
            end)
            while not paused and raised == nil do
                sqlite.sleep(0.001)
            end
            conn:close()
        end)
        return raised
    end

    it("an executemany whose iterator sleeps raises ConnectionClosedError; nothing is written",
       function()
        for _, n in ipairs({ 5, 25000 }) do -- one chunk; more (a transaction around them)
            if conn.closed then
                conn = sqlite.connect(path)
            end
            local err = close_during(function(pause)
                local i = 0
                conn:executemany("INSERT INTO t VALUES (?)", function()
                    i = i + 1
                    if i == math.min(3, n) or i == 15000 then
                        pause()
                    end
                    if i <= n then
                        return { i }
                    end
                end)
            end)
            assert.is_true(sqlite.is_error(err), n .. " sets: " .. tostring(err))
            assert.are.equal("ConnectionClosedError", err.kind, tostring(err))
            assert.are.equal(0, rows_in_t())
        end
    end)

    it("a blocking executemany whose iterator closes the connection raises "
       .. "ConnectionClosedError; the chunk on its way is waited for; nothing is written", function()
        local i = 0
        local ok, err = pcall(conn.executemany, conn, "INSERT INTO t VALUES (?)", function()
            i = i + 1
            if i == 15000 then -- the first chunk is on its way
                conn:close()
            end
            if i <= 25000 then
                return { i }
            end
        end)
        assert.is_false(ok)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.are.equal("ConnectionClosedError", err.kind, tostring(err))
        conn = sqlite.connect(path)
        assert.are.equal(0, rows_in_t())
    end)

    it("a fetch loop that sleeps raises an error object of the PoolError kinds", function()
        local rows = {}
        for i = 1, 20000 do
            rows[i] = { i }
        end
        conn:executemany("INSERT INTO t VALUES (?)", rows)
        local seen = 0
        local err = close_during(function(pause)
            local cur = conn:execute("SELECT x FROM t")
            for _ in cur:rows() do
                seen = seen + 1
                if seen == 1 then
                    pause()
                end
            end
        end)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.is_true(err:is("PoolError"), tostring(err))
        assert.is_true(seen < 20000)
    end)

    it("transaction(fn) raises ConnectionClosedError when the connection closes while fn runs, "
       .. "and nothing of fn is committed", function()
        local err = close_during(function(pause)
            conn:transaction(function(c)
                c:execute("INSERT INTO t VALUES (1)")
                pause()
            end)
        end)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.are.equal("ConnectionClosedError", err.kind, tostring(err))
        assert.are.equal(0, rows_in_t())
        -- fn closing the connection itself
        conn = sqlite.connect(path)
        local own = support.raises("ConnectionClosedError", conn.transaction, conn, function(c)
            c:execute("INSERT INTO t VALUES (2)")
            c:close()
        end)
        assert.truthy(own.message)
        assert.are.equal(0, rows_in_t())
    end)
end)
