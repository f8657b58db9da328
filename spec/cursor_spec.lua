-- Cursor behaviour: fetchone/fetchmany/fetchall/rows, description, rowcount, lastrowid,
-- arraysize, row shapes (array, named, function), close, and large streamed results.
-- Runs under Lua 5.4 and LuaJIT; the Lua 5.4-only `<close>` test is compiled with load().

local sqlite = require "pasyn_sqlite"
local support = require "support"

local null = sqlite.null

local raises, scalar = support.raises, support.scalar
local temp_path, remove_db = support.temp_path, support.remove_db

-- Array rows {i, n = 1} for i = first..last.
local function int_rows(first, last)
    local rows = {}
    for i = first, last do
        rows[#rows + 1] = { i, n = 1 }
    end
    return rows
end

local conn

before_each(function()
    conn = sqlite.connect(":memory:")
    conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)")
    -- five rows, ids 1..5
    conn:executemany("INSERT INTO t (id, name, score) VALUES (?, ?, ?)", {
        { 1, "one", 1.5 }, { 2, "two", 2.5 }, { 3, "three", 3.5 }, { 4, "four", 4.5 }, { 5, "five", 5.5 },
    })
end)

after_each(function()
    pcall(conn.close, conn)
end)

describe("fetching", function()
    it("fetchone() returns the rows in order, then nil, and nil again after that", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        for i = 1, 5 do
            assert.are.same({ i, n = 1 }, cur:fetchone())
        end
        assert.is_nil(cur:fetchone())
        assert.is_nil(cur:fetchone())
    end)

    it("fetchone() on a SELECT with no rows returns nil", function()
        assert.is_nil(conn:execute("SELECT id FROM t WHERE id > 100"):fetchone())
    end)

    it("fetchmany(n) returns up to n rows per call, then an empty table", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        assert.are.same(int_rows(1, 2), cur:fetchmany(2))
        assert.are.same(int_rows(3, 4), cur:fetchmany(2))
        assert.are.same(int_rows(5, 5), cur:fetchmany(2))
        assert.are.same({}, cur:fetchmany(2))
    end)

    it("fetchmany(n) with n larger than the result returns every row", function()
        assert.are.same(int_rows(1, 5), conn:execute("SELECT id FROM t ORDER BY id"):fetchmany(100))
    end)

    it("fetchmany() without n returns cur.arraysize rows (default 1)", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        assert.are.equal(1, cur.arraysize)
        assert.are.same(int_rows(1, 1), cur:fetchmany())
        cur.arraysize = 3
        assert.are.same(int_rows(2, 4), cur:fetchmany())
        assert.are.same(int_rows(5, 5), cur:fetchmany())
        assert.are.same({}, cur:fetchmany())
    end)

    it("fetchall() returns every remaining row, then an empty table", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        assert.are.same({ 1, n = 1 }, cur:fetchone())
        assert.are.same(int_rows(2, 5), cur:fetchall())
        assert.are.same({}, cur:fetchall())
        assert.is_nil(cur:fetchone())
    end)

    it("fetchall() on a statement without rows returns an empty table", function()
        assert.are.same({}, conn:execute("UPDATE t SET score = 0 WHERE id = 1"):fetchall())
    end)

    it("rows() iterates every row once, in order", function()
        local got = {}
        for row in conn:execute("SELECT id, name FROM t ORDER BY id DESC"):rows() do
            got[#got + 1] = row[1] .. "=" .. row[2]
        end
        assert.are.same({ "5=five", "4=four", "3=three", "2=two", "1=one" }, got)
    end)

    it("fetchone, fetchmany and fetchall mix on one cursor without losing or repeating rows", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        assert.are.same({ 1, n = 1 }, cur:fetchone())
        assert.are.same(int_rows(2, 3), cur:fetchmany(2))
        local rest = {}
        for row in cur:rows() do
            rest[#rest + 1] = row
        end
        assert.are.same(int_rows(4, 5), rest)
    end)

    it("a second execute on a cursor replaces its remaining rows", function()
        local cur = conn:cursor()
        cur:execute("SELECT id FROM t ORDER BY id")
        assert.are.same({ 1, n = 1 }, cur:fetchone())
        assert.are.equal(cur, cur:execute("SELECT name FROM t WHERE id = 4"))
        assert.are.same({ { "four", n = 1 } }, cur:fetchall())
    end)

    it("two cursors over the same table are independent", function()
        local a = conn:execute("SELECT id FROM t ORDER BY id")
        local b = conn:execute("SELECT id FROM t ORDER BY id DESC")
        assert.are.same({ 1, n = 1 }, a:fetchone())
        assert.are.same({ 5, n = 1 }, b:fetchone())
        assert.are.same({ 2, n = 1 }, a:fetchone())
        assert.are.same({ 4, n = 1 }, b:fetchone())
    end)

    it("fetching works the same inside a coroutine of sqlite.run", function()
        local got = sqlite.run(function()
            local cur = conn:execute("SELECT id FROM t ORDER BY id")
            local out = { cur:fetchone()[1] }
            for _, row in ipairs(cur:fetchmany(2)) do
                out[#out + 1] = row[1]
            end
            for row in cur:rows() do
                out[#out + 1] = row[1]
            end
            return out
        end)
        assert.are.same({ 1, 2, 3, 4, 5 }, got)
    end)
end)

describe("cur.description", function()
    it("is nil for an INSERT without RETURNING", function()
        assert.is_nil(conn:execute("INSERT INTO t (name) VALUES ('x')").description)
    end)

    it("is nil for DDL", function()
        assert.is_nil(conn:execute("CREATE TABLE u (a)").description)
    end)

    it("gives name and decltype per column of a SELECT, with [1] equal to the name", function()
        local d = conn:execute("SELECT id, name AS label, score, data, 1 + 1 AS two FROM t").description
        assert.are.equal(5, #d)
        local want = {
            { "id", "INTEGER" }, { "label", "TEXT" }, { "score", "REAL" }, { "data", "BLOB" }, { "two", nil },
        }
        for i, w in ipairs(want) do
            assert.are.equal(w[1], d[i].name, "column " .. i)
            assert.are.equal(w[1], d[i][1], "column " .. i .. " [1]")
            assert.are.equal(w[2], d[i].decltype, "column " .. i .. " decltype")
        end
    end)

    it("is set for a SELECT that returns no rows", function()
        local d = conn:execute("SELECT id, name FROM t WHERE 0").description
        assert.are.equal(2, #d)
        assert.are.equal("id", d[1].name)
        assert.are.equal("name", d[2].name)
    end)

    it("goes back to nil when the cursor next runs a statement without columns", function()
        local cur = conn:cursor()
        cur:execute("SELECT id FROM t")
        assert.are.equal("id", cur.description[1].name)
        cur:execute("DELETE FROM t WHERE id = 1")
        assert.is_nil(cur.description)
    end)

    it("is nil on a fresh cursor", function()
        assert.is_nil(conn:cursor().description)
    end)

    it("follows a renamed column and a changed type for the same SQL text", function()
        local sql = "SELECT * FROM t WHERE id = 1"
        assert.are.equal("name", conn:execute(sql).description[2].name)
        assert.are.equal("name", conn:execute(sql).description[2].name) -- the kept description
        conn:execute("ALTER TABLE t RENAME COLUMN name TO label")
        local cur = conn:execute(sql)
        assert.are.equal("label", cur.description[2].name)
        assert.are.same({ "label", name = "label", decltype = "TEXT" }, cur.description[2])
        local named = conn:cursor()
        named.row = "named"
        assert.are.equal("one", named:execute(sql):fetchone().label)
        conn:execute("CREATE TABLE v (id INTEGER PRIMARY KEY, label BLOB)")
        conn:execute("DROP TABLE t")
        conn:execute("ALTER TABLE v RENAME TO t")
        assert.are.equal("BLOB", conn:execute(sql).description[2].decltype)
    end)
end)

describe("cur.rowcount", function()
    it("is -1 for a SELECT", function()
        local cur = conn:execute("SELECT * FROM t")
        assert.are.equal(-1, cur.rowcount)
        cur:fetchall()
        assert.are.equal(-1, cur.rowcount)
    end)

    it("is -1 for DDL", function()
        assert.are.equal(-1, conn:execute("CREATE TABLE u (a)").rowcount)
        assert.are.equal(-1, conn:execute("DROP TABLE u").rowcount)
    end)

    it("is 1 for a one-row INSERT and 3 for a three-row INSERT", function()
        assert.are.equal(1, conn:execute("INSERT INTO t (name) VALUES ('x')").rowcount)
        assert.are.equal(3, conn:execute("INSERT INTO t (name) VALUES ('a'), ('b'), ('c')").rowcount)
    end)

    it("counts the rows an UPDATE changed", function()
        assert.are.equal(3, conn:execute("UPDATE t SET score = 0 WHERE id <= 3").rowcount)
        assert.are.equal(0, conn:execute("UPDATE t SET score = 0 WHERE id > 100").rowcount)
    end)

    it("counts the rows a DELETE removed", function()
        assert.are.equal(2, conn:execute("DELETE FROM t WHERE id IN (4, 5)").rowcount)
        assert.are.equal(3, conn:execute("DELETE FROM t").rowcount)
    end)

    it("is 1 for a REPLACE", function()
        assert.are.equal(1, conn:execute("REPLACE INTO t (id, name) VALUES (1, 'uno')").rowcount)
        assert.are.equal("uno", scalar(conn, "SELECT name FROM t WHERE id = 1"))
    end)

    it("sums the rows of every parameter set for executemany", function()
        local cur = conn:executemany("DELETE FROM t WHERE id > ?", { { 4 }, { 2 }, { 100 } })
        assert.are.equal(3, cur.rowcount)
    end)

    it("is -1 on a fresh cursor", function()
        assert.are.equal(-1, conn:cursor().rowcount)
    end)

    it("goes back to -1 when a SELECT follows an UPDATE on the same cursor", function()
        local cur = conn:cursor()
        cur:execute("UPDATE t SET score = 1")
        assert.are.equal(5, cur.rowcount)
        cur:execute("SELECT * FROM t")
        assert.are.equal(-1, cur.rowcount)
    end)
end)

describe("cur.lastrowid", function()
    it("is nil on a fresh cursor and after a SELECT", function()
        local cur = conn:cursor()
        assert.is_nil(cur.lastrowid)
        cur:execute("SELECT * FROM t")
        assert.is_nil(cur.lastrowid)
    end)

    it("is the rowid of the row an INSERT inserted", function()
        local cur = conn:execute("INSERT INTO t (name) VALUES ('six')")
        assert.are.equal(6, cur.lastrowid)
        cur:execute("INSERT INTO t (id, name) VALUES (42, 'answer')")
        assert.are.equal(42, cur.lastrowid)
        assert.are.equal("answer", scalar(conn, "SELECT name FROM t WHERE rowid = ?", cur.lastrowid))
    end)

    it("is unchanged by an INSERT OR IGNORE that ignored its row", function()
        local cur = conn:execute("INSERT INTO t (id, name) VALUES (10, 'ten')")
        assert.are.equal(10, cur.lastrowid)
        cur:execute("INSERT OR IGNORE INTO t (id, name) VALUES (1, 'dup')")
        assert.are.equal(0, cur.rowcount)
        assert.are.equal(10, cur.lastrowid)
    end)

    it("is unchanged by an UPDATE or a SELECT after an INSERT", function()
        local cur = conn:execute("INSERT INTO t (id, name) VALUES (10, 'ten')")
        cur:execute("UPDATE t SET name = 'TEN' WHERE id = 10")
        assert.are.equal(10, cur.lastrowid)
        cur:execute("SELECT * FROM t")
        assert.are.equal(10, cur.lastrowid)
    end)

    it("belongs to the cursor: another cursor's INSERT does not change it", function()
        local a = conn:execute("INSERT INTO t (id, name) VALUES (10, 'ten')")
        local b = conn:execute("INSERT INTO t (id, name) VALUES (20, 'twenty')")
        assert.are.equal(10, a.lastrowid)
        assert.are.equal(20, b.lastrowid)
    end)

    it("is set by an INSERT inside a coroutine", function()
        local id = sqlite.run(function()
            return conn:execute("INSERT INTO t (id, name) VALUES (77, 'x')").lastrowid
        end)
        assert.are.equal(77, id)
    end)

    -- The update hook that tells a REPLACE of the last rowid names the table: a name of any
    -- length must do.
    it("is set by a REPLACE of the last rowid into a table with a long name", function()
        local name = "t_" .. string.rep("x", 300)
        conn:execute("CREATE TABLE " .. name .. " (id INTEGER PRIMARY KEY, v)")
        conn:execute("INSERT INTO " .. name .. " (id, v) VALUES (7, 'a')")
        assert.equal(7, conn:execute("REPLACE INTO " .. name .. " (id, v) VALUES (7, 'b')").lastrowid)
    end)

    -- EXPLAIN runs nothing: no rowcount, no rowid, and executemany does not take it.
    it("EXPLAIN of a write changes nothing: rowcount -1, lastrowid unset, refused by executemany",
       function()
        conn:execute("CREATE TABLE e (x)")
        conn:execute("INSERT INTO e VALUES (1), (2), (3)")
        for _, sql in ipairs({ "EXPLAIN QUERY PLAN DELETE FROM e WHERE x = 1",
                               "EXPLAIN INSERT INTO e VALUES (4)" }) do
            local cur = conn:execute(sql)
            assert.equal(-1, cur.rowcount, sql)
            assert.is_nil(cur.lastrowid, sql)
        end
        assert.equal(3, conn:execute("SELECT count(*) FROM e"):fetchone()[1])
        support.raises("ProgrammingError", conn.executemany, conn, "EXPLAIN UPDATE e SET x = ?",
                       { { 1 } })
    end)
end)

describe("row shapes", function()
    it("array rows are {v1, ..., n = column_count}", function()
        local row = conn:execute("SELECT id, name, score FROM t WHERE id = 2"):fetchone()
        assert.are.same({ 2, "two", 2.5, n = 3 }, row)
    end)

    it("array rows carry sqlite.null for NULL so #row and ipairs see every column", function()
        local row = conn:execute("SELECT 1, NULL, 'x', NULL"):fetchone()
        assert.are.equal(4, row.n)
        assert.are.equal(4, #row)
        assert.are.equal(null, row[2])
        assert.are.equal(null, row[4])
        local seen = 0
        for i, v in ipairs(row) do
            seen = i
            assert.is_not_nil(v)
        end
        assert.are.equal(4, seen)
    end)

    it("a row of only NULLs still has every column", function()
        local row = conn:execute("SELECT NULL, NULL"):fetchone()
        assert.are.same({ null, null, n = 2 }, row)
    end)

    it("named rows are {column = value} and carry sqlite.null so pairs sees every column", function()
        local cur = conn:cursor()
        cur.row = "named"
        local row = cur:execute("SELECT id, name, data FROM t WHERE id = 3"):fetchone()
        assert.are.same({ id = 3, name = "three", data = null }, row)
        local keys = 0
        for _ in pairs(row) do
            keys = keys + 1
        end
        assert.are.equal(3, keys)
    end)

    it("a statement that waits takes the shape cur.row has when it completes, set meanwhile",
       function()
        -- no read runs on the caller's thread: each one waits
        local path = temp_path()
        finally(function() remove_db(path) end)
        local waits = sqlite.connect(path, { inline_reads = false })
        finally(function() waits:close() end)
        waits:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        waits:executemany("INSERT INTO t VALUES (?, ?)", { { 1, "one" }, { 2, "two" } })
        -- one row (kept as the row itself) and several (an array of rows), either way round
        for _, case in ipairs({
            { "SELECT id, name FROM t WHERE id = 2", "named", { { id = 2, name = "two" } } },
            { "SELECT id, name FROM t WHERE id <= 2 ORDER BY id", "named",
              { { id = 1, name = "one" }, { id = 2, name = "two" } } },
            { "SELECT id, name FROM t WHERE id = 2", "array", { { 2, "two", n = 2 } } },
            { "SELECT id, name FROM t WHERE id <= 2 ORDER BY id", "array",
              { { 1, "one", n = 2 }, { 2, "two", n = 2 } } },
        }) do
            local sql, shape, want = case[1], case[2], case[3]
            local cur = waits:cursor()
            cur.row = shape == "named" and "array" or "named"
            local got = sqlite.run(function()
                local h = sqlite.spawn(function()
                    return cur:execute(sql):fetchall()
                end)
                coroutine.yield() -- the spawned one runs its statement and waits for it
                cur.row = shape
                return h:join()
            end)
            assert.are.same(want, got)
        end
    end)

    it("named rows from a connection with row = 'named', for fetchall and rows()", function()
        local c = sqlite.connect(":memory:", { row = "named" })
        local all = c:execute("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y'"):fetchall()
        assert.are.same({ { a = 1, b = "x" }, { a = 2, b = "y" } }, all)
        local seen = {}
        for row in c:execute("SELECT 3 AS a"):rows() do
            seen[#seen + 1] = row
        end
        assert.are.same({ { a = 3 } }, seen)
        c:close()
    end)

    it("a row function gets (cursor, row_array) and fetches return its result", function()
        local cur = conn:cursor()
        local got_cursor, got_row
        cur.row = function(c, row)
            got_cursor, got_row = c, row
            return { id = row[1], upper = row[2]:upper() }
        end
        local row = cur:execute("SELECT id, name FROM t WHERE id = 1"):fetchone()
        assert.are.same({ id = 1, upper = "ONE" }, row)
        assert.are.equal(cur, got_cursor)
        assert.are.same({ 1, "one", n = 2 }, got_row)
    end)

    it("a row function applies to fetchmany, fetchall and rows()", function()
        local cur = conn:cursor()
        cur.row = function(_, row)
            return row[1] * 10
        end
        cur:execute("SELECT id FROM t ORDER BY id")
        assert.are.same({ 10, 20 }, cur:fetchmany(2))
        assert.are.equal(30, cur:fetchone())
        assert.are.same({ 40, 50 }, cur:fetchall())
        local seen = {}
        for v in cur:execute("SELECT id FROM t WHERE id < 3 ORDER BY id"):rows() do
            seen[#seen + 1] = v
        end
        assert.are.same({ 10, 20 }, seen)
    end)

    it("a row function can read cur.description", function()
        local cur = conn:cursor()
        cur.row = function(c, row)
            local out = {}
            for i, col in ipairs(c.description) do
                out[col.name] = row[i]
            end
            return out
        end
        local row = cur:execute("SELECT id, name FROM t WHERE id = 5"):fetchone()
        assert.are.same({ id = 5, name = "five" }, row)
    end)

    it("a cursor takes conn.row when it is created", function()
        conn.row = "named"
        local cur = conn:cursor()
        conn.row = "array"
        assert.are.equal("named", cur.row)
        assert.are.same({ id = 1 }, cur:execute("SELECT id FROM t WHERE id = 1"):fetchone())
    end)
end)

describe("cur:close()", function()
    it("makes fetchone, fetchmany and fetchall raise ProgrammingError", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        assert.are.same({ 1, n = 1 }, cur:fetchone())
        cur:close()
        raises("ProgrammingError", cur.fetchone, cur)
        raises("ProgrammingError", cur.fetchmany, cur, 2)
        raises("ProgrammingError", cur.fetchall, cur)
    end)

    it("makes rows() iteration raise ProgrammingError", function()
        local cur = conn:execute("SELECT id FROM t")
        cur:close()
        raises("ProgrammingError", function()
            for _ in cur:rows() do -- luacheck: ignore
            end
        end)
    end)

    it("makes execute on the cursor raise ProgrammingError", function()
        local cur = conn:cursor()
        cur:close()
        raises("ProgrammingError", cur.execute, cur, "SELECT 1")
    end)

    it("is idempotent", function()
        local cur = conn:execute("SELECT id FROM t")
        cur:close()
        cur:close()
        raises("ProgrammingError", cur.fetchone, cur)
    end)

    it("leaves the connection and its other cursors working", function()
        local a = conn:execute("SELECT id FROM t ORDER BY id")
        local b = conn:execute("SELECT id FROM t ORDER BY id")
        a:fetchone()
        a:close()
        assert.are.same(int_rows(1, 5), b:fetchall())
        assert.are.equal(5, scalar(conn, "SELECT count(*) FROM t"))
        conn:execute("INSERT INTO t (name) VALUES ('six')")
        assert.are.equal(6, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("<close> closes the cursor at scope exit (Lua 5.4)", function()
        if _VERSION == "Lua 5.4" then
            local chunk = assert(load([[
                local conn = ...
                local escaped, first
                do
                    local cur <close> = conn:execute("SELECT id FROM t ORDER BY id")
                    escaped = cur
                    first = cur:fetchone()[1]
                end
                return escaped, first
            ]]))
            local cur, first = chunk(conn)
            assert.are.equal(1, first)
            raises("ProgrammingError", cur.fetchone, cur)
        else
            -- no <close> syntax here: the metamethod it would call must still close
            local cur = conn:execute("SELECT id FROM t ORDER BY id")
            local mt = getmetatable(cur)
            assert.are.equal("function", type(mt.__close))
            mt.__close(cur)
            raises("ProgrammingError", cur.fetchone, cur)
        end
        -- the connection is untouched
        assert.are.equal(5, scalar(conn, "SELECT count(*) FROM t"))
    end)
end)

describe("cur.connection", function()
    it("is the connection the cursor came from", function()
        assert.are.equal(conn, conn:cursor().connection)
        assert.are.equal(conn, conn:execute("SELECT 1").connection)
        assert.are.equal(conn, conn:executemany("INSERT INTO t (name) VALUES (?)", { { "z" } }).connection)
    end)
end)

-- As Python's sqlite3 (cursor_members): description, rowcount, lastrowid and connection are
-- read-only; arraysize, row (row_factory) and timeout can be set.
describe("cursor fields", function()
    -- Assigns cur[field] = value, which must raise ProgrammingError naming the field.
    local function refused(cur, field, value, pattern)
        local err = raises("ProgrammingError", function()
            cur[field] = value
        end)
        assert.matches(pattern or (field .. " is read%-only"), err.message, 1)
        return err
    end

    it("description, rowcount, lastrowid and connection are read-only and keep their values",
       function()
        local cur = conn:execute("INSERT INTO t (id, name) VALUES (10, 'ten') RETURNING id")
        local description = cur.description
        for _, value in ipairs({ 7, "x", false, {} }) do
            for _, field in ipairs({ "description", "rowcount", "lastrowid", "connection" }) do
                refused(cur, field, value)
            end
        end
        for _, field in ipairs({ "description", "rowcount", "lastrowid", "connection" }) do
            refused(cur, field, nil) -- nil too: nothing to remove from the table
        end
        assert.are.equal(description, cur.description)
        assert.are.equal(1, cur.rowcount)
        assert.are.equal(10, cur.lastrowid)
        assert.are.equal(conn, cur.connection)
        -- nil values stay nil, and the fields still follow the statements
        local fresh = conn:cursor()
        refused(fresh, "description", {})
        refused(fresh, "lastrowid", 3)
        assert.is_nil(fresh.description)
        assert.is_nil(fresh.lastrowid)
        fresh:execute("DELETE FROM t WHERE id > 3")
        assert.are.equal(3, fresh.rowcount)
        assert.is_nil(fresh.description)
        assert.are.same({ { 10, n = 1 } }, cur:fetchall())
    end)

    it("assigning a method raises ProgrammingError and the method stays", function()
        local cur = conn:cursor()
        refused(cur, "fetchone", function() end)
        refused(cur, "execute", nil)
        assert.are.same({ 1, n = 1 }, cur:execute("SELECT id FROM t WHERE id = 1"):fetchone())
    end)

    it("row refuses a bad shape with ProgrammingError saying what it must be, and keeps the old "
       .. "shape", function()
        local cur = conn:cursor()
        cur.row = "named"
        for _, bad in ipairs({ 5, "bogus", "Array", false, {} }) do
            refused(cur, "row", bad, 'row must be "array", "named" or a function')
        end
        refused(cur, "row", nil, "row must be")
        assert.are.equal("named", cur.row)
        assert.are.same({ id = 1 }, cur:execute("SELECT id FROM t WHERE id = 1"):fetchone())
        cur.row = "array"
        assert.are.equal("array", cur.row)
    end)

    it("arraysize and timeout can be set, and cleared back to their defaults", function()
        local cur = conn:execute("SELECT id FROM t ORDER BY id")
        cur.arraysize = 2
        assert.are.equal(2, cur.arraysize)
        assert.are.same(int_rows(1, 2), cur:fetchmany())
        cur.arraysize = nil
        assert.are.equal(1, cur.arraysize)
        assert.are.same(int_rows(3, 3), cur:fetchmany())
        assert.is_nil(cur.timeout)
        cur.timeout = 0.5
        assert.are.equal(0.5, cur.timeout)
        cur.timeout = nil
        assert.is_nil(cur.timeout)
        -- a bad value is taken, and refused when used (as before fields were checked)
        cur.arraysize = "many"
        raises("ProgrammingError", cur.fetchmany, cur)
        cur.timeout = false
        assert.is_false(cur.timeout)
        raises("ProgrammingError", cur.execute, cur, "SELECT 1")
    end)

    it("an unknown field raises ProgrammingError naming it, so a typo is not silent", function()
        local cur = conn:cursor()
        for _, field in ipairs({ "row_factory", "array_size", "Row", "foo" }) do
            local err = refused(cur, field, "named", "'" .. field .. "'")
            assert.matches("arraysize, row and timeout", err.message, 1, true)
            assert.is_nil(cur[field])
        end
        assert.are.equal("array", cur.row)
    end)
end)

-- As Python's sqlite3 ("Recursive use of cursors not allowed."): a cursor is refused while an
-- operation of its own is under way.
describe("a cursor in use", function()
    local RECURSIVE = "^Recursive use of cursors not allowed%."

    local function refused_in_use(fn, ...)
        local err = raises("ProgrammingError", fn, ...)
        assert.matches(RECURSIVE, err.message)
        return err
    end

    -- Every way to use a cursor, each a function(cur).
    local uses = {
        { "execute", function(c) return c:execute("SELECT 1") end },
        { "executemany", function(c)
            return c:executemany("INSERT INTO t (name) VALUES (?)", { { "x" } })
        end },
        { "executescript", function(c) return c:executescript("SELECT 1;") end },
        { "fetchone", function(c) return c:fetchone() end },
        { "fetchmany", function(c) return c:fetchmany(2) end },
        { "fetchall", function(c) return c:fetchall() end },
        { "rows", function(c)
            for _ in c:rows() do -- luacheck: ignore
            end
        end },
        { "close", function(c) return c:close() end },
    }

    for _, use in ipairs(uses) do
        it("executemany's iterator cannot " .. use[1] .. " its own cursor; nothing is inserted, "
           .. "and the cursor works afterwards", function()
            local cur = conn:cursor()
            local n = 0
            local err = refused_in_use(cur.executemany, cur, "INSERT INTO t (name) VALUES (?)", function()
                n = n + 1
                if n == 3 then
                    use[2](cur)
                end
                if n <= 5 then
                    return { "row" .. n }
                end
            end)
            assert.are.equal("ProgrammingError", err.kind)
            assert.are.equal(5, scalar(conn, "SELECT count(*) FROM t"))
            -- released: the cursor goes on as usual
            cur:executemany("INSERT INTO t (name) VALUES (?)", { { "a" }, { "b" } })
            assert.are.equal(2, cur.rowcount)
            assert.are.same({ { 7, n = 1 } }, cur:execute("SELECT count(*) FROM t"):fetchall())
        end)

        it("a row function cannot " .. use[1] .. " its own cursor, and the cursor works afterwards",
           function()
            local cur = conn:cursor()
            cur.row = function(c, row)
                if row[1] == 2 then
                    use[2](c)
                end
                return row[1]
            end
            cur:execute("SELECT id FROM t ORDER BY id")
            assert.are.equal(1, cur:fetchone())
            refused_in_use(cur.fetchone, cur) -- row 2's function refused: row 2 is used up
            assert.are.equal(3, cur:fetchone())
            cur:execute("SELECT id FROM t ORDER BY id")
            refused_in_use(cur.fetchall, cur)
            assert.are.same({ 3, 4, 5 }, cur:fetchall())
            cur:execute("SELECT id FROM t ORDER BY id")
            refused_in_use(cur.fetchmany, cur, 3)
            assert.are.same({ 3, 4 }, cur:fetchmany(2))
            cur:execute("SELECT id FROM t ORDER BY id")
            refused_in_use(function()
                for _ in cur:rows() do -- luacheck: ignore
                end
            end)
            assert.are.same({ 3, 4, 5 }, cur:fetchall())
            assert.is_false(cur:execute("SELECT 1").connection.closed)
        end)
    end

    it("a row function may use the connection and other cursors", function()
        local other = conn:cursor()
        local cur = conn:cursor()
        cur.row = function(_, row)
            return scalar(conn, "SELECT name FROM t WHERE id = ?", row[1]) ..
                   other:execute("SELECT ? * 2", row[1]):fetchone()[1]
        end
        cur:execute("SELECT id FROM t WHERE id < 3 ORDER BY id")
        assert.are.same({ "one2", "two4" }, cur:fetchall())
    end)

    it("executemany's iterator may use the connection and other cursors", function()
        local other = conn:cursor()
        local i = 0
        local cur = conn:executemany("INSERT INTO t (id, name) VALUES (?, ?)", function()
            i = i + 1
            if i <= 3 then
                return { 100 + i, other:execute("SELECT name FROM t WHERE id = ?", i):fetchone()[1] }
            end
        end)
        assert.are.equal(3, cur.rowcount)
        assert.are.equal("three", scalar(conn, "SELECT name FROM t WHERE id = 103"))
    end)

    it("executemany's iterator cannot use its cursor in a later chunk either (10000 rows each)",
       function()
        local cur = conn:cursor()
        local n = 0
        refused_in_use(cur.executemany, cur, "INSERT INTO t (name) VALUES (?)", function()
            n = n + 1
            -- chunk 3: read after the wait for chunk 1, which marks the cursor in use itself
            if n == 25000 then
                cur:execute("SELECT 1")
            end
            if n <= 35000 then
                return { "r" }
            end
        end)
        assert.are.equal(5, scalar(conn, "SELECT count(*) FROM t")) -- all or nothing
        assert.is_false(conn.in_transaction)
        assert.are.equal(3, cur:executemany("DELETE FROM t WHERE id > ?", { { 2 } }).rowcount)
    end)

    it("an error of the statement, the iterator or the row function leaves the cursor free",
       function()
        local cur = conn:cursor()
        raises("OperationalError", cur.execute, cur, "SELEC 1")
        raises("IntegrityError", cur.executemany, cur, "INSERT INTO t (id) VALUES (?)", { { 1 } })
        local ok, err = pcall(cur.executemany, cur, "INSERT INTO t (name) VALUES (?)", function()
            error("iterator failed")
        end)
        assert.is_false(ok)
        assert.matches("iterator failed", err) -- unchanged: a string
        cur.row = function(_, row)
            if row[1] == 2 then
                error({ mine = true })
            end
            return row[1]
        end
        cur:execute("SELECT id FROM t ORDER BY id")
        ok, err = pcall(cur.fetchall, cur)
        assert.is_false(ok)
        assert.are.same({ mine = true }, err) -- unchanged: the same table
        assert.are.same({ 3, 4, 5 }, cur:fetchall()) -- row 2 was used up
        cur:execute("SELECT id FROM t WHERE id = 2")
        assert.is_false((pcall(cur.fetchone, cur)))
        cur.row = "array"
        assert.are.same({ { 5, n = 1 } }, cur:execute("SELECT count(*) FROM t"):fetchall())
        cur:close()
    end)

    it("inside sqlite.run: the same errors leave the cursor free", function()
        sqlite.run(function()
            local cur = conn:cursor()
            raises("OperationalError", cur.execute, cur, "SELEC 1")
            raises("IntegrityError", cur.executemany, cur, "INSERT INTO t (id) VALUES (?)", { { 1 } })
            assert.are.same({ { 5, n = 1 } }, cur:execute("SELECT count(*) FROM t"):fetchall())
        end)
    end)

    it("another coroutine cannot use a cursor while its statement is on its way", function()
        local cur = conn:cursor()
        local seen = {}
        sqlite.run(function()
            local a = sqlite.spawn(function()
                return cur:execute("SELECT id FROM t ORDER BY id"):fetchall()
            end)
            local b = sqlite.spawn(function()
                -- a runs first and waits for its SELECT: every use of the cursor is refused
                for _, use in ipairs(uses) do
                    local ok, err = pcall(use[2], cur)
                    seen[use[1]] = not ok and sqlite.is_error(err) and err.kind == "ProgrammingError"
                                   and err.message:match(RECURSIVE) ~= nil
                end
                return a:join()
            end)
            assert.are.same(int_rows(1, 5), b:join())
        end)
        for _, use in ipairs(uses) do
            assert.is_true(seen[use[1]], use[1] .. " was not refused")
        end
        -- and free again once a's statement came back
        assert.are.same({ { 1, n = 1 } }, cur:execute("SELECT 1"):fetchall())
    end)

    it("another coroutine cannot use a cursor while its executemany iterator waits", function()
        local cur = conn:cursor()
        local refused_kind
        sqlite.run(function()
            local n = 0
            local a = sqlite.spawn(function()
                return cur:executemany("INSERT INTO t (name) VALUES (?)", function()
                    n = n + 1
                    if n == 2 then
                        sqlite.sleep(0.01)
                    end
                    if n <= 3 then
                        return { "x" }
                    end
                end).rowcount
            end)
            sqlite.spawn(function()
                local ok, err = pcall(cur.fetchall, cur)
                refused_kind = not ok and err.kind
            end)
            assert.are.equal(3, a:join())
        end)
        assert.are.equal("ProgrammingError", refused_kind)
        assert.are.equal(8, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("another coroutine cannot use a cursor while its row function is suspended", function()
        local cur = conn:cursor()
        cur.row = function(_, row)
            coroutine.yield("paused")
            return row[1]
        end
        cur:execute("SELECT id FROM t ORDER BY id")
        local co = coroutine.create(function()
            return cur:fetchall()
        end)
        assert.are.same({ true, "paused" }, { coroutine.resume(co) })
        refused_in_use(cur.fetchone, cur)
        refused_in_use(cur.close, cur)
        for _ = 1, 4 do
            coroutine.resume(co)
        end
        assert.are.same({ true, { 1, 2, 3, 4, 5 } }, { coroutine.resume(co) })
        cur:close() -- free again
    end)

    it("a coroutine closed while it held the cursor does not leave it in use (Lua 5.4)", function()
        if not coroutine.close then
            return -- LuaJIT, Lua 5.1: no coroutine.close, the only way to end one mid-operation
        end
        local cur = conn:cursor()
        cur.row = function(_, row)
            coroutine.yield()
            return row[1]
        end
        cur:execute("SELECT id FROM t ORDER BY id")
        local co = coroutine.create(function()
            return cur:fetchone()
        end)
        coroutine.resume(co)
        refused_in_use(cur.fetchone, cur)
        assert.is_true(coroutine.close(co))
        cur.row = "array"
        assert.are.same({ 2, n = 1 }, cur:fetchone()) -- row 1 went with the closed coroutine
        cur:close()
    end)
end)

describe("RETURNING", function()
    it("INSERT ... RETURNING gives the inserted rows, a description, rowcount and lastrowid", function()
        local cur = conn:execute("INSERT INTO t (name) VALUES ('six'), ('seven') RETURNING id, name")
        assert.are.equal("id", cur.description[1].name)
        assert.are.equal("name", cur.description[2].name)
        assert.are.same({ { 6, "six", n = 2 }, { 7, "seven", n = 2 } }, cur:fetchall())
        assert.are.equal(2, cur.rowcount)
        assert.are.equal(7, cur.lastrowid)
        assert.are.equal(7, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("DELETE ... RETURNING gives the deleted rows and removes them", function()
        local cur = conn:execute("DELETE FROM t WHERE id >= 4 RETURNING name")
        local names = {}
        for row in cur:rows() do
            names[#names + 1] = row[1]
        end
        table.sort(names)
        assert.are.same({ "five", "four" }, names)
        assert.are.equal(3, scalar(conn, "SELECT count(*) FROM t"))
    end)

    it("UPDATE ... RETURNING gives the new values", function()
        local sql = "UPDATE t SET score = score * 2 WHERE id = 2 RETURNING id, score"
        local rows = conn:execute(sql):fetchall()
        assert.are.same({ { 2, 5.0, n = 2 } }, rows)
    end)
end)

describe("PRAGMA rows", function()
    it("PRAGMA table_info returns one row per column with name, type and pk", function()
        local cur = conn:execute("PRAGMA table_info(t)")
        local names = {}
        for i, col in ipairs(cur.description) do
            names[i] = col.name
        end
        assert.are.same({ "cid", "name", "type", "notnull", "dflt_value", "pk" }, names)
        local rows = cur:fetchall()
        assert.are.same({
            { 0, "id", "INTEGER", 0, null, 1, n = 6 },
            { 1, "name", "TEXT", 0, null, 0, n = 6 },
            { 2, "score", "REAL", 0, null, 0, n = 6 },
            { 3, "data", "BLOB", 0, null, 0, n = 6 },
        }, rows)
    end)

    it("PRAGMA user_version can be set and read back", function()
        conn:execute("PRAGMA user_version = 12")
        assert.are.equal(12, scalar(conn, "PRAGMA user_version"))
    end)
end)

describe("large results", function()
    local N = 100000
    local path

    -- Every row is (i, a 100-character string of i's digits zero-padded).
    local function payload(i)
        local digits = tostring(i)
        return string.rep("0", 100 - #digits) .. digits
    end

    before_each(function()
        path = temp_path()
        conn:close()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE big (i INTEGER PRIMARY KEY, s TEXT)")
        conn:execute([[
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)
            INSERT INTO big SELECT i, printf('%0100d', i) FROM c]], N)
    end)

    after_each(function()
        pcall(conn.close, conn)
        remove_db(path)
    end)

    it("a fetchone loop over 100k rows gives every row once, in order", function()
        local cur = conn:execute("SELECT i, s FROM big ORDER BY i")
        local n = 0
        while true do
            local row = cur:fetchone()
            if not row then
                break
            end
            n = n + 1
            if row[1] ~= n or row[2] ~= payload(n) then
                assert.are.same({ n, payload(n), n = 2 }, row)
            end
        end
        assert.are.equal(N, n)
    end)

    it("rows() over 100k rows gives every row once, in order, inside a coroutine", function()
        local n, bad = sqlite.run(function()
            local count, wrong = 0, nil
            for row in conn:execute("SELECT i, s FROM big ORDER BY i"):rows() do
                count = count + 1
                if not wrong and (row[1] ~= count or row[2] ~= payload(count)) then
                    wrong = count
                end
            end
            return count, wrong
        end)
        assert.are.equal(N, n)
        assert.is_nil(bad)
    end)

    it("fetchall over 100k rows returns them all in order", function()
        local rows = conn:execute("SELECT i FROM big ORDER BY i"):fetchall()
        assert.are.equal(N, #rows)
        for i = 1, N, 997 do
            assert.are.equal(i, rows[i][1])
        end
        assert.are.equal(N, rows[N][1])
    end)

    it("fetchmany(1000) batches over 100k rows cover every row once", function()
        local cur = conn:execute("SELECT i FROM big ORDER BY i")
        local n = 0
        while true do
            local batch = cur:fetchmany(1000)
            if #batch == 0 then
                break
            end
            assert.is_true(#batch <= 1000)
            for _, row in ipairs(batch) do
                n = n + 1
                if row[1] ~= n then
                    assert.are.equal(n, row[1])
                end
            end
        end
        assert.are.equal(N, n)
    end)

    it("a half-read large cursor does not stop writes and reads on the connection", function()
        local cur = conn:execute("SELECT i FROM big ORDER BY i")
        assert.are.same({ 1, n = 1 }, cur:fetchone())
        conn:execute("INSERT INTO big (i, s) VALUES (?, 'extra')", N + 1)
        assert.are.equal(N + 1, scalar(conn, "SELECT count(*) FROM big"))
        assert.are.same({ 2, n = 1 }, cur:fetchone())
        cur:close()
    end)

    it("another coroutine cannot fetch from or close a cursor while its streamed fetch waits for "
       .. "a chunk", function()
        local cur = conn:execute("SELECT i FROM big ORDER BY i")
        assert.are.same({ 1, n = 1 }, cur:fetchone())
        assert.are.equal(1, support.streaming_readers(conn)) -- the rest comes in chunks
        local refused = {}
        local rows = sqlite.run(function()
            local a = sqlite.spawn(function()
                return cur:fetchall()
            end)
            sqlite.spawn(function()
                -- a has taken the chunk in memory and waits for the next one
                for _, name in ipairs({ "fetchone", "fetchall", "close" }) do
                    local ok, err = pcall(cur[name], cur)
                    refused[#refused + 1] = not ok and err.kind == "ProgrammingError"
                                            and err.message:match("^Recursive use") ~= nil
                end
            end)
            return a:join()
        end)
        assert.are.same({ true, true, true }, refused)
        assert.are.equal(N - 1, #rows) -- a's fetch went on untouched
        assert.are.equal(2, rows[1][1])
        assert.are.equal(N, rows[N - 1][1])
        assert.is_nil(cur:fetchone())
        cur:close()
    end)
end)
