-- pasyn_sqlite.cqueues: pasyn_sqlite under cqueues controllers. A query made inside a
-- controller's coroutine waits on a cqueues condition, so the controller runs its other
-- coroutines (timers, sockets) meanwhile; a dispatcher coroutine polls sqlite.fd() and
-- signals the condition when the completion arrives.
--
--     local cqueues = require "cqueues"
--     local sqlite = require "pasyn_sqlite.cqueues" -- the table of require "pasyn_sqlite"
--     local conn = sqlite.connect("app.db")
--     local cq = cqueues.new()
--     cq:wrap(function()
--         print(conn:execute("SELECT count(*) FROM t"):fetchone()[1])
--         conn:close()
--     end)
--     assert(cq:loop())                             -- returns once the coroutine is done
--
-- require "pasyn_sqlite.cqueues" -> the module table of "pasyn_sqlite", after sqlite.set_host
-- has made cqueues the host loop of this Lua state (replacing any host set before; one host
-- per state). Raises what require "cqueues" raises. Everything below runs in the thread of
-- the Lua state, which steps the controllers.
--
-- Which calls yield: those made in a coroutine that a controller resumes itself (cq:wrap,
-- cq:attach), where cqueues.running() returns the controller and true, and where
-- coroutine.isyieldable agrees. Calls from anywhere else block the thread until their result
-- is there, and work all the same: outside any controller, and in a plain coroutine nested
-- inside a controller's (cqueues.running() gives false there: its yields would go to its
-- resumer, not to the controller).
--
-- The loop's lifetime: each controller with a waiting coroutine runs one dispatcher coroutine;
-- it waits for sqlite.fd() (polled as { pollfd = fd, events = "r" }) to poll readable, calls
-- sqlite.dispatch(), and ends as soon as none of that controller's coroutines waits, so that
-- cq:loop() returns when the program's own work is done. No timer and no polling of ours.
-- Several controllers (nested or side by side) each have their own dispatcher; whichever
-- dispatches wakes the waiters of all.
--
-- Errors: a query's error is raised inside the coroutine as an error object, as anywhere. An
-- error the coroutine does not catch ends it as cqueues ends any coroutine that fails: the
-- controller's cq:loop() / cq:step() returns false and the error; the other coroutines and
-- their queries go on when the loop is called again.

local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"

local running = cqueues.running
local poll = cqueues.poll
local co_status = coroutine.status
local isyieldable = core.isyieldable -- coroutine.isyieldable, on every Lua

-- Per controller (weak: a dropped controller takes its state along): how many of its
-- coroutines wait, whether its dispatcher runs, the condition that tells the dispatcher the
-- count fell to zero, and what the dispatcher polls.
local states = setmetatable({}, { __mode = "k" })
local conds = setmetatable({}, { __mode = "k" }) -- coroutine -> its condition, made once
local parked = {} -- coroutine -> its controller's state, from its first suspend until resume

local function state_of(cq)
    local st = states[cq]
    if not st then
        st = { waits = 0, running = false, idle = condition.new(),
               fd = { pollfd = sqlite.fd(), events = "r" } }
        states[cq] = st
    end
    return st
end

-- The dispatcher of a controller: while one of its coroutines waits, waits for sqlite.fd()
-- (or for the count to fall to zero, which a dispatch from elsewhere may do) and dispatches.
-- Raises what sqlite.dispatch() raises (after starting a successor if someone still waits).
local dispatcher
function dispatcher(st, cq)
    while st.waits > 0 do
        poll(st.fd, st.idle)
        local ok, err = pcall(sqlite.dispatch)
        if not ok then
            st.running = st.waits > 0
            if st.running then
                cq:wrap(dispatcher, st, cq)
            end
            error(err, 0)
        end
    end
    st.running = false
end

-- can_yield(co) -> true when the running coroutine `co` is resumed by a controller itself.
local function can_yield(co)
    local cq, direct = running()
    return co ~= nil and cq ~= nil and direct == true and isyieldable()
end

-- suspend(co), inside `co` (a controller's coroutine): counts it as waiting in its
-- controller, starts the controller's dispatcher if it does not run, and waits on `co`'s
-- condition. Returns when resume signalled it; called again after any early return, without
-- counting `co` twice.
local function suspend(co)
    local st = parked[co]
    local cq = running()
    if not st then
        st = state_of(cq)
        parked[co] = st
        st.waits = st.waits + 1
    end
    if not st.running then
        st.running = true
        cq:wrap(dispatcher, st, cq)
    end
    local cond = conds[co]
    if not cond then
        cond = condition.new()
        conds[co] = cond
    end
    poll(cond)
end

-- resume(co), from sqlite.dispatch() (in some controller's dispatcher, or wherever dispatch
-- is called): `co`'s completion is there. Uncounts `co`, tells its dispatcher when nothing
-- waits any more, and signals `co`'s condition; the controller resumes `co` on its next step.
-- Raises nothing.
local function resume(co)
    local st = parked[co]
    if st then
        parked[co] = nil
        st.waits = st.waits - 1
        if st.waits == 0 then
            st.idle:signal()
        end
    end
    local cond = conds[co]
    if cond and co_status(co) ~= "dead" then
        cond:signal()
    end
end

sqlite.set_host({ can_yield = can_yield, suspend = suspend, resume = resume })

return sqlite
