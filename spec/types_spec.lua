-- Parameters and types: how Lua values bind (nil, boolean, integer, float, string, sqlite.blob,
-- sqlite.null), how SQL values come back, the three ways to pass parameters (array, map,
-- extra arguments), ?NNN, and the ProgrammingErrors for bad parameters and several statements.
-- Runs under Lua 5.4 and LuaJIT; exact 64-bit integer tests need Lua 5.3+ (math.type).

local sqlite = require "pasyn_sqlite"
local support = require "support"

local null = sqlite.null
local has_integers = math.type ~= nil -- Lua 5.3+: a separate integer subtype

local raises = support.raises

-- True when `message` holds the whole number n (not as part of a longer number).
local function names_number(message, n)
    return message:find("%f[%d]" .. n .. "%f[%D]") ~= nil
end

local conn

local function one(sql, ...)
    return conn:execute(sql, ...):fetchone()
end

-- The value of `SELECT ?` and SQLite's typeof() for it.
local function round_trip(value)
    local row = one("SELECT ?, typeof(?1)", { value, n = 1 })
    return row[1], row[2]
end

local function count_rows(tbl)
    return one("SELECT count(*) FROM " .. tbl)[1]
end

before_each(function()
    conn = sqlite.connect(":memory:")
end)

after_each(function()
    pcall(conn.close, conn)
end)

describe("integers", function()
    it("small integers round-trip as INTEGER", function()
        for _, v in ipairs({ 0, 1, -1, 42, 2147483647, -2147483648, 4294967296 }) do
            local got, typ = round_trip(v)
            assert.are.equal(v, got)
            assert.are.equal("integer", typ)
        end
    end)

    it("integers up to 2^53 round-trip exactly (also on LuaJIT)", function()
        for _, v in ipairs({ 9007199254740992, -9007199254740992, 9007199254740991, 1000000000000001 }) do
            local got, typ = round_trip(v)
            assert.are.equal(v, got)
            assert.are.equal("integer", typ)
        end
    end)

    it("an INTEGER column value up to 2^53 comes back exactly (also on LuaJIT)", function()
        conn:execute("CREATE TABLE n (v INTEGER)")
        conn:execute("INSERT INTO n VALUES (9007199254740991)")
        assert.are.equal(9007199254740991, one("SELECT v FROM n")[1])
    end)

    it("math.maxinteger and math.mininteger round-trip exactly as Lua integers", function()
        if not has_integers then
            return -- LuaJIT: numbers are doubles, covered up to 2^53 above
        end
        for _, v in ipairs({ math.maxinteger, math.mininteger, math.maxinteger - 1, math.mininteger + 1 }) do
            local got, typ = round_trip(v)
            assert.are.equal("integer", typ)
            assert.are.equal("integer", math.type(got))
            assert.is_true(v == got, "expected " .. tostring(v) .. ", got " .. tostring(got))
        end
    end)

    it("64-bit SQL literals come back as exact Lua integers, also through a table", function()
        if not has_integers then
            return
        end
        local row = one("SELECT 9223372036854775807, -9223372036854775808, 9007199254740993")
        assert.are.equal(math.maxinteger, row[1])
        assert.are.equal(math.mininteger, row[2])
        assert.are.equal("integer", math.type(row[3]))
        assert.are.equal(9007199254740993, row[3]) -- 2^53 + 1: not representable as a double
        conn:execute("CREATE TABLE n (v INTEGER)")
        conn:execute("INSERT INTO n VALUES (?)", math.maxinteger)
        conn:execute("INSERT INTO n VALUES (?)", 9007199254740993)
        assert.are.equal(math.maxinteger, one("SELECT max(v) FROM n")[1])
        assert.are.equal(1, one("SELECT count(*) FROM n WHERE v = 9007199254740993")[1])
    end)

    it("an integer result is a Lua integer (math.type) on Lua 5.3+", function()
        if not has_integers then
            return
        end
        assert.are.equal("integer", math.type(one("SELECT 7")[1]))
        assert.are.equal("integer", math.type(one("SELECT count(*) FROM sqlite_master")[1]))
    end)
end)

describe("floats", function()
    it("floats round-trip as REAL", function()
        for _, v in ipairs({ 1.5, -0.25, 3.141592653589793, 1e-300, 1.7976931348623157e308 }) do
            local got, typ = round_trip(v)
            assert.are.equal(v, got)
            assert.are.equal("real", typ)
        end
    end)

    it("an integral float stays a float (binds REAL on Lua 5.3+)", function()
        if has_integers then
            local got, typ = round_trip(2.0)
            assert.are.equal("real", typ)
            assert.are.equal("float", math.type(got))
            assert.are.equal(2.0, got)
        else
            -- LuaJIT: an integral number binds as INTEGER and comes back equal
            local got, typ = round_trip(2.0)
            assert.are.equal("integer", typ)
            assert.are.equal(2, got)
        end
    end)

    it("REAL results are floats even when integral", function()
        local row = one("SELECT 2.0, CAST(3 AS REAL)")
        assert.are.equal(2, row[1])
        assert.are.equal(3, row[2])
        if has_integers then
            assert.are.equal("float", math.type(row[1]))
            assert.are.equal("float", math.type(row[2]))
        end
    end)

    it("an integer stored in a REAL column comes back as a float", function()
        conn:execute("CREATE TABLE r (v REAL)")
        conn:execute("INSERT INTO r VALUES (?)", 3)
        local v = one("SELECT v, typeof(v) FROM r")
        assert.are.equal(3, v[1])
        assert.are.equal("real", v[2])
        if has_integers then
            assert.are.equal("float", math.type(v[1]))
        end
    end)

    it("infinities round-trip", function()
        assert.are.equal(math.huge, (round_trip(math.huge)))
        assert.are.equal(-math.huge, (round_trip(-math.huge)))
    end)
end)

describe("strings and blobs", function()
    it("a plain string binds as TEXT", function()
        local got, typ = round_trip("hello")
        assert.are.equal("hello", got)
        assert.are.equal("text", typ)
    end)

    it("the empty string binds as TEXT and comes back empty", function()
        local got, typ = round_trip("")
        assert.are.equal("", got)
        assert.are.equal("text", typ)
    end)

    it("a numeric-looking string stays TEXT and comes back a string", function()
        local got, typ = round_trip("12")
        assert.are.equal("12", got)
        assert.are.equal("text", typ)
        assert.are.equal("string", type(one("SELECT '12'")[1]))
    end)

    it("UTF-8 text round-trips byte for byte", function()
        local s = "na\xc3\xafve \xe2\x82\xac \xf0\x9f\x98\x80"
        assert.are.equal(s, (round_trip(s)))
    end)

    it("a string with embedded NULs round-trips as TEXT with every byte", function()
        local s = "a\0b\0\0c"
        local row = one("SELECT ?1, typeof(?1), length(CAST(?1 AS BLOB))", { s })
        assert.are.equal(s, row[1])
        assert.are.equal(#s, #row[1])
        assert.are.equal("text", row[2])
        assert.are.equal(#s, row[3])
    end)

    it("sqlite.blob(s) binds as BLOB", function()
        local got, typ = round_trip(sqlite.blob("bytes"))
        assert.are.equal("bytes", got)
        assert.are.equal("string", type(got))
        assert.are.equal("blob", typ)
    end)

    it("a blob of every byte value, NULs included, round-trips through a table", function()
        local bytes = {}
        for i = 0, 255 do
            bytes[#bytes + 1] = string.char(i)
        end
        local s = table.concat(bytes) .. "\0\0"
        conn:execute("CREATE TABLE b (v)")
        conn:execute("INSERT INTO b VALUES (?)", sqlite.blob(s))
        local row = one("SELECT v, typeof(v), length(v) FROM b")
        assert.are.equal(s, row[1])
        assert.are.equal("blob", row[2])
        assert.are.equal(258, row[3])
    end)

    it("an empty sqlite.blob binds as a zero-length BLOB", function()
        local row = one("SELECT ?1, typeof(?1), length(?1)", { sqlite.blob("") })
        assert.are.equal("", row[1])
        assert.are.equal("blob", row[2])
        assert.are.equal(0, row[3])
    end)

    it("a BLOB literal comes back as a Lua string", function()
        assert.are.equal("\1\0\255", one("SELECT x'0100ff'")[1])
    end)

    it("a 1 MiB string and blob round-trip", function()
        local s = string.rep("0123456789abcdef", 65536)
        assert.are.equal(s, (round_trip(s)))
        assert.are.equal(s, (round_trip(sqlite.blob(s))))
    end)
end)

describe("booleans and NULL", function()
    it("true binds as 1 and false as 0 (INTEGER)", function()
        local row = one("SELECT ?, typeof(?1), ?, typeof(?2)", true, false)
        assert.are.same({ 1, "integer", 0, "integer", n = 4 }, row)
    end)

    it("nil binds as NULL and comes back as sqlite.null", function()
        local got, typ = round_trip(nil)
        assert.are.equal(null, got)
        assert.are.equal("null", typ)
    end)

    it("sqlite.null binds as NULL", function()
        local got, typ = round_trip(null)
        assert.are.equal(null, got)
        assert.are.equal("null", typ)
    end)

    it("NULL comes back as sqlite.null, never nil", function()
        local row = one("SELECT NULL")
        assert.are.equal(1, row.n)
        assert.is_true(rawequal(null, row[1]))
    end)

    it("sqlite.null is a userdata and not false", function()
        assert.are.equal("userdata", type(null))
        assert.is_truthy(null)
    end)

    it("sqlite.null compares equal to cjson.null when lua-cjson is installed", function()
        local ok, cjson = pcall(require, "cjson")
        if not ok then
            -- without cjson: at least the NULL sentinel is one stable value
            assert.is_true(rawequal(null, one("SELECT NULL")[1]))
            assert.is_true(rawequal(null, require("pasyn_sqlite").null))
            return
        end
        assert.are.equal(cjson.null, null)
        assert.are.equal(cjson.null, one("SELECT NULL")[1])
    end)

    it("a trailing nil among extra arguments still binds (select('#') decides the count)", function()
        local row = one("SELECT ?, ?", 1, nil)
        assert.are.same({ 1, null, n = 2 }, row)
    end)

    it("a lone nil stands for no parameters when the statement takes none", function()
        assert.are.same({ 7, n = 1 }, one("SELECT 7", nil))
        assert.are.same({ null, n = 1 }, one("SELECT ?", nil)) -- and binds NULL where it can
    end)

    it("a table whose only key is n ({ n = 2 }, as table.pack(nil, nil) makes) is that many "
       .. "NULLs or a value for :n: the statement decides", function()
        assert.are.same({ null, null, n = 2 }, one("SELECT ?, ?", { n = 2 }))
        assert.are.same({ 2, n = 1 }, one("SELECT :n", { n = 2 }))
        assert.are.same({ 2, 2, n = 2 }, one("SELECT @n, $n", { n = 2 }))
        assert.are.same({ 5, n = 1 }, one("SELECT 5", { n = 0 }))
        -- neither fits: the error of the reading given the statement's way
        local err = raises("ProgrammingError", one, "SELECT ?, ?, ?", { n = 2 })
        assert.truthy(err.message:find("takes 3 parameters, 2 were supplied", 1, true), err.message)
        err = raises("ProgrammingError", one, "SELECT :n, :m", { n = 2 })
        assert.truthy(err.message:find("no value was supplied for parameter :m", 1, true),
                      err.message)
        err = raises("ProgrammingError", one, "SELECT ?, ?", nil)
        assert.truthy(err.message:find("takes 2 parameters, 1 was supplied", 1, true), err.message)
    end)

    it("executemany's sets may be table.pack's NULLs or values for :n, each set on its own",
       function()
        conn:execute("CREATE TABLE t (a, b)")
        conn:executemany("INSERT INTO t VALUES (?, ?)", { { n = 2 }, { 1, 2 } })
        conn:executemany("INSERT INTO t VALUES (:n, 9)", { { n = 3 }, { n = 4 } })
        assert.are.same({ { null, null, n = 2 }, { 1, 2, n = 2 }, { 3, 9, n = 2 }, { 4, 9, n = 2 } },
                        conn:execute("SELECT a, b FROM t ORDER BY rowid"):fetchall())
    end)

    it("an array with n binds nil holes as NULL", function()
        local row = one("SELECT ?, ?, ?", { 1, nil, 3, n = 3 })
        assert.are.same({ 1, null, 3, n = 3 }, row)
    end)
end)

describe("parameter styles", function()
    it("an array binds ? in order", function()
        assert.are.same({ 1, "two", 3.5, n = 3 }, one("SELECT ?, ?, ?", { 1, "two", 3.5 }))
    end)

    it("extra arguments bind ? in order", function()
        assert.are.same({ 1, "two", 3.5, n = 3 }, one("SELECT ?, ?, ?", 1, "two", 3.5))
    end)

    it("?NNN binds by position, and one position may be used twice", function()
        assert.are.same({ "b", "a", "b", n = 3 }, one("SELECT ?2, ?1, ?2", { "a", "b" }))
        assert.are.same({ 5, 5, n = 2 }, one("SELECT ?1, ?1", 5))
    end)

    it("a map binds :name, @name and $name from keys without a prefix", function()
        local row = one("SELECT :a, @b, $c", { a = 1, b = "two", c = 3.5 })
        assert.are.same({ 1, "two", 3.5, n = 3 }, row)
    end)

    it("a map binds from keys with the prefix too", function()
        local row = one("SELECT :a, @b, $c", { [":a"] = 1, ["@b"] = "two", ["$c"] = 3.5 })
        assert.are.same({ 1, "two", 3.5, n = 3 }, row)
    end)

    it("a named parameter used twice binds the same value", function()
        assert.are.same({ 7, 14, n = 2 }, one("SELECT :x, :x * 2", { x = 7 }))
    end)

    it("a map may hold false and sqlite.null values", function()
        assert.are.same({ 0, null, n = 2 }, one("SELECT :f, :z", { f = false, z = null }))
    end)

    it("extra keys in a map are ignored", function()
        assert.are.same({ 1, n = 1 }, one("SELECT :a", { a = 1, unused = 2 }))
    end)

    it("an empty table binds no parameters", function()
        assert.are.same({ 1, n = 1 }, one("SELECT 1", {}))
    end)

    it("parameters bind into INSERT and WHERE", function()
        conn:execute("CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT)")
        conn:execute("INSERT INTO p (id, name) VALUES (:id, :name)", { id = 1, name = "one" })
        conn:execute("INSERT INTO p (id, name) VALUES (?, ?)", 2, "two")
        conn:execute("INSERT INTO p (id, name) VALUES (?2, ?1)", { "three", 3 })
        assert.are.same({ { "one", n = 1 }, { "three", n = 1 } },
                        conn:execute("SELECT name FROM p WHERE id IN (?, ?) ORDER BY id", 1, 3):fetchall())
        assert.are.equal(3, count_rows("p"))
    end)

    it("every parameter style works inside a coroutine", function()
        local rows = sqlite.run(function()
            return {
                one("SELECT ?", { 1 }),
                one("SELECT ?", 2),
                one("SELECT :v", { v = 3 }),
                one("SELECT ?1", sqlite.blob("4")),
            }
        end)
        assert.are.same({ { 1, n = 1 }, { 2, n = 1 }, { 3, n = 1 }, { "4", n = 1 } }, rows)
    end)
end)

describe("parameter errors", function()
    it("too many parameters raise ProgrammingError naming both counts", function()
        local err = raises("ProgrammingError", one, "SELECT ?, ?", 1, 2, 3)
        assert.is_true(names_number(err.message, 2), err.message)
        assert.is_true(names_number(err.message, 3), err.message)
    end)

    it("too few parameters raise ProgrammingError naming both counts", function()
        local err = raises("ProgrammingError", one, "SELECT ?, ?, ?, ?", { 1 })
        assert.is_true(names_number(err.message, 4), err.message)
        assert.is_true(names_number(err.message, 1), err.message)
    end)

    it("parameters for a statement that takes none raise ProgrammingError", function()
        local err = raises("ProgrammingError", one, "SELECT 1", 5)
        assert.is_true(names_number(err.message, 0), err.message)
        assert.is_true(names_number(err.message, 1), err.message)
    end)

    it("a missing named parameter raises ProgrammingError naming it", function()
        local err = raises("ProgrammingError", one, "SELECT :present, :missing_one", { present = 1 })
        assert.truthy(err.message:find("missing_one", 1, true), err.message)
        assert.falsy(err.message:find("present", 1, true), err.message)
    end)

    it("a table value raises ProgrammingError naming the parameter position", function()
        local err = raises("ProgrammingError", one, "SELECT ?, ?", 1, {})
        assert.is_true(names_number(err.message, 2), err.message)
        assert.truthy(err.message:find("table", 1, true), err.message)
    end)

    it("a table inside an array raises ProgrammingError naming the parameter position", function()
        local err = raises("ProgrammingError", one, "SELECT ?, ?, ?", { 1, 2, { 3 } })
        assert.is_true(names_number(err.message, 3), err.message)
        assert.truthy(err.message:find("table", 1, true), err.message)
    end)

    it("a function value raises ProgrammingError naming the named parameter", function()
        local err = raises("ProgrammingError", one, "SELECT :callback", { callback = print })
        assert.truthy(err.message:find("callback", 1, true), err.message)
        assert.truthy(err.message:find("function", 1, true), err.message)
    end)

    it("a coroutine value raises ProgrammingError", function()
        local err = raises("ProgrammingError", one, "SELECT ?", coroutine.create(print))
        assert.is_true(names_number(err.message, 1), err.message)
    end)

    it("a bad parameter to an INSERT leaves the table unchanged", function()
        conn:execute("CREATE TABLE p (v)")
        raises("ProgrammingError", conn.execute, conn, "INSERT INTO p VALUES (?)", { {} })
        raises("ProgrammingError", conn.execute, conn, "INSERT INTO p VALUES (?)", 1, 2)
        assert.are.equal(0, count_rows("p"))
    end)

    -- Python 3.14 refuses this too: "Binding 1 ('a') is a named parameter, but you supplied a
    -- sequence which requires nameless (qmark) placeholders."
    it("an array (or extra arguments) for named placeholders raises ProgrammingError naming one",
       function()
        local cases = {
            { "SELECT :2, :1", { { "first", "second" } } },
            { "SELECT :a", { { 1 } } },
            { "SELECT @a, $b", { 1, 2 } },
            { "SELECT ?, :a", { 1, 2 } },
            { "SELECT :a", { { n = 1 } } }, -- table.pack(nil): an array of one NULL
            { "SELECT ?1, :a", { { 1, 2 } } },
            { "SELECT ?1, :a", { { 1 } } }, -- named first, whatever the count (as Python)
        }
        for _, case in ipairs(cases) do
            local err = raises("ProgrammingError", one, case[1], support.unpack(case[2]))
            assert.truthy(err.message:find("is named", 1, true), case[1] .. ": " .. err.message)
            assert.truthy(err.message:find("array", 1, true), case[1] .. ": " .. err.message)
        end
        assert.are.same({ "x", n = 1 }, one("SELECT :n", { n = "x" })) -- a map: bound by name
    end)

    it("executemany refuses an array set for named placeholders, and inserts nothing", function()
        conn:execute("CREATE TABLE m (a, b)")
        local err = raises("ProgrammingError", conn.executemany, conn,
                           "INSERT INTO m VALUES (:a, :b)", { { a = 1, b = 2 }, { 3, 4 } })
        assert.truthy(err.message:find(":a is named", 1, true), err.message)
        assert.are.equal(0, count_rows("m"))
        local sets = { { 1, 2 } }
        local function iterate()
            return table.remove(sets)
        end
        raises("ProgrammingError", conn.executemany, conn, "INSERT INTO m VALUES (:a, :b)", iterate)
        assert.are.equal(0, count_rows("m"))
    end)

    it("parameter errors are raised inside a coroutine too", function()
        local err = sqlite.run(function()
            local ok, e = pcall(one, "SELECT ?", 1, 2)
            assert.is_false(ok)
            return e
        end)
        assert.are.equal("ProgrammingError", err.kind)
    end)
end)

describe("statements", function()
    it("a string holding two statements raises ProgrammingError and the first does not run", function()
        conn:execute("CREATE TABLE s (v)")
        raises("ProgrammingError", conn.execute, conn, "INSERT INTO s VALUES (1); INSERT INTO s VALUES (2)")
        assert.are.equal(0, count_rows("s"))
    end)

    it("two SELECTs in one string raise ProgrammingError", function()
        raises("ProgrammingError", one, "SELECT 1; SELECT 2")
    end)

    it("a DDL statement followed by another does not run either", function()
        raises("ProgrammingError", conn.execute, conn, "CREATE TABLE a (x); CREATE TABLE b (y)")
        assert.are.equal(0, one("SELECT count(*) FROM sqlite_master")[1])
    end)

    -- SQLite reads SQL only up to a NUL: the rest would be dropped silently. Python refuses it
    -- ("the query contains a null character").
    it("SQL holding a NUL byte raises ProgrammingError and nothing runs, in every call", function()
        conn:execute("CREATE TABLE n (i)")
        local nul = "INSERT INTO n (i) VALUES (1);\0INSERT INTO n (i) VALUES (5);"
        local single = "INSERT INTO n (i) VALUES (1)\0 garbage"
        local calls = {
            { conn.executescript, nul },
            { conn.execute, single },
            { conn.execute, "SELECT 1\0" },
            { conn.executemany, single, { {} } },
        }
        for i, call in ipairs(calls) do
            local err = raises("ProgrammingError", call[1], conn, call[2], call[3])
            assert.truthy(err.message:find("NUL", 1, true), "call " .. i .. ": " .. err.message)
        end
        assert.are.equal(0, count_rows("n"))
        assert.are.same({ 1, n = 1 }, one("SELECT 1")) -- the pool goes on working
    end)

    it("one statement with a trailing semicolon, spaces and a comment runs", function()
        assert.are.same({ 1, n = 1 }, one("SELECT 1;  -- done\n"))
    end)

    it("empty SQL is a no-op: no rows, description nil, rowcount -1", function()
        for _, sql in ipairs({ "", "   \n\t", "-- only a comment", "/* block */" }) do
            local cur = conn:execute(sql)
            assert.is_nil(cur.description, sql)
            assert.are.equal(-1, cur.rowcount, sql)
            assert.is_nil(cur:fetchone(), sql)
        end
        assert.are.equal(0, one("SELECT count(*) FROM sqlite_master")[1])
    end)
end)

-- A statement comes from the cache of the connection that ran its text before (on the writer,
-- the one a group commit looked up to learn its kind): the values of a run are only those it
-- was given, whatever the run before bound, on the writer and on the readers.
describe("a statement run again", function()
    local path, cleanup, file
    before_each(function()
        path, cleanup = support.tmpdb()
        file = sqlite.connect(path)
        file:execute("CREATE TABLE v (id INTEGER PRIMARY KEY, a, b)")
    end)
    after_each(function()
        file:close()
        cleanup()
    end)

    local big = string.rep("x", 5000) -- over what a cached statement keeps bound
    local runs = {
        { 1, "one" }, { 2, null }, { 3, "three" }, { 4, nil }, { big, 5 }, { "six", nil },
        { sqlite.blob("\0\1"), 7 }, { nil, nil }, { 9.5, "nine" }, { nil, big },
    }

    it("binds only its own values on the writer: NULL after a value, short after long", function()
        for i, r in ipairs(runs) do
            file:execute("INSERT INTO v (id, a, b) VALUES (?, ?, ?)", { i, r[1], r[2], n = 3 })
        end
        for i, r in ipairs(runs) do
            local row = file:execute("SELECT a, b FROM v WHERE id = ?", i):fetchone()
            local a, b = r[1], r[2]
            if a == nil then a = null end
            if b == nil then b = null end
            if a ~= null and type(a) ~= "string" and type(a) ~= "number" then
                a = "\0\1" -- the blob's bytes
            end
            assert.are.equal(a, row[1], "run " .. i .. ", a")
            assert.are.equal(b, row[2], "run " .. i .. ", b")
        end
    end)

    it("binds only its own values in executemany and in an UPDATE", function()
        local sets = {}
        for i, r in ipairs(runs) do
            sets[i] = { i, r[1], r[2], n = 3 }
        end
        file:executemany("INSERT INTO v (id, a, b) VALUES (?, ?, ?)", sets)
        for i = #runs, 1, -1 do
            local r = runs[#runs + 1 - i]
            file:execute("UPDATE v SET a = ?, b = ? WHERE id = ?", { r[2], r[1], i, n = 3 })
        end
        for i = 1, #runs do
            local r = runs[#runs + 1 - i]
            local row = file:execute("SELECT a IS NULL, b IS NULL FROM v WHERE id = ?", i):fetchone()
            assert.are.same({ r[2] == nil or r[2] == null, r[1] == nil or r[1] == null },
                            { row[1] == 1, row[2] == 1 }, "row " .. i)
        end
    end)

    it("runs the statement of its own text after one of the same length (writer and readers)",
       function()
        for _, inline in ipairs({ true, false }) do
            local c = sqlite.connect(path, { inline_reads = inline })
            for i = 1, 20 do
                local k = i % 2 + 1 -- "SELECT 1 + ?" and "SELECT 2 + ?" in turn: the same length
                assert.are.equal(k + i, c:execute("SELECT " .. k .. " + ?", i):fetchone()[1])
                c:execute("INSERT INTO v (a, b) VALUES (" .. k .. ", ?)", i)
                assert.are.equal(k, c:execute("SELECT a FROM v WHERE b = ?", i):fetchone()[1])
                c:execute("DELETE FROM v")
            end
            c:close()
        end
    end)

    -- What typeof() answers for a value of `runs` (their numbers are integers or 9.5).
    local function sql_type(v)
        if v == nil or v == null then
            return "null"
        elseif type(v) == "string" then
            return "text"
        elseif type(v) == "number" then
            return v % 1 == 0 and "integer" or "real"
        end
        return "blob"
    end

    it("binds only its own values on the readers and inline", function()
        for _, inline in ipairs({ true, false }) do
            local reads = sqlite.connect(path, { inline_reads = inline })
            for i, r in ipairs(runs) do
                local row = reads:execute("SELECT typeof(?), typeof(?2)", { r[1], r[2], n = 2 })
                                 :fetchone()
                local want = { sql_type(r[1]), sql_type(r[2]) }
                assert.are.same(want, { row[1], row[2] }, "run " .. i .. ", inline_reads " ..
                                tostring(inline))
            end
            reads:close()
        end
    end)
end)

-- A parameter table's values, and values given as arguments, are converted by the binding's
-- own switch for the common kinds (number, string, nil, boolean) and bound by position in
-- batches; values by name take the general conversion and the core's encoding of one value
-- at a time. Whatever way a set comes (executemany, an execute with an array or with
-- arguments), the same values are stored as by name, and a bad one is named alike.
describe("a table of parameters, arguments and names", function()
    local ffi = jit and select(2, pcall(require, "ffi")) or nil
    local big = ("\0x"):rep(3000) -- a long text with NULs
    local values = {
        0, 1, -1, 2147483647, -2147483648, 9007199254740993, -9007199254740993,
        1.5, -0.25, 3.0, 1e308, -1e-308, math.huge, -math.huge, 2 ^ 63, -(2 ^ 63),
        "", "a\0b", big, "row 7", sqlite.blob(""), sqlite.blob("\0\1\2\255"), null, true,
        false, nil, 42, nil, nil, "after the holes",
    }
    if has_integers then
        values[31], values[32] = math.maxinteger, math.mininteger
    end
    if type(ffi) == "table" then -- LuaJIT's boxed 64-bit integers
        values[31] = (loadstring or load)("return 9223372036854775807LL")()
        values[32] = (loadstring or load)("return -9223372036854775807LL - 1")()
        values[33] = (loadstring or load)("return 9223372036854775807ULL")()
    end
    local n = 36 -- more than a batch (16), and a nil at the end
    values.n = n

    local columns, marks, names, reads = {}, {}, {}, {}
    for k = 1, n do
        columns[k], marks[k], names[k] = "c" .. k, "?", ":c" .. k
        reads[k] = ("c%d, typeof(c%d)"):format(k, k)
    end
    local create = "CREATE TABLE d (src, " .. table.concat(columns, ", ") .. ")"
    local insert = "INSERT INTO d VALUES (?, " .. table.concat(marks, ", ") .. ")"
    local by_name = "INSERT INTO d VALUES (:src, " .. table.concat(names, ", ") .. ")"
    local read = "SELECT " .. table.concat(reads, ", ") .. " FROM d WHERE src = ?"

    -- The set of values with its source's name first.
    local function set(src, vals)
        local s = { src, n = vals.n + 1 }
        for k = 1, vals.n do
            s[k + 1] = vals[k]
        end
        return s
    end

    -- Stores vals by name as the row of src (a nil as sqlite.null: a map has no holes).
    local function store_by_name(src, vals)
        local map = { src = src }
        for k = 1, vals.n do
            local v = vals[k]
            if v == nil then
                v = null
            end
            map["c" .. k] = v
        end
        conn:execute(by_name, map)
    end

    -- Each stored row of src as { value, typeof, ... }, in order, compared with the one stored
    -- by name (`like`: one source's name for each row, or "names" for all) (math.type too,
    -- which tells an integer from an integral float on Lua 5.3+).
    local function same_as_by_name(src, count, like)
        local rows = conn:execute(read .. " ORDER BY rowid", src):fetchall()
        assert.are.equal(count, #rows, src)
        for i, row in ipairs(rows) do
            local want = conn:execute(read, like and like[i] or "names"):fetchone()
            for k = 1, 2 * n do
                assert.are.equal(want[k], row[k], src .. ", column " .. k)
                if has_integers then
                    assert.are.equal(math.type(want[k]), math.type(row[k]), src .. ", " .. k)
                end
            end
        end
    end

    it("stores the same values through executemany, an execute with an array, arguments and "
       .. "names", function()
        conn:execute(create)
        store_by_name("names", values)
        local row = conn:execute(read, "names"):fetchone()
        assert.are.equal(big, row[2 * 19 - 1]) -- the reference itself bound as it is
        assert.are.equal("integer", row[2 * 2])
        assert.are.equal("null", row[2 * 26])
        assert.are.equal("blob", row[2 * 22])
        local s = set("arguments", values)
        conn:execute(insert, support.unpack(s, 1, s.n))
        same_as_by_name("arguments", 1)
        conn:execute(insert, set("table", values))
        same_as_by_name("table", 1)
        conn:executemany(insert, { set("many", values), set("many", values), set("many", values) })
        same_as_by_name("many", 3)
        local left = 2
        conn:executemany(insert, function()
            left = left - 1
            return left >= 0 and set("iterated", values) or nil
        end)
        same_as_by_name("iterated", 2)
        -- sets longer than the first (the room made for the rest is as large as it), then
        -- shorter
        local small = { n = n }
        for k = 1, n do
            small[k] = values[k]
        end
        small[19] = "s" -- big's place
        store_by_name("names small", small)
        conn:executemany(insert, { set("mixed", small), set("mixed", values), set("mixed", values),
                                   set("mixed", small) })
        same_as_by_name("mixed", 4, { "names small", "names", "names", "names small" })
    end)

    it("names a bad value in the middle of a set alike, and with its set in executemany",
       function()
        conn:execute(create)
        local bad_values = { { print, "a function" }, { {}, "a table" },
                             { coroutine.create(print), "a thread" } }
        if type(ffi) == "table" then
            bad_values[4] = { (loadstring or load)("return 18446744073709551615ULL")(),
                              "the uint64_t 18446744073709551615 is beyond INTEGER's range" }
        end
        for i, at in ipairs({ 2, 17, 20, n, 1 }) do
            local bad_value = bad_values[(i - 1) % #bad_values + 1]
            local bad = set("bad", values)
            bad[at + 1] = bad_value[1]
            local e_args = raises("ProgrammingError", conn.execute, conn, insert,
                                  support.unpack(bad, 1, bad.n))
            local e_table = raises("ProgrammingError", conn.execute, conn, insert, bad)
            local e_many = raises("ProgrammingError", conn.executemany, conn, insert,
                                  { set("good", values), set("good", values), bad })
            local why = ("parameter %d: "):format(at + 1)
            assert.truthy(e_args.message:find(why, 1, true), e_args.message)
            assert.truthy(e_args.message:find(bad_value[2], 1, true), e_args.message)
            assert.are.equal(e_args.message, e_table.message)
            assert.are.equal(e_args.message:gsub(why, "parameter set 3: " .. why, 1),
                             e_many.message)
        end
        assert.are.equal(0, count_rows("d"))
    end)
end)
