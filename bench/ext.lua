-- Figures for the README's sections on on_change, trace and backup:
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/ext.lua
-- on_change: a 100,000-row INSERT in one transaction (executemany), with and without a hook
-- that counts the events; trace: 100,000 point SELECTs and 10,000 INSERTs from one blocking
-- caller, with and without a trace function, on a pool of readers = 0 (one thread: no
-- worker's spinning in the CPU time); backup: a ~50 MB file database into a new file, all at
-- once and 100 pages per step. Each figure is the best of 3 runs (trace: of 5, with and
-- without in turn), in wall-clock seconds and, for trace, also in CPU seconds of the whole
-- process (os.clock: every thread), which a busy machine disturbs less.
-- With the argument "profile": only 100,000 traced point SELECTs (readers = 0), for a profiler:
--   perf record -F 2000 -o /tmp/perf.data lua5.4 bench/ext.lua profile
local ROOT = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/bench/?.lua;" .. package.path
local sqlite = require "pasyn_sqlite"
local lib = require "lib"

local now = require("pasyn_sqlite.core").now
local N = 100000

local function best(runs, fn)
    local t = math.huge
    for _ = 1, runs do
        local t0 = now()
        fn()
        t = math.min(t, now() - t0)
    end
    return t
end

-- The best wall-clock and CPU times of fn over `runs` runs, each after `before()`.
local function best_of(runs, before, fn, into)
    for _ = 1, runs do
        before()
        local t0, c0 = now(), os.clock()
        fn()
        into.wall = math.min(into.wall or math.huge, now() - t0)
        into.cpu = math.min(into.cpu or math.huge, os.clock() - c0)
    end
    return into
end

local function tmp()
    return lib.fresh_path("ext")
end

local remove_db = lib.remove

if arg and arg[1] == "profile" then
    local db = sqlite.connect(":memory:", { readers = 0 })
    db:execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    local k = 0
    db:executemany("INSERT INTO t(v) VALUES (?)", function()
        k = k + 1
        return k <= N and { k } or nil
    end)
    local traced = 0
    db:trace(function() traced = traced + 1 end)
    for i = 1, N do
        db:execute("SELECT v FROM t WHERE id = ?", i)
    end
    assert(traced == N)
    db:close()
    return
end

-- on_change
local conn = sqlite.connect(":memory:")
conn:execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
local function bulk()
    conn:execute("DELETE FROM t WHERE 1")
    local i = 0
    conn:executemany("INSERT INTO t(v) VALUES (?)", function()
        i = i + 1
        return i <= N and { i } or nil
    end)
end
local off = best(3, bulk)
local events = 0
conn:on_change(function() events = events + 1 end)
local on = best(3, bulk)
conn:on_change(nil)
assert(events >= N)
print(("on_change: %d-row INSERT in one transaction: %.3f s without, %.3f s with a hook; " ..
       "%.0f events/s delivered (the difference: %.0f ns per event)")
      :format(N, off, on, N / on, (on - off) / N * 1e9))

-- trace
local function points()
    for i = 1, N do
        conn:execute("SELECT v FROM t WHERE id = ?", i)
    end
end
local function inserts()
    for i = 1, N / 10 do
        conn:execute("INSERT INTO t(v) VALUES (?)", i)
    end
end
conn:close()
conn = sqlite.connect(":memory:", { readers = 0 })
conn:execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
bulk()
local traced = 0
local function trace_off() conn:trace(nil) end
local function trace_on() conn:trace(function() traced = traced + 1 end) end
local p_off, p_on, i_off, i_on = {}, {}, {}, {}
for _ = 1, 5 do
    best_of(1, trace_off, points, p_off)
    best_of(1, trace_on, points, p_on)
    best_of(1, trace_off, inserts, i_off)
    best_of(1, trace_on, inserts, i_on)
end
conn:trace(nil)
assert(traced > 0)
local function line(what, n, off_t, on_t)
    return ("%d %s: wall %.3f s without, %.3f s with (%+.1f%%); CPU %.3f s without, %.3f s " ..
            "with (%+.2f us per statement)")
           :format(n, what, off_t.wall, on_t.wall, (on_t.wall / off_t.wall - 1) * 100, off_t.cpu,
                   on_t.cpu, (on_t.cpu - off_t.cpu) / n * 1e6)
end
print("trace (readers = 0): " .. line("point SELECTs", N, p_off, p_on))
print("trace (readers = 0): " .. line("INSERTs", N / 10, i_off, i_on))
conn:close()

-- backup
local src = tmp()
local db = sqlite.connect(src)
db:execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
local blob = sqlite.blob(("x"):rep(1000))
local i = 0
db:executemany("INSERT INTO big(v) VALUES (?)", function()
    i = i + 1
    return i <= 48000 and { blob } or nil
end)
db:execute("PRAGMA wal_checkpoint(TRUNCATE)")
local pages = db:execute("PRAGMA page_count"):fetchone()[1]
local size = pages * db:execute("PRAGMA page_size"):fetchone()[1]
for _, step in ipairs({ false, 100 }) do
    local dest = tmp()
    local t = best(3, function()
        remove_db(dest)
        db:backup(dest, { pages = step or nil })
    end)
    remove_db(dest)
    print(("backup: %.1f MB (%d pages) %s: %.3f s, %.0f MB/s")
          :format(size / 1e6, pages, step and ("in steps of " .. step .. " pages") or "at once",
                  t, size / 1e6 / t))
end
db:close()
remove_db(src)
