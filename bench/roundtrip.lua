-- Round trip of a point SELECT from one caller: pasyn_sqlite (blocking from the main thread,
-- and yielding from one coroutine of the built-in scheduler) against the synchronous bindings
-- LuaDBI and LuaSQL, on the same file, same rows, same ids. Rounds are interleaved; medians
-- and min-max are printed with each one's ratio to LuaDBI.
--   lua5.4 bench/roundtrip.lua [queries per round, default 20000] [rounds, default 5]
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"

local N = tonumber(arg and arg[1]) or 20000
local ROUNDS = tonumber(arg and arg[2]) or 5
local ROWS = 100000
local now = core.now

local path = os.tmpname()
local function cleanup()
    for _, s in ipairs({ "", "-wal", "-shm" }) do
        os.remove(path .. s)
    end
end

do -- the data
    local conn = sqlite.connect(path)
    conn:execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER)")
    local i = 0
    conn:executemany("INSERT INTO users VALUES (?, ?, ?, ?)", function()
        i = i + 1
        if i <= ROWS then
            return { i, "user" .. i, "user" .. i .. "@example.org", 20 + i % 50 }
        end
    end)
    conn:close()
end

math.randomseed(42)
local ids = {}
for i = 1, N do
    ids[i] = math.random(ROWS)
end
local SQL = "SELECT * FROM users WHERE id = ?"

local competitors = {}

local ok_dbi, DBI = pcall(require, "DBI")
if ok_dbi then
    local db = assert(DBI.Connect("SQLite3", path))
    db:autocommit(true)
    local stmt = assert(db:prepare(SQL))
    competitors[#competitors + 1] = { name = "LuaDBI (sync, prepared)", db = db, run = function()
        for i = 1, N do
            stmt:execute(ids[i])
            local row = stmt:fetch(false)
            assert(row[1] == ids[i])
        end
    end }
end

local ok_sql, luasql = pcall(require, "luasql.sqlite3")
if ok_sql then
    local env = luasql.sqlite3()
    local db = assert(env:connect(path))
    competitors[#competitors + 1] = { name = "LuaSQL (sync, no prepare)", db = db, env = env, run = function()
        for i = 1, N do
            local cur = db:execute("SELECT * FROM users WHERE id = " .. ids[i])
            local row = cur:fetch({})
            cur:close()
            assert(tonumber(row[1]) == ids[i])
        end
    end }
end

local conn = sqlite.connect(path)
competitors[#competitors + 1] = { name = "pasyn, blocking call", run = function()
    for i = 1, N do
        local row = conn:execute(SQL, ids[i]):fetchone()
        assert(row[1] == ids[i])
    end
end }
competitors[#competitors + 1] = { name = "pasyn, one coroutine", run = function()
    sqlite.run(function()
        for i = 1, N do
            local row = conn:execute(SQL, ids[i]):fetchone()
            assert(row[1] == ids[i])
        end
    end)
end }
local conn0 = sqlite.connect(path, { readers = 0 })
competitors[#competitors + 1] = { name = "pasyn readers=0, coroutine", run = function()
    sqlite.run(function()
        for i = 1, N do
            local row = conn0:execute(SQL, ids[i]):fetchone()
            assert(row[1] == ids[i])
        end
    end)
end }

local f = io.open("/proc/cpuinfo")
local cores = 0
if f then
    for line in f:lines() do
        if line:match("^processor") then
            cores = cores + 1
        end
    end
    f:close()
end
print(string.format("point SELECT round trip, %d queries x %d rounds, %d rows, %s, %d cores",
                    N, ROUNDS, ROWS, _VERSION, cores))

for _, c in ipairs(competitors) do
    c.run() -- warm up
    c.times = {}
end
for round = 1, ROUNDS do
    for _, c in ipairs(competitors) do
        local t0 = now()
        c.run()
        c.times[#c.times + 1] = (now() - t0) / N * 1e6
    end
    io.stderr:write(string.format("\rround %d/%d", round, ROUNDS))
end
io.stderr:write("\n")

local function median(t)
    table.sort(t)
    local n = #t
    return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

local base = median(competitors[1].times)
local base_name = competitors[1].name:match("^%S+")
print(string.format("%-30s %12s %18s %10s", "competitor", "median us/q", "min-max", "vs " .. base_name))
for _, c in ipairs(competitors) do
    local m = median(c.times)
    local lo, hi = c.times[1], c.times[#c.times]
    print(string.format("%-30s %12.2f %8.2f-%-8.2f %9.2fx", c.name, m, lo, hi, m / base))
end
conn:close()
conn0:close()
cleanup()
