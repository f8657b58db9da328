-- The benchmark suite: pasyn_sqlite against the synchronous bindings (LuaDBI, LuaSQL) and raw C
-- on the workloads of the benchmark plan (W1-W8, W7p, M1); every workload on the same file and
-- data for all its competitors, in interleaved rounds; one table at the end with medians,
-- min-max, per-round ratios and whether each target is met, then notes, and a chart of W3 and W4
-- (build/bench-chart.svg, drawn by gnuplot from bench/chart.gp). See bench/README.md.
--   make bench
--   LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/suite.lua
-- Environment: BENCH_SCALE (default 1; 0.1 for a quick run), BENCH_ROUNDS (default 5),
-- BENCH_ONLY (e.g. "W1,W3": only those workloads), BENCH_CHART (where the chart goes, default
-- build/bench-chart.svg; bench/chart.svg is the README's). Progress goes to stderr.

local ROOT = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/bench/?.lua;" .. package.path
if not pcall(require, "pasyn_sqlite") then -- run by hand from elsewhere: the tree's own build
    package.path = ROOT .. "/lua/?.lua;" .. package.path
    package.cpath = ROOT .. "/build/" .. (arg[-1] or "lua5.4"):match("[^/]*$") .. "/?.so;" .. package.cpath
end

local sqlite = require "pasyn_sqlite"
local lib = require "lib"

local now, scaled, progress = lib.now, lib.scaled, lib.progress
local ROWS = lib.ROWS
local POINT = "SELECT * FROM users WHERE id = ?"
-- W3/W4: the CPU-heavy read, a GROUP BY over a computed expression (~80 ms here).
local GROUPBY = "SELECT age % 10 AS k, count(*), sum(length(name)), " ..
                "CAST(avg(length(email)) * 1000 AS INTEGER), max(length(city)), min(city) " ..
                "FROM users GROUP BY k ORDER BY k"
-- W7: the heavy scan, a full-table aggregate (~30 ms here).
local SCAN = "SELECT count(*), sum(length(name) + length(email)), sum(instr(email, 'o')), max(age) " ..
             "FROM users"

local LUA = arg and arg[-1] or "lua5.4"

-- The command line that runs this script again as a child process (`kind` is m1 or w8).
local function child_command(kind, ...)
    return lib.command(LUA, ROOT .. "/bench/suite.lua", "--" .. kind .. "-child", ...)
end

-- Runs fn(i, c) for i = 1..n from `callers` coroutines under sqlite.run, coroutine c taking
-- i = c, c + callers, c + 2 * callers, ...; returns when all are done.
local function in_coroutines(callers, n, fn)
    sqlite.run(function()
        local hs = {}
        for c = 1, math.min(callers, n) do
            hs[c] = sqlite.spawn(function()
                for i = c, n, callers do
                    fn(i, c)
                end
            end)
        end
        for c = 1, #hs do
            hs[c]:join()
        end
    end)
end

-- ---- M1's child: one measurement in a process of its own ----------------------------------------
-- lua5.4 bench/suite.lua --m1-child <db> <n> stmt|sleep
-- prints: rss_before peak_rss result_bytes completed_before_all_submitted

local function m1_child(path, n, mode)
    n = math.tointeger(tonumber(n))
    local conn = sqlite.connect(path, { max_pending = n }) -- every statement in flight at once
    -- Fill every reader's page cache first (it would otherwise grow during the measurement):
    -- more full scans at once than there are readers, twice.
    for _ = 1, 2 do
        sqlite.run(function()
            local hs = {}
            for i = 1, 12 do
                hs[i] = sqlite.spawn(function()
                    local sql = "SELECT sum(length(name) + length(email) + length(city)) FROM users"
                    return conn:execute(sql):fetchone()[1]
                end)
            end
            for i = 1, #hs do
                hs[i]:join()
            end
        end)
    end
    local ids = lib.ids(n, 11)
    local rows, done, seen = {}, 0, nil
    collectgarbage("collect")
    collectgarbage("collect")
    local before = lib.status_bytes("VmRSS")
    local reset = lib.reset_peak()
    local sampled = before
    sqlite.run(function()
        local hs = {}
        for i = 1, n do
            if mode == "stmt" then
                hs[i] = sqlite.spawn(function()
                    local row = conn:execute(POINT, ids[i]):fetchone()
                    done = done + 1
                    rows[i] = row
                end)
            else -- the baseline: as many coroutines of the scheduler, parked in a timer
                hs[i] = sqlite.spawn(function()
                    sqlite.sleep(0.2)
                    done = done + 1
                end)
            end
        end
        -- Runs after every coroutine above ran to its first wait: all are in flight now.
        hs[n + 1] = sqlite.spawn(function()
            seen = done
            sampled = math.max(sampled, lib.status_bytes("VmRSS"))
        end)
        for i = 1, #hs do
            hs[i]:join()
        end
        sampled = math.max(sampled, lib.status_bytes("VmRSS"))
    end)
    local peak = math.max(sampled, reset and lib.status_bytes("VmHWM") or 0)
    local result_bytes = 0
    if mode == "stmt" then
        for i = 1, n do
            assert(rows[i][1] == ids[i], "M1: asked for id " .. ids[i] .. ", got " .. tostring(rows[i][1]))
        end
        collectgarbage("collect")
        collectgarbage("collect")
        local k1 = collectgarbage("count")
        rows = nil -- luacheck: ignore (measured: what the held results weigh)
        collectgarbage("collect")
        collectgarbage("collect")
        result_bytes = (k1 - collectgarbage("count")) * 1024 / n
    end
    conn:close()
    io.write(string.format("%d %d %.1f %d\n", before, peak, result_bytes, seen))
end

-- ---- W8's child: one of the processes of a run ---------------------------------------------------
-- lua5.4 bench/suite.lua --w8-child pasyn|dbi <db> <process> <coroutines> <ops per coroutine> <start>
-- Opens its connection, waits for the common start (lib.now's clock is system-wide), runs its
-- operations and prints: ready end ops inserts failed locked batches batched first-error

local W8 = {
    point = POINT,
    range = "SELECT id, name, age FROM users WHERE id >= ? ORDER BY id LIMIT 50",
    count = "SELECT count(*) FROM users WHERE city = ?",
    insert = "INSERT INTO w8_events (process, op, note) VALUES (?, ?, ?)",
}
local W8_SCHEMA = "CREATE TABLE w8_events (id INTEGER PRIMARY KEY, process INTEGER, op INTEGER, note TEXT)"

-- Process p's n operations, the same for both competitors: kinds[i] is point (40%), range (20%),
-- count (20%) or insert (20%); ids[i] the id read, the range's first id, or the city's number.
local function w8_ops(p, n)
    local kinds, ids = lib.ids(n, 80 + p, 100), lib.ids(n, 90 + p)
    for i = 1, n do
        local k = kinds[i]
        kinds[i] = k <= 40 and "point" or k <= 60 and "range" or k <= 80 and "count" or "insert"
    end
    return kinds, ids
end

local function w8_city(id)
    return lib.CITIES[id % #lib.CITIES + 1]
end

-- What is wrong with an operation's result (rows read, or rows changed by an insert), or nil.
local function w8_wrong(kind, id, got, counts)
    local ok
    if kind == "insert" then
        ok = got == 1
    elseif kind == "point" then
        ok = #got == 1 and got[1][1] == id
    elseif kind == "range" then
        local n = math.min(50, ROWS - id + 1)
        ok = #got == n and got[1][1] == id and got[n][1] == id + n - 1
    else
        ok = #got == 1 and got[1][1] == counts[w8_city(id)]
    end
    if not ok then
        return string.format("wrong result for %s %d: %s", kind, id,
                             type(got) == "table" and #got .. " rows" or tostring(got))
    end
end

-- The competitors' side: exec(kind, ...) runs one operation and returns its rows (or the rows an
-- insert changed), or nil and the error; close() returns the writer's batches and batched.
local function w8_pasyn_open(path)
    local conn = sqlite.connect(path) -- the defaults: busy_timeout 5000 ms, WAL, synchronous normal
    local function op(kind, ...)
        local cur = conn:execute(W8[kind], ...)
        if kind == "insert" then
            return cur.rowcount
        end
        return cur:fetchall()
    end
    local function exec(kind, ...)
        local ok, got = pcall(op, kind, ...)
        if ok then
            return got
        end
        return nil, got
    end
    return exec, function()
        local w = conn:stats().writer
        conn:close()
        return w.batches, w.batched
    end
end

local function w8_dbi_open(path)
    local db = assert(lib.open_dbi(path))
    assert(lib.dbi_value(db, "PRAGMA busy_timeout = 5000") == 5000)
    assert(lib.dbi_value(db, "PRAGMA journal_mode = WAL") == "wal")
    assert(lib.DBI.Do(db, "PRAGMA synchronous = NORMAL"))
    local sts = {}
    for kind, sql in pairs(W8) do
        sts[kind] = assert(db:prepare(sql))
    end
    local function exec(kind, ...)
        local st = sts[kind]
        if kind ~= "insert" then
            return lib.dbi_rows(st, ...)
        end
        local ok, err = st:execute(...)
        if not ok then
            return nil, err
        end
        return st:affected()
    end
    return exec, function()
        for _, st in pairs(sts) do
            st:close()
        end
        db:close()
        return 0, 0
    end
end

local function w8_child(who, path, p, callers, per, start)
    local function int(v)
        return math.tointeger(tonumber(v))
    end
    p, callers, per, start = int(p), int(callers), int(per), tonumber(start)
    local n = callers * per
    local kinds, ids = w8_ops(p, n)
    local counts = lib.city_counts()
    local exec, close = (who == "pasyn" and w8_pasyn_open or w8_dbi_open)(path)
    local first_row, first_err = exec("point", 1) -- the connection is up
    assert(first_row and not w8_wrong("point", 1, first_row), first_err)
    local failed, locked, inserts, first = 0, 0, 0, nil
    local function run(i)
        local kind, id = kinds[i], ids[i]
        local got, err
        if kind == "insert" then
            inserts = inserts + 1
            got, err = exec(kind, p, i, "event " .. i)
        elseif kind == "count" then
            got, err = exec(kind, w8_city(id))
        else
            got, err = exec(kind, id)
        end
        err = err and tostring(err) or w8_wrong(kind, id, got, counts)
        if err then
            failed = failed + 1
            locked = locked + (err:find("locked") and 1 or 0)
            first = first or string.format("%s (operation %d): %s", kind, i, (err:gsub("%s+", " ")))
        end
    end
    local ready = now()
    sqlite.sleep(start - ready) -- outside sqlite.run it blocks
    local cpu0 = lib.cpu_seconds()
    if who == "pasyn" then
        in_coroutines(callers, n, run)
    else
        for i = 1, n do
            run(i)
        end
    end
    local done, cpu = now(), lib.cpu_seconds() - cpu0
    local batches, batched = close()
    io.write(string.format("%.6f %.6f %d %d %d %d %d %d %.2f %s\n", ready, done, n, inserts, failed, locked,
                           batches, batched, cpu, first or "-"))
end

if arg and arg[1] == "--m1-child" then
    m1_child(arg[2], arg[3], arg[4])
    os.exit(0)
elseif arg and arg[1] == "--w8-child" then
    w8_child(table.unpack(arg, 2, 7))
    os.exit(0)
end

-- ---- the suite -------------------------------------------------------------------------------------

local T0 = now()
local only = {}
for w in (os.getenv("BENCH_ONLY") or ""):gmatch("[%w]+") do
    only[w:upper()] = true
end
local function wanted(id)
    return next(only) == nil or only[id]
end

local RAW = lib.raw_path(ROOT)
local m = lib.machine()
print(string.format("pasyn_sqlite benchmark suite: scale %g, %d rounds, %d rows in users",
                    lib.SCALE, lib.ROUNDS, ROWS))
print(string.format("machine: %d cores (%d in /proc/cpuinfo), %s", m.cores, m.cpus, m.cpu))
local _, raw_sqlite = lib.raw(RAW, "version")
print(string.format("%s; pasyn_sqlite %s on SQLite %s; LuaDBI %s on SQLite %s;", m.lua, m.pasyn,
                    m.pasyn_sqlite, m.dbi, m.dbi_sqlite))
print(string.format("%s on SQLite %s; raw C (build/bench-raw) on SQLite %s", m.luasql, m.luasql_sqlite,
                    raw_sqlite))
io.stdout:flush()

local notes = {} -- lines printed under the table
local function note(fmt, ...)
    notes[#notes + 1] = string.format(fmt, ...)
end

local DB = lib.make_users()
progress("data set: %d rows in %s", ROWS, DB)

local function check(cond, fmt, ...)
    if not cond then
        error(string.format(fmt, ...), 2)
    end
end

-- The sum of the ages of the given users: what every point-read competitor must compute.
local function age_sum(ids)
    local s = 0
    for i = 1, #ids do
        s = s + lib.user(ids[i])[4]
    end
    return s
end

-- The rows of `sql` on the file at `path`, read through a connection of its own: what another
-- connection sees committed.
local function committed_rows(path, sql)
    local conn = sqlite.connect(path, { readers = 0 })
    local rows = conn:execute(sql):fetchall()
    conn:close()
    return rows
end

-- CPU and context switches around a run of a pasyn connection (its threads must be alive).
local function probe()
    local v, iv = lib.context_switches()
    local all, lua = lib.cpu_seconds()
    return { v = v, iv = iv, all = all, lua = lua, t = now() }
end
local function probe_text(a, b, queries)
    local wall = b.t - a.t
    return string.format("%.2f cores busy, Lua thread %.0f%% busy, %.2f voluntary + %.2f involuntary " ..
                         "context switches per query", (b.all - a.all) / wall, 100 * (b.lua - a.lua) / wall,
                         (b.v - a.v) / queries, (b.iv - a.iv) / queries)
end

-- Competitors by their key.
local function by_key(cs)
    local by = {}
    for _, c in ipairs(cs) do
        by[c.key] = c
    end
    return by
end

-- A LuaDBI statement prepared on DB, and a function that closes it and its connection; nil
-- (and a close that does nothing) when LuaDBI is not installed.
local function dbi_prepared(sql)
    local dbi = lib.open_dbi(DB)
    if not dbi then
        return nil, function() end
    end
    local st = assert(dbi:prepare(sql))
    return st, function()
        st:close()
        dbi:close()
    end
end

-- The point-read references of W1 and W2: raw C, and LuaDBI running the reads one after the
-- other, both checked against `expect`; `result(dt)` turns a run's seconds into its metrics.
-- Returns what closes LuaDBI.
local function point_references(cs, id, names, n, seed, ids, expect, result)
    cs[#cs + 1] = { name = names.raw, key = "raw", run = function()
        local dt, got = lib.raw(RAW, "point", DB, n, seed, ROWS)
        check(tonumber(got) == expect, "%s raw C: age sum %s, not %d", id, got, expect)
        return result(dt)
    end }
    local st, close = dbi_prepared(POINT)
    if st then
        cs[#cs + 1] = { name = names.dbi, key = "dbi", run = function()
            local sum = 0
            local t0 = now()
            for i = 1, n do
                st:execute(ids[i])
                local row = st:fetch(false)
                check(row[1] == ids[i], "%s LuaDBI: asked for %d, got %s", id, ids[i], tostring(row[1]))
                sum = sum + row[4]
            end
            local dt = now() - t0
            check(sum == expect, "%s LuaDBI: age sum %d, not %d", id, sum, expect)
            return result(dt)
        end }
    end
    return close
end

-- ---- W1: one coroutine, point reads -----------------------------------------------------------

local function w1()
    local N = scaled(100000, 1000)
    local SEED = 1
    local ids = lib.ids(N, SEED)
    local expect = age_sum(ids)
    local cs = {}
    local function us(dt)
        return { us = dt / N * 1e6 }, string.format("%.3f s, %.2f us/query", dt, dt / N * 1e6)
    end
    local close_dbi = point_references(cs, "W1", { raw = "raw C, prepared", dbi = "LuaDBI, prepared" },
                                       N, SEED, ids, expect, us)
    local lsql, lenv = lib.open_luasql(DB)
    if lsql then
        cs[#cs + 1] = { name = "LuaSQL, no prepare", key = "luasql", run = function()
            local sum = 0
            local t0 = now()
            for i = 1, N do
                local cur = lsql:execute("SELECT * FROM users WHERE id = " .. ids[i])
                local row = cur:fetch({})
                cur:close()
                check(row[1] == ids[i], "W1 LuaSQL: asked for %d, got %s", ids[i], tostring(row[1]))
                sum = sum + row[4]
            end
            local dt = now() - t0
            check(sum == expect, "W1 LuaSQL: age sum %d, not %d", sum, expect)
            return us(dt)
        end }
    end
    local conn = sqlite.connect(DB)
    local probes = {}
    cs[#cs + 1] = { name = "pasyn, 1 coroutine", key = "pasyn", run = function(round)
        local sum = 0
        local p0 = probe()
        local t0 = now()
        sqlite.run(function()
            for i = 1, N do
                local row = conn:execute(POINT, ids[i]):fetchone()
                check(row[1] == ids[i], "W1 pasyn: asked for %d, got %s", ids[i], tostring(row[1]))
                sum = sum + row[4]
            end
        end)
        local dt = now() - t0
        if round > 0 then
            probes[#probes + 1] = probe_text(p0, probe(), N)
        end
        check(sum == expect, "W1 pasyn: age sum %d, not %d", sum, expect)
        return us(dt)
    end }
    lib.rounds("W1", cs)
    conn:close()
    close_dbi()
    if lsql then
        lsql:close()
        lenv:close()
    end
    local by = by_key(cs)
    for _, c in ipairs(cs) do
        local r = { id = "W1", who = c.name, metric = "us/query", samples = c.samples.us }
        if c.key == "pasyn" and by.dbi then
            r.ratio = { label = "pasyn/LuaDBI", values = lib.ratios(c.samples.us, by.dbi.samples.us) }
            local v = lib.median(r.ratio.values)
            r.target, r.met = "<= 2.0x (stretch 1.5x)", v <= 2.0
            r.note = v <= 1.5 and "(stretch met)" or nil
        elseif c.key ~= "dbi" and by.dbi then
            r.ratio = { label = "vs LuaDBI", values = lib.ratios(c.samples.us, by.dbi.samples.us) }
        end
        lib.row(r)
    end
    note("W1: %d point reads per run; pasyn run (last round): %s", N, probes[#probes] or "-")
end

-- ---- W2: 256 coroutines, point reads ---------------------------------------------------------

local function w2()
    local N, CALLERS = scaled(200000, 2000), 256
    local SEED = 2
    local ids = lib.ids(N, SEED)
    local expect = age_sum(ids)
    local cs = {}
    local function kqs(dt)
        return { kqs = N / dt / 1000 }, string.format("%.3f s, %.0f queries/s", dt, N / dt)
    end
    local close_dbi = point_references(cs, "W2", { raw = "raw C, prepared, 1 thread",
                                                   dbi = "LuaDBI, prepared, sequential" },
                                       N, SEED, ids, expect, kqs)
    local conn = sqlite.connect(DB)
    local probes, stolen = {}, {}
    cs[#cs + 1] = { name = "pasyn, 256 coroutines", key = "pasyn", run = function(round)
        local sums = {}
        local s0 = conn:stats()
        local p0 = probe()
        local t0 = now()
        in_coroutines(CALLERS, N, function(i, c)
            local row = conn:execute(POINT, ids[i]):fetchone()
            check(row[1] == ids[i], "W2 pasyn: asked for %d, got %s", ids[i], tostring(row[1]))
            sums[c] = (sums[c] or 0) + row[4]
        end)
        local dt = now() - t0
        if round > 0 then
            probes[#probes + 1] = probe_text(p0, probe(), N)
            local s1, ex, st = conn:stats(), {}, 0
            for i, r in ipairs(s1.readers) do
                ex[i] = r.executed - s0.readers[i].executed
                st = st + r.stolen - s0.readers[i].stolen
            end
            stolen[#stolen + 1] = string.format("per reader %s, %d stolen", table.concat(ex, "/"), st)
        end
        local sum = 0
        for c = 1, CALLERS do
            sum = sum + sums[c]
        end
        check(sum == expect, "W2 pasyn: age sum %d, not %d", sum, expect)
        return kqs(dt)
    end }
    lib.rounds("W2", cs)
    conn:close()
    close_dbi()
    local by = by_key(cs)
    for _, c in ipairs(cs) do
        local r = { id = "W2", who = c.name, metric = "k queries/s", samples = c.samples.kqs, fmt = "%.1f" }
        if by.dbi and c.key ~= "dbi" then
            r.ratio = { label = (c.key == "pasyn" and "pasyn/LuaDBI" or "vs LuaDBI"),
                        values = lib.ratios(c.samples.kqs, by.dbi.samples.kqs) }
            if c.key == "pasyn" then
                r.target, r.met = "throughput >= 1.0x", lib.median(r.ratio.values) >= 1.0
            end
        end
        lib.row(r)
    end
    note("W2: %d point reads per run from %d coroutines; pasyn (last round): %s; statements %s",
         N, CALLERS, probes[#probes] or "-", stolen[#stolen] or "-")
end

-- ---- W3 and W4: CPU-heavy reads, readers 1-3; a 1 ms ticker beside them -------------------------

local GROUPBY_DIGEST -- what every competitor's result must digest to (raw C says)
local chart = {} -- what W3 and W4 leave for the chart (bench/chart.gp)

local function groupby_digest()
    if not GROUPBY_DIGEST then
        local _, d = lib.raw(RAW, "groupby", DB, 1, GROUPBY)
        GROUPBY_DIGEST = d
    end
    return GROUPBY_DIGEST
end

-- LuaDBI runs the n queries one after the other; returns the total and the longest query.
local function dbi_groupby(st, n, expect, id)
    local longest = 0
    local t0 = now()
    for _ = 1, n do
        local q0 = now()
        local d = lib.digest(lib.dbi_all(st))
        longest = math.max(longest, now() - q0)
        check(d == expect, "%s LuaDBI: result %s, not %s", id, d, expect)
    end
    return now() - t0, longest
end

-- pasyn: n coroutines, one query each, on a fresh pool; and a 1 ms ticker when `tick`.
local function pasyn_groupby(readers, n, expect, id, tick)
    local conn = sqlite.connect(DB, { readers = readers })
    conn:execute("SELECT 1 FROM users WHERE id = 1"):fetchall() -- the pool is up
    local late = {}
    local _, wait0 = lib.lua_schedstat()
    local t0 = now()
    sqlite.run(function()
        local done = false
        if tick then
            sqlite.spawn(function()
                while not done do
                    local intended = now() + 0.001
                    sqlite.sleep(0.001)
                    late[#late + 1] = now() - intended
                end
            end)
        end
        local hs = {}
        for i = 1, n do
            hs[i] = sqlite.spawn(function()
                local d = lib.digest(conn:execute(GROUPBY):fetchall())
                check(d == expect, "%s pasyn: result %s, not %s", id, d, expect)
            end)
        end
        for i = 1, n do
            hs[i]:join()
        end
        done = true
    end)
    local dt = now() - t0
    local _, wait1 = lib.lua_schedstat()
    local st = conn:stats()
    conn:close()
    local ex = {}
    for i, r in ipairs(st.readers) do
        ex[i] = r.executed
    end
    return dt, late, table.concat(ex, "/"), wait1 - wait0
end

-- A 1 ms ticker alone for `seconds`: its lateness.
local function ticker_alone(seconds)
    local late = {}
    sqlite.run(function()
        local stop = now() + seconds
        while now() < stop do
            local intended = now() + 0.001
            sqlite.sleep(0.001)
            late[#late + 1] = now() - intended
        end
    end)
    return late
end

local function lateness(late)
    local s = lib.sorted(late)
    return lib.percentile(s, 50, true), lib.percentile(s, 99, true), s[#s]
end

local function w3()
    local N = scaled(8, 4)
    local expect = groupby_digest()
    local cs, per_reader = {}, { {}, {}, {} } -- per_reader[readers][round]: "a/b/c"
    cs[#cs + 1] = { name = "raw C, 1 thread", key = "raw", run = function()
        local dt, d = lib.raw(RAW, "groupby", DB, N, GROUPBY)
        check(d == expect, "W3 raw C: result %s, not %s", d, expect)
        return { s = dt, longest = dt / N }, string.format("%.3f s", dt)
    end }
    if N % 2 == 0 then
        cs[#cs + 1] = { name = "raw C, 2 processes at once", key = "raw2", run = function()
            local dt, d = lib.raw_parallel(RAW, 2, "groupby", DB, N // 2, GROUPBY)
            check(d == expect, "W3 raw C x2: result %s, not %s", d, expect)
            return { s = dt }, string.format("%.3f s (the slower of the two)", dt)
        end }
    end
    local dbi_st, close_dbi = dbi_prepared(GROUPBY)
    if dbi_st then
        cs[#cs + 1] = { name = "LuaDBI, sequential", key = "dbi", run = function()
            local dt, longest = dbi_groupby(dbi_st, N, expect, "W3")
            return { s = dt, longest = longest },
                   string.format("%.3f s, longest query %.1f ms", dt, longest * 1e3)
        end }
    end
    for readers = 1, 3 do
        cs[#cs + 1] = { name = "pasyn readers=" .. readers, key = readers, run = function()
            local dt, _, ex = pasyn_groupby(readers, N, expect, "W3")
            local list = per_reader[readers]
            list[#list + 1] = ex
            return { s = dt }, string.format("%.3f s, queries per reader %s", dt, ex)
        end }
    end
    lib.rounds("W3", cs)
    close_dbi()
    local by = by_key(cs)
    for _, c in ipairs(cs) do
        local r = { id = "W3", who = c.name, metric = N .. " queries, s", samples = c.samples.s,
                    fmt = "%.3f" }
        if by.dbi and c.key ~= "dbi" then
            -- throughput ratio: LuaDBI's time over this one's
            r.ratio = { label = "speed vs LuaDBI", values = lib.ratios(by.dbi.samples.s, c.samples.s) }
            if c.key == 2 then
                r.target, r.met = ">= 1.8x", lib.median(r.ratio.values) >= 1.8
            end
        end
        lib.row(r)
    end
    if by.dbi then
        note("W3: one query takes %.1f ms on LuaDBI (median of the rounds' mean), %.1f ms on raw C",
             lib.median(by.dbi.samples.s) / N * 1e3, lib.median(by.raw.samples.s) / N * 1e3)
    end
    if by.dbi and by.raw2 then
        note("W3: what two cores give here: raw C in 2 processes at once did the %d queries %.2fx as fast " ..
             "as LuaDBI alone, %.2fx as fast as raw C alone (medians of per-round ratios)", N,
             lib.median(lib.ratios(by.dbi.samples.s, by.raw2.samples.s)),
             lib.median(lib.ratios(by.raw.samples.s, by.raw2.samples.s)))
    end
    note("W3: statements run per reader (the warm-up query too), each run from the warm-up on: " ..
         "readers=2 %s; readers=3 %s", table.concat(per_reader[2], ", "), table.concat(per_reader[3], ", "))
    local function qps(c) -- queries/s: median, min, max over the rounds
        if not c then
            return nil
        end
        local q = {}
        for i, s in ipairs(c.samples.s) do
            q[i] = N / s
        end
        local lo, hi = lib.minmax(q)
        return { lib.median(q), lo, hi }
    end
    chart.w3 = { qps(by[1]), qps(by[2]), qps(by[3]), n = N, dbi = qps(by.dbi), raw = qps(by.raw),
                 raw2 = qps(by.raw2) }
end

local function w4()
    local N = scaled(8, 4)
    local expect = groupby_digest()
    local cs, spread = {}, {}
    local dbi_st, close_dbi = dbi_prepared(GROUPBY)
    if dbi_st then
        cs[#cs + 1] = { name = "LuaDBI, sequential", key = "dbi", run = function()
            local dt, longest = dbi_groupby(dbi_st, N, expect, "W4")
            return { s = dt, stall = longest }, string.format("%.3f s, a 1 ms ticker would stall %.1f ms",
                                                              dt, longest * 1e3)
        end }
    end
    cs[#cs + 1] = { name = "pasyn readers=2 + ticker", key = "pasyn", run = function()
        local dt, late, ex, wait = pasyn_groupby(2, N, expect, "W4", true)
        local p50, p99, max = lateness(late)
        spread[#spread + 1] = ex
        return { s = dt, p50 = p50, p99 = p99, max = max, ticks = #late, wait = wait },
               string.format("%.3f s, %d ticks, lateness p50 %.3f p99 %.3f max %.3f ms; Lua thread waited " ..
                             "%.0f ms for a core; statements per reader %s", dt, #late, p50 * 1e3, p99 * 1e3,
                             max * 1e3, wait * 1e3, ex)
    end }
    cs[#cs + 1] = { name = "ticker alone", key = "idle", run = function()
        local late = ticker_alone(0.3)
        local p50, p99, max = lateness(late)
        return { p50 = p50, p99 = p99, max = max, ticks = #late },
               string.format("0.3 s, %d ticks, lateness p50 %.3f p99 %.3f max %.3f ms", #late, p50 * 1e3,
                             p99 * 1e3, max * 1e3)
    end }
    lib.rounds("W4", cs)
    close_dbi()
    local by = by_key(cs)
    local p, idle = by.pasyn, by.idle
    local who = "pasyn readers=2 + 1 ms ticker"
    lib.row { id = "W4", who = who, metric = N .. " queries, s", samples = p.samples.s, fmt = "%.3f" }
    lib.row { id = "W4", who = who, metric = "ticks", samples = p.samples.ticks, fmt = "%.0f" }
    lib.row { id = "W4", who = who, metric = "Lua thread runnable, no core, ms", samples = p.samples.wait,
              scale = 1e3, fmt = "%.1f" }
    lib.row { id = "W4", who = who, metric = "lateness p50, ms", samples = p.samples.p50, scale = 1e3,
              fmt = "%.3f" }
    local p99, max = lib.median(p.samples.p99), lib.median(p.samples.max)
    lib.row { id = "W4", who = who, metric = "lateness p99, ms", samples = p.samples.p99, scale = 1e3,
              fmt = "%.3f", target = "<= 1 ms", met = p99 <= 0.001 }
    lib.row { id = "W4", who = who, metric = "lateness max, ms", samples = p.samples.max, scale = 1e3,
              fmt = "%.3f", target = "<= 5 ms", met = max <= 0.005 }
    lib.row { id = "W4", who = "1 ms ticker alone (no queries)", metric = "lateness p99, ms",
              samples = idle.samples.p99, scale = 1e3, fmt = "%.3f" }
    lib.row { id = "W4", who = "1 ms ticker alone (no queries)", metric = "lateness max, ms",
              samples = idle.samples.max, scale = 1e3, fmt = "%.3f" }
    note("W4: statements run per reader, each run from the warm-up on: %s", table.concat(spread, ", "))
    if by.dbi then
        lib.row { id = "W4", who = "LuaDBI, sequential", metric = "stall (longest query), ms",
                  samples = by.dbi.samples.stall, scale = 1e3, fmt = "%.1f",
                  note = "(what a ticker would see)" }
    end
    chart.w4 = { idle_p99 = lib.median(idle.samples.p99), p50 = lib.median(p.samples.p50), p99 = p99,
                 max = max, stall = by.dbi and lib.median(by.dbi.samples.stall) }
end

-- Writes build/bench-chart.dat (gnuplot variables and data blocks) from what W3 and W4 left and,
-- when gnuplot is installed, draws the chart from it with bench/chart.gp: to BENCH_CHART (a path
-- from the top of the tree, or absolute), by default build/bench-chart.svg; make bench
-- CHART=bench/chart.svg replaces the README's chart.
local function draw_chart(cores)
    local chart_path = os.getenv("BENCH_CHART") or "build/bench-chart.svg"
    local data = ROOT .. "/build/bench-chart.dat"
    local svg = chart_path:sub(1, 1) == "/" and chart_path or ROOT .. "/" .. chart_path
    local reads, ticker = chart.w3, chart.w4
    local function first(v) -- a reference's median, NaN (no line) when it did not run
        return v and string.format("%.6g", v[1]) or "NaN"
    end
    local lines = {
        string.format('title = "pasyn_sqlite benchmark suite: scale %g, %d rounds, %d cores (medians over ' ..
                      'the rounds)"', lib.SCALE, lib.ROUNDS, cores),
        "queries = " .. reads.n,
        "dbi = " .. first(reads.dbi), "raw = " .. first(reads.raw), "raw2 = " .. first(reads.raw2),
        "$w3 << EOD",
    }
    for readers = 1, 3 do
        lines[#lines + 1] = string.format("%d %.6g %.6g %.6g", readers, table.unpack(reads[readers]))
    end
    lines[#lines + 1] = "EOD"
    lines[#lines + 1] = "$w4 << EOD" -- label, ms, group (0 the floor, 1 async, 2 sync)
    local function bar(label, s, group)
        if s then
            lines[#lines + 1] = string.format('"%s" %.6g %d', label, s * 1e3, group)
        end
    end
    bar("ticker alone\\np99", ticker.idle_p99, 0)
    bar("pasyn\\np50", ticker.p50, 1)
    bar("pasyn\\np99", ticker.p99, 1)
    bar("pasyn\\nmax", ticker.max, 1)
    bar("LuaDBI stall\\n(sync)", ticker.stall, 2)
    lines[#lines + 1] = "EOD"
    local f = assert(io.open(data, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    if not os.execute("command -v gnuplot >/dev/null 2>&1") then
        print("chart skipped: gnuplot is not installed (its data is in build/bench-chart.dat)")
        return
    end
    local cmd = lib.command("gnuplot", "-e", string.format("data = '%s'; out = '%s'", data, svg),
                            ROOT .. "/bench/chart.gp")
    check(os.execute(cmd), "gnuplot failed: %s", cmd)
    print("chart of W3 and W4: " .. chart_path)
end

-- ---- W5: 256 coroutines of single-row autocommit INSERTs, group commit on and off ----------------

local W5_SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)"
local W5_INSERT = "INSERT INTO t (k, v) VALUES (?, ?)"

local W5_CALLERS = 256

-- One pasyn run: the rows of `values` inserted from W5_CALLERS coroutines on a fresh file, then
-- counted through a second connection; returns the seconds and the writer's statistics.
local function w5_pasyn(mode, group_commit, values)
    local n = #values
    local path = lib.fresh_path("w5")
    local conn = sqlite.connect(path, { synchronous = mode, group_commit = group_commit })
    conn:execute(W5_SCHEMA)
    local t0 = now()
    in_coroutines(W5_CALLERS, n, function(i)
        local cur = conn:execute(W5_INSERT, i, values[i])
        check(cur.rowcount == 1, "W5 pasyn: an insert changed %d rows", cur.rowcount)
    end)
    local dt = now() - t0
    local w = conn:stats().writer
    local count = committed_rows(path, "SELECT count(*) FROM t")[1][1]
    conn:close()
    lib.remove(path)
    check(count == n, "W5 pasyn: another connection sees %d rows, not %d", count, n)
    return dt, w
end

-- The same rows inserted by LuaDBI one after the other (autocommit, a prepared statement).
local function w5_dbi(mode, values)
    local n = #values
    local path = lib.fresh_path("w5")
    local db = lib.open_dbi(path)
    check(lib.dbi_value(db, "PRAGMA journal_mode = WAL") == "wal", "W5 LuaDBI: no WAL")
    assert(lib.DBI.Do(db, "PRAGMA synchronous = " .. mode))
    assert(lib.DBI.Do(db, W5_SCHEMA))
    local st = assert(db:prepare(W5_INSERT))
    local t0 = now()
    for i = 1, n do
        assert(st:execute(i, values[i]))
    end
    local dt = now() - t0
    st:close()
    local count = committed_rows(path, "SELECT count(*) FROM t")[1][1]
    db:close()
    lib.remove(path)
    check(count == n, "W5 LuaDBI: another connection sees %d rows, not %d", count, n)
    return dt
end

local function w5()
    local N = scaled(20000, 2000)
    local MODES, TARGET = { "full", "normal" }, { full = 20, normal = 4 }
    local values = {}
    for i = 1, N do
        values[i] = "value " .. i
    end
    local function result(dt)
        return { kis = N / dt / 1000 }, string.format("%.3f s, %.0f inserts/s", dt, N / dt)
    end
    local cs = {}
    for _, mode in ipairs(MODES) do
        for _, on in ipairs({ true, false }) do
            cs[#cs + 1] = { name = string.format("pasyn group_commit=%s, %s", on, mode),
                            key = mode .. (on and " on" or " off"), run = function()
                local dt, w = w5_pasyn(mode, on, values)
                local got, text = result(dt)
                got.batches, got.max, got.inside = w.batches, w.batch_max, w.batched / N
                got.avg = w.batches > 0 and w.batched / w.batches or 0
                return got, string.format("%s; %d batches, avg %.1f, max %d", text, w.batches, got.avg,
                                          w.batch_max)
            end }
        end
        if lib.DBI then
            cs[#cs + 1] = { name = "LuaDBI autocommit, prepared, " .. mode, key = mode .. " dbi",
                            run = function() return result(w5_dbi(mode, values)) end }
        end
    end
    lib.rounds("W5", cs)
    local by = by_key(cs)
    for _, mode in ipairs(MODES) do
        local on, off, dbi = by[mode .. " on"], by[mode .. " off"], by[mode .. " dbi"]
        local function row(c, label, over, target)
            local r = { id = "W5", who = c.name, metric = "k inserts/s", samples = c.samples.kis,
                        fmt = "%.1f" }
            if over then
                r.ratio = { label = label, values = lib.ratios(c.samples.kis, over.samples.kis) }
            end
            if target then
                r.target, r.met = string.format(">= %dx", target), lib.median(r.ratio.values) >= target
            end
            lib.row(r)
        end
        if dbi then
            row(dbi)
        end
        row(off, "vs LuaDBI", dbi)
        if dbi then
            row(on, "pasyn/LuaDBI", dbi, TARGET[mode])
        end
        row(on, "on/off", off)
        local avg_lo, avg_hi = lib.minmax(on.samples.avg)
        local max_lo, max_hi = lib.minmax(on.samples.max)
        note("W5 %s: group_commit=true, the writer's batches per run (medians, min-max over the rounds): " ..
             "%.0f batches, avg batch %.1f (%.1f-%.1f), max batch %.0f (%d-%d), %.1f%% of the inserts in " ..
             "a batch", mode, lib.median(on.samples.batches), lib.median(on.samples.avg), avg_lo, avg_hi,
             lib.median(on.samples.max), max_lo, max_hi, 100 * lib.median(on.samples.inside))
        if mode ~= MODES[#MODES] then
            lib.rule()
        end
    end
    note("W5: %d single-row autocommit INSERTs per run, pasyn from %d coroutines on one connection, " ..
         "LuaDBI one after the other; a fresh WAL file per run, the rows counted through a second " ..
         "connection; a batch is a group commit of two or more writes (avg = batched / batches)", N,
         W5_CALLERS)
end

-- ---- W7: 64 coroutines, 95% point reads + 5% heavy scans, stealing on and off -----------------------
-- As the plan says it, closed loop: each coroutine issues its next operation when the last one
-- returned. Then nearly every coroutine soon waits on a scan, and the readers never idle: a
-- point read gains only from readers taking short reads before long ones. So also W7p, paced
-- (open loop): each coroutine issues its operations on a fixed schedule, offered at about half
-- of what two cores can scan; readers do idle then, and steal point reads queued behind scans.

local function w7(id, ops, paced)
    local CALLERS = 64
    local kinds, ids = lib.ids(ops, 7, 100), lib.ids(ops, 8)
    local heavy = 0
    for i = 1, ops do
        kinds[i] = kinds[i] <= 5 and "scan" or "point"
        heavy = heavy + (kinds[i] == "scan" and 1 or 0)
    end
    local scans_s, scan_digest = lib.raw(RAW, "groupby", DB, 3, SCAN)
    local scan_s = scans_s / 3
    -- Paced: ~0.5 x 2 cores / scan time scans a second, so 20 / scan time operations a second
    -- over all coroutines; each coroutine one every 64 * scan time / 20.
    local interval = CALLERS * scan_s / 20
    local cs, stolen = {}, {}
    for _, stealing in ipairs({ true, false }) do
        cs[#cs + 1] = { name = "pasyn stealing=" .. tostring(stealing), key = stealing, run = function()
            local conn = sqlite.connect(DB, { stealing = stealing })
            conn:execute("SELECT 1 FROM users WHERE id = 1"):fetchall()
            local lat = {}
            local t0 = now()
            sqlite.run(function()
                local hs = {}
                for c = 1, CALLERS do
                    hs[c] = sqlite.spawn(function()
                        local due = t0 + (c - 1) * interval / CALLERS
                        for i = c, ops, CALLERS do
                            if paced then
                                local wait = due - now()
                                if wait > 0 then
                                    sqlite.sleep(wait)
                                end
                                due = due + interval
                            end
                            if kinds[i] == "scan" then
                                local d = lib.digest(conn:execute(SCAN):fetchall())
                                check(d == scan_digest, "%s: scan result %s, not %s", id, d, scan_digest)
                            else
                                local q0 = now()
                                local row = conn:execute(POINT, ids[i]):fetchone()
                                lat[#lat + 1] = now() - q0
                                check(row[1] == ids[i], "%s: asked for %d, got %s", id, ids[i],
                                      tostring(row[1]))
                            end
                        end
                    end)
                end
                for c = 1, CALLERS do
                    hs[c]:join()
                end
            end)
            local dt = now() - t0
            local st, n = conn:stats(), 0
            conn:close()
            for _, r in ipairs(st.readers) do
                n = n + r.stolen
            end
            stolen[stealing] = n
            table.sort(lat)
            local p50, p99 = lib.percentile(lat, 50, true), lib.percentile(lat, 99, true)
            return { s = dt, p50 = p50, p99 = p99 },
                   string.format("%.3f s, point reads p50 %.2f p99 %.2f ms, %d stolen", dt, p50 * 1e3,
                                 p99 * 1e3, n)
        end }
    end
    lib.rounds(id, cs)
    local on, off = cs[1], cs[2]
    for _, c in ipairs(cs) do
        local is_on = c == on
        lib.row { id = id, who = c.name, metric = "point p50, ms", samples = c.samples.p50, scale = 1e3,
                  fmt = "%.3f" }
        local r = { id = id, who = c.name, metric = "point p99, ms", samples = c.samples.p99, scale = 1e3,
                    fmt = "%.3f" }
        if is_on then
            r.ratio = { label = "on/off", values = lib.ratios(on.samples.p99, off.samples.p99) }
            r.target, r.met = "<= 0.5x", lib.median(r.ratio.values) <= 0.5
        end
        lib.row(r)
        r = { id = id, who = c.name, metric = "total, s", samples = c.samples.s, fmt = "%.3f" }
        if is_on then
            r.ratio = { label = "on/off", values = lib.ratios(on.samples.s, off.samples.s) }
            if not paced then -- paced, the schedule sets the total
                r.target, r.met = "<= 1.05x", lib.median(r.ratio.values) <= 1.05
            end
        end
        lib.row(r)
    end
    note("%s: %d operations per run (%d scans of ~%.0f ms) from %d coroutines%s; tasks stolen (last " ..
         "round): %d with stealing, %d without", id, ops, heavy, scan_s * 1e3, CALLERS,
         paced and string.format(", each issuing one every %.0f ms", interval * 1e3) or ", closed loop",
         stolen[true] or 0, stolen[false] or 0)
end

-- ---- W8: 4 processes at once, 80% reads / 20% inserts ----------------------------------------------

local W8_PROCS, W8_CALLERS = 4, 10
local W8_LEAD = 0.3 -- s from starting the children to their common start: time to open and get ready

-- One run: the children on a fresh copy of the data set, all started before any is read and
-- starting together; returns their figures summed, with the start, the ends and the inserts
-- the file holds per process.
local function w8_launch(who, per)
    local path = lib.copy_db(DB, "w8")
    local conn = sqlite.connect(path, { readers = 0 })
    conn:execute(W8_SCHEMA)
    conn:close()
    local start = now() + W8_LEAD
    local ps = {}
    for p = 1, W8_PROCS do
        local cmd = child_command("w8", who, path, p, W8_CALLERS, per, string.format("%.6f", start))
        ps[p] = assert(io.popen(cmd))
    end
    local sum = { start = start, first_end = math.huge, last_end = 0, early = math.huge, ops = 0,
                  failed = 0, locked = 0, batches = 0, batched = 0, cpu = 0, inserts = {}, errors = {} }
    for p = 1, W8_PROCS do
        local out = ps[p]:read("a")
        local ok = ps[p]:close()
        local f = { out:match("^(%S+) (%S+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%S+) ([^\n]*)") }
        check(ok and #f == 10, "W8 %s: process %d failed: %s", who, p, out)
        local ready, done = tonumber(f[1]), tonumber(f[2])
        sum.first_end, sum.last_end = math.min(sum.first_end, done), math.max(sum.last_end, done)
        sum.early = math.min(sum.early, start - ready)
        sum.ops, sum.inserts[p] = sum.ops + tonumber(f[3]), tonumber(f[4])
        sum.failed, sum.locked = sum.failed + tonumber(f[5]), sum.locked + tonumber(f[6])
        sum.batches, sum.batched = sum.batches + tonumber(f[7]), sum.batched + tonumber(f[8])
        sum.cpu = sum.cpu + tonumber(f[9])
        if f[10] ~= "-" then
            sum.errors[#sum.errors + 1] = string.format("process %d: %s", p, f[10])
        end
    end
    sum.counted = {}
    for _, r in ipairs(committed_rows(path, "SELECT process, count(*) FROM w8_events GROUP BY process")) do
        sum.counted[r[1]] = r[2]
    end
    lib.remove(path)
    return sum
end

local function w8()
    local PER = scaled(1000, 50)
    local cs, early, locked = {}, {}, {}
    local function competitor(who, name)
        cs[#cs + 1] = { name = name, key = who, run = function()
            local r = w8_launch(who, PER)
            locked[who] = (locked[who] or 0) + r.locked
            early[who] = math.min(early[who] or math.huge, r.early)
            check(r.failed == 0, "W8 %s: %d operations failed, %d of them 'database is locked'; %s", who,
                  r.failed, r.locked, table.concat(r.errors, "; "))
            for p = 1, W8_PROCS do
                check(r.counted[p] == r.inserts[p], "W8 %s: process %d inserted %d rows, the table holds %s",
                      who, p, r.inserts[p], tostring(r.counted[p]))
            end
            local dt = r.last_end - r.start
            return { kops = r.ops / dt / 1000, batches = r.batches, cpu_us = r.cpu / r.ops * 1e6,
                     avg = r.batches > 0 and r.batched / r.batches or 0 },
                   string.format("%.3f s, %.0f ops/s (processes ended %.3f-%.3f s after the start; ready " ..
                                 "%.0f ms before it)", dt, r.ops / dt, r.first_end - r.start, dt,
                                 r.early * 1e3)
        end }
    end
    if lib.DBI then
        competitor("dbi", W8_PROCS .. " processes x LuaDBI, sequential")
    end
    competitor("pasyn", string.format("%d processes x pasyn, %d coroutines", W8_PROCS, W8_CALLERS))
    lib.rounds("W8", cs)
    local by = by_key(cs)
    for _, c in ipairs(cs) do
        local r = { id = "W8", who = c.name, metric = "k ops/s", samples = c.samples.kops, fmt = "%.1f" }
        if c.key == "pasyn" and by.dbi then
            r.ratio = { label = "pasyn/LuaDBI", values = lib.ratios(c.samples.kops, by.dbi.samples.kops) }
            r.target, r.met = ">= 1.5x", lib.median(r.ratio.values) >= 1.5
        end
        lib.row(r)
    end
    note("W8: %d processes at once, each %d x %d operations (40%% point reads, 20%% range reads of 50 " ..
         "rows, 20%% counts by city, 20%% single-row INSERTs into a table of its own), on a fresh copy of " ..
         "the data set per run; ops/s = all operations / (the last process's end - the common start)",
         W8_PROCS, W8_CALLERS, PER)
    local dbi_locked = by.dbi and tostring(locked.dbi) or "-"
    local dbi_early = by.dbi and string.format("%.0f", early.dbi * 1e3) or "-"
    note("W8: 'database is locked' errors over all runs: pasyn %d, LuaDBI %s; the children were ready at " ..
         "least %.0f ms (pasyn), %s ms (LuaDBI) before the common start", locked.pasyn, dbi_locked,
         early.pasyn * 1e3, dbi_early)
    note("W8: pasyn's writers (one per process) formed %.0f group commits per run, of %.1f writes on " ..
         "average (medians)", lib.median(by.pasyn.samples.batches), lib.median(by.pasyn.samples.avg))
    if by.dbi then
        note("W8: CPU time per operation, all threads of the %d processes (medians): pasyn %.1f us, " ..
             "LuaDBI %.1f us", W8_PROCS, lib.median(by.pasyn.samples.cpu_us),
             lib.median(by.dbi.samples.cpu_us))
    end
end

-- ---- M1: 10,000 statements in flight -----------------------------------------------------------

local function w_m1()
    local N = scaled(10000, 1000)
    local function child(mode)
        local cmd = child_command("m1", DB, N, mode)
        local p = assert(io.popen(cmd))
        local out = p:read("a")
        local ok = p:close()
        local before, peak, result, seen = out:match("^(%d+) (%d+) (%S+) (%d+)")
        check(ok and before, "M1 child failed: %s: %s", cmd, out)
        return tonumber(before), tonumber(peak), tonumber(result), tonumber(seen)
    end
    local cs, seen_stmt = {}, 0
    cs[#cs + 1] = { name = "pasyn, " .. N .. " statements", key = "stmt", run = function()
        local before, peak, result, seen = child("stmt")
        seen_stmt = math.max(seen_stmt, seen)
        local per = (peak - before) / N
        return { peak = peak, before = before, per = per, result = result, beyond = per - result },
               string.format("RSS %.1f -> peak %.1f MiB, %.0f B per statement, of which result %.0f B",
                             before / 2 ^ 20, peak / 2 ^ 20, per, result)
    end }
    cs[#cs + 1] = { name = "baseline: " .. N .. " parked coroutines", key = "sleep", run = function()
        local before, peak = child("sleep")
        local per = (peak - before) / N
        return { peak = peak, before = before, per = per },
               string.format("RSS %.1f -> peak %.1f MiB, %.0f B per coroutine", before / 2 ^ 20,
                             peak / 2 ^ 20, per)
    end }
    lib.rounds("M1", cs, nil, false)
    local s, b = cs[1], cs[2]
    local MiB = 1 / 2 ^ 20
    lib.row { id = "M1", who = s.name, metric = "RSS before, MiB", samples = s.samples.before, scale = MiB,
              fmt = "%.1f" }
    lib.row { id = "M1", who = s.name, metric = "peak RSS, MiB", samples = s.samples.peak, scale = MiB,
              fmt = "%.1f" }
    lib.row { id = "M1", who = s.name, metric = "B per statement", samples = s.samples.per, fmt = "%.0f" }
    lib.row { id = "M1", who = s.name, metric = "B its result (Lua)", samples = s.samples.result,
              fmt = "%.0f" }
    lib.row { id = "M1", who = s.name, metric = "B beyond result", samples = s.samples.beyond, fmt = "%.0f",
              target = "<= 2048 B", met = lib.median(s.samples.beyond) <= 2048 }
    lib.row { id = "M1", who = b.name, metric = "B per coroutine", samples = b.samples.per, fmt = "%.0f",
              note = "(the scheduler's share of the above)" }
    local own = {} -- per round: what the statement adds to a parked coroutine, beyond its result
    for i = 1, #s.samples.beyond do
        own[i] = s.samples.beyond[i] - b.samples.per[i]
    end
    lib.row { id = "M1", who = s.name, metric = "B beyond result + coroutine", samples = own, fmt = "%.0f",
              note = "(the statement's own share)" }
    note("M1: each measurement in a fresh process (page caches filled first); peak = VmHWM reset " ..
         "before the run, or VmRSS sampled; completions delivered before the last statement was " ..
         "submitted: %d", seen_stmt)
end

-- ---- W6: executemany of 1M rows -----------------------------------------------------------------

local function w6()
    local N = scaled(1000000, 10000)
    local cs = {}
    cs[#cs + 1] = { name = "raw C, prepared, 1 transaction", key = "raw", run = function()
        local path = lib.fresh_path("w6")
        local dt, count = lib.raw(RAW, "insert", path, N)
        lib.remove(path)
        check(tonumber(count) == N, "W6 raw C: %s rows, not %d", count, N)
        return { krs = N / dt / 1000 }, string.format("%.3f s, %.0f rows/s", dt, N / dt)
    end }
    cs[#cs + 1] = { name = "pasyn executemany", key = "pasyn", run = function()
        local path = lib.fresh_path("w6")
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (a INTEGER, b INTEGER, c TEXT)")
        local i = 0
        local t0 = now()
        local cur = conn:executemany("INSERT INTO t VALUES (?, ?, ?)", function()
            i = i + 1
            if i <= N then
                return { i, i % 1000, "row " .. i }
            end
        end)
        local dt = now() - t0
        local count = conn:execute("SELECT count(*), sum(a) FROM t"):fetchone()
        conn:close()
        lib.remove(path)
        check(cur.rowcount == N and count[1] == N and count[2] == N * (N + 1) // 2,
              "W6 pasyn: rowcount %d, %d rows, not %d", cur.rowcount, count[1], N)
        return { krs = N / dt / 1000 }, string.format("%.3f s, %.0f rows/s", dt, N / dt)
    end }
    cs[#cs + 1] = { name = "Lua alone: the parameter tables", key = "lua", run = function()
        local i, n = 0, 0
        local function nxt()
            i = i + 1
            if i <= N then
                return { i, i % 1000, "row " .. i }
            end
        end
        local t0 = now()
        local sets, made = {}, 0
        for _ = 1, N do -- what executemany's chunking does with them: arrays of 10,000
            n = n + 1
            sets[n] = nxt()
            if n == 10000 then
                made = made + #sets
                sets, n = {}, 0
            end
        end
        local dt = now() - t0
        check(made + #sets == N, "W6 Lua alone: %d tables, not %d", made + #sets, N)
        return { krs = N / dt / 1000 }, string.format("%.3f s, %.0f rows/s", dt, N / dt)
    end }
    lib.rounds("W6", cs)
    local raw, p = cs[1], cs[2]
    lib.row { id = "W6", who = raw.name, metric = "k rows/s", samples = raw.samples.krs, fmt = "%.0f" }
    lib.row { id = "W6", who = p.name, metric = "k rows/s", samples = p.samples.krs, fmt = "%.0f",
              ratio = { label = "pasyn/raw C", values = lib.ratios(p.samples.krs, raw.samples.krs) },
              target = ">= 0.7x", met = lib.median(lib.ratios(p.samples.krs, raw.samples.krs)) >= 0.7 }
    lib.row { id = "W6", who = cs[3].name, metric = "k rows/s", samples = cs[3].samples.krs, fmt = "%.0f",
              note = "(no database: the Lua side's floor)" }
    note("W6: %d rows of (integer, integer, text) into a fresh table per run; pasyn from an iterator", N)
end

-- ---- run them ------------------------------------------------------------------------------------

local WORKLOADS = {
    { "W1", w1 }, { "W2", w2 }, { "W3", w3 }, { "W4", w4 }, { "W5", w5 },
    { "W7", function() w7("W7", scaled(2000, 200), false) end },
    { "W7P", function() w7("W7p", scaled(1000, 200), true) end },
    { "W8", w8 }, { "M1", w_m1 }, { "W6", w6 },
}

local function main()
    local first = true
    for _, w in ipairs(WORKLOADS) do
        if wanted(w[1]) then
            if not first then
                lib.rule()
            end
            first = false
            local t0 = now()
            w[2]()
            progress("%s done in %.1f s", w[1], now() - t0)
        end
    end
    print()
    lib.print_table()
    print()
    for _, n in ipairs(notes) do
        print(n)
    end
    print()
    print("median and min-max over the rounds; a ratio is taken within each round (the competitors ran")
    print("back to back), its median judged against the target and its min-max shown; see bench/README.md")
    if chart.w3 and chart.w4 then
        draw_chart(m.cores)
    end
    print(string.format("suite took %.1f s", now() - T0))
end

local ok, err = xpcall(main, debug.traceback)
lib.remove_all()
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
