-- SQL functions, aggregates and collations defined in Lua (conn:create_function,
-- create_aggregate, create_collation): they run on the Lua side while the worker whose
-- statement calls them waits, in every way a caller can wait (a blocking call, the built-in
-- scheduler, a host adapter, a wait for a max_pending slot); values cross with the types rows
-- and parameters have; errors fail the statement with their message; definitions reach every
-- connection of the pool, busy ones too. The checks that would hang if calls were not served
-- run in a child process bounded by timeout(1) (not under make tsan: see spec/luv_spec.lua).
local sqlite = require "pasyn_sqlite"
local support = require "support"

local raises, scalar = support.raises, support.scalar
local LUA = jit and "luajit" or "lua" .. _VERSION:sub(5) -- luacheck: ignore jit
local UNDER_TSAN = (os.getenv("LD_PRELOAD") or ""):find("tsan", 1, true) ~= nil
local is_integer = math.type and function(v) return math.type(v) == "integer" end
    or function(v) return type(v) == "number" and v == math.floor(v) end

-- A read that keeps a reader busy for a while (~100 ms here, more under a sanitizer).
local LONG_SQL = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT count(*) FROM c]]

local function fresh(options)
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

local function reads(conn)
    return support.readers_sum(conn:stats(), "executed")
end

-- Runs `code` (Lua source; it prints "ok" when all went well) in a child process bounded by
-- `seconds`, so that a hang fails the test instead of stopping the run. Under make tsan (no
-- child processes) it runs here.
local function in_child(code, seconds)
    if UNDER_TSAN then
        local out = {}
        local env = setmetatable({ print = function(s) out[#out + 1] = tostring(s) end },
                                 { __index = _G })
        local chunk = assert((loadstring or load)(code, "=child", "t", env)) -- luacheck: ignore
        if setfenv then setfenv(chunk, env) end -- luacheck: ignore
        chunk()
        return table.concat(out, "\n")
    end
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    local p = assert(io.popen(("timeout %d %s %s 2>&1; echo \"status=$?\""):format(seconds or 60,
                                                                                LUA, script)))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    return out
end

-- The scalar checks every way of waiting runs: each SQL type in and out, nargs -1, results of
-- each Lua type, a bad result, an error; on a reader and on the writer.
local function scalar_checks(conn)
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
    local before = reads(conn)
    assert.are.equal(5150, scalar(conn, "SELECT sum(echo(x) + 1) FROM t"))
    assert.is_true(reads(conn) > before, "the read ran on a reader")
    conn:execute("CREATE TABLE w(v)")
    conn:execute("INSERT INTO w VALUES (echo(?))", "written")
    assert.are.equal("written", scalar(conn, "SELECT v FROM w"))
    conn:execute("DROP TABLE w")
end

describe("SQL functions defined in Lua", function()
    it("serve a blocking call outside any scheduler (a reader's read, the writer's write)",
       function()
        local conn = fresh()
        scalar_checks(conn)
        conn:close()
    end)

    it("serve the built-in scheduler", function()
        local conn = fresh()
        sqlite.run(function()
            scalar_checks(conn)
        end)
        conn:close()
    end)

    it("serve a blocking call that nothing else would (bounded in a child process)", function()
        local out = in_child([[
            local sqlite = require "pasyn_sqlite"
            local conn = sqlite.connect(":memory:", { readers = 2 })
            conn:execute("CREATE TABLE t(x)")
            conn:create_function("f", 1, function(x) return x + 1 end)
            conn:execute("INSERT INTO t VALUES (f(?))", 1)      -- the writer
            local v = conn:execute("SELECT f(x) FROM t"):fetchone()[1] -- a reader
            conn:close()
            print(v == 3 and "ok" or "wrong: " .. tostring(v))
        ]], 60)
        assert.matches("ok", out)
    end)

    it("take opts.deterministic to SQLite (an index expression needs it)", function()
        local conn = fresh()
        conn:create_function("plain", 1, function(x) return x * 2 end)
        local err = raises("OperationalError", conn.execute, conn,
                           "CREATE INDEX i ON t(plain(x))")
        assert.matches("non%-deterministic", err.message)
        conn:create_function("twice", 1, function(x) return x * 2 end, { deterministic = true })
        conn:execute("CREATE INDEX i ON t(twice(x))")
        assert.are.equal(10, scalar(conn, "SELECT x FROM t WHERE twice(x) = 20"))
        conn:close()
    end)

    it("are removed with nil, on every connection", function()
        local conn = fresh()
        conn:create_function("f", 1, function(x) return x end)
        assert.are.equal(5050, scalar(conn, "SELECT sum(f(x)) FROM t"))
        conn:create_function("f", 1, nil)
        local err = raises("OperationalError", conn.execute, conn, "SELECT sum(f(x)) FROM t")
        assert.matches("no such function: f", err.message)
        err = raises("OperationalError", conn.execute, conn, "INSERT INTO t VALUES (f(1))")
        assert.matches("no such function: f", err.message)
        -- a new definition replaces the old one everywhere
        conn:create_function("f", 1, function(x) return -x end)
        assert.are.equal(-5050, scalar(conn, "SELECT sum(f(x)) FROM t"))
        conn:create_function("f", 1, function(x) return 2 * x end)
        assert.are.same({ 10100, 10100, 10100 },
                        { scalar(conn, "SELECT sum(f(x)) FROM t"),
                          scalar(conn, "SELECT sum(f(x)) FROM t WHERE 1"),
                          scalar(conn, "SELECT sum(f(x)) FROM t WHERE 2") })
        conn:close()
    end)

    it("check their arguments", function()
        local conn = fresh()
        raises("ProgrammingError", conn.create_function, conn, 1, 1, print)
        raises("ProgrammingError", conn.create_function, conn, "f", 1.5, print)
        raises("ProgrammingError", conn.create_function, conn, "f", 128, print)
        raises("ProgrammingError", conn.create_function, conn, "f", -2, print)
        raises("ProgrammingError", conn.create_function, conn, "f", 1, "not a function")
        raises("ProgrammingError", conn.create_function, conn, "f", 1, print, "opts")
        raises("ProgrammingError", conn.create_function, conn, "", 1, print)
        raises("ProgrammingError", conn.create_aggregate, conn, "f", 1, 42)
        raises("ProgrammingError", conn.create_collation, conn, "c", {})
        -- a callable table is a function
        conn:create_function("called", 0, setmetatable({}, { __call = function() return 9 end }))
        assert.are.equal(9, scalar(conn, "SELECT called()"))
        conn:close()
        raises("ConnectionClosedError", conn.create_function, conn, "f", 1, print)
    end)

    it("refuse statements inside the function, and a yield fails the statement", function()
        local conn = fresh()
        local inner
        conn:create_function("nested", 0, function()
            local ok, err = pcall(conn.execute, conn, "SELECT 1")
            inner = err
            assert(not ok)
            return 1
        end)
        assert.are.equal(1, scalar(conn, "SELECT nested()"))
        assert.is_true(sqlite.is_error(inner), tostring(inner))
        assert.are.equal("ProgrammingError", inner.kind)
        assert.matches("cannot run statements", inner.message)
        conn:create_function("closer", 0, function() conn:close() end)
        local err = raises("OperationalError", scalar, conn, "SELECT closer()")
        assert.matches("cannot run statements or close", err.message)
        assert.is_false(conn.closed)
        conn:create_function("yielder", 0, function() coroutine.yield() return 1 end)
        sqlite.run(function()
            local err = raises("OperationalError", scalar, conn, "SELECT yielder()")
            assert.matches("yield", err.message)
            assert.are.equal(1, scalar(conn, "SELECT 1")) -- the pool goes on
        end)
        conn:close()
    end)

    it("fail the statement with an error object's text", function()
        local conn = fresh()
        conn:create_function("obj", 0, function()
            error(setmetatable({}, { __tostring = function() return "custom object" end }))
        end)
        assert.matches("custom object",
                       raises("OperationalError", scalar, conn, "SELECT obj()").message)
        conn:create_function("nontext", 0, function() error({}) end)
        assert.matches("error object is a table",
                       raises("OperationalError", scalar, conn, "SELECT nontext()").message)
        conn:close()
    end)
end)

describe("aggregates defined in Lua", function()
    local made
    local function factory()
        made = made + 1
        return { n = 0, sum = 0,
                 step = function(self, v) self.n, self.sum = self.n + 1, self.sum + v end,
                 finalize = function(self) return self.n .. ":" .. self.sum end }
    end

    local function checks(conn)
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

    it("make one object per group (blocking)", function()
        local conn = fresh()
        checks(conn)
        conn:create_aggregate("nsum", 1, nil)
        assert.matches("no such function",
                       raises("OperationalError", scalar, conn, "SELECT nsum(x) FROM t").message)
        conn:close()
    end)

    it("make one object per group (built-in scheduler)", function()
        local conn = fresh()
        sqlite.run(function() checks(conn) end)
        conn:close()
    end)

    it("forget a group whose statement ends early", function()
        local conn = fresh()
        made = 0
        conn:create_aggregate("nsum", 1, factory)
        local cur = conn:execute("SELECT x, nsum(x) FROM t GROUP BY x")
        assert.are.same({ 1, "1:1" }, { cur:fetchone()[1], "1:1" })
        cur:close()
        collectgarbage()
        support.wait_no_stream(conn)
        assert.is_nil(next(debug.getregistry()["pasyn_sqlite.groups"]))
        conn:close()
    end)
end)

describe("collations defined in Lua", function()
    local function checks(conn)
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

    it("order rows (blocking)", function()
        local conn = fresh()
        checks(conn)
        conn:close()
    end)

    it("order rows (built-in scheduler)", function()
        local conn = fresh()
        sqlite.run(function() checks(conn) end)
        conn:close()
    end)
end)

describe("SQL functions through a host adapter (luv)", function()
    local ok_luv, uv = pcall(require, "luv")
    it("serve calls where the adapter dispatches", function()
        if not ok_luv then
            pending("luv is not installed")
            return
        end
        local before = sqlite.set_host(nil)
        require "pasyn_sqlite.luv"
        local conn = fresh()
        local done, failure = false, nil
        local co = coroutine.create(function()
            local ok, err = pcall(function()
                scalar_checks(conn)
                conn:create_aggregate("mx", 1, function()
                    return { m = nil, step = function(s, v) s.m = math.max(s.m or v, v) end,
                             finalize = function(s) return s.m end }
                end)
                assert.are.equal(100, scalar(conn, "SELECT mx(x) FROM t"))
            end)
            done, failure = true, not ok and err or nil
        end)
        assert(coroutine.resume(co))
        local watchdog = uv.new_timer()
        watchdog:unref()
        watchdog:start(60000, 0, function() uv.stop() end)
        uv.run()
        watchdog:close()
        uv.run("nowait")
        sqlite.set_host(before)
        assert.is_true(done, "the coroutine finished")
        assert.is_nil(failure, tostring(failure))
        conn:close()
    end)
end)

describe("SQL functions under load", function()
    it("serve writes through group commit beside concurrent plain writes", function()
        local conn = fresh()
        conn:execute("CREATE TABLE g(k, v)")
        conn:create_function("sq", 1, function(x) return x * x end)
        sqlite.run(function()
            for i = 1, 200 do
                sqlite.spawn(function()
                    if i % 2 == 0 then
                        conn:execute("INSERT INTO g VALUES (?, sq(?))", i, i)
                    else
                        conn:execute("INSERT INTO g VALUES (?, ?)", i, i * i)
                    end
                end)
            end
        end)
        assert.are.equal(200, scalar(conn, "SELECT count(*) FROM g"))
        assert.are.equal(0, scalar(conn, "SELECT count(*) FROM g WHERE v <> k * k"))
        conn:close()
    end)

    it("reach readers busy with long reads before their next statement", function()
        local conn = fresh({ readers = 3 })
        sqlite.run(function()
            local long = {}
            for i = 1, 3 do
                long[i] = sqlite.spawn(function() return scalar(conn, LONG_SQL, 400000) end)
            end
            sqlite.sleep(0.02) -- they run now
            conn:create_function("late", 1, function(x) return x + 1000 end)
            local quick = {}
            for i = 1, 6 do -- spread over the readers, the busy ones too
                quick[i] = sqlite.spawn(function() return scalar(conn, "SELECT late(?)", i) end)
            end
            for i = 1, 6 do
                assert.are.equal(1000 + i, quick[i]:join())
            end
            for i = 1, 3 do
                assert.are.equal(400000, long[i]:join())
            end
        end)
        conn:close()
    end)

    it("serve a caller blocked for a max_pending slot", function()
        local conn = fresh({ readers = 2, max_pending = 1 })
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
        conn:close()
    end)

    it("close waits for a statement that calls them, serving it", function()
        local conn = fresh()
        conn:create_function("f", 1, function(x) return x + 1 end)
        local got
        sqlite.run(function()
            sqlite.spawn(function() got = scalar(conn, "SELECT sum(f(x)) FROM t") end)
            sqlite.spawn(function() conn:close() end)
        end)
        assert.are.equal(5150, got)
        assert.is_true(conn.closed)
    end)

    it("fail a call when the Lua state closes mid-call, and end (child process)", function()
        if UNDER_TSAN then
            pending("closing the Lua state needs a child process")
            return
        end
        local out = in_child([[
            local sqlite = require "pasyn_sqlite"
            sqlite.set_host({})
            local conn = sqlite.connect(":memory:", { readers = 2 })
            conn:execute("CREATE TABLE t(x)")
            for i = 1, 50 do conn:execute("INSERT INTO t VALUES (?)", i) end
            local calls = 0
            conn:create_function("f", 1, function(x) calls = calls + 1 return x end)
            local co = coroutine.create(function()
                return conn:execute("SELECT sum(f(x)) FROM t"):fetchone()
            end)
            assert(coroutine.resume(co)) -- in flight: its calls wait for a dispatch
            sqlite.sleep(0.05)
            print(calls == 0 and "in flight" or "wrong: calls " .. calls)
            -- the end of the chunk closes the Lua state: the pool's __gc refuses the calls,
            -- the statement fails, the close completes
        ]], 60)
        assert.matches("in flight", out)
        assert.matches("status=0", out)
    end)

    it("keep every result right with 64 coroutines calling them beside plain statements",
       function()
        local conn = fresh({ readers = 3 })
        conn:execute("CREATE TABLE out(k INTEGER PRIMARY KEY, v)")
        local calls = 0
        conn:create_function("inc", 1, function(x)
            calls = calls + 1
            return x + 1
        end)
        local wrong, done = {}, 0
        local t0 = os.time()
        sqlite.run(function()
            for c = 1, 64 do
                sqlite.spawn(function()
                    for r = 1, 10 do
                        local k = c * 100 + r
                        local kind = (c + r) % 4
                        if kind == 0 then
                            local v = scalar(conn, "SELECT sum(inc(x)) FROM t WHERE x <= ?", r)
                            if v ~= r * (r + 1) / 2 + r then wrong[#wrong + 1] = k end
                        elseif kind == 1 then
                            conn:execute("INSERT INTO out VALUES (?, inc(?))", k, k)
                        elseif kind == 2 then
                            local v = scalar(conn, "SELECT count(*) FROM t WHERE x <= ?", r)
                            if v ~= r then wrong[#wrong + 1] = k end
                        else
                            conn:execute("INSERT INTO out VALUES (?, ?)", k, k + 1)
                        end
                    end
                    done = done + 1
                end)
            end
        end)
        assert.are.same({}, wrong)
        assert.are.equal(64, done)
        assert.are.equal(320, scalar(conn, "SELECT count(*) FROM out"))
        assert.are.equal(0, scalar(conn, "SELECT count(*) FROM out WHERE v <> k + 1"))
        assert.is_true(calls >= 160 * 1 + 160, "calls " .. calls)
        assert.is_true(os.time() - t0 < 120, "bounded in time")
        conn:close()
    end)
end)
