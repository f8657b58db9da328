-- How the inline_budget option trades a timer's lateness for throughput: CALLERS coroutines
-- (default 1) run reads for 1 s each, alternating a point read and a range count of about
-- 50-100 us, beside a 1 ms ticker coroutine, on the suite's users table; once with inline
-- reads off, then with each budget. Prints statements per second, the ticker's lateness
-- (p50, p99, max) and how many reads ran inline. README, "Reads the caller runs itself".
--   LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/inline_budget.lua
-- Environment: CALLERS (default 1), ROUNDS (default 2).
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"
local lib = require "lib"

local DB = lib.make_users()
local POINT = "SELECT * FROM users WHERE id = ?"
local RANGE = "SELECT count(*), max(name) FROM users WHERE id BETWEEN ? AND ? + 400"
local CALLERS = tonumber(os.getenv("CALLERS") or 1)

local function run(options, label)
    local conn = sqlite.connect(DB, options)
    for i = 1, 200 do -- the pool learns both reads are short
        conn:execute(POINT, i):fetchone()
        conn:execute(RANGE, i, i):fetchone()
    end
    local late, n = {}, 0
    sqlite.run(function()
        local stop = false
        local ticker = sqlite.spawn(function()
            local want = core.now() + 0.001
            while not stop do
                sqlite.sleep(want - core.now())
                local t = core.now()
                late[#late + 1] = t - want
                want = math.max(want + 0.001, t)
            end
        end)
        local hs = {}
        for c = 1, CALLERS do
            hs[c] = sqlite.spawn(function()
                local i, t0 = c, core.now()
                while core.now() - t0 < 1.0 do
                    local id = i % 90000 + 1
                    if i % 2 == 0 then
                        conn:execute(POINT, id):fetchone()
                    else
                        conn:execute(RANGE, id, id):fetchone()
                    end
                    i, n = i + CALLERS, n + 1
                end
            end)
        end
        for c = 1, CALLERS do
            hs[c]:join()
        end
        stop = true
        ticker:join()
    end)
    table.sort(late)
    local st = conn:stats()
    conn:close()
    print(string.format("%-14s %6.1f k stmt/s  lateness p50 %.3f p99 %.3f max %.3f ms  inline %d",
                        label, n / 1e3, late[#late // 2] * 1e3, late[math.floor(#late * 0.99)] * 1e3,
                        late[#late] * 1e3, st.inline.executed))
end

for _ = 1, tonumber(os.getenv("ROUNDS") or 2) do
    run({ inline_reads = false }, "off")
    for _, budget in ipairs({ 0.0002, 0.0005, 0.001, 0.002 }) do
        run({ inline_budget = budget }, "budget " .. budget * 1e3 .. " ms")
    end
end
