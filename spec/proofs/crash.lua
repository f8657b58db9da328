-- The crash proof: nothing a call acknowledged is lost when the process is killed. Each round
-- starts a child (crash_child.lua, under this same Lua and module build) that writes to one
-- database file from many coroutines (autocommit INSERTs, executemany, and transfers between
-- accounts in conn:transaction) and prints each write once its call returned; at a random
-- moment (seeded) the child gets SIGKILL, by its pid. Then a plain SQLite connection (LuaDBI,
-- package lua-dbi-sqlite3; pasyn_sqlite itself when LuaDBI is missing) opens the file and
-- checks: every acknowledged id is there, PRAGMA integrity_check is "ok", the accounts keep
-- their total and each balance is what the transfer log says, and every executemany is
-- there whole or not at all. The rounds share the file, so each one starts from the
-- recovery of the one before.
--
-- As a script, from the top of the tree (make proof-crash runs it):
--   lua5.4 spec/proofs/crash.lua [ROUNDS [SEED]]   (LUA_PATH and LUA_CPATH as for the specs)
-- half the rounds with the synchronous option left out (its default), half with "full".
-- spec/crash_spec.lua runs a few rounds through M.run.
local uv = require "luv"

local M = {}

local ACCOUNTS, BALANCE = 16, 1000 -- crash_child.lua's ACCOUNTS and TOTAL follow these
local IDS_PER_ROUND = 1000000      -- ids of round r: from r * IDS_PER_ROUND + 1 (LuaDBI reads
                                   -- integers as 32 bits: ids stay below 2^31 for 2,000 rounds)
local CHILD_SECONDS = 60           -- the child's own bound; the parent kills it long before

local HERE = debug.getinfo(1, "S").source:match("^@(.*)crash%.lua$") or "spec/proofs/"
local LUA = jit and "luajit" or "lua" .. _VERSION:sub(5) -- luacheck: ignore jit

-- ---- the checking connection -------------------------------------------------------------

-- A plain connection on `path`: rows(sql) gives every row of sql as an array of arrays, and
-- close(). LuaDBI when installed (a connection independent of ours), else pasyn_sqlite.
local function open_checker(path)
    local has_dbi, DBI = pcall(require, "DBI")
    if has_dbi then
        local db = assert(DBI.Connect("SQLite3", path))
        db:autocommit(true)
        return {
            name = "LuaDBI",
            rows = function(sql)
                local st = assert(db:prepare(sql))
                assert(st:execute())
                local out = {}
                for row in st:rows(false) do
                    out[#out + 1] = row
                end
                st:close()
                return out
            end,
            close = function() db:close() end,
        }
    end
    local sqlite = require "pasyn_sqlite"
    local conn = sqlite.connect(path, { readers = 0 })
    return {
        name = "pasyn_sqlite",
        rows = function(sql) return conn:execute(sql):fetchall() end,
        close = function() conn:close() end,
    }
end

-- Deletes the items of the rounds before `r - 1`, checked already: the file stays small
-- over a long run (its free pages are used again).
local function prune(path, r)
    local sqlite = require "pasyn_sqlite"
    local conn = sqlite.connect(path)
    conn:execute("DELETE FROM items WHERE id <= ?", (r - 1) * IDS_PER_ROUND)
    conn:close()
end

local function create(path)
    local sqlite = require "pasyn_sqlite"
    local conn = sqlite.connect(path)
    conn:executescript([[
        CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, payload TEXT,
                                          batch INTEGER, batch_size INTEGER);
        CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS transfers (id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER,
                                              amount INTEGER)]])
    for i = 1, ACCOUNTS do
        conn:execute("INSERT INTO accounts (id, balance) VALUES (?, ?)", i, BALANCE)
    end
    conn:close()
end

-- ---- one round: a child, killed ------------------------------------------------------------

-- Runs the child until the kill (or its end) and returns what it acknowledged:
-- { items = {id = true}, transfers = {id = true}, acks = n, ready = bool, killed = bool,
--   status = exit code, signal = n, stderr = text, ms = milliseconds from spawn to kill }.
local function run_child(path, synchronous, first_id, seed, kill_ms, kill_after_ready, kill_acks)
    local got = { items = {}, transfers = {}, acks = 0, ready = false, killed = false, stderr = "" }
    local out, err = uv.new_pipe(false), uv.new_pipe(false)
    local pending_line = ""
    local kill_timer, watchdog = uv.new_timer(), uv.new_timer()
    local pid, handle
    local started = uv.hrtime()

    local function kill()
        if not got.killed and not got.status then
            got.killed = true
            got.ms = math.floor((uv.hrtime() - started) / 1e6)
            uv.kill(pid, "sigkill")
        end
    end

    local function line(l)
        local kind, a, b = l:match("^(%a+) ?(%d*) ?(%d*)$")
        if kind == "i" then
            got.items[tonumber(a)] = true
        elseif kind == "m" then
            for id = tonumber(a), tonumber(a) + tonumber(b) - 1 do
                got.items[id] = true
            end
        elseif kind == "t" then
            got.transfers[tonumber(a)] = true
        elseif kind == "ready" then
            got.ready = true
            if kill_after_ready then
                kill_timer:start(kill_ms, 0, kill)
            end
            return
        else
            error("crash proof: the child printed " .. string.format("%q", l))
        end
        got.acks = got.acks + 1
        if got.acks == kill_acks then
            kill()
        end
    end

    handle, pid = uv.spawn(LUA, {
        args = { HERE .. "crash_child.lua", path, synchronous, tostring(first_id), tostring(seed),
                 tostring(CHILD_SECONDS) },
        stdio = { nil, out, err },
    }, function(status, signal)
        got.status, got.signal = status, signal
        kill_timer:stop()
        watchdog:stop()
        handle:close()
    end)
    assert(handle, "crash proof: cannot start " .. LUA .. ": " .. tostring(pid))
    out:read_start(function(e, data)
        assert(not e, e)
        if not data then
            out:close()
            return
        end
        pending_line = pending_line .. data
        for l in pending_line:gmatch("([^\n]*)\n") do
            line(l)
        end
        pending_line = pending_line:match("([^\n]*)$") -- a line cut by the kill is no ack
    end)
    err:read_start(function(e, data)
        assert(not e, e)
        if data then
            got.stderr = got.stderr .. data
        else
            err:close()
        end
    end)
    if not kill_after_ready then
        kill_timer:start(kill_ms, 0, kill)
    end
    -- The bound: a child that neither ends nor gets killed in time is killed and reported.
    watchdog:start(30000, 0, function()
        got.hung = true
        kill()
    end)
    uv.run()
    kill_timer:close()
    watchdog:close()
    uv.run("nowait")
    return got
end

-- ---- checking the file ---------------------------------------------------------------------

-- Checks the file after round `r`; returns nil or what is wrong, and the figures of the round:
-- { checked = acks found, extra = committed writes the child had not acknowledged }.
local function check(path, r, got)
    local db = open_checker(path)
    local problems = {}
    local function wrong(fmt, ...)
        problems[#problems + 1] = string.format(fmt, ...)
    end
    local ok, err = pcall(function()
        local integrity = db.rows("PRAGMA integrity_check")
        if #integrity ~= 1 or integrity[1][1] ~= "ok" then
            wrong("integrity_check: %s", tostring(integrity[1] and integrity[1][1]))
        end
        local lo, hi = r * IDS_PER_ROUND + 1, (r + 1) * IDS_PER_ROUND
        local stats = { checked = 0, extra = 0 }
        for _, t in ipairs({ "items", "transfers" }) do
            local present = {}
            for _, row in ipairs(db.rows(string.format("SELECT id FROM %s WHERE id BETWEEN %d AND %d",
                                                       t, lo, hi))) do
                present[math.tointeger and math.tointeger(row[1]) or row[1]] = true
            end
            for id in pairs(got[t]) do
                if present[id] then
                    stats.checked = stats.checked + 1
                    present[id] = nil
                else
                    wrong("%s %d was acknowledged and is not in the file", t, id)
                end
            end
            for _ in pairs(present) do
                stats.extra = stats.extra + 1
            end
        end
        local total = db.rows("SELECT sum(balance) FROM accounts")[1][1]
        if total ~= ACCOUNTS * BALANCE then
            wrong("the accounts hold %s in all, not %d", tostring(total), ACCOUNTS * BALANCE)
        end
        for _, row in ipairs(db.rows([[
                SELECT a.id, a.balance,
                       (SELECT coalesce(sum(amount), 0) FROM transfers WHERE dst = a.id)
                     - (SELECT coalesce(sum(amount), 0) FROM transfers WHERE src = a.id)
                FROM accounts a]])) do
            if row[2] ~= BALANCE + row[3] then
                wrong("account %d holds %d, its transfers say %d", row[1], row[2], BALANCE + row[3])
            end
        end
        for _, row in ipairs(db.rows([[SELECT batch, count(*), max(batch_size) FROM items
                                       WHERE batch IS NOT NULL GROUP BY batch
                                       HAVING count(*) != max(batch_size)]])) do
            wrong("executemany from id %d: %d of its %d rows are in the file", row[1], row[2], row[3])
        end
        got.stats = stats
    end)
    db.close()
    if not ok then
        wrong("checking the file failed: %s", tostring(err))
    end
    if #problems > 0 then
        return table.concat(problems, "\n", 1, math.min(#problems, 20))
    end
    return nil, got.stats
end

-- ---- the proof -------------------------------------------------------------------------------

local function remove_db(path)
    for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do
        os.remove(path .. suffix)
    end
end

-- Runs the proof. opts: rounds (per synchronous setting), seed, synchronous (an array of
-- settings, "default" for the option left out; default {"default", "full"}), kill_ms (the
-- latest kill after the child is ready; default 600), log (function(line) or nil).
-- Returns true and the totals { rounds, acks, checked, lost, extra, kills_before_ready }, or
-- false and what went wrong (with the seed and the round).
function M.run(opts)
    local seed = opts.seed or os.time()
    local settings = opts.synchronous or { "default", "full" }
    local kill_ms = opts.kill_ms or 600
    local log = opts.log or function() end
    math.randomseed(seed)
    local totals = { rounds = 0, acks = 0, checked = 0, lost = 0, extra = 0, kills_before_ready = 0 }
    for _, synchronous in ipairs(settings) do
        local path = os.tmpname()
        os.remove(path)
        path = path .. ".db"
        create(path)
        for r = 1, opts.rounds do
            if r > 2 then
                prune(path, r)
            end
            -- The moment of the kill: one round in ten while the child starts (opening,
            -- recovering the file), at up to 150 ms after the spawn; the others either at up
            -- to kill_ms after the child is ready or as soon as the parent has read a number
            -- of acknowledgements (then it lands while the writes after them are under way).
            local how = math.random()
            local early, kill_acks = how < 0.1, how >= 0.55 and math.random(1, kill_ms * 20) or nil
            local ms = early and math.random(0, 150) or kill_acks and kill_ms * 10 or math.random(0, kill_ms)
            local child_seed = math.random(1, 1073741824)
            local got = run_child(path, synchronous, r * IDS_PER_ROUND + 1, child_seed, ms, not early,
                                  kill_acks)
            local where = string.format("seed %d, synchronous %s, round %d (child seed %d, kill %s)",
                                        seed, synchronous, r, child_seed,
                                        kill_acks and "after " .. kill_acks .. " acks"
                                            or string.format("at %d ms after %s", ms,
                                                             early and "spawn" or "ready"))
            if got.hung then
                remove_db(path)
                return false, where .. ": the child neither ended nor was killed within 30 s\n" .. got.stderr
            elseif not got.killed then
                remove_db(path)
                return false, string.format("%s: the child ended by itself (status %s, signal %s):\n%s",
                                            where, tostring(got.status), tostring(got.signal), got.stderr)
            end
            local problem, stats = check(path, r, got)
            if problem then
                totals.lost = totals.lost + 1
                return false, where .. ":\n" .. problem .. "\n(file kept: " .. path .. ")"
            end
            totals.rounds = totals.rounds + 1
            totals.acks = totals.acks + got.acks
            totals.checked = totals.checked + stats.checked
            totals.extra = totals.extra + stats.extra
            if not got.ready then
                totals.kills_before_ready = totals.kills_before_ready + 1
            end
            log(string.format("synchronous %-7s round %3d: killed at %4d ms%s, %5d acks, %5d ids checked, "
                              .. "%3d committed unacknowledged", synchronous, r, got.ms,
                              got.ready and "" or " (before ready)", got.acks, stats.checked, stats.extra))
        end
        remove_db(path)
    end
    return true, totals
end

local name = ...
if name == "proofs.crash" then
    return M
end

-- As a script: crash.lua [ROUNDS [SEED]]; ROUNDS per synchronous setting.
local rounds, seed = tonumber((...)) or 20, tonumber((select(2, ...)))
seed = seed or os.time()
print(string.format("crash proof: %d rounds per setting, seed %d (replay: crash.lua %d %d)",
                    rounds, seed, rounds, seed))
local ok, result = M.run({ rounds = rounds, seed = seed, log = print })
if not ok then
    io.stderr:write("crash proof FAILED: ", result, "\n")
    os.exit(1)
end
print(string.format("crash proof: %d rounds, %d writes acknowledged, %d acknowledged ids checked, "
                    .. "%d lost; %d committed but unacknowledged (in flight at the kill); "
                    .. "%d kills before the child was ready", result.rounds, result.acks,
                    result.checked, result.lost, result.extra, result.kills_before_ready))
