-- luv.lua: pasyn_sqlite under luv's loop. Queries made inside coroutines yield to the loop,
-- which keeps a 5 ms timer running meanwhile; uv.run() returns once the work is done.
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/luv.lua
local uv = require "luv"
local sqlite = require "pasyn_sqlite.luv" -- the table of require "pasyn_sqlite", set up for luv

local conn = sqlite.connect(":memory:") -- the main chunk blocks: fine for setting up
conn:execute("CREATE TABLE t(x INTEGER)")

local ticks = 0
local timer = uv.new_timer()
timer:start(5, 5, function() ticks = ticks + 1 end)

-- A long read: the timer goes on ticking while a reader thread runs it.
coroutine.wrap(function()
    local n = conn:execute([[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
                             WHERE x < 1000000) SELECT count(*) FROM c]]):fetchone()[1]
    print(("counted %d rows; the 5 ms timer ticked %d times meanwhile"):format(n, ticks))
    timer:close() -- the loop ends once nothing else is active
end)()

-- Writes and reads from other coroutines, interleaved by the loop.
for i = 1, 3 do
    coroutine.wrap(function()
        conn:execute("INSERT INTO t VALUES (?)", { i })
        print("coroutine " .. i .. " sees " .. conn:execute("SELECT count(*) FROM t"):fetchone()[1]
              .. " row(s)")
    end)()
end

uv.run()
conn:close()
