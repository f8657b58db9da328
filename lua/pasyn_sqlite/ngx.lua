-- pasyn_sqlite.ngx: the module for OpenResty (ngx_lua). A query in a rewrite, access, content,
-- ssl or timer handler, or in an ngx.thread, yields the light thread and the nginx worker serves
-- other requests meanwhile; in phases that cannot yield (init_worker, set, header and body
-- filters, log, balancer) the call blocks, as in a plain script.
--
-- How a completion wakes a request. ngx_lua 0.10.23 resumes a light thread only for an event
-- it registered itself: a C function's own lua_yield hangs the request, and no API watches an
-- arbitrary descriptor. So one light thread per worker, the dispatcher (an ngx.timer), connects
-- a cosocket to a unix-domain socket the completion hub listens on (pasyn_hub_listen) and
-- reads it; the hub writes a byte there when completions arrive, the dispatcher drains them
-- (sqlite.dispatch) and posts the semaphore each waiting request sleeps on. The dispatcher
-- runs only while requests wait, and lingers LINGER seconds after the last one, so a busy
-- worker pays for its start once; the linger ends through one timer that wakes the hub
-- (pasyn_hub_wake) rather than a read timeout, which ngx_lua would log as an error. After
-- that an idle worker is woken by nothing of ours.
-- Alternatives measured and why not (README, "OpenResty"): a polling ngx.timer adds up to a
-- tick of latency and idle wake-ups; ngx.run_worker_thread needs a thread_pool directive and
-- a thread of nginx's pool blocked per wait.
--
-- Use: local sqlite = require "pasyn_sqlite.ngx" (the same table as require "pasyn_sqlite"),
-- in init_by_lua* or anywhere; open one Connection per worker, on first use (connect refuses
-- to run in the master, in init_by_lua*: its threads would not survive the fork).

local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"
local errors = require "pasyn_sqlite.errors"
local semaphore = require "ngx.semaphore"
local host_waits = require("pasyn_sqlite.scheduler").host_waits -- requests waiting now

local ngx = ngx
local get_phase, timer_at, exiting, log = ngx.get_phase, ngx.timer.at, ngx.worker.exiting, ngx.log
local tcp, now = ngx.socket.tcp, ngx.now

-- Phases whose handlers may yield the light thread on a semaphore (ngx_lua 0.10.23 docs of
-- ngx.semaphore's wait: "rewrite_by_lua*, access_by_lua*, content_by_lua*, ssl_certificate_by_lua*,
-- ssl_session_fetch_by_lua*, ngx.timer.*").
local YIELDS = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}
local LINGER = 0.2         -- seconds the dispatcher stays after the last wait
local WAIT = 3600          -- the socket read's own timeout (seconds): not reached in practice
local CHECK = 1            -- seconds a request waits on its semaphore before it looks whether
                           -- a dispatcher runs at all (nginx may not run our timer:
                           -- lua_max_running_timers), and dispatches itself meanwhile

local semas = setmetatable({}, { __mode = "k" })   -- coroutine -> its semaphore
local OWNERS = {}          -- the key, in a request's ngx.ctx, of its owners (h.owner, below)
local running = false      -- the dispatcher is running or scheduled
local serving = false      -- the dispatcher's timer has started
local scheduled_at = 0     -- when start() scheduled it (ngx.now())
local lingering = false    -- the timer that ends a linger is pending

local start

-- Logs a warning the first time each `what` happens in this worker.
local warned = {}
local function warn_once(what, ...)
    if not warned[what] then
        warned[what] = true
        log(ngx.WARN, "pasyn_sqlite: ", what, ...)
    end
end

-- Wakes the dispatcher once `after` seconds have passed, so it can see that its linger is
-- over; one such timer at a time. False when no timer can be made (then no linger).
local function end_linger_in(after)
    if not lingering then
        lingering = timer_at(after, function()
            lingering = false
            core.hub_wake()
        end) and true or false
    end
    return lingering
end

-- Connects `sock` to a fresh socket of the hub, which signals it from then on; true, or nil
-- and a message.
local function connect_to_hub(sock)
    local path, err = core.hub_listen()
    if not path then
        return nil, err
    end
    local ok, cerr = sock:connect("unix:" .. path)
    if not ok then
        return nil, cerr
    end
    return core.hub_accept()
end

-- Reads the hub's socket and dispatches until nothing waits (and LINGER passed), the worker
-- exits, or the socket fails. Raises what sqlite.dispatch raises.
local function serve(sock)
    sock:settimeout(WAIT * 1000)
    local idle_since
    while true do
        sqlite.dispatch()
        if host_waits() > 0 then
            idle_since = nil
        else
            local t = now()
            idle_since = idle_since or t
            local left = LINGER - (t - idle_since)
            if left <= 0.001 or exiting() or not end_linger_in(left) then
                return
            end
        end
        local data, err = sock:receiveany(4096)
        if not data and err ~= "timeout" then
            log(ngx.ERR, "pasyn_sqlite: completion socket: ", err)
            return
        end
    end
end

-- Where no socket can be set up: drains every millisecond while requests wait.
local function serve_by_polling()
    while host_waits() > 0 do
        sqlite.dispatch()
        ngx.sleep(0.001)
    end
end

-- The dispatcher's light thread (an ngx.timer): serves until nothing waits, then hands the
-- signal back to sqlite.fd() alone; starts a successor when requests wait again by then (after
-- an error, say: logged).
local function dispatcher()
    serving = true
    local sock = tcp()
    local connected, err = connect_to_hub(sock)
    local ok, serr
    if connected then
        ok, serr = pcall(serve, sock)
    else
        warn_once("no completion socket, draining every 1 ms: ", err)
        ok, serr = pcall(serve_by_polling)
    end
    -- No yield from here to the end: a wait that starts after this sees running == false.
    core.hub_unaccept()
    sock:close()
    running, serving = false, false
    if not ok then
        log(ngx.ERR, "pasyn_sqlite: dispatcher: ", tostring(serr))
    end
    if host_waits() > 0 then
        start()
    end
end

start = function()
    running, scheduled_at = true, now()
    local ok, err = timer_at(0, dispatcher)
    if not ok then
        running = false
        return nil, err
    end
    return true
end

local function suspend(co)
    if not running then
        local ok, err = start()
        if not ok then
            -- No timer to dispatch (lua_max_pending_timers reached, or the worker is going
            -- away): wait here, blocking the worker, rather than never.
            warn_once("cannot start the dispatcher, blocking: ", err)
            core.poll(0.01)
            sqlite.dispatch()
            return
        end
    end
    local sema = semas[co]
    if not sema then
        sema = semaphore.new()
        semas[co] = sema
    end
    if not sema:wait(CHECK) then
        -- A long statement, or no dispatcher: nginx accepts a timer it then fails to run
        -- when lua_max_running_timers are busy. Let the next wait schedule a new one, and
        -- deliver what has come meanwhile.
        if running and not serving and now() - scheduled_at >= CHECK then
            warn_once("the dispatcher's timer did not run (lua_max_running_timers?)", "")
            running = false
        end
        sqlite.dispatch()
    end
end

local function resume(co)
    local sema = semas[co]
    if sema then
        sema:post(1)
    end
end

-- A handler of a phase in YIELDS may yield, unless a C call lies in between (a require of a
-- module that queries at its top level, a table.sort comparator, a gsub callback): then the
-- call blocks instead.
local isyieldable = core.isyieldable
-- What owns the transactions a coroutine begins: ngx_lua reuses a request's coroutine for
-- later requests, so a coroutine and its request together, kept in the request's ngx.ctx; a
-- transaction a request leaves open is rolled back when its coroutine serves another request
-- or the request's context is collected. In phases without a request context (init_worker,
-- and the ssl phases, where ngx.ctx is not available in ngx_lua 0.10.23): the coroutine.
local CTX_PHASES = {
    set = true, rewrite = true, access = true, content = true, header_filter = true,
    body_filter = true, log = true, timer = true, balancer = true,
}
local function owner(co)
    if not CTX_PHASES[get_phase()] then
        return co
    end
    local ctx = ngx.ctx
    local owners = ctx[OWNERS]
    if not owners then
        owners = setmetatable({}, { __mode = "k" })
        ctx[OWNERS] = owners -- luacheck: ignore 122 (ngx.ctx is the request's table)
    end
    local key = owners[co]
    if not key then
        key = {}
        owners[co] = key
    end
    return key
end

sqlite.set_host {
    can_yield = function()
        return YIELDS[get_phase()] == true and isyieldable()
    end,
    owner = owner,
    suspend = suspend,
    resume = resume,
}

-- connect in the master (init_by_lua*) would start threads that the forked workers do not
-- have: refused with a ProgrammingError naming the phase.
local connect = sqlite.connect
sqlite.connect = function(database, options)
    if get_phase() == "init" then
        error(errors.new("ProgrammingError", "connect: not in init_by_lua* (the master " ..
              "process); connect in the workers, e.g. on first use or in init_worker_by_lua*"), 2)
    end
    return connect(database, options)
end

return sqlite
