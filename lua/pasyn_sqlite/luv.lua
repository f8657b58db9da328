-- pasyn_sqlite.luv: pasyn_sqlite under luv's loop (uv.run). A query made inside a coroutine
-- yields, and a poll callback on sqlite.fd() resumes it when its completion arrives; the
-- loop runs its other callbacks (timers, sockets) meanwhile.
--
--     local uv = require "luv"
--     local sqlite = require "pasyn_sqlite.luv"   -- the table of require "pasyn_sqlite"
--     local conn = sqlite.connect("app.db")
--     coroutine.wrap(function()
--         print(conn:execute("SELECT count(*) FROM t"):fetchone()[1])
--         conn:close()
--     end)()
--     uv.run()                                     -- returns once the coroutine is done
--
-- require "pasyn_sqlite.luv" -> the module table of "pasyn_sqlite", after sqlite.set_host has
-- made luv the host loop of this Lua state (replacing any host set before; one host per
-- state). Raises what require "luv" raises, or an error when uv.new_poll refuses sqlite.fd().
-- Everything below runs in the thread of the Lua state, which runs uv.run().
--
-- Which calls yield: those made inside any coroutine other than the main one, where
-- coroutine.isyieldable says so (the usual luv style: a coroutine yields inside a call and a
-- callback resumes it). Calls from the main chunk, from a luv callback itself, or from a
-- non-yieldable spot block the thread until their result is there, and work all the same.
-- A coroutine you resume by hand for other purposes (a generator) must not query: its
-- queries would yield to you.
--
-- The loop's lifetime: one poll handle on sqlite.fd(), active only while some coroutine
-- waits for a completion; stopped (not closed: an inactive handle does not keep the loop
-- alive) as soon as none waits, so that uv.run() returns when the program's own work is done.
-- No timer and no polling of ours.
--
-- Errors: a query's error is raised inside the coroutine as an error object, as anywhere.
-- An error the coroutine does not catch, raised after the poll callback resumed it, comes out
-- of that callback, as an error in any luv callback does: luv 1.44 prints "Uncaught Error"
-- and a traceback on stderr and exits the process (status 255); a host such as luvit reports
-- it its own way. A string error first gets the coroutine's own traceback appended (the
-- callback's stack says nothing of where the coroutine failed); an error object is raised as
-- it is. When several coroutines fail in one dispatch, every one of them is resumed first and
-- the first error is raised. Catch errors inside the coroutine (pcall) to carry on.

local uv = require "luv"
local sqlite = require "pasyn_sqlite"
local errors = require "pasyn_sqlite.errors"
local sched = require "pasyn_sqlite.scheduler"

local co_yield, co_resume, co_status = coroutine.yield, coroutine.resume, coroutine.status
local traceback = debug.traceback

local poll, poll_err = uv.new_poll(sqlite.fd())
if not poll then
    error(errors.new("InterfaceError", "pasyn_sqlite.luv: uv.new_poll cannot watch sqlite.fd(): " ..
                     tostring(poll_err)), 2)
end

-- Called by luv when sqlite.fd() polls readable (perhaps spuriously): resumes the waiters of
-- every pending completion. Raises the first error a resumed coroutine raised, or luv's
-- polling error.
local function on_readable(err)
    if err then
        error(errors.new("InterfaceError", "pasyn_sqlite.luv: polling sqlite.fd() failed: " ..
                         tostring(err)), 0)
    end
    sqlite.dispatch()
end

-- suspend(co), inside `co`: activates the poll handle if it is not (the first waiter), and
-- yields. Returns when resumed (by resume below, or by anybody else: the library then calls
-- it again). The poll handle is active while any coroutine waits (sched.host_waits() > 0).
local function suspend()
    if not poll:is_active() then
        local ok, err = poll:start("r", on_readable)
        if not ok then
            error(errors.new("InterfaceError", "pasyn_sqlite.luv: cannot poll sqlite.fd(): " ..
                             tostring(err)), 0)
        end
    end
    co_yield()
end

-- resume(co), from sqlite.dispatch() in the poll callback: `co`'s completion is there. Stops
-- the poll handle when no other coroutine waits (before resuming `co`, which may start it
-- again), then resumes `co`; a coroutine that is dead by now (closed while it waited) is left
-- alone. Raises the error `co` raises (see the header).
local function resume(co)
    if sched.host_waits() == 0 then
        poll:stop()
    end
    if co_status(co) ~= "suspended" then
        return
    end
    local ok, err = co_resume(co)
    if not ok then
        if type(err) == "string" then
            err = traceback(co, err)
        end
        error(err, 0)
    end
end

-- can_yield is the default of set_host: any coroutine but the main one, where it may yield.
sqlite.set_host({ suspend = suspend, resume = resume })

return sqlite
