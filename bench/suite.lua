-- The benchmark suite: pasyn_sqlite against the synchronous bindings (LuaDBI, LuaSQL) and raw C
-- on the workloads of the benchmark plan (W1-W8, W7p, M1) and the seed's (S1-S11); every
-- workload on the same file and data for all its competitors, in interleaved rounds, on a quiet
-- machine and again beside CPU hogs (a busy machine); one table at the end with medians,
-- min-max, per-round ratios and whether each target is met, then notes, and a chart of W3 and W4
-- (build/bench-chart.svg, drawn by gnuplot from bench/chart.gp). See bench/README.md.
--   make bench
--   LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/suite.lua
-- Environment: BENCH_SCALE (default 1; 0.1 for a quick run), BENCH_ROUNDS (default 5),
-- BENCH_ONLY (e.g. "W1,W3": only those workloads; "S": all of S1-S11), BENCH_BUSY (both, the
-- default: quiet and busy rows; 0: quiet only; 1: busy only), BENCH_CHART (where the chart goes,
-- default build/bench-chart.svg; bench/chart.svg is the README's). Progress goes to stderr.

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

local in_coroutines = lib.in_coroutines

-- ---- M1's child: one measurement in a process of its own ----------------------------------------
-- lua5.4 bench/suite.lua --m1-child <db> <n> stmt|sleep
-- prints: rss_before peak_rss result_bytes completed_before_all_submitted

local function m1_child(path, n, mode)
    n = math.tointeger(tonumber(n))
    -- Every statement in flight at once: no bound on them, and none run inline (a read the
    -- calling thread runs itself completes inside execute, never in flight; whether one does
    -- depends on the machine's load at that moment).
    local conn = sqlite.connect(path, { max_pending = n, inline_reads = false })
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
    local cpu0 = os.clock() -- the process's CPU time (user + system, every thread), in microseconds
    if who == "pasyn" then
        in_coroutines(callers, n, run)
    else
        for i = 1, n do
            run(i)
        end
    end
    local done, cpu = now(), os.clock() - cpu0
    local batches, batched = close()
    io.write(string.format("%.6f %.6f %d %d %d %d %d %d %.6f %s\n", ready, done, n, inserts, failed, locked,
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
-- A workload is wanted when BENCH_ONLY is empty, names it, or names its letter ("S", "W").
local function wanted(id)
    return next(only) == nil or only[id] or only[id:sub(1, 1)]
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

local notes, quiet_notes = {}, {} -- lines printed under the table; those of the quiet runs
local function note(fmt, ...)
    local text = string.format(fmt, ...)
    if lib.tag == "" then
        quiet_notes[text] = true
    elseif quiet_notes[text] then -- the busy run's note says nothing new
        return
    else -- "W1: ..." becomes "W1 (1 core busy): ..."
        text = text:gsub("^(%w+)", "%1" .. lib.tag, 1)
    end
    notes[#notes + 1] = text
end

-- The machine's state while a workload runs: false (quiet) or the number of CPU hogs beside it.
local BUSY = false

-- Sets r.target and r.met from v (a median ratio or value): the target is `quiet` on a quiet
-- machine and `busy` beside the hogs (nil: no target in that mode); `le` true means v must be
-- <= the target, else >=; `fmt` formats the target ("%gx" by default).
local function judge(r, v, le, quiet, busy, fmt)
    local limit
    if BUSY then
        limit = busy
    else
        limit = quiet
    end
    if limit then
        r.target = (le and "<= " or ">= ") .. string.format(fmt or "%gx", limit)
        r.met = (le and v <= limit) or (not le and v >= limit)
    end
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
            judge(r, lib.median(r.ratio.values), true, 1.2, 1.5)
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
                judge(r, lib.median(r.ratio.values), false, 1.3, 1.0)
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
                judge(r, lib.median(r.ratio.values), false, 1.8)
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
    if BUSY then -- the chart shows the quiet machine
        return
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
    local r = { id = "W4", who = who, metric = "lateness p99, ms", samples = p.samples.p99, scale = 1e3,
                fmt = "%.3f" }
    judge(r, p99 * 1e3, true, 1, nil, "%g ms")
    lib.row(r)
    r = { id = "W4", who = who, metric = "lateness max, ms", samples = p.samples.max, scale = 1e3,
          fmt = "%.3f" }
    judge(r, max * 1e3, true, 5, nil, "%g ms")
    lib.row(r)
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
    if BUSY then
        return
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
    local MODES, TARGET = { "full", "normal" }, { full = 20, normal = 3 }
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
                judge(r, lib.median(r.ratio.values), false, target)
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
-- Both measure stealing between readers, so their on/off pair connects with inline_reads =
-- false: with them on, point reads run inline (in W7 a busy caller's while every reader scans,
-- in W7p an idle caller's), rarely reach the readers, and stealing has little left to show. One
-- more run with the defaults (inline reads and stealing on) shows what users get, without a
-- target.

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
    local modes = { { stealing = true, inline_reads = false }, { stealing = false, inline_reads = false },
                    { stealing = true, inline_reads = true, key = "defaults" } }
    for _, mode in ipairs(modes) do
        local name = mode.key and "pasyn defaults" or
                     string.format("pasyn stealing=%s inline_reads=false", mode.stealing)
        cs[#cs + 1] = { name = name, run = function()
            local conn = sqlite.connect(DB, { stealing = mode.stealing, inline_reads = mode.inline_reads })
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
            local st, n, ran = conn:stats(), 0, 0
            conn:close()
            for _, r in ipairs(st.readers) do
                n, ran = n + r.stolen, ran + r.executed
            end
            stolen[mode.key or mode.stealing] = n
            table.sort(lat)
            local p50, p99 = lib.percentile(lat, 50, true), lib.percentile(lat, 99, true)
            return { s = dt, p50 = p50, p99 = p99 },
                   string.format("%.3f s, point reads p50 %.2f p99 %.2f ms, %d stolen; %d reads inline " ..
                                 "(%d abandoned there), %d on readers", dt, p50 * 1e3, p99 * 1e3, n,
                                 st.inline.executed, st.inline.overruns, ran)
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
            judge(r, lib.median(r.ratio.values), true, 0.5)
        end
        lib.row(r)
        r = { id = id, who = c.name, metric = "total, s", samples = c.samples.s, fmt = "%.3f" }
        if is_on then
            r.ratio = { label = "on/off", values = lib.ratios(on.samples.s, off.samples.s) }
            if not paced then -- paced, the schedule sets the total
                judge(r, lib.median(r.ratio.values), true, 1.05)
            end
        end
        lib.row(r)
    end
    note("%s: %d operations per run (%d scans of ~%.0f ms) from %d coroutines%s; tasks stolen (last " ..
         "round): %d with stealing, %d without%s", id, ops, heavy, scan_s * 1e3, CALLERS,
         paced and string.format(", each issuing one every %.0f ms", interval * 1e3) or ", closed loop",
         stolen[true] or 0, stolen[false] or 0,
         string.format("; the stealing on/off pair with inline_reads = false (stealing between " ..
                       "readers alone), the defaults row (inline reads and stealing on, %d stolen) " ..
                       "without a target", stolen.defaults or 0))
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
            judge(r, lib.median(r.ratio.values), false, 1.2)
        end
        lib.row(r)
    end
    for _, c in ipairs(cs) do -- user + system time of every thread of the processes, per operation
        local r = { id = "W8", who = c.name, metric = "CPU us/op", samples = c.samples.cpu_us, fmt = "%.1f" }
        if c.key == "pasyn" and by.dbi then
            r.ratio = { label = "pasyn/LuaDBI", values = lib.ratios(c.samples.cpu_us, by.dbi.samples.cpu_us) }
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
    local r = { id = "M1", who = s.name, metric = "B beyond result", samples = s.samples.beyond,
                fmt = "%.0f" }
    judge(r, lib.median(s.samples.beyond), true, 2048, nil, "%g B")
    lib.row(r)
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
    local r = { id = "W6", who = p.name, metric = "k rows/s", samples = p.samples.krs, fmt = "%.0f",
                ratio = { label = "pasyn/raw C", values = lib.ratios(p.samples.krs, raw.samples.krs) } }
    judge(r, lib.median(r.ratio.values), false, 0.7)
    lib.row(r)
    lib.row { id = "W6", who = cs[3].name, metric = "k rows/s", samples = cs[3].samples.krs, fmt = "%.0f",
              note = "(no database: the Lua side's floor)" }
    note("W6: %d rows of (integer, integer, text) into a fresh table per run; pasyn from an iterator", N)
end

-- ---- S1-S11: the seed's workloads ------------------------------------------------------------------
-- A small shop in a file of its own: users 1,000 rows, products 500, orders 5,000, documents 500
-- with 1 KB bodies; S7-S11 after 50,000 more users. pasyn (one pool: 3 readers, WAL,
-- synchronous normal, busy_timeout 5000 ms) against LuaDBI (prepared statements, autocommit, WAL,
-- synchronous NORMAL, busy_timeout 5000 ms) on the same file, in interleaved rounds. S1-S6 are
-- one call at a time (pasyn from one coroutine); S7-S11 are a workload of concurrent callers
-- (pasyn: that many coroutines at once, joined before the next workload), which LuaDBI, a
-- synchronous binding, runs one statement after the other.

local SEED_USERS, SEED_MORE, SEED_ORDERS, SEED_PRODUCTS, SEED_DOCUMENTS = 1000, 50000, 5000, 500, 500
local SEED_SCHEMA = [[
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER, city TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, product_id INTEGER, quantity INTEGER,
                     created TEXT);
CREATE TABLE documents (id INTEGER PRIMARY KEY, title TEXT, body TEXT);
CREATE INDEX orders_user ON orders (user_id);
]]
local SEED = {
    point = "SELECT * FROM users WHERE id = ?",
    older = "SELECT * FROM users WHERE age > ?",
    order = "SELECT o.id, o.quantity, u.name, u.email, p.name, p.price FROM orders o " ..
            "JOIN users u ON u.id = o.user_id JOIN products p ON p.id = o.product_id WHERE o.id = ?",
    by_age = "SELECT u.age, count(*), sum(o.quantity) FROM orders o JOIN users u ON u.id = o.user_id " ..
             "GROUP BY u.age ORDER BY u.age",
    insert_user = "INSERT INTO users (name, email, age, city) VALUES (?, ?, ?, ?)",
    update_email = "UPDATE users SET email = ? WHERE id = ?",
    orders_by_age = "SELECT o.id, o.quantity, u.name, u.age, p.name, p.price FROM orders o " ..
                    "JOIN users u ON u.id = o.user_id JOIN products p ON p.id = o.product_id " ..
                    "WHERE u.age > ? LIMIT 50",
    range = "SELECT * FROM users WHERE id BETWEEN ? AND ? ORDER BY id",
    begin = "BEGIN IMMEDIATE",
    insert_order = "INSERT INTO orders (user_id, product_id, quantity, created) VALUES (?, ?, ?, ?)",
    user_orders = "SELECT count(*) FROM orders WHERE user_id = ?",
    update_city = "UPDATE users SET city = ? WHERE id = ?",
    commit = "COMMIT",
}

local seed -- the file: { path = ..., bulk = the id before the 50,000 more users (nil until added) }

-- User number k (1..1,000, then 1,001..51,000 for the 50,000 more): name, email, age, city. Ages
-- 18..77, evenly: 47 of 60 are over 30, so S2 reads ~783 of the first 1,000.
local function seed_age(k)
    return 18 + (k * 37) % 60
end
local function seed_user(k)
    local u = lib.user(k)
    return { u[2], u[3], seed_age(k), u[5] }
end
-- Order j: user_id, product_id, quantity, created.
local function seed_order(j)
    return { (j * 7919) % SEED_USERS + 1, (j * 104729) % SEED_PRODUCTS + 1, j % 5 + 1,
             string.format("2026-%02d-%02d", j % 12 + 1, j % 28 + 1) }
end

-- Inserts rows made by row(i), i = first..last, with executemany.
local function seed_fill(conn, sql, first, last, row)
    local i = first - 1
    conn:executemany(sql, function()
        i = i + 1
        if i <= last then
            return row(i)
        end
    end)
end

-- The file, made on first use (1,000 users); with `more`, also the 50,000 more users, added once
-- after whatever S5 inserted (ids bulk + 1 .. bulk + 50,000, so every id up to there is a row).
local function seed_db(more)
    if not seed then
        local path = lib.fresh_path("seed")
        local conn = sqlite.connect(path, { readers = 0 })
        conn:executescript(SEED_SCHEMA)
        seed_fill(conn, "INSERT INTO users VALUES (?, ?, ?, ?, ?)", 1, SEED_USERS, function(k)
            local u = seed_user(k)
            return { k, u[1], u[2], u[3], u[4] }
        end)
        seed_fill(conn, "INSERT INTO products VALUES (?, ?, ?)", 1, SEED_PRODUCTS, function(k)
            return { k, "product " .. k, ((k * 37) % 1000 + 100) / 10 }
        end)
        seed_fill(conn, "INSERT INTO orders VALUES (?, ?, ?, ?, ?)", 1, SEED_ORDERS, function(j)
            local o = seed_order(j)
            return { j, o[1], o[2], o[3], o[4] }
        end)
        seed_fill(conn, "INSERT INTO documents VALUES (?, ?, ?)", 1, SEED_DOCUMENTS, function(k)
            local words = string.rep(string.format("document %05d body text. ", k), 64)
            return { k, "document " .. k, words:sub(1, 1024) }
        end)
        conn:execute("ANALYZE")
        conn:close()
        seed = { path = path }
    end
    if more and not seed.bulk then
        local conn = sqlite.connect(seed.path, { readers = 0 })
        local bulk = conn:execute("SELECT max(id) FROM users"):fetchone()[1]
        seed_fill(conn, "INSERT INTO users VALUES (?, ?, ?, ?, ?)", 1, SEED_MORE, function(k)
            local u = seed_user(SEED_USERS + k)
            return { bulk + k, u[1], u[2], u[3], u[4] }
        end)
        conn:execute("ANALYZE")
        conn:close()
        seed.bulk = bulk
    end
    return seed
end

-- The id of user number k (1..51,000) once the 50,000 more are in.
local function seed_id(k)
    return k <= SEED_USERS and k or seed.bulk + k - SEED_USERS
end

-- One value of the file, read through a connection of its own (what another connection sees).
local function seed_value(sql)
    return committed_rows(seed.path, sql)[1][1]
end

-- In one sqlite.run: `batches` workloads one after the other, each k coroutines at once running
-- fn(i) for their own i = (b - 1) * k + c, all joined before the next workload starts.
local function gathered(batches, k, fn)
    sqlite.run(function()
        for b = 1, batches do
            local hs = {}
            for c = 1, k do
                hs[c] = sqlite.spawn(fn, (b - 1) * k + c)
            end
            for c = 1, k do
                hs[c]:join()
            end
        end
    end)
end

-- Runs a seed workload: spec.n operations (or workloads) per run, spec.unit what one is;
-- spec.pasyn(q) and spec.dbi(q) do one run's work, q(name, ...) running SEED[name] with the
-- parameters and returning its rows (for a write: the rows it changed); spec.before() and
-- spec.after(before, who, round) check what a run left, untimed. Prints ms per operation and
-- LuaDBI's time over pasyn's.
local function seed_workload(id, spec)
    local path = seed_db(spec.more).path
    local cs = {}
    local q_dbi, close_dbi = lib.dbi_queries(path, SEED)
    if q_dbi then
        cs[#cs + 1] = { name = "LuaDBI, prepared" .. (spec.callers and ", sequential" or ""), key = "dbi",
                        q = q_dbi, work = spec.dbi }
    end
    local conn = sqlite.connect(path, { synchronous = "normal", busy_timeout = 5000 })
    local function q(name, ...)
        local cur = conn:execute(SEED[name], ...)
        if SEED[name]:match("^SELECT") then
            return cur:fetchall()
        end
        return cur.rowcount
    end
    cs[#cs + 1] = { name = "pasyn, " .. (spec.callers or "1 coroutine"), key = "pasyn", q = q, conn = conn,
                    work = spec.pasyn }
    for _, c in ipairs(cs) do
        c.run = function(round)
            local before = spec.before and spec.before()
            local t0 = now()
            c.work(c.q, c.conn)
            local dt = now() - t0
            if spec.after then
                spec.after(before, c.key, round)
            end
            return { ms = dt / spec.n * 1e3 }, string.format("%.3f s, %.4f ms per %s", dt, dt / spec.n * 1e3,
                                                               spec.unit)
        end
    end
    lib.rounds(id, cs)
    conn:close()
    if close_dbi then
        close_dbi()
    end
    local by = by_key(cs)
    for _, c in ipairs(cs) do
        local r = { id = id, who = c.name, metric = "ms/" .. spec.unit, samples = c.samples.ms,
                    fmt = spec.callers and "%.3f" or "%.4f" }
        if c.key == "pasyn" and by.dbi then
            r.ratio = { label = "speed vs LuaDBI", values = lib.ratios(by.dbi.samples.ms, c.samples.ms) }
            judge(r, lib.median(r.ratio.values), false, 1.0)
        end
        lib.row(r)
    end
    note("%s: %s", id, spec.note)
end

-- Point reads of user ids[i] (numbers of users, mapped by `map`): checks each row and the sum
-- of the ages.
local function seed_point_check(id, ids, map)
    local expect = 0
    for i = 1, #ids do
        expect = expect + seed_age(ids[i])
    end
    return function(i, rows, sum)
        local want = map(ids[i])
        check(#rows == 1 and rows[1][1] == want, "%s: asked for user %d, got %s", id, want,
              rows[1] and tostring(rows[1][1]) or "no row")
        return sum + rows[1][4]
    end, function(sum, who)
        check(sum == expect, "%s %s: age sum %d, not %d", id, who, sum, expect)
    end
end

local function same(k)
    return k
end

local function s1()
    local n = scaled(20000, 1000)
    local ids = lib.ids(n, 101, SEED_USERS)
    local one, total = seed_point_check("S1", ids, same)
    local function work(who)
        return function(q)
            local sum = 0
            local function run()
                for i = 1, n do
                    sum = one(i, q("point", ids[i]), sum)
                end
            end
            if who == "pasyn" then
                sqlite.run(run)
            else
                run()
            end
            total(sum, who)
        end
    end
    seed_workload("S1", { n = n, unit = "query", pasyn = work("pasyn"), dbi = work("LuaDBI"),
                          note = n .. " point reads of users (SELECT * by id) per run" })
end

-- Runs fn(q) from one coroutine for pasyn, directly for LuaDBI.
local function sequential(fn)
    return function(q)
        fn(q)
    end, function(q)
        sqlite.run(fn, q)
    end
end

local function s2()
    local n = scaled(200, 20)
    local count, idsum = 0, 0
    for k = 1, SEED_USERS do
        if seed_age(k) > 30 then
            count, idsum = count + 1, idsum + k
        end
    end
    local dbi, pasyn = sequential(function(q)
        for _ = 1, n do
            local rows = q("older", 30)
            local s = 0
            for i = 1, #rows do
                s = s + rows[i][1]
            end
            check(#rows == count and s == idsum, "S2: %d rows (ids sum %d), not %d (%d)", #rows, s, count,
                  idsum)
        end
    end)
    seed_workload("S2", { n = n, unit = "query", pasyn = pasyn, dbi = dbi,
                          note = string.format("%d reads per run of the %d users over 30 " ..
                                               "(SELECT * WHERE age > 30)", n, count) })
end

local function s3()
    local n = scaled(10000, 500)
    local ids = lib.ids(n, 103, SEED_ORDERS)
    local expect = 0
    for i = 1, n do
        expect = expect + seed_order(ids[i])[3]
    end
    local dbi, pasyn = sequential(function(q)
        local sum = 0
        for i = 1, n do
            local rows = q("order", ids[i])
            check(#rows == 1 and rows[1][1] == ids[i], "S3: asked for order %d, got %d rows", ids[i], #rows)
            sum = sum + rows[1][2]
        end
        check(sum == expect, "S3: quantity sum %d, not %d", sum, expect)
    end)
    seed_workload("S3", { n = n, unit = "query", pasyn = pasyn, dbi = dbi,
                          note = n .. " reads per run of one order joined with its user and product" })
end

local function s4()
    local n = scaled(50, 5)
    local groups, ages = {}, {}
    for j = 1, SEED_ORDERS do
        local o = seed_order(j)
        local age = seed_age(o[1])
        if not groups[age] then
            groups[age] = { age, 0, 0 }
            ages[#ages + 1] = age
        end
        groups[age][2], groups[age][3] = groups[age][2] + 1, groups[age][3] + o[3]
    end
    table.sort(ages)
    local expect = {}
    for i, age in ipairs(ages) do
        expect[i] = groups[age]
    end
    expect = lib.digest(expect)
    local dbi, pasyn = sequential(function(q)
        for _ = 1, n do
            local d = lib.digest(q("by_age"))
            check(d == expect, "S4: result %s, not %s", d, expect)
        end
    end)
    seed_workload("S4", { n = n, unit = "query", pasyn = pasyn, dbi = dbi,
                          note = n .. " aggregates per run: the orders joined with their users, " ..
                                 "GROUP BY age" })
end

-- Counts the users before a run, and checks after it that `added` more are there.
local function users_added(id, added)
    return function()
        return seed_value("SELECT count(*) FROM users")
    end, function(before, who)
        local after = seed_value("SELECT count(*) FROM users")
        check(after == before + added, "%s %s: %d users after the run, not %d", id, who, after,
              before + added)
    end
end

local function s5()
    local n = scaled(5000, 500)
    local dbi, pasyn = sequential(function(q)
        for i = 1, n do
            local u = seed_user(SEED_USERS + i)
            check(q("insert_user", u[1], u[2], u[3], u[4]) == 1, "S5: an insert changed no row")
        end
    end)
    local before, after = users_added("S5", n)
    seed_workload("S5", { n = n, unit = "insert", pasyn = pasyn, dbi = dbi, before = before, after = after,
                          note = n .. " autocommit single-row INSERTs into users per run" })
end

local function s6()
    local n = scaled(5000, 500)
    local ids = lib.ids(n, 106, SEED_USERS)
    local tag = 0
    local function email(i)
        return string.format("user%d.run%d@example.net", ids[i], tag)
    end
    local dbi, pasyn = sequential(function(q)
        tag = tag + 1
        for i = 1, n do
            check(q("update_email", email(i), ids[i]) == 1, "S6: the update of user %d changed no row",
                  ids[i])
        end
    end)
    local function after(_, who)
        local got = seed_value("SELECT email FROM users WHERE id = " .. ids[n])
        check(got == email(n), "S6 %s: user %d has email %s, not %s", who, ids[n], got, email(n))
    end
    seed_workload("S6", { n = n, unit = "update", pasyn = pasyn, dbi = dbi, after = after,
                          note = n .. " autocommit UPDATEs of one user by id per run" })
end

-- A concurrent workload: `batches` times `k` callers each running one(q, i) (i = 1..batches * k):
-- pasyn from k coroutines at once per batch, LuaDBI one after the other.
local function concurrent(batches, k, one)
    return function(q)
        for i = 1, batches * k do
            one(q, i)
        end
    end, function(q)
        gathered(batches, k, function(i)
            one(q, i)
        end)
    end
end

local function s7()
    local batches = scaled(200, 20)
    seed_db(true)
    local ids = lib.ids(batches * 100, 107, SEED_USERS + SEED_MORE)
    local one, total = seed_point_check("S7", ids, seed_id)
    local sum
    local dbi, pasyn = concurrent(batches, 100, function(q, i)
        sum = one(i, q("point", seed_id(ids[i])), sum)
    end)
    local function start()
        sum = 0
    end
    seed_workload("S7", { n = batches, unit = "workload", callers = "100 coroutines", more = true,
                          pasyn = pasyn, dbi = dbi, before = start,
                          after = function(_, who) total(sum, who) end,
                          note = string.format("%d workloads per run, each 100 callers x one point read " ..
                                               "of %d users", batches, SEED_USERS + SEED_MORE) })
end

local function s8()
    local batches = scaled(100, 10)
    local dbi, pasyn = concurrent(batches, 50, function(q, i)
        local u = seed_user(i)
        check(q("insert_user", u[1], u[2], u[3], u[4]) == 1, "S8: an insert changed no row")
    end)
    local before, after = users_added("S8", batches * 50)
    seed_workload("S8", { n = batches, unit = "workload", callers = "50 coroutines", more = true,
                          pasyn = pasyn, dbi = dbi, before = before, after = after,
                          note = batches .. " workloads per run, each 50 callers x one autocommit INSERT" })
end

local function s9()
    local batches = scaled(20, 3)
    local dbi, pasyn = concurrent(batches, 50, function(q, i)
        local over = 20 + i % 40
        local rows = q("orders_by_age", over)
        check(#rows == 50, "S9: %d rows for age > %d, not 50", #rows, over)
        for _, row in ipairs(rows) do
            check(row[4] > over, "S9: a user of age %d for age > %d", row[4], over)
        end
    end)
    seed_workload("S9", { n = batches, unit = "workload", callers = "50 coroutines", more = true,
                          pasyn = pasyn, dbi = dbi,
                          note = batches .. " workloads per run, each 50 callers x orders joined with " ..
                                 "users and products, WHERE age > 20..59, LIMIT 50" })
end

local function s10()
    local batches = scaled(100, 10)
    local firsts
    local dbi, pasyn = concurrent(batches, 100, function(q, i)
        if i % 5 == 0 then
            local u = seed_user(i)
            check(q("insert_user", u[1], u[2], u[3], u[4]) == 1, "S10: an insert changed no row")
        else
            local lo = firsts[i]
            local rows = q("range", lo, lo + 19)
            check(#rows == 20 and rows[1][1] == lo and rows[20][1] == lo + 19,
                  "S10: %d rows for ids %d-%d", #rows, lo, lo + 19)
        end
    end)
    local count, check_added = users_added("S10", batches * 20)
    local function before()
        -- every id up to the last of the 50,000 more users is a row
        firsts = lib.ids(batches * 100, 110, seed.bulk + SEED_MORE - 19)
        return count()
    end
    seed_workload("S10", { n = batches, unit = "workload", callers = "100 coroutines", more = true,
                           pasyn = pasyn, dbi = dbi, before = before, after = check_added,
                           note = batches .. " workloads per run, each 80 callers x a range read of 20 " ..
                                  "users + 20 callers x one INSERT" })
end

local function s11()
    local batches = scaled(100, 10)
    local function body(q, i)
        local o = seed_order(i)
        check(q("insert_order", o[1], o[2], o[3], o[4]) == 1, "S11: an insert changed no row")
        check(q("insert_order", o[1], (o[2] % SEED_PRODUCTS) + 1, o[3], o[4]) == 1, "S11: no row inserted")
        local n = q("user_orders", o[1])[1][1]
        check(n >= 2, "S11: user %d has %d orders inside the transaction", o[1], n)
        check(q("update_city", lib.CITIES[i % #lib.CITIES + 1], o[1]) == 1, "S11: the update changed no row")
    end
    local dbi = function(q)
        for i = 1, batches * 20 do
            q("begin")
            body(q, i)
            q("commit")
        end
    end
    local function pasyn(q, conn)
        gathered(batches, 20, function(i)
            conn:transaction(function()
                body(q, i)
            end)
        end)
    end
    local function before()
        return seed_value("SELECT count(*) FROM orders")
    end
    local function after(count, who)
        local now_count = seed_value("SELECT count(*) FROM orders")
        check(now_count == count + batches * 40, "S11 %s: %d orders after the run, not %d", who, now_count,
              count + batches * 40)
    end
    seed_workload("S11", { n = batches, unit = "workload", callers = "20 coroutines, conn:transaction",
                           more = true, pasyn = pasyn, dbi = dbi, before = before, after = after,
                           note = batches .. " workloads per run, each 20 callers x BEGIN IMMEDIATE, " ..
                                  "2 INSERTs into orders, a SELECT, an UPDATE, COMMIT (LuaDBI: one after " ..
                                  "the other)" })
end

-- ---- run them ------------------------------------------------------------------------------------

local WORKLOADS = {
    { "W1", w1 }, { "W2", w2 }, { "W3", w3 }, { "W4", w4 }, { "W5", w5 },
    { "W7", function() w7("W7", scaled(2000, 200), false) end },
    { "W7P", function() w7("W7p", scaled(1000, 200), true) end },
    { "W8", w8 }, { "M1", w_m1, quiet = true }, { "W6", w6 },
    { "S1", s1 }, { "S2", s2 }, { "S3", s3 }, { "S4", s4 }, { "S5", s5 }, { "S6", s6 },
    { "S7", s7 }, { "S8", s8 }, { "S9", s9 }, { "S10", s10 }, { "S11", s11 },
}

-- BENCH_BUSY: both (the default) runs every workload on the quiet machine, then again beside
-- the hogs (M1, memory, only quiet); 0 only quiet; 1 only busy. Beside the hogs a workload runs
-- at half its size (BUSY_SIZE x BENCH_SCALE): its figures are per operation or rates, and the
-- whole run stays within ~15 minutes.
local BUSY_MODE = (os.getenv("BENCH_BUSY") or ""):lower()
local MODES = ({ ["0"] = { false }, ["1"] = { true } })[BUSY_MODE] or { false, true }
local HOGS = math.max(1, (m.cores or 2) - 1) -- one core fewer than the machine has, at least one
local BUSY_SIZE = 0.5
local SCALE = lib.SCALE

-- Runs workload w in the given mode: beside HOGS CPU hogs when busy, stopped when it ends.
local function run_workload(w, busy)
    BUSY = busy and HOGS or false
    lib.tag = busy and string.format(" (%d core%s busy)", HOGS, HOGS > 1 and "s" or "") or ""
    lib.SCALE = busy and SCALE * BUSY_SIZE or SCALE
    local t0 = now()
    if busy then
        local pids = lib.start_hogs(HOGS, LUA)
        progress("%s: %d CPU hog%s running beside it (pid %s)", w[1], HOGS, HOGS > 1 and "s" or "",
                 table.concat(pids, ", "))
    end
    w[2]()
    lib.stop_hogs()
    progress("%s%s done in %.1f s", w[1], lib.tag, now() - t0)
    BUSY, lib.tag, lib.SCALE = false, "", SCALE
end

local function main()
    local first = true
    for _, w in ipairs(WORKLOADS) do
        if wanted(w[1]) then
            if not first then
                lib.rule()
            end
            first = false
            for _, busy in ipairs(MODES) do
                if not (busy and w.quiet) then
                    run_workload(w, busy)
                end
            end
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
    if MODES[#MODES] then
        local plural = HOGS > 1 and "s" or ""
        print(string.format("rows marked (%d core%s busy) ran beside %d CPU hog%s (busy loops at the " ..
                            "suite's priority, started and killed by the suite), at scale %g", HOGS, plural,
                            HOGS, plural, SCALE * BUSY_SIZE))
    end
    if chart.w3 and chart.w4 then
        draw_chart(m.cores)
    end
    print(string.format("suite took %.1f s", now() - T0))
end

local ok, err = xpcall(main, debug.traceback)
lib.stop_hogs() -- after an error or an interrupt (Ctrl-C) too
lib.remove_all()
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
