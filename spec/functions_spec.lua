-- SQL functions, aggregates and collations defined in Lua (conn:create_function,
-- create_aggregate, create_collation): they run on the Lua side while the worker whose
-- statement calls them waits, in every way a caller can wait (a blocking call, the built-in
-- scheduler, a host adapter, a wait for a max_pending slot); values cross with the types rows
-- and parameters have; errors fail the statement with their message; definitions reach every
-- connection of the pool, busy ones too. The checks that would hang if calls were not served
-- run in a child process bounded by timeout(1) (not under make tsan: see spec/luv_spec.lua).
local sqlite = require "pasyn_sqlite"
local support = require "support"

local checks = require "functions_checks"
local raises, scalar, fresh = support.raises, support.scalar, checks.fresh

-- A read that keeps a reader busy for a while (~100 ms here, more under a sanitizer).
local LONG_SQL = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT count(*) FROM c]]

local in_child = support.in_child

-- Whether every way of waiting served calls in the first tests (child processes bounded in
-- time). When one did not, the tests after them, which run here, are skipped: they would hang.
local served = true

-- Runs checks[name] on a fresh pool (options: a Lua table constructor, or nil) in a child
-- process, with blocking calls or (`in_run`) inside sqlite.run: a regression that stops
-- serving calls fails the test after a minute instead of hanging the run.
local function in_child_checks(name, options, in_run)
    local out = in_child(([[
        local sqlite = require "pasyn_sqlite"
        local checks = require "functions_checks"
        local conn = checks.fresh(%s)
        if %s then
            sqlite.run(function() checks.%s(conn) end)
        else
            checks.%s(conn)
        end
        conn:close()
        print("CHECKS PASSED")
    ]]):format(options or "", tostring(in_run == true), name, name), 60)
    if not out:find("CHECKS PASSED", 1, true) then
        served = false
    end
    assert.matches("CHECKS PASSED", out)
end

-- `it`, skipped once a way of waiting did not serve calls (see `served`).
local function guarded(name, fn)
    it(name, function()
        if not served then
            pending("a way of waiting did not serve calls above: this would hang")
            return
        end
        fn()
    end)
end

describe("calls of SQL functions defined in Lua are served (child processes)", function()
    for _, name in ipairs({ "scalar", "aggregate", "collation" }) do
        it(name .. " functions, by a blocking call outside any scheduler", function()
            in_child_checks(name)
        end)
        it(name .. " functions, by the built-in scheduler", function()
            in_child_checks(name, nil, true)
        end)
    end
    it("by a blocking call waiting for a max_pending slot", function()
        in_child_checks("gate", "{ readers = 2, max_pending = 1 }")
    end)

    it("by the built-in scheduler, statement after statement, with one core busy beside", function()
        -- A statement's completion and the next statement's calls race on the hub: the wake-up
        -- of a call must never be lost behind the write of a completion that trailed a drain
        -- (the host then slept in poll for ever). A busy-loop process beside it widens that
        -- window (without it the old fault hung one run in three; with it, every run).
        local hog
        if not support.no_children then
            local p = assert(io.popen("timeout 120 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!"))
            hog = p:read("*l")
            p:close()
        end
        local out = in_child([[
            local sqlite = require "pasyn_sqlite"
            local conn = sqlite.connect(":memory:", { readers = 2 })
            conn:execute("CREATE TABLE t(x INTEGER)")
            conn:execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " ..
                         "WHERE i < 100) INSERT INTO t SELECT i FROM c")
            conn:create_aggregate("nsum", 1, function()
                return { n = 0, s = 0, step = function(o, v) o.n, o.s = o.n + 1, o.s + v end,
                         finalize = function(o) return o.n .. ":" .. o.s end }
            end)
            local right = 0
            sqlite.run(function()
                for _ = 1, 600 do
                    local g = conn:execute("SELECT x % 3, nsum(x) FROM t GROUP BY 1 ORDER BY 1")
                                  :fetchall()
                    right = right + (g[1][2] == "33:1683" and g[2][2] == "34:1717" and 1 or 0)
                end
            end)
            conn:close()
            print("right " .. right)
        ]], 90)
        if hog then
            os.execute("kill " .. hog .. " 2>/dev/null")
        end
        assert.matches("right 600", out, 1, true)
    end)

    -- A close under way waits for the statements in flight, and they for their calls: nothing
    -- on the Lua thread may wait for that close without serving them. Each child runs a read
    -- that calls f once it has counted (some 100 ms later), a close begun meanwhile by another
    -- coroutine, and then the wait in question; it prints what f was called with and what the
    -- wait gave.
    local CLOSING = [[
        local sqlite = require "pasyn_sqlite"
        local conn = sqlite.connect(":memory:", { readers = 2 })
        conn:execute("CREATE TABLE t(x)")
        conn:execute("INSERT INTO t VALUES (1), (2), (3)")
        local read, got
        local inside = function() end -- what f does besides (a test may change it)
        conn:create_function("f", 1, function(n)
            read = n
            inside()
            return n
        end)
        sqlite.run(function()
            sqlite.spawn(pcall, conn.execute, conn, "WITH RECURSIVE c(x) AS (SELECT 1 UNION " ..
                         "ALL SELECT x + 1 FROM c WHERE x < 1000000) SELECT f(count(*)) FROM c")
            sqlite.sleep(0) -- the read is in flight
            %s
        end)
        print("read " .. tostring(read) .. ", " .. tostring(got))
    ]]

    -- Runs that child with `wait` in its place and checks that it printed `expected`; a child
    -- that did not (most likely it hung) skips the tests below that would hang here.
    local function closing_check(wait, expected)
        local out = in_child(CLOSING:format(wait), 60)
        if not out:find(expected, 1, true) then
            served = false
        end
        assert.matches(expected, out, 1, true)
    end

    it("by a backup that ends on a pool another coroutine is closing", function()
        -- The backup's first step begins the close; its second is refused ("closing"), and the
        -- backup ends at once, leaving what is left of it to the pool.
        closing_check([[
            local dest = os.tmpname()
            local ok, err = pcall(conn.backup, conn, dest, { pages = 1, progress = function()
                sqlite.spawn(function() conn:close() end)
                sqlite.sleep(0)
            end })
            got = ok and "backup done" or err.kind
            os.remove(dest)
        ]], "read 1000000, PoolClosedError")
    end)

    it("by a blocking close of a pool another coroutine is closing", function()
        closing_check([[
            sqlite.spawn(function() conn:close() end)
            sqlite.sleep(0) -- closing
            -- from a coroutine the scheduler does not know: it blocks until the pool is closed
            local co = coroutine.create(function() conn:close() end)
            assert(coroutine.resume(co))
            got = conn.closed and "closed" or "still open"
        ]], "read 1000000, closed")
    end)

    it("and a close inside a function, of a pool another coroutine is closing, is refused",
       function()
        -- (the close would wait for the statement that waits for the function)
        closing_check([[
            inside = function()
                local ok, err = pcall(conn.close, conn)
                got = ok and "closed inside" or err.kind .. ": " .. err.message
            end
            conn:close()
        ]], "read 1000000, ProgrammingError: a SQL function defined in Lua cannot run "
            .. "statements or close a connection")
    end)
end)

describe("SQL functions defined in Lua", function()
    guarded("serve a blocking call that nothing else would (bounded in a child process)", function()
        local out = in_child([[
            local sqlite = require "pasyn_sqlite"
            local conn = sqlite.connect(":memory:", { readers = 2 })
            conn:execute("CREATE TABLE t(x)")
            conn:create_function("f", 1, function(x) return x + 1 end)
            -- nothing but this blocking call serves the calls
            conn:execute("INSERT INTO t VALUES (f(?))", 1)      -- the writer
            local v = conn:execute("SELECT f(x) FROM t"):fetchone()[1] -- a reader
            conn:close()
            print(v == 3 and "ok" or "wrong: " .. tostring(v))
        ]], 60)
        assert.matches("ok", out)
    end)

    guarded("take opts.deterministic to SQLite (an index expression needs it)", function()
        local conn = fresh()
        conn:create_function("plain", 1, function(x) return x * 2 end)
        local err = raises("OperationalError", conn.execute, conn,
                           "CREATE INDEX i ON t(plain(x))")
        assert.matches("non%-deterministic", err.message)
        conn:create_function("twice", 1, function(x) return x * 2 end, { deterministic = true })
        conn:execute("CREATE INDEX i ON t(twice(x))")
        assert.are.equal(10, scalar(conn, "SELECT x FROM t WHERE twice(x) = 20"))
        conn:close()
    end)

    guarded("are removed with nil, on every connection", function()
        local conn = fresh()
        conn:create_function("f", 1, function(x) return x end)
        assert.are.equal(5050, scalar(conn, "SELECT sum(f(x)) FROM t"))
        conn:create_function("f", 1, nil)
        local err = raises("OperationalError", conn.execute, conn, "SELECT sum(f(x)) FROM t")
        assert.matches("no such function: f", err.message)
        err = raises("OperationalError", conn.execute, conn, "INSERT INTO t VALUES (f(1))")
        assert.matches("no such function: f", err.message)
        -- a new definition replaces the old one everywhere
        conn:create_function("f", 1, function(x) return -x end)
        assert.are.equal(-5050, scalar(conn, "SELECT sum(f(x)) FROM t"))
        conn:create_function("f", 1, function(x) return 2 * x end)
        assert.are.same({ 10100, 10100, 10100 },
                        { scalar(conn, "SELECT sum(f(x)) FROM t"),
                          scalar(conn, "SELECT sum(f(x)) FROM t WHERE 1"),
                          scalar(conn, "SELECT sum(f(x)) FROM t WHERE 2") })
        conn:close()
    end)

    guarded("check their arguments", function()
        local conn = fresh()
        raises("ProgrammingError", conn.create_function, conn, 1, 1, print)
        raises("ProgrammingError", conn.create_function, conn, "f", 1.5, print)
        raises("ProgrammingError", conn.create_function, conn, "f", 128, print)
        raises("ProgrammingError", conn.create_function, conn, "f", -2, print)
        raises("ProgrammingError", conn.create_function, conn, "f", 1, "not a function")
        raises("ProgrammingError", conn.create_function, conn, "f", 1, print, "opts")
        raises("ProgrammingError", conn.create_function, conn, "", 1, print)
        raises("ProgrammingError", conn.create_aggregate, conn, "f", 1, 42)
        raises("ProgrammingError", conn.create_collation, conn, "c", {})
        conn:create_function("two", 2.0, function(a, b) return a + b end) -- a whole float
        assert.are.equal(3, scalar(conn, "SELECT two(1, 2)"))
        -- a callable table is a function
        conn:create_function("called", 0, setmetatable({}, { __call = function() return 9 end }))
        assert.are.equal(9, scalar(conn, "SELECT called()"))
        conn:close()
        raises("ConnectionClosedError", conn.create_function, conn, "f", 1, print)
    end)

    guarded("refuse statements inside the function, and a yield fails the statement", function()
        local conn = fresh()
        local inner
        conn:create_function("nested", 0, function()
            local ok, err = pcall(conn.execute, conn, "SELECT 1")
            inner = err
            assert(not ok)
            return 1
        end)
        assert.are.equal(1, scalar(conn, "SELECT nested()"))
        assert.is_true(sqlite.is_error(inner), tostring(inner))
        assert.are.equal("ProgrammingError", inner.kind)
        assert.matches("cannot run statements", inner.message)
        conn:create_function("closer", 0, function() conn:close() end)
        local err = raises("OperationalError", scalar, conn, "SELECT closer()")
        assert.matches("cannot run statements or close", err.message)
        assert.is_false(conn.closed)
        conn:create_function("yielder", 0, function() coroutine.yield() return 1 end)
        sqlite.run(function()
            local yerr = raises("OperationalError", scalar, conn, "SELECT yielder()")
            assert.matches("yield", yerr.message)
            assert.are.equal(1, scalar(conn, "SELECT 1")) -- the pool goes on
        end)
        conn:close()
    end)

    guarded("fail the statement with an error object's text", function()
        local conn = fresh()
        conn:create_function("obj", 0, function()
            error(setmetatable({}, { __tostring = function() return "custom object" end }))
        end)
        assert.matches("custom object",
                       raises("OperationalError", scalar, conn, "SELECT obj()").message)
        conn:create_function("nontext", 0, function() error({}) end)
        assert.matches("error object is a table",
                       raises("OperationalError", scalar, conn, "SELECT nontext()").message)
        conn:close()
    end)
end)

describe("aggregates defined in Lua", function()
    guarded("are removed with nil", function()
        local conn = fresh()
        conn:create_aggregate("nsum", 1, function() return {} end)
        conn:create_aggregate("nsum", 1, nil)
        assert.matches("no such function",
                       raises("OperationalError", scalar, conn, "SELECT nsum(x) FROM t").message)
        conn:close()
    end)

    guarded("forget a group whose statement fails on the way", function()
        local conn = fresh()
        conn:create_aggregate("nsum", 1, function()
            return { n = 0, step = function(self) self.n = self.n + 1 end,
                     finalize = function(self) return self.n end }
        end)
        local finals = 0
        conn:create_aggregate("counted", 1, function()
            return { step = function() end, finalize = function() finals = finals + 1 end }
        end)
        conn:create_function("fail_at", 1, function(x) if x == 50 then error("stop at 50") end
                                                       return 1 end)
        -- the statement fails after 49 steps of one group: SQLite still ends the group
        local err = raises("OperationalError", scalar, conn,
                           "SELECT counted(x) FROM t WHERE fail_at(x) = 1")
        assert.matches("stop at 50", err.message)
        assert.are.equal(1, finals)
        assert.is_nil(next(debug.getregistry()["pasyn_sqlite.groups"]))
        conn:close()
    end)
end)

describe("SQL functions through a host adapter (luv)", function()
    local ok_luv, uv = pcall(require, "luv")
    guarded("serve calls where the adapter dispatches", function()
        if not ok_luv then
            pending("luv is not installed")
            return
        end
        local before = sqlite.set_host(nil)
        require "pasyn_sqlite.luv"
        local conn = fresh()
        local done, failure = false, nil
        local co = coroutine.create(function()
            local ok, err = pcall(function()
                checks.scalar(conn)
                conn:create_aggregate("mx", 1, function()
                    return { m = nil, step = function(s, v) s.m = math.max(s.m or v, v) end,
                             finalize = function(s) return s.m end }
                end)
                assert.are.equal(100, scalar(conn, "SELECT mx(x) FROM t"))
            end)
            done, failure = true, not ok and err or nil
        end)
        assert(coroutine.resume(co))
        local watchdog = uv.new_timer()
        watchdog:unref()
        watchdog:start(60000, 0, function() uv.stop() end)
        uv.run()
        watchdog:close()
        uv.run("nowait")
        sqlite.set_host(before)
        assert.is_true(done, "the coroutine finished")
        assert.is_nil(failure, tostring(failure))
        conn:close()
    end)
end)

describe("SQL functions through a host adapter (cqueues)", function()
    local ok_cq, cqueues = pcall(require, "cqueues")
    guarded("serve calls where the adapter dispatches", function()
        if not ok_cq then
            pending("cqueues is not installed")
            return
        end
        local before = sqlite.set_host(nil)
        require "pasyn_sqlite.cqueues"
        local conn = fresh()
        local done, failure = false, nil
        local cq = cqueues.new()
        cq:wrap(function()
            local ok, err = pcall(function()
                checks.scalar(conn)
                checks.collation(conn)
            end)
            done, failure = true, not ok and err or nil
        end)
        local ok, err = cq:loop(60)
        sqlite.set_host(before)
        assert.is_true(ok, tostring(err))
        assert.is_true(done, "the coroutine finished")
        assert.is_nil(failure, tostring(failure))
        conn:close()
    end)
end)

describe("SQL functions under load", function()
    guarded("serve writes through group commit beside concurrent plain writes", function()
        local conn = fresh()
        conn:execute("CREATE TABLE g(k, v)")
        conn:create_function("sq", 1, function(x)
            if x % 10 == 4 then
                error("no square for " .. x)
            end
            return x * x
        end)
        local failed = {}
        sqlite.run(function()
            for i = 1, 200 do
                sqlite.spawn(function()
                    if i % 2 == 0 then
                        local ok, err = pcall(conn.execute, conn,
                                              "INSERT INTO g VALUES (?, sq(?))", i, i)
                        if not ok then
                            assert.matches("no square for " .. i, err.message)
                            failed[#failed + 1] = i
                        end
                    else
                        conn:execute("INSERT INTO g VALUES (?, ?)", i, i * i)
                    end
                end)
            end
        end)
        assert.are.equal(20, #failed) -- 4, 14, ..., 194: each alone, the others kept
        assert.are.equal(180, scalar(conn, "SELECT count(*) FROM g"))
        assert.are.equal(0, scalar(conn, "SELECT count(*) FROM g WHERE v <> k * k"))
        assert.are.equal(0, scalar(conn, "SELECT count(*) FROM g WHERE k % 10 = 4"))
        conn:close()
    end)

    guarded("serve a streamed result chunk by chunk", function()
        local conn = fresh()
        conn:create_function("pad", 1, function(x) return sqlite.blob(("%08d"):format(x):rep(1000)) end)
        local n, bytes = 0, 0
        sqlite.run(function()
            for row in conn:execute("SELECT x, pad(x) FROM t"):rows() do
                n = n + 1
                bytes = bytes + #row[2]
                assert.are.equal(("%08d"):format(row[1]), row[2]:sub(1, 8))
            end
        end)
        assert.are.equal(100, n)
        assert.are.equal(800000, bytes) -- more than one chunk: it streamed
        conn:close()
    end)

    guarded("fail a statement whose function is replaced while it runs, with a clear message",
            function()
        local conn = fresh()
        conn:create_function("pad", 1, function(x) return ("%08d"):format(x):rep(1000) end)
        local cur = conn:execute("SELECT x, pad(x) FROM t") -- streams: 800 kB in 256 kB chunks
        assert.are.equal(1, cur:fetchone()[1])
        conn:create_function("pad", 1, function() return "new" end)
        local err = raises("OperationalError", function()
            while cur:fetchone() do end
        end)
        assert.matches("replaced or removed while a statement called it", err.message)
        -- a statement issued now gets the new definition
        assert.are.equal("new", scalar(conn, "SELECT pad(1)"))
        assert.are.equal(0, support.wait_no_stream(conn))
        conn:close()
    end)

    guarded("reach readers busy with long reads before their next statement", function()
        local conn = fresh({ readers = 3 })
        sqlite.run(function()
            local long = {}
            for i = 1, 3 do
                long[i] = sqlite.spawn(function() return scalar(conn, LONG_SQL, 400000) end)
            end
            sqlite.sleep(0.02) -- they run now
            conn:create_function("late", 1, function(x) return x + 1000 end)
            local quick = {}
            for i = 1, 6 do -- spread over the readers, the busy ones too
                quick[i] = sqlite.spawn(function() return scalar(conn, "SELECT late(?)", i) end)
            end
            for i = 1, 6 do
                assert.are.equal(1000 + i, quick[i]:join())
            end
            for i = 1, 3 do
                assert.are.equal(400000, long[i]:join())
            end
        end)
        conn:close()
    end)

    guarded("close waits for a statement that calls them, serving it", function()
        local conn = fresh()
        conn:create_function("f", 1, function(x) return x + 1 end)
        local got
        sqlite.run(function()
            sqlite.spawn(function() got = scalar(conn, "SELECT sum(f(x)) FROM t") end)
            sqlite.spawn(function() conn:close() end)
        end)
        assert.are.equal(5150, got)
        assert.is_true(conn.closed)
    end)

    guarded("fail a call when the Lua state closes mid-call, and end (child process)", function()
        if support.no_children then
            pending("closing the Lua state needs a child process")
            return
        end
        local out = in_child([[
            local sqlite = require "pasyn_sqlite"
            sqlite.set_host({})
            local conn = sqlite.connect(":memory:", { readers = 2 })
            conn:execute("CREATE TABLE t(x)")
            for i = 1, 50 do conn:execute("INSERT INTO t VALUES (?)", i) end
            local calls = 0
            conn:create_function("f", 1, function(x) calls = calls + 1 return x end)
            local co = coroutine.create(function()
                return conn:execute("SELECT sum(f(x)) FROM t"):fetchone()
            end)
            assert(coroutine.resume(co)) -- in flight: its calls wait for a dispatch
            sqlite.sleep(0.05)
            print(calls == 0 and "in flight" or "wrong: calls " .. calls)
            -- the end of the chunk closes the Lua state: the pool's __gc refuses the calls,
            -- the statement fails, the close completes
        ]], 60)
        assert.matches("in flight", out)
        assert.matches("status=0", out)
    end)

    guarded("keep every result right with 64 coroutines calling them beside plain statements",
       function()
        local conn = fresh({ readers = 3 })
        conn:execute("CREATE TABLE out(k INTEGER PRIMARY KEY, v)")
        local calls = 0
        conn:create_function("inc", 1, function(x)
            calls = calls + 1
            return x + 1
        end)
        local wrong, done = {}, 0
        local t0 = os.time()
        sqlite.run(function()
            for c = 1, 64 do
                sqlite.spawn(function()
                    for r = 1, 10 do
                        local k = c * 100 + r
                        local kind = (c + r) % 4
                        if kind == 0 then
                            local v = scalar(conn, "SELECT sum(inc(x)) FROM t WHERE x <= ?", r)
                            if v ~= r * (r + 1) / 2 + r then wrong[#wrong + 1] = k end
                        elseif kind == 1 then
                            conn:execute("INSERT INTO out VALUES (?, inc(?))", k, k)
                        elseif kind == 2 then
                            local v = scalar(conn, "SELECT count(*) FROM t WHERE x <= ?", r)
                            if v ~= r then wrong[#wrong + 1] = k end
                        else
                            conn:execute("INSERT INTO out VALUES (?, ?)", k, k + 1)
                        end
                    end
                    done = done + 1
                end)
            end
        end)
        assert.are.same({}, wrong)
        assert.are.equal(64, done)
        assert.are.equal(320, scalar(conn, "SELECT count(*) FROM out"))
        assert.are.equal(0, scalar(conn, "SELECT count(*) FROM out WHERE v <> k + 1"))
        assert.is_true(calls >= 160 * 1 + 160, "calls " .. calls)
        assert.is_true(os.time() - t0 < 120, "bounded in time")
        conn:close()
    end)
end)
