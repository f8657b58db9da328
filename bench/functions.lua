-- bench/functions.lua: what a SQL function defined in Lua costs. SELECT sum(f(x)) FROM t over
-- ROWS rows (default 100000) with f = function(x) return x + 1 end, in each way a caller waits
-- (a blocking call, the built-in scheduler), against the same sum with SQLite's own arithmetic
-- (sum(x + 1)) through the pool, and against f defined in C and called in-thread
-- (bench/functions_raw.c, when build/bench-functions-raw exists). Best of RUNS (default 5).
--
--   cc -O2 bench/functions_raw.c -lsqlite3 -o build/bench-functions-raw
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/functions.lua
local sqlite = require "pasyn_sqlite"
local now = require("pasyn_sqlite.core").now

local ROWS = tonumber(os.getenv("ROWS")) or 100000
local RUNS = tonumber(os.getenv("RUNS")) or 5
local EXPECTED = ROWS * (ROWS + 1) / 2 + ROWS

local conn = sqlite.connect(":memory:")
conn:execute("CREATE TABLE t(x INTEGER)")
conn:execute([[INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
               WHERE x < ?) SELECT x FROM c]], ROWS)
conn:create_function("f", 1, function(x) return x + 1 end)

local function best(run)
    local b = math.huge
    for _ = 1, RUNS do
        local t0 = now()
        local got = run()
        local took = now() - t0
        assert(got == EXPECTED, ("sum %s, expected %d"):format(tostring(got), EXPECTED))
        b = math.min(b, took)
    end
    return b
end

local function row(label, seconds)
    print(("%-44s %8.1f ms %12.0f rows/s %8.2f us/row"):format(label, seconds * 1e3,
          ROWS / seconds, seconds / ROWS * 1e6))
end

local function query(sql)
    return function() return conn:execute(sql):fetchone()[1] end
end

print(("SELECT sum(f(x)) FROM t, %d rows, best of %d (%s, SQLite %s)"):format(ROWS, RUNS,
      jit and jit.version or _VERSION, sqlite.sqlite_version)) -- luacheck: ignore jit
row("sum(x + 1), SQLite's arithmetic, pool", best(query("SELECT sum(x + 1) FROM t")))
row("sum(f(x)), f in Lua, blocking call", best(query("SELECT sum(f(x)) FROM t")))
local in_run
sqlite.run(function() in_run = best(query("SELECT sum(f(x)) FROM t")) end)
row("sum(f(x)), f in Lua, built-in scheduler", in_run)
local p = io.popen("build/bench-functions-raw " .. ROWS .. " " .. RUNS .. " 2>/dev/null")
local out = p and p:read("*a") or ""
if p then p:close() end
local raw, sum = out:match("^(%S+) (%S+)")
if raw then
    assert(tonumber(sum) == EXPECTED)
    row("sum(f(x)), f in C, in-thread (functions_raw.c)", tonumber(raw))
end
conn:close()
