-- The protocol for host event loops (sqlite.set_host, sqlite.fd, sqlite.dispatch): which
-- coroutines yield, how they are resumed, what dispatch does with errors, and that everything
-- else keeps blocking or running under the built-in scheduler.
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"
local support = require "support"

-- Runs the host's loop by hand until done() is true: waits for the fd (through the core's
-- poll, bounded) and dispatches. Returns how many coroutines dispatch resumed.
local function drive(done)
    local resumed, deadline = 0, core.now() + 30
    while not done() do
        assert(core.now() < deadline, "the host loop did not finish in 30 s")
        core.poll(0.1)
        resumed = resumed + sqlite.dispatch()
    end
    return resumed
end

describe("a host loop (sqlite.set_host)", function()
    local conn
    before_each(function()
        conn = sqlite.connect(":memory:", { inline_reads = false }) -- every query yields
        conn:execute("CREATE TABLE t(x INTEGER)")
    end)
    after_each(function()
        sqlite.set_host(nil)
        conn:close()
    end)

    it("with the defaults, a coroutine's query yields and dispatch resumes it with its result", function()
        sqlite.set_host {}
        local got
        local co = coroutine.create(function()
            got = conn:execute("SELECT 40 + 2"):fetchone()[1]
        end)
        assert.is_true(coroutine.resume(co))
        assert.are.equal("suspended", coroutine.status(co))
        assert.is_nil(got)
        assert.are.equal(1, drive(function() return got ~= nil end))
        assert.are.equal(42, got)
        assert.are.equal("dead", coroutine.status(co))
    end)

    it("100 coroutines querying at once each get their own answer", function()
        sqlite.set_host {}
        local answers, finished = {}, 0
        for i = 1, 100 do
            local co = coroutine.create(function()
                conn:execute("INSERT INTO t VALUES (?)", { i })
                answers[i] = conn:execute("SELECT ? * 2", { i }):fetchone()[1]
                finished = finished + 1
            end)
            assert(coroutine.resume(co))
        end
        drive(function() return finished == 100 end)
        for i = 1, 100 do
            assert.are.equal(i * 2, answers[i])
        end
        assert.are.equal(5050, conn:execute("SELECT sum(x) FROM t"):fetchone()[1])
    end)

    it("a coroutine the host says cannot yield blocks, and the main thread blocks", function()
        sqlite.set_host { can_yield = function() return false end }
        local got
        local co = coroutine.create(function()
            got = conn:execute("SELECT 7"):fetchone()[1]
        end)
        assert.is_true(coroutine.resume(co))
        assert.are.equal("dead", coroutine.status(co))
        assert.are.equal(7, got)
        sqlite.set_host {}
        assert.are.equal(8, conn:execute("SELECT 8"):fetchone()[1]) -- main thread: blocks
    end)

    it("a resume that does not come from dispatch suspends the coroutine again", function()
        sqlite.set_host {}
        local got
        local co = coroutine.create(function()
            got = conn:execute("SELECT 1 + 1"):fetchone()[1]
        end)
        assert.is_true(coroutine.resume(co))
        for _ = 1, 3 do -- the host's own loop resumes it by mistake, before the completion
            assert.is_true(coroutine.resume(co))
        end
        drive(function() return got ~= nil end)
        assert.are.equal(2, got)
    end)

    it("calls the host's suspend and resume with the waiting coroutine", function()
        local parked, log = {}, {}
        sqlite.set_host {
            suspend = function(co)
                log[#log + 1] = "suspend"
                parked[co] = true
                coroutine.yield()
            end,
            resume = function(co)
                log[#log + 1] = "resume"
                assert(parked[co], "resume of a coroutine that was not suspended")
                parked[co] = nil
                assert(coroutine.resume(co))
            end,
        }
        local got
        local co = coroutine.create(function()
            got = conn:execute("SELECT 'x'"):fetchone()[1]
        end)
        assert(coroutine.resume(co))
        drive(function() return got ~= nil end)
        assert.are.equal("x", got)
        assert.are.same({ "suspend", "resume" }, log)
    end)

    it("dispatch delivers every completion before it re-raises a resumed coroutine's error", function()
        sqlite.set_host {}
        local finished, cos = 0, {}
        local function start(fail)
            local co = coroutine.create(function()
                conn:execute("SELECT 1"):fetchone()
                if fail then
                    error("boom " .. fail, 0)
                end
                finished = finished + 1
            end)
            assert(coroutine.resume(co))
            cos[#cos + 1] = co
        end
        start(1)
        for _ = 1, 5 do
            start(nil)
        end
        start(2)
        local raised = {}
        local deadline = core.now() + 30
        local function all_dead()
            for _, co in ipairs(cos) do
                if coroutine.status(co) ~= "dead" then
                    return false
                end
            end
            return true
        end
        while not all_dead() do
            assert(core.now() < deadline, "not every coroutine was resumed")
            core.poll(0.1)
            local ok, err = pcall(sqlite.dispatch)
            if not ok then
                raised[#raised + 1] = err
            end
        end
        assert.are.equal(5, finished)
        -- One error per dispatch call that met any: the first of that call.
        assert.is_true(#raised >= 1 and #raised <= 2)
        for _, err in ipairs(raised) do
            assert.is_truthy(err == "boom 1" or err == "boom 2", tostring(err))
        end
    end)

    it("a statement's error reaches the hosted coroutine as an error object", function()
        sqlite.set_host {}
        local err
        local co = coroutine.create(function()
            local ok, e = pcall(conn.execute, conn, "SELECT * FROM missing")
            assert(not ok)
            err = e
        end)
        assert(coroutine.resume(co))
        drive(function() return err ~= nil end)
        assert.is_true(sqlite.is_error(err))
        assert.are.equal("OperationalError", err.kind)
        assert.matches("no such table", err.message)
    end)

    it("a hosted coroutine can close the connection", function()
        sqlite.set_host {}
        local other = sqlite.connect(":memory:", { inline_reads = false })
        local closed = false
        local co = coroutine.create(function()
            other:execute("SELECT 1")
            other:close()
            closed = other.closed
        end)
        assert(coroutine.resume(co))
        drive(function() return closed end)
        assert.is_true(other.closed)
    end)

    it("coroutines of the built-in scheduler still wait there while a host is set", function()
        local resumed_by_host = 0
        sqlite.set_host {
            resume = function(co)
                resumed_by_host = resumed_by_host + 1
                assert(coroutine.resume(co))
            end,
        }
        local a, b = sqlite.run(function()
            local h = sqlite.spawn(function()
                return conn:execute("SELECT 1"):fetchone()[1]
            end)
            return conn:execute("SELECT 2"):fetchone()[1], h:join()
        end)
        assert.are.equal(2, a)
        assert.are.equal(1, b)
        assert.are.equal(0, resumed_by_host)
    end)

    it("set_host(nil) makes calls block again and returns the host it replaces", function()
        local h = {}
        assert.is_nil(sqlite.set_host(h))
        assert.is_table(sqlite.set_host(nil))
        local got
        local co = coroutine.create(function()
            got = conn:execute("SELECT 3"):fetchone()[1]
        end)
        assert.is_true(coroutine.resume(co))
        assert.are.equal(3, got)
    end)

    it("refuses a host that is not a table of functions, naming what is wrong", function()
        local err = support.raises("ProgrammingError", sqlite.set_host, 42)
        assert.are.equal("set_host: argument 'h' must be nil or a table of functions, got number",
                         err.message)
        err = support.raises("ProgrammingError", sqlite.set_host, { resume = true })
        assert.are.equal("set_host: h.resume must be a function, got boolean", err.message)
    end)

    it("sqlite.sleep in a hosted coroutine blocks (the host has its own timers), and a second "
       .. "close() from another hosted coroutine waits for the first", function()
        sqlite.set_host {}
        local other = sqlite.connect(":memory:", { inline_reads = false })
        local slept, closed = nil, 0
        local function closer()
            other:execute("SELECT 1")
            other:close()
            closed = closed + 1
        end
        local co = coroutine.create(function()
            local t0 = core.now()
            sqlite.sleep(0.02)
            slept = core.now() - t0
        end)
        assert(coroutine.resume(co))
        assert.are.equal("dead", coroutine.status(co)) -- it blocked: no yield
        assert.is_true(slept >= 0.015)
        assert(coroutine.resume(coroutine.create(closer)))
        assert(coroutine.resume(coroutine.create(closer)))
        drive(function() return closed == 2 end)
        assert.is_true(other.closed)
    end)

    it("h.owner scopes transactions: a coroutine that works for another owner does not join "
       .. "the transaction the one before left open, which is rolled back", function()
        local current
        sqlite.set_host { can_yield = function() return false end, -- every call blocks
                          owner = function() return current end }
        local co = coroutine.create(function()
            current = {} -- the first piece of work (a request, say) on this coroutine
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t VALUES (1)")
            local first = conn.in_transaction
            current = {} -- the same coroutine, reused for the next one
            local second = conn.in_transaction
            conn:execute("INSERT INTO t VALUES (2)")
            return first, second, conn.in_transaction
        end)
        local ok, first, second, after = coroutine.resume(co)
        assert.is_true(ok, tostring(first))
        assert.is_true(first)
        assert.is_false(second)
        assert.is_false(after)
        assert.are.same({ { 2, n = 1 } }, conn:execute("SELECT x FROM t"):fetchall())
    end)

    it("h.owner: a transaction whose owner is collected is rolled back", function()
        local current = {}
        sqlite.set_host { can_yield = function() return false end,
                          owner = function() return current end }
        local co = coroutine.create(function()
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t VALUES (1)")
        end)
        assert(coroutine.resume(co))
        current = nil -- the owner's work is over; nothing else refers to it
        collectgarbage()
        collectgarbage()
        conn:execute("INSERT INTO t VALUES (2)") -- the main thread: blocks, and is not refused
        assert.are.same({ { 2, n = 1 } }, conn:execute("SELECT x FROM t"):fetchall())
    end)

    it("sqlite.fd() polls readable while a completion waits, and dispatch clears it", function()
        sqlite.set_host {}
        local fd = sqlite.fd()
        assert.is_number(fd)
        assert.are.equal(fd, sqlite.fd()) -- one descriptor for the Lua state
        local got
        local co = coroutine.create(function()
            got = conn:execute("SELECT 5"):fetchone()[1]
        end)
        assert(coroutine.resume(co))
        drive(function() return got ~= nil end)
        assert.are.equal(5, got)
        assert.is_false(core.poll(0)) -- nothing pending once dispatched
    end)
end)
