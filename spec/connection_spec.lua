-- Connection behaviour: sqlite.connect and its options, execute/executemany/executescript,
-- commit/rollback, close, fields (closed, in_transaction, total_changes, row) and stats().
-- Runs under Lua 5.4 and LuaJIT; the Lua 5.4-only `<close>` test is compiled with load().

local sqlite = require "pasyn_sqlite"
local support = require "support"

-- ---- helpers --------------------------------------------------------------------------------

local temp_path, remove_db = support.temp_path, support.remove_db

local function file_exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

local raises, scalar = support.raises, support.scalar

local function count_rows(conn, tbl)
    return scalar(conn, "SELECT count(*) FROM " .. tbl)
end

local function reader_executed(stats)
    return support.readers_sum(stats, "executed")
end

-- Every test opens connections through `open`; after_each closes them and removes files.
local opened, paths

local function open(database, options)
    local conn = sqlite.connect(database, options)
    opened[#opened + 1] = conn
    return conn
end

local function new_path()
    local path = temp_path()
    paths[#paths + 1] = path
    return path
end

before_each(function()
    opened, paths = {}, {}
end)

after_each(function()
    for _, conn in ipairs(opened) do
        pcall(conn.close, conn)
    end
    for _, path in ipairs(paths) do
        remove_db(path)
    end
end)

-- ---- the module -----------------------------------------------------------------------------

describe("module", function()
    it("sqlite.version is this library's version string, like 0.1.0", function()
        assert.are.equal("string", type(sqlite.version))
        assert.truthy(sqlite.version:match("^%d+%.%d+%.%d+"), sqlite.version)
    end)

    it("sqlite.sqlite_version matches SELECT sqlite_version()", function()
        local conn = open(":memory:")
        assert.are.equal("string", type(sqlite.sqlite_version))
        assert.truthy(sqlite.sqlite_version:match("^3%.%d+%.%d+"), sqlite.sqlite_version)
        assert.are.equal(sqlite.sqlite_version, scalar(conn, "SELECT sqlite_version()"))
    end)
end)

-- ---- connect --------------------------------------------------------------------------------

describe("sqlite.connect", function()
    it("opens a file path, creating the file, and the data is there after reopening", function()
        local path = new_path()
        local conn = open(path)
        assert.is_true(file_exists(path))
        assert.is_false(conn.closed)
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn:execute("INSERT INTO t (v) VALUES ('one'), ('two')")
        conn:close()

        local again = open(path)
        assert.are.same({ { 1, "one", n = 2 }, { 2, "two", n = 2 } },
                        again:execute("SELECT id, v FROM t ORDER BY id"):fetchall())
    end)

    it("opens a file: URI naming a path", function()
        local path = new_path()
        local conn = open("file:" .. path)
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES (7)")
        conn:close()
        assert.is_true(file_exists(path))
        local again = open(path)
        assert.are.equal(7, scalar(again, "SELECT x FROM t"))
    end)

    it("opens a file: URI with ?mode=rwc (read-write-create) and reads through it", function()
        local path = new_path()
        local conn = open("file:" .. path .. "?mode=rwc")
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES (7)")
        assert.are.equal(7, scalar(conn, "SELECT x FROM t"))
        conn:close()
        assert.is_true(file_exists(path))
    end)

    it("opens :memory: and it works for writes and reads", function()
        local conn = open(":memory:")
        conn:execute("CREATE TABLE t (x INTEGER)")
        conn:execute("INSERT INTO t VALUES (1), (2), (3)")
        assert.are.equal(6, scalar(conn, "SELECT sum(x) FROM t"))
    end)

    it(":memory: is one database: rows the writer inserted are seen by reads on every reader", function()
        local conn = open(":memory:", { readers = 3, inline_reads = false }) -- reads counted on readers
        conn:execute("CREATE TABLE t (x INTEGER)")
        conn:executemany("INSERT INTO t VALUES (?)", (function()
            local sets = {}
            for i = 1, 100 do
                sets[i] = { i }
            end
            return sets
        end)())
        local before = reader_executed(conn:stats())
        local coroutines, reads_each = 6, 10
        sqlite.run(function()
            local handles = {}
            for c = 1, coroutines do
                handles[c] = sqlite.spawn(function()
                    local seen = {}
                    for i = 1, reads_each do
                        local row = conn:execute("SELECT count(*), sum(x) FROM t"):fetchone()
                        seen[i] = row[1] .. "/" .. row[2]
                    end
                    return seen
                end)
            end
            for c = 1, coroutines do
                local seen = handles[c]:join()
                for i = 1, reads_each do
                    assert.are.equal("100/5050", seen[i])
                end
            end
        end)
        -- the reads ran on reader threads (each with its own connection), not on the writer
        assert.is_true(reader_executed(conn:stats()) - before >= coroutines * reads_each)
    end)

    it("a :memory: database is private to its connection", function()
        local a = open(":memory:")
        local b = open(":memory:")
        a:execute("CREATE TABLE only_in_a (x)")
        local err = raises("OperationalError", b.execute, b, "SELECT * FROM only_in_a")
        assert.truthy(err.message:find("only_in_a", 1, true), err.message)
    end)

    it("works inside sqlite.run: connect, write, read and close from a coroutine", function()
        local path = new_path()
        local sum, closed = sqlite.run(function()
            local conn = sqlite.connect(path)
            conn:execute("CREATE TABLE t (x)")
            conn:execute("INSERT INTO t VALUES (41), (1)")
            local sum = scalar(conn, "SELECT sum(x) FROM t")
            conn:close()
            return sum, conn.closed
        end)
        assert.are.equal(42, sum)
        assert.is_true(closed)
    end)

    it("raises OperationalError when the file cannot be opened (directory missing)", function()
        local err = raises("OperationalError", sqlite.connect, "/nonexistent-dir-pasyn/sub/x.db")
        assert.are.equal(14, err.code) -- SQLITE_CANTOPEN
    end)

    it("raises DatabaseError when the file is not a database", function()
        local path = new_path()
        local f = assert(io.open(path, "wb"))
        f:write(string.rep("this is not a database file. ", 200))
        f:close()
        local ok, err = pcall(function()
            local conn = open(path)
            -- an implementation may only notice on first use
            conn:execute("SELECT * FROM sqlite_master"):fetchall()
        end)
        assert.is_false(ok)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.are.equal("DatabaseError", err.kind, tostring(err)) -- as Python's sqlite3
        assert.are.equal(26, err.code) -- SQLITE_NOTADB
    end)

    it("raises ProgrammingError when the database is not a string", function()
        raises("ProgrammingError", sqlite.connect, 42)
        raises("ProgrammingError", sqlite.connect, nil)
    end)
end)

-- ---- options --------------------------------------------------------------------------------

describe("connect options", function()
    describe("readers", function()
        for _, n in ipairs({ 0, 1, 2, 5 }) do
            it("readers = " .. n .. " gives " .. n .. " reader entries in stats()", function()
                local conn = open(":memory:", { readers = n })
                assert.are.equal(n, #conn:stats().readers)
            end)
        end

        it("defaults to 3 readers", function()
            local conn = open(":memory:")
            assert.are.equal(3, #conn:stats().readers)
        end)

        it("readers = 0 runs everything, reads included, on the writer", function()
            local path = new_path()
            local conn = open(path, { readers = 0 })
            conn:execute("CREATE TABLE t (x)")
            conn:execute("INSERT INTO t VALUES (1), (2)")
            local before = conn:stats().writer.executed
            local rows = conn:execute("SELECT x FROM t ORDER BY x"):fetchall()
            assert.are.same({ { 1, n = 1 }, { 2, n = 1 } }, rows)
            assert.are.equal(before + 1, conn:stats().writer.executed)
        end)

        it("readers = 0 works on :memory: inside coroutines", function()
            local conn = open(":memory:", { readers = 0 })
            conn:execute("CREATE TABLE t (x)")
            sqlite.run(function()
                local hs = {}
                for i = 1, 5 do
                    hs[i] = sqlite.spawn(function()
                        conn:execute("INSERT INTO t VALUES (?)", i)
                        return count_rows(conn, "t") >= 1
                    end)
                end
                for i = 1, 5 do
                    assert.is_true(hs[i]:join())
                end
            end)
            assert.are.equal(15, scalar(conn, "SELECT sum(x) FROM t"))
        end)
    end)

    describe("busy_timeout", function()
        it("defaults to 5000 ms", function()
            local conn = open(new_path())
            assert.are.equal(5000, scalar(conn, "PRAGMA busy_timeout"))
        end)

        it("sets PRAGMA busy_timeout", function()
            local conn = open(new_path(), { busy_timeout = 1234 })
            assert.are.equal(1234, scalar(conn, "PRAGMA busy_timeout"))
        end)
    end)

    describe("journal_mode", function()
        it("defaults to WAL: PRAGMA journal_mode reads 'wal'", function()
            local path = new_path()
            local conn = open(path)
            assert.are.equal("wal", scalar(conn, "PRAGMA journal_mode"))
            conn:execute("CREATE TABLE t (x)")
            assert.is_true(file_exists(path .. "-wal"))
        end)

        it("journal_mode = 'delete' is set on open", function()
            local conn = open(new_path(), { journal_mode = "delete" })
            assert.are.equal("delete", scalar(conn, "PRAGMA journal_mode"))
        end)

        it("journal_mode = 'truncate' is set on open", function()
            local conn = open(new_path(), { journal_mode = "truncate" })
            assert.are.equal("truncate", scalar(conn, "PRAGMA journal_mode"))
        end)
    end)

    describe("synchronous", function()
        it("defaults to normal: PRAGMA synchronous reads 1", function()
            local conn = open(new_path())
            assert.are.equal(1, scalar(conn, "PRAGMA synchronous"))
        end)

        for name, level in pairs({ off = 0, normal = 1, full = 2, extra = 3 }) do
            it("synchronous = '" .. name .. "' makes PRAGMA synchronous read " .. level, function()
                local conn = open(new_path(), { synchronous = name })
                assert.are.equal(level, scalar(conn, "PRAGMA synchronous"))
            end)
        end
    end)

    describe("defensive", function()
        -- What a database file from elsewhere could do through its schema, and what
        -- defensive = true stops: SQLITE_DBCONFIG_DEFENSIVE and trusted_schema = OFF.
        local function try_schema(conn)
            conn:execute("CREATE TABLE t (x)")
            conn:execute("CREATE VIEW v AS SELECT name FROM pragma_table_info('t')")
            local view_ok, view_err = pcall(function()
                return conn:execute("SELECT count(*) FROM v"):fetchone()[1]
            end)
            conn:execute("PRAGMA writable_schema = ON")
            local write_ok, write_err = pcall(conn.execute, conn,
                "UPDATE sqlite_schema SET sql = 'CREATE TABLE t (x, y)' WHERE name = 't'")
            conn:execute("PRAGMA writable_schema = OFF")
            return scalar(conn, "PRAGMA trusted_schema"), view_ok, view_err, write_ok, write_err
        end

        it("is off by default: the schema's views may use any virtual table, and "
           .. "writable_schema lets the schema be rewritten", function()
            local trusted, view_ok, view_err, write_ok, write_err = try_schema(open(new_path()))
            assert.are.equal(1, trusted)
            assert.is_true(view_ok, tostring(view_err))
            assert.is_true(write_ok, tostring(write_err))
        end)

        it("defensive = true: trusted_schema is off, a view's unsafe virtual table and a "
           .. "write to sqlite_schema are refused with OperationalError", function()
            local trusted, view_ok, view_err, write_ok, write_err =
                try_schema(open(new_path(), { defensive = true, readers = 2 }))
            assert.are.equal(0, trusted)
            assert.is_false(view_ok)
            assert.are.equal("OperationalError", view_err.kind)
            assert.matches("unsafe use of virtual table", view_err.message)
            assert.is_false(write_ok)
            assert.are.equal("OperationalError", write_err.kind)
            assert.matches("may not be modified", write_err.message)
        end)

        it("must be a boolean", function()
            raises("ProgrammingError", sqlite.connect, ":memory:", { defensive = 1 })
        end)
    end)

    describe("foreign_keys", function()
        local function fk_schema(conn)
            conn:executescript([[
                CREATE TABLE parent (id INTEGER PRIMARY KEY);
                CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));
                INSERT INTO parent VALUES (1);
            ]])
        end

        it("is off by default: PRAGMA foreign_keys reads 0 and a dangling reference is accepted", function()
            local conn = open(":memory:")
            assert.are.equal(0, scalar(conn, "PRAGMA foreign_keys"))
            fk_schema(conn)
            conn:execute("INSERT INTO child VALUES (1, 99)")
            assert.are.equal(1, count_rows(conn, "child"))
        end)

        it("foreign_keys = true: PRAGMA foreign_keys reads 1 and a dangling reference is an IntegrityError",
           function()
            local conn = open(":memory:", { foreign_keys = true })
            assert.are.equal(1, scalar(conn, "PRAGMA foreign_keys"))
            fk_schema(conn)
            conn:execute("INSERT INTO child VALUES (1, 1)")
            local err = raises("IntegrityError", conn.execute, conn, "INSERT INTO child VALUES (2, 99)")
            assert.are.equal(19, err.code) -- SQLITE_CONSTRAINT
            assert.are.equal(1, count_rows(conn, "child"))
        end)

        it("foreign_keys = true is set on reader connections too", function()
            local conn = open(new_path(), { foreign_keys = true, readers = 2 })
            for _ = 1, 4 do
                assert.are.equal(1, scalar(conn, "SELECT foreign_keys FROM pragma_foreign_keys"))
            end
        end)
    end)

    describe("readonly", function()
        local function make_db(options)
            local path = new_path()
            local rw = sqlite.connect(path, options)
            rw:execute("CREATE TABLE t (x INTEGER)")
            rw:execute("INSERT INTO t VALUES (1), (2)")
            rw:close()
            return path
        end

        it("reads work on a readonly connection", function()
            local conn = open(make_db(), { readonly = true })
            assert.are.same({ { 1, n = 1 }, { 2, n = 1 } },
                            conn:execute("SELECT x FROM t ORDER BY x"):fetchall())
        end)

        it("an INSERT fails with OperationalError code 8 (READONLY) and changes nothing", function()
            local conn = open(make_db(), { readonly = true })
            local err = raises("OperationalError", conn.execute, conn, "INSERT INTO t VALUES (3)")
            assert.are.equal(8, err.code)
            assert.are.equal(2, count_rows(conn, "t"))
        end)

        it("CREATE TABLE, UPDATE and DELETE fail with OperationalError code 8", function()
            local conn = open(make_db(), { readonly = true })
            for _, sql in ipairs({ "CREATE TABLE u (y)", "UPDATE t SET x = 0", "DELETE FROM t" }) do
                local err = raises("OperationalError", conn.execute, conn, sql)
                assert.are.equal(8, err.code, sql)
            end
            assert.are.equal(3, scalar(conn, "SELECT sum(x) FROM t"))
        end)

        it("works on a rollback-journal database too", function()
            local conn = open(make_db({ journal_mode = "delete" }), { readonly = true })
            assert.are.equal(2, count_rows(conn, "t"))
            local err = raises("OperationalError", conn.execute, conn, "INSERT INTO t VALUES (3)")
            assert.are.equal(8, err.code)
        end)
    end)

    describe("pragmas", function()
        it("applies each pragma to the writer connection", function()
            local conn = open(new_path(), { pragmas = { cache_size = -4321, temp_store = 2 } })
            assert.are.equal(-4321, scalar(conn, "PRAGMA cache_size"))
            assert.are.equal(2, scalar(conn, "PRAGMA temp_store"))
        end)

        it("applies each pragma to reader connections too", function()
            local conn = open(new_path(), { pragmas = { cache_size = -4321 }, readers = 2 })
            for _ = 1, 4 do
                assert.are.equal(-4321, scalar(conn, "SELECT cache_size FROM pragma_cache_size"))
            end
        end)

        it("an empty pragmas table changes nothing", function()
            local conn = open(new_path(), { pragmas = {} })
            assert.are.equal(1, scalar(conn, "PRAGMA synchronous"))
        end)
    end)

    describe("statement_cache", function()
        for _, size in ipairs({ 0, 1, 128 }) do
            it("statement_cache = " .. size .. " still runs alternating statements correctly", function()
                local conn = open(":memory:", { statement_cache = size })
                conn:execute("CREATE TABLE t (x INTEGER)")
                for i = 1, 20 do
                    conn:execute("INSERT INTO t VALUES (?)", i)
                    assert.are.equal(i, count_rows(conn, "t"))
                    assert.are.equal(i * (i + 1) / 2, scalar(conn, "SELECT sum(x) FROM t"))
                end
            end)
        end

        for _, readers in ipairs({ 0, 1 }) do
            it("a cached SELECT * sees a column added by ALTER TABLE, readers = " .. readers, function()
                local conn = open(new_path(), { statement_cache = 8, readers = readers })
                conn:execute("CREATE TABLE t (a)")
                conn:execute("INSERT INTO t VALUES (1)")
                assert.are.same({ 1, n = 1 }, conn:execute("SELECT * FROM t"):fetchone())
                conn:execute("ALTER TABLE t ADD COLUMN b DEFAULT 'b'")
                local cur = conn:execute("SELECT * FROM t")
                assert.are.equal(2, #cur.description)
                assert.are.same({ 1, "b", n = 2 }, cur:fetchone())
            end)
        end
    end)

    describe("row", function()
        it("defaults to array rows", function()
            local conn = open(":memory:")
            assert.are.equal("array", conn.row)
            assert.are.same({ 1, "a", n = 2 }, conn:execute("SELECT 1 AS x, 'a' AS y"):fetchone())
        end)

        it("row = 'named' gives {column = value} rows", function()
            local conn = open(":memory:", { row = "named" })
            assert.are.equal("named", conn.row)
            assert.are.same({ x = 1, y = "a" }, conn:execute("SELECT 1 AS x, 'a' AS y"):fetchone())
        end)

        it("row = function gives what the function returns for (cursor, row_array)", function()
            local calls = {}
            local function shape(cur, row)
                calls[#calls + 1] = cur
                return row[1] .. ":" .. row[2]
            end
            local conn = open(":memory:", { row = shape })
            local cur = conn:execute("SELECT 1, 'a' UNION ALL SELECT 2, 'b'")
            assert.are.same({ "1:a", "2:b" }, cur:fetchall())
            assert.are.equal(2, #calls)
            assert.are.equal(cur, calls[1])
        end)
    end)

    describe("stealing", function()
        it("stealing = false works: concurrent reads give right answers and nothing is stolen", function()
            local conn = open(new_path(), { readers = 2, stealing = false })
            conn:execute("CREATE TABLE t (x INTEGER)")
            conn:execute("INSERT INTO t VALUES (1), (2), (3)")
            sqlite.run(function()
                local hs = {}
                for i = 1, 20 do
                    hs[i] = sqlite.spawn(function()
                        return scalar(conn, "SELECT sum(x) + ? FROM t", i)
                    end)
                end
                for i = 1, 20 do
                    assert.are.equal(6 + i, hs[i]:join())
                end
            end)
            for _, r in ipairs(conn:stats().readers) do
                assert.are.equal(0, r.stolen)
            end
        end)

        it("stealing = true is accepted", function()
            local conn = open(":memory:", { stealing = true })
            assert.are.equal(1, scalar(conn, "SELECT 1"))
        end)
    end)

    describe("validation", function()
        local bad = {
            { "an unknown option", { bogus_option = 1 }, "bogus_option" },
            { "readers = -1", { readers = -1 }, "readers" },
            { "readers = 1.5", { readers = 1.5 }, "readers" },
            { "readers = '3'", { readers = "3" }, "readers" },
            { "busy_timeout = -5", { busy_timeout = -5 }, "busy_timeout" },
            { "busy_timeout = 'soon'", { busy_timeout = "soon" }, "busy_timeout" },
            { "journal_mode = 'nope'", { journal_mode = "nope" }, "journal_mode" },
            { "synchronous = 'bogus'", { synchronous = "bogus" }, "synchronous" },
            { "synchronous = 2", { synchronous = 2 }, "synchronous" },
            { "foreign_keys = 'yes'", { foreign_keys = "yes" }, "foreign_keys" },
            { "readonly = 1", { readonly = 1 }, "readonly" },
            { "pragmas = 'x'", { pragmas = "x" }, "pragmas" },
            { "statement_cache = -1", { statement_cache = -1 }, "statement_cache" },
            { "row = 42", { row = 42 }, "row" },
            { "row = 'dict'", { row = "dict" }, "row" },
            { "stealing = 'no'", { stealing = "no" }, "stealing" },
        }
        for _, case in ipairs(bad) do
            local what, options, name = case[1], case[2], case[3]
            it(what .. " raises ProgrammingError naming the option", function()
                local err = raises("ProgrammingError", sqlite.connect, ":memory:", options)
                assert.truthy(tostring(err.message):find(name, 1, true),
                              "message does not name " .. name .. ": " .. tostring(err.message))
            end)
        end

        it("options that are not a table raise ProgrammingError", function()
            raises("ProgrammingError", sqlite.connect, ":memory:", "readers=3")
        end)

        it("option values are case-insensitive where they are names (synchronous = 'FULL')", function()
            local conn = open(new_path(), { synchronous = "FULL" })
            assert.are.equal(2, scalar(conn, "PRAGMA synchronous"))
        end)
    end)
end)

-- ---- execute family -------------------------------------------------------------------------

describe("Connection", function()
    local conn

    before_each(function()
        conn = open(":memory:")
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    end)

    describe("execute", function()
        it("returns a Cursor of this connection holding the result", function()
            local cur = conn:execute("SELECT 1 + 1")
            assert.are.equal(conn, cur.connection)
            assert.are.same({ 2, n = 1 }, cur:fetchone())
            assert.is_nil(cur:fetchone())
        end)

        it("a write is visible to the next read", function()
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            assert.are.equal(1, count_rows(conn, "t"))
        end)

        it("accepts params as an array table and as extra arguments", function()
            conn:execute("INSERT INTO t (id, v) VALUES (?, ?)", { 1, "a" })
            conn:execute("INSERT INTO t (id, v) VALUES (?, ?)", 2, "b")
            assert.are.same({ { 1, "a", n = 2 }, { 2, "b", n = 2 } },
                            conn:execute("SELECT id, v FROM t ORDER BY id"):fetchall())
        end)

        it("raises OperationalError for a syntax error, with the SQL in the error", function()
            local err = raises("OperationalError", conn.execute, conn, "SELEC 1")
            assert.are.equal(1, err.code)
            assert.are.equal("SELEC 1", err.sql)
        end)

        it("raises ProgrammingError when the SQL is not a string", function()
            raises("ProgrammingError", conn.execute, conn, 42)
        end)
    end)

    describe("executemany", function()
        it("inserts one row per parameter table of an array; rowcount is the total", function()
            local cur = conn:executemany("INSERT INTO t (id, v) VALUES (?, ?)",
                                         { { 1, "a" }, { 2, "b" }, { 3, "c" } })
            assert.are.equal(3, cur.rowcount)
            assert.are.same({ { 1, "a", n = 2 }, { 2, "b", n = 2 }, { 3, "c", n = 2 } },
                            conn:execute("SELECT id, v FROM t ORDER BY id"):fetchall())
        end)

        it("takes an iterator function returning parameter tables until nil", function()
            local i = 0
            local cur = conn:executemany("INSERT INTO t (id, v) VALUES (:id, :v)", function()
                i = i + 1
                if i <= 4 then
                    return { id = i, v = "v" .. i }
                end
            end)
            assert.are.equal(4, cur.rowcount)
            assert.are.equal(4, count_rows(conn, "t"))
            assert.are.equal("v4", scalar(conn, "SELECT v FROM t WHERE id = 4"))
        end)

        it("rowcount sums the changes of every parameter set (UPDATE)", function()
            conn:executemany("INSERT INTO t (id, v) VALUES (?, ?)", { { 1, "a" }, { 2, "b" }, { 3, "c" } })
            local cur = conn:executemany("UPDATE t SET v = v || '!' WHERE id >= ?", { { 1 }, { 3 }, { 9 } })
            assert.are.equal(4, cur.rowcount)
        end)

        it("an empty array inserts nothing and rowcount is 0", function()
            local cur = conn:executemany("INSERT INTO t (v) VALUES (?)", {})
            assert.are.equal(0, cur.rowcount)
            assert.are.equal(0, count_rows(conn, "t"))
        end)

        it("is atomic: a constraint failure in the third row leaves no row", function()
            local err = raises("IntegrityError", conn.executemany, conn,
                               "INSERT INTO t (v) VALUES (?)", { { "a" }, { "b" }, { "a" }, { "d" } })
            assert.are.equal(19, err.code)
            assert.are.equal(0, count_rows(conn, "t"))
        end)

        it("is atomic: a bad parameter set leaves no row", function()
            raises("ProgrammingError", conn.executemany, conn,
                   "INSERT INTO t (id, v) VALUES (?, ?)", { { 1, "a" }, { 2, "b" }, { 3 } })
            assert.are.equal(0, count_rows(conn, "t"))
        end)

        it("is atomic: an error raised by the iterator leaves no row and propagates", function()
            local i = 0
            local ok, err = pcall(conn.executemany, conn, "INSERT INTO t (v) VALUES (?)", function()
                i = i + 1
                if i == 3 then
                    error("iterator broke")
                end
                return { "row" .. i }
            end)
            assert.is_false(ok)
            assert.truthy(tostring(err):find("iterator broke", 1, true), tostring(err))
            assert.are.equal(0, count_rows(conn, "t"))
        end)

        it("is atomic over a long iterator: a failure at row 22000 of 25000 leaves no row", function()
            local i = 0
            raises("IntegrityError", conn.executemany, conn, "INSERT INTO t (id, v) VALUES (?, ?)", function()
                i = i + 1
                if i > 25000 then
                    return nil
                end
                -- row 22000 repeats the v of row 1: UNIQUE fails
                return { i, i == 22000 and "v1" or ("v" .. i) }
            end)
            assert.are.equal(0, count_rows(conn, "t"))
            assert.is_false(conn.in_transaction)
        end)

        -- The next chunk is read from the iterator while the writer inserts the one before.
        it("over chunks, a failing chunk's error wins over the iterator's that came after it",
           function()
            local i = 0
            local err = raises("IntegrityError", conn.executemany, conn,
                               "INSERT INTO t (id, v) VALUES (?, ?)", function()
                i = i + 1
                if i == 10001 then
                    error("iterator broke") -- while chunk 1 (which fails at row 5) is inserted
                end
                return { i, i == 5 and "v1" or ("v" .. i) }
            end)
            assert.matches("UNIQUE", err.message)
            assert.are.equal(10001, i) -- one chunk read ahead, never more
            assert.are.equal(0, count_rows(conn, "t"))
            assert.is_false(conn.in_transaction)
        end)

        it("over chunks, a good chunk queued behind a failing one is undone with it", function()
            local i = 0
            local err = raises("IntegrityError", conn.executemany, conn,
                               "INSERT INTO t (id, v) VALUES (?, ?)", function()
                i = i + 1
                if i <= 15000 then -- chunk 1 fails at row 5; chunk 2 is good and queued behind it
                    return { i, i == 5 and "v1" or ("v" .. i) }
                end
            end)
            assert.matches("UNIQUE", err.message)
            assert.are.equal(15001, i)
            assert.are.equal(0, count_rows(conn, "t"))
            assert.is_false(conn.in_transaction)
            conn:execute("INSERT INTO t (id, v) VALUES (1, 'after')") -- the pool goes on
            assert.are.equal(1, count_rows(conn, "t"))
        end)

        it("over chunks, the iterator's own error comes through unchanged after a good chunk",
           function()
            local i, boom = 0, { "a table error" }
            local ok, err = pcall(conn.executemany, conn, "INSERT INTO t (id, v) VALUES (?, ?)",
                                  function()
                i = i + 1
                if i == 15000 then
                    error(boom)
                end
                return { i, "v" .. i }
            end)
            assert.is_false(ok)
            assert.are.equal(boom, err)
            assert.are.equal(0, count_rows(conn, "t"))
            assert.is_false(conn.in_transaction)
            conn:execute("INSERT INTO t (id, v) VALUES (1, 'after')") -- the pool goes on
            assert.are.equal(1, count_rows(conn, "t"))
        end)

        it("inserts every row of a long iterator (25000 rows) and counts them all", function()
            local i = 0
            local cur = conn:executemany("INSERT INTO t (id, v) VALUES (?, ?)", function()
                i = i + 1
                if i <= 25000 then
                    return { i, "v" .. i }
                end
            end)
            assert.are.equal(25000, cur.rowcount)
            assert.are.equal(25000, count_rows(conn, "t"))
            assert.is_false(conn.in_transaction)
        end)

        -- The chunk before is on its way while the iterator runs: its completion may be
        -- dispatched (for another coroutine's statement) before executemany waits for it.
        it("over chunks, an iterator that waits while other coroutines' statements complete "
           .. "loses no chunk", function()
            local rowcount, reads
            sqlite.run(function()
                sqlite.spawn(function()
                    local i = 0
                    rowcount = conn:executemany("INSERT INTO t (id, v) VALUES (?, ?)", function()
                        i = i + 1
                        if i % 10000 == 1 and i > 1 then
                            sqlite.sleep(0.05)
                        end
                        if i <= 25000 then
                            return { i, "v" .. i }
                        end
                    end).rowcount
                end)
                reads = 0
                for _ = 1, 100 do -- about 0.2 s: past both of the iterator's waits
                    conn:execute("SELECT 1")
                    reads = reads + 1
                    sqlite.sleep(0.002)
                end
            end)
            assert.are.equal(25000, rowcount)
            assert.are.equal(25000, count_rows(conn, "t"))
            assert.are.equal(100, reads)
        end)

        it("raises ProgrammingError for a statement that is not INSERT/UPDATE/DELETE/REPLACE", function()
            raises("ProgrammingError", conn.executemany, conn, "SELECT ?", { { 1 }, { 2 } })
        end)

        it("raises ProgrammingError when seq is neither a table nor a function", function()
            raises("ProgrammingError", conn.executemany, conn, "INSERT INTO t (v) VALUES (?)", "abc")
        end)

        it("works inside a coroutine", function()
            sqlite.run(function()
                local cur = conn:executemany("INSERT INTO t (v) VALUES (?)", { { "x" }, { "y" } })
                assert.are.equal(2, cur.rowcount)
            end)
            assert.are.equal(2, count_rows(conn, "t"))
        end)
    end)

    describe("executescript", function()
        it("runs every statement in order and returns a cursor without rows", function()
            local cur = conn:executescript([[
                CREATE TABLE s (x INTEGER);
                INSERT INTO s VALUES (1);
                INSERT INTO s SELECT x + 1 FROM s;
                INSERT INTO s SELECT x + 2 FROM s;
            ]])
            assert.are.equal(conn, cur.connection)
            assert.is_nil(cur:fetchone())
            assert.are.same({ { 1, n = 1 }, { 2, n = 1 }, { 3, n = 1 }, { 4, n = 1 } },
                            conn:execute("SELECT x FROM s ORDER BY x"):fetchall())
        end)

        it("stops at a failing statement; the statements before it stay", function()
            local err = raises("OperationalError", conn.executescript, conn, [[
                INSERT INTO t (v) VALUES ('first');
                INSERT INTO no_such_table VALUES (1);
                INSERT INTO t (v) VALUES ('never');
            ]])
            assert.truthy(err.message:find("no_such_table", 1, true), err.message)
            assert.are.same({ { "first", n = 1 } }, conn:execute("SELECT v FROM t"):fetchall())
        end)

        it("an empty script is a no-op", function()
            local cur = conn:executescript("")
            assert.is_nil(cur:fetchone())
            assert.are.equal(0, count_rows(conn, "t"))
        end)
    end)

    describe("commit and rollback", function()
        it("commit() without a transaction is a no-op and autocommitted rows stay", function()
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            assert.is_false(conn.in_transaction)
            assert.is_nil(conn:commit())
            assert.is_false(conn.in_transaction)
            assert.are.equal(1, count_rows(conn, "t"))
        end)

        it("rollback() without a transaction is a no-op and autocommitted rows stay", function()
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            assert.is_nil(conn:rollback())
            assert.is_false(conn.in_transaction)
            assert.are.equal(1, count_rows(conn, "t"))
        end)

        it("BEGIN, INSERT, rollback() leaves nothing", function()
            conn:execute("BEGIN")
            assert.is_true(conn.in_transaction)
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            assert.are.equal(1, count_rows(conn, "t")) -- the owner sees its own write
            conn:rollback()
            assert.is_false(conn.in_transaction)
            assert.are.equal(0, count_rows(conn, "t"))
        end)

        it("BEGIN, INSERT, commit() keeps the rows, also for another connection", function()
            local path = new_path()
            local c = open(path)
            c:execute("CREATE TABLE t (x)")
            c:execute("BEGIN")
            c:execute("INSERT INTO t VALUES (1), (2)")
            c:commit()
            assert.is_false(c.in_transaction)
            assert.are.equal(2, count_rows(c, "t"))
            local other = open(path)
            assert.are.equal(2, count_rows(other, "t"))
        end)

        it("BEGIN through executescript makes the caller the owner until rollback()", function()
            conn:executescript("BEGIN; INSERT INTO t (v) VALUES ('a'); INSERT INTO t (v) VALUES ('b');")
            assert.is_true(conn.in_transaction)
            assert.are.equal(2, count_rows(conn, "t"))
            conn:rollback()
            assert.is_false(conn.in_transaction)
            assert.are.equal(0, count_rows(conn, "t"))
        end)

        it("COMMIT through execute ends the transaction too", function()
            conn:execute("BEGIN IMMEDIATE")
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            conn:execute("COMMIT")
            assert.is_false(conn.in_transaction)
            assert.are.equal(1, count_rows(conn, "t"))
        end)

        it("in_transaction is true only for the coroutine that began the transaction", function()
            local seen = {}
            sqlite.run(function()
                conn:execute("BEGIN")
                seen.owner = conn.in_transaction
                local other = sqlite.spawn(function()
                    return conn.in_transaction
                end)
                seen.other = other:join()
                conn:rollback()
                seen.after = conn.in_transaction
            end)
            assert.are.same({ owner = true, other = false, after = false }, seen)
        end)

        it("a coroutine's BEGIN ... commit() inside sqlite.run keeps its rows", function()
            sqlite.run(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('a')")
                conn:execute("INSERT INTO t (v) VALUES ('b')")
                conn:commit()
            end)
            assert.are.equal(2, count_rows(conn, "t"))
        end)
    end)

    describe("cursor()", function()
        it("returns a fresh cursor of this connection", function()
            local cur = conn:cursor()
            assert.are.equal(conn, cur.connection)
            assert.are.equal(-1, cur.rowcount)
            assert.are.equal(1, cur.arraysize)
            assert.is_nil(cur.description)
            assert.is_nil(cur.lastrowid)
            assert.is_nil(cur:fetchone())
        end)

        it("each call returns a different cursor", function()
            assert.are_not.equal(conn:cursor(), conn:cursor())
        end)

        it("a cursor's execute runs on the connection", function()
            local cur = conn:cursor()
            assert.are.equal(cur, cur:execute("INSERT INTO t (v) VALUES ('a')"))
            assert.are.equal(1, count_rows(conn, "t"))
        end)
    end)

    describe("total_changes", function()
        it("counts every row changed since the connection opened", function()
            local base = conn.total_changes
            assert.are.equal("number", type(base))
            conn:executemany("INSERT INTO t (v) VALUES (?)", { { "a" }, { "b" }, { "c" } })
            assert.are.equal(base + 3, conn.total_changes)
            conn:execute("UPDATE t SET v = v || '!' WHERE v <> 'a'")
            assert.are.equal(base + 5, conn.total_changes)
            conn:execute("SELECT * FROM t"):fetchall()
            assert.are.equal(base + 5, conn.total_changes)
            conn:execute("DELETE FROM t")
            assert.are.equal(base + 8, conn.total_changes)
        end)

        it("is 0 on a fresh connection", function()
            assert.are.equal(0, open(":memory:").total_changes)
        end)
    end)

    describe("row field", function()
        it("conn.row is settable and cursors created afterwards use the new shape", function()
            conn:execute("INSERT INTO t (id, v) VALUES (1, 'a')")
            local before = conn:cursor()
            conn.row = "named"
            assert.are.equal("named", conn.row)
            assert.are.same({ id = 1, v = "a" }, conn:execute("SELECT id, v FROM t"):fetchone())
            -- a cursor keeps the shape it was created with
            assert.are.same({ 1, "a", n = 2 }, before:execute("SELECT id, v FROM t"):fetchone())
            conn.row = function(_, row)
                return row[2]
            end
            assert.are.equal("a", conn:execute("SELECT id, v FROM t"):fetchone())
            conn.row = "array"
            assert.are.same({ 1, "a", n = 2 }, conn:execute("SELECT id, v FROM t"):fetchone())
        end)
    end)

    -- API.md: closed, in_transaction and total_changes are read-only (assigning raises
    -- ProgrammingError), row is settable; README: timeout is settable too.
    describe("fields", function()
        -- Assigns conn[field] = value, which must raise ProgrammingError naming the field.
        local function refused(field, value, pattern)
            local err = raises("ProgrammingError", function()
                conn[field] = value
            end)
            assert.matches(pattern or (field .. " is read%-only"), err.message, 1)
            return err
        end

        it("closed, in_transaction and total_changes are read-only and keep their values",
           function()
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            for _, value in ipairs({ true, false, 0, "x" }) do
                refused("closed", value)
                refused("in_transaction", value)
                refused("total_changes", value)
            end
            refused("closed", nil) -- nil too: the fields are not in the table to be removed
            refused("in_transaction", nil)
            assert.is_false(conn.closed)
            assert.is_false(conn.in_transaction)
            assert.are.equal(1, conn.total_changes)
            -- the values still follow the connection
            conn:execute("BEGIN")
            refused("in_transaction", false)
            assert.is_true(conn.in_transaction)
            conn:rollback()
            assert.is_false(conn.in_transaction)
            conn:close()
            refused("closed", false)
            assert.is_true(conn.closed)
        end)

        it("assigning a method raises ProgrammingError and the method stays", function()
            refused("execute", function() end)
            refused("close", nil)
            assert.are.same({ 1, n = 1 }, conn:execute("SELECT 1"):fetchone())
        end)

        it("row refuses a bad shape with ProgrammingError saying what it must be, and keeps "
           .. "the old shape", function()
            conn.row = "named"
            for _, bad in ipairs({ "bogus", "NAMED", 5, true, {} }) do
                local err = refused("row", bad, 'row must be "array", "named" or a function')
                assert.matches(tostring(bad), err.message, 1, true)
            end
            refused("row", nil, "row must be")
            assert.are.equal("named", conn.row)
            assert.are.same({ x = 1 }, conn:execute("SELECT 1 AS x"):fetchone())
            -- the same words as connect's check of its row option
            local err = raises("ProgrammingError", sqlite.connect, ":memory:", { row = "bogus" })
            assert.matches('"array", "named" or a function', err.message, 1, true)
        end)

        it("timeout can be set and cleared; cursors take it; a bad one raises only when used",
           function()
            assert.is_nil(conn.timeout)
            conn.timeout = 2
            assert.are.equal(2, conn.timeout)
            assert.are.equal(2, conn:cursor().timeout)
            conn.timeout = nil
            assert.is_nil(conn.timeout)
            assert.is_nil(conn:cursor().timeout)
            conn.timeout = "soon" -- accepted here, as it always was: checked at use
            assert.are.equal("soon", conn.timeout)
            local err = raises("ProgrammingError", conn.execute, conn, "SELECT 1")
            assert.matches("timeout", err.message)
            conn.timeout = 1
            assert.are.same({ 1, n = 1 }, conn:execute("SELECT 1"):fetchone())
            local c = open(":memory:", { timeout = 3 })
            assert.are.equal(3, c.timeout)
            assert.are.equal(3, c:execute("SELECT 1").timeout)
        end)

        it("an unknown field raises ProgrammingError naming it, so a typo is not silent", function()
            for _, field in ipairs({ "rows", "Row", "in_transactions", "foo" }) do
                local err = refused(field, "named", "'" .. field .. "'")
                assert.matches("row and timeout", err.message, 1, true)
                assert.is_nil(conn[field])
            end
            refused(1, true, "'1'")
            assert.are.equal("array", conn.row)
            assert.is_false(conn.closed)
        end)
    end)

    describe("stats()", function()
        it("has the documented shape", function()
            local c = open(":memory:", { readers = 2 })
            local s = c:stats()
            assert.are.equal("table", type(s.writer))
            for _, key in ipairs({ "executed", "queued", "batches" }) do
                assert.are.equal("number", type(s.writer[key]), "writer." .. key)
            end
            assert.are.equal("number", type(s.injector))
            assert.are.equal(2, #s.readers)
            for i, r in ipairs(s.readers) do
                for _, key in ipairs({ "executed", "stolen", "queued" }) do
                    assert.are.equal("number", type(r[key]), "readers[" .. i .. "]." .. key)
                end
                assert.are.equal("boolean", type(r.streaming), "readers[" .. i .. "].streaming")
            end
        end)

        it("writer.executed grows by at least one per write", function()
            local before = conn:stats().writer.executed
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            conn:execute("INSERT INTO t (v) VALUES ('b')")
            conn:execute("UPDATE t SET v = 'c' WHERE v = 'a'")
            assert.is_true(conn:stats().writer.executed >= before + 3)
        end)

        it("a SELECT counts on a reader, not on the writer", function()
            local c = open(new_path(), { readers = 2, inline_reads = false }) -- counted on readers
            c:execute("CREATE TABLE t (x)")
            c:execute("INSERT INTO t VALUES (1)")
            c:execute("SELECT x FROM t"):fetchall() -- the first run may teach the router
            local s0 = c:stats()
            for _ = 1, 5 do
                c:execute("SELECT x FROM t"):fetchall()
            end
            local s1 = c:stats()
            assert.are.equal(s0.writer.executed, s1.writer.executed)
            assert.are.equal(reader_executed(s0) + 5, reader_executed(s1))
        end)

        it("queues are empty when nothing is running", function()
            conn:execute("INSERT INTO t (v) VALUES ('a')")
            local s = conn:stats()
            assert.are.equal(0, s.writer.queued)
            for _, r in ipairs(s.readers) do
                assert.are.equal(0, r.queued)
            end
        end)
    end)

    describe("close", function()
        it("sets conn.closed and is idempotent", function()
            assert.is_false(conn.closed)
            conn:close()
            assert.is_true(conn.closed)
            conn:close()
            assert.is_true(conn.closed)
        end)

        for _, case in ipairs({
            { "execute", function(c) return c:execute("SELECT 1") end },
            { "executemany", function(c)
                return c:executemany("INSERT INTO t (v) VALUES (?)", { { "a" } })
            end },
            { "executescript", function(c) return c:executescript("SELECT 1;") end },
            { "cursor", function(c) return c:cursor() end },
            { "commit", function(c) return c:commit() end },
            { "rollback", function(c) return c:rollback() end },
            { "stats", function(c) return c:stats() end },
            { "total_changes", function(c) return c.total_changes end },
        }) do
            it(case[1] .. " after close raises ConnectionClosedError", function()
                conn:close()
                local err = raises("ConnectionClosedError", case[2], conn)
                assert.is_true(err:is("PoolError"))
            end)
        end

        it("fetching from a cursor of a closed connection raises ConnectionClosedError", function()
            conn:executemany("INSERT INTO t (v) VALUES (?)", { { "a" }, { "b" }, { "c" } })
            local cur = conn:execute("SELECT v FROM t ORDER BY v")
            assert.are.same({ "a", n = 1 }, cur:fetchone())
            conn:close()
            raises("ConnectionClosedError", cur.fetchone, cur)
            raises("ConnectionClosedError", cur.fetchall, cur)
            raises("ConnectionClosedError", cur.fetchmany, cur, 2)
            raises("ConnectionClosedError", cur.execute, cur, "SELECT 1")
        end)

        it("keeps the writes that returned before it (file database reopened)", function()
            local path = new_path()
            local c = open(path)
            c:execute("CREATE TABLE t (x)")
            c:executemany("INSERT INTO t VALUES (?)", { { 1 }, { 2 }, { 3 } })
            c:close()
            local again = open(path)
            assert.are.equal(6, scalar(again, "SELECT sum(x) FROM t"))
        end)

        it("rolls back an open transaction", function()
            local path = new_path()
            local c = open(path)
            c:execute("CREATE TABLE t (x)")
            c:execute("BEGIN")
            c:execute("INSERT INTO t VALUES (1)")
            c:close()
            local again = open(path)
            assert.are.equal(0, count_rows(again, "t"))
        end)

        it("succeeds with a half-consumed large result open", function()
            conn:execute([[WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50000)
                           INSERT INTO t (id, v) SELECT i, 'v' || i FROM c]])
            local cur = conn:execute("SELECT id, v FROM t ORDER BY id")
            assert.are.same({ 1, "v1", n = 2 }, cur:fetchone())
            conn:close()
            assert.is_true(conn.closed)
        end)

        it("works from a coroutine and leaves conn.closed true", function()
            sqlite.run(function()
                conn:execute("INSERT INTO t (v) VALUES ('a')")
                conn:close()
            end)
            assert.is_true(conn.closed)
            raises("ConnectionClosedError", conn.execute, conn, "SELECT 1")
        end)

        it("<close> closes the connection at scope exit (Lua 5.4)", function()
            local path = new_path()
            if _VERSION == "Lua 5.4" then
                local chunk = assert(load([[
                    local sqlite, path = ...
                    local escaped
                    do
                        local conn <close> = sqlite.connect(path)
                        escaped = conn
                        conn:execute("CREATE TABLE t (x)")
                        conn:execute("INSERT INTO t VALUES (42)")
                        assert(not conn.closed)
                    end
                    return escaped
                ]]))
                local c = chunk(sqlite, path)
                assert.is_true(c.closed)
                raises("ConnectionClosedError", c.execute, c, "SELECT 1")
            else
                -- no <close> syntax here: the metamethod it would call must still close
                local c = sqlite.connect(path)
                c:execute("CREATE TABLE t (x)")
                c:execute("INSERT INTO t VALUES (42)")
                local mt = getmetatable(c)
                assert.are.equal("function", type(mt.__close))
                mt.__close(c)
                assert.is_true(c.closed)
            end
            local again = open(path)
            assert.are.equal(42, scalar(again, "SELECT x FROM t"))
        end)
    end)
end)
