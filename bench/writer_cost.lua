-- The cost of one autocommit write: N single-row statements of one kind (S5's INSERT, S6's
-- UPDATE, or S11's transaction of BEGIN IMMEDIATE, 2 INSERTs, a SELECT, an UPDATE and COMMIT;
-- or W5's INSERT into t (k, v), which pasyn runs from 256 coroutines at once, in group commits),
-- run by pasyn from one coroutine (w5: 256) or by LuaDBI (prepared statement, autocommit) in the
-- calling thread, on a fresh file like the seed's users (1,000 rows, WAL, synchronous NORMAL).
--
-- Instructions per statement, on each thread (the writer's is the one that runs SQLite for
-- pasyn; for LuaDBI, the only thread): run it under callgrind at two counts and take the
-- difference over 20,000, which cancels the start-up:
--   for n in 2000 22000; do LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=build/cg.pasyn.update.$n \
--     lua5.4 bench/writer_cost.lua pasyn update $n; done
--   callgrind_annotate build/cg.pasyn.update.22000-05 | head
-- (one file per thread: -01 is the Lua thread; the benchmark pool's writer is the last one, -05
-- here, with the most instructions after -01; -02 is the writer of the pool that made the
-- file). Per statement: (the "summary:"
-- line of the 22000 file - that of the 2000 file) / 20000. A build with -DSPIN_NS=0 in CFLAGS
-- takes the waiting threads' spinning out of the counts.
-- Wall clock per statement, interleaved rounds of both (prints the median of the per-round ratios
-- LuaDBI time / pasyn time; the machine is shared, so only medians of ratios mean much):
--   LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/writer_cost.lua \
--     ab update 5000 [rounds]
-- who = pasyn or dbi: one run of that one; on stderr its time per statement, how long each
-- thread of the process ran per statement (Linux, /proc/<pid>/task/*/schedstat: CPU time,
-- spinning included) and pasyn's writer statistics (group commits).
-- Arguments: who (pasyn, dbi or ab), kind (insert, update, txn or w5), n (statements; for txn,
-- transactions), rounds (ab only, default 9).

local ROOT = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/bench/?.lua;" .. ROOT .. "/lua/?.lua;" .. package.path

local sqlite = require "pasyn_sqlite"
local lib = require "lib"

local who, kind = arg[1] or "ab", arg[2] or "update"
local n, rounds = tonumber(arg[3] or 5000), tonumber(arg[4] or 9)
local USERS = 1000
local SQL = {
    insert = "INSERT INTO users (name, email, age, city) VALUES (?, ?, ?, ?)",
    update = "UPDATE users SET email = ? WHERE id = ?",
    w5 = "INSERT INTO t (k, v) VALUES (?, ?)",
    begin = "BEGIN IMMEDIATE",
    insert_order = "INSERT INTO orders (user_id, product_id, quantity, created) VALUES (?, ?, ?, ?)",
    user_orders = "SELECT count(*) FROM orders WHERE user_id = ?",
    update_city = "UPDATE users SET city = ? WHERE id = ?",
    commit = "COMMIT",
}

local function fresh()
    local path = lib.fresh_path("writer_cost")
    local conn = sqlite.connect(path, { readers = 0 })
    conn:executescript([[
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER, city TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, product_id INTEGER, quantity INTEGER,
                     created TEXT);
CREATE INDEX orders_user ON orders (user_id);
CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
]])
    local i = 0
    conn:executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", function()
        i = i + 1
        if i <= USERS then
            return { i, "user " .. i, "user" .. i .. "@example.com", 18 + i % 60, "city" }
        end
    end)
    conn:close()
    return path
end

-- The work of one run: q(name, ...) runs SQL[name] and returns the rows it changed (or read).
local function work(q, tag)
    if kind == "insert" then
        for i = 1, n do
            assert(q("insert", "user " .. i, "u" .. i .. "@example.net", 18 + i % 60, "city") == 1)
        end
    elseif kind == "w5" then
        for i = 1, n do
            assert(q("w5", i, "value " .. i) == 1)
        end
    elseif kind == "update" then
        for i = 1, n do
            assert(q("update", "user" .. i .. "." .. tag .. "@example.net", i % USERS + 1) == 1)
        end
    else
        for i = 1, n do
            local u = i % USERS + 1
            q("begin")
            assert(q("insert_order", u, i % 500 + 1, i % 5 + 1, "2026-01-01") == 1)
            assert(q("insert_order", u, i % 499 + 1, i % 5 + 1, "2026-01-02") == 1)
            q("user_orders", u)
            assert(q("update_city", "city" .. i % 7, u) == 1)
            q("commit")
        end
    end
end

local function dbi_runner(path)
    local q, close = assert(lib.dbi_queries(path, SQL))
    return function(tag)
        work(q, tag)
    end, close
end

local function pasyn_runner(path)
    local conn = sqlite.connect(path, { synchronous = "normal", busy_timeout = 5000 })
    local function q(name, ...)
        local cur = conn:execute(SQL[name], ...)
        if SQL[name]:match("^SELECT") then
            return #cur:fetchall()
        end
        return cur.rowcount
    end
    return function(tag)
        if kind == "w5" then -- as W5 runs it: 256 coroutines, coroutine c taking i = c, c + 256, ...
            lib.in_coroutines(256, n, function(i)
                assert(q("w5", i, "value " .. i) == 1)
            end)
            return
        end
        sqlite.run(function()
            if kind == "txn" then
                -- as S11 runs it: conn:transaction around the body
                for i = 1, n do
                    local u = i % USERS + 1
                    conn:transaction(function()
                        assert(q("insert_order", u, i % 500 + 1, i % 5 + 1, "2026-01-01") == 1)
                        assert(q("insert_order", u, i % 499 + 1, i % 5 + 1, "2026-01-02") == 1)
                        q("user_orders", u)
                        assert(q("update_city", "city" .. i % 7, u) == 1)
                    end)
                end
            else
                work(q, tag)
            end
        end)
    end, function()
        local w = conn:stats().writer
        io.stderr:write(string.format("pasyn writer: %d executed, %d batches, %d batched, largest %d\n",
                                      w.executed, w.batches, w.batched, w.batch_max))
        conn:close()
    end
end

-- The time each thread of this process has run so far (Linux: /proc/self/task/*/schedstat, in
-- ns), by name and thread id; {} elsewhere.
local function thread_times()
    local out = {}
    local stat = io.open("/proc/self/stat")
    if not stat then
        return out
    end
    local pid = stat:read("l"):match("^(%d+)")
    stat:close()
    local ls = io.popen("ls /proc/" .. pid .. "/task")
    for tid in ls:lines() do
        local dir = "/proc/" .. pid .. "/task/" .. tid
        local f, g = io.open(dir .. "/schedstat"), io.open(dir .. "/comm")
        if f and g then
            out[tid] = { name = g:read("l"), ns = tonumber(f:read("l"):match("^(%d+)")) }
        end
        if f then f:close() end
        if g then g:close() end
    end
    ls:close()
    return out
end

local path = fresh()
if who == "pasyn" or who == "dbi" then
    local run, close = (who == "pasyn" and pasyn_runner or dbi_runner)(path)
    local before = thread_times()
    local t0 = lib.now()
    run(1)
    local dt = lib.now() - t0
    local unit = kind == "txn" and "transaction" or "statement"
    io.stderr:write(string.format("%s %s: %.2f us per %s\n", who, kind, dt / n * 1e6, unit))
    -- how long each thread ran meanwhile (spinning included), per statement
    for tid, t in pairs(thread_times()) do
        local ran = t.ns - (before[tid] and before[tid].ns or 0)
        if ran > 0.01 * dt * 1e9 then
            io.stderr:write(string.format("  thread %s (%s) ran %.2f us per %s\n", tid, t.name, ran / n / 1e3,
                                          unit))
        end
    end
    close()
else
    local runs = {}
    runs.pasyn, runs.pasyn_close = pasyn_runner(path)
    runs.dbi, runs.dbi_close = dbi_runner(path)
    local ratios, tp, td = {}, {}, {}
    for r = 1, rounds do
        local t = {}
        for _, k in ipairs(r % 2 == 1 and { "pasyn", "dbi" } or { "dbi", "pasyn" }) do
            local t0 = lib.now()
            runs[k](r * 2 + (k == "dbi" and 1 or 0))
            t[k] = (lib.now() - t0) / n * 1e6
        end
        tp[r], td[r], ratios[r] = t.pasyn, t.dbi, t.dbi / t.pasyn
    end
    local function median(xs)
        local s = { table.unpack(xs) }
        table.sort(s)
        return s[(#s + 1) // 2]
    end
    io.write(string.format("%s n=%d rounds=%d: pasyn %.2f us, LuaDBI %.2f us per %s (medians); " ..
                           "LuaDBI/pasyn median of ratios %.2fx (min %.2f, max %.2f)\n", kind, n, rounds,
                           median(tp), median(td), kind == "txn" and "transaction" or "statement",
                           median(ratios), math.min(table.unpack(ratios)), math.max(table.unpack(ratios))))
    runs.pasyn_close()
    runs.dbi_close()
end
os.remove(path)
os.remove(path .. "-wal")
os.remove(path .. "-shm")
