-- Routing: what SQLite reports about a prepared statement decides where it runs. Reads run on
-- reader threads; writes, DDL, PRAGMAs, transaction control, ATTACH and TEMP objects on the
-- writer. Measured with conn:stats() deltas on a connection nobody else uses.
local sqlite = require "pasyn_sqlite"
local support = require "support"

-- The statements counted here are the readers' own: the pools run no read on the caller's
-- thread (inline_reads = false), which the readers would not count.
local function readers_only(options)
    options = options or {}
    options.inline_reads = false
    return options
end

local pack, unpack = support.pack, support.unpack
local tmpdb = support.tmpdb

local function executed(stats)
    return stats.writer.executed, support.readers_sum(stats, "executed")
end

-- Runs fn (which talks to conn) and returns how many statements ran on the writer and on the
-- readers meanwhile, as { writer = n, readers = m }.
local function ran_on(conn, fn)
    local w0, r0 = executed(conn:stats())
    fn()
    local w1, r1 = executed(conn:stats())
    return { writer = w1 - w0, readers = r1 - r0 }
end

local ON_WRITER = { writer = 1, readers = 0 }
local ON_READER = { writer = 0, readers = 1 }

-- Asserts that executing sql (with the extra arguments) runs once, where `want` says, the first
-- time and the second time; returns the second cursor's rows.
local function assert_routes(conn, want, sql, ...)
    local args = pack(...)
    local rows
    for round = 1, 2 do
        assert.same(want, ran_on(conn, function()
            rows = conn:execute(sql, unpack(args, 1, args.n)):fetchall()
        end), sql .. " (execution " .. round .. ")")
    end
    return rows
end

describe("routing", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = tmpdb()
        conn = sqlite.connect(path, readers_only())
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at INTEGER)")
        conn:execute("INSERT INTO t (v, updated_at) VALUES ('a', 0), ('b', 0)")
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    it("stats() has a writer and one entry per reader (3 by default)", function()
        local s = conn:stats()
        assert.equal(3, #s.readers)
        assert.equal("number", type(s.writer.executed))
        for i = 1, 3 do
            assert.equal("number", type(s.readers[i].executed))
            assert.equal(false, s.readers[i].streaming)
        end
    end)

    it("stats() counts nothing by itself", function()
        assert.same({ writer = 0, readers = 0 }, ran_on(conn, function()
            conn:stats()
            conn:stats()
        end))
    end)

    describe("reads run on a reader", function()
        it("SELECT", function()
            local rows = assert_routes(conn, ON_READER, "SELECT id, v FROM t ORDER BY id")
            assert.same({ { 1, "a", n = 2 }, { 2, "b", n = 2 } }, rows)
        end)

        it("SELECT with parameters", function()
            local rows = assert_routes(conn, ON_READER, "SELECT v FROM t WHERE id = ?", 2)
            assert.same({ { "b", n = 1 } }, rows)
        end)

        it("WITH ... SELECT", function()
            local rows = assert_routes(conn, ON_READER,
                                       "WITH x AS (SELECT count(*) AS n FROM t) SELECT n FROM x")
            assert.same({ { 2, n = 1 } }, rows)
        end)

        it("SELECT of a string literal that reads 'INSERT INTO t VALUES (1)'", function()
            local rows = assert_routes(conn, ON_READER, "SELECT 'INSERT INTO t VALUES (1)'")
            assert.same({ { "INSERT INTO t VALUES (1)", n = 1 } }, rows)
            assert.equal(2, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("SELECT of a column named updated_at", function()
            local rows = assert_routes(conn, ON_READER, "SELECT updated_at FROM t WHERE id = 1")
            assert.same({ { 0, n = 1 } }, rows)
        end)

        it("a SELECT that starts with a comment", function()
            assert_routes(conn, ON_READER, "/* INSERT */ SELECT 1")
            assert_routes(conn, ON_READER, "-- UPDATE t\nSELECT 2")
        end)
    end)

    describe("everything else runs on the writer", function()
        it("INSERT", function()
            assert_routes(conn, ON_WRITER, "INSERT INTO t (v) VALUES ('c')")
            assert.equal(4, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("INSERT that starts with a comment", function()
            assert_routes(conn, ON_WRITER, "/* comment */ INSERT INTO t (v) VALUES ('c')")
            assert_routes(conn, ON_WRITER, "-- SELECT\nINSERT INTO t (v) VALUES ('d')")
            assert.equal(6, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("WITH x AS (SELECT 1) INSERT INTO ...", function()
            assert_routes(conn, ON_WRITER, "WITH x AS (SELECT 'w' AS v) INSERT INTO t (v) SELECT v FROM x")
            assert.equal(2, conn:execute("SELECT count(*) FROM t WHERE v = 'w'"):fetchone()[1])
        end)

        it("INSERT ... RETURNING, which returns its row", function()
            local rows = assert_routes(conn, ON_WRITER, "INSERT INTO t (v) VALUES ('r') RETURNING id, v")
            assert.same({ { 4, "r", n = 2 } }, rows)
        end)

        it("UPDATE t SET updated_at = ...", function()
            assert_routes(conn, ON_WRITER, "UPDATE t SET updated_at = ? WHERE id = 1", 99)
            assert.equal(99, conn:execute("SELECT updated_at FROM t WHERE id = 1"):fetchone()[1])
        end)

        it("DELETE", function()
            assert_routes(conn, ON_WRITER, "DELETE FROM t WHERE id = ?", 1)
            assert.equal(1, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("CREATE TABLE and DROP TABLE", function()
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("CREATE TABLE u (x)")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("DROP TABLE u")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("CREATE TABLE u (x)")
            end))
        end)

        it("CREATE INDEX", function()
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("CREATE INDEX t_v ON t (v)")
            end))
        end)

        it("PRAGMA user_version (reading it)", function()
            local rows = assert_routes(conn, ON_WRITER, "PRAGMA user_version")
            assert.same({ { 0, n = 1 } }, rows)
        end)

        it("PRAGMA user_version = n, which PRAGMA and pragma_user_version then read", function()
            assert_routes(conn, ON_WRITER, "PRAGMA user_version = 5")
            assert.equal(5, conn:execute("PRAGMA user_version"):fetchone()[1])
            local rows = assert_routes(conn, ON_WRITER, "SELECT user_version FROM pragma_user_version")
            assert.same({ { 5, n = 1 } }, rows)
        end)

        -- A PRAGMA's table-valued function answers with the running connection's settings and
        -- schema, TEMP objects included: like the PRAGMA itself it runs on the writer.
        it("pragma_* table-valued functions, which see the writer's settings and TEMP tables",
           function()
            conn:execute("CREATE TEMP TABLE scratch (a, b)")
            local rows = assert_routes(conn, ON_WRITER,
                                       "SELECT name FROM pragma_table_info('scratch') ORDER BY cid")
            assert.same({ { "a", n = 1 }, { "b", n = 1 } }, rows)
            conn:execute("PRAGMA cache_size = -777")
            assert.same({ { -777, n = 1 } },
                        assert_routes(conn, ON_WRITER, "SELECT * FROM pragma_cache_size"))
        end)

        it("PRAGMA table_info(t)", function()
            local rows = assert_routes(conn, ON_WRITER, "PRAGMA table_info(t)")
            assert.equal(3, #rows)
            assert.equal("updated_at", rows[3][2])
        end)

        it("BEGIN and COMMIT", function()
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("BEGIN")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("COMMIT")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("BEGIN IMMEDIATE")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("ROLLBACK")
            end))
            assert.is_false(conn.in_transaction)
        end)

        it("SAVEPOINT and RELEASE", function()
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("SAVEPOINT sp")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("RELEASE sp")
            end))
        end)

        it("ATTACH and DETACH", function()
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("ATTACH ':memory:' AS aux")
            end))
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("DETACH aux")
            end))
        end)

        it("CREATE TEMP TABLE, and SELECT from the temp table", function()
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("CREATE TEMP TABLE tmp (x)")
            end))
            assert_routes(conn, ON_WRITER, "INSERT INTO tmp VALUES (11)")
            local rows = assert_routes(conn, ON_WRITER, "SELECT x FROM tmp")
            assert.same({ { 11, n = 1 }, { 11, n = 1 } }, rows)
        end)

        it("executescript", function()
            local d = ran_on(conn, function()
                conn:executescript("INSERT INTO t (v) VALUES ('s1'); SELECT 1;")
            end)
            assert.equal(0, d.readers)
            assert.is_true(d.writer >= 1)
            assert.equal(1, conn:execute("SELECT count(*) FROM t WHERE v = 's1'"):fetchone()[1])
        end)

        it("executemany", function()
            local d = ran_on(conn, function()
                conn:executemany("INSERT INTO t (v) VALUES (?)", { { "m1" }, { "m2" } })
            end)
            assert.equal(0, d.readers)
            assert.is_true(d.writer >= 1)
        end)
    end)

    it("a write and a read of the same table keep their routes when interleaved", function()
        for i = 1, 5 do
            assert.same(ON_WRITER, ran_on(conn, function()
                conn:execute("INSERT INTO t (v) VALUES (?)", "i" .. i)
            end))
            assert.same(ON_READER, ran_on(conn, function()
                assert.equal(2 + i, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            end))
        end
    end)

    -- New SQL text is classified on the submitting thread (the host's loop), which never loads
    -- a schema from disk: once another connection changed the schema, the first statement that
    -- needs the new one runs on the writer, which then loads it for the classifier.
    it("after another connection's schema change, the first new read runs on the writer, " ..
       "the next on a reader", function()
        local other = sqlite.connect(path)
        other:execute("CREATE TABLE u (x)")
        other:execute("INSERT INTO u VALUES (7)")
        other:close()
        assert.same(ON_WRITER, ran_on(conn, function()
            assert.equal(7, conn:execute("SELECT x FROM u"):fetchone()[1])
        end))
        assert.same(ON_READER, ran_on(conn, function()
            assert.equal(1, conn:execute("SELECT count(*) FROM u"):fetchone()[1])
        end))
        -- and after the pool's own schema change, no statement waits for the writer to learn
        conn:execute("CREATE TABLE v (y)")
        assert_routes(conn, ON_READER, "SELECT count(*) FROM v")
    end)

    it("a read the pool cannot classify yet does not wait for another coroutine's transaction",
       function()
        local other = sqlite.connect(path)
        other:execute("CREATE TABLE u (x)") -- the classifier has not seen it: it cannot tell
        other:execute("INSERT INTO u VALUES (7)")
        other:close()
        local order = {}
        sqlite.run(function()
            sqlite.spawn(function()
                conn:transaction(function()
                    conn:execute("INSERT INTO t (v) VALUES ('held')")
                    sqlite.sleep(0.3)
                end)
                order[#order + 1] = "commit"
            end)
            sqlite.sleep(0.05) -- the transaction holds the writer
            assert.equal(7, conn:execute("SELECT x FROM u"):fetchone()[1])
            order[#order + 1] = "read"
        end)
        assert.same({ "read", "commit" }, order)
    end)

    it("with readers = 0 there are no readers and everything runs on the writer", function()
        conn:close()
        conn = sqlite.connect(path, { readers = 0 })
        assert.equal(0, #conn:stats().readers)
        assert_routes(conn, ON_WRITER, "SELECT count(*) FROM t")
        assert_routes(conn, ON_WRITER, "INSERT INTO t (v) VALUES ('z')")
        local rows = assert_routes(conn, ON_WRITER, "SELECT v FROM t WHERE v = 'z'")
        assert.same({ { "z", n = 1 }, { "z", n = 1 } }, rows)
    end)

    -- Outside WAL the readers and the writer lock each other out: reads on readers would meet
    -- "database is locked" from the pool's own writer. One connection never does.
    describe("in a rollback-journal database", function()
        it("every statement runs on the writer, and busy_timeout = 0 meets no lock of the pool's",
           function()
            local file, remove = tmpdb()
            local db = sqlite.connect(file, { journal_mode = "delete", busy_timeout = 0 })
            db:execute("CREATE TABLE k (id INTEGER PRIMARY KEY, v INTEGER)")
            assert.same(ON_WRITER, ran_on(db, function()
                db:execute("SELECT count(*) FROM k"):fetchall()
            end))
            local out = {}
            sqlite.run(function()
                for c = 1, 20 do
                    sqlite.spawn(function()
                        for i = 1, 20 do
                            db:execute("INSERT INTO k (v) VALUES (?)", c * 100 + i)
                            local n = db:execute("SELECT count(*) FROM k"):fetchone()[1]
                            out[#out + 1] = n -- after the call: other coroutines ran meanwhile
                        end
                    end)
                end
            end)
            assert.equal(400, #out)
            assert.equal(400, support.scalar(db, "SELECT count(*) FROM k"))
            assert.equal(0, support.readers_sum(db:stats(), "executed"))
            db:close()
            remove()
        end)

        it("leaving WAL through execute is refused at once with readers open, and works "
           .. "without readers", function()
            local file, remove = tmpdb()
            local db = sqlite.connect(file, { busy_timeout = 0 })
            db:execute("CREATE TABLE k (v)")
            for _, call in ipairs({ { db.execute, "PRAGMA journal_mode = 'delete'" },
                                    { db.executescript, "PRAGMA main.journal_mode = TRUNCATE;" } }) do
                local err = support.raises("ProgrammingError", call[1], db, call[2])
                assert.truthy(err.message:find("journal_mode option", 1, true), err.message)
            end
            assert.equal("wal", support.scalar(db, "PRAGMA journal_mode"))
            assert.equal("wal", support.scalar(db, "PRAGMA journal_mode = WAL"))
            db:execute("INSERT INTO k VALUES (1)")
            db:close()
            db = sqlite.connect(file, { readers = 0, busy_timeout = 0 })
            assert.equal("delete", support.scalar(db, "PRAGMA journal_mode = delete"))
            db:execute("INSERT INTO k VALUES (2)")
            assert.equal(2, support.scalar(db, "SELECT count(*) FROM k"))
            db:close()
            remove()
        end)

        it("locking_mode = EXCLUSIVE through execute is refused at once with readers open; from "
           .. "the pragmas option every statement runs on the writer", function()
            local file, remove = tmpdb()
            local db = sqlite.connect(file, { busy_timeout = 0 })
            local err = support.raises("ProgrammingError", db.execute, db,
                                       "PRAGMA locking_mode = EXCLUSIVE")
            assert.truthy(err.message:find("EXCLUSIVE", 1, true), err.message)
            db:execute("CREATE TABLE k (v)")
            db:execute("INSERT INTO k VALUES (1)")
            db:close()
            db = sqlite.connect(file, { busy_timeout = 0, pragmas = { locking_mode = "EXCLUSIVE" } })
            db:execute("INSERT INTO k VALUES (2)")
            assert.same(ON_WRITER, ran_on(db, function()
                assert.equal(2, support.scalar(db, "SELECT count(*) FROM k"))
            end))
            db:close()
            remove()
        end)

        it("a readonly pool still reads on its readers", function()
            local file, remove = tmpdb()
            local w = sqlite.connect(file, { journal_mode = "delete" })
            w:execute("CREATE TABLE k (v)")
            w:close()
            local db = sqlite.connect(file, { readonly = true })
            assert.same(ON_READER, ran_on(db, function()
                db:execute("SELECT count(*) FROM k"):fetchall()
            end))
            db:close()
            remove()
        end)
    end)

    describe("inside a transaction", function()
        it("the owner's SELECT runs on the writer and sees its uncommitted row; another "
           .. "coroutine's SELECT runs on a reader and does not", function()
            local owner_rows, owner_route, other_rows, other_route
            sqlite.run(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('uncommitted')")
                assert.is_true(conn.in_transaction)
                owner_route = ran_on(conn, function()
                    owner_rows = conn:execute("SELECT v FROM t ORDER BY id"):fetchall()
                end)
                other_route = ran_on(conn, function()
                    other_rows = sqlite.spawn(function()
                        assert.is_false(conn.in_transaction)
                        return conn:execute("SELECT v FROM t ORDER BY id"):fetchall()
                    end):join()
                end)
                conn:commit()
                assert.is_false(conn.in_transaction)
            end)
            assert.same(ON_WRITER, owner_route)
            assert.same({ { "a", n = 1 }, { "b", n = 1 }, { "uncommitted", n = 1 } }, owner_rows)
            assert.same(ON_READER, other_route)
            assert.same({ { "a", n = 1 }, { "b", n = 1 } }, other_rows)
            -- committed now: a reader sees it
            assert.same(ON_READER, ran_on(conn, function()
                assert.equal(3, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            end))
        end)

        it("the main thread's transaction routes its SELECTs to the writer until COMMIT", function()
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t (v) VALUES ('mine')")
            assert.same(ON_WRITER, ran_on(conn, function()
                assert.equal(3, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            end))
            conn:execute("COMMIT")
            assert.same(ON_READER, ran_on(conn, function()
                assert.equal(3, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            end))
        end)

        it("after ROLLBACK the owner's SELECTs go back to the readers", function()
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t (v) VALUES ('gone')")
            conn:rollback()
            assert.same(ON_READER, ran_on(conn, function()
                assert.equal(2, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            end))
        end)
    end)
end)
