-- Edge cases that once went wrong: all-or-nothing executemany inside a transaction, streamed
-- results whose reader must come back, write order for SQL seen for the first time, the
-- parameter table {n = ...}, odd fetchmany sizes and sleeps, and closing twice at once.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local raises, scalar, readers_sum = support.raises, support.scalar, support.readers_sum

-- Rows of ~100 KB spread thinly through a long recursive count: the first chunk of the
-- result takes a while, and the result streams.
local SLOW_BIG = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000000) " ..
                 "SELECT n, randomblob(100000) FROM c WHERE n % 300000 = 0"

local wait_no_stream = support.wait_no_stream

describe("robustness", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path, { readers = 2 })
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)")
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    it("executemany over many chunks inside the caller's transaction undoes only its own rows", function()
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t VALUES (0, 'before')")
        local i = 0
        local err = raises("IntegrityError", conn.executemany, conn, "INSERT INTO t VALUES (?, 'many')",
                           function()
                               i = i + 1
                               if i <= 15000 then
                                   return { i == 12345 and 1 or i } -- a duplicate in the 2nd chunk
                               end
                           end)
        assert.matches("UNIQUE", err.message)
        assert.is_true(conn.in_transaction)
        assert.equal(0, scalar(conn, "SELECT count(*) FROM t WHERE who = 'many'"))
        conn:commit()
        assert.equal(1, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("executemany over many chunks keeps the iterator's own error and leaves nothing", function()
        local i = 0
        local ok, err = pcall(conn.executemany, conn, "INSERT INTO t VALUES (?, 'many')", function()
            i = i + 1
            if i == 15000 then
                error("iterator broke")
            end
            return { i }
        end)
        assert.is_false(ok)
        assert.matches("iterator broke", tostring(err))
        assert.is_false(conn.in_transaction)
        assert.equal(0, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("a streamed result whose coroutine was abandoned gives its reader back", function()
        local started = false
        local ok = pcall(sqlite.run, function()
            sqlite.spawn(function()
                started = true
                conn:execute(SLOW_BIG) -- abandoned while this waits
            end)
            sqlite.sleep(0.02)
            error("gave up")
        end)
        assert.is_false(ok)
        assert.is_true(started)
        local left
        sqlite.run(function()
            sqlite.sleep(0.5) -- the abandoned result arrives and is discarded meanwhile
            left = wait_no_stream(conn)
        end)
        assert.equal(0, left)
    end)

    -- As Python's Cursor.close (check_cursor_locked), closing a cursor whose fetch another
    -- coroutine is waiting for is refused: the fetch gets every row, and a close afterwards
    -- gives the reader back. (It used to close, and the waiting fetch returned part of the
    -- rows without saying so.)
    it("closing a cursor while another coroutine waits for its next chunk is refused; the fetch "
       .. "reads on and a later close gives the reader back", function()
        local left, total, refused
        sqlite.run(function()
            local cur = conn:execute(SLOW_BIG)
            assert.is_not_nil(cur:fetchone())
            local fetching = sqlite.spawn(function()
                return cur:fetchall()
            end)
            sqlite.sleep(0) -- the fetch is submitted
            refused = support.raises("ProgrammingError", cur.close, cur)
            total = 1 + #fetching:join()
            cur:close()
            left = wait_no_stream(conn)
        end)
        assert.truthy(refused.message:find("Recursive use of cursors", 1, true), refused.message)
        assert.equal(support.scalar(conn, "SELECT count(*) FROM (" .. SLOW_BIG .. ")"), total)
        assert.equal(0, left)
    end)

    it("writes run in submission order, also for SQL seen for the first time", function()
        local one = sqlite.connect(path, { readers = 1 })
        one:execute("INSERT INTO t (who) VALUES (?)", "warm") -- this SQL text is known now
        sqlite.run(function()
            sqlite.spawn(function() -- keeps the only reader busy
                one:execute("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c " ..
                            "WHERE n < 2000000) SELECT count(*) FROM c")
            end)
            sqlite.sleep(0.02)
            sqlite.spawn(function()
                one:execute("INSERT INTO t (who) VALUES ('first') -- never seen before")
            end)
            sqlite.spawn(function()
                one:execute("INSERT INTO t (who) VALUES (?)", "second")
            end)
        end)
        local rows = one:execute("SELECT who FROM t WHERE who <> 'warm' ORDER BY id"):fetchall()
        assert.same({ { "first", n = 1 }, { "second", n = 1 } }, rows)
        one:close()
    end)

    it("a table {n = v} binds :n when the statement has it, and stands for n NULLs otherwise", function()
        assert.equal(7, scalar(conn, "SELECT :n", { n = 7 }))
        assert.equal(3, scalar(conn, "SELECT :n + :m", { n = 1, m = 2 }))
        assert.equal(1.5, scalar(conn, "SELECT :n", { n = 1.5 }))
        local row = conn:execute("SELECT ?, ?", { n = 2 }):fetchone()
        assert.same({ sqlite.null, sqlite.null, n = 2 }, row)
        raises("ProgrammingError", conn.execute, conn, "SELECT ?", { n = 2 })
        raises("ProgrammingError", conn.execute, conn, "SELECT ?", { "a", n = 1.5 })
    end)

    it("executemany: a set {n = k} stands for k NULLs, and only that set", function()
        conn:execute("CREATE TABLE packs (a, b)")
        local pack = support.pack
        conn:executemany("INSERT INTO packs VALUES (?, ?)",
                         { { 1, 2 }, pack(nil, nil), { 3, 4 }, { n = 2 }, { 5, 6 } })
        local rows = conn:execute("SELECT a, b FROM packs ORDER BY rowid"):fetchall()
        local null = sqlite.null
        assert.same({ { 1, 2, n = 2 }, { null, null, n = 2 }, { 3, 4, n = 2 }, { null, null, n = 2 },
                      { 5, 6, n = 2 } }, rows)
        conn:executemany("INSERT INTO packs VALUES (:n, :n)", { { n = 7 }, { n = 8 } }) -- binds :n
        assert.equal(15, scalar(conn, "SELECT sum(a) FROM packs WHERE a = b AND a > 6"))
    end)

    it("fetchmany refuses a size that is not a whole number and loses no row", function()
        conn:executemany("INSERT INTO t VALUES (?, 'x')", { { 1 }, { 2 }, { 3 } })
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        raises("ProgrammingError", cur.fetchmany, cur, 2.5)
        cur.arraysize = 0.5
        raises("ProgrammingError", cur.fetchmany, cur)
        assert.equal(3, #cur:fetchall())
    end)

    it("sleep with NaN or a negative time does not wait or spin", function()
        local after = false
        sqlite.run(function()
            sqlite.sleep(0 / 0)
            sqlite.sleep(-1)
            after = true
        end)
        assert.is_true(after)
    end)

    it("a second close from another coroutine returns once the connection is closed", function()
        local c = sqlite.connect(path)
        local seen
        sqlite.run(function()
            local first = sqlite.spawn(function() c:close() end)
            sqlite.sleep(0)
            c:close()
            seen = c.closed
            first:join()
        end)
        assert.is_true(seen)
        raises("ConnectionClosedError", c.execute, c, "SELECT 1")
    end)

    it("keeps counting reads on readers while writes go to the writer", function()
        -- (inline_reads off: a blocking call would run the read itself, on its own connection)
        local c = sqlite.connect(path, { readers = 2, inline_reads = false })
        finally(function() c:close() end)
        local before = c:stats()
        c:execute("INSERT INTO t (who) VALUES ('w')")
        c:execute("SELECT who FROM t"):fetchall()
        local after = c:stats()
        assert.equal(1, after.writer.executed - before.writer.executed)
        assert.equal(1, readers_sum(after, "executed") - readers_sum(before, "executed"))
        assert.equal(0, after.inline.executed)
    end)
end)
