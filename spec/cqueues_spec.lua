-- The cqueues adapter (pasyn_sqlite.cqueues): queries in a controller's coroutines yield to
-- the controller while its other coroutines (timers) keep running, results and errors come
-- back right, and cq:loop() returns by itself once the program's work is done (the
-- dispatcher coroutine ends when no query waits). Calls from anywhere else block.
local cqueues = require "cqueues"
local sqlite = require "pasyn_sqlite"
local support = require "support"

-- The adapter sets the host of the whole Lua state: keep it to this file's tests.
local host_before = sqlite.set_host(nil)
assert(require "pasyn_sqlite.cqueues" == sqlite, "the adapter returns the module table itself")
local cq_host = sqlite.set_host(host_before)

local tmpdb = support.tmpdb
local monotime = cqueues.monotime
local LUA = jit and "luajit" or "lua" .. _VERSION:sub(5) -- luacheck: ignore jit

-- A single read that keeps a reader busy for ~300 ms here (longer on a loaded machine or
-- under a sanitizer).
local LONG_ROWS = 1500000
local LONG_SQL = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT count(*) FROM c]]
local MEDIUM_ROWS = 300000 -- ~60 ms
local TICK = 0.005

-- Runs cq:loop() (bounded: `seconds`, 30 by default) and checks that it returned by itself,
-- without error, with no coroutine left (the dispatcher included).
local function run_loop(cq, seconds)
    local ok, err = cq:loop(seconds or 30)
    assert.is_true(ok, tostring(err))
    assert.is_true(cq:empty(), "cq:loop() did not finish: " .. cq:count() .. " coroutines left")
end

-- Runs LONG_SQL in a coroutine of a new controller while another coroutine of it sleeps
-- TICK at a time, recording when it wakes; returns the count, the query's duration (s) and
-- the wake-ups' times inside it.
local function long_query_with_ticker(conn)
    local cq = cqueues.new()
    local ticks, q0, q1, count = {}, nil, nil, nil
    cq:wrap(function()
        while not q1 do
            cqueues.sleep(TICK)
            ticks[#ticks + 1] = monotime()
        end
    end)
    cq:wrap(function()
        q0 = monotime()
        count = conn:execute(LONG_SQL, LONG_ROWS):fetchone()[1]
        q1 = monotime()
    end)
    run_loop(cq, 60)
    local inside = {}
    for _, t in ipairs(ticks) do
        if t > q0 and t < q1 then
            inside[#inside + 1] = t
        end
    end
    return count, q1 - q0, inside
end

describe("pasyn_sqlite.cqueues", function()
    local path, cleanup, conn
    setup(function()
        sqlite.set_host(cq_host)
    end)
    teardown(function()
        sqlite.set_host(host_before)
    end)
    before_each(function()
        path, cleanup = tmpdb()
        conn = sqlite.connect(path, { readers = 2, inline_reads = false }) -- every query yields
        conn:execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)")
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    it("keeps a 5 ms sleeper of the controller waking while a coroutine's ~300 ms query runs", function()
        local count, duration, inside = long_query_with_ticker(conn)
        assert.are.equal(LONG_ROWS, count)
        assert.is_true(duration >= 8 * TICK, ("the query took %.1f ms only: raise LONG_ROWS")
            :format(duration * 1000))
        support.check_ticks("cqueues " .. LUA, duration * 1000, TICK * 1000, inside,
                            function(seconds) return seconds * 1000 end)
    end)

    it("lets no tick through when the query blocks instead (the check above can tell)", function()
        sqlite.set_host({ can_yield = function() return false end,
                          suspend = cq_host.suspend, resume = cq_host.resume })
        local ok, count, _, inside = pcall(long_query_with_ticker, conn)
        sqlite.set_host(cq_host)
        assert.is_true(ok, tostring(count))
        assert.are.equal(LONG_ROWS, count)
        assert.are.equal(0, #inside)
    end)

    it("gives every one of 100 coroutines its own point read, all waiting at once", function()
        local rows = {}
        for id = 1, 100 do
            rows[id] = { id, "v" .. id * 7 }
        end
        conn:executemany("INSERT INTO kv VALUES (?, ?)", rows)
        local cq = cqueues.new()
        local got, waiting, max_waiting = {}, 0, 0
        for id = 1, 100 do
            cq:wrap(function()
                waiting = waiting + 1
                max_waiting = math.max(max_waiting, waiting)
                got[id] = conn:execute("SELECT v FROM kv WHERE id = ?", id):fetchone()[1]
                waiting = waiting - 1
            end)
        end
        run_loop(cq)
        assert.are.equal(100, max_waiting) -- each yielded at its query: none blocked
        for id = 1, 100 do
            assert.are.equal("v" .. id * 7, got[id])
        end
    end)

    it("raises a query's error as an error object inside the coroutine; the loop goes on", function()
        local cq = cqueues.new()
        local err, after, ticks = nil, nil, 0
        cq:wrap(function()
            while not after do
                cqueues.sleep(0.001)
                ticks = ticks + 1
            end
        end)
        cq:wrap(function()
            local ok
            ok, err = pcall(conn.execute, conn, "SELECT * FROM missing_table")
            assert(not ok)
            after = conn:execute("SELECT 6 * 7"):fetchone()[1]
        end)
        run_loop(cq)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.are.equal("OperationalError", err.kind)
        assert.matches("missing_table", err.message)
        assert.are.equal(42, after)
        assert.is_true(ticks >= 1)
    end)

    it("ends with cq:loop() returning false and the error a coroutine does not catch; " ..
       "the others finish on the next loop", function()
        local cq = cqueues.new()
        local finished = 0
        cq:wrap(function()
            conn:execute("SELECT 1")
            error("raised after the query")
        end)
        for i = 1, 10 do
            cq:wrap(function()
                assert(conn:execute("SELECT ?", i):fetchone()[1] == i)
                finished = finished + 1
            end)
        end
        local ok, err = cq:loop(30)
        assert.is_false(ok)
        assert.matches("raised after the query", tostring(err))
        run_loop(cq)
        assert.are.equal(10, finished)
    end)

    it("shows a write of one coroutine to a later read of another", function()
        local cq = cqueues.new()
        local seen = {}
        cq:wrap(function()
            for i = 1, 20 do
                conn:execute("INSERT INTO kv VALUES (?, 'w')", i)
                cq:wrap(function() -- starts after the write returned
                    local row = conn:execute("SELECT v FROM kv WHERE id = ?", i):fetchone()
                    seen[i] = row and row[1]
                end)
            end
        end)
        run_loop(cq)
        for i = 1, 20 do
            assert.are.equal("w", seen[i], "read " .. i)
        end
    end)

    it("closes a connection from inside a coroutine; then cq:loop returns, no coroutine left", function()
        local other_path, other_cleanup = tmpdb()
        local cq = cqueues.new()
        local other, n
        cq:wrap(function()
            other = sqlite.connect(other_path)
            other:execute("CREATE TABLE t (x)")
            other:execute("INSERT INTO t VALUES (1), (2)")
            n = other:execute("SELECT count(*) FROM t"):fetchone()[1]
            other:close()
        end)
        run_loop(cq)
        other_cleanup()
        assert.are.equal(2, n)
        assert.is_true(other.closed)
        assert.are.equal(0, cq:count())
        support.raises("ConnectionClosedError", other.execute, other, "SELECT 1")
    end)

    it("runs the dispatcher only while a query waits, so cq:loop returns by itself", function()
        local cq = cqueues.new()
        local idle_count, n = {}, 0
        cq:wrap(function()
            for i = 1, 3 do
                n = n + conn:execute("SELECT ?", i):fetchone()[1]
                cqueues.sleep(0.02)
                idle_count[i] = cq:count() -- nothing waits: this coroutine alone
            end
        end)
        run_loop(cq)
        assert.are.equal(6, n)
        assert.same({ 1, 1, 1 }, idle_count)
    end)

    it("lets the dispatcher end when a dispatch made elsewhere resumed its waiters", function()
        local cq = cqueues.new()
        local got
        cq:wrap(function()
            got = conn:execute(LONG_SQL, MEDIUM_ROWS):fetchone()[1]
        end)
        assert.is_true(cq:step(0)) -- the query waits; the dispatcher is made...
        assert.is_true(cq:step(0)) -- ...and polls
        assert.are.equal(2, cq:count(), "the query ended before the dispatcher polled")
        local deadline = monotime() + 30
        while sqlite.dispatch() == 0 do -- by hand, outside the controller
            assert.is_true(monotime() < deadline, "no completion in 30 s")
            cqueues.sleep(0.001)
        end
        assert.is_nil(got) -- signalled, not run yet
        run_loop(cq)
        assert.are.equal(MEDIUM_ROWS, got)
    end)

    it("serves the coroutines of two controllers stepped by a third; all loops return", function()
        local outer, a, b = cqueues.new(), cqueues.new(), cqueues.new()
        local sum = 0
        for i = 1, 20 do
            local cq = i % 2 == 0 and a or b
            cq:wrap(function()
                for _ = 1, 5 do
                    local v = conn:execute("SELECT ?", i):fetchone()[1] -- then add: the
                    sum = sum + v                                        -- others add meanwhile
                end
            end)
        end
        outer:wrap(function() assert(a:loop()) end)
        outer:wrap(function() assert(b:loop()) end)
        run_loop(outer)
        assert.are.equal(5 * 210, sum)
        assert.is_true(a:empty() and b:empty())
    end)

    it("blocks, and works, for calls from the main thread and from a plain coroutine " ..
       "nested in a controller's", function()
        assert.are.equal(3, conn:execute("SELECT 1 + 2"):fetchone()[1])
        local cq = cqueues.new()
        local got, status
        cq:wrap(function()
            local nested = coroutine.create(function()
                got = conn:execute("SELECT 'nested'"):fetchone()[1]
            end)
            assert(coroutine.resume(nested))
            status = coroutine.status(nested) -- dead: it never yielded
        end)
        run_loop(cq)
        assert.are.equal("nested", got)
        assert.are.equal("dead", status)
    end)
end)
