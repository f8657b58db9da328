-- conn:trace(fn): fn(sql, seconds) after each statement the pool runs, on the writer and the
-- readers, with its expanded SQL and run time; delivered on the Lua side with the statement's
-- completion, in statement order per task; nil removes it.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local LONG_SQL = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT count(*) FROM c]]

local function recorder()
    local seen = {}
    return seen, function(sql, seconds)
        assert(type(sql) == "string" and type(seconds) == "number" and seconds >= 0)
        seen[#seen + 1] = { sql = sql, seconds = seconds }
    end
end

describe("conn:trace", function()
    it("reports each statement with its parameters bound, once, writer and readers", function()
        local path, cleanup = support.tmpdb()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t(a, b)")
        local seen, fn = recorder()
        conn:trace(fn)
        conn:execute("INSERT INTO t VALUES (?, ?)", 1, "two")
        assert.are.equal(1, support.scalar(conn, "SELECT a FROM t WHERE b = ?", "two"))
        conn:executemany("INSERT INTO t VALUES (?, ?)", { { 3, "x" }, { 4, "y" } })
        pcall(conn.execute, conn, "INSERT INTO nowhere VALUES (1)") -- fails at prepare: no run
        local sqls = {}
        for i, s in ipairs(seen) do
            sqls[i] = s.sql
        end
        assert.are.same({ "INSERT INTO t VALUES (1, 'two')", "SELECT a FROM t WHERE b = 'two'",
                          "INSERT INTO t VALUES (3, 'x')", "INSERT INTO t VALUES (4, 'y')" }, sqls)
        -- reads spread over the readers (or run on the caller's thread, when the machine has
        -- no core for a reader): each traced once
        local function runs()
            local st = conn:stats()
            return support.readers_sum(st, "executed") + st.inline.executed
        end
        local before = runs()
        seen, fn = recorder()
        conn:trace(fn)
        sqlite.run(function()
            for i = 1, 40 do
                sqlite.spawn(function()
                    support.scalar(conn, "SELECT ? + count(*) FROM t", i)
                end)
            end
        end)
        assert.is_true(runs() >= before + 40)
        local count = {}
        for _, s in ipairs(seen) do
            count[s.sql] = (count[s.sql] or 0) + 1
        end
        for i = 1, 40 do
            assert.are.equal(1, count["SELECT " .. i .. " + count(*) FROM t"], i)
        end
        conn:close()
        cleanup()
    end)

    it("reports a read the caller would run itself: while a trace is set it goes to a reader",
       function()
        local path, cleanup = support.tmpdb()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t(a)")
        local sql = "SELECT count(*) FROM t WHERE a = ?"
        local function until_here() -- until the readers found it short, and it ran here
            for _ = 1, 200 do
                local before = conn:stats().inline.executed
                support.scalar(conn, sql, 1)
                if conn:stats().inline.executed > before then
                    return true
                end
                require("pasyn_sqlite.core").sleep(0.001)
            end
        end
        assert.is_true(until_here(), "the read never ran on the caller's thread")
        local seen, fn = recorder()
        conn:trace(fn)
        local before = conn:stats().inline.executed
        support.scalar(conn, sql, 7)
        assert.are.equal(before, conn:stats().inline.executed)
        assert.are.equal(1, #seen)
        assert.are.equal("SELECT count(*) FROM t WHERE a = 7", seen[1].sql)
        conn:trace(nil)
        assert.is_true(until_here(), "the read never ran on the caller's thread again")
        conn:close()
        cleanup()
    end)

    it("reports a failed statement and the run time in seconds", function()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE u(x UNIQUE)")
        conn:execute("INSERT INTO u VALUES (1)")
        local seen, fn = recorder()
        conn:trace(fn)
        support.raises("IntegrityError", conn.execute, conn, "INSERT INTO u VALUES (1)")
        assert.are.equal(1, #seen)
        assert.are.equal("INSERT INTO u VALUES (1)", seen[1].sql)
        assert.are.equal(3000000, support.scalar(conn, LONG_SQL, 3000000))
        -- SQLite measures in whole milliseconds; this one runs for tens of them at least
        assert.is_true(seen[2].seconds > 0.001 and seen[2].seconds < 60, tostring(seen[2].seconds))
        conn:close()
    end)

    it("reports a streamed result once it ends, and the statements of a script", function()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE big(x)")
        local i = 0
        conn:executemany("INSERT INTO big VALUES (?)", function()
            i = i + 1
            return i <= 20000 and { string.rep("x", 100) } or nil
        end)
        local seen, fn = recorder()
        conn:trace(fn)
        local n = 0
        for _ in conn:execute("SELECT x FROM big"):rows() do
            n = n + 1
        end
        assert.are.equal(20000, n)
        conn:executescript("CREATE TABLE s(y); INSERT INTO s VALUES (1)")
        assert.are.equal(3, #seen)
        assert.are.equal("SELECT x FROM big", seen[1].sql)
        assert.matches("CREATE TABLE s", seen[2].sql)
        assert.matches("INSERT INTO s VALUES %(1%)", seen[3].sql)
        conn:close()
    end)

    it("stops with nil, and a hook's error leaves the statement's result alone", function()
        local conn = sqlite.connect(":memory:")
        local seen, fn = recorder()
        conn:trace(fn)
        support.scalar(conn, "SELECT 1")
        conn:trace(nil)
        support.scalar(conn, "SELECT 2")
        assert.are.equal(1, #seen)
        conn:trace(function() error("boom") end)
        assert.are.equal(3, support.scalar(conn, "SELECT 3"))
        -- an error value that tostring cannot turn into text, blocking and in the scheduler
        local untextable = setmetatable({}, { __tostring = function() error("no text") end })
        conn:trace(function() error(untextable) end)
        assert.are.equal(4, support.scalar(conn, "SELECT 4"))
        assert.are.equal(5, sqlite.run(support.scalar, conn, "SELECT 5"))
        conn:trace(nil)
        support.raises("ProgrammingError", conn.trace, conn, 42)
        conn:close()
        support.raises("ConnectionClosedError", conn.trace, conn, fn)
    end)

    it("delivers in statement order per coroutine in the scheduler, and under luv", function()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE t(c, i)")
        local seen, fn = recorder()
        conn:trace(fn)
        sqlite.run(function()
            for c = 1, 8 do
                sqlite.spawn(function()
                    for i = 1, 10 do
                        conn:execute("INSERT INTO t VALUES (?, ?)", c, i)
                    end
                end)
            end
        end)
        local last = {}
        for _, s in ipairs(seen) do
            local c, i = s.sql:match("VALUES %((%d+), (%d+)%)")
            c, i = tonumber(c), tonumber(i)
            assert.are.equal((last[c] or 0) + 1, i)
            last[c] = i
        end
        assert.are.equal(80, #seen)
        local ok, uv = pcall(require, "luv")
        if ok then
            local before = sqlite.set_host(nil)
            require "pasyn_sqlite.luv"
            seen, fn = recorder()
            conn:trace(fn)
            local co = coroutine.create(function()
                support.scalar(conn, "SELECT 'luv'")
            end)
            assert(coroutine.resume(co))
            uv.run()
            sqlite.set_host(before)
            assert.are.equal(1, #seen)
            assert.are.equal("SELECT 'luv'", seen[1].sql)
        end
        conn:close()
    end)
end)
