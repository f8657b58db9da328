-- c_host.lua: the Lua side of examples/c_host.c, a C program with its own event loop.
-- It declares that loop to pasyn_sqlite, starts the coroutines that query the database (each
-- runs until its first query yields), and returns a table the C loop reads: `running` (how
-- many coroutines have not finished yet) and what the checks need.
local sqlite = require "pasyn_sqlite"
local host = ... -- from c_host.c: host.now(), the seconds of the clock its timer runs on

-- The whole protocol on this side: from now on a query made in any coroutine but the main
-- one yields (a plain coroutine.yield()), and sqlite.dispatch(), which the C loop calls when
-- sqlite.fd() is readable, resumes it once its result has arrived.
sqlite.set_host {}

local LONG_N = 1500000 -- rows the long query counts: about 0.3 s on a desktop CPU
local LONG = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < "
    .. LONG_N .. ") SELECT count(*) FROM c"

local app = { running = 0, points = 0, points_expected = 0 }

-- Calls from the main thread block, which suits the setup.
local conn = sqlite.connect(":memory:")
conn:execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")

-- Starts fn in a coroutine of its own and runs it up to its first query.
local function start(fn)
    local co = coroutine.create(function()
        fn()
        app.running = app.running - 1 -- an error skips this: the C loop stops on it
    end)
    app.running = app.running + 1
    local ok, err = coroutine.resume(co)
    if not ok then
        error(err, 0)
    end
end

-- The long query, on a reader thread. The timer ticks between long_t0 and long_t1 are the
-- proof that the C loop kept running meanwhile.
start(function()
    app.long_t0 = host.now()
    local n = conn:execute(LONG):fetchone()[1]
    app.long_t1 = host.now()
    app.long_ok = n == LONG_N
    app.points_at_long_end = app.points
end)

-- Point writes (on the writer thread) and reads, each checked, running alongside.
for w = 1, 4 do
    start(function()
        for i = 1, 5 do
            local k, v = w * 100 + i, ("value %d.%d"):format(w, i)
            conn:execute("INSERT INTO kv(k, v) VALUES (?, ?)", { k, v })
            local row = conn:execute("SELECT v FROM kv WHERE k = ?", { k }):fetchone()
            assert(row and row[1] == v, "point read of " .. k .. " gave " .. tostring(row and row[1]))
            app.points = app.points + 1
        end
    end)
    app.points_expected = app.points_expected + 5
end

function app.close()
    app.rows = conn:execute("SELECT count(*) FROM kv"):fetchone()[1] -- blocks: main thread
    conn:close()
end

return app
