-- The checks of spec/functions_spec.lua that run in more than one way of waiting (a blocking
-- call, the built-in scheduler, a host adapter): here, so that a child process can run them
-- too (functions_spec.lua, in_child). Not a spec itself.
local sqlite = require "pasyn_sqlite"
local assert = require "luassert"
local support = require "support"

local raises, scalar = support.raises, support.scalar
local is_integer = math.type and function(v) return math.type(v) == "integer" end
    or function(v) return type(v) == "number" and v == math.floor(v) end

local M = {}

-- A pool on a private memory database with table t holding x = 1..100.
function M.fresh(options)
    local conn = sqlite.connect(":memory:", options or { readers = 2 })
    conn:execute("CREATE TABLE t(x INTEGER)")
    conn:executemany("INSERT INTO t VALUES (?)", (function()
        local rows = {}
        for i = 1, 100 do
            rows[i] = { i }
        end
        return rows
    end)())
    return conn
end

function M.reads(conn)
    return support.readers_sum(conn:stats(), "executed")
end


-- The scalar checks every way of waiting runs: each SQL type in and out, nargs -1, results of
-- each Lua type, a bad result, an error; on a reader and on the writer.
function M.scalar(conn)
    local seen = {}
    conn:create_function("echo", 1, function(v)
        seen[#seen + 1] = v
        return v
    end)
    local row = conn:execute("SELECT echo(7), echo(2.5), echo('text'), echo(x'00ff'), echo(NULL)")
                    :fetchone()
    assert.are.equal(7, row[1])
    assert.is_true(is_integer(seen[1]))
    assert.are.equal(2.5, row[2])
    assert.are.equal("text", row[3])
    assert.are.equal("\0\255", row[4])
    assert.are.equal(sqlite.null, row[5])
    assert.are.same({ 7, 2.5, "text", "\0\255", sqlite.null }, seen)
    assert.are.same({ "integer", "real", "text", "text", "null", n = 5 },
        conn:execute("SELECT typeof(echo(7)), typeof(echo(2.5)), typeof(echo('a')), " ..
                     "typeof(echo(x'01')), typeof(echo(NULL))"):fetchone())
    -- a BLOB arrives as a string, which goes back as TEXT; sqlite.blob(s) gives a BLOB
    assert.are.same({ "text", n = 1 }, conn:execute("SELECT typeof(echo(x'01'))"):fetchone())

    local results = { nil, sqlite.null, true, false, 3, 2.5, "s", sqlite.blob("\0\1") }
    conn:create_function("give", 1, function(i) return results[i] end)
    local typed = conn:execute([[SELECT typeof(give(1)), typeof(give(2)), give(3), give(4),
        typeof(give(5)), typeof(give(6)), typeof(give(7)), typeof(give(8)), give(8)]]):fetchone()
    assert.are.same({ "null", "null", 1, 0, "integer", "real", "text", "blob", "\0\1", n = 9 },
                    typed)

    conn:create_function("count_args", -1, function(...) return select("#", ...) end)
    assert.are.same({ 0, 3 }, { conn:execute("SELECT count_args(), count_args(1, 'a', NULL)")
                                    :fetchone()[1], scalar(conn, "SELECT count_args(1, 'a', NULL)") })
    assert.matches("wrong number of arguments",
                   raises("OperationalError", conn.execute, conn, "SELECT echo(1, 2)").message)

    conn:create_function("bad", 0, function() return {} end)
    local err = raises("OperationalError", conn.execute, conn, "SELECT bad()")
    assert.matches("SQL function 'bad' returned a table", err.message)
    conn:create_function("boom", 1, function(v) error("boom with " .. tostring(v)) end)
    err = raises("OperationalError", conn.execute, conn, "SELECT boom(x) FROM t WHERE x = 5")
    assert.matches("boom with 5", err.message)

    -- a read runs on a reader, a write on the writer, both calling it
    local before = M.reads(conn)
    assert.are.equal(5150, scalar(conn, "SELECT sum(echo(x) + 1) FROM t"))
    assert.is_true(M.reads(conn) > before, "the read ran on a reader")
    conn:execute("CREATE TABLE w(v)")
    conn:execute("INSERT INTO w VALUES (echo(?))", "written")
    assert.are.equal("written", scalar(conn, "SELECT v FROM w"))
    conn:execute("DROP TABLE w")
end


local made
local function factory()
    made = made + 1
    return { n = 0, sum = 0,
             step = function(self, v) self.n, self.sum = self.n + 1, self.sum + v end,
             finalize = function(self) return self.n .. ":" .. self.sum end }
end

function M.aggregate(conn)
    made = 0
    conn:create_aggregate("nsum", 1, factory)
    local groups = conn:execute("SELECT x % 3, nsum(x) FROM t GROUP BY x % 3 ORDER BY 1")
                       :fetchall()
    assert.are.same({ 0, "33:1683" }, { groups[1][1], groups[1][2] })
    assert.are.same({ 1, "34:1717" }, { groups[2][1], groups[2][2] })
    assert.are.same({ 2, "33:1650" }, { groups[3][1], groups[3][2] })
    assert.are.equal(3, made, "one object per group")
    -- an empty input: a fresh object's finalize
    assert.are.equal("0:0", scalar(conn, "SELECT nsum(x) FROM t WHERE x > 1000"))
    -- errors in step and in finalize fail the statement with their message
    conn:create_aggregate("bad_step", 1, function()
        return { step = function(_, v) if v == 50 then error("step saw 50") end end,
                 finalize = function() return 0 end }
    end)
    assert.matches("step saw 50",
                   raises("OperationalError", scalar, conn, "SELECT bad_step(x) FROM t").message)
    conn:create_aggregate("bad_final", 1, function()
        return { step = function() end, finalize = function() error("final failed") end }
    end)
    assert.matches("final failed",
                   raises("OperationalError", scalar, conn, "SELECT bad_final(x) FROM t").message)
    conn:create_aggregate("no_step", 1, function() return {} end)
    assert.matches("no step method",
                   raises("OperationalError", scalar, conn, "SELECT no_step(x) FROM t").message)
    -- in a write, on the writer
    conn:execute("CREATE TABLE agg(v)")
    conn:execute("INSERT INTO agg SELECT nsum(x) FROM t")
    assert.are.equal("100:5050", scalar(conn, "SELECT v FROM agg"))
    conn:execute("DROP TABLE agg")
    -- no group is left behind, whatever failed
    collectgarbage()
    assert.is_nil(next(debug.getregistry()["pasyn_sqlite.groups"]))
end


function M.collation(conn)
    conn:execute("CREATE TABLE s(v TEXT)")
    conn:execute("INSERT INTO s VALUES ('b'), ('a'), ('c'), ('B')")
    conn:create_collation("reverse", function(a, b)
        return a < b and 1 or a > b and -1 or 0
    end)
    assert.are.same({ "c", "b", "a", "B" },
                    support.column(conn, "SELECT v FROM s ORDER BY v COLLATE reverse"))
    conn:create_collation("nocase_lua", function(a, b)
        a, b = a:lower(), b:lower()
        return a < b and -1 or a > b and 1 or 0
    end)
    assert.are.equal(2, scalar(conn, "SELECT count(*) FROM s WHERE v = 'b' COLLATE nocase_lua"))
    -- an error counts as equal
    conn:create_collation("broken", function() error("no order") end)
    assert.are.equal(4, #support.column(conn, "SELECT v FROM s ORDER BY v COLLATE broken"))
    -- removed
    conn:create_collation("reverse", nil)
    assert.matches("no such collation sequence: reverse",
                   raises("OperationalError", conn.execute, conn,
                          "SELECT v FROM s ORDER BY v COLLATE reverse").message)
    conn:execute("DROP TABLE s")
end


-- A blocking caller waits for a max_pending slot that a coroutine's statement holds, whose
-- calls of a Lua function need serving meanwhile.
function M.gate(conn)
    conn:create_function("f", 1, function(x) return x + 1 end)
    local before = sqlite.set_host({}) -- any coroutine but the main one yields
    local got
    local co = coroutine.create(function()
        got = scalar(conn, "SELECT sum(f(x)) FROM t") -- holds the one slot
    end)
    assert(coroutine.resume(co))
    assert.are.equal(1, conn:stats().pending)
    -- blocks for the slot, serving the coroutine's calls meanwhile
    assert.are.equal(2, scalar(conn, "SELECT f(1)"))
    sqlite.dispatch() -- delivers the coroutine's completion, kept meanwhile
    sqlite.set_host(before)
    assert.are.equal(5150, got)
end

return M
