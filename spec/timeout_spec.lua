-- Statement timeouts and interrupt(): the `timeout` option and cursor.timeout stop a statement
-- that runs too long (OperationalError, code 9, "statement timed out after <t> s"), counted
-- from when a worker starts it, on readers and on the writer; conn:interrupt() stops what runs
-- now on every thread ("interrupted"); other statements are not touched, and the pool goes on
-- working afterwards.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local tmpdb = support.tmpdb

-- A recursive query that runs for many seconds (tens of millions of rows). It is bounded so
-- that a timeout or interrupt that does not work fails the test with a count rather than
-- hanging it.
local RUNAWAY = [[WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 60000000)
                 SELECT count(*) FROM r]]

-- The same as a write, of many seconds too: inserts twenty million numbers into `big`.
local RUNAWAY_INSERT = [[INSERT INTO big (x)
                         WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 20000000)
                         SELECT i FROM r]]

-- A query of n rows' work that ends on its own (about a third of a second per million rows).
local function counting(n)
    return "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT " .. n ..
           ") SELECT count(*) FROM r"
end

-- Runs each function of `fns` in a coroutine of its own, all at once, in that order. Returns,
-- for each, { ok = true, value = its result } or { ok = false, err = its error }.
local function together(fns)
    local out = {}
    sqlite.run(function()
        for i, fn in ipairs(fns) do
            sqlite.spawn(function()
                local ok, v = pcall(fn)
                out[i] = ok and { ok = true, value = v } or { ok = false, err = v }
            end)
        end
    end)
    return out
end

-- Asserts that an outcome of together() is a timeout after `seconds` (as the message writes
-- them) of the statement `sql`.
local function assert_timed_out(outcome, seconds, sql)
    assert.is_false(outcome.ok, "the statement was not stopped: it returned " .. tostring(outcome.value))
    local err = outcome.err
    assert.is_true(sqlite.is_error(err), tostring(err))
    assert.equal("OperationalError", err.kind)
    assert.equal(9, err.code) -- SQLITE_INTERRUPT
    assert.equal("statement timed out after " .. seconds .. " s", err.message)
    if sql then
        assert.equal(sql, err.sql)
    end
end

local function assert_interrupted(outcome)
    assert.is_false(outcome.ok, "the statement was not stopped: it returned " .. tostring(outcome.value))
    local err = outcome.err
    assert.is_true(sqlite.is_error(err), tostring(err))
    assert.equal("OperationalError", err.kind)
    assert.equal(9, err.code)
    assert.equal("interrupted", err.message)
end

-- Runs sql on a fresh cursor of conn whose timeout is `timeout` (nil: no limit); returns the
-- first value of its first row.
local function scalar_within(conn, timeout, sql, ...)
    local cur = conn:cursor()
    cur.timeout = timeout
    return cur:execute(sql, ...):fetchone()[1]
end

-- Calls conn:interrupt() every few milliseconds until done() is true: the statement to stop
-- may not have started on its worker yet when the first call comes.
local function interrupt_until(conn, done)
    while not done() do
        conn:interrupt()
        sqlite.sleep(0.02)
    end
end

-- Writes and reads on conn succeed, and queries of some length without a timeout run to
-- their end on every thread (several at once reach every reader).
local function assert_works(conn)
    conn.timeout = nil -- what is checked here is that the pool works, at any speed (sanitizers)
    conn:execute("CREATE TABLE IF NOT EXISTS after (x INTEGER)")
    local before = support.scalar(conn, "SELECT count(*) FROM after")
    assert.equal(1, conn:execute("INSERT INTO after (x) VALUES (?)", 1).rowcount)
    assert.equal(before + 1, support.scalar(conn, "SELECT count(*) FROM after"))
    assert.equal(20000, support.scalar(conn, counting(20000)))
    local fns = {}
    for i = 1, 8 do
        fns[i] = function() return support.scalar(conn, counting(20000)) end
    end
    for i, outcome in ipairs(together(fns)) do
        assert.same({ ok = true, value = 20000 }, outcome, "query " .. i)
    end
end

local SHAPES = {
    { name = "the default pool", options = {} },
    { name = "a pool without readers", options = { readers = 0 } },
}

-- Each test gets a fresh database file; the connection it opened (conn) is closed after it.
local path, cleanup, conn
local function fresh_db_each_test()
    before_each(function()
        path, cleanup = tmpdb()
    end)
    after_each(function()
        if conn then
            conn:close()
            conn = nil
        end
        cleanup()
    end)
end

describe("timeouts", function()
    fresh_db_each_test()

    local function open(shape, extra)
        local opts = {}
        for k, v in pairs(shape and shape.options or {}) do
            opts[k] = v
        end
        for k, v in pairs(extra or {}) do
            opts[k] = v
        end
        conn = sqlite.connect(path, opts)
        return conn
    end

    describe("the timeout option", function()
        it("must be a number of seconds above 0", function()
            for _, bad in ipairs({ 0, -1, "1", math.huge, -math.huge, 0 / 0, true, {} }) do
                local err = support.raises("ProgrammingError", sqlite.connect, path, { timeout = bad })
                assert.matches("timeout", err.message)
            end
        end)

        it("is conn.timeout, nil when not given", function()
            open(nil, { timeout = 0.5 })
            assert.equal(0.5, conn.timeout)
            conn:close()
            open()
            assert.is_nil(conn.timeout)
        end)

        it("gives every new cursor its timeout; a cursor's own timeout changes only that cursor",
           function()
            open(nil, { timeout = 2 })
            local a, b = conn:cursor(), conn:cursor()
            assert.equal(2, a.timeout)
            assert.equal(2, conn:execute("SELECT 1").timeout)
            a.timeout = 0.1
            assert.equal(0.1, a.timeout)
            assert.equal(2, b.timeout)
            assert.equal(2, conn.timeout)
            assert.equal(2, conn:cursor().timeout)
        end)

        it("a cursor's bad timeout raises ProgrammingError naming it, and nothing runs", function()
            open()
            conn:execute("CREATE TABLE t (x INTEGER)")
            for _, bad in ipairs({ 0, -1, "soon", math.huge, 0 / 0, true }) do
                local cur = conn:cursor()
                cur.timeout = bad
                local err = support.raises("ProgrammingError", cur.execute, cur,
                                           "INSERT INTO t VALUES (1)")
                assert.matches("timeout", err.message)
                support.raises("ProgrammingError", cur.executemany, cur, "INSERT INTO t VALUES (?)",
                               { { 1 } })
            end
            conn.timeout = -5 -- taken by new cursors, refused when one is used
            support.raises("ProgrammingError", conn.execute, conn, "INSERT INTO t VALUES (1)")
            conn.timeout = nil
            assert.equal(0, support.scalar(conn, "SELECT count(*) FROM t"))
            assert_works(conn)
        end)
    end)

    for _, shape in ipairs(SHAPES) do
        describe("on " .. shape.name, function()
            it("a runaway query is stopped by its timeout while the pool's other statements finish",
               function()
                open(shape)
                conn:execute("CREATE TABLE t (x INTEGER)")
                local out = together({
                    function() return scalar_within(conn, 0.3, RUNAWAY) end,
                    function() -- short writes and reads, one after the other
                        for i = 1, 20 do
                            conn:execute("INSERT INTO t (x) VALUES (?)", i)
                            assert.equal(i, support.scalar(conn, "SELECT count(*) FROM t"))
                        end
                        return support.scalar(conn, "SELECT sum(x) FROM t")
                    end,
                    -- a long query without a limit, at the same time: it is not touched
                    function() return scalar_within(conn, nil, counting(1000000)) end,
                })
                assert_timed_out(out[1], "0.3", RUNAWAY)
                assert.same({ ok = true, value = 210 }, out[2])
                assert.same({ ok = true, value = 1000000 }, out[3])
                assert_works(conn)
            end)

            it("a runaway INSERT ... SELECT is stopped by its timeout and leaves no row", function()
                open(shape)
                conn:execute("CREATE TABLE big (x INTEGER)")
                conn:execute("INSERT INTO big (x) VALUES (0)")
                local out = together({
                    function()
                        local cur = conn:cursor()
                        cur.timeout = 0.25
                        return cur:execute(RUNAWAY_INSERT).rowcount
                    end,
                })
                assert_timed_out(out[1], "0.25", RUNAWAY_INSERT)
                assert.equal(1, support.scalar(conn, "SELECT count(*) FROM big"))
                assert.is_false(conn.in_transaction)
                assert.equal(1, conn:execute("INSERT INTO big (x) VALUES (1)").rowcount)
                assert.equal(2, support.scalar(conn, "SELECT count(*) FROM big"))
                assert_works(conn)
            end)

            it("the connection's timeout applies to each statement; cursor.timeout = nil lifts it",
               function()
                open(shape, { timeout = 0.2 })
                local out = together({
                    function() return support.scalar(conn, RUNAWAY) end,
                    function() return scalar_within(conn, nil, counting(2000000)) end,
                    function() return scalar_within(conn, 600, counting(2000000)) end,
                })
                assert_timed_out(out[1], "0.2", RUNAWAY)
                assert.same({ ok = true, value = 2000000 }, out[2])
                assert.same({ ok = true, value = 2000000 }, out[3])
                -- and outside coroutines, blocking
                local err = support.raises("OperationalError", support.scalar, conn, RUNAWAY)
                assert.equal(9, err.code)
                assert.equal("statement timed out after 0.2 s", err.message)
                assert_works(conn)
            end)

            it("interrupt() from another coroutine stops a runaway query that has no timeout",
               function()
                open(shape)
                local done = false
                local out = together({
                    function()
                        local ok, v = pcall(scalar_within, conn, nil, RUNAWAY)
                        done = true
                        if not ok then
                            error(v, 0)
                        end
                        return v
                    end,
                    function()
                        interrupt_until(conn, function() return done end)
                        return "interrupter"
                    end,
                })
                assert_interrupted(out[1])
                assert.same({ ok = true, value = "interrupter" }, out[2])
                -- statements issued afterwards run normally
                assert_works(conn)
                assert.equal(1000000, scalar_within(conn, nil, counting(1000000)))
            end)
        end)
    end

    it("counts from when a worker starts the statement, not from when it was queued", function()
        -- one thread: the second statement waits in the queue while the first runs well past
        -- its timeout, then needs a small part of it
        open(nil, { readers = 0 })
        local out = together({
            function() return scalar_within(conn, nil, counting(5000000)) end,
            function() return scalar_within(conn, 0.5, counting(50000)) end,
        })
        assert.same({ ok = true, value = 5000000 }, out[1])
        assert.same({ ok = true, value = 50000 }, out[2])
    end)

    it("a timed-out write among concurrent inserts fails alone; the other inserts land", function()
        open(nil, { synchronous = "full" })
        conn:execute("CREATE TABLE big (x INTEGER)")
        local n, slow = 60, 30
        local out = {}
        -- the inserts queue behind a transaction of the main coroutine, so that group commit
        -- takes them, the slow one among them, together
        sqlite.run(function()
            conn:execute("BEGIN IMMEDIATE")
            for i = 1, n do
                sqlite.spawn(function()
                    local ok, v = pcall(function()
                        if i == slow then
                            local cur = conn:cursor()
                            cur.timeout = 0.3
                            return cur:execute(RUNAWAY_INSERT).rowcount
                        end
                        return conn:execute("INSERT INTO big (x) VALUES (?)", -i).rowcount
                    end)
                    out[i] = ok and { ok = true, value = v } or { ok = false, err = v }
                end)
            end
            sqlite.sleep(0)
            conn:execute("COMMIT")
        end)
        for i = 1, n do
            if i == slow then
                assert_timed_out(out[i], "0.3", RUNAWAY_INSERT)
            else
                assert.same({ ok = true, value = 1 }, out[i], "insert " .. i)
            end
        end
        local row = conn:execute("SELECT count(*), count(DISTINCT x), min(x), max(x) FROM big"):fetchone()
        assert.same({ n - 1, n - 1, -n, -1, n = 4 }, row)
        assert.is_true(conn:stats().writer.batches > 0)
        assert_works(conn)
    end)

    it("a timed-out statement leaves later statements of the same cursor their timeout", function()
        open()
        local cur = conn:cursor()
        cur.timeout = 0.2
        local out = together({ function() return cur:execute(RUNAWAY):fetchone()[1] end })
        assert_timed_out(out[1], "0.2", RUNAWAY)
        assert.equal(7, cur:execute("SELECT 7"):fetchone()[1])
        assert.equal(2000, cur:execute(counting(2000)):fetchone()[1])
        out = together({ function() return cur:execute(RUNAWAY):fetchone()[1] end })
        assert_timed_out(out[1], "0.2", RUNAWAY)
    end)
end)

describe("interrupt()", function()
    fresh_db_each_test()

    it("stops what runs now on every thread: a read on a reader and a write on the writer",
       function()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE big (x INTEGER)")
        local finished = 0
        local function counted(fn)
            return function()
                local ok, v = pcall(fn)
                finished = finished + 1
                if not ok then
                    error(v, 0)
                end
                return v
            end
        end
        local out = together({
            counted(function() return scalar_within(conn, nil, RUNAWAY) end),
            counted(function() return conn:execute(RUNAWAY_INSERT).rowcount end),
            function()
                interrupt_until(conn, function() return finished == 2 end)
            end,
        })
        assert_interrupted(out[1])
        assert_interrupted(out[2])
        assert.equal(0, support.scalar(conn, "SELECT count(*) FROM big"))
        assert.is_false(conn.in_transaction)
        assert.equal(1, conn:execute("INSERT INTO big (x) VALUES (1)").rowcount)
        assert.equal(1, support.scalar(conn, "SELECT count(*) FROM big"))
        assert.equal(1000000, scalar_within(conn, nil, counting(1000000)))
    end)

    -- sqlite3_interrupt() would keep its flag while any statement of the connection is open,
    -- and a half-read streamed cursor holds one open on its reader between fetches.
    for _, ncursors in ipairs({ 1, 2 }) do
        it("leaves " .. ncursors .. " half-read streamed cursor(s) alone: each reads its remaining "
           .. "rows while a long query beside them is stopped", function()
            conn = sqlite.connect(path, { readers = 3 })
            conn:execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, pad TEXT)")
            conn:execute([[INSERT INTO rows (id, pad)
                           WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)
                           SELECT x, printf('%0200d', x) FROM c]])
            sqlite.run(function()
                local cursors, seen = {}, {}
                for k = 1, ncursors do
                    cursors[k] = conn:execute("SELECT id, pad FROM rows ORDER BY id")
                    seen[k] = #cursors[k]:fetchmany(10)
                end
                assert.equal(ncursors, support.streaming_readers(conn))
                local long = sqlite.spawn(function()
                    return pcall(scalar_within, conn, nil, RUNAWAY)
                end)
                local done = false
                sqlite.spawn(function()
                    interrupt_until(conn, function() return done end)
                end)
                local ok, err = long:join()
                done = true
                assert_interrupted({ ok = ok, err = err })
                for k = 1, ncursors do
                    for row in cursors[k]:rows() do
                        seen[k] = seen[k] + 1
                        assert.equal(seen[k], row[1], "cursor " .. k)
                    end
                    assert.equal(5000, seen[k], "cursor " .. k)
                end
            end)
        end)
    end

    it("leaves a statement queued behind the one it stops: that one runs to its end", function()
        conn = sqlite.connect(path, { readers = 0 }) -- one thread: the second waits its turn
        local out = together({
            function() return scalar_within(conn, nil, RUNAWAY) end,
            function() return scalar_within(conn, nil, counting(300000)) end,
            function()
                -- Once the writer runs the first, the second is all its queue holds (a guard of
                -- about 10 s against a hang; not a timing).
                for _ = 1, 1000 do
                    if conn:stats().writer.queued == 1 then
                        break
                    end
                    sqlite.sleep(0.01)
                end
                sqlite.sleep(0.02) -- taken is not yet started: a moment for the writer to begin it
                conn:interrupt()
            end,
        })
        assert_interrupted(out[1])
        assert.same({ ok = true, value = 300000 }, out[2])
    end)

    it("with nothing running changes nothing: the statements issued afterwards run", function()
        conn = sqlite.connect(path)
        conn:interrupt()
        conn:interrupt()
        conn:execute("CREATE TABLE t (x INTEGER)")
        conn:interrupt()
        assert.equal(1, conn:execute("INSERT INTO t (x) VALUES (1)").rowcount)
        conn:interrupt()
        assert.equal(1, support.scalar(conn, "SELECT count(*) FROM t"))
        assert.equal(300000, scalar_within(conn, nil, counting(300000)))
        sqlite.run(function()
            conn:interrupt()
            assert.equal(2, support.scalar(conn, "SELECT 2"))
        end)
    end)

    it("on a closed connection raises ConnectionClosedError", function()
        conn = sqlite.connect(path)
        conn:close()
        support.raises("ConnectionClosedError", conn.interrupt, conn)
        conn = nil
    end)
end)
