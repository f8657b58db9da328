-- Helpers shared by the benchmark suite (bench/suite.lua): fresh database files and copies, the
-- standard data set, the LCG that the Lua side and bench/raw.c both draw ids from, statistics,
-- interleaved rounds, the competitors' connections (LuaDBI, LuaSQL, raw C), and the table.
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"

local M = {}

M.now = core.now

-- ---- settings from the environment -----------------------------------------------------------

local function env_number(name, default)
    local v = tonumber(os.getenv(name) or "")
    if v == nil then
        return default
    end
    return v
end

M.SCALE = env_number("BENCH_SCALE", 1)
M.ROUNDS = math.max(1, math.tointeger(env_number("BENCH_ROUNDS", 5)) or 5)
M.ROWS = 100000 -- the standard data set; never scaled, so the queries keep their cost

-- n scaled by BENCH_SCALE, at least `floor` (and at least 1).
function M.scaled(n, floor)
    return math.max(floor or 1, math.floor(n * M.SCALE + 0.5))
end

-- ---- files ------------------------------------------------------------------------------------

local dir = os.getenv("TMPDIR")
if not dir or dir == "" then
    dir = "/tmp"
end
M.dir = dir
local live = {} -- path -> true while not removed

-- A new, unused path for a database file in $TMPDIR (or /tmp).
function M.fresh_path(tag)
    local name = os.tmpname() -- a unique name; the empty file it makes is removed at once
    os.remove(name)
    local path = string.format("%s/pasyn-bench-%s-%s.db", dir, tag or "db", name:match("[^/]*$"))
    live[path] = true
    return path
end

-- Removes a database file with its -wal, -shm and -journal files.
function M.remove(path)
    for _, s in ipairs({ "", "-wal", "-shm", "-journal" }) do
        os.remove(path .. s)
    end
    live[path] = nil
end

-- Removes every file fresh_path handed out and nobody removed yet.
function M.remove_all()
    for path in pairs(live) do
        M.remove(path)
    end
end

-- ---- the LCG (the same in bench/raw.c) ------------------------------------------------------

-- Returns a function giving the next pseudo-random id in 1..rows. 64-bit LCG (Knuth's MMIX
-- constants; Lua 5.4 integers wrap mod 2^64 as C's uint64_t does), the top 31 bits used.
function M.lcg(seed, rows)
    local state = math.tointeger(seed)
    return function()
        state = state * 6364136223846793005 + 1442695040888963407
        return (state >> 33) % rows + 1
    end
end

-- n ids from the LCG, as an array.
function M.ids(n, seed, rows)
    local nxt, ids = M.lcg(seed, rows or M.ROWS), {}
    for i = 1, n do
        ids[i] = nxt()
    end
    return ids
end

-- ---- the standard data set ----------------------------------------------------------------

local FIRST = { "Ada", "Alan", "Barbara", "Claude", "Dennis", "Donald", "Edsger", "Frances",
                "Grace", "John", "Ken", "Leslie", "Linus", "Margaret", "Niklaus", "Radia" }
local LAST = { "Allen", "Backus", "Codd", "Dijkstra", "Hamilton", "Hopper", "Knuth", "Lamport",
               "Liskov", "Lovelace", "McCarthy", "Perlman", "Ritchie", "Shannon", "Thompson", "Wirth" }
local CITIES = { "Amsterdam", "Athens", "Bangkok", "Berlin", "Bogota", "Brussels", "Budapest",
                 "Buenos Aires", "Cairo", "Cape Town", "Chicago", "Copenhagen", "Delhi", "Dublin",
                 "Helsinki", "Istanbul", "Jakarta", "Kyoto", "Lagos", "Lima", "Lisbon", "London",
                 "Madrid", "Manila", "Melbourne", "Mexico City", "Montreal", "Moscow", "Nairobi",
                 "Oslo", "Paris", "Prague", "Reykjavik", "Rome", "Santiago", "Seoul", "Stockholm",
                 "Tokyo", "Vienna", "Warsaw" }

M.CITIES = CITIES
M.USERS_SCHEMA = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER, city TEXT)"

-- The city of row i (the indexed column).
local function city(i)
    return CITIES[(i * 7919) % #CITIES + 1]
end

-- Row i of the standard data set: deterministic, so every file made from it is the same.
function M.user(i)
    local first, last = FIRST[i % 16 + 1], LAST[(i * 7 + i // 16) % 16 + 1]
    return { i, first .. " " .. last, string.format("%s.%s%d@example.org", first:lower(), last:lower(), i),
             18 + (i * 37) % 63, city(i) }
end

-- How many rows of the standard data set live in each city: { [city] = count }.
function M.city_counts(rows)
    local counts = {}
    for _, c in ipairs(CITIES) do
        counts[c] = 0
    end
    for i = 1, rows or M.ROWS do
        local c = city(i)
        counts[c] = counts[c] + 1
    end
    return counts
end

-- Makes a fresh file holding the standard data set (`users`, ROWS rows, indexes on city and
-- age) and returns its path.
function M.make_users(rows)
    rows = rows or M.ROWS
    local path = M.fresh_path("users")
    local conn = sqlite.connect(path, { readers = 0 })
    conn:execute(M.USERS_SCHEMA)
    local i = 0
    conn:executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", function()
        i = i + 1
        if i <= rows then
            return M.user(i)
        end
    end)
    conn:execute("CREATE INDEX users_city ON users (city)")
    conn:execute("CREATE INDEX users_age ON users (age)")
    conn:execute("ANALYZE")
    assert(conn:execute("SELECT count(*) FROM users"):fetchone()[1] == rows)
    conn:execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn:close()
    return path
end

-- A fresh copy of a database file that no connection has open (its -wal, if any, is empty),
-- byte for byte; returns the copy's path.
function M.copy_db(path, tag)
    local wal = io.open(path .. "-wal", "rb")
    if wal then
        local size = wal:seek("end")
        wal:close()
        assert(size == 0, "copy_db: " .. path .. " has a WAL of " .. size .. " bytes (a connection is open)")
    end
    local src = assert(io.open(path, "rb"))
    local copy = M.fresh_path(tag)
    local dst = assert(io.open(copy, "wb"))
    while true do
        local block = src:read(1 << 20)
        if not block then
            break
        end
        assert(dst:write(block))
    end
    src:close()
    assert(dst:close())
    return copy
end

-- ---- results: the digest (the same in bench/raw.c) -------------------------------------------

-- "rows/intsum/textlen" of an array of rows: their number, the wrapping sum of their integer
-- values and the total length of their strings.
function M.digest(rows)
    local isum, tlen = 0, 0
    for r = 1, #rows do
        local row = rows[r]
        for c = 1, row.n or #row do
            local v = row[c]
            if math.type(v) == "integer" then
                isum = isum + v
            elseif type(v) == "string" then
                tlen = tlen + #v
            end
        end
    end
    return string.format("%d/%d/%d", #rows, isum, tlen)
end

-- ---- statistics ------------------------------------------------------------------------------

local function sorted(t)
    local s = {}
    for i = 1, #t do
        s[i] = t[i]
    end
    table.sort(s)
    return s
end
M.sorted = sorted

function M.median(t)
    local s = sorted(t)
    local n = #s
    if n == 0 then
        return nil
    end
    return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

function M.minmax(t)
    local lo, hi = math.huge, -math.huge
    for i = 1, #t do
        lo, hi = math.min(lo, t[i]), math.max(hi, t[i])
    end
    return lo, hi
end

-- The p-th percentile (0..100, nearest rank) of t; `is_sorted` skips the copy and sort.
function M.percentile(t, p, is_sorted)
    local s = is_sorted and t or sorted(t)
    local n = #s
    if n == 0 then
        return nil
    end
    local k = math.max(1, math.min(n, math.ceil(p / 100 * n)))
    return s[k]
end

-- ---- rounds --------------------------------------------------------------------------------------

local function progress(fmt, ...)
    io.stderr:write(string.format(fmt, ...), "\n")
    io.stderr:flush()
end
M.progress = progress

-- The label of the current mode, appended to every row's competitor and progress line: "" when
-- the machine is quiet, " (1 core busy)" while CPU hogs run beside the workload (M.start_hogs).
M.tag = ""

-- Runs `rounds` rounds of the competitors, interleaved: every round runs each of them once, the
-- order rotated by one each round so that nobody always goes first. A competitor is
-- { name = ..., run = function(round) return {metric = value, ...}, "progress text" end };
-- after the rounds c.samples[metric] holds one value per round, in round order.
-- Each competitor runs once first, untimed (`warmup` false to skip that).
function M.rounds(id, competitors, rounds, warmup)
    rounds = rounds or M.ROUNDS
    for _, c in ipairs(competitors) do
        c.samples = {}
        if warmup ~= false then
            local _, text = c.run(0)
            progress("%s warm-up: %s%s %s", id, c.name, M.tag, text or "")
        end
    end
    local n = #competitors
    for round = 1, rounds do
        for j = 1, n do
            local c = competitors[(j + round - 2) % n + 1]
            local m, text = c.run(round)
            for k, v in pairs(m) do
                c.samples[k] = c.samples[k] or {}
                c.samples[k][round] = v
            end
            progress("%s round %d/%d: %s%s %s", id, round, rounds, c.name, M.tag, text or "")
        end
    end
end

-- Per-round ratios a[i] / b[i].
function M.ratios(a, b)
    local r = {}
    for i = 1, math.min(#a, #b) do
        r[i] = a[i] / b[i]
    end
    return r
end

-- ---- the table --------------------------------------------------------------------------------

local rows = {}

-- Adds a line to the result table:
--   id, who: workload id and competitor; metric: what the value is (with its unit);
--   samples: one value per round; scale (default 1) multiplies them for display; fmt ("%.2f");
--   ratio: { label = "pasyn/LuaDBI", values = per-round ratios } (its median is judged);
--   target: text; met: true, false or nil (no target); note: a word after met/MISSED.
-- The competitor gets the current mode's tag (M.tag).
function M.row(r)
    r.who = r.who .. M.tag
    rows[#rows + 1] = r
end

-- A blank separator between workloads.
function M.rule()
    rows[#rows + 1] = false
end

local function fmtnum(fmt, v)
    if v == nil then
        return "-"
    end
    return string.format(fmt, v)
end

function M.print_table(out)
    out = out or io.stdout
    local header = { "id", "competitor", "metric", "median", "min-max", "ratio (rounds min-max)", "target",
                     "result" }
    local lines = {}
    for _, r in ipairs(rows) do
        if not r then
            lines[#lines + 1] = false
        else
            local scale, fmt = r.scale or 1, r.fmt or "%.2f"
            local med, lo, hi = "-", "-", "-"
            if r.samples and #r.samples > 0 then
                local s = {}
                for i = 1, #r.samples do
                    s[i] = r.samples[i] * scale
                end
                med = fmtnum(fmt, M.median(s))
                local a, b = M.minmax(s)
                lo, hi = fmtnum(fmt, a), fmtnum(fmt, b)
            elseif r.value then
                med = r.value
            end
            local ratio = ""
            if r.ratio then
                local m = M.median(r.ratio.values)
                local a, b = M.minmax(r.ratio.values)
                ratio = string.format("%s %.2fx (%.2f-%.2f)", r.ratio.label, m, a, b)
            end
            local result = ""
            if r.met == true then
                result = "met"
            elseif r.met == false then
                result = "MISSED"
            end
            if r.note then
                result = result == "" and r.note or result .. " " .. r.note
            end
            lines[#lines + 1] = { r.id, r.who, r.metric, med, r.samples and (lo .. "-" .. hi) or "",
                                  ratio, r.target or "", result }
        end
    end
    local widths = {}
    for c = 1, #header do
        widths[c] = #header[c]
    end
    for _, l in ipairs(lines) do
        if l then
            for c = 1, #l do
                widths[c] = math.max(widths[c], #l[c])
            end
        end
    end
    local function emit(l)
        local parts = {}
        for c = 1, #l do
            -- numbers right-aligned, text left-aligned
            local align = (c == 4 or c == 5) and "%" or "%-"
            parts[c] = string.format(align .. widths[c] .. "s", l[c])
        end
        out:write((table.concat(parts, "  "):gsub("%s+$", "")), "\n")
    end
    emit(header)
    local total = 0
    for c = 1, #widths do
        total = total + widths[c] + 2
    end
    out:write(string.rep("-", total - 2), "\n")
    for _, l in ipairs(lines) do
        if l then
            emit(l)
        else
            out:write("\n")
        end
    end
end

-- ---- the competitors' connections -----------------------------------------------------------

local DBI, luasql
do
    local ok, m = pcall(require, "DBI")
    DBI = ok and m or nil
    ok, m = pcall(require, "luasql.sqlite3")
    luasql = ok and m or nil
end
M.DBI, M.luasql = DBI, luasql

-- A LuaDBI connection in autocommit mode, or nil and why not.
function M.open_dbi(path)
    if not DBI then
        return nil, "LuaDBI is not installed"
    end
    local db = assert(DBI.Connect("SQLite3", path))
    db:autocommit(true) -- LuaDBI opens a transaction by default; false when there was none
    return db
end

-- All rows of a prepared LuaDBI statement, executed with the given parameters; nil and the
-- error when it fails.
function M.dbi_rows(stmt, ...)
    local ok, err = stmt:execute(...)
    if not ok then
        return nil, err
    end
    local out = {}
    while true do
        local row = stmt:fetch(false)
        if not row then
            break
        end
        out[#out + 1] = row
    end
    return out
end

-- The same, raising the error.
function M.dbi_all(stmt, ...)
    return assert(M.dbi_rows(stmt, ...))
end

-- The first value of the first row of `sql` on a LuaDBI connection (nil when no row).
function M.dbi_value(db, sql)
    local st = assert(db:prepare(sql))
    local row = M.dbi_all(st)[1]
    st:close()
    return row and row[1]
end

-- A LuaDBI connection to `path`, set as the suite's pools are (WAL, synchronous NORMAL,
-- busy_timeout 5000 ms): q(name, ...) runs sqls[name] with the parameters through a statement
-- prepared on its first use and returns a SELECT's rows (arrays), or the rows another statement
-- changed; close() finalizes the statements and closes the connection. nil and why not when
-- LuaDBI is not installed.
function M.dbi_queries(path, sqls)
    local db, why = M.open_dbi(path)
    if not db then
        return nil, why
    end
    assert(M.dbi_value(db, "PRAGMA journal_mode = WAL") == "wal", "LuaDBI: no WAL")
    assert(DBI.Do(db, "PRAGMA synchronous = NORMAL"))
    assert(M.dbi_value(db, "PRAGMA busy_timeout = 5000") == 5000)
    local sts = {}
    local function q(name, ...)
        local st = sts[name]
        if not st then
            st = assert(db:prepare(sqls[name]))
            sts[name] = st
        end
        if sqls[name]:match("^SELECT") then
            return M.dbi_all(st, ...)
        end
        assert(st:execute(...))
        return st:affected()
    end
    local function close()
        for _, st in pairs(sts) do
            st:close()
        end
        db:close()
    end
    return q, close
end

-- A LuaSQL environment and connection, or nil and why not.
function M.open_luasql(path)
    if not luasql then
        return nil, "LuaSQL is not installed"
    end
    local env = luasql.sqlite3()
    local con = assert(env:connect(path))
    return con, env
end

-- The raw C competitor: bench-raw's path (built when missing), then run(args...) returns its
-- elapsed seconds and its check value (a string).
function M.raw_path(root)
    local exe = root .. "/build/bench-raw"
    local f = io.open(exe)
    if f then
        f:close()
        return exe
    end
    local cmd = string.format("mkdir -p '%s/build' && cc -O2 -Wall -Wextra '%s/bench/raw.c' " ..
                              "-lsqlite3 -o '%s'", root, root, exe)
    progress("building %s: %s", exe, cmd)
    assert(os.execute(cmd), "could not build " .. exe)
    return exe
end

-- A shell command line running `exe` with the given arguments, each quoted.
function M.command(exe, ...)
    local args = {}
    for i, a in ipairs({ exe, ... }) do
        args[i] = "'" .. tostring(a):gsub("'", "'\\''") .. "'"
    end
    return table.concat(args, " ")
end

function M.raw(exe, ...)
    local cmd = M.command(exe, ...)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    local ok = p:close()
    local secs, check = out:match("^(%S+) (%S+)")
    assert(ok and secs, "bench-raw failed: " .. cmd .. ": " .. out)
    return tonumber(secs), check
end

-- k copies of bench-raw at once, the same arguments; returns the longest elapsed seconds (each
-- times itself, so starting them is not counted) and the check values, which must agree.
function M.raw_parallel(exe, k, ...)
    local one = M.command(exe, ...)
    local cmd = "(" .. string.rep(one .. " & ", k) .. "wait)"
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    local longest, check, n = 0, nil, 0
    for secs, c in out:gmatch("(%S+) (%S+)\n") do
        n = n + 1
        longest = math.max(longest, tonumber(secs))
        assert(check == nil or check == c, "bench-raw copies disagree: " .. out)
        check = c
    end
    assert(n == k, "bench-raw failed: " .. cmd .. ": " .. out)
    return longest, check
end

-- ---- the machine and memory -------------------------------------------------------------------

local function first_line(cmd)
    local p = io.popen(cmd .. " 2>/dev/null")
    if not p then
        return nil
    end
    local line = p:read("l")
    p:close()
    return line
end

function M.machine()
    local cores, cpu = tonumber(first_line("nproc")), nil
    local f, count = io.open("/proc/cpuinfo"), 0
    if f then
        for line in f:lines() do
            if line:match("^processor") then
                count = count + 1
            end
            cpu = cpu or line:match("^model name%s*:%s*(.-)%s*$")
        end
        f:close()
    end
    local dbi_sqlite, luasql_sqlite = "-", "-"
    if DBI then
        local db = M.open_dbi(":memory:")
        local st = assert(db:prepare("SELECT sqlite_version()"))
        dbi_sqlite = M.dbi_all(st)[1][1]
        st:close()
        db:close()
    end
    if luasql then
        local con, env = M.open_luasql(":memory:")
        local cur = con:execute("SELECT sqlite_version()")
        luasql_sqlite = cur:fetch()
        cur:close()
        con:close()
        env:close()
    end
    return {
        cores = cores or count,
        cpus = count,
        cpu = cpu or "?",
        lua = _VERSION,
        pasyn = sqlite.version,
        pasyn_sqlite = sqlite.sqlite_version,
        dbi = DBI and (DBI._VERSION or "?") or "not installed",
        dbi_sqlite = dbi_sqlite,
        luasql = luasql and (luasql._VERSION or "LuaSQL") or "LuaSQL not installed",
        luasql_sqlite = luasql_sqlite,
    }
end

-- A field of /proc/self/status in bytes (VmRSS, VmHWM), or nil.
function M.status_bytes(field)
    local f = io.open("/proc/self/status")
    if not f then
        return nil
    end
    local text = f:read("a")
    f:close()
    local kb = text:match(field .. ":%s*(%d+) kB")
    return kb and tonumber(kb) * 1024
end

-- Resets VmHWM to the current RSS (Linux >= 4.0); true if it could.
function M.reset_peak()
    local f = io.open("/proc/self/clear_refs", "w")
    if not f then
        return false
    end
    local ok = f:write("5")
    ok = f:close() and ok
    return ok and true or false
end

local function read_file(path)
    local f = io.open(path)
    if not f then
        return nil
    end
    local text = f:read("a")
    f:close()
    return text
end

local pid = tonumber((read_file("/proc/self/stat") or ""):match("^(%d+)"))

-- Context switches (voluntary, involuntary) summed over the threads alive now: call it while
-- the connection under test is open, before and after, and take the difference.
function M.context_switches()
    local v, iv = 0, 0
    local p = pid and io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
    if not p then
        return 0, 0
    end
    local tids = p:read("a")
    p:close()
    for tid in tids:gmatch("%d+") do
        local text = read_file("/proc/" .. pid .. "/task/" .. tid .. "/status") or ""
        v = v + (tonumber(text:match("\nvoluntary_ctxt_switches:%s*(%d+)")) or 0)
        iv = iv + (tonumber(text:match("nonvoluntary_ctxt_switches:%s*(%d+)")) or 0)
    end
    return v, iv
end

local function stat_cpu(path)
    local rest = (read_file(path) or ""):match("%) (.*)$") -- after the name, which may hold spaces
    if not rest then
        return 0
    end
    local fields = {}
    for w in rest:gmatch("%S+") do
        fields[#fields + 1] = w
    end
    -- fields[1] is field 3 (state); utime and stime are fields 14 and 15, in clock ticks (100/s)
    return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100
end

-- The Lua (main) thread's scheduler statistics: seconds on a CPU, seconds waiting on a run
-- queue (runnable but not running: the cores were busy), time slices.
function M.lua_schedstat()
    local text = pid and read_file("/proc/" .. pid .. "/task/" .. pid .. "/schedstat") or ""
    local run, wait, slices = text:match("^(%d+) (%d+) (%d+)")
    return (tonumber(run) or 0) / 1e9, (tonumber(wait) or 0) / 1e9, tonumber(slices) or 0
end

M.pid = pid

-- ---- CPU hogs: the busy machine -----------------------------------------------------------------

-- A hog: a Lua busy loop (no system calls in the loop) that first prints its pid, and every ten
-- million turns (~0.1 s) checks that its parent is still the suite, and exits when it is not, so
-- that a suite killed with SIGKILL leaves no hog behind either. "pasyn-bench-hog" is in its
-- command line (pgrep -f pasyn-bench-hog finds a leftover).
local HOG = "local _ = 'pasyn-bench-hog' " ..
            "local function ppid() local f = assert(io.open('/proc/self/stat')) local s = f:read('a') " ..
            "f:close() return s:match('%) %S+ (%d+)'), s:match('^%d+') end " ..
            "local parent, me = ppid() io.write(me, '\\n') io.flush() local n = 0 " ..
            "while true do n = n + 1 " ..
            "if n == 10000000 then n = 0 if ppid() ~= parent then os.exit(0) end end end"
local hogs = {} -- { pid = ..., pipe = ... } of the hogs running now

-- Starts k CPU hogs beside the suite: processes of `lua` (the suite's interpreter) running the
-- busy loop above, at the suite's own priority (they inherit its nice value); each is a direct
-- child (io.popen of `exec lua -e ...`), its pid read from its first line, so M.stop_hogs kills
-- it by pid and reaps it. Returns their pids.
function M.start_hogs(k, lua)
    local pids = {}
    for i = 1, k do
        local p = assert(io.popen("exec " .. M.command(lua, "-e", HOG)))
        local hog = { pipe = p, pid = math.tointeger(tonumber(p:read("l"))) }
        hogs[#hogs + 1] = hog
        assert(hog.pid, "a CPU hog did not start")
        pids[i] = hog.pid
    end
    return pids
end

-- Stops every hog M.start_hogs started: SIGTERM by pid, then waits for it (pclose). Safe to call
-- again, and when a hog died already (Ctrl-C reaches the whole process group).
function M.stop_hogs()
    for i = #hogs, 1, -1 do
        local hog = hogs[i]
        hogs[i] = nil
        if hog.pid then
            os.execute("kill " .. hog.pid .. " 2>/dev/null")
        end
        hog.pipe:close()
    end
end

-- CPU seconds used so far by the whole process (every thread, living or ended), and by the
-- main thread alone (the Lua thread).
function M.cpu_seconds()
    return stat_cpu("/proc/self/stat"), pid and stat_cpu("/proc/" .. pid .. "/task/" .. pid .. "/stat") or 0
end


-- Runs fn(i, c) for i = 1..n from `callers` coroutines under sqlite.run, coroutine c taking
-- i = c, c + callers, c + 2 * callers, ...; returns when all are done.
function M.in_coroutines(callers, n, fn)
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

return M
