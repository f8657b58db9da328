-- Reads the caller runs itself (README, "Reads the caller runs itself"): a known read whose
-- runs on the readers were short runs on the calling thread, on the pool's own inline
-- connection, under a budget; anything else, or a read that overruns the budget or fails
-- there, goes to the threads as before. What a statement answers must not change: these specs
-- check that reads run inline (conn:stats().inline) and that their answers are the ones the
-- readers and the writer give.
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"
local support = require "support"

local scalar = support.scalar
local pack = support.pack

local POINT = "SELECT v FROM t WHERE id = ?"

-- Reads run inline so far on conn, and the other counters of conn:stats().inline.
local function inline(conn)
    return conn:stats().inline
end

-- Runs sql (with its arguments) until it runs inline, at most 200 times: the first runs teach
-- the pool that it is a short read (a slow machine, or a sanitizer, may take a few more).
-- Returns its rows from the inline run.
local function until_inline(conn, sql, ...)
    for _ = 1, 200 do
        local before = inline(conn).executed
        local rows = conn:execute(sql, ...):fetchall()
        if inline(conn).executed > before then
            return rows
        end
        core.sleep(0.001) -- the reader notes the read's cost after it completed it
    end
    error("never ran inline: " .. sql)
end

-- Runs fn(...) in a coroutine of sqlite.run beside a timer (another coroutine sleeps until fn
-- returns) and returns its results: the loop has something to time, so the caller is not idle
-- (README, "Reads the caller runs itself": an idle caller runs any known read, with no budget),
-- and it is not busy either while the sleeper sleeps (it has been let run once first).
local function beside_timer(fn, ...)
    local done = false
    return sqlite.run(function(...)
        sqlite.spawn(function()
            while not done do
                sqlite.sleep(0.02)
            end
        end)
        sqlite.sleep(0) -- the sleeper runs, and parks in its timer
        local res = pack(fn(...))
        done = true
        return support.unpack(res, 1, res.n)
    end, ...)
end

-- The pools here take a budget of 50 ms (the default is far shorter), so that a read counts
-- as short on a slow machine or under a sanitizer too: a read runs inline only once its
-- average on the readers is under a quarter of the budget (and under 1 ms, a long read).
local BUDGET = 0.05

-- A recursive CTE counting to n: its run grows with n (about 0.1 us a row here).
local COUNT_TO = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) " ..
                 "SELECT count(*), sum(x) FROM c"

describe("reads the caller runs itself", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path, { inline_budget = BUDGET })
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn:executemany("INSERT INTO t (v) VALUES (?)", { { "a" }, { "b" }, { "c" } })
    end)
    after_each(function()
        if not conn.closed then
            conn:close()
        end
        cleanup()
    end)

    it("runs a short read on the caller's thread once readers found it short, and counts it",
       function()
        local s0 = conn:stats()
        assert.same({ executed = 0, overruns = 0, busy = 0, failed = 0 }, s0.inline)
        assert.same({ { "b", n = 1 } }, until_inline(conn, POINT, 2))
        local readers = support.readers_sum(conn:stats(), "executed")
        for id = 1, 3 do
            assert.equal(({ "a", "b", "c" })[id], scalar(conn, POINT, id))
        end
        local s1 = conn:stats()
        assert.is_true(s1.inline.executed >= 4)
        assert.equal(readers, support.readers_sum(s1, "executed")) -- none went to a reader
        assert.equal(0, s1.inline.overruns + s1.inline.busy + s1.inline.failed)
    end)

    it("with inline_reads = false every read runs on a reader, as before", function()
        local off = sqlite.connect(path, { inline_reads = false })
        local before = support.readers_sum(off:stats(), "executed")
        sqlite.run(function()
            for _ = 1, 40 do
                assert.equal("b", scalar(off, POINT, 2))
            end
        end)
        local st = off:stats()
        assert.same({ executed = 0, overruns = 0, busy = 0, failed = 0 }, st.inline)
        assert.equal(before + 40, support.readers_sum(st, "executed"))
        off:close()
    end)

    it("a coroutine's inline read sees the write another coroutine's call returned from",
       function()
        until_inline(conn, "SELECT max(id), count(*) FROM t")
        local before = inline(conn).executed
        local seen = sqlite.run(function()
            local seen = {}
            for i = 1, 200 do
                local writer = sqlite.spawn(function()
                    conn:execute("INSERT INTO t (v) VALUES (?)", "w" .. i)
                end)
                seen[i] = sqlite.spawn(function()
                    writer:join()
                    return conn:execute("SELECT max(id), count(*) FROM t"):fetchone()
                end):join()
            end
            return seen
        end)
        for i = 1, 200 do
            assert.same({ 3 + i, 3 + i, n = 2 }, seen[i])
        end
        assert.is_true(inline(conn).executed - before >= 150) -- most ran inline
    end)

    it("keeps a coroutine's statements in order: each read sees the writes before it", function()
        until_inline(conn, "SELECT count(*), total(length(v)) FROM t")
        local before = inline(conn).executed
        sqlite.run(function()
            for i = 1, 150 do
                local key = 1000 + i
                conn:execute("INSERT INTO t (id, v) VALUES (?, ?)", key, "x")
                assert.equal("x", scalar(conn, POINT, key))
                conn:execute("UPDATE t SET v = ? WHERE id = ?", "y" .. i, key)
                assert.equal("y" .. i, scalar(conn, POINT, key))
                conn:execute("DELETE FROM t WHERE id = ?", key)
                assert.is_nil(scalar(conn, POINT, key))
            end
        end)
        assert.is_true(inline(conn).executed - before >= 400) -- (a few teach the pool)
    end)

    -- With other work, the core looks at the machine (/proc/loadavg) to know whether a reader
    -- has a core: these cases decide it for the process instead (core.set_handoff).
    it("with other statements in flight, a short read goes to an idle reader instead", function()
        core.set_handoff("always")
        finally(function() core.set_handoff() end)
        until_inline(conn, POINT, 1)
        until_inline(conn, COUNT_TO, 10) -- a read the caller would run itself too
        local before, readers = inline(conn).executed, support.readers_sum(conn:stats(), "executed")
        sqlite.run(function()
            local long = sqlite.spawn(function()
                return conn:execute(COUNT_TO .. " -- long", 3000000):fetchone()[1]
            end)
            local got = sqlite.spawn(function()
                return scalar(conn, POINT, 1) -- the long read is in flight: not here
            end):join()
            assert.equal("a", got)
            assert.equal(3000000, long:join())
        end)
        assert.equal(before, inline(conn).executed)
        assert.equal(readers + 2, support.readers_sum(conn:stats(), "executed"))
        assert.equal("a", scalar(conn, POINT, 1)) -- alone again: here
        assert.equal(before + 1, inline(conn).executed)
    end)

    it("with every reader taken by a long read, a short read runs here, even with a core for " ..
       "a reader", function()
        core.set_handoff("always")
        finally(function() core.set_handoff() end)
        until_inline(conn, POINT, 1)
        local long = COUNT_TO .. " -- every reader"
        assert.equal(1000000, conn:execute(long, 1000000):fetchone()[1]) -- known long from now on
        local before = inline(conn).executed
        sqlite.run(function()
            local longs = {}
            for i = 1, 3 do -- one for each reader
                longs[i] = sqlite.spawn(function()
                    return conn:execute(long, 1000000):fetchone()[1]
                end)
            end
            local got = sqlite.spawn(function()
                return scalar(conn, POINT, 1) -- it would wait behind a long read: here
            end):join()
            assert.equal("a", got)
            for i = 1, 3 do
                assert.equal(1000000, longs[i]:join())
            end
        end)
        assert.equal(before + 1, inline(conn).executed)
    end)

    it("with every reader taken by a read no reader ran before, a short read runs here, even " ..
       "with a core for a reader", function()
        core.set_handoff("always")
        finally(function() core.set_handoff() end)
        until_inline(conn, POINT, 1)
        local before = inline(conn).executed
        sqlite.run(function()
            local firsts = {}
            for i = 1, 3 do -- texts never seen: their cost is unknown, maybe long
                firsts[i] = sqlite.spawn(function()
                    return conn:execute(COUNT_TO .. " -- first " .. i, 1000000):fetchone()[1]
                end)
            end
            local got = sqlite.spawn(function()
                return scalar(conn, POINT, 1)
            end):join()
            assert.equal("a", got)
            for i = 1, 3 do
                assert.equal(1000000, firsts[i]:join())
            end
        end)
        assert.equal(before + 1, inline(conn).executed)
    end)

    it("a read longer than a quarter of the budget, but under half, runs here only when a " ..
       "hand-off does not pay", function()
        -- A read of about 0.5 ms here (under a long read's 1 ms), its shortest run through a
        -- reader (the hand-off's own microseconds are small beside it), then a pool whose
        -- budget puts that between a quarter and a half of it (fit_ns and twice that).
        local function shortest(n)
            local best = math.huge
            for _ = 1, 10 do
                local t0 = core.now()
                conn:execute(COUNT_TO .. " -- timed", n):fetchone()
                best = math.min(best, core.now() - t0)
            end
            return best
        end
        local n = math.max(100, math.floor(2000 * 0.0005 / shortest(2000)))
        local best = shortest(n)
        local c = sqlite.connect(path, { inline_budget = best * 2.4 })
        finally(function() c:close() end)
        local function runs_here()
            return beside_timer(function()
                local before = inline(c).executed
                assert.equal(n, c:execute(COUNT_TO, n):fetchone()[1])
                return inline(c).executed > before
            end)
        end
        core.set_handoff("never")
        finally(function() core.set_handoff() end)
        local here = false
        for _ = 1, 50 do -- the readers learn its cost first
            here = runs_here()
            if here then
                break
            end
            core.sleep(0.001)
        end
        assert.is_true(here)
        core.set_handoff("always")
        for _ = 1, 3 do
            assert.is_false(runs_here())
        end
    end)

    it("with other statements in flight but no core left for a reader, a short read runs here",
       function()
        core.set_handoff("never")
        finally(function() core.set_handoff() end)
        until_inline(conn, POINT, 1)
        until_inline(conn, COUNT_TO, 10)
        local before = inline(conn).executed
        sqlite.run(function()
            local long = sqlite.spawn(function()
                return conn:execute(COUNT_TO .. " -- long", 3000000):fetchone()[1]
            end)
            local got = sqlite.spawn(function()
                return scalar(conn, POINT, 1) -- the long read is in flight: here all the same
            end):join()
            assert.equal("a", got)
            assert.equal(3000000, long:join())
        end)
        assert.equal(before + 1, inline(conn).executed)
        local err = support.raises("ProgrammingError", core.set_handoff, "sometimes")
        assert.truthy(err.message:find("look", 1, true), err.message)
    end)

    -- The scheduler's has_ready(), which the Lua layer reads as two fields of the scheduler
    -- (its ready list and the completions dispatch has still to deliver) without a call.
    it("with other coroutines ready to run, a short read goes to an idle reader instead; " ..
       "alone in a run, or with no run, it runs here", function()
        core.set_handoff("always")
        finally(function() core.set_handoff() end)
        until_inline(conn, POINT, 1)
        local before, readers = inline(conn).executed, support.readers_sum(conn:stats(), "executed")
        sqlite.run(function()
            local other = sqlite.spawn(function() end) -- ready, not run yet, during the read
            assert.equal("a", scalar(conn, POINT, 1))
            other:join()
        end)
        assert.equal(before, inline(conn).executed)
        assert.equal(readers + 1, support.readers_sum(conn:stats(), "executed"))
        sqlite.run(function()
            sqlite.sleep(0.001) -- a later round of the loop, nothing else ready
            assert.equal("a", scalar(conn, POINT, 1))
        end)
        assert.equal(before + 1, inline(conn).executed)
        assert.equal(readers + 1, support.readers_sum(conn:stats(), "executed"))
        assert.equal("a", scalar(conn, POINT, 1)) -- no run: here
        assert.equal(before + 2, inline(conn).executed)
    end)

    it("a transaction's owner reads its own writes on the writer; other coroutines' inline " ..
       "reads see the committed rows only", function()
        local count = "SELECT count(*) FROM t"
        until_inline(conn, count)
        sqlite.run(function()
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t (v) VALUES ('mine')")
            local writer_before = conn:stats().writer.executed
            assert.equal(4, scalar(conn, count)) -- its own write, on the writer
            assert.equal(writer_before + 1, conn:stats().writer.executed)
            local inline_before = inline(conn).executed
            local other = sqlite.spawn(function()
                return scalar(conn, count)
            end):join()
            assert.equal(3, other) -- the committed rows, read inline
            assert.equal(inline_before + 1, inline(conn).executed)
            conn:execute("COMMIT")
            assert.equal(4, sqlite.spawn(function() return scalar(conn, count) end):join())
        end)
    end)

    it("abandons a read that overruns the budget, hands it to a reader, and still answers " ..
       "it right", function()
        local c = sqlite.connect(path, { inline_budget = 0.004 })
        beside_timer(function()
            until_inline(c, COUNT_TO, 10)
            local before = inline(c)
            -- 3 million rows: far past 4 ms, on any machine
            local row = c:execute(COUNT_TO, 3000000):fetchone()
            assert.same({ 3000000, 4500001500000, n = 2 }, row)
            local after = inline(c)
            assert.equal(before.overruns + 1, after.overruns)
            assert.equal(before.executed, after.executed)
        end)
        c:close()
    end)

    it("a read handed to a reader after it wrote rows inline binds its parameters again intact",
       function()
        -- The task keeps its parameters and its first rows in one area: rows go after the
        -- parameters, never over them. Here the first row (x = 1, with ?1's text) is written
        -- before the run overruns the budget; the reader then binds ?1 and ?2 again.
        local c = sqlite.connect(path, { inline_budget = 0.004 })
        local sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2) " ..
                    "SELECT ?1, x FROM c WHERE x = 1 OR x = ?2"
        local text = string.rep("p", 40)
        beside_timer(function()
            until_inline(c, sql, text, 10)
            local before = inline(c).overruns
            local rows = c:execute(sql, text, 3000000):fetchall()
            assert.equal(before + 1, inline(c).overruns)
            assert.same({ { text, 1, n = 2 }, { text, 3000000, n = 2 } }, rows)
        end)
        c:close()
    end)

    it("a read that overran three times is not tried inline again", function()
        local c = sqlite.connect(path, { inline_budget = 0.004 })
        local long = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) " ..
                     "SELECT max(x) FROM c"
        beside_timer(function()
            for _ = 1, 3 do
                until_inline(c, long, 5) -- the readers find it short again after each overrun
                assert.equal(2000000, c:execute(long, 2000000):fetchone()[1])
            end
            local overruns = inline(c).overruns
            assert.equal(3, overruns)
            for _ = 1, 5 do
                assert.equal(5, c:execute(long, 5):fetchone()[1])
                core.sleep(0.002)
            end
            assert.equal(2000000, c:execute(long, 2000000):fetchone()[1])
            assert.equal(overruns, inline(c).overruns)
        end)
        -- (never inline again, for an idle caller too: the text is struck off)
        local before = inline(c).executed
        assert.equal(5, c:execute(long, 5):fetchone()[1])
        assert.equal(before, inline(c).executed)
        c:close()
    end)

    it("a caller that would only wait runs a long read here, past the budget: a blocking " ..
       "call, and a coroutine alone in its run; beside a timer it goes to a reader", function()
        local c = sqlite.connect(path, { inline_budget = 0.004 })
        finally(function() c:close() end)
        local N = 3000000 -- far past 4 ms, on any machine
        local function where(run)
            local i, r = inline(c), support.readers_sum(c:stats(), "executed")
            assert.same({ N, N * (N + 1) / 2, n = 2 }, run(function()
                return c:execute(COUNT_TO, N):fetchone()
            end))
            local i2 = inline(c)
            assert.equal(i.overruns, i2.overruns) -- never abandoned
            return i2.executed - i.executed, support.readers_sum(c:stats(), "executed") - r
        end
        local function call(fn)
            return fn()
        end
        -- a reader learns it is long first (beside a timer the caller is not idle)
        assert.same({ 0, 1 }, { where(beside_timer) })
        assert.same({ 0, 1 }, { where(beside_timer) }) -- a long read: not tried here
        assert.same({ 1, 0 }, { where(call) })          -- the main thread blocks: here
        assert.same({ 1, 0 }, { where(sqlite.run) })    -- alone in a run: here
        assert.same({ 1, 0 }, { where(function(fn)      -- the others wait for it: here
            return sqlite.run(function()
                return sqlite.spawn(fn):join()
            end)
        end) })
        assert.same({ 0, 1 }, { where(beside_timer) })
    end)

    it("a coroutine with others still to run in its loop's round is not idle: its long read " ..
       "goes to a reader", function()
        local c = sqlite.connect(path, { inline_budget = 0.004 })
        finally(function() c:close() end)
        local N = 3000000
        beside_timer(function() c:execute(COUNT_TO, N):fetchone() end) -- known long
        local i, r = inline(c).executed, support.readers_sum(c:stats(), "executed")
        sqlite.run(function()
            local a = sqlite.spawn(function() return c:execute(COUNT_TO, N):fetchone()[1] end)
            local b = sqlite.spawn(function() return N end) -- in the same round, after a
            assert.equal(N, a:join())
            assert.equal(N, b:join())
        end)
        assert.equal(i, inline(c).executed)
        assert.equal(r + 1, support.readers_sum(c:stats(), "executed"))
    end)

    it("a read only blocking calls ran teaches the pool its cost: a coroutine beside a timer " ..
       "then runs it here too", function()
        local sql = "SELECT count(*) FROM t WHERE v <> ?"
        local r = support.readers_sum(conn:stats(), "executed")
        for _ = 1, 3 do
            assert.equal(3, scalar(conn, sql, "z"))
        end
        assert.equal(r, support.readers_sum(conn:stats(), "executed")) -- none reached a reader
        local before = inline(conn).executed
        beside_timer(function()
            assert.equal(3, scalar(conn, sql, "z"))
        end)
        assert.equal(before + 1, inline(conn).executed)
        assert.equal(r, support.readers_sum(conn:stats(), "executed"))
    end)

    it("keeps a statement's own timeout when it runs inline", function()
        local c = sqlite.connect(path, { inline_budget = 1 })
        until_inline(c, COUNT_TO, 10)
        local cur = c:cursor()
        cur.timeout = 0.01
        local before = inline(c).executed
        local err = support.raises("OperationalError", cur.execute, cur, COUNT_TO, 100000000)
        assert.matches("timed out", err.message)
        assert.equal(before + 1, inline(c).executed) -- it stopped there, with its own error
        c:close()
    end)

    it("a result too big for one chunk is handed to a reader and not tried inline again",
       function()
        if (os.getenv("LD_PRELOAD") or ""):find("tsan", 1, true) then
            pending("under TSan a 300 kB result takes the readers more than a long read's 1 ms")
            return
        end
        local sql = "SELECT zeroblob(?) AS z" -- 300 kB: more than one chunk
        for _ = 1, 1000 do -- until the readers found it short (under 1 ms: not a long read)
            assert.equal(300000, #conn:execute(sql, 300000):fetchone()[1])
            if inline(conn).failed > 0 then
                break
            end
            core.sleep(0.001)
        end
        assert.equal(1, inline(conn).failed)
        for _ = 1, 10 do
            assert.equal(300000, #conn:execute(sql, 300000):fetchone()[1])
            core.sleep(0.001)
        end
        local st = inline(conn)
        assert.equal(1, st.failed)
        assert.equal(0, st.executed)
    end)

    it("a read of a TEMP table (the writer's) never runs inline and answers from it", function()
        until_inline(conn, "SELECT count(*) FROM t")
        conn:execute("CREATE TEMP TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn:execute("INSERT INTO temp.t VALUES (1, 'temp')")
        local before = inline(conn).executed
        for _ = 1, 10 do
            assert.equal(1, scalar(conn, "SELECT count(*) FROM t"))
            assert.equal("temp", scalar(conn, POINT, 1))
        end
        assert.equal(before, inline(conn).executed)
        conn:execute("DROP TABLE temp.t")
        assert.equal(3, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("read settings changed through execute reach the inline connection", function()
        local like = "SELECT count(*) FROM t WHERE v LIKE 'A'"
        assert.same({ { 1, n = 1 } }, until_inline(conn, like))
        conn:execute("PRAGMA case_sensitive_like = ON")
        assert.same({ { 0, n = 1 } }, until_inline(conn, like))
        conn:execute("PRAGMA case_sensitive_like = OFF")
        assert.same({ { 1, n = 1 } }, until_inline(conn, like))
    end)

    it("another connection's schema change reaches the inline connection", function()
        until_inline(conn, "SELECT * FROM t WHERE id = 1")
        local other = sqlite.connect(path, { inline_reads = false })
        other:execute("ALTER TABLE t ADD COLUMN w INTEGER DEFAULT 7")
        other:close()
        local cur = conn:execute("SELECT * FROM t WHERE id = 1")
        assert.same({ 1, "a", 7, n = 3 }, cur:fetchone())
        assert.equal(3, #cur.description)
    end)

    it("answers exactly as the readers do: types, NULLs, blobs, big integers, names, " ..
       "declared types, empty results", function()
        conn:execute("CREATE TABLE v (i INTEGER, r REAL, s TEXT, b BLOB, n NUMERIC, u)")
        local big = math.maxinteger or 2 ^ 53
        conn:executemany("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)", {
            { 1, 1.5, "one", sqlite.blob("\0\1\2"), 10, sqlite.null },
            { big, -0.25, "", sqlite.blob(""), 2.5, "text" },
            { -big, 1e300, "\0nul", sqlite.blob("x"), sqlite.null, 3 },
            { sqlite.null, sqlite.null, sqlite.null, sqlite.null, "12", sqlite.blob("u") },
        })
        local queries = {
            { "SELECT * FROM v ORDER BY rowid" },
            { "SELECT i, r, s, b, n, u, typeof(u) FROM v WHERE rowid = ?", 1 },
            { "SELECT i, r, s, b, n, u, typeof(u) FROM v WHERE rowid = ?", 4 },
            { "SELECT i AS renamed, s || 'x' AS expr, length(b) FROM v WHERE rowid = ?", 2 },
            { "SELECT * FROM v WHERE i = ?", 12345 },
            { "SELECT count(*), total(i), max(s), min(r) FROM v" },
            { "SELECT hex(b), quote(n) FROM v ORDER BY rowid DESC" },
            { "SELECT ?, ?, ?, ?", 1, 2.5, "three", sqlite.blob("4") },
            { "SELECT * FROM v WHERE s LIKE ?", "o%" },
        }
        local off = sqlite.connect(path, { inline_reads = false })
        local function answer(c, q)
            local cur = c:execute(q[1], support.unpack(q, 2))
            local desc = {}
            for i, d in ipairs(cur.description or {}) do
                desc[i] = { d.name, d.decltype }
            end
            return { rows = cur:fetchall(), desc = desc }
        end
        for _, q in ipairs(queries) do
            until_inline(conn, q[1], support.unpack(q, 2))
            local before = inline(conn).executed
            local got = answer(conn, q)
            assert.equal(before + 1, inline(conn).executed, q[1])
            assert.same(answer(off, q), got, q[1])
        end
        off:close()
    end)

    it("runs no read inline in a rollback-journal pool, nor with readers = 0", function()
        local d_path, d_cleanup = support.tmpdb()
        local d = sqlite.connect(d_path, { journal_mode = "delete" })
        local z = sqlite.connect(path, { readers = 0 })
        for _, c in ipairs({ d, z }) do
            for _ = 1, 20 do
                assert.equal(3, scalar(c, "SELECT 1 + 2"))
            end
            assert.equal(0, inline(c).executed)
            c:close()
        end
        d_cleanup()
    end)

    it("lets the other coroutines of the scheduler run while one reads inline for long", function()
        local c = sqlite.connect(path, { inline_budget = 0.002 }) -- a pause every 2 ms or so
        until_inline(c, POINT, 1)
        local ticks, reads_done = 0, false
        sqlite.run(function()
            sqlite.spawn(function()
                while not reads_done do
                    ticks = ticks + 1
                    sqlite.sleep(0)
                end
            end)
            local t0 = core.now()
            while core.now() - t0 < 0.05 do -- 50 ms of reads, run inline without a yield
                scalar(c, POINT, 1)
            end
            reads_done = true
        end)
        c:close()
        assert.is_true(ticks >= 3, ticks .. " ticks")
    end)

    it("a read while another process holds the write lock runs at once and sees only " ..
       "committed rows", function()
        if support.no_children then
            pending("spawns the sqlite3 shell through /bin/sh, which crashes under TSan")
            return
        end
        local count = "SELECT count(*) FROM t"
        until_inline(conn, count)
        until_inline(conn, POINT, 1)
        local marker = path .. ".locked"
        local shell = assert(io.popen("exec timeout 60 sqlite3 -batch " .. path ..
                                      " >/dev/null 2>&1", "w"))
        shell:write("BEGIN EXCLUSIVE;\nINSERT INTO t (v) VALUES ('other');\n.shell touch " ..
                    marker .. "\n")
        shell:flush()
        local deadline = core.now() + 10
        while not support.exists(marker) and core.now() < deadline do
            core.sleep(0.01)
        end
        assert.is_true(support.exists(marker), "the other process did not take its lock")
        local before = inline(conn)
        local t0 = core.now()
        local got = pack(scalar(conn, count), scalar(conn, POINT, 1))
        local took = core.now() - t0
        assert.same(pack(3, "a"), got)
        assert.is_true(took < 1, took .. " s") -- busy_timeout is 5 s: nothing waited
        local after = inline(conn)
        assert.equal(before.executed + 2, after.executed)
        shell:write("ROLLBACK;\n")
        shell:close()
        os.remove(marker)
    end)
end)
