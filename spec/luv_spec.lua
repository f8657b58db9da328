-- The luv adapter (pasyn_sqlite.luv): queries in coroutines yield to uv.run() while its
-- timers keep firing, results and errors come back right, and uv.run() returns by itself once
-- the program's work is done (the poll handle on sqlite.fd() is active only while a query
-- waits). Calls outside coroutines block.
local uv = require "luv"
local sqlite = require "pasyn_sqlite"
local support = require "support"

-- The adapter sets the host of the whole Lua state: keep it to this file's tests.
local host_before = sqlite.set_host(nil)
assert(require "pasyn_sqlite.luv" == sqlite, "the adapter returns the module table itself")
local luv_host = sqlite.set_host(host_before)

local tmpdb = support.tmpdb
local LUA = jit and "luajit" or "lua" .. _VERSION:sub(5) -- luacheck: ignore jit

-- A single read that keeps a reader busy for ~300 ms here (longer on a loaded machine or
-- under a sanitizer).
local LONG_ROWS = 1500000
local LONG_SQL = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT count(*) FROM c]]
local TICK_MS = 5

local function ms(ns)
    return ns / 1e6
end

-- Whether a poll handle (ours: the adapter makes the only one) is active on the loop.
local function poll_active()
    local active = false
    uv.walk(function(handle)
        if tostring(handle):match("^uv_poll_t") and handle:is_active() then
            active = true
        end
    end)
    return active
end

-- Runs uv.run() until it returns by itself; an unreferenced watchdog timer (it keeps nothing
-- alive) stops the loop after `seconds`. Returns true when the loop ended by itself.
local function run_loop(seconds)
    local fired = false
    local watchdog = uv.new_timer()
    watchdog:unref()
    watchdog:start((seconds or 30) * 1000, 0, function()
        fired = true
        uv.stop()
    end)
    uv.run()
    watchdog:stop()
    watchdog:close()
    uv.run("nowait") -- lets the watchdog's close complete
    return not fired
end

-- Starts fn in a new coroutine now (it runs until its first query yields).
local function go(fn, ...)
    local co = coroutine.create(fn)
    assert(coroutine.resume(co, ...))
    return co
end

-- Runs LONG_SQL in a coroutine while a TICK_MS repeating timer of the loop records when it
-- fires; returns the count, the query's duration (ms) and the ticks' times (ns) inside it.
local function long_query_with_ticker(conn)
    local ticks, q0, q1, count = {}, nil, nil, nil
    local timer = uv.new_timer()
    timer:start(TICK_MS, TICK_MS, function()
        ticks[#ticks + 1] = uv.hrtime()
    end)
    local start = uv.new_timer()
    start:start(1, 0, function() -- the query starts from inside the running loop
        start:close()
        go(function()
            q0 = uv.hrtime()
            count = conn:execute(LONG_SQL, LONG_ROWS):fetchone()[1]
            q1 = uv.hrtime()
            timer:stop()
            timer:close()
        end)
    end)
    assert.is_true(run_loop(60), "uv.run() did not return")
    local inside = {}
    for _, t in ipairs(ticks) do
        if t > q0 and t < q1 then
            inside[#inside + 1] = t
        end
    end
    return count, ms(q1 - q0), inside
end

describe("pasyn_sqlite.luv", function()
    local path, cleanup, conn
    setup(function()
        sqlite.set_host(luv_host)
    end)
    teardown(function()
        sqlite.set_host(host_before)
    end)
    before_each(function()
        path, cleanup = tmpdb()
        conn = sqlite.connect(path, { readers = 2 })
        conn:execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)")
    end)
    after_each(function()
        conn:close()
        cleanup()
        assert.is_false(poll_active())
    end)

    it("keeps a 5 ms timer of the loop firing while a coroutine's ~300 ms query runs", function()
        local count, duration, inside = long_query_with_ticker(conn)
        assert.are.equal(LONG_ROWS, count)
        assert.is_true(duration >= 8 * TICK_MS, ("the query took %.1f ms only: raise LONG_ROWS")
            :format(duration))
        support.check_ticks("luv " .. LUA, duration, TICK_MS, inside, ms)
    end)

    it("lets no tick through when the query blocks instead (the check above can tell)", function()
        sqlite.set_host({ can_yield = function() return false end,
                          suspend = luv_host.suspend, resume = luv_host.resume })
        local ok, count, _, inside = pcall(long_query_with_ticker, conn)
        sqlite.set_host(luv_host)
        assert.is_true(ok, tostring(count))
        assert.are.equal(LONG_ROWS, count)
        assert.are.equal(0, #inside)
    end)

    it("gives every one of 100 coroutines its own point read, all waiting at once", function()
        -- Every read goes to a reader, so each coroutine yields at its query: with inline
        -- reads on, a short read runs without a yield when the machine has no core for a
        -- reader, or while every reader is taken by a read of unknown cost (the first ones).
        conn:close()
        conn = sqlite.connect(path, { readers = 2, inline_reads = false })
        local rows = {}
        for id = 1, 100 do
            rows[id] = { id, "v" .. id * 7 }
        end
        conn:executemany("INSERT INTO kv VALUES (?, ?)", rows)
        local got, waiting, max_waiting = {}, 0, 0
        for id = 1, 100 do
            go(function()
                waiting = waiting + 1
                max_waiting = math.max(max_waiting, waiting)
                got[id] = conn:execute("SELECT v FROM kv WHERE id = ?", id):fetchone()[1]
                waiting = waiting - 1
            end)
        end
        assert.are.equal(100, max_waiting) -- each yielded at its query: none blocked
        assert.is_true(poll_active())
        assert.is_true(run_loop())
        for id = 1, 100 do
            assert.are.equal("v" .. id * 7, got[id])
        end
    end)

    it("raises a query's error as an error object inside the coroutine; the loop goes on", function()
        local err, after, ticks = nil, nil, 0
        local timer = uv.new_timer()
        timer:start(1, 1, function()
            ticks = ticks + 1
        end)
        go(function()
            local ok
            ok, err = pcall(conn.execute, conn, "SELECT * FROM missing_table")
            assert(not ok)
            after = conn:execute("SELECT 6 * 7"):fetchone()[1]
            timer:stop()
            timer:close()
        end)
        assert.is_true(run_loop())
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.are.equal("OperationalError", err.kind)
        assert.matches("missing_table", err.message)
        assert.are.equal(42, after)
    end)

    it("reports an error the coroutine does not catch as luv reports a callback's", function()
        -- A child process: under make tsan the shell io.popen starts would inherit the
        -- preloaded ThreadSanitizer runtime, with which /bin/sh crashes at start. The other
        -- builds (make test, make asan) run this check.
        if (os.getenv("LD_PRELOAD") or ""):find("tsan", 1, true) then
            pending("a child process cannot start under the preloaded ThreadSanitizer runtime")
            return
        end
        local script = os.tmpname()
        local f = assert(io.open(script, "w"))
        f:write([[
            local uv = require "luv"
            local sqlite = require "pasyn_sqlite.luv"
            local conn = sqlite.connect(":memory:")
            coroutine.wrap(function()
                conn:execute("SELECT 1")
                error("raised after the query")
            end)()
            uv.run()
            print("uv.run returned")
        ]])
        f:close()
        local p = assert(io.popen(LUA .. " " .. script .. " 2>&1; echo \"status=$?\""))
        local out = p:read("*a")
        p:close()
        os.remove(script)
        assert.matches("Uncaught Error: [^\n]*raised after the query", out)
        -- the coroutine's own traceback (its function starts on line 4), not only luv's
        assert.truthy(out:find("in function <" .. script .. ":4>", 1, true), out)
        assert.not_matches("uv.run returned", out)
        assert.are_not.equal(0, tonumber(out:match("status=(%d+)")))
    end)

    it("shows a write of one coroutine to a later read of another", function()
        local seen = {}
        local function reader(i)
            local row = conn:execute("SELECT v FROM kv WHERE id = ?", i):fetchone()
            seen[i] = row and row[1]
        end
        go(function()
            for i = 1, 20 do
                conn:execute("INSERT INTO kv VALUES (?, 'w')", i)
                go(reader, i) -- starts after the write returned
                conn:execute("SELECT 1") -- and the writer waits while the reader reads
            end
        end)
        assert.is_true(run_loop())
        for i = 1, 20 do
            assert.are.equal("w", seen[i], "read " .. i)
        end
    end)

    it("closes a connection from inside a coroutine; then uv.run returns, nothing of ours left", function()
        local other_path, other_cleanup = tmpdb()
        local other, n
        go(function()
            other = sqlite.connect(other_path)
            other:execute("CREATE TABLE t (x)")
            other:execute("INSERT INTO t VALUES (1), (2)")
            n = other:execute("SELECT count(*) FROM t"):fetchone()[1]
            other:close()
        end)
        assert.is_true(run_loop(), "uv.run() did not return by itself")
        other_cleanup()
        assert.are.equal(2, n)
        assert.is_true(other.closed)
        assert.is_false(poll_active())
        assert.is_false(uv.loop_alive())
        support.raises("ConnectionClosedError", other.execute, other, "SELECT 1")
    end)

    it("keeps the poll handle active only while a query waits, so uv.run returns by itself", function()
        local idle_seen, n = {}, 0
        local timer = uv.new_timer()
        go(function()
            local co = coroutine.running()
            for i = 1, 3 do
                n = n + conn:execute("SELECT ?", i):fetchone()[1]
                timer:start(20, 0, function()
                    idle_seen[i] = poll_active() -- the coroutine sleeps: nothing waits
                    assert(coroutine.resume(co))
                end)
                coroutine.yield()
            end
            timer:close()
        end)
        assert.is_true(poll_active())
        assert.is_true(run_loop(), "uv.run() did not return by itself")
        assert.are.equal(6, n)
        assert.same({ false, false, false }, idle_seen)
        assert.is_false(uv.loop_alive())
    end)

    it("blocks, and works, for calls from the main thread and from a luv callback", function()
        assert.are.equal(3, conn:execute("SELECT 1 + 2"):fetchone()[1])
        assert.is_false(poll_active())
        local got
        local timer = uv.new_timer()
        timer:start(1, 0, function()
            got = conn:execute("SELECT 'from a callback'"):fetchone()[1]
            assert(not poll_active())
            timer:close()
        end)
        assert.is_true(run_loop())
        assert.are.equal("from a callback", got)
    end)
end)
