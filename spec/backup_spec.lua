-- conn:backup(target [, opts]): an online backup, step by step on the writer, into a path or
-- another Connection, while the pool goes on reading and writing: the copy passes
-- integrity_check and holds whole transactions only, as of some moment between the backup's
-- start and end.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local function filled(path, n)
    local conn = sqlite.connect(path)
    conn:execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, k INTEGER, part TEXT)")
    conn:execute("CREATE INDEX ledger_k ON ledger(k)")
    local i = 0
    conn:executemany("INSERT INTO ledger(k, part) VALUES (?, ?)", function()
        i = i + 1
        return i <= n and { math.floor((i + 1) / 2), ("p"):rep(300) } or nil
    end)
    return conn
end

-- Asserts that the database of `conn` is whole: integrity_check, and every k has both rows.
local function assert_whole(conn)
    assert.are.equal("ok", support.scalar(conn, "PRAGMA integrity_check"))
    assert.are.equal(0, support.scalar(conn,
        "SELECT count(*) FROM (SELECT k FROM ledger GROUP BY k HAVING count(*) <> 2)"))
end

describe("conn:backup", function()
    it("copies into a path in steps while 8 coroutines write, whole and consistent", function()
        local path, cleanup = support.tmpdb()
        local dest = support.temp_path()
        local conn = filled(path, 4000)
        local before = support.scalar(conn, "SELECT count(*) FROM ledger")
        local steps, last_total, done = 0, nil, false
        sqlite.run(function()
            for w = 1, 8 do
                sqlite.spawn(function()
                    local k = 0
                    while not done do
                        k = k + 1
                        conn:transaction(function()
                            local key = 1000000 * w + k
                            conn:execute("INSERT INTO ledger(k, part) VALUES (?, 'a')", key)
                            conn:execute("INSERT INTO ledger(k, part) VALUES (?, 'b')", key)
                        end)
                    end
                end)
            end
            conn:backup(dest, {
                pages = 5,
                progress = function(remaining, total)
                    assert.is_true(remaining >= 0 and remaining <= total)
                    steps, last_total = steps + 1, total
                    sqlite.sleep(0) -- the writers go on between steps
                end,
            })
            done = true
        end)
        local after = support.scalar(conn, "SELECT count(*) FROM ledger")
        assert.is_true(steps > 10, "in many steps: " .. steps)
        assert.is_true(after > before, "the writers wrote during the backup")
        local copy = sqlite.connect(dest, { readonly = true })
        assert_whole(copy)
        local n = support.scalar(copy, "SELECT count(*) FROM ledger")
        assert.is_true(n >= before and n <= after, ("%d <= %d <= %d"):format(before, n, after))
        assert.are.equal(last_total, support.scalar(copy, "PRAGMA page_count"))
        -- the rows it holds are the source's rows with those ids
        assert.are.same(support.column(copy, "SELECT k || part FROM ledger ORDER BY id"),
                        support.column(conn, "SELECT k || part FROM ledger WHERE id <= ? ORDER BY id",
                                       support.scalar(copy, "SELECT max(id) FROM ledger")))
        copy:close()
        conn:close()
        support.remove_db(dest)
        cleanup()
    end)

    it("copies into another Connection, which then reads the new content", function()
        local conn = filled(":memory:", 500)
        local other = sqlite.connect(":memory:")
        other:execute("CREATE TABLE old(x)")
        local calls = 0
        conn:backup(other, { progress = function(remaining, total)
            calls = calls + 1
            assert.are.equal(0, remaining)
            assert.is_true(total > 1)
        end })
        assert.are.equal(1, calls) -- all pages at once by default
        assert_whole(other)
        assert.are.equal(500, support.scalar(other, "SELECT count(*) FROM ledger"))
        support.raises("OperationalError", support.scalar, other, "SELECT * FROM old")
        other:execute("INSERT INTO ledger(k, part) VALUES (0, 'x')")
        assert.are.equal(500, support.scalar(conn, "SELECT count(*) FROM ledger"))
        -- name: an attached database; blocking and under luv
        conn:execute("ATTACH ':memory:' AS aux")
        conn:execute("CREATE TABLE aux.u(x)")
        conn:execute("INSERT INTO aux.u VALUES (7)")
        local ok, uv = pcall(require, "luv")
        if ok then
            local before = sqlite.set_host(nil)
            require "pasyn_sqlite.luv"
            local co = coroutine.create(function()
                conn:backup(other, { name = "aux", pages = 1 })
            end)
            assert(coroutine.resume(co))
            uv.run()
            sqlite.set_host(before)
        else
            conn:backup(other, { name = "aux" })
        end
        assert.are.equal(7, support.scalar(other, "SELECT x FROM u"))
        other:close()
        conn:close()
    end)

    it("raises error objects for bad arguments and failed backups; the pool goes on", function()
        local conn = filled(":memory:", 10)
        support.raises("ProgrammingError", conn.backup, conn, 42)
        support.raises("ProgrammingError", conn.backup, conn, conn)
        support.raises("ProgrammingError", conn.backup, conn, "/tmp/x.db", { pages = 0 })
        support.raises("ProgrammingError", conn.backup, conn, "/tmp/x.db", { progress = 1 })
        support.raises("ProgrammingError", conn.backup, conn, "/tmp/x.db", "pages")
        local ro = sqlite.connect(":memory:", { readonly = true })
        local e1 = support.raises("OperationalError", conn.backup, conn, ro)
        assert.matches("read%-only", e1.message)
        ro:close()
        local err = support.raises("OperationalError", conn.backup, conn, "/nonexistent/dir/x.db")
        assert.matches("/nonexistent/dir/x.db", err.message, 1, true)
        local nowhere = support.temp_path()
        support.raises("OperationalError", conn.backup, conn, nowhere, { name = "nowhere" })
        support.remove_db(nowhere)
        -- not from inside the caller's own transaction: the source connection is writing
        conn:execute("BEGIN")
        conn:execute("INSERT INTO ledger(k, part) VALUES (98, 'in txn')")
        local inside = support.temp_path()
        err = support.raises("OperationalError", conn.backup, conn, inside)
        assert.matches("locked", err.message)
        conn:execute("ROLLBACK")
        support.remove_db(inside)
        -- a progress function that raises ends the backup; its error goes on up
        local dest = support.temp_path()
        local boom = {}
        local ok, e = pcall(conn.backup, conn, dest, { pages = 1, progress = function()
            error(boom)
        end })
        assert.is_false(ok)
        assert.are.equal(boom, e)
        conn:execute("INSERT INTO ledger(k, part) VALUES (99, 'after')")
        assert.are.equal(11, support.scalar(conn, "SELECT count(*) FROM ledger"))
        conn:close()
        support.remove_db(dest)
        support.raises("ConnectionClosedError", conn.backup, conn, dest)
    end)

    it("refuses a target that is the source's own file, by path or through another pool", function()
        -- The copy would hold the file's write lock from its first step to its last: the
        -- pool's own writes between steps would wait for it, then fail (busy_timeout).
        local path, cleanup = support.tmpdb()
        local conn = filled(path, 50)
        local err = support.raises("ProgrammingError", conn.backup, conn, path, { pages = 1 })
        assert.matches("own file", err.message)
        local dir, base = path:match("^(.*)/([^/]+)$")
        support.raises("ProgrammingError", conn.backup, conn, dir .. "/./" .. base)
        support.raises("ProgrammingError", conn.backup, conn, "file:" .. path)
        local second = sqlite.connect(path)
        support.raises("ProgrammingError", conn.backup, conn, second)
        support.raises("ProgrammingError", second.backup, second, conn)
        second:close()
        conn:execute("INSERT INTO ledger(k, part) VALUES (99, 'after')") -- no lock left
        assert.are.equal(51, support.scalar(conn, "SELECT count(*) FROM ledger"))
        -- an attached database's own file, too
        local other = support.temp_path()
        conn:execute("ATTACH ? AS aux", other)
        conn:execute("CREATE TABLE aux.t(x)")
        support.raises("ProgrammingError", conn.backup, conn, other, { name = "aux" })
        support.raises("ProgrammingError", conn.backup, conn, other) -- main into aux's file
        conn:execute("INSERT INTO aux.t VALUES (1)") -- no lock left
        conn:close()
        cleanup()
        support.remove_db(other)
    end)

    it("ends on a closing pool without waiting: the calls its statements make are still answered",
       function()
        -- A backup that ends while its pool closes must not wait for the close on the Lua
        -- thread: the close waits for a read that calls a collation defined in Lua, which only
        -- this thread answers. In a child process: a regression hangs there, not here.
        local out = support.in_child([[
            local sqlite = require "pasyn_sqlite"
            local conn = sqlite.connect(":memory:")
            conn:execute("CREATE TABLE t(x TEXT)")
            local i = 0
            conn:executemany("INSERT INTO t VALUES (?)", function()
                i = i + 1
                return i <= 20000 and { tostring((i * 7919) % 20011) } or nil
            end)
            local calls = 0
            conn:create_collation("lua_order", function(a, b)
                calls = calls + 1
                return a < b and -1 or a > b and 1 or 0
            end)
            local dest = os.tmpname()
            local rows, stopped
            sqlite.run(function()
                local read = sqlite.spawn(function() -- many collation calls: a second or more
                    return #conn:execute("SELECT x FROM t ORDER BY x COLLATE lua_order"):fetchall()
                end)
                sqlite.spawn(function()
                    sqlite.sleep(0.05)
                    conn:close() -- waits for the read
                end)
                stopped = select(2, pcall(conn.backup, conn, dest, { pages = 1, progress = function()
                    sqlite.sleep(0.2) -- the pool is closing now, the read still sorting
                    error("stop here", 0)
                end }))
                rows = read:join()
            end)
            for _, suffix in ipairs({ "", "-journal", "-wal", "-shm" }) do os.remove(dest .. suffix) end
            print(("%d %s %s %s"):format(rows, tostring(calls > 20000), stopped, tostring(conn.closed)))
        ]], 120)
        assert.matches("20000 true stop here true", out, 1, true)
    end)

    it("ends at once when another coroutine closes its pool between steps, leaving nothing",
       function()
        -- The step after the close is refused; the backup is left to the pool (its writer may
        -- still run a step of it), which ends it when it is freed: the copy's file is let go.
        local before = support.holdings()
        local conn = filled(":memory:", 2000)
        local dest = support.temp_path()
        local err, closer
        sqlite.run(function()
            local ok
            ok, err = pcall(conn.backup, conn, dest, { pages = 1, progress = function()
                closer = closer or sqlite.spawn(function() conn:close() end)
                sqlite.sleep(0)
            end })
            assert.is_false(ok)
            closer:join()
        end)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.are.equal("PoolClosedError", err.kind)
        assert.is_true(conn.closed)
        support.remove_db(dest)
        support.assert_nothing_left(before)
    end)

    it("leaves nothing behind when a coroutine is abandoned between steps", function()
        local before = support.holdings()
        local conn = filled(":memory:", 2000)
        local dest = support.temp_path()
        local ok = pcall(sqlite.run, function()
            sqlite.spawn(function()
                conn:backup(dest, { pages = 1, progress = function() sqlite.sleep(10) end })
            end)
            sqlite.sleep(0.05)
            error("abandon")
        end) -- raises: run ends, the backup's coroutine is abandoned
        assert.is_false(ok)
        collectgarbage()
        collectgarbage()
        conn:execute("INSERT INTO ledger(k, part) VALUES (1, 'x')")
        conn:close()
        support.remove_db(dest)
        support.assert_nothing_left(before)
    end)
end)
