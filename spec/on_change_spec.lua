-- conn:on_change(fn): fn(op, db, table, rowid) for each row a transaction changed, after its
-- COMMIT succeeded, in commit order; never for work rolled back (ROLLBACK, ROLLBACK TO, a
-- failed statement, a group commit's failing member); bounded per transaction.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local function recorder()
    local seen = {}
    return seen, function(op, db, tbl, rowid)
        seen[#seen + 1] = table.concat({ op, tostring(db), tostring(tbl), tostring(rowid) }, " ")
    end
end

local function open(opts)
    local conn = sqlite.connect(":memory:", opts)
    conn:execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    return conn
end

describe("conn:on_change", function()
    it("reports autocommit writes after their commit, with op, db, table and rowid", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        conn:execute("INSERT INTO t VALUES (1, 'a')")
        assert.are.same({ "insert main t 1" }, seen) -- before execute returned
        conn:execute("UPDATE t SET v = 'b' WHERE id = 1")
        conn:execute("DELETE FROM t WHERE id = 1")
        assert.are.same({ "insert main t 1", "update main t 1", "delete main t 1" }, seen)
        conn:close()
    end)

    it("reports a transaction's changes only once COMMIT succeeded, none for ROLLBACK", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t VALUES (1, 'a')")
        conn:execute("INSERT INTO t VALUES (2, 'b')")
        assert.are.same({}, seen)
        conn:execute("COMMIT")
        assert.are.same({ "insert main t 1", "insert main t 2" }, seen)
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t VALUES (3, 'c')")
        conn:execute("ROLLBACK")
        assert.has_error(function()
            conn:transaction(function()
                conn:execute("INSERT INTO t VALUES (4, 'd')")
                error("undo")
            end)
        end)
        conn:executescript("BEGIN; INSERT INTO t VALUES (5, 'e'); ROLLBACK; " ..
                           "INSERT INTO t VALUES (6, 'f')")
        assert.are.same({ "insert main t 1", "insert main t 2", "insert main t 6" }, seen)
        conn:close()
    end)

    it("drops what ROLLBACK TO a savepoint undid and what a failed statement undid", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t VALUES (1, 'a')")
        conn:execute("SAVEPOINT a")
        conn:execute("INSERT INTO t VALUES (2, 'b')")
        conn:execute("SAVEPOINT b")
        conn:execute("INSERT INTO t VALUES (3, 'c')")
        conn:execute("RELEASE b")
        conn:execute("ROLLBACK TO a")
        conn:execute("INSERT INTO t VALUES (4, 'd')")
        -- fails on its second row: SQLite undoes its first row too
        support.raises("IntegrityError", conn.execute, conn,
                       "INSERT INTO t VALUES (5, 'e'), (6, 'a')")
        conn:execute("COMMIT")
        assert.are.same({ "insert main t 1", "insert main t 4" }, seen)
        -- nested transaction() uses savepoints the same way
        seen[#seen] = nil
        seen[#seen] = nil
        conn:transaction(function()
            conn:execute("INSERT INTO t VALUES (7, 'g')")
            pcall(conn.transaction, conn, function()
                conn:execute("INSERT INTO t VALUES (8, 'h')")
                error("inner")
            end)
        end)
        assert.are.same({ "insert main t 7" }, seen)
        -- OR FAIL keeps the rows before the failing one: they are reported
        seen[1] = nil
        conn:execute("BEGIN")
        support.raises("IntegrityError", conn.execute, conn,
                       "INSERT OR FAIL INTO t VALUES (9, 'i'), (10, 'a')")
        conn:execute("COMMIT")
        assert.are.same({ "insert main t 9" }, seen)
        conn:close()
    end)

    it("reports executemany's rows, none when it fails", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        conn:executemany("INSERT INTO t VALUES (?, ?)", { { 1, "a" }, { 2, "b" } })
        support.raises("IntegrityError", conn.executemany, conn, "INSERT INTO t VALUES (?, ?)",
                       { { 3, "c" }, { 4, "a" } })
        conn:execute("BEGIN")
        conn:executemany("INSERT INTO t VALUES (?, ?)", { { 5, "e" } })
        pcall(conn.executemany, conn, "INSERT INTO t VALUES (?, ?)", { { 6, "f" }, { 7, "e" } })
        conn:execute("COMMIT")
        assert.are.same({ "insert main t 1", "insert main t 2", "insert main t 5" }, seen)
        conn:close()
    end)

    it("reports in commit order across coroutines, each committed row exactly once", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        local commits = {}
        sqlite.run(function()
            for c = 1, 10 do
                sqlite.spawn(function()
                    for i = 1, 5 do
                        conn:transaction(function()
                            conn:execute("INSERT INTO t(v) VALUES (?)", "a" .. c .. "_" .. i)
                            conn:execute("INSERT INTO t(v) VALUES (?)", "b" .. c .. "_" .. i)
                        end)
                        commits[#commits + 1] = c * 100 + i -- after its COMMIT returned
                    end
                end)
            end
        end)
        local rows = support.column(conn, "SELECT id FROM t ORDER BY id")
        assert.are.equal(100, #seen)
        -- each transaction's two rows come together, transactions in commit (rowid) order
        for k, id in ipairs(rows) do
            assert.are.equal("insert main t " .. id, seen[k])
        end
        assert.are.equal(50, #commits)
        conn:close()
    end)

    it("group commit: each succeeding member once, none for the failing ones, also when a " ..
       "member ends the batch and the others run again", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        conn:execute("INSERT INTO t VALUES (1, 'taken')")
        seen[1] = nil
        local ok_ids, failed = {}, 0
        sqlite.run(function()
            -- held back behind a transaction, the writes are all queued when it ends: the
            -- writer takes them as one group commit (up to a member that breaks it)
            conn:execute("BEGIN IMMEDIATE")
            for k = 1, 60 do
                sqlite.spawn(function()
                    -- some fail alone (ABORT), and each OR ROLLBACK that fails ends the
                    -- batch's transaction: its members then run again, each alone
                    local v = (k % 4 == 0 or k % 25 == 0) and "taken" or "v" .. k
                    local verb = k % 25 == 0 and "INSERT OR ROLLBACK" or "INSERT"
                    local ok, cur = pcall(conn.execute, conn, verb .. " INTO t(v) VALUES (?)", v)
                    if ok then
                        ok_ids[#ok_ids + 1] = cur.lastrowid
                    else
                        assert.are.equal("IntegrityError", cur.kind)
                        failed = failed + 1
                    end
                end)
            end
            sqlite.sleep(0) -- each spawned coroutine submits its write and waits
            conn:execute("COMMIT")
        end)
        assert.are.equal(17, failed)
        assert.are.equal(43, #ok_ids)
        assert.is_true(conn:stats().writer.batches > 0, "some writes were committed together")
        local reported = {}
        for _, s in ipairs(seen) do
            local id = tonumber(s:match("^insert main t (%d+)$"))
            assert.is_truthy(id, s)
            assert.is_nil(reported[id], "reported twice: " .. id)
            reported[id] = true
        end
        for _, id in ipairs(ok_ids) do
            assert.is_true(reported[id], "not reported: " .. id)
        end
        assert.are.equal(43, #seen)
        conn:close()
    end)

    it("group commit: reports the members of the first transaction after it is set", function()
        -- The hook is set while a transaction is open; the writes queued behind it are the
        -- writer's next transaction, which it runs as one group commit (its BEGIN comes
        -- before the first member's task).
        for _ = 1, 3 do
            local conn = open()
            local seen, fn = recorder()
            sqlite.run(function()
                conn:execute("BEGIN IMMEDIATE")
                conn:on_change(fn)
                local joins = {}
                for k = 1, 4 do
                    joins[k] = sqlite.spawn(conn.execute, conn, "INSERT INTO t VALUES (?, ?)",
                                            k, "v" .. k)
                end
                sqlite.sleep(0) -- each spawned coroutine submits its write and waits
                conn:execute("ROLLBACK")
                for k = 1, 4 do
                    joins[k]:join()
                end
            end)
            table.sort(seen)
            assert.are.same({ "insert main t 1", "insert main t 2", "insert main t 3",
                              "insert main t 4" }, seen)
            conn:close()
        end
        -- and with no transaction before: writes of several coroutines at once, first thing
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        sqlite.run(function()
            for k = 1, 4 do
                sqlite.spawn(conn.execute, conn, "INSERT INTO t VALUES (?, ?)", k, "v" .. k)
            end
        end)
        assert.are.equal(4, #seen)
        conn:close()
    end)

    it("group commit: bounds each member's events as if it ran alone", function()
        -- max_events bounds a transaction; an autocommit write committed in a group commit is
        -- a transaction of its own for the bound, as it would be alone
        local conn = open()
        local seen, fn = recorder()
        local runs = 0
        sqlite.run(function()
            conn:execute("BEGIN IMMEDIATE")
            conn:on_change(fn, 2)
            conn:trace(function(sql)
                runs = runs + (sql:match("^INSERT") and 1 or 0)
            end)
            local joins = {}
            for k = 1, 6 do
                joins[k] = sqlite.spawn(conn.execute, conn, "INSERT INTO t VALUES (?, ?)", k,
                                        "v" .. k)
                if k == 1 then -- three rows: alone, its first two and a notice of one more
                    joins[7] = sqlite.spawn(conn.execute, conn,
                                            "INSERT INTO t VALUES (7, 'v7'), (8, 'v8'), (9, 'v9')")
                end
            end
            sqlite.sleep(0) -- each spawned coroutine submits its write and waits
            conn:execute("ROLLBACK")
            for k = 1, 7 do
                joins[k]:join()
            end
        end)
        table.sort(seen)
        assert.are.same({ "insert main t 1", "insert main t 2", "insert main t 3",
                          "insert main t 4", "insert main t 5", "insert main t 6",
                          "insert main t 7", "insert main t 8", "overflow nil nil 1" }, seen)
        -- A member that loses changes to the bound rolls its batch back, and the batch's
        -- statements run again alone (traced twice): the first batch's two. A batch ends once
        -- the bound is reached, so no other batch does.
        assert.are.equal(9, runs)
        conn:close()
    end)

    it("gives a rowid beyond 2^53 as the connection's integers option says", function()
        -- as cur.lastrowid does: exact on Lua 5.3+; on LuaJIT a string or an int64_t box when
        -- the option asks for one
        local modes = { "number", "string" }
        if jit and pcall(require, "ffi") then -- luacheck: ignore jit
            modes[3] = "int64"
        end
        for _, mode in ipairs(modes) do
            local conn = open({ integers = mode })
            local got
            conn:on_change(function(_, _, _, rowid) got = rowid end)
            local cur = conn:execute("INSERT INTO t VALUES (9007199254740993, 'big')")
            assert.are.equal(tostring(cur.lastrowid), tostring(got))
            assert.are.equal(type(cur.lastrowid), type(got))
            if mode ~= "number" or math.type then
                assert.matches("^9007199254740993", tostring(got))
            end
            conn:close()
        end
    end)

    it("bounds a transaction's events with one overflow notice, and stops with nil", function()
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn, 10)
        local i = 0
        conn:executemany("INSERT INTO t(v) VALUES (?)", function()
            i = i + 1
            return i <= 25 and { i } or nil
        end)
        assert.are.equal(11, #seen)
        assert.are.equal("insert main t 10", seen[10])
        assert.are.equal("overflow nil nil 15", seen[11])
        conn:on_change(nil)
        conn:execute("INSERT INTO t(v) VALUES ('late')")
        assert.are.equal(11, #seen)
        support.raises("ProgrammingError", conn.on_change, conn, fn, 0)
        support.raises("ProgrammingError", conn.on_change, conn, "fn")
        conn:on_change(function() error("hook fails") end)
        assert.are.equal(1, conn:execute("INSERT INTO t(v) VALUES ('still')").rowcount)
        conn:close()
    end)

    it("reports what SQLite's update hook reports, and not the rest (README)", function()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v UNIQUE)")
        conn:execute("CREATE TABLE w(k PRIMARY KEY) WITHOUT ROWID")
        local seen, fn = recorder()
        conn:on_change(fn)
        conn:execute("INSERT INTO t(v) VALUES (1), (2)")
        conn:execute("REPLACE INTO t(v) VALUES (1)") -- its delete of row 1 is not reported
        conn:execute("INSERT INTO w VALUES (1)") -- WITHOUT ROWID: nothing
        conn:execute("DELETE FROM t") -- the truncate optimization: nothing
        conn:execute("INSERT INTO t(v) VALUES (1)")
        conn:execute("DELETE FROM t WHERE true") -- each row
        assert.are.same({ "insert main t 1", "insert main t 2", "insert main t 3",
                          "insert main t 4", "delete main t 4" }, seen)
        conn:close()
    end)

    it("works under luv", function()
        local ok, uv = pcall(require, "luv")
        if not ok then
            return pending("luv is not installed")
        end
        local conn = open()
        local seen, fn = recorder()
        conn:on_change(fn)
        local before = sqlite.set_host(nil)
        require "pasyn_sqlite.luv"
        local co = coroutine.create(function()
            conn:execute("INSERT INTO t VALUES (7, 'luv')")
        end)
        assert(coroutine.resume(co))
        uv.run()
        sqlite.set_host(before)
        assert.are.same({ "insert main t 7" }, seen)
        conn:close()
    end)
end)
