-- pasyn_sqlite.scheduler: where a call waits. Inside a coroutine of the built-in scheduler, or
-- one that a host adapter (set_host) says may yield, a query yields and is resumed when its
-- completion is dispatched; anywhere else it blocks the OS thread. Also run/spawn/join/sleep,
-- and dispatch for host loops.

local core = require "pasyn_sqlite.core"
local errors = require "pasyn_sqlite.errors"

local M = {}

-- Misuse raises a ProgrammingError object (API.md, "Errors"), as the rest of the library does:
-- `message` names the function and, for a bad argument, the argument.
local function misuse(message)
    error(errors.new("ProgrammingError", message), 3)
end

-- M.on_end(co), when set, is told of each of the scheduler's coroutines that ends (returns or
-- raises), before anybody joining it resumes.

local co_running, co_resume, co_yield, co_status, co_create =
    coroutine.running, coroutine.resume, coroutine.yield, coroutine.status, coroutine.create
-- coroutine.isyieldable, also where a host hides it (ngx_lua) and in LuaJIT without it.
local isyieldable = core.isyieldable
local is_dead = core.is_dead -- coroutine.status(co) == "dead", without making a string
local unpack = table.unpack or unpack -- luacheck: ignore
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local SUSPEND = {}                            -- what our coroutines yield while parked
local waiting = {}                            -- task or ticket -> coroutine waiting for it
local task_pools = {}                         -- task -> the gate of the pool it went to
local expected = setmetatable({}, { __mode = "v" }) -- task -> coroutine to await it (expect)
local arrived = {}                            -- task -> that coroutine, when it came first
local members = setmetatable({}, { __mode = "k" }) -- coroutine -> its handle
local loop                                    -- the running run() loop, or nil
local host                                    -- the host adapter of set_host, or nil
local hosts = {}                              -- task or ticket -> the host that resumes its
                                              -- waiter
local host_waits = 0                          -- how many tasks and tickets `hosts` holds
local granted = {}                            -- ticket -> its gate, from when it is given a
                                              -- slot until its coroutine runs (regrant)
local woken = {}                              -- tickets of a host's coroutines given a slot:
                                              -- the next dispatch resumes them
local backlog = {}                            -- completions a blocked caller drained while it
                                              -- waited for a slot: the next dispatch delivers
                                              -- them
local dispatching = false                     -- dispatch is under way
-- M.undelivered: completions dispatch has still to deliver; M.ready: the running loop's
-- ready list (loop.ready), an empty table when none runs. Fields, so that the Lua layer reads
-- has_ready()'s answer on every statement's path without a call (see has_ready).
M.undelivered = 0
local NOT_RUNNING = setmetatable({}, { __newindex = function() error("no loop runs", 2) end })
M.ready = NOT_RUNNING

-- True when `co` is a coroutine of the running built-in scheduler.
local function in_loop(co)
    return loop ~= nil and members[co] ~= nil
end
M.in_loop = in_loop

-- coroutine -> the owner id the Lua layer gave it (see caller() in pasyn_sqlite.lua), for the
-- coroutines of the running run() alone: a new table for each run, an empty one between runs.
local NO_IDS = setmetatable({}, { __newindex = function() end })
M.loop_ids = NO_IDS

-- True when the caller (the running coroutine `co`, found when not given) may yield now: a
-- coroutine of the built-in scheduler, or one the host adapter says may.
function M.can_yield(co)
    co = co or co_running()
    if co == nil then
        return false
    elseif in_loop(co) then
        return isyieldable()
    end
    return host ~= nil and host.can_yield(co) == true
end

local gate_release -- below

-- ---- hooks: trace and on_change -----------------------------------------------------------

-- Where an error raised by a hook goes: the statement it reports on has run (and its changes
-- are committed) whatever the hook does, so the error is not the statement's caller's; it is
-- written to stderr, as Python's sqlite3 reports an error raised in a callback
-- (sqlite3.enable_callback_tracebacks) and goes on. An error value that tostring cannot
-- turn into text (its __tostring raises or gives no string) is named by its type.
local function hook_failed(err)
    local ok, text = pcall(tostring, err)
    if not ok or type(text) ~= "string" then
        text = "(error object is a " .. type(err) .. " value)"
    end
    io.stderr:write("pasyn_sqlite: a trace or on_change hook raised: ", text, "\n")
end

-- Calls the connection's trace and on_change hooks (gate.trace, gate.on_change, set with
-- gate.hooks) with what the completed `task` reports (core.deliver), before its waiter goes
-- on: in dispatch, in the order completions arrive, which for on_change is the order of the
-- COMMITs; or after a blocking wait.
local function run_hooks(gate, task)
    local err = core.deliver(task, gate.on_change, gate.trace, gate.pool)
    if err ~= nil then
        hook_failed(err)
    end
end
M.run_hooks = run_hooks

-- Parks the coroutine `co` until dispatch takes `key` (a task, or a gate's ticket) off
-- `waiting`: it yields to the built-in loop, or waits in its host's suspend.
local function park(key, co)
    waiting[key] = co
    if in_loop(co) then
        loop.pending = loop.pending + 1
        repeat -- (resumed by other code than the loop's, it goes on waiting; see await)
            co_yield(SUSPEND)
        until waiting[key] == nil
        return
    end
    local h = host
    hosts[key] = h
    host_waits = host_waits + 1
    repeat
        h.suspend(co)
    until waiting[key] == nil
end

-- Waits for a task submitted to the pool of `gate` (see "Gates"; nil for a task no gate
-- counts: an open or a close): yields when `sync` is false (`co` is the running coroutine,
-- found when not given), else blocks. A coroutine of a host waits in host.suspend until
-- dispatch has taken its task; a resume from anywhere else (the host's own loop, a spurious
-- wake-up) only makes it suspend again. The task's slot of the gate is given back when it
-- completes: by dispatch (before it resumes the waiter), or here for a blocking wait.
-- Dispatch resumes a waiting coroutine of the loop with its task: a resume by anything else
-- (code that resumes the loop's coroutines by hand, a stale timer) leaves it waiting.
function M.await(task, sync, gate, co)
    if M.begin_wait(task, sync, gate, co) then
        co = co or co_running()
        repeat
        until co_yield(SUSPEND) == task or M.stray(co)
    end
end

-- stray(co) -> false while `co`, waiting for a statement, is a coroutine of the running loop
-- (a resume by other code: it goes on waiting). Raises ProgrammingError once the run it waited
-- in has ended: what it waited for was dropped with it, and nothing will resume it.
function M.stray(co)
    if in_loop(co) then
        return false
    end
    error(errors.new("ProgrammingError", "resumed after the sqlite.run it waited in ended: the " ..
                     "statement it waited for was dropped with the run"), 0)
end

-- begin_wait(task, sync, gate, co) -> true when the caller is to finish the wait itself, at
-- once, with coroutine.yield(sched.SUSPEND) (nothing in between): `co` is a coroutine of the
-- built-in loop, recorded as waiting for `task`. Else false, and the wait is over (a
-- blocking one, a completion that came first, a host's coroutine). await's first part, for
-- the Lua layer's wait of every statement: yielding there keeps the waiting coroutine one
-- level (a CallInfo, 64 bytes on Lua 5.4) shallower.
M.SUSPEND = SUSPEND
function M.begin_wait(task, sync, gate, co)
    if sync then
        core.wait(task)
        if gate then -- its slot first: a hook's own statement may need it (max_pending = 1)
            gate_release(gate)
            if gate.hooks then
                run_hooks(gate, task)
            end
        end
        return false
    end
    if arrived[task] then -- see expect; dispatch gave its slot back
        arrived[task], task_pools[task] = nil, nil
        return false
    end
    expected[task], task_pools[task] = nil, gate
    co = co or co_running()
    if loop ~= nil and members[co] ~= nil then -- in_loop(co), inline (one level less)
        waiting[task] = co
        loop.pending = loop.pending + 1
        return true
    end
    park(task, co)
    return false
end

-- Declares that the running coroutine `co` (found when not given) will await `task`, submitted
-- to the pool of `gate`, only later, after work of its own that may yield meanwhile
-- (executemany builds its next chunk, calling the user's iterator, while the writer runs the
-- one before). A completion dispatched before that await is kept for it, instead of being
-- freed as an abandoned coroutine's; it is freed if the coroutine ends without awaiting it.
function M.expect(task, gate, co)
    expected[task], task_pools[task] = co or co_running(), gate
end

-- pause(co): lets the other coroutines of the built-in scheduler run once before the running
-- coroutine `co` goes on (a statement that ran inline never yielded), and until the loop has
-- looked at its timers and completions again, has every coroutine that runs a statement
-- inline pause after it too (M.pausing): the loop goes round after about one inline budget,
-- however many coroutines read inline. Elsewhere (the main thread, a host's coroutine) it
-- does nothing.
M.pausing = false
function M.pause(co)
    if co ~= nil and in_loop(co) and isyieldable() then
        M.pausing = true
        co_yield() -- a bare yield: `after` puts it back on the ready list
    end
end

-- has_ready() -> true when the built-in scheduler has coroutines ready to run (besides the
-- running one), or dispatch has more completions to deliver after the one that resumed the
-- caller: the caller is not the only work. (The Lua layer reads the same two fields itself.)
function M.has_ready()
    return M.undelivered > 0 or M.ready[1] ~= nil
end

-- What set_host fills in when the host leaves it out: any coroutine but the main one may
-- yield; it waits by yielding (no values) and dispatch resumes it with coroutine.resume, so
-- an error it raises afterwards comes out of dispatch, to the host's loop that called it.
local function yields_anywhere(co)
    local _, ismain = co_running()
    return co ~= nil and not ismain and isyieldable()
end
local function suspend_by_yield()
    co_yield()
end
local function resume_directly(co)
    local ok, err = co_resume(co)
    if not ok then
        error(err, 0)
    end
end

-- set_host(h): declares the host loop that runs this Lua state's coroutines, or none
-- (h = nil). h is a table of functions, each optional:
--   h.can_yield(co) -> true when the running coroutine `co` may yield to the host now; a
--                      call from anywhere else blocks the OS thread (default: any coroutine
--                      but the main one, where coroutine.isyieldable says so);
--   h.suspend(co)   -- called inside `co`: returns once resume(co) was called, or earlier
--                      (then it is called again) (default: coroutine.yield());
--   h.owner(co)     -> what owns the transactions `co` begins now, for a host that reuses one
--                      coroutine for unrelated work (OpenResty reuses a request's coroutine
--                      for later requests): a value (a table) that lives as long as that work
--                      does. When it is collected, or `co` is seen working for another owner,
--                      what the owner left open is rolled back (default: `co` itself);
--   h.resume(co)    -- called from dispatch, in the host's thread, when the completion `co`
--                      waits for has arrived (default: coroutine.resume(co), re-raising its
--                      error; dispatch re-raises the first error of a call after delivering
--                      every completion: a host that must see each error passes its own).
-- The host also watches sqlite.fd() and calls sqlite.dispatch() when it polls readable.
-- Coroutines of the built-in scheduler (sqlite.run) keep waiting there. Returns the host
-- that was set before. Raises ProgrammingError for an h that is not nil or a table of
-- functions, naming what is wrong.
function M.set_host(h)
    local before = host
    if h == nil then
        host = nil
        return before
    end
    if type(h) ~= "table" then
        misuse("set_host: argument 'h' must be nil or a table of functions, got " .. type(h))
    end
    for _, name in ipairs({ "can_yield", "suspend", "resume", "owner" }) do
        if h[name] ~= nil and type(h[name]) ~= "function" then
            misuse("set_host: h." .. name .. " must be a function, got " .. type(h[name]))
        end
    end
    host = {
        can_yield = h.can_yield or yields_anywhere,
        suspend = h.suspend or suspend_by_yield,
        resume = h.resume or resume_directly,
        owner = h.owner,
    }
    return before
end

-- How many coroutines wait through a host now: from their first suspend until dispatch takes
-- their completion (before it calls resume). Adapters watch sqlite.fd() only while it is > 0.
function M.host_waits()
    return host_waits
end

-- What owns the transactions the running coroutine `co` begins: `co`, or what the host says
-- (set_host, h.owner).
function M.owner(co)
    local h = host
    if h ~= nil and h.owner ~= nil and not in_loop(co) then
        return h.owner(co)
    end
    return co
end

-- The record core.result fills for discard (each field present: see pasyn_sqlite.lua's).
local discarded = { rows = false, rowcount = -1, lastrowid = false, stream = false, columns = false }

-- M.on_orphan(co, pool), when set, is told of each coroutine `co` that is gone (closed while
-- it waited, or left waiting when its run ended) with a statement submitted to `pool` whose
-- result it never takes: a statement that may have begun a transaction, or may still begin
-- one, that nothing else would end. The Lua layer has it rolled back once it has run.
local function orphaned(co, gate)
    if gate and M.on_orphan then
        M.on_orphan(co, gate.pool)
    end
end

-- A completion nobody waits for any more: free it, and let go of a streamed result it
-- started, or its reader would keep serving nothing else.
local function discard(task, gate)
    if gate then
        local res = core.result(task, gate.pool, discarded)
        local stream = res and res.stream
        if res then
            res.rows, res.stream = false, false -- keep nothing alive
        end
        if stream then
            core.release(stream)
        end
    else
        core.free_task(task)
    end
end

local Handle = {}
Handle.__index = Handle

-- The ready list: coroutines in loop.ready, and at the same position in loop.args what to
-- resume them with, only when there is something (spawn's arguments).
local function push_ready(co, ...)
    local r = loop.ready
    local n = #r + 1
    r[n] = co
    if select("#", ...) > 0 then
        loop.args[n] = pack(...)
    end
end

-- A handle's coroutine has ended once h.results is set: what it returned (one shared empty
-- record when nothing), or with h.failed, its error (results[1]). A handle that callers keep
-- (spawn all, then join all) holds one field when its coroutine returned.
local NO_RESULTS = { n = 0 } -- read only (unpack)

local function finish(h, ok, ...)
    if not ok then
        h.failed = true
        h.results = pack(...)
    elseif select("#", ...) == 0 then
        h.results = NO_RESULTS
    else
        h.results = pack(...)
    end
    loop.live = loop.live - 1
    local joiners = h.joiners
    h.joiners = nil
    for i = 1, joiners and #joiners or 0 do
        push_ready(joiners[i])
    end
    if not ok and not joiners and not h.joined and not h.closed then
        loop.failed[#loop.failed + 1] = h
    end
end

local function after(co, ok, ...)
    if ok and (...) == SUSPEND then -- parked: the usual case, told without asking co_status
        return
    end
    if co_status(co) == "dead" then
        if M.on_end then
            M.on_end(co)
        end
        return finish(members[co], ok, ...)
    end
    push_ready(co) -- a bare coroutine.yield(): let the others run, then go on
end

local end_closed -- below

local function step(co, ...)
    if is_dead(co) then -- closed (coroutine.close) while it was parked
        return end_closed(co)
    end
    return after(co, co_resume(co, ...))
end

-- ---- gates: statements in flight per pool (max_pending) ------------------------------------

-- A gate counts the statements of one pool submitted and not yet completed and holds the
-- callers beyond its bound back until one completes, so that memory stays bounded however many
-- coroutines submit at once:
--   gate = { pool = the core's pool, max = the bound, pending = statements in flight,
--            first, last = the FIFO of tickets of waiting coroutines, gate[first..last],
--            granted = slots given to tickets whose coroutines have not run yet,
--            unsubmitted = slots taken for statements not submitted yet (admit) }
-- A caller takes a slot before it submits (the Lua layer does the common case inline: a slot
-- is free and nobody waits), and the slot is given back when the statement completes: at once
-- to the first waiter, in FIFO order, whose coroutine the scheduler (or its host, through the
-- next dispatch) then resumes.

-- new_gate(pool, max) -> a gate for the core's `pool` (a userdata of core.open) letting at most
-- `max` (a whole number >= 1) of its statements be in flight. One per connection; the Lua
-- thread alone uses it.
function M.new_gate(pool, max)
    return { pool = pool, max = max, pending = 0, first = 1, last = 0, hooks = false,
             granted = 0, unsubmitted = 0 }
end

-- True while `ticket` still waits for a slot: its coroutine was neither abandoned (run ended)
-- nor closed meanwhile.
local function still_waits(ticket)
    local co = ticket[1]
    return waiting[ticket] == co and co_status(co) ~= "dead"
end

-- Forgets a ticket whose coroutine is gone (closed while it waited), as resuming it would have:
-- it no longer counts among the waiters of its host or of the loop.
local function drop_ticket(ticket)
    if waiting[ticket] ~= nil then
        waiting[ticket] = nil
        if hosts[ticket] then
            hosts[ticket] = nil
            host_waits = host_waits - 1
        elseif loop then
            loop.pending = loop.pending - 1
            end_closed(ticket[1])
        end
    end
end

-- A statement of the gate's pool completed (or was never submitted): its slot goes to the
-- first ticket that still waits, else back to the gate. While statements that went past the
-- bound (a transaction owner's, a blocking call's: gate_wait) keep `pending` above it, a slot
-- that comes free is not handed on: it closes the gap instead.
gate_release = function(gate)
    if gate.pending > gate.max then
        gate.pending = gate.pending - 1
        return
    end
    local i, last = gate.first, gate.last
    while i <= last do
        local ticket = gate[i]
        gate[i] = nil
        i = i + 1
        if still_waits(ticket) then
            gate.first = i
            waiting[ticket] = nil -- the slot is its own now: `pending` stays
            granted[ticket] = gate
            gate.granted = gate.granted + 1
            if hosts[ticket] then
                woken[#woken + 1] = ticket
                if not dispatching then
                    core.hub_wake() -- so that the host calls dispatch, which resumes it
                end
            else
                loop.pending = loop.pending - 1
                push_ready(ticket[1])
            end
            return
        end
        drop_ticket(ticket)
    end
    gate.first, gate.last = 1, 0
    gate.pending = gate.pending - 1
end
-- gate_release(gate): the Lua layer gives back the slot it took (admit) for a statement whose
-- submit failed; dispatch gives back the others.
M.gate_release = gate_release

-- A slot given to a ticket whose coroutine will not run any more (its run ended, or it was
-- closed before its turn came) goes on to the next waiter.
local function regrant(ticket)
    local gate = granted[ticket]
    if gate then
        granted[ticket] = nil
        gate.granted = gate.granted - 1
        gate_release(gate)
    end
end

-- The end of a coroutine of the loop that was closed (coroutine.close) while it was parked
-- (on a statement, a slot, a timer, a join), found when it would be resumed, or when nothing
-- else can run: it never runs again. Its handle ends as failed, so that join raises
-- ProgrammingError, but the run does not (whoever closed it knows), and M.on_end is told (its
-- open transaction is rolled back). A slot given to it goes on to the next waiter. True when
-- it ended it; false, doing nothing, for a coroutine that is not dead, or whose end is known
-- already.
end_closed = function(co)
    local h = members[co]
    if h == nil or h.results ~= nil or not is_dead(co) then
        return false
    end
    for ticket in pairs(granted) do
        if ticket[1] == co then
            regrant(ticket)
            break
        end
    end
    if M.on_end then
        M.on_end(co)
    end
    h.closed = true
    finish(h, false, errors.new("ProgrammingError", "the coroutine was closed (coroutine.close) " ..
                                "before it returned"))
    return true
end

-- Blocks the OS thread until the gate has a free slot, for a caller that cannot yield:
-- completions that come meanwhile are drained, their slots given back (this caller's gate
-- keeps its own for this caller, ahead of its waiters: they cannot run before it returns
-- anyway) and the tasks kept for the next dispatch to deliver. Stops waiting, and goes past
-- the bound by its one statement, once a transaction holds the writer: what waits behind it
-- would then wait for a coroutine that cannot run while this one blocks.
local function gate_block(gate)
    local pool = gate.pool
    -- Only slots of statements in flight come back while this call blocks. The others are
    -- held by work of this thread that goes on once the call returns: slots given to
    -- coroutines that have not run yet, and slots taken for statements not submitted yet
    -- (this call runs in between: from a finalizer, or a debug hook).
    while gate.pending - gate.granted - gate.unsubmitted >= gate.max and
          core.txn_owner(pool) == 0 do
        core.poll(-1)
        local list = core.drain()
        core.serve() -- calls of SQL functions defined in Lua: the statements ahead may need them
        for i = 1, list and #list or 0 do
            local task = list[i]
            backlog[#backlog + 1] = task
            local g = task_pools[task]
            if g == gate then
                gate.pending = gate.pending - 1
            elseif g then
                gate_release(g)
            end
        end
    end
    gate.pending = gate.pending + 1
    -- More slots may have come free at once: they go to the waiters.
    while gate.pending < gate.max and gate.first <= gate.last do
        gate.pending = gate.pending + 1
        gate_release(gate)
    end
    if backlog[1] then
        core.hub_wake() -- the loop's next dispatch delivers them
    end
end

-- Takes a slot of `gate` for the statement the caller (`sync`, owner `id`, coroutine `co`, as
-- caller() tells them in pasyn_sqlite.lua) is about to submit, for a caller that found no
-- free slot or others waiting. The owner of the pool's open transaction never waits (the
-- statements it would wait behind may be waiting for its COMMIT), and neither does a blocking
-- call while any transaction is open (see gate_block); they take a slot beyond the bound.
-- Otherwise a coroutine that may yield waits for its turn in FIFO order, and a blocking
-- caller blocks until a slot is free (gate_block).
function M.gate_wait(gate, sync, id, co)
    local i = gate.first
    while i <= gate.last and not still_waits(gate[i]) do -- drop the gone
        drop_ticket(gate[i])
        gate[i] = nil
        i = i + 1
    end
    gate.first = i
    if gate.pending < gate.max and i > gate.last then
        gate.pending = gate.pending + 1
        return
    end
    local owner = core.txn_owner(gate.pool)
    if owner == id or (sync and owner ~= 0) then
        gate.pending = gate.pending + 1
        return
    end
    if sync then
        return gate_block(gate)
    end
    co = co or co_running()
    local ticket = { co }
    gate.last = gate.last + 1
    gate[gate.last] = ticket
    park(ticket, co)
    if granted[ticket] then -- it runs: the slot is used
        granted[ticket] = nil
        gate.granted = gate.granted - 1
    end
end

-- How many tickets wait in the gate now (some may belong to coroutines gone meanwhile).
function M.gate_waiting(gate)
    return gate.last - gate.first + 1
end

-- Resumes the waiter of `task` (a completion just drained, its slot already given back), or
-- discards the task when nobody waits for it any more; n and failure as dispatch counts them.
local function deliver(task, n, failure)
    local co, gate, h = waiting[task], task_pools[task], hosts[task]
    if gate and gate.hooks then
        run_hooks(gate, task)
    end
    waiting[task], task_pools[task] = nil, nil
    local gone -- the coroutine that waited for it, closed or left behind by its run
    if co then -- it no longer waits, whether it is resumed below or gone
        if h then
            hosts[task] = nil
            host_waits = host_waits - 1
        else
            loop.pending = loop.pending - 1
        end
        if is_dead(co) then -- closed (coroutine.close) while it waited
            gone, co = co, nil
        end
    else
        co = expected[task]
        expected[task] = nil
        if co and co_status(co) ~= "dead" then
            arrived[task], task_pools[task] = co, gate -- for its await (see expect)
            return n, failure
        end
        gone, co = co, nil
    end
    if not co then
        discard(task, gate)
        if gone then
            orphaned(gone, gate)
            if not h then
                end_closed(gone)
            end
        end
    elseif h then
        n = n + 1
        local ok, err = pcall(h.resume, co)
        if not ok and failure == nil then
            failure = err
        end
    else
        n = n + 1
        step(co, task) -- (see await)
    end
    return n, failure
end

-- Delivers every pending completion to the coroutine waiting for it, and resumes the host's
-- coroutines given a slot of a gate meanwhile; returns how many coroutines it resumed. Every
-- completion is delivered before an error that a host's resume raised is re-raised (the
-- first one, when several did).
local drain_list = {} -- the array dispatch drains into, again each time (core.drain)

function M.dispatch()
    -- (a dispatch under way iterates `drain_list`: one run from inside it drains into a new table)
    local list = core.drain(not dispatching and drain_list or nil)
    -- Calls of SQL functions defined in Lua, after the drain (which clears the descriptor):
    -- a call queued before it is taken here, one queued after it writes the descriptor again.
    core.serve()
    if not list and not backlog[1] and not woken[1] then
        return 0
    end
    dispatching = true
    local n, failure = 0, nil
    if backlog[1] then -- drained by a caller that blocked for a slot: slots given back then
        local drained = backlog
        backlog = {}
        for i = 1, #drained do
            M.undelivered = #drained - i + (list and #list or 0)
            n, failure = deliver(drained[i], n, failure)
        end
    end
    local count = list and #list or 0
    for i = 1, count do
        M.undelivered = count - i
        local task = list[i]
        local gate = task_pools[task]
        if gate then -- its slot first: the waiter resumed below may submit again at once
            if gate.first > gate.last then
                gate.pending = gate.pending - 1
            else
                gate_release(gate)
            end
        end
        -- deliver's usual case, inline: a coroutine of the loop waits for it, no hook runs
        local co = waiting[task]
        if co ~= nil and hosts[task] == nil and not (gate and gate.hooks) and not is_dead(co) then
            waiting[task], task_pools[task] = nil, nil
            loop.pending = loop.pending - 1
            n = n + 1
            after(co, co_resume(co, task)) -- (see await)
        else
            n, failure = deliver(task, n, failure)
        end
    end
    local k = 1
    while woken[k] do -- (resuming one may give a slot to another: it joins the list)
        local ticket = woken[k]
        k = k + 1
        local h = hosts[ticket]
        hosts[ticket] = nil
        host_waits = host_waits - 1
        if co_status(ticket[1]) == "dead" then -- closed since it was given the slot
            regrant(ticket)
        else
            n = n + 1
            local ok, err = pcall(h.resume, ticket[1])
            if not ok and failure == nil then
                failure = err
            end
        end
    end
    for i = 1, k - 1 do
        woken[i] = nil
    end
    -- Completions kept for a coroutine that then ended without awaiting them
    if next(arrived) ~= nil then
        for task, co in pairs(arrived) do
            if co_status(co) == "dead" then
                arrived[task] = nil
                orphaned(co, task_pools[task])
                discard(task, task_pools[task])
                task_pools[task] = nil
            end
        end
    end
    dispatching = false
    M.undelivered = 0
    if failure ~= nil then
        error(failure, 0)
    end
    return n
end

local function spawn(fn, ...)
    -- The handle does not refer to its coroutine: on Lua 5.1 and LuaJIT a weak-keyed table
    -- whose value refers to its key would keep both alive for ever.
    local co = co_create(fn)
    -- Its fields (results and failed, see finish; joiners and joined, made by join) come
    -- when they are set: an empty table weighs least while the coroutine runs or waits.
    local h = setmetatable({}, Handle)
    members[co] = h
    loop.live = loop.live + 1
    push_ready(co, ...)
    return h
end

-- sqlite.spawn(fn, ...) -> a handle: starts fn(...) as another coroutine of the running
-- scheduler. Raises ProgrammingError outside sqlite.run, and for an fn that is not a function.
function M.spawn(fn, ...)
    if not loop then
        misuse("sqlite.spawn: no scheduler is running (call it inside sqlite.run)")
    end
    if type(fn) ~= "function" then
        misuse("sqlite.spawn: argument 'fn' must be a function, got " .. type(fn))
    end
    return spawn(fn, ...)
end

-- handle:join() -> the coroutine's results, once it has ended; raises its error. Raises
-- ProgrammingError for a self that is not a handle (h.join() without the colon), from
-- anywhere but another coroutine of the scheduler, and from the coroutine itself.
function Handle:join()
    if getmetatable(self) ~= Handle then
        misuse("handle:join: argument 'self' must be a handle of sqlite.spawn (call it with " ..
               "a colon: handle:join()), got " .. type(self))
    end
    self.joined = true
    if self.results == nil then -- not ended
        if not (in_loop(co_running()) and isyieldable()) then
            misuse("handle:join: only a coroutine of the scheduler can wait for another")
        end
        if members[co_running()] == self then
            misuse("handle:join: a coroutine cannot wait for itself")
        end
        local joiners, co = self.joiners or {}, co_running()
        self.joiners = joiners
        joiners[#joiners + 1] = co
        loop.joining[co] = true -- (see end_closed_parked)
        repeat -- (resumed by other code than the loop's, it goes on waiting; see await)
            co_yield(SUSPEND)
        until self.results ~= nil or not in_loop(co)
        if not loop then -- resumed by hand after its run ended
            misuse("handle:join: the sqlite.run it waited in ended before the coroutine it joins")
        end
        loop.joining[co] = nil
    end
    if self.failed then
        error(self.results[1], 0)
    end
    return unpack(self.results, 1, self.results.n)
end

-- sqlite.sleep(seconds): suspends the calling coroutine of the scheduler for `seconds` (a
-- number; 0, negative or NaN: it lets the others run and goes on); blocks anywhere else.
-- Raises ProgrammingError for seconds that are not a number.
function M.sleep(seconds)
    if type(seconds) ~= "number" then
        misuse("sqlite.sleep: argument 'seconds' must be a number, got " .. type(seconds))
    end
    if seconds ~= seconds or seconds < 0 then -- NaN or negative: no wait at all
        seconds = 0
    end
    local co = co_running()
    if not (in_loop(co) and isyieldable()) then
        -- Not a coroutine of the built-in scheduler (a host's has the host's own timers):
        -- block.
        if seconds > 0 then
            core.sleep(seconds)
        end
        return
    end
    local timers, when = loop.timers, core.now() + seconds
    local i = #timers + 1
    while i > 1 and timers[i - 1][1] > when do
        timers[i] = timers[i - 1]
        i = i - 1
    end
    timers[i] = { when, co }
    repeat -- (resumed by other code than the loop's, it goes on waiting; see await)
        co_yield(SUSPEND)
    until core.now() >= when or not in_loop(co) -- (or its run ended: anybody may resume it)
end

local function run_ready()
    local ready, args = loop.ready, loop.args
    if #ready == 0 then
        return
    end
    loop.ready, loop.args = {}, {} -- what the coroutines below make ready goes there
    M.ready = loop.ready
    local n = #ready
    for i = 1, n do
        loop.left = n - i -- (M.idle reads it)
        local a = args[i]
        if a then
            step(ready[i], unpack(a, 1, a.n))
        else
            step(ready[i])
        end
    end
    loop.left = 0
end

local function wake_timers(now)
    local timers, n = loop.timers, 0
    while n < #timers and timers[n + 1][1] <= now do
        n = n + 1
        push_ready(timers[n][2])
    end
    if n > 0 then
        for i = 1, #timers do
            timers[i] = timers[i + n]
        end
    end
end

-- Drops what the loop's coroutines wait for: their completions are discarded when they come.
local function abandon()
    for key, co in pairs(waiting) do -- tasks, and tickets of gates (no statement yet)
        if members[co] then
            waiting[key] = nil
            orphaned(co, task_pools[key])
        end
    end
    for task, co in pairs(expected) do
        if members[co] then
            expected[task] = nil
            orphaned(co, task_pools[task])
        end
    end
    for task, co in pairs(arrived) do
        if members[co] then
            arrived[task] = nil
            orphaned(co, task_pools[task])
            discard(task, task_pools[task])
            task_pools[task] = nil
        end
    end
    -- Slots given to the loop's coroutines that will not run now: to the other waiters (a
    -- host's), or back to their gates.
    local unused = {}
    for ticket in pairs(granted) do
        if members[ticket[1]] then
            unused[#unused + 1] = ticket
        end
    end
    for i = 1, #unused do
        regrant(unused[i])
    end
    -- What the coroutines left behind own ends with the run: a transaction one of them holds
    -- is rolled back now (M.on_end), not once its guard is collected, and the writer is free
    -- for what comes next (a blocking call fails at once while another owner holds it).
    if M.on_end then
        for co, h in pairs(members) do
            if h.results == nil then
                M.on_end(co)
            end
        end
    end
end

-- Ends the coroutines of the loop closed while they sleep or join (end_closed), which nothing
-- else finds before their timer fires or their joinee ends, and drops their timers (which
-- would still set how long the loop waits): every joiner, and up to TIMERS_LOOKED timers a
-- call, going on from where the last call stopped, while something may wait for them
-- (statements in flight, which may wait behind a transaction one of them owns; joiners) or the
-- loop would wait LONG_WAIT seconds or more for its next timer. True when it ended one. The
-- loop calls it before it waits.
local TIMERS_LOOKED, LONG_WAIT = 256, 0.01
local function end_closed_parked()
    local found = false
    for co in pairs(loop.joining) do
        if is_dead(co) then
            loop.joining[co] = nil
            found = end_closed(co) or found
        end
    end
    local timers = loop.timers
    local n = #timers
    if n == 0 or not (loop.pending > 0 or next(loop.joining) ~= nil or found or
                      timers[1][1] - core.now() >= LONG_WAIT) then
        return found
    end
    local i, dead = loop.timer_looked, false
    for _ = 1, n < TIMERS_LOOKED and n or TIMERS_LOOKED do
        i = i % n + 1
        dead = dead or is_dead(timers[i][2])
    end
    loop.timer_looked = i
    if dead then -- every sleeper closed, ended, and the others' timers kept in order
        local kept = 0
        for k = 1, n do
            local timer = timers[k]
            if is_dead(timer[2]) then
                found = end_closed(timer[2]) or found
            else
                kept = kept + 1
                timers[kept] = timer
            end
        end
        for k = kept + 1, n do
            timers[k] = nil
        end
    end
    return found
end

-- idle() -> true when the running loop has nothing to do but wait for the running coroutine
-- (which the Lua layer has found alone on the ready list): no coroutine left to run in this
-- round, no statement of the loop in flight, no timer, no host's coroutine waiting, and no
-- coroutine closed while it waited in join (the loop ends it, and rolls back what it owned,
-- when it next goes round). The core calls it (core.set_idle_test) for a statement that
-- cannot run at once. Inside sqlite.run only.
function M.idle()
    if not (loop.pending == 0 and loop.left == 0 and loop.timers[1] == nil and
            host_waits == 0) then
        return false
    end
    for co in pairs(loop.joining) do
        if is_dead(co) then
            return false
        end
    end
    return true
end

-- Ends every coroutine of the loop closed while it was parked where nothing will resume it
-- (end_closed); true when there was one.
local function end_all_closed()
    local closed = {}
    for co, h in pairs(members) do
        if h.results == nil and is_dead(co) then
            closed[#closed + 1] = co
        end
    end
    for i = 1, #closed do
        end_closed(closed[i])
    end
    return closed[1] ~= nil
end

-- sqlite.run(fn, ...) -> fn's results: runs fn(...) as a coroutine of the built-in scheduler
-- until it and everything it spawned are done; re-raises fn's error (or an unjoined spawned
-- coroutine's). Raises ProgrammingError inside a running sqlite.run, for an fn that is not a
-- function, and when every coroutine waits and nothing can wake them.
function M.run(fn, ...)
    if loop then
        misuse("sqlite.run: a scheduler is running already (use sqlite.spawn inside it)")
    end
    if type(fn) ~= "function" then
        misuse("sqlite.run: argument 'fn' must be a function, got " .. type(fn))
    end
    -- joining: co -> true while it waits in join; left: coroutines of run_ready's round
    -- still to run after the running one
    loop = { live = 0, pending = 0, ready = {}, args = {}, timers = {}, failed = {},
             joining = {}, timer_looked = 0, left = 0 }
    M.ready = loop.ready
    M.loop_ids = setmetatable({}, { __mode = "k" })
    local main = spawn(fn, ...)
    local ok, err = pcall(function()
        while loop.live > 0 and (main.results == nil or not main.failed) do
            M.pausing = false
            if loop.timers[1] then
                wake_timers(core.now())
            end
            run_ready()
            M.dispatch()
            if #loop.ready == 0 and loop.live > 0 and (main.results == nil or not main.failed) and
               not end_closed_parked() then
                local timers = loop.timers
                local timeout = timers[1] and math.max(0, timers[1][1] - core.now()) or -1
                if loop.pending > 0 then
                    core.poll(timeout)
                elseif timeout >= 0 then
                    core.sleep(timeout)
                elseif not end_all_closed() then -- (if some were, what joins them goes on)
                    error(errors.new("ProgrammingError", "sqlite.run: every coroutine waits " ..
                          "and nothing can wake them (a coroutine joins one that waits for it?)"), 0)
                end
            end
        end
    end)
    if loop.live > 0 then
        abandon()
    end
    local failed = loop.failed
    loop, M.loop_ids, M.ready = nil, NO_IDS, NOT_RUNNING
    members = setmetatable({}, { __mode = "k" }) -- (the next run's coroutines alone)
    if not ok then
        error(err, 0)
    end
    if main.failed then
        error(main.results[1], 0)
    end
    for i = 1, #failed do
        if not failed[i].joined then
            error(failed[i].results[1], 0)
        end
    end
    return unpack(main.results, 1, main.results.n)
end

return M
