-- The `integers` option of sqlite.connect: how an INTEGER beyond +-2^53 comes back where Lua
-- numbers are doubles (LuaJIT, Lua 5.1): "number" (default, may round), "string" (exact
-- decimal) or "int64" (LuaJIT's boxed int64_t, exact, binds back exactly); integers within
-- +-2^53 stay plain numbers under every option; int64_t/uint64_t cdata bind as INTEGERs.
-- On Lua 5.3+ every INTEGER is an exact Lua integer: "number" and "string" are accepted and
-- change nothing, "int64" (which needs LuaJIT's ffi) is refused with a ProgrammingError.
-- Every spec runs everywhere: where a LuaJIT behaviour has no meaning, the exact-integer
-- behaviour of Lua 5.3+ is asserted instead.

local sqlite = require "pasyn_sqlite"
local support = require "support"

local raises = support.raises

local exact = math.type ~= nil -- Lua 5.3+: 64-bit integers
local ffi = jit and select(2, pcall(require, "ffi")) or nil
if type(ffi) ~= "table" then
    ffi = nil
end

local BIG = "9007199254740993" -- 2^53 + 1: the first integer a double cannot hold
local MAX, MIN = "9223372036854775807", "-9223372036854775808"

-- LuaJIT: the int64_t value of a decimal literal (s.."LL" in LuaJIT source).
local function ll(s)
    return (loadstring or load)("return " .. s .. "LL")()
end

-- The native Lua value of a decimal integer literal, where there is one (Lua 5.3+).
local function int(s)
    return (loadstring or load)("return " .. (s == MIN and "math.mininteger" or s))()
end

local opened = {}

local function connect(options)
    local conn = sqlite.connect(":memory:", options)
    opened[#opened + 1] = conn
    return conn
end

after_each(function()
    for _, conn in ipairs(opened) do
        pcall(conn.close, conn)
    end
    opened = {}
end)

local function one(conn, sql, ...)
    return conn:execute(sql, ...):fetchone()
end

-- Asserts that v is the exact integer written as the decimal s, as `mode` hands it back.
local function assert_exact(s, v, mode)
    if exact then
        assert.are.equal("integer", math.type(v))
        assert.is_true(v == int(s), "expected " .. s .. ", got " .. tostring(v))
    elseif mode == "string" then
        assert.are.equal("string", type(v))
        assert.are.equal(s, v)
    elseif mode == "int64" then
        assert.are.equal("cdata", type(v))
        assert.is_true(ffi.istype("int64_t", v), "expected an int64_t, got " .. tostring(v))
        assert.is_true(v == ll(s), "expected " .. s .. "LL, got " .. tostring(v))
    else
        error("no exact form for " .. tostring(mode))
    end
end

-- The modes this Lua accepts.
local modes = { "number", "string" }
if ffi then
    modes[3] = "int64"
end

describe("integers = \"number\" (the default)", function()
    it("SELECT 2^53 + 1 rounds to a double on LuaJIT/5.1 and is exact on 5.3+", function()
        for _, conn in ipairs({ connect(), connect({ integers = "number" }) }) do
            local v = one(conn, "SELECT " .. BIG)[1]
            if exact then
                assert_exact(BIG, v)
            else
                assert.are.equal("number", type(v))
                assert.are.equal(2 ^ 53, v) -- rounded to the nearest double
            end
        end
    end)

    it("the 64-bit extremes come back as numbers (exact integers on 5.3+)", function()
        local row = one(connect(), "SELECT " .. MIN .. ", " .. MAX)
        if exact then
            assert_exact(MIN, row[1])
            assert_exact(MAX, row[2])
        else
            assert.are.equal(-2 ^ 63, row[1]) -- a double holds -2^63 exactly
            assert.are.equal(2 ^ 63, row[2]) -- 2^63 - 1 rounds up
        end
    end)
end)

describe("integers = \"string\"", function()
    it("SELECT 2^53 + 1 is the exact decimal string (an exact integer on 5.3+)", function()
        assert_exact(BIG, one(connect({ integers = "string" }), "SELECT " .. BIG)[1], "string")
    end)

    it("the 64-bit extremes and -(2^53 + 1) are exact", function()
        local row = one(connect({ integers = "string" }), "SELECT ?, ?, ?", 1, 2, 3) -- binds too
        assert.are.same({ 1, 2, 3, n = 3 }, row)
        row = one(connect({ integers = "string" }), "SELECT " .. MIN .. ", " .. MAX .. ", -" .. BIG)
        assert_exact(MIN, row[1], "string")
        assert_exact(MAX, row[2], "string")
        assert_exact("-" .. BIG, row[3], "string")
    end)

    it("holds for table columns, named rows and streamed results", function()
        local conn = connect({ integers = "string", readers = 1 })
        conn:execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v INTEGER)")
        conn:execute("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 20000) " ..
                     "INSERT INTO t SELECT i, " .. BIG .. " FROM r")
        local n = 0
        for row in conn:execute("SELECT i, v FROM t ORDER BY i"):rows() do
            n = n + 1
            assert.are.equal(n, row[1])
            if n % 997 == 0 or n == 20000 then
                assert_exact(BIG, row[2], "string")
            end
        end
        assert.are.equal(20000, n)
        conn.row = "named"
        local row = one(conn, "SELECT v FROM t WHERE i = 20000")
        assert_exact(BIG, row.v, "string")
    end)
end)

describe("integers = \"int64\"", function()
    it("SELECT 2^53 + 1 is an exact int64_t cdata on LuaJIT (refused at connect elsewhere)", function()
        if not ffi then
            local err = raises("ProgrammingError", sqlite.connect, ":memory:", { integers = "int64" })
            assert.matches("'integers'", err.message, 1, true)
            assert.matches("ffi", err.message, 1, true)
            return
        end
        local v = one(connect({ integers = "int64" }), "SELECT " .. BIG)[1]
        assert_exact(BIG, v, "int64")
        assert.is_true(v == ll("9007199254740992") + 1)
        assert.are.equal(BIG .. "LL", tostring(v))
    end)

    it("the 64-bit extremes are exact int64_t values", function()
        if not ffi then
            return -- refused above; 5.3+ extremes: the "number" and "string" specs
        end
        local row = one(connect({ integers = "int64" }), "SELECT " .. MIN .. ", " .. MAX)
        assert_exact(MIN, row[1], "int64")
        assert_exact(MAX, row[2], "int64")
    end)

    it("an int64_t read back binds back exactly as an INTEGER", function()
        if not ffi then
            return
        end
        local conn = connect({ integers = "int64" })
        conn:execute("CREATE TABLE t (x INTEGER)")
        local v = one(conn, "SELECT " .. MAX)[1]
        conn:execute("INSERT INTO t VALUES (?)", v)
        local row = one(conn, "SELECT x, typeof(x), x = " .. MAX .. " FROM t WHERE x = ?", v)
        assert.are.equal("integer", row[2])
        assert.are.equal(1, row[3])
        assert_exact(MAX, row[1], "int64")
    end)
end)

describe("small integers", function()
    it("integers within +-2^53 are plain numbers under every option", function()
        local values = { "0", "1", "-1", "42", "4294967296", "9007199254740992", "-9007199254740992",
                         "9007199254740991" }
        for _, mode in ipairs(modes) do
            local conn = connect({ integers = mode })
            conn:execute("CREATE TABLE t (v INTEGER)")
            for _, s in ipairs(values) do
                conn:execute("INSERT INTO t VALUES (" .. s .. ")")
                local v = one(conn, "SELECT " .. s)[1]
                assert.are.equal("number", type(v), mode .. ": " .. s)
                assert.are.equal(tonumber(s), v, mode)
                if exact then
                    assert.are.equal("integer", math.type(v))
                end
            end
            local got = support.column(conn, "SELECT v FROM t")
            for i, s in ipairs(values) do
                assert.are.equal("number", type(got[i]), mode .. ": " .. s)
                assert.are.equal(tonumber(s), got[i], mode)
            end
            assert.are.equal(1.5, one(conn, "SELECT 1.5")[1]) -- REAL untouched
            assert.are.equal(2 ^ 60, one(conn, "SELECT 1152921504606846976.0")[1])
        end
    end)
end)

describe("binding 64-bit cdata", function()
    it("int64_t and uint64_t cdata bind as exact INTEGERs under every option (5.3+: integers)", function()
        for _, mode in ipairs(modes) do
            local conn = connect({ integers = mode })
            conn:execute("CREATE TABLE t (x INTEGER)")
            local params
            if ffi then
                params = { ll(BIG), ll(MIN), ffi.new("uint64_t", ll(MAX)), ffi.new("int64_t", 7) }
            elseif exact then
                params = { int(BIG), int(MIN), int(MAX), 7 }
            else -- PUC Lua 5.1: no 64-bit values to bind; doubles up to 2^53 bind exactly
                assert.are.equal(2 ^ 53, one(conn, "SELECT ? + 0", 2 ^ 53)[1])
                return
            end
            for _, p in ipairs(params) do
                conn:execute("INSERT INTO t VALUES (?)", p)
            end
            conn:executemany("INSERT INTO t VALUES (:x)", { { x = params[1] } })
            local row = one(conn, "SELECT count(*) FROM t WHERE x = ? AND typeof(x) = 'integer'",
                            params[1])
            assert.are.equal(2, row[1], mode) -- the execute's row and the executemany's
            local expect = { BIG, MIN, MAX, "7" }
            for id, s in ipairs(expect) do
                local same = support.column(conn, "SELECT x = " .. s .. " FROM t WHERE rowid = ?", id)
                assert.are.same({ 1 }, same, mode .. ": " .. s)
            end
        end
    end)

    it("a uint64_t above INT64_MAX is a ProgrammingError naming the parameter", function()
        local conn = connect()
        if not ffi then
            -- 5.3+ has no such value: 2^64 - 1 is the integer -1 and binds as such
            if exact then
                assert.are.equal(-1, one(conn, "SELECT ?", 0xffffffffffffffff)[1])
            end
            return
        end
        local big = ffi.new("uint64_t", ll(MAX)) + 1
        local err = raises("ProgrammingError", conn.execute, conn, "SELECT ?, ?", 1, big)
        assert.matches("parameter 2", err.message, 1, true)
        assert.matches("9223372036854775808", err.message, 1, true)
        err = raises("ProgrammingError", conn.execute, conn, "SELECT :big", { big = big })
        assert.matches("parameter :big", err.message, 1, true)
    end)

    it("any other cdata is still refused, naming the parameter", function()
        if not ffi then
            return -- no cdata outside LuaJIT
        end
        local conn = connect({ integers = "int64" })
        for _, c in ipairs({ ffi.new("int32_t", 1), ffi.new("double", 1), ffi.new("char[4]"),
                             ffi.cast("void *", 0), ffi.typeof("int64_t") }) do
            local err = raises("ProgrammingError", conn.execute, conn, "SELECT ?", c)
            assert.are.equal("parameter 1: cannot bind a cdata", err.message)
        end
    end)
end)

describe("lastrowid", function()
    it("beyond 2^53 follows the integers option", function()
        for _, mode in ipairs(modes) do
            local conn = connect({ integers = mode })
            conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
            local cur = conn:execute("INSERT INTO t VALUES (" .. BIG .. ", 'a')")
            if exact then
                assert_exact(BIG, cur.lastrowid)
            elseif mode == "number" then
                assert.are.equal(2 ^ 53, cur.lastrowid)
            else
                assert_exact(BIG, cur.lastrowid, mode)
            end
            cur = conn:execute("INSERT INTO t VALUES (5, 'b')")
            assert.are.equal("number", type(cur.lastrowid))
            assert.are.equal(5, cur.lastrowid)
            assert.are.equal(1, cur.rowcount)
            assert.are.equal("number", type(cur.rowcount))
        end
    end)
end)

describe("checking the option", function()
    it("an unknown value is a ProgrammingError naming the option", function()
        for _, bad in ipairs({ "double", "INT64", "", 64, true, {} }) do
            local err = raises("ProgrammingError", sqlite.connect, ":memory:", { integers = bad })
            assert.matches("'integers'", err.message, 1, true)
        end
    end)

    it("\"number\" and \"string\" are accepted everywhere; \"int64\" wherever LuaJIT's ffi is", function()
        for _, mode in ipairs({ "number", "string" }) do
            connect({ integers = mode })
        end
        if ffi then
            connect({ integers = "int64" })
        else
            local err = raises("ProgrammingError", sqlite.connect, ":memory:", { integers = "int64" })
            assert.matches("option 'integers'", err.message, 1, true)
        end
    end)

    it("on Lua 5.3+ the option changes nothing: every INTEGER is an exact Lua integer", function()
        if not exact then
            return -- LuaJIT/5.1: the specs above
        end
        for _, mode in ipairs({ "number", "string" }) do
            local row = one(connect({ integers = mode }), "SELECT " .. BIG .. ", 7, " .. MAX)
            assert_exact(BIG, row[1])
            assert_exact("7", row[2])
            assert_exact(MAX, row[3])
        end
    end)
end)
