-- Helpers shared by the specs: temporary database files, raises(), scalar(), what many
-- coroutines read at once, stats sums, and what the process holds (threads, descriptors, a
-- ":memory:" pool's files) for the checks that nothing is left behind.
-- The specs' LUA_PATH holds spec/?.lua, so `local support = require "support"` finds this.
local sqlite = require "pasyn_sqlite"
local assert = require "luassert"
local lfs = require "lfs" -- LuaFileSystem: busted's own dependency (through penlight)

local support = {}

support.pack = table.pack or function(...) return { n = select("#", ...), ... } end
support.unpack = table.unpack or unpack

-- Removes a database file and its -wal, -shm and -journal companions.
function support.remove_db(path)
    for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do
        os.remove(path .. suffix)
    end
end

-- A fresh path for a database file in the temp directory (nothing exists there yet).
function support.temp_path()
    local name = os.tmpname()
    os.remove(name)
    return name .. ".db"
end

-- A database path from os.tmpname() (an empty file), and a function that removes the file
-- and its companions.
function support.tmpdb()
    local path = os.tmpname()
    return path, function()
        support.remove_db(path)
    end
end

-- Calls fn(...), which must fail with an error object of `kind`; returns that error.
function support.raises(kind, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected a " .. kind .. ", but the call succeeded")
    assert.is_true(sqlite.is_error(err), "expected an error object, got: " .. tostring(err))
    assert.are.equal(kind, err.kind, tostring(err))
    return err
end

-- The first value of the first row of sql (nil when there is no row).
function support.scalar(conn, sql, ...)
    local row = conn:execute(sql, ...):fetchone()
    return row and row[1]
end

-- The values that `sql` (its first row's first value, as scalar gives it) gives from n
-- coroutines at once, as a { value = count } table. Run at once, they spread over the pool's
-- readers, so that every reader answers some of them. Returns when they are all done (it
-- runs them with sqlite.run).
function support.counts_everywhere(conn, sql, n)
    local seen = {}
    sqlite.run(function()
        for _ = 1, n do
            sqlite.spawn(function()
                local v = support.scalar(conn, sql)
                seen[v] = (seen[v] or 0) + 1
            end)
        end
    end)
    return seen
end

-- The first column of every row of sql, as a flat array.
function support.column(conn, sql, ...)
    local out = {}
    for row in conn:execute(sql, ...):rows() do
        out[#out + 1] = row[1]
    end
    return out
end

-- The sum of one per-reader counter (executed, stolen, ...) over stats.readers of a
-- conn:stats() table.
function support.readers_sum(stats, field)
    local total = 0
    for _, r in ipairs(stats.readers) do
        total = total + r[field]
    end
    return total
end

-- How many readers of conn hold a streamed result now.
function support.streaming_readers(conn)
    local n = 0
    for _, r in ipairs(conn:stats().readers) do
        n = n + (r.streaming and 1 or 0)
    end
    return n
end

-- Polls (about two seconds at most) until no reader streams: a released stream ends on its
-- reader's thread a moment later, and a dropped cursor releases its stream when collected.
-- Returns how many still stream.
function support.wait_no_stream(conn)
    for _ = 1, 200 do
        if support.streaming_readers(conn) == 0 then
            return 0
        end
        collectgarbage()
        sqlite.sleep(0.01)
    end
    return support.streaming_readers(conn)
end

-- A host loop's ticker kept firing during a long query: `inside` holds the times of the ticks
-- that fell in it (to_ms turns the difference of two into milliseconds), duration_ms how long
-- the query took, tick_ms the ticker's period. Prints their lateness (to stderr, for the log)
-- and checks at least 5 ticks, and a third of those the duration allows: a loop the query
-- blocked sees none.
function support.check_ticks(label, duration_ms, tick_ms, inside, to_ms)
    local max, sum = 0, 0
    for i = 2, #inside do
        local late = to_ms(inside[i] - inside[i - 1]) - tick_ms
        max, sum = math.max(max, late), sum + late
    end
    io.stderr:write(("\n[%s] query %.0f ms, %d ticks inside, lateness max %.1f ms, mean %.2f ms\n")
        :format(label, duration_ms, #inside, max, sum / math.max(1, #inside - 1)))
    assert.is_true(#inside >= 5, ("only %d ticks during the query"):format(#inside))
    assert.is_true(#inside >= duration_ms / tick_ms / 3,
                   ("%d ticks in %.0f ms"):format(#inside, duration_ms))
end

-- ---- what the process holds -------------------------------------------------------------
-- Read by this process itself from /proc/self, never through a shell: under make tsan the
-- preloaded ThreadSanitizer runtime crashes /bin/sh at start, and a count read from a shell
-- that crashed is no count (the checks then passed without counting anything).

-- The names in directory `dir` (without . and ..), sorted; nil when it cannot be read.
local function names_in(dir)
    local ok, iter, state = pcall(lfs.dir, dir)
    if not ok then
        return nil
    end
    local out = {}
    for name in iter, state do
        if name ~= "." and name ~= ".." then
            out[#out + 1] = name
        end
    end
    table.sort(out, function(a, b) return (tonumber(a) or a) < (tonumber(b) or b) end)
    return out
end

local function first_line(path)
    local f = io.open(path)
    if not f then
        return nil
    end
    local line = f:read("*l")
    f:close()
    return line
end

-- The threads of this process, each as "<tid> <name>" (its comm); nil where there is no /proc.
function support.threads()
    local tids = names_in("/proc/self/task")
    if not tids then
        return nil
    end
    local out = {}
    for _, tid in ipairs(tids) do
        local name = first_line("/proc/self/task/" .. tid .. "/comm")
        if name then -- else it ended while we looked
            out[#out + 1] = tid .. " " .. name
        end
    end
    return out
end

-- The pools' threads among support.threads(): the core names them pasyn-writer and
-- pasyn-reader. A leak check counts these alone: other threads come and go on their own. Under
-- make tsan the runtime starts a background thread of its own (named as the process is) at the
-- process's first pthread_create and keeps it to the end, so a count of every thread taken
-- before any pool opened grows by one for good; and a host library may keep a thread pool.
function support.pool_threads()
    local all = support.threads()
    if not all then
        return nil
    end
    local out = {}
    for _, t in ipairs(all) do
        if t:match("^%d+ pasyn%-") then
            out[#out + 1] = t
        end
    end
    return out
end

-- The open descriptors of this process, each as "<fd> -> <target>"; nil where there is no
-- /proc. The one that lists /proc/self/fd is left out.
function support.descriptors()
    local fds = names_in("/proc/self/fd")
    if not fds then
        return nil
    end
    local out = {}
    for _, fd in ipairs(fds) do
        local target = lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
        if target and not target:match("^/proc/%d+/fd$") then -- else: closed meanwhile, or ours
            out[#out + 1] = fd .. " -> " .. target
        end
    end
    return out
end

-- The file behind a ":memory:" connection (the core's private WAL database on tmpfs).
function support.memory_file(conn)
    return conn:execute("SELECT file FROM pragma_database_list WHERE name = 'main'"):fetchone()[1]
end

-- The files of memory databases (pasyn-memdb-*) in the directory of `file`, one of them.
function support.memory_files(file)
    local dir = file:match("^(.*)/[^/]*$")
    local out = {}
    for _, name in ipairs(names_in(dir) or {}) do
        if name:find("pasyn-memdb-", 1, true) == 1 then
            out[#out + 1] = dir .. "/" .. name
        end
    end
    return out
end

function support.exists(path)
    return lfs.attributes(path, "mode") ~= nil
end

-- What a leak check counts, each a function returning the array of what it counted now.
local counted = {
    threads = support.pool_threads,
    descriptors = support.descriptors,
}

-- How many of each countable thing the process holds now: { threads = pool threads,
-- descriptors = n }, each nil where there is no /proc.
function support.holdings()
    local out = {}
    for kind, list in pairs(counted) do
        local items = list()
        out[kind] = items and #items
    end
    return out
end

-- Asserts that the process holds no more of each kind than `limits` ({ threads = n,
-- descriptors = m }, as support.holdings gives; a kind that is nil there is not checked),
-- once finalizers and exiting threads have had a moment: it collects garbage and looks again
-- for up to about 2 s. A pool an earlier test left to the collector may close meanwhile, and a
-- joined thread leaves /proc/self/task a moment after pthread_join returns; a leak stays. When
-- it fails, the message lists what it counted of each kind, and every thread of the process
-- with its name (the pools' and the others).
function support.assert_nothing_left(limits)
    local over, threads
    for _ = 1, 200 do
        collectgarbage()
        collectgarbage()
        over, threads = {}, support.threads() or {} -- listed with the counts, at one moment
        for kind, max in pairs(limits) do
            local items = counted[kind]()
            if items and #items > max then
                over[#over + 1] = string.format("%d %s (at most %d expected):\n    %s", #items,
                                                kind, max, table.concat(items, "\n    "))
            end
        end
        if #over == 0 then
            return
        end
        sqlite.sleep(0.01)
    end
    table.sort(over)
    over[#over + 1] = "every thread of the process:\n    " .. table.concat(threads, "\n    ")
    assert.is_true(false, table.concat(over, "\n"))
end

-- The interpreter that runs the specs, for a child process (its name on the PATH).
support.lua = jit and "luajit" or "lua" .. _VERSION:sub(5) -- luacheck: ignore jit

-- True under make tsan, where no child process can start: the shell that io.popen and
-- os.execute run inherits the preloaded ThreadSanitizer runtime, with which /bin/sh crashes.
-- Tests of child processes are pending there, and run under make test and make asan.
support.no_children = (os.getenv("LD_PRELOAD") or ""):find("tsan", 1, true) ~= nil

-- Runs `code` (Lua source; it prints "ok" when all went well) in a child process of the same
-- interpreter bounded by `seconds` (default 60), so that a hang fails the test instead of
-- stopping the run; returns what it printed, then "status=<exit status>" (124: timed out).
-- Under make tsan (no child processes) it runs here, in an environment whose print collects.
function support.in_child(code, seconds)
    if support.no_children then
        local out = {}
        local function collect(...) -- as print: every argument, tab-separated
            local parts = {}
            for i = 1, select("#", ...) do
                parts[i] = tostring((select(i, ...)))
            end
            out[#out + 1] = table.concat(parts, "\t")
        end
        local env = setmetatable({ print = collect }, { __index = _G })
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
                                                                                support.lua, script)))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    return out
end

return support
