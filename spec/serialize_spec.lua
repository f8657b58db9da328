-- conn:serialize([name]) and sqlite.deserialize(bytes [, options]): the database as a string,
-- and a new ":memory:" pool (in WAL, like any) holding such bytes; bad bytes fail with
-- DatabaseError and leave nothing behind.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local function filled(n)
    local conn = sqlite.connect(":memory:")
    conn:execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    local i = 0
    conn:executemany("INSERT INTO t(v) VALUES (?)", function()
        i = i + 1
        return i <= n and { ("row %d "):format(i) .. ("x"):rep(200) } or nil
    end)
    return conn
end

describe("conn:serialize and sqlite.deserialize", function()
    it("round-trip a database into a new memory pool in WAL", function()
        local conn = filled(2000)
        local bytes = conn:serialize()
        assert.are.equal("SQLite format 3\0", bytes:sub(1, 16))
        assert.are.equal(0, #bytes % 4096)
        local copy = sqlite.deserialize(bytes, { readers = 2 })
        assert.are.equal("wal", support.scalar(copy, "PRAGMA journal_mode"))
        assert.are.equal("ok", support.scalar(copy, "PRAGMA integrity_check"))
        assert.are.equal(2000, support.scalar(copy, "SELECT count(*) FROM t"))
        assert.are.same(support.column(conn, "SELECT v FROM t ORDER BY id"),
                        support.column(copy, "SELECT v FROM t ORDER BY id"))
        -- the copy is a pool of its own: reads on its readers, writes on its writer
        copy:execute("INSERT INTO t(v) VALUES ('new')")
        assert.are.same({ [2001] = 16 }, support.counts_everywhere(copy, "SELECT count(*) FROM t", 16))
        assert.are.equal(2000, support.scalar(conn, "SELECT count(*) FROM t"))
        copy:close()
        conn:close()
    end)

    it("gives an image in rollback-journal format, which sqlite3_deserialize can open", function()
        -- The pool's file is in WAL (file format bytes 18 and 19 are 2); SQLite's in-memory
        -- database (sqlite3_deserialize, Python's Connection.deserialize) cannot open a WAL
        -- image ("unable to open database file"). The copy says 1, as after journal_mode=DELETE.
        local conn = filled(10)
        assert.are.equal("wal", support.scalar(conn, "PRAGMA journal_mode"))
        local bytes = conn:serialize()
        assert.are.same({ 1, 1 }, { bytes:byte(19, 20) })
        assert.are.equal("wal", support.scalar(conn, "PRAGMA journal_mode")) -- the pool's own
        local copy = sqlite.deserialize(bytes)
        assert.are.equal("wal", support.scalar(copy, "PRAGMA journal_mode"))
        assert.are.equal(10, support.scalar(copy, "SELECT count(*) FROM t"))
        assert.are.same({ 1, 1 }, { copy:serialize():byte(19, 20) })
        copy:close()
        conn:close()
    end)

    it("serializes what the caller's own transaction holds, and attached databases", function()
        local conn = filled(3)
        conn:execute("BEGIN")
        conn:execute("DELETE FROM t WHERE id = 1")
        local copy = sqlite.deserialize(conn:serialize())
        conn:execute("ROLLBACK")
        assert.are.equal(2, support.scalar(copy, "SELECT count(*) FROM t"))
        copy:close()
        conn:execute("ATTACH ':memory:' AS aux")
        conn:execute("CREATE TABLE aux.u(x)")
        conn:execute("INSERT INTO aux.u VALUES (42)")
        local aux = sqlite.deserialize(conn:serialize("aux"))
        assert.are.equal(42, support.scalar(aux, "SELECT x FROM u"))
        aux:close()
        local err = support.raises("OperationalError", conn.serialize, conn, "nowhere")
        assert.matches("unknown database nowhere", err.message)
        support.raises("ProgrammingError", conn.serialize, conn, 5)
        conn:close()
        support.raises("ConnectionClosedError", conn.serialize, conn)
    end)

    it("refuses bytes that are not a database, leaving nothing behind", function()
        local before = support.holdings()
        for _ = 1, 3 do
            local err = support.raises("DatabaseError", sqlite.deserialize, ("garbage"):rep(1000))
            assert.matches("file is not a database", err.message)
        end
        support.raises("ProgrammingError", sqlite.deserialize, 42)
        support.raises("ProgrammingError", sqlite.deserialize, "", { nope = true })
        support.assert_nothing_left(before)
        -- no bytes: an empty database
        local empty = sqlite.deserialize("")
        assert.are.equal(0, support.scalar(empty, "SELECT count(*) FROM sqlite_schema"))
        empty:close()
    end)

    it("works from coroutines of the scheduler while others write, and under luv", function()
        local conn = filled(100)
        local sizes = {}
        sqlite.run(function()
            local writer = sqlite.spawn(function()
                for i = 1, 50 do
                    conn:execute("INSERT INTO t(v) VALUES (?)", "w" .. i)
                end
            end)
            for k = 1, 5 do
                local copy = sqlite.deserialize(conn:serialize())
                local n = support.scalar(copy, "SELECT count(*) FROM t")
                assert.is_true(n >= 100 and n <= 150)
                assert.are.equal("ok", support.scalar(copy, "PRAGMA integrity_check"))
                sizes[k] = n
                copy:close()
            end
            writer:join()
        end)
        assert.are.equal(5, #sizes)
        local ok, uv = pcall(require, "luv")
        if ok then
            local before = sqlite.set_host(nil)
            require "pasyn_sqlite.luv"
            local got
            local co = coroutine.create(function()
                got = conn:serialize()
            end)
            assert(coroutine.resume(co))
            uv.run()
            sqlite.set_host(before)
            assert.are.equal(conn:serialize(), got)
        end
        conn:close()
    end)
end)
