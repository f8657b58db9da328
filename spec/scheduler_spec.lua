-- The built-in scheduler: run/spawn/join/sleep, where a call waits (yield inside the scheduler,
-- block anywhere else), and the host-loop entry points fd() and dispatch().
local sqlite = require "pasyn_sqlite"
local sched = require "pasyn_sqlite.scheduler"
local support = require "support"

local pack = support.pack
local tmpdb = support.tmpdb

local function is_integer(v)
    if math.type then
        return math.type(v) == "integer"
    end
    return type(v) == "number" and v % 1 == 0
end

-- A read that keeps a reader busy for about a second.
local SLOW_COUNT = 2000000
local SLOW_SQL = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT count(*) FROM c]]

describe("scheduler", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = tmpdb()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    describe("sqlite.run", function()
        it("returns every result of fn, nils included", function()
            local r = pack(sqlite.run(function(a, b)
                return a + b, "x", nil, 4, nil
            end, 1, 2))
            assert.equal(5, r.n)
            assert.equal(3, r[1])
            assert.equal("x", r[2])
            assert.is_nil(r[3])
            assert.equal(4, r[4])
            assert.is_nil(r[5])
        end)

        it("returns nothing when fn returns nothing", function()
            assert.equal(0, select("#", sqlite.run(function() end)))
        end)

        it("passes its extra arguments to fn", function()
            local r = pack(sqlite.run(function(...) return select("#", ...), ... end, "a", nil, 3))
            assert.same({ 3, "a", nil, 3, n = 4 }, r)
        end)

        it("returns what fn computed with the database", function()
            local n = sqlite.run(function()
                conn:execute("INSERT INTO t (v) VALUES ('a'), ('b')")
                return conn:execute("SELECT count(*) FROM t"):fetchone()[1]
            end)
            assert.equal(2, n)
        end)

        it("re-raises fn's error object as the same table", function()
            local raised
            local ok, err = pcall(sqlite.run, function()
                local ok2, e = pcall(conn.execute, conn, "SELECT * FROM nope")
                assert.is_false(ok2)
                raised = e
                error(e)
            end)
            assert.is_false(ok)
            assert.is_true(sqlite.is_error(raised))
            assert.is_true(rawequal(raised, err))
            assert.equal("OperationalError", err.kind)
        end)

        it("re-raises a plain table error as the same table", function()
            local value = { reason = "mine" }
            local ok, err = pcall(sqlite.run, function()
                error(value)
            end)
            assert.is_false(ok)
            assert.is_true(rawequal(value, err))
        end)

        it("re-raises a string error unchanged", function()
            local ok, err = pcall(sqlite.run, function()
                error("boom", 0)
            end)
            assert.is_false(ok)
            assert.equal("boom", err)
        end)

        it("raises when called inside a running scheduler, which keeps running", function()
            local inner_ran = false
            local result = sqlite.run(function()
                local ok = pcall(sqlite.run, function()
                    inner_ran = true
                end)
                assert.is_false(ok)
                return conn:execute("SELECT 7"):fetchone()[1]
            end)
            assert.is_false(inner_ran)
            assert.equal(7, result)
        end)

        it("can run again after a run that raised", function()
            assert.is_false(pcall(sqlite.run, function() error("first", 0) end))
            assert.equal(8, sqlite.run(function()
                return conn:execute("SELECT 8"):fetchone()[1]
            end))
        end)

        it("waits for spawned coroutines nobody joined", function()
            local finished = {}
            sqlite.run(function()
                sqlite.spawn(function()
                    sqlite.sleep(0.02)
                    finished[#finished + 1] = "sleeper"
                end)
                sqlite.spawn(function()
                    conn:execute("INSERT INTO t (v) VALUES ('spawned')")
                    finished[#finished + 1] = "writer"
                end)
            end)
            table.sort(finished)
            assert.same({ "sleeper", "writer" }, finished)
            assert.equal(1, conn:execute("SELECT count(*) FROM t WHERE v = 'spawned'"):fetchone()[1])
        end)

        it("raises the error of a spawned coroutine nobody joined", function()
            local value = { reason = "unjoined" }
            local main_done = false
            local ok, err = pcall(sqlite.run, function()
                sqlite.spawn(function()
                    sqlite.sleep(0.01)
                    error(value)
                end)
                main_done = true
                return "main result"
            end)
            assert.is_true(main_done)
            assert.is_false(ok)
            assert.is_true(rawequal(value, err))
        end)
    end)

    describe("sqlite.spawn", function()
        it("a handle kept after its coroutine returned nothing weighs little (spawn all, join all)",
           function()
            -- 2,000 handles of ended coroutines, kept in an array: under 180 bytes of Lua heap
            -- each, array slot included (about 120-140 here on Lua 5.3, 5.4 and LuaJIT;
            -- 250-300 when each kept its own results record and three fields).
            local n, hs = 2000, nil
            collectgarbage()
            collectgarbage()
            sqlite.run(function()
                hs = {}
                for i = 1, n do
                    hs[i] = sqlite.spawn(function() end)
                end
                for i = 1, n do
                    assert.equal(0, select("#", hs[i]:join()))
                end
            end)
            collectgarbage()
            collectgarbage()
            local with = collectgarbage("count")
            hs = nil -- luacheck: ignore (measured: what the kept handles weigh)
            collectgarbage()
            collectgarbage()
            local each = (with - collectgarbage("count")) * 1024 / n
            assert.is_true(each < 180, string.format("%.0f bytes per kept handle", each))
        end)

        it("raises outside sqlite.run and does not run fn", function()
            local ran = false
            assert.is_false(pcall(sqlite.spawn, function() ran = true end))
            assert.is_false(ran)
        end)

        it("join() returns every result of the spawned function", function()
            local r = sqlite.run(function()
                local h = sqlite.spawn(function(a, b)
                    return a * b, nil, "z"
                end, 6, 7)
                return pack(h:join())
            end)
            assert.same({ 42, nil, "z", n = 3 }, r)
        end)

        it("join() waits for a coroutine that is still running a query", function()
            local r = sqlite.run(function()
                local h = sqlite.spawn(function()
                    conn:execute("INSERT INTO t (v) VALUES ('joined')")
                    return conn:execute("SELECT id, v FROM t WHERE v = 'joined'"):fetchone()
                end)
                return h:join()
            end)
            assert.same({ 1, "joined", n = 2 }, r)
        end)

        it("join() re-raises the spawned function's error as the same value", function()
            local value = { reason = "spawned" }
            local caught = sqlite.run(function()
                local h = sqlite.spawn(function()
                    sqlite.sleep(0.005)
                    error(value)
                end)
                local ok, err = pcall(h.join, h)
                assert.is_false(ok)
                return err
            end)
            assert.is_true(rawequal(value, caught))
        end)

        it("join() re-raises a database error object of the spawned coroutine", function()
            local caught = sqlite.run(function()
                local h = sqlite.spawn(function()
                    conn:execute("INSERT INTO nope VALUES (1)")
                end)
                local ok, err = pcall(h.join, h)
                assert.is_false(ok)
                return err
            end)
            assert.is_true(sqlite.is_error(caught))
            assert.equal("OperationalError", caught.kind)
            assert.equal("no such table: nope", caught.message)
        end)

        it("a joined error does not make run raise", function()
            local r = sqlite.run(function()
                local h = sqlite.spawn(function() error("handled", 0) end)
                local ok, err = pcall(h.join, h)
                return ok, err
            end)
            assert.is_false(r)
        end)

        it("join() on a finished coroutine returns its results at once, also twice", function()
            local a, b = sqlite.run(function()
                local h = sqlite.spawn(function() return "done" end)
                sqlite.sleep(0.01)
                return h:join(), h:join()
            end)
            assert.equal("done", a)
            assert.equal("done", b)
        end)

        it("spawned coroutines start in the order they were spawned", function()
            local order = {}
            sqlite.run(function()
                for i = 1, 5 do
                    sqlite.spawn(function() order[#order + 1] = i end)
                end
            end)
            assert.same({ 1, 2, 3, 4, 5 }, order)
        end)

        it("each coroutine gets its own arguments, also when coroutines started together spawn more",
           function()
            local got = {}
            local function record(...)
                got[#got + 1] = table.concat({ ... }, ",")
            end
            sqlite.run(function()
                for i = 1, 3 do -- these three start together; the first two spawn more with arguments
                    sqlite.spawn(function(a, b)
                        record(a, b)
                        if i < 3 then
                            for k = 1, 3 do
                                sqlite.spawn(record, "child" .. i, k)
                            end
                        end
                    end, "top" .. i, i)
                end
            end)
            table.sort(got)
            assert.same({ "child1,1", "child1,2", "child1,3", "child2,1", "child2,2", "child2,3",
                          "top1,1", "top2,2", "top3,3" }, got)
        end)

        it("a coroutine spawned without arguments gets none, whatever those started before it spawn",
           function()
            local got = {}
            sqlite.run(function()
                sqlite.spawn(function() -- starts first, and spawns two with arguments
                    sqlite.spawn(function(...) got.z1 = select("#", ...) end, "z", 1)
                    sqlite.spawn(function(...) got.z2 = select("#", ...) end, "z", 2)
                end)
                sqlite.spawn(function(...) got.y = select("#", ...) end) -- starts right after
            end)
            assert.same({ z1 = 2, z2 = 2, y = 0 }, got)
        end)

        -- coroutine.close exists from Lua 5.4 on.
        local close_it = coroutine.close and it or pending
        close_it("a coroutine closed (coroutine.close) while parked on a statement, a timer, a " ..
                 "slot, a join or inside a transaction ends: join raises ProgrammingError, its " ..
                 "slot goes on, its transaction is rolled back, and the run goes on to its end",
           function()
            local pool = sqlite.connect(path, { max_pending = 1, inline_reads = false })
            local closed_error = "the coroutine was closed (coroutine.close) before it returned"
            local function running() return (coroutine.running()) end
            local got = pack(sqlite.run(function()
                local out = {}
                -- on a statement
                local co
                local h = sqlite.spawn(function()
                    co = running()
                    return pool:execute(SLOW_SQL, 200000):fetchone()[1]
                end)
                sqlite.sleep(0)
                assert.is_true(coroutine.close(co))
                local ok, err = pcall(h.join, h)
                out.statement = not ok and err:is("ProgrammingError") and err.message
                -- on a timer, and on a join
                local sleeper = sqlite.spawn(function() co = running(); sqlite.sleep(0.05) end)
                sqlite.sleep(0)
                assert.is_true(coroutine.close(co))
                local target = sqlite.spawn(function() sqlite.sleep(0.05); return "target" end)
                local joiner = sqlite.spawn(function() co = running(); return target:join() end)
                sqlite.sleep(0)
                assert.is_true(coroutine.close(co))
                out.target = target:join()
                out.sleeper = select(2, pcall(sleeper.join, sleeper)).message
                out.joiner = select(2, pcall(joiner.join, joiner)).message
                -- waiting for the one slot, and given it before it ran again
                for _, given in ipairs({ false, true }) do
                    local waiter
                    local holder = sqlite.spawn(function()
                        local n = pool:execute(SLOW_SQL, 200000):fetchone()[1]
                        if given then -- its completion gave the slot to the waiter first
                            assert.is_true(coroutine.close(waiter))
                        end
                        return n
                    end)
                    sqlite.sleep(0)
                    local w = sqlite.spawn(function()
                        waiter = running()
                        return pool:execute("SELECT 1"):fetchone()[1] -- waits for the slot
                    end)
                    sqlite.sleep(0)
                    if not given then
                        assert.is_true(coroutine.close(waiter))
                    end
                    assert.are.equal(200000, holder:join())
                    out[given and "given" or "waiting"] = select(2, pcall(w.join, w)).message
                    -- the slot was not lost: this statement gets it
                    out[#out + 1] = pool:execute("SELECT ?", #out + 1):fetchone()[1]
                end
                -- inside a transaction
                local owner = sqlite.spawn(function()
                    co = running()
                    pool:execute("BEGIN")
                    pool:execute("INSERT INTO t (v) VALUES ('closed owner')")
                    pool:execute(SLOW_SQL, 200000) -- on the writer: its transaction's
                end)
                sqlite.sleep(0)
                assert.is_true(coroutine.close(co))
                out.owner = select(2, pcall(owner.join, owner)).message
                pool:execute("INSERT INTO t (v) VALUES ('after')") -- not held behind it
                out.rows = pool:execute("SELECT group_concat(v) FROM t"):fetchone()[1]
                return out
            end))
            assert.are.same({ n = 1, {
                statement = closed_error, sleeper = closed_error, joiner = closed_error,
                target = "target", waiting = closed_error, given = closed_error, 1, 2,
                owner = closed_error, rows = "after",
            } }, got)
            assert.are.equal(0, pool:stats().pending)
            assert.are.equal(0, pool:stats().waiting)
            pool:close()
        end)

        -- (found before the loop waits, not when the timer fires or the joinee ends)
        close_it("a coroutine closed while it sleeps (or joins) ends at once: its joiners do " ..
                 "not wait for its timer (or its joinee)", function()
            local order = {}
            sqlite.run(function()
                local co
                local long = sqlite.spawn(function() sqlite.sleep(5) end) -- the joinee below
                local sleeper = sqlite.spawn(function() co = coroutine.running(); sqlite.sleep(5) end)
                sqlite.sleep(0)
                local sleeper_co = co
                local joiner = sqlite.spawn(function() co = coroutine.running(); long:join() end)
                sqlite.sleep(0)
                sqlite.spawn(function() sqlite.sleep(0.5); order[#order + 1] = "timer" end)
                assert.is_true(coroutine.close(sleeper_co))
                assert.is_true(coroutine.close(co))
                local ended = pcall(sleeper.join, sleeper) and "sleeper returned" or "sleeper"
                order[#order + 1] = ended -- (after the join: the timer's entry may come first)
                ended = pcall(joiner.join, joiner) and "joiner returned" or "joiner"
                order[#order + 1] = ended
            end)
            assert.same({ "sleeper", "joiner", "timer" }, order)
        end)

        close_it("a run whose only other coroutine was closed while it slept ends at once, not " ..
                 "when the closed coroutine's timer would have fired", function()
            local started = os.time()
            sqlite.run(function()
                local co
                sqlite.spawn(function() co = coroutine.running(); sqlite.sleep(60) end)
                sqlite.sleep(0)
                assert.is_true(coroutine.close(co))
            end)
            assert.is_true(os.time() - started < 20, "the run waited out the closed sleeper's timer")
        end)

        close_it("a coroutine closed in a run that then failed is not ended by a later run: that " ..
                 "run's deadlock is still reported as one", function()
            local keep = {} -- the closed coroutines, alive after their run
            assert.is_false(pcall(sqlite.run, function()
                for i = 1, 2 do
                    sqlite.spawn(function() keep[i] = coroutine.running(); sqlite.sleep(60) end)
                end
                sqlite.sleep(0)
                assert.is_true(coroutine.close(keep[1]))
                assert.is_true(coroutine.close(keep[2]))
                error("main fails before the closed coroutines' timers", 0)
            end))
            -- two coroutines, parked where nothing wakes them: the run's deadlock (counting the
            -- earlier run's closed ones as its own, it ended them and its count fell to 0)
            local ok, err = pcall(sqlite.run, function()
                sqlite.spawn(function() coroutine.yield(sched.SUSPEND) end):join()
            end)
            assert.is_false(ok)
            assert.is_true(sqlite.is_error(err) and err:is("ProgrammingError"), tostring(err))
            assert.matches("every coroutine waits", err.message, 1, true)
        end)
    end)

    describe("sqlite.sleep", function()
        it("a coroutine sleeping 0.05 wakes after one sleeping 0.01", function()
            local order = {}
            sqlite.run(function()
                sqlite.spawn(function()
                    sqlite.sleep(0.05)
                    order[#order + 1] = "long"
                end)
                sqlite.spawn(function()
                    sqlite.sleep(0.01)
                    order[#order + 1] = "short"
                end)
            end)
            assert.same({ "short", "long" }, order)
        end)

        it("sleepers wake in the order of their deadlines", function()
            local order = {}
            sqlite.run(function()
                for _, d in ipairs({ 0.04, 0.01, 0.03, 0.02 }) do
                    sqlite.spawn(function()
                        sqlite.sleep(d)
                        order[#order + 1] = d
                    end)
                end
            end)
            assert.same({ 0.01, 0.02, 0.03, 0.04 }, order)
        end)

        it("sleep(0) lets other ready coroutines run before it returns", function()
            local order = {}
            sqlite.run(function()
                sqlite.spawn(function()
                    order[#order + 1] = "a1"
                    sqlite.sleep(0)
                    order[#order + 1] = "a2"
                end)
                sqlite.spawn(function()
                    order[#order + 1] = "b"
                end)
            end)
            assert.same({ "a1", "b", "a2" }, order)
        end)

        it("a sleeping coroutine does not hold up another one's queries", function()
            local order = {}
            sqlite.run(function()
                sqlite.spawn(function()
                    sqlite.sleep(0.5)
                    order[#order + 1] = "sleeper"
                end)
                sqlite.spawn(function()
                    for i = 1, 10 do
                        conn:execute("INSERT INTO t (v) VALUES (?)", "s" .. i)
                    end
                    assert.equal(10, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
                    order[#order + 1] = "queries"
                end)
            end)
            assert.same({ "queries", "sleeper" }, order)
        end)

        it("blocks and returns outside a scheduler", function()
            sqlite.sleep(0.001)
            sqlite.sleep(0)
        end)
    end)

    describe("where a call waits", function()
        it("a coroutine alone in its loop waits for its statements without going round the " ..
           "loop; beside a timer it yields and the loop polls", function()
            local core = require "pasyn_sqlite.core"
            local poll, polls = core.poll, 0
            core.poll = function(...)
                polls = polls + 1
                return poll(...)
            end
            finally(function() core.poll = poll end)
            local function writes()
                for i = 1, 20 do
                    conn:execute("INSERT INTO t (v) VALUES (?)", "w" .. i)
                    assert.equal(1, conn:execute("UPDATE t SET v = v WHERE id = ?", i).rowcount)
                end
            end
            sqlite.run(writes)
            assert.equal(0, polls)
            assert.equal(20, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
            local done = false
            sqlite.run(function()
                sqlite.spawn(function()
                    while not done do
                        sqlite.sleep(0.05)
                    end
                end)
                sqlite.sleep(0) -- the sleeper parks in its timer
                writes()
                done = true
            end)
            assert.is_true(polls >= 20, polls .. " polls")
        end)

        it("a statement that would wait behind the transaction of a coroutine that joins it, " ..
           "with nothing else to run, fails at once as a blocking call's does", function()
            local out = support.in_child(([[
                local sqlite = require "pasyn_sqlite"
                local conn = sqlite.connect(%q)
                local ok, err = pcall(sqlite.run, function()
                    conn:execute("BEGIN")
                    conn:execute("INSERT INTO t (v) VALUES ('owner')")
                    local ok, err = pcall(function()
                        return sqlite.spawn(function()
                            conn:execute("INSERT INTO t (v) VALUES ('other')")
                        end):join()
                    end)
                    conn:execute("COMMIT")
                    assert(not ok, "the other coroutine's write ran inside the transaction")
                    error(err, 0)
                end)
                assert(not ok)
                print(err.kind, err.code, err.message)
                print(conn:execute("SELECT group_concat(v) FROM t"):fetchone()[1])
                conn:close()
            ]]):format(path), 30)
            assert.matches("OperationalError\t5\tthe writer is held by another owner's transaction",
                           out)
            -- (no newline last under make tsan, where the child runs in this process)
            assert.is_truthy(out:find("\nowner\n") or out:find("\nowner$"), out)
        end)

        it("a write that waits behind the transaction of a coroutine closed while it joins " ..
           "runs once that transaction is rolled back, as beside a timer (Lua 5.4)", function()
            if not coroutine.close then
                return pending("coroutine.close exists from Lua 5.4 on")
            end
            for _, timer in ipairs({ true, false }) do
                conn:execute("DELETE FROM t")
                local ok, err
                sqlite.run(function()
                    local owner_co, joined, other
                    local owner = sqlite.spawn(function()
                        owner_co = coroutine.running()
                        conn:execute("BEGIN")
                        conn:execute("INSERT INTO t (v) VALUES ('owner')")
                        joined = true
                        other:join()
                    end)
                    if timer then
                        sqlite.spawn(function() sqlite.sleep(0.2) end)
                    end
                    other = sqlite.spawn(function()
                        while not joined do
                            coroutine.yield()
                        end
                        coroutine.close(owner_co) -- its transaction is to be rolled back
                        ok, err = pcall(conn.execute, conn, "INSERT INTO t (v) VALUES ('other')")
                    end)
                    pcall(owner.join, owner)
                end)
                assert.is_true(ok, (timer and "beside a timer: " or "alone: ") .. tostring(err))
                assert.equal("other", conn:execute("SELECT group_concat(v) FROM t"):fetchone()[1])
            end
        end)

        it("a write that waits behind the transaction of a host's coroutine, itself waiting for " ..
           "a statement the loop dispatches, runs once that transaction commits", function()
            local other_path, other_cleanup = tmpdb()
            local conn2 = sqlite.connect(other_path)
            finally(function()
                sqlite.set_host(nil)
                conn2:close()
                other_cleanup()
            end)
            sqlite.set_host({})
            local h = coroutine.create(function()
                conn:execute("BEGIN IMMEDIATE")
                conn:execute("INSERT INTO t (v) VALUES ('host')")
                conn2:execute("SELECT 1")
                conn:execute("COMMIT")
            end)
            assert(coroutine.resume(h))
            while not (conn._gate.pending == 0 and conn2._gate.pending == 1) do
                sqlite.dispatch() -- until h waits for conn2, in its transaction on conn
            end
            local ok, err = pcall(sqlite.run, function()
                conn:execute("INSERT INTO t (v) VALUES ('loop')")
            end)
            while coroutine.status(h) ~= "dead" do
                sqlite.dispatch()
            end
            assert.is_true(ok, tostring(err))
            assert.equal("host,loop", conn:execute("SELECT group_concat(v) FROM t"):fetchone()[1])
        end)

        it("an on_change hook that runs a statement, with max_pending = 1, does not wait for " ..
           "the slot of the statement it reports on", function()
            if support.no_children then
                return pending("a hang is bounded in a child process only")
            end
            local out = support.in_child(([[
                local sqlite = require "pasyn_sqlite"
                local conn = sqlite.connect(%q, { max_pending = 1 })
                conn:execute("CREATE TABLE log (n)")
                conn:on_change(function(_, _, tbl)
                    if tbl == "t" then
                        local n = conn:execute("SELECT count(*) FROM t"):fetchone()[1]
                        conn:execute("INSERT INTO log VALUES (?)", n)
                    end
                end)
                sqlite.run(function()
                    conn:execute("INSERT INTO t (v) VALUES ('a')")
                end)
                conn:on_change(nil)
                print(conn:execute("SELECT group_concat(n) FROM log"):fetchone()[1])
                conn:close()
            ]]):format(path), 20)
            assert.matches("^1\nstatus=0", out)
        end)

        it("a coroutine closed while its statement is on its way is not resumed when it " ..
           "completes, and the statement stands (Lua 5.4)", function()
            if not coroutine.close then
                return -- LuaJIT, Lua 5.1: no coroutine.close
            end
            local ok, err = pcall(sqlite.run, function()
                local waiter
                sqlite.spawn(function()
                    waiter = coroutine.running()
                    conn:execute("INSERT INTO t (v) VALUES ('closed')") -- a write: it waits
                    error("resumed after it was closed")
                end)
                coroutine.yield() -- it runs its statement and waits
                assert.equal("suspended", coroutine.status(waiter))
                assert.is_true(coroutine.close(waiter))
                conn:execute("INSERT INTO t (v) VALUES ('after')")
            end)
            assert.is_true(ok, tostring(err)) -- the closed coroutine has ended
            assert.equal(2, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("a coroutine a run left behind blocks on its calls when resumed by hand", function()
            -- The library keeps the owner id of each coroutine of a run (one lookup per call);
            -- once the run is over it must not take the coroutine for one that may yield.
            local child, child_row
            local ok = pcall(sqlite.run, function()
                sqlite.spawn(function()
                    conn:execute("SELECT 1"):fetchone() -- the run knows this coroutine now
                    child = coroutine.running()
                    sqlite.sleep(3600)
                    child_row = conn:execute("SELECT 2"):fetchone() -- resumed by hand, below
                end)
                sqlite.sleep(0.05) -- the child runs its first statement meanwhile
                error("the main coroutine ends the run")
            end)
            assert.is_false(ok)
            assert.is_not_nil(child)
            local resumed, err = coroutine.resume(child)
            assert.is_true(resumed, err)
            assert.equal("dead", coroutine.status(child))
            assert.equal(2, child_row[1])
        end)

        it("a coroutine a run left behind while it waited for a statement raises ProgrammingError " ..
           "when resumed by hand: its statement's result was dropped with the run", function()
            local pool = sqlite.connect(path, { inline_reads = false })
            local child
            local ok = pcall(sqlite.run, function()
                sqlite.spawn(function()
                    child = coroutine.running()
                    pool:execute(SLOW_SQL, 300000) -- waits for it
                end)
                sqlite.sleep(0)
                error("the main coroutine ends the run")
            end)
            assert.is_false(ok)
            local resumed, err = coroutine.resume(child)
            assert.is_false(resumed)
            assert.is_true(sqlite.is_error(err) and err:is("ProgrammingError"), tostring(err))
            assert.matches("ended", err.message, 1, true)
            assert.equal(1, pool:execute("SELECT 1"):fetchone()[1]) -- the pool goes on
            pool:close()
        end)

        it("a coroutine's quick queries finish while another waits on a slow query", function()
            local order = {}
            local slow_count
            sqlite.run(function()
                sqlite.spawn(function()
                    slow_count = conn:execute(SLOW_SQL, SLOW_COUNT):fetchone()[1]
                    order[#order + 1] = "slow"
                end)
                sqlite.spawn(function()
                    for i = 1, 20 do
                        assert.equal(i, conn:execute("SELECT ?", i):fetchone()[1])
                    end
                    order[#order + 1] = "quick reads"
                end)
                sqlite.spawn(function()
                    for i = 1, 5 do
                        conn:execute("INSERT INTO t (v) VALUES (?)", "q" .. i)
                    end
                    order[#order + 1] = "quick writes"
                end)
            end)
            assert.equal(SLOW_COUNT, slow_count)
            assert.equal(3, #order)
            assert.equal("slow", order[3])
            assert.equal(5, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("a slow write does not hold up other coroutines' reads", function()
            local order = {}
            sqlite.run(function()
                sqlite.spawn(function()
                    conn:execute("INSERT INTO t (v) " .. SLOW_SQL:gsub("count%(%*%)", "'n' || count(*)"),
                                 SLOW_COUNT)
                    order[#order + 1] = "slow write"
                end)
                sqlite.spawn(function()
                    for i = 1, 20 do
                        assert.equal(i, conn:execute("SELECT ?", i):fetchone()[1])
                    end
                    order[#order + 1] = "reads"
                end)
            end)
            assert.same({ "reads", "slow write" }, order)
            assert.equal(1, conn:execute("SELECT count(*) FROM t WHERE v = ?", "n" .. SLOW_COUNT)
                :fetchone()[1])
        end)

        it("calls in the main chunk block and return their results", function()
            conn:execute("INSERT INTO t (v) VALUES ('main')")
            local cur = conn:execute("SELECT id, v FROM t")
            assert.same({ { 1, "main", n = 2 } }, cur:fetchall())
            assert.equal(SLOW_COUNT, conn:execute(SLOW_SQL, SLOW_COUNT):fetchone()[1])
        end)

        it("calls in a plain coroutine outside run block and return their results", function()
            local r = coroutine.wrap(function()
                conn:execute("INSERT INTO t (v) VALUES ('wrapped')")
                return conn:execute("SELECT v FROM t"):fetchone()[1]
            end)()
            assert.equal("wrapped", r)
        end)

        it("a statement waits in few frames: it yields from the Lua layer's own wait", function()
            -- Every frame a waiting coroutine holds is kept for all its wait (Lua allocates
            -- one CallInfo per level, and the deeper the stack the more it grows): with
            -- 10,000 statements in flight that is memory. From the yield down to the function
            -- that called execute: coroutine.yield, the Lua layer's wait (two functions today:
            -- the scheduler's begin_wait has returned by then) and the caller: at most 4.
            local c = sqlite.connect(path, { inline_reads = false })
            local co, levels
            sqlite.run(function()
                local h = sqlite.spawn(function()
                    co = coroutine.running()
                    return c:execute("SELECT 1"):fetchone()[1]
                end)
                sqlite.spawn(function() -- runs while the first one waits
                    levels = 0
                    while debug.getinfo(co, levels, "S") do
                        levels = levels + 1
                    end
                end)
                assert.equal(1, h:join())
            end)
            c:close()
            assert.is_true(levels >= 2 and levels <= 4, levels .. " levels")
        end)

        it("calls in a plain coroutine.wrap inside run block and return their results", function()
            local order = {}
            local r = sqlite.run(function()
                sqlite.spawn(function()
                    order[#order + 1] = "other"
                end)
                local v = coroutine.wrap(function()
                    conn:execute("INSERT INTO t (v) VALUES ('wrapped in run')")
                    local got = conn:execute("SELECT v FROM t"):fetchone()[1]
                    order[#order + 1] = "wrapped"
                    return got
                end)()
                return v
            end)
            assert.equal("wrapped in run", r)
            -- the wrapped coroutine blocked rather than yielded: nothing else ran meanwhile
            assert.same({ "wrapped", "other" }, order)
        end)

        it("a plain coroutine inside run can yield values to its own caller between queries", function()
            local got = sqlite.run(function()
                local gen = coroutine.wrap(function()
                    for i = 1, 3 do
                        coroutine.yield(conn:execute("SELECT ? * 10", i):fetchone()[1])
                    end
                end)
                return { gen(), gen(), gen() }
            end)
            assert.same({ 10, 20, 30 }, got)
        end)
    end)

    describe("host loop entry points", function()
        it("sqlite.fd() is an integer >= 0 and the same each time", function()
            local fd = sqlite.fd()
            assert.is_true(is_integer(fd))
            assert.is_true(fd >= 0)
            assert.equal(fd, sqlite.fd())
        end)

        it("sqlite.dispatch() returns 0 when nothing is pending", function()
            assert.equal(0, sqlite.dispatch())
            assert.equal(0, sqlite.dispatch())
        end)

        it("blocking calls leave nothing for dispatch()", function()
            for i = 1, 10 do
                conn:execute("INSERT INTO t (v) VALUES (?)", "d" .. i)
                conn:execute("SELECT count(*) FROM t"):fetchall()
            end
            assert.equal(0, sqlite.dispatch())
        end)

        it("core.drain(list) fills the list it is given and clears what it held beyond", function()
            -- dispatch drains into one table again each time: a stale task left in it would
            -- be delivered twice
            local core = require "pasyn_sqlite.core"
            local pool, record = conn._pool, { rows = false, rowcount = -1, lastrowid = false,
                                               stream = false, columns = false }
            for i = 1, 2 do
                -- writes: a read could run at once on this thread and never reach the hub
                assert(core.submit(pool, "exec", 1, false, nil, "INSERT INTO t (v) VALUES (?)", i))
            end
            local list, got = { "stale 1", "stale 2", "stale 3", "stale 4", "stale 5" }, {}
            local deadline = os.time() + 30
            while #got < 2 and os.time() < deadline do
                core.poll(0.1)
                local out = core.drain(list)
                if out then
                    assert.equal(list, out) -- the same table, not a new one
                    for i = 1, #out do
                        assert.equal("userdata", type(out[i])) -- no stale entry left
                        got[#got + 1] = out[i]
                    end
                    assert.is_nil(out[#out + 1])
                    assert.is_true(#out <= 2)
                end
            end
            assert.equal(2, #got)
            for i = 1, 2 do
                assert.equal(1, assert(core.result(got[i], pool, record)).rowcount)
            end
            local fresh = core.submit(pool, "exec", 1, false, nil, "INSERT INTO t (v) VALUES (3)")
            local out
            repeat
                core.poll(0.1)
                out = core.drain()
            until out or os.time() > deadline
            assert.are_not.equal(list, out) -- without a list: a new table
            assert.same({ fresh }, out)
            core.result(fresh, pool, record)
        end)

        it("a coroutine resumed by other code than the scheduler while it waits for its " ..
           "statement goes on waiting, and gets the statement's own result", function()
            local pool = sqlite.connect(path, { inline_reads = false })
            local waiter
            local got = pack(sqlite.run(function()
                local h = sqlite.spawn(function()
                    waiter = coroutine.running()
                    for i = 1, 5 do
                        pool:execute("INSERT INTO t (v) VALUES (?)", "r" .. i)
                    end
                    return pool:execute(SLOW_SQL, 200000):fetchone()[1]
                end)
                local resumed = 0
                for _ = 1, 40 do
                    sqlite.sleep(0)
                    if coroutine.status(waiter) == "suspended" then
                        resumed = resumed + 1
                        assert.is_true((coroutine.resume(waiter)))
                    end
                end
                return resumed, h:join()
            end))
            assert.is_true(got[1] > 0, "never resumed by hand")
            assert.equal(200000, got[2])
            assert.equal(5, pool:execute("SELECT count(*) FROM t"):fetchone()[1])
            assert.equal(0, pool:stats().pending)
            pool:close()
        end)

        it("a coroutine resumed by other code while it waits for a max_pending slot, or in join, " ..
           "goes on waiting", function()
            local pool = sqlite.connect(path, { max_pending = 1, inline_reads = false })
            local got = pack(sqlite.run(function()
                local slow = sqlite.spawn(function() -- holds the one slot a while
                    return pool:execute(SLOW_SQL, 300000):fetchone()[1]
                end)
                sqlite.sleep(0)
                local slot_waiter, joiner
                local w = sqlite.spawn(function()
                    slot_waiter = coroutine.running()
                    return pool:execute("SELECT 7"):fetchone()[1] -- waits for the slot
                end)
                local j = sqlite.spawn(function()
                    joiner = coroutine.running()
                    return slow:join()
                end)
                sqlite.sleep(0)
                local resumed = 0
                while coroutine.status(slot_waiter) == "suspended" and resumed < 50 do
                    assert.is_true((coroutine.resume(slot_waiter)))
                    assert.is_true((coroutine.resume(joiner)))
                    resumed = resumed + 1
                    sqlite.sleep(0)
                end
                return resumed, w:join(), j:join(), slow:join()
            end))
            assert.is_true(got[1] > 0, "never resumed by hand")
            assert.same({ 7, 300000, 300000 }, { got[2], got[3], got[4] })
            assert.equal(0, pool:stats().pending)
            assert.equal(0, pool:stats().waiting)
            pool:close()
        end)

        it("a task's result is refused (ProgrammingError) while the task is in flight, and once " ..
           "it completed until it is drained: reading or freeing it would race with its worker, " ..
           "or leave the hub's list a dangling link", function()
            local core = require "pasyn_sqlite.core"
            local record = { rows = false, rowcount = -1, lastrowid = false, stream = false,
                             columns = false }
            local task = assert(core.submit(conn._pool, "exec", 1, false, nil,
                                            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 " ..
                                            "FROM c WHERE x < 3000000) SELECT count(*) FROM c"))
            for _, call in ipairs({ function() return core.result(task, conn._pool, record) end,
                                    function() return core.free_task(task) end }) do
                local ok, err = pcall(call)
                assert.is_false(ok)
                assert.is_true(sqlite.is_error(err) and err:is("ProgrammingError"), tostring(err))
                assert.matches("not completed", err.message, 1, true)
            end
            local deadline = os.time() + 30
            repeat -- completed, not drained
            until core.poll(0.1) or os.time() > deadline
            local ok, err = pcall(core.free_task, task)
            assert.is_false(ok)
            assert.matches("not completed", err.message, 1, true)
            assert.same({ task }, core.drain())
            local res = assert(core.result(task, conn._pool, record))
            assert.equal(3000000, res.rows[1][1])
        end)

        it("dispatch() returns a number and never blocks inside run", function()
            local n = sqlite.run(function()
                return sqlite.dispatch()
            end)
            assert.equal(0, n)
        end)
    end)
end)
