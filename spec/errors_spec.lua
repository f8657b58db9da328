-- Errors: every failure raises an error object with kind/code/extended_code/message/sql, kinds
-- follow the documented hierarchy, SQLite's codes map to kinds as Python's sqlite3 maps them,
-- and a connection keeps working after any error.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local tmpdb = support.tmpdb

-- Calls f(...) expecting it to raise; returns what it raised.
local function catch(f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok, "expected an error, the call succeeded")
    return err
end

-- The connection still runs a write and a read after an error.
local function assert_works(conn)
    conn:execute("CREATE TABLE IF NOT EXISTS scratch (x INTEGER)")
    local before = conn:execute("SELECT count(*) FROM scratch"):fetchone()[1]
    conn:execute("INSERT INTO scratch VALUES (?)", 7)
    assert.equal(before + 1, conn:execute("SELECT count(*) FROM scratch"):fetchone()[1])
    assert.equal(42, conn:execute("SELECT 42"):fetchone()[1])
end

local ALL_KINDS = {
    "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError", "IntegrityError",
    "InternalError", "ProgrammingError", "NotSupportedError", "PoolError", "PoolClosedError",
    "ConnectionClosedError",
}

-- Asserts err:is() is true exactly for the kinds in `yes` and false for every other kind.
local function assert_is_exactly(err, yes)
    local set = {}
    for _, k in ipairs(yes) do
        set[k] = true
    end
    for _, k in ipairs(ALL_KINDS) do
        assert.equal(set[k] == true, err:is(k), "err:is(" .. k .. ") for a " .. tostring(err.kind))
    end
end

describe("errors", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = tmpdb()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
        conn:execute("INSERT INTO t VALUES (1, 'one')")
    end)
    after_each(function()
        if conn then
            conn:close()
        end
        cleanup()
    end)

    describe("error objects", function()
        it("are tables with kind, code, extended_code, message and sql", function()
            local err = catch(conn.execute, conn, "SELEC 1")
            assert.equal("table", type(err))
            assert.equal("OperationalError", err.kind)
            assert.equal(1, err.code)
            assert.equal(1, err.extended_code)
            assert.equal('near "SELEC": syntax error', err.message)
            assert.equal("SELEC 1", err.sql)
        end)

        it("tostring gives '<kind>: <message>'", function()
            local err = catch(conn.execute, conn, "SELEC 1")
            assert.equal('OperationalError: near "SELEC": syntax error', tostring(err))
            local dup = catch(conn.execute, conn, "INSERT INTO t VALUES (2, 'one')")
            assert.equal("IntegrityError: UNIQUE constraint failed: t.name", tostring(dup))
        end)

        it("err:is is true for an IntegrityError's kind and every ancestor, false for the rest",
           function()
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (1, 'dup id')")
            assert_is_exactly(err, { "IntegrityError", "DatabaseError", "Error" })
        end)

        it("err:is is true for an OperationalError's kind and every ancestor, false for the rest",
           function()
            local err = catch(conn.execute, conn, "SELECT * FROM nope")
            assert_is_exactly(err, { "OperationalError", "DatabaseError", "Error" })
        end)

        it("err:is is true for a ProgrammingError's kind and every ancestor, false for the rest",
           function()
            local err = catch(conn.execute, conn, "SELECT ?", {}, 2) -- a table cannot bind
            assert_is_exactly(err, { "ProgrammingError", "DatabaseError", "Error" })
        end)

        it("err:is is true for ConnectionClosedError, PoolError and Error only", function()
            conn:close()
            local err = catch(conn.execute, conn, "SELECT 1")
            assert_is_exactly(err, { "ConnectionClosedError", "PoolError", "Error" })
            conn = nil
        end)

        it("err:is accepts the kind constants the module exports", function()
            for _, k in ipairs(ALL_KINDS) do
                assert.equal(k, sqlite[k])
            end
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (1, 'dup id')")
            assert.is_true(err:is(sqlite.IntegrityError))
            assert.is_true(err:is(sqlite.DatabaseError))
            assert.is_true(err:is(sqlite.Error))
            assert.is_false(err:is(sqlite.OperationalError))
            assert.is_false(err:is(sqlite.PoolError))
        end)

        it("err:is is false for a name that is no kind", function()
            local err = catch(conn.execute, conn, "SELEC 1")
            assert.is_false(err:is("NoSuchError"))
            assert.is_false(err:is("operationalerror"))
        end)

        it("sqlite.is_error is true for error objects only", function()
            local err = catch(conn.execute, conn, "SELEC 1")
            assert.is_true(sqlite.is_error(err))
            conn:close()
            assert.is_true(sqlite.is_error(catch(conn.execute, conn, "SELECT 1")))
            conn = nil
            assert.is_false(sqlite.is_error("OperationalError: near \"SELEC\": syntax error"))
            assert.is_false(sqlite.is_error({}))
            assert.is_false(sqlite.is_error({ kind = "OperationalError", message = "fake" }))
            assert.is_false(sqlite.is_error(nil))
            assert.is_false(sqlite.is_error(1))
            assert.is_false(sqlite.is_error(sqlite.null))
        end)
    end)

    describe("SQLite result codes map to kinds", function()
        it("a UNIQUE violation is an IntegrityError, code 19, extended 2067", function()
            local err = catch(conn.execute, conn, "INSERT INTO t (name) VALUES ('one')")
            assert.equal("IntegrityError", err.kind)
            assert.equal(19, err.code)
            assert.equal(2067, err.extended_code)
            assert.equal("UNIQUE constraint failed: t.name", err.message)
            assert.equal("INSERT INTO t (name) VALUES ('one')", err.sql)
            assert_works(conn)
        end)

        it("a PRIMARY KEY violation is an IntegrityError, code 19, extended 1555", function()
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (1, 'uno')")
            assert.equal("IntegrityError", err.kind)
            assert.equal(19, err.code)
            assert.equal(1555, err.extended_code)
            assert_works(conn)
        end)

        it("a NOT NULL violation is an IntegrityError, code 19, extended 1299", function()
            local err = catch(conn.execute, conn, "INSERT INTO t (id, name) VALUES (5, ?)", sqlite.null)
            assert.equal("IntegrityError", err.kind)
            assert.equal(19, err.code)
            assert.equal(1299, err.extended_code)
            assert.equal("NOT NULL constraint failed: t.name", err.message)
            assert_works(conn)
        end)

        it("a syntax error is an OperationalError, code 1, whose sql is the statement", function()
            local sql = "SELECT FROM WHERE t"
            local err = catch(conn.execute, conn, sql)
            assert.equal("OperationalError", err.kind)
            assert.equal(1, err.code)
            assert.equal(sql, err.sql)
            assert.truthy(err.message:find("syntax error", 1, true))
            assert_works(conn)
        end)

        it("a syntax error in a write is an OperationalError too", function()
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (3, 'x'")
            assert.equal("OperationalError", err.kind)
            assert.equal(1, err.code)
            assert.equal("INSERT INTO t VALUES (3, 'x'", err.sql)
            assert_works(conn)
        end)

        it("no such table is an OperationalError, code 1", function()
            local err = catch(conn.execute, conn, "SELECT * FROM nope")
            assert.equal("OperationalError", err.kind)
            assert.equal(1, err.code)
            assert.equal("no such table: nope", err.message)
            assert.equal("SELECT * FROM nope", err.sql)
            local err2 = catch(conn.execute, conn, "INSERT INTO nope VALUES (1)")
            assert.equal("OperationalError", err2.kind)
            assert.equal("no such table: nope", err2.message)
            assert_works(conn)
        end)

        it("no such column is an OperationalError, code 1", function()
            local err = catch(conn.execute, conn, "SELECT nocol FROM t")
            assert.equal("OperationalError", err.kind)
            assert.equal(1, err.code)
            assert.equal("no such column: nocol", err.message)
            assert_works(conn)
        end)

        it("a write on a readonly pool is an OperationalError, code 8, and changes nothing", function()
            conn:close()
            conn = sqlite.connect(path, { readonly = true })
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (9, 'nine')")
            assert.equal("OperationalError", err.kind)
            assert.equal(8, err.code)
            assert.equal("INSERT INTO t VALUES (9, 'nine')", err.sql)
            local err2 = catch(conn.execute, conn, "CREATE TABLE u (x)")
            assert.equal("OperationalError", err2.kind)
            assert.equal(8, err2.code)
            -- the readonly pool keeps reading
            assert.same({ { 1, "one", n = 2 } }, conn:execute("SELECT id, name FROM t"):fetchall())
            assert.equal(1, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("a foreign key violation (foreign_keys = true) is an IntegrityError, extended 787", function()
            conn:close()
            conn = sqlite.connect(path, { foreign_keys = true })
            conn:execute("CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES t(id))")
            conn:execute("INSERT INTO child VALUES (1, 1)")
            local err = catch(conn.execute, conn, "INSERT INTO child VALUES (2, 999)")
            assert.equal("IntegrityError", err.kind)
            assert.equal(19, err.code)
            assert.equal(787, err.extended_code)
            assert.equal("FOREIGN KEY constraint failed", err.message)
            assert.equal(1, conn:execute("SELECT count(*) FROM child"):fetchone()[1])
            assert_works(conn)
        end)

        it("without foreign_keys the same insert succeeds", function()
            conn:execute("CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES t(id))")
            conn:execute("INSERT INTO child VALUES (2, 999)")
            assert.equal(1, conn:execute("SELECT count(*) FROM child"):fetchone()[1])
        end)

        it("text into an INTEGER PRIMARY KEY is an IntegrityError, code 20 (datatype mismatch)",
           function()
            local err = catch(conn.execute, conn, "INSERT INTO t (id, name) VALUES ('abc', 'x')")
            assert.equal("IntegrityError", err.kind)
            assert.equal(20, err.code)
            assert.equal(20, err.extended_code)
            assert.equal("datatype mismatch", err.message)
            assert_works(conn)
        end)

        it("a CHECK violation is an IntegrityError, code 19, extended 275", function()
            conn:execute("CREATE TABLE pos (x INTEGER CHECK (x > 0))")
            local err = catch(conn.execute, conn, "INSERT INTO pos VALUES (-1)")
            assert.equal("IntegrityError", err.kind)
            assert.equal(19, err.code)
            assert.equal(275, err.extended_code)
            assert_works(conn)
        end)

        it("RAISE(ABORT) in a trigger is an IntegrityError carrying the trigger's message", function()
            conn:execute([[CREATE TRIGGER no_bob BEFORE INSERT ON t WHEN NEW.name = 'bob'
                           BEGIN SELECT RAISE(ABORT, 'no bobs'); END]])
            local err = catch(conn.execute, conn, "INSERT INTO t (name) VALUES ('bob')")
            assert.equal("IntegrityError", err.kind)
            assert.equal(19, err.code)
            assert.equal("no bobs", err.message)
            assert.equal(0, conn:execute("SELECT count(*) FROM t WHERE name = 'bob'"):fetchone()[1])
            assert_works(conn)
        end)
    end)

    describe("ProgrammingError", function()
        it("is raised for too many parameters, naming the counts", function()
            local err = catch(conn.execute, conn, "SELECT ?, ?", { 1, 2, 3 })
            assert.equal("ProgrammingError", err.kind)
            assert.truthy(err.message:find("2", 1, true), err.message)
            assert.truthy(err.message:find("3", 1, true), err.message)
            assert.equal("SELECT ?, ?", err.sql)
            assert_works(conn)
        end)

        it("is raised for too few parameters", function()
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (?, ?)", { 5 })
            assert.equal("ProgrammingError", err.kind)
            assert.truthy(err.message:find("2", 1, true), err.message)
            assert.truthy(err.message:find("1", 1, true), err.message)
            assert.equal(1, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            assert_works(conn)
        end)

        it("is raised for a missing named parameter, naming it", function()
            local err = catch(conn.execute, conn, "SELECT :a, :b", { a = 1 })
            assert.equal("ProgrammingError", err.kind)
            assert.truthy(err.message:find(":b", 1, true), err.message)
            assert_works(conn)
        end)

        it("is raised for a table parameter, naming its position", function()
            local err = catch(conn.execute, conn, "SELECT ?, ?", 1, {})
            assert.equal("ProgrammingError", err.kind)
            assert.truthy(err.message:find("parameter 2", 1, true), err.message)
            assert.truthy(err.message:find("table", 1, true), err.message)
            assert_works(conn)
        end)

        it("is raised for a function parameter, naming it", function()
            local err = catch(conn.execute, conn, "SELECT :f", { f = print })
            assert.equal("ProgrammingError", err.kind)
            assert.truthy(err.message:find(":f", 1, true), err.message)
            assert.truthy(err.message:find("function", 1, true), err.message)
            assert_works(conn)
        end)

        it("is raised for several statements in one execute, and nothing of them runs", function()
            local err = catch(conn.execute, conn,
                              "INSERT INTO t VALUES (2, 'two'); INSERT INTO t VALUES (3, 'three')")
            assert.equal("ProgrammingError", err.kind)
            assert.equal(1, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            assert_works(conn)
        end)

        it("is raised for a bad parameter in a write, which changes nothing", function()
            local err = catch(conn.execute, conn, "INSERT INTO t VALUES (?, ?)", 2, coroutine.create(print))
            assert.equal("ProgrammingError", err.kind)
            assert.equal(1, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            assert_works(conn)
        end)
    end)

    describe("closed connections", function()
        it("every method of a closed connection raises ConnectionClosedError", function()
            local cur = conn:execute("SELECT 1")
            conn:close()
            assert.is_true(conn.closed)
            for _, call in ipairs({
                function() return conn:execute("SELECT 1") end,
                function() return conn:executemany("INSERT INTO t (name) VALUES (?)", { { "a" } }) end,
                function() return conn:executescript("SELECT 1;") end,
                function() return conn:cursor() end,
                function() return conn:commit() end,
                function() return conn:rollback() end,
                function() return conn:stats() end,
                function() return cur:fetchone() end,
            }) do
                local err = catch(call)
                assert.is_true(sqlite.is_error(err))
                assert.equal("ConnectionClosedError", err.kind)
                assert.is_true(err:is("PoolError"))
                assert.is_true(err:is("Error"))
                assert.is_false(err:is("DatabaseError"))
            end
            conn = nil
        end)

        it("close() is idempotent and raises nothing", function()
            conn:close()
            conn:close()
            assert.is_true(conn.closed)
            conn = nil
        end)

        it("a statement submitted while another coroutine's close() is under way raises "
           .. "PoolClosedError; earlier work completes", function()
            local slow_rowcount, late_err, after_err
            sqlite.run(function()
                -- a slow write submitted before close: close waits for it
                local slow = sqlite.spawn(function()
                    slow_rowcount = conn:execute([[INSERT INTO t (name)
                        WITH RECURSIVE c(x) AS
                            (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
                        SELECT 'counted ' || count(*) FROM c]]).rowcount
                end)
                local closer = sqlite.spawn(function()
                    conn:close()
                end)
                local late = sqlite.spawn(function()
                    local ok, err = pcall(conn.execute, conn, "INSERT INTO t (name) VALUES ('late')")
                    assert.is_false(ok)
                    late_err = err
                end)
                late:join()
                closer:join()
                slow:join()
                local ok, err = pcall(conn.execute, conn, "SELECT 1")
                assert.is_false(ok)
                after_err = err
            end)
            assert.equal(1, slow_rowcount)
            assert.is_true(sqlite.is_error(late_err))
            assert.equal("PoolClosedError", late_err.kind)
            assert.is_true(late_err:is("PoolError"))
            assert.is_true(late_err:is("Error"))
            assert.is_false(late_err:is("DatabaseError"))
            assert.is_false(late_err:is("ConnectionClosedError"))
            assert.equal("ConnectionClosedError", after_err.kind)
            assert.is_true(conn.closed)
            conn = nil
            -- the late insert never ran
            local check = sqlite.connect(path)
            assert.equal(0, check:execute("SELECT count(*) FROM t WHERE name = 'late'"):fetchone()[1])
            -- the slow write submitted before close() was kept
            assert.equal(1, check:execute("SELECT count(*) FROM t WHERE name = 'counted 300000'")
                :fetchone()[1])
            check:close()
        end)
    end)

    describe("the pool keeps working", function()
        it("after a long series of different errors, reads and writes still succeed", function()
            local failing = {
                { "INSERT INTO t VALUES (1, 'dup')", "IntegrityError" },
                { "SELEC 1", "OperationalError" },
                { "SELECT * FROM nope", "OperationalError" },
                { "INSERT INTO t (id, name) VALUES ('abc', 'x')", "IntegrityError" },
                { "INSERT INTO t (name) VALUES (NULL)", "IntegrityError" },
                { "SELECT ?", "ProgrammingError", { 1, 2 } },
            }
            for round = 1, 20 do
                for _, case in ipairs(failing) do
                    local err = case[3] and catch(conn.execute, conn, case[1], case[3])
                        or catch(conn.execute, conn, case[1])
                    assert.equal(case[2], err.kind)
                end
                conn:execute("INSERT INTO t (name) VALUES (?)", "row" .. round)
                assert.equal(round + 1, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            end
        end)

        it("errors inside coroutines fail only their own statement", function()
            local kinds, counts = {}, {}
            sqlite.run(function()
                local handles = {}
                for i = 1, 60 do
                    handles[i] = sqlite.spawn(function()
                        if i % 3 == 0 then
                            local ok, err = pcall(conn.execute, conn, "INSERT INTO t VALUES (1, 'dup')")
                            assert.is_false(ok)
                            kinds[#kinds + 1] = err.kind
                        elseif i % 3 == 1 then
                            local ok, err = pcall(conn.execute, conn, "SELECT * FROM nope" .. i)
                            assert.is_false(ok)
                            kinds[#kinds + 1] = err.kind
                        else
                            conn:execute("INSERT INTO t (name) VALUES (?)", "n" .. i)
                        end
                        local n = conn:execute("SELECT count(*) FROM t"):fetchone()[1]
                        counts[#counts + 1] = n -- not in one statement: execute yields
                    end)
                end
                for i = 1, #handles do
                    handles[i]:join()
                end
            end)
            assert.equal(40, #kinds)
            local integrity, operational = 0, 0
            for _, k in ipairs(kinds) do
                if k == "IntegrityError" then
                    integrity = integrity + 1
                elseif k == "OperationalError" then
                    operational = operational + 1
                end
            end
            assert.equal(20, integrity)
            assert.equal(20, operational)
            assert.equal(60, #counts)
            assert.equal(21, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            assert_works(conn)
        end)
    end)
end)
