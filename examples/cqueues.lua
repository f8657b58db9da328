-- cqueues.lua: pasyn_sqlite under a cqueues controller. Queries made inside the controller's
-- coroutines yield to it, so another coroutine sleeping 5 ms at a time keeps waking on time;
-- cq:loop() returns once the work is done.
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/cqueues.lua
local cqueues = require "cqueues"
local sqlite = require "pasyn_sqlite.cqueues" -- the table of require "pasyn_sqlite"

local conn = sqlite.connect(":memory:") -- outside the controller a call blocks
conn:execute("CREATE TABLE t(x INTEGER)")

local cq = cqueues.new()
local ticks, done = 0, false

cq:wrap(function()
    while not done do
        cqueues.sleep(0.005)
        ticks = ticks + 1
    end
end)

cq:wrap(function()
    local n = conn:execute([[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
                             WHERE x < 1000000) SELECT count(*) FROM c]]):fetchone()[1]
    print(("counted %d rows; the 5 ms sleeper woke %d times meanwhile"):format(n, ticks))
    done = true
end)

for i = 1, 3 do
    cq:wrap(function()
        conn:execute("INSERT INTO t VALUES (?)", { i })
        print("coroutine " .. i .. " sees " .. conn:execute("SELECT count(*) FROM t"):fetchone()[1]
              .. " row(s)")
    end)
end

assert(cq:loop())
conn:close()
