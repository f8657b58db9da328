-- Group commit: single-row autocommit INSERTs issued by many coroutines at once, pasyn_sqlite
-- with group_commit on and off, against LuaDBI doing the same inserts one after the other on
-- one thread; at synchronous = "normal" and "full", journal_mode = WAL, a fresh file per run.
-- Runs are interleaved (and their order rotated) over several rounds; the tables show medians
-- with min-max, the batches the writer formed (conn:stats().writer) and the ratios.
--   lua5.4 bench/group_commit.lua [inserts per run, default 20000] [rounds, default 7]
-- The same from the environment: N, ROUNDS; also CALLERS (coroutines, default 256),
-- CAP (inserts for a competitor too slow for N, default 2000) and MAX_RUN (seconds a run of
-- N may take before that competitor is capped, default 5). Progress goes to stderr.
local sqlite = require "pasyn_sqlite"
local lib = require "lib"

local function setting(name, pos, default)
    local v = pos and arg and tonumber(arg[pos]) or tonumber(os.getenv(name)) -- an argument wins
    return math.tointeger(v) or default
end
local N = setting("N", 1, 20000)
local ROUNDS = setting("ROUNDS", 2, 7)
local CALLERS = setting("CALLERS", nil, 256)
local CAP = math.min(setting("CAP", nil, 2000), N)
local MAX_RUN = tonumber(os.getenv("MAX_RUN")) or 5
local MODES = { "normal", "full" }
local now = lib.now

local SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)"
local INSERT = "INSERT INTO t (k, v) VALUES (?, ?)"
local values = {}
for i = 1, N do
    values[i] = "value " .. i
end

local fresh_path, remove = lib.fresh_path, lib.remove

-- ---- competitors: each run(mode, n) inserts n rows and returns seconds [, writer stats] ----

local function pasyn_run(group_commit)
    return function(mode, n)
        local path = fresh_path()
        local conn = sqlite.connect(path, { synchronous = mode, group_commit = group_commit })
        conn:execute(SCHEMA)
        local t0 = now()
        sqlite.run(function()
            local handles = {}
            for c = 1, math.min(CALLERS, n) do
                handles[c] = sqlite.spawn(function()
                    for i = c, n, CALLERS do
                        local cur = conn:execute(INSERT, i, values[i])
                        assert(cur.rowcount == 1)
                    end
                end)
            end
            for c = 1, #handles do
                handles[c]:join()
            end
        end)
        local dt = now() - t0
        local w = conn:stats().writer
        local count = conn:execute("SELECT count(*) FROM t"):fetchone()[1]
        conn:close()
        remove(path)
        assert(count == n, "pasyn: " .. count .. " rows, not " .. n)
        return dt, w
    end
end

local DBI = lib.DBI

local function dbi_value(db, sql)
    local st = assert(db:prepare(sql))
    local row = lib.dbi_all(st)[1]
    st:close()
    return row and row[1]
end

local function dbi_run(mode, n)
    local path = fresh_path()
    local db = lib.open_dbi(path) -- autocommit: the count through a second connection shows it
    assert(dbi_value(db, "PRAGMA journal_mode=WAL") == "wal")
    assert(DBI.Do(db, "PRAGMA synchronous=" .. mode))
    assert(DBI.Do(db, SCHEMA))
    local st = assert(db:prepare(INSERT))
    local t0 = now()
    for i = 1, n do
        assert(st:execute(i, values[i]))
    end
    local dt = now() - t0
    st:close()
    local other = lib.open_dbi(path) -- sees only what was committed
    local count = dbi_value(other, "SELECT count(*) FROM t")
    other:close()
    db:close()
    remove(path)
    assert(count == n, "LuaDBI: " .. tostring(count) .. " rows, not " .. n)
    return dt
end

local competitors = {
    { key = "on", name = "pasyn group_commit=true", run = pasyn_run(true) },
    { key = "off", name = "pasyn group_commit=false", run = pasyn_run(false) },
}
if DBI then
    competitors[#competitors + 1] = { key = "dbi", name = "LuaDBI, 1 thread, prepared", run = dbi_run }
end

local machine = lib.machine()

print(string.format("group commit: %d single-row autocommit INSERTs per run, pasyn from %d coroutines, "
                    .. "%d rounds", N, CALLERS, ROUNDS))
print(string.format("machine: %d cores (%s), %s, SQLite %s (pasyn_sqlite %s), SQLite %s (LuaDBI %s)",
                    machine.cores, machine.cpu, _VERSION, sqlite.sqlite_version, sqlite.version,
                    machine.dbi_sqlite, machine.dbi))
print(string.format("each run: a fresh WAL file in %s, %s; inserts/s over the inserts alone", lib.dir,
                    SCHEMA))
io.stdout:flush() -- before the progress lines, when both go to one file

local function main()
    -- ---- warm-up, and which competitor is too slow for N -----------------------------------

    local results = {} -- results[mode][key]: n, and per round rates, batches, avg, max, inside
    for _, mode in ipairs(MODES) do
        results[mode] = {}
        for _, c in ipairs(competitors) do
            local dt = c.run(mode, CAP)
            local estimate = dt / CAP * N
            results[mode][c.key] = { n = estimate > MAX_RUN and CAP or N, rates = {}, batches = {}, avg = {},
                                     max = {}, inside = {} }
            io.stderr:write(string.format("warm-up  %-6s %-28s %6d inserts %8.0f/s\n", mode, c.name, CAP,
                                          CAP / dt))
        end
    end

    -- ---- the rounds ------------------------------------------------------------------------

    local t_start = now()
    local order = {}
    for _, mode in ipairs(MODES) do
        for _, c in ipairs(competitors) do
            order[#order + 1] = { mode = mode, c = c }
        end
    end
    for round = 1, ROUNDS do
        for j = 1, #order do
            local o = order[(j + round - 2) % #order + 1] -- rotated, so no one always goes first
            local r = results[o.mode][o.c.key]
            local dt, w = o.c.run(o.mode, r.n)
            local rate = r.n / dt
            r.rates[#r.rates + 1] = rate
            local extra = ""
            if w then
                r.batches[#r.batches + 1] = w.batches
                r.avg[#r.avg + 1] = w.batches > 0 and w.batched / w.batches or 0
                r.max[#r.max + 1] = w.batch_max
                r.inside[#r.inside + 1] = 100 * w.batched / r.n
                extra = string.format("  batches %d, avg %.1f, max %d", w.batches,
                                      r.avg[#r.avg], w.batch_max)
            end
            io.stderr:write(string.format("round %d/%d  %-6s %-28s %6d inserts %7.2f s %8.0f/s%s\n",
                                          round, ROUNDS, o.mode, o.c.name, r.n, dt, rate, extra))
        end
    end
    local elapsed = now() - t_start

    -- ---- the tables ------------------------------------------------------------------------

    local median = lib.median

    local function range(t, fmt)
        return string.format(fmt .. "-" .. fmt, lib.minmax(t))
    end

    local capped = false
    for _, mode in ipairs(MODES) do
        print()
        print(string.format("synchronous=%s", mode))
        print(string.format("  %-28s %7s %10s %15s %8s %-20s %9s %8s", "competitor", "inserts", "median/s",
                            "min-max/s", "batches", " avg batch (min-max)", "max batch", "batched"))
        for _, c in ipairs(competitors) do
            local r = results[mode][c.key]
            local mark = r.n < N and "*" or " "
            capped = capped or r.n < N
            local line = string.format("  %-28s %6d%s %10.0f %15s", c.name, r.n, mark, median(r.rates),
                                       range(r.rates, "%.0f"))
            if #r.batches > 0 then
                line = line .. string.format(" %8.0f %7.1f %-12s %9s %7.1f%%", median(r.batches),
                                             median(r.avg), "(" .. range(r.avg, "%.1f") .. ")",
                                             range(r.max, "%d"), median(r.inside))
            end
            print(line)
        end
        local function ratio(a, b)
            local ra, rb = results[mode][a], results[mode][b]
            if not (ra and rb) then
                return "-"
            end
            return string.format("%.2fx (rounds %s)", median(ra.rates) / median(rb.rates),
                                 range(lib.ratios(ra.rates, rb.rates), "%.2f"))
        end
        print(string.format("  group commit on vs off: %s;  on vs LuaDBI: %s", ratio("on", "off"),
                            ratio("on", "dbi")))
    end
    print()
    print("batches: group-commit transactions the writer formed (a write that found the queue empty runs")
    print("alone and is not counted); avg batch = batched/batches; batched = share of the inserts that")
    print("ran inside a batch. Batch figures are medians over the rounds, each taken on its own, with")
    print("the min-max over the rounds of avg batch and of max batch.")
    if capped then
        print(string.format("* capped at %d inserts per run: %d would take over %g s a run here", CAP, N,
                            MAX_RUN))
        print("  (its warm-up said so; the rates are per second all the same)")
    end
    print(string.format("timed rounds took %.1f s", elapsed))
end

local ok, err = xpcall(main, debug.traceback)
lib.remove_all() -- what a failed run left behind
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
