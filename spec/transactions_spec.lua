-- Transactions belong to coroutines: BEGIN in any form makes the calling coroutine the owner,
-- whose statements see its own uncommitted changes while other coroutines' writes wait for it
-- and their reads see only committed data; commit()/rollback() of a non-owner change nothing;
-- a transaction whose owner returns, fails or is collected is rolled back; conn:transaction
-- (modes, results, errors, savepoints); all-or-nothing executemany; and a bank of transfers in
-- transactions watched by concurrent readers.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local raises, scalar, pack = support.raises, support.scalar, support.pack

-- ---- helpers --------------------------------------------------------------------------------

-- Every test opens connections through `open` and databases through `new_db`; after_each
-- closes the connections and removes the files.
local opened, cleanups

local function open(path, options)
    local conn = sqlite.connect(path, options)
    opened[#opened + 1] = conn
    return conn
end

local function new_db()
    local path, cleanup = support.tmpdb()
    cleanups[#cleanups + 1] = cleanup
    return path
end

before_each(function()
    opened, cleanups = {}, {}
end)

after_each(function()
    for i = #opened, 1, -1 do
        pcall(opened[i].close, opened[i])
    end
    for _, cleanup in ipairs(cleanups) do
        cleanup()
    end
end)

local column = support.column

-- Suspends the calling coroutine until pred() is true; fails after about ten seconds rather
-- than hanging the run.
local function wait_for(pred, what)
    for _ = 1, 2000 do
        if pred() then
            return
        end
        sqlite.sleep(0.005)
    end
    error("timed out waiting for " .. what, 2)
end

-- An event log: note(e) appends e.
local function event_log()
    local log = {}
    return log, function(e)
        log[#log + 1] = e
    end
end

-- A database with t (id INTEGER PRIMARY KEY, v TEXT); returns its path and a connection.
local function t_db(options)
    local path = new_db()
    local conn = open(path, options)
    conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    return path, conn
end

local function t_values(conn)
    return column(conn, "SELECT v FROM t ORDER BY v")
end

-- ---- ownership ------------------------------------------------------------------------------

describe("a transaction belongs to the coroutine that began it", function()
    it("the statement that makes a coroutine an owner keeps its own result while a finalizer "
       .. "runs a statement (its guard allocates)", function()
        local conn = open(new_db())
        conn:execute("CREATE TABLE t (x)")
        -- the collector always running, in short steps: finalizers run at allocations
        local incremental = _VERSION == "Lua 5.4" -- (setpause and setstepmul before it)
        local pause, stepmul
        if incremental then
            collectgarbage("incremental", 0, 1000)
        else
            pause, stepmul = collectgarbage("setpause", 0), collectgarbage("setstepmul", 1000)
        end
        local ran, wrong = 0, 0
        local function gone() -- a read: it runs beside the transaction, with rows of its own
            ran = ran + 1
            pcall(conn.execute, conn, "SELECT 1, 2") -- (LuaJIT raises a finalizer's error on)
        end
        local ok, err = pcall(sqlite.run, function()
            for _ = 1, 5000 do
                if newproxy then
                    getmetatable(newproxy(true)).__gc = gone
                else
                    setmetatable({}, { __gc = gone })
                end
                sqlite.spawn(function()
                    local cur = conn:execute("BEGIN")
                    if cur.description ~= nil or cur:fetchone() ~= nil or cur.rowcount ~= -1 then
                        wrong = wrong + 1
                    end
                    conn:execute("ROLLBACK")
                end):join()
            end
        end)
        if incremental then
            collectgarbage("incremental", 200, 100)
        else
            collectgarbage("setpause", pause)
            collectgarbage("setstepmul", stepmul)
        end
        assert(ok, tostring(err))
        assert.is_true(ran > 0, "no finalizer ran")
        assert.are.equal(0, wrong, "BEGIN cursors holding a finalizer's statement's result")
    end)

    -- Coroutine A updates kv.a inside BEGIN ... `finish`, sleeping in the middle; coroutine B
    -- reads kv.a and then appends to it while A's transaction is open.
    local function two_coroutines(finish)
        local path = new_db()
        local conn = open(path)
        conn:execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
        conn:execute("INSERT INTO kv VALUES ('a', 'old')")
        local log, note = event_log()
        local seen = {}
        local GET = "SELECT v FROM kv WHERE k = 'a'"
        sqlite.run(function()
            sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("UPDATE kv SET v = 'new' WHERE k = 'a'")
                seen.owner_reads = scalar(conn, GET)
                seen.owner_in_transaction = conn.in_transaction
                note("owner wrote")
                sqlite.sleep(0.05)
                wait_for(function() return seen.write_issued end, "B's write")
                note("owner ends")
                conn:execute(finish)
                seen.owner_after = conn.in_transaction
            end)
            sqlite.spawn(function()
                wait_for(function() return log[1] == "owner wrote" end, "A's write")
                seen.other_in_transaction = conn.in_transaction
                seen.other_reads = scalar(conn, GET)
                note("other read")
                seen.write_issued = true
                note("other writes")
                conn:execute("UPDATE kv SET v = v || '+other' WHERE k = 'a'")
                note("other write returned")
                seen.other_reads_after = scalar(conn, GET)
            end)
        end)
        assert.same({ "owner wrote", "other read", "other writes", "owner ends", "other write returned" },
                    log)
        assert.equal("new", seen.owner_reads)
        assert.is_true(seen.owner_in_transaction)
        assert.is_false(seen.owner_after)
        assert.is_false(seen.other_in_transaction)
        assert.equal("old", seen.other_reads)
        return seen, scalar(open(path), GET)
    end

    it("the owner reads its own write; another coroutine reads the old value meanwhile and its "
       .. "write returns only after COMMIT, applied on top of the committed value", function()
        local seen, final = two_coroutines("COMMIT")
        assert.equal("new+other", seen.other_reads_after)
        assert.equal("new+other", final)
    end)

    it("a write held back behind a transaction that rolls back runs after it, outside it, "
       .. "and stays", function()
        local seen, final = two_coroutines("ROLLBACK")
        assert.equal("old+other", seen.other_reads_after)
        assert.equal("old+other", final)
    end)

    -- Each way to begin (inserting the owner's row) and to end a transaction.
    local function insert_mine(conn)
        conn:execute("INSERT INTO t (v) VALUES ('mine')")
    end
    local FORMS = {
        { "BEGIN ... COMMIT", function(c) c:execute("BEGIN"); insert_mine(c) end,
          function(c) c:execute("COMMIT") end, true },
        { "BEGIN IMMEDIATE ... END", function(c) c:execute("BEGIN IMMEDIATE"); insert_mine(c) end,
          function(c) c:execute("END") end, true },
        { "/* c */ BEGIN ... ROLLBACK", function(c) c:execute("/* c */ BEGIN"); insert_mine(c) end,
          function(c) c:execute("ROLLBACK") end, false },
        { "begin deferred transaction ... conn:commit()",
          function(c) c:execute("begin deferred transaction"); insert_mine(c) end,
          function(c) c:commit() end, true },
        { "BEGIN EXCLUSIVE ... END TRANSACTION",
          function(c) c:execute("BEGIN EXCLUSIVE"); insert_mine(c) end,
          function(c) c:execute("END TRANSACTION") end, true },
        { "executescript('BEGIN; INSERT ...') ... conn:rollback()",
          function(c) c:executescript("BEGIN; INSERT INTO t (v) VALUES ('mine');") end,
          function(c) c:rollback() end, false },
        { "SAVEPOINT x ... RELEASE x", function(c) c:execute("SAVEPOINT x"); insert_mine(c) end,
          function(c) c:execute("RELEASE x") end, true },
        { "SAVEPOINT x ... ROLLBACK", function(c) c:execute("SAVEPOINT x"); insert_mine(c) end,
          function(c) c:execute("ROLLBACK") end, false },
    }

    for _, form in ipairs(FORMS) do
        local name, begin, finish, kept = form[1], form[2], form[3], form[4]
        it(name .. ": the caller owns it, others neither see its row nor write until it ends", function()
            local _, conn = t_db()
            local log, note = event_log()
            local seen = {}
            sqlite.run(function()
                sqlite.spawn(function()
                    begin(conn)
                    seen.owner_in = conn.in_transaction
                    seen.owner_count = scalar(conn, "SELECT count(*) FROM t")
                    note("owner began")
                    wait_for(function() return seen.issued end, "the other write")
                    sqlite.sleep(0.02)
                    note("owner ends")
                    finish(conn)
                    seen.owner_after = conn.in_transaction
                end)
                sqlite.spawn(function()
                    wait_for(function() return log[1] == "owner began" end, "BEGIN")
                    seen.other_in = conn.in_transaction
                    seen.other_count = scalar(conn, "SELECT count(*) FROM t")
                    seen.issued = true
                    conn:execute("INSERT INTO t (v) VALUES ('other')")
                    note("other write returned")
                end)
            end)
            assert.same({ "owner began", "owner ends", "other write returned" }, log)
            assert.same({ owner_in = true, owner_count = 1, owner_after = false, other_in = false,
                          other_count = 0, issued = true }, seen)
            assert.same(kept and { "mine", "other" } or { "other" }, t_values(conn))
        end)
    end

    it("in_transaction answers for the calling coroutine, inside transaction() too", function()
        local _, conn = t_db()
        local seen = {}
        assert.is_false(conn.in_transaction)
        sqlite.run(function()
            sqlite.spawn(function()
                conn:transaction(function()
                    seen.a_inside = conn.in_transaction
                    seen.a_began = true
                    wait_for(function() return seen.b ~= nil end, "B's look")
                end)
                seen.a_after = conn.in_transaction
            end)
            sqlite.spawn(function()
                wait_for(function() return seen.a_began end, "A's transaction")
                seen.b = conn.in_transaction
                seen.c = sqlite.spawn(function() return conn.in_transaction end):join()
            end)
        end)
        assert.same({ a_inside = true, a_began = true, b = false, c = false, a_after = false }, seen)
        assert.is_false(conn.in_transaction)
    end)

    it("the main thread owns its BEGIN: a raw coroutine's in_transaction is false, its "
       .. "commit()/rollback() are no-ops and its read sees only committed rows", function()
        local path, conn = t_db()
        conn:execute("INSERT INTO t (v) VALUES ('committed')")
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t (v) VALUES ('pending')")
        local co = coroutine.wrap(function()
            local inside = conn.in_transaction
            conn:commit()
            conn:rollback()
            return inside, conn.in_transaction, t_values(conn)
        end)
        local inside, after, values = co()
        assert.is_false(inside)
        assert.is_false(after)
        assert.same({ "committed" }, values)
        assert.is_true(conn.in_transaction)
        assert.same({ "committed", "pending" }, t_values(conn))
        assert.same({ "committed" }, t_values(open(path))) -- the raw commit() committed nothing
        conn:rollback()
        assert.is_false(conn.in_transaction)
        assert.same({ "committed" }, t_values(conn))
    end)
end)

-- ---- a call that cannot yield, while another coroutine's transaction holds the writer ------

describe("a call that blocks its thread while another coroutine owns the writer's transaction", function()
    local function busy(err)
        assert.is_true(sqlite.is_error(err), tostring(err))
        assert.equal("OperationalError", err.kind)
        assert.equal(5, err.code) -- SQLITE_BUSY
        assert.matches("another owner's transaction", err.message)
    end

    it("fails at once with OperationalError (SQLITE_BUSY) instead of waiting for ever, when a "
       .. "raw coroutine writes inside sqlite.run; its read goes on; the owner commits", function()
        local _, conn = t_db()
        conn:execute("INSERT INTO t (v) VALUES ('committed')")
        local err, read
        sqlite.run(function()
            local owner = sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('pending')")
                sqlite.sleep(0.05)
                conn:execute("COMMIT")
            end)
            sqlite.sleep(0.01)
            coroutine.wrap(function() -- not the scheduler's: its calls block the thread
                read = t_values(conn)
                local ok, e = pcall(conn.execute, conn, "INSERT INTO t (v) VALUES ('raw')")
                err = not ok and e or "the write returned"
            end)()
            owner:join()
        end)
        assert.same({ "committed" }, read)
        busy(err)
        assert.same({ "committed", "pending" }, t_values(conn))
    end)

    it("fails the same way for the main thread while a suspended raw coroutine owns it; the "
       .. "owner, resumed, commits, and the main thread can write again", function()
        local _, conn = t_db()
        local co = coroutine.create(function()
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t (v) VALUES ('owner')")
            coroutine.yield()
            conn:execute("COMMIT")
        end)
        assert(coroutine.resume(co))
        local ok, err = pcall(conn.execute, conn, "INSERT INTO t (v) VALUES ('main')")
        assert.is_false(ok)
        busy(err)
        assert.same({}, t_values(conn)) -- the main thread reads committed rows only
        assert(coroutine.resume(co))
        conn:execute("INSERT INTO t (v) VALUES ('main')")
        assert.same({ "main", "owner" }, t_values(conn)) -- t_values sorts
    end)
end)

-- ---- commit and rollback by a coroutine that owns nothing -------------------------------

describe("commit() and rollback() from a coroutine that owns nothing", function()
    -- A begins and inserts; B calls commit() and rollback() meanwhile; then A ends with `finish`.
    local function non_owner_ends(finish)
        local path, conn = t_db()
        local other = open(path)
        local seen = {}
        sqlite.run(function()
            sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('pending')")
                seen.began = true
                wait_for(function() return seen.b_done end, "B's commit and rollback")
                seen.owner_still_in = conn.in_transaction
                seen.owner_sees = t_values(conn)
                finish(conn)
                seen.owner_after = conn.in_transaction
            end)
            sqlite.spawn(function()
                wait_for(function() return seen.began end, "A's BEGIN")
                seen.b_commit = conn:commit()
                seen.b_sees_after_commit = t_values(conn)
                seen.other_conn_sees = t_values(other)
                seen.b_rollback = conn:rollback()
                conn:commit()
                seen.b_in = conn.in_transaction
                seen.b_done = true
            end)
        end)
        assert.is_nil(seen.b_commit)
        assert.is_nil(seen.b_rollback)
        assert.is_false(seen.b_in)
        assert.same({}, seen.b_sees_after_commit)
        assert.same({}, seen.other_conn_sees)
        assert.is_true(seen.owner_still_in)
        assert.same({ "pending" }, seen.owner_sees)
        assert.is_false(seen.owner_after)
        return t_values(other)
    end

    it("leave the owner's transaction open and uncommitted; the owner can still roll it back", function()
        assert.same({}, non_owner_ends(function(c) c:rollback() end))
    end)

    it("leave the owner's transaction open and uncommitted; the owner can still commit it", function()
        assert.same({ "pending" }, non_owner_ends(function(c) c:commit() end))
    end)

    it("a non-owner's COMMIT statement waits for the owner's transaction and ends nothing of it",
       function()
        local _, conn = t_db()
        local log, note = event_log()
        local seen = {}
        sqlite.run(function()
            sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('pending')")
                note("owner began")
                wait_for(function() return seen.issued end, "B's COMMIT")
                sqlite.sleep(0.02)
                seen.owner_in = conn.in_transaction
                note("owner rolls back")
                conn:execute("ROLLBACK")
            end)
            sqlite.spawn(function()
                wait_for(function() return log[1] == "owner began" end, "A's BEGIN")
                seen.issued = true
                seen.ok, seen.err = pcall(conn.execute, conn, "COMMIT")
                note("other COMMIT returned")
            end)
        end)
        assert.same({ "owner began", "owner rolls back", "other COMMIT returned" }, log)
        assert.is_true(seen.owner_in)
        assert.is_false(seen.ok) -- it ran after the ROLLBACK: no transaction was active
        assert.is_true(sqlite.is_error(seen.err), tostring(seen.err))
        assert.equal("OperationalError", seen.err.kind)
        assert.same({}, t_values(conn))
        assert.is_false(conn.in_transaction)
    end)
end)

-- ---- an owner that goes away ---------------------------------------------------------------

describe("a transaction whose owner goes away", function()
    -- Inside sqlite.run: runs fn in a coroutine of its own and returns its results, or fails
    -- (rather than hanging) when it has not returned in about ten seconds.
    local function completes(fn, what)
        local done = false
        local h = sqlite.spawn(function()
            local r = pack(fn())
            done = true
            return support.unpack(r, 1, r.n)
        end)
        wait_for(function() return done end, what)
        return h:join()
    end

    -- Stops the collector for the rest of the test: the rollback of an ended owner's
    -- transaction must not wait for the coroutine to be collected.
    local function no_gc()
        collectgarbage("stop")
        finally(function()
            collectgarbage("restart")
        end)
    end

    it("is rolled back when its spawned coroutine returns without committing; a write held "
       .. "back behind it and later writes complete", function()
        no_gc()
        local path, conn = t_db()
        local seen = {}
        sqlite.run(function()
            local owner = sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('abandoned')")
                seen.began = true
                wait_for(function() return seen.issued end, "the held-back write")
                sqlite.sleep(0.02)
                return "left", nil, 3
            end)
            sqlite.spawn(function()
                wait_for(function() return seen.began end, "BEGIN")
                seen.issued = true
                conn:execute("INSERT INTO t (v) VALUES ('held back')")
                seen.waiting_in = conn.in_transaction
            end)
            seen.owner_results = pack(owner:join())
            wait_for(function() return seen.waiting_in ~= nil end, "the held-back write")
            seen.later_in = completes(function()
                conn:execute("INSERT INTO t (v) VALUES ('later')")
                return conn.in_transaction
            end, "a write after the owner ended")
        end)
        assert.same({ "left", nil, 3, n = 3 }, seen.owner_results)
        assert.is_false(seen.waiting_in)
        assert.is_false(seen.later_in)
        assert.is_false(conn.in_transaction)
        conn:execute("INSERT INTO t (v) VALUES ('main')")
        assert.same({ "held back", "later", "main" }, t_values(conn))
        assert.same({ "held back", "later", "main" }, t_values(open(path)))
    end)

    it("is rolled back when its coroutine dies with an error; the error reaches join() "
       .. "unchanged and the next write completes", function()
        no_gc()
        local path, conn = t_db()
        local boom = { "boom" }
        local seen = {}
        sqlite.run(function()
            local owner = sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('doomed')")
                error(boom)
            end)
            seen.ok, seen.err = pcall(owner.join, owner)
            completes(function()
                conn:execute("INSERT INTO t (v) VALUES ('after')")
            end, "a write after the owner died")
        end)
        assert.is_false(seen.ok)
        assert.is_true(rawequal(boom, seen.err))
        assert.is_false(conn.in_transaction)
        assert.same({ "after" }, t_values(conn))
        assert.same({ "after" }, t_values(open(path)))
    end)

    it("is rolled back when a statement error kills its coroutine (rows before the error too)",
       function()
        no_gc()
        local _, conn = t_db()
        local seen = {}
        sqlite.run(function()
            local owner = sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (id, v) VALUES (1, 'first')")
                conn:execute("INSERT INTO t (id, v) VALUES (1, 'duplicate')")
            end)
            seen.ok, seen.err = pcall(owner.join, owner)
            completes(function()
                conn:execute("INSERT INTO t (id, v) VALUES (2, 'after')")
            end, "a write after the owner died")
        end)
        assert.is_false(seen.ok)
        assert.is_true(sqlite.is_error(seen.err), tostring(seen.err))
        assert.equal("IntegrityError", seen.err.kind)
        assert.same({ "after" }, t_values(conn))
    end)

    it("is rolled back when its owner is a raw coroutine that is garbage-collected; the main "
       .. "thread's next write completes", function()
        local path, conn = t_db()
        local co = coroutine.create(function()
            conn:execute("BEGIN")
            conn:execute("INSERT INTO t (v) VALUES ('collected')")
            coroutine.yield(conn.in_transaction)
            conn:execute("COMMIT") -- never reached
        end)
        local ok, in_transaction = coroutine.resume(co)
        assert.is_true(ok)
        assert.is_true(in_transaction)
        assert.is_false(conn.in_transaction)
        assert.same({}, t_values(conn)) -- the main thread reads committed rows only
        co = nil -- luacheck: ignore 311
        collectgarbage()
        collectgarbage()
        sqlite.run(function() -- fails rather than hangs if the transaction stayed open
            completes(function()
                conn:execute("INSERT INTO t (v) VALUES ('coroutine')")
            end, "a write after the owner was collected")
        end)
        conn:execute("INSERT INTO t (v) VALUES ('main')")
        assert.is_false(conn.in_transaction)
        assert.same({ "coroutine", "main" }, t_values(conn))
        assert.same({ "coroutine", "main" }, t_values(open(path)))
    end)

    it("is rolled back when its spawned coroutine is left behind by a failed sqlite.run and "
       .. "collected", function()
        local _, conn = t_db()
        local began = false
        local ok, err = pcall(sqlite.run, function()
            sqlite.spawn(function()
                conn:execute("BEGIN")
                conn:execute("INSERT INTO t (v) VALUES ('left behind')")
                began = true
                sqlite.sleep(3600)
            end)
            wait_for(function() return began end, "BEGIN")
            error("gave up", 0)
        end)
        assert.is_false(ok)
        assert.equal("gave up", err)
        collectgarbage()
        collectgarbage()
        sqlite.run(function()
            completes(function()
                conn:execute("INSERT INTO t (v) VALUES ('after')")
            end, "a write after the owner was collected")
        end)
        assert.same({ "after" }, t_values(conn))
    end)

    it("is rolled back when sqlite.run fails while its coroutine's BEGIN is on its way (the "
       .. "coroutine never learns it owns a transaction), or while it sleeps in its transaction, "
       .. "before the next call, also one that blocks after the run", function()
        local _, conn = t_db()
        for _, mode in ipairs({ "DEFERRED", "IMMEDIATE", "sleeping" }) do
            local ok, err = pcall(sqlite.run, function()
                local began = false
                sqlite.spawn(function()
                    conn:execute(mode == "sleeping" and "BEGIN" or "BEGIN " .. mode)
                    conn:execute("INSERT INTO t (v) VALUES ('left behind')")
                    began = true
                    sqlite.sleep(3600)
                end)
                if mode == "sleeping" then
                    wait_for(function() return began end, "BEGIN")
                else
                    sqlite.sleep(0) -- it runs up to its BEGIN, and waits
                end
                error("gave up", 0)
            end)
            assert.is_false(ok)
            assert.equal("gave up", err)
            -- from the main thread: it blocks, and would fail at once if the writer were held
            conn:execute("INSERT INTO t (v) VALUES ('after " .. mode .. "')")
            assert.is_false(conn.in_transaction)
        end
        assert.same({ "after DEFERRED", "after IMMEDIATE", "after sleeping" }, t_values(conn))
    end)

    -- coroutine.close exists from Lua 5.4 on.
    local close_it = coroutine.close and it or pending
    close_it("is rolled back at once when its coroutine is closed while it sleeps or joins: the "
             .. "writes behind it go on (a joinee that writes behind it would wait for ever)",
             function()
        local _, conn = t_db()
        for _, how in ipairs({ "sleep", "join" }) do
            local order = {}
            sqlite.run(function()
                local co
                sqlite.spawn(function()
                    co = coroutine.running()
                    conn:execute("BEGIN IMMEDIATE")
                    conn:execute("INSERT INTO t (v) VALUES ('closed')")
                    if how == "sleep" then
                        sqlite.sleep(5)
                    else
                        sqlite.spawn(function() sqlite.sleep(5) end):join()
                    end
                end)
                sqlite.sleep(0.05) -- it owns the writer now, and waits
                sqlite.spawn(function() sqlite.sleep(1); order[#order + 1] = "timer" end)
                assert.is_true(coroutine.close(co))
                conn:execute("INSERT INTO t (v) VALUES ('after " .. how .. "')")
                order[#order + 1] = "written"
            end)
            assert.same({ "written", "timer" }, order)
        end
        assert.same({ "after join", "after sleep" }, t_values(conn)) -- (ORDER BY v)
    end)
end)

-- ---- conn:transaction -------------------------------------------------------------------

describe("conn:transaction(fn [, mode])", function()
    it("calls fn(conn), commits on return and returns all of fn's results, nils included", function()
        local path, conn = t_db()
        local got
        local r = pack(conn:transaction(function(c)
            got = c
            c:execute("INSERT INTO t (v) VALUES ('x')")
            assert.is_true(c.in_transaction)
            return 1, nil, "three", nil
        end))
        assert.is_true(rawequal(conn, got))
        assert.same({ 1, nil, "three", nil, n = 4 }, r)
        assert.is_false(conn.in_transaction)
        assert.same({ "x" }, t_values(open(path)))
        assert.equal(0, select("#", conn:transaction(function() end)))
    end)

    it("rolls back and re-raises fn's error value unchanged: a table, a string, an error object",
       function()
        local path, conn = t_db()
        local marker = { "marker" }
        local ok, err = pcall(conn.transaction, conn, function(c)
            c:execute("INSERT INTO t (v) VALUES ('x')")
            error(marker)
        end)
        assert.is_false(ok)
        assert.is_true(rawequal(marker, err))

        ok, err = pcall(conn.transaction, conn, function(c)
            c:execute("INSERT INTO t (v) VALUES ('y')")
            error("plain", 0)
        end)
        assert.is_false(ok)
        assert.equal("plain", err)

        local seen_inside
        ok, err = pcall(conn.transaction, conn, function(c)
            c:execute("INSERT INTO t (id, v) VALUES (1, 'z')")
            local _, e = pcall(c.execute, c, "INSERT INTO t (id, v) VALUES (1, 'dup')")
            seen_inside = e
            error(e)
        end)
        assert.is_false(ok)
        assert.is_true(rawequal(seen_inside, err))
        assert.equal("IntegrityError", err.kind)

        assert.is_false(conn.in_transaction)
        assert.same({}, t_values(conn))
        assert.same({}, t_values(open(path)))
    end)

    it("does not fail when fn ends the transaction itself with commit() or rollback()", function()
        local path, conn = t_db()
        assert.equal("committed", conn:transaction(function(c)
            c:execute("INSERT INTO t (v) VALUES ('kept')")
            c:commit()
            assert.is_false(c.in_transaction)
            return "committed"
        end))
        assert.equal("rolled back", conn:transaction(function(c)
            c:execute("INSERT INTO t (v) VALUES ('dropped')")
            c:rollback()
            return "rolled back"
        end))
        assert.is_false(conn.in_transaction)
        assert.same({ "kept" }, t_values(open(path)))
    end)

    it("nested: an inner error caught by the outer function rolls back only the inner part", function()
        local path, conn = t_db()
        local marker = { "inner" }
        local inner_ok, inner_err, in_after
        conn:transaction(function(c)
            c:execute("INSERT INTO t (v) VALUES ('outer 1')")
            inner_ok, inner_err = pcall(c.transaction, c, function(c2)
                c2:execute("INSERT INTO t (v) VALUES ('inner')")
                error(marker)
            end)
            in_after = c.in_transaction
            c:execute("INSERT INTO t (v) VALUES ('outer 2')")
        end)
        assert.is_false(inner_ok)
        assert.is_true(rawequal(marker, inner_err))
        assert.is_true(in_after)
        assert.is_false(conn.in_transaction)
        assert.same({ "outer 1", "outer 2" }, t_values(open(path)))
    end)

    it("nested: an inner SQL error caught by the outer function keeps the outer rows", function()
        local _, conn = t_db()
        conn:transaction(function(c)
            c:execute("INSERT INTO t (id, v) VALUES (1, 'outer')")
            raises("IntegrityError", c.transaction, c, function(c2)
                c2:execute("INSERT INTO t (id, v) VALUES (2, 'inner ok')")
                c2:execute("INSERT INTO t (id, v) VALUES (1, 'inner dup')")
            end)
        end)
        assert.same({ "outer" }, t_values(conn))
    end)

    it("nested: an outer error after an inner call returned rolls back everything and is "
       .. "re-raised unchanged", function()
        local path, conn = t_db()
        local marker = { "outer" }
        local inner_results
        local ok, err = pcall(conn.transaction, conn, function(c)
            c:execute("INSERT INTO t (v) VALUES ('outer')")
            inner_results = pack(c:transaction(function(c2)
                c2:execute("INSERT INTO t (v) VALUES ('inner')")
                return "inner", nil
            end))
            assert.same({ "inner", "outer" }, t_values(c))
            error(marker)
        end)
        assert.is_false(ok)
        assert.is_true(rawequal(marker, err))
        assert.same({ "inner", nil, n = 2 }, inner_results)
        assert.is_false(conn.in_transaction)
        assert.same({}, t_values(conn))
        assert.same({}, t_values(open(path)))
    end)

    it("nested three deep: a failure caught one level up keeps the levels above it", function()
        local _, conn = t_db()
        conn:transaction(function(c)
            c:execute("INSERT INTO t (v) VALUES ('1')")
            c:transaction(function()
                c:execute("INSERT INTO t (v) VALUES ('2')")
                assert.is_false(pcall(c.transaction, c, function()
                    c:execute("INSERT INTO t (v) VALUES ('3')")
                    error("level 3")
                end))
                c:execute("INSERT INTO t (v) VALUES ('2b')")
            end)
            -- level 2 fails after its level 3 returned: both go
            assert.is_false(pcall(c.transaction, c, function()
                c:execute("INSERT INTO t (v) VALUES ('x2')")
                c:transaction(function()
                    c:execute("INSERT INTO t (v) VALUES ('x3')")
                end)
                error("level 2")
            end))
        end)
        assert.same({ "1", "2", "2b" }, t_values(conn))
    end)

    it("inside a transaction begun with BEGIN uses a savepoint and leaves the transaction open",
       function()
        local _, conn = t_db()
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t (v) VALUES ('outer')")
        assert.equal("ok", conn:transaction(function(c)
            c:execute("INSERT INTO t (v) VALUES ('kept inner')")
            return "ok"
        end))
        assert.is_false(pcall(conn.transaction, conn, function(c)
            c:execute("INSERT INTO t (v) VALUES ('failed inner')")
            error("no")
        end))
        assert.is_true(conn.in_transaction)
        assert.same({ "kept inner", "outer" }, t_values(conn))
        conn:rollback()
        assert.same({}, t_values(conn))
    end)

    describe("modes", function()
        -- Runs fn inside conn:transaction(.., mode) on a rollback-journal database and reports
        -- whether another connection (no busy wait) could write and read meanwhile.
        local function other_access(mode)
            local path = new_db()
            local conn = open(path, { journal_mode = "delete" })
            conn:execute("CREATE TABLE t (v TEXT)")
            local other = open(path, { journal_mode = "delete", busy_timeout = 0, readers = 1 })
            local access = {}
            conn:transaction(function(c)
                access.inside = c.in_transaction
                local ok, err = pcall(other.execute, other, "INSERT INTO t VALUES ('other')")
                access.write = ok or err.kind
                ok, err = pcall(other.execute, other, "SELECT count(*) FROM t")
                access.read = ok or err.kind
            end, mode)
            assert.is_false(conn.in_transaction)
            other:execute("SELECT count(*) FROM t") -- free again
            return access
        end

        it('"deferred" (any case) takes no lock until the first statement', function()
            for _, mode in ipairs({ "deferred", "DEFERRED", "Deferred" }) do
                assert.same({ inside = true, write = true, read = true }, other_access(mode), mode)
            end
        end)

        it('"immediate" (the default, any case) takes the write lock at once', function()
            for _, mode in ipairs({ "immediate", "IMMEDIATE", "Immediate", false }) do
                assert.same({ inside = true, write = "OperationalError", read = true },
                            other_access(mode or nil), tostring(mode))
            end
        end)

        it('"exclusive" (any case) locks out other connections\' reads too', function()
            for _, mode in ipairs({ "exclusive", "EXCLUSIVE", "eXclusive" }) do
                assert.same({ inside = true, write = "OperationalError", read = "OperationalError" },
                            other_access(mode), mode)
            end
        end)
    end)

    it("raises ProgrammingError for a bad mode and does not call fn or begin anything", function()
        local _, conn = t_db()
        local called = false
        for _, mode in ipairs({ "bogus", "", "begin", "savepoint", 1, true, {} }) do
            raises("ProgrammingError", conn.transaction, conn, function() called = true end, mode)
            assert.is_false(conn.in_transaction)
        end
        -- nested too
        conn:transaction(function(c)
            raises("ProgrammingError", c.transaction, c, function() called = true end, "later")
            assert.is_true(c.in_transaction)
        end)
        assert.is_false(called)
        conn:execute("INSERT INTO t (v) VALUES ('autocommit')")
        assert.is_false(conn.in_transaction)
    end)

    it("raises ProgrammingError when fn is not a function", function()
        local _, conn = t_db()
        for _, fn in ipairs({ "fn", 42, {}, true }) do
            raises("ProgrammingError", conn.transaction, conn, fn)
            raises("ProgrammingError", conn.transaction, conn, fn, "deferred")
        end
        raises("ProgrammingError", conn.transaction, conn)
        raises("ProgrammingError", conn.transaction, conn, nil, "immediate")
        assert.is_false(conn.in_transaction)
    end)
end)

-- ---- executemany --------------------------------------------------------------------------

describe("executemany and transactions", function()
    it("outside a transaction a failure keeps no row and leaves nothing for a later write to "
       .. "commit", function()
        local path, conn = t_db()
        raises("IntegrityError", conn.executemany, conn, "INSERT INTO t (id, v) VALUES (?, ?)",
               { { 1, "a" }, { 2, "b" }, { 2, "dup" }, { 3, "c" } })
        assert.is_false(conn.in_transaction)
        conn:execute("INSERT INTO t (id, v) VALUES (10, 'later')")
        assert.same({ "later" }, t_values(open(path)))
    end)

    it("outside a transaction a failure in a later chunk of an iterator keeps no row and "
       .. "leaves nothing pending", function()
        local path, conn = t_db()
        local i = 0
        raises("IntegrityError", conn.executemany, conn, "INSERT INTO t (id, v) VALUES (?, 'many')",
               function()
                   i = i + 1
                   if i <= 10005 then
                       return { i == 10003 and 1 or i }
                   end
               end)
        assert.is_false(conn.in_transaction)
        conn:execute("INSERT INTO t (id, v) VALUES (0, 'later')")
        assert.same({ "later" }, t_values(open(path)))
    end)

    it("inside the caller's transaction joins it and is rolled back with it", function()
        local _, conn = t_db()
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t (v) VALUES ('a')")
        assert.equal(2, conn:executemany("INSERT INTO t (v) VALUES (?)", { { "b" }, { "c" } }).rowcount)
        assert.is_true(conn.in_transaction)
        assert.same({ "a", "b", "c" }, t_values(conn))
        conn:rollback()
        assert.same({}, t_values(conn))
    end)

    it("inside the caller's transaction a failure undoes only its own rows", function()
        local _, conn = t_db()
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t (id, v) VALUES (1, 'a')")
        raises("IntegrityError", conn.executemany, conn, "INSERT INTO t (id, v) VALUES (?, ?)",
               { { 2, "b" }, { 1, "dup" } })
        assert.is_true(conn.in_transaction)
        assert.same({ "a" }, t_values(conn))
        conn:commit()
        assert.same({ "a" }, t_values(conn))
    end)

    -- A owns a transaction (conn:transaction) ending with `a_fails` or not; B runs `many`
    -- meanwhile.
    local function beside_owner(a_fails, many)
        local path, conn = t_db()
        local log, note = event_log()
        local seen = {}
        sqlite.run(function()
            sqlite.spawn(function()
                seen.a_ok = pcall(conn.transaction, conn, function(c)
                    c:execute("INSERT INTO t (id, v) VALUES (100, 'owner')")
                    note("owner began")
                    wait_for(function() return seen.issued end, "B's executemany")
                    sqlite.sleep(0.02)
                    note("owner ends")
                    if a_fails then
                        error("undo", 0)
                    end
                end)
            end)
            sqlite.spawn(function()
                wait_for(function() return log[1] == "owner began" end, "A's transaction")
                seen.issued = true
                seen.b_ok, seen.b_err = pcall(many, conn)
                seen.b_in = conn.in_transaction
                note("executemany returned")
            end)
        end)
        assert.same({ "owner began", "owner ends", "executemany returned" }, log)
        assert.equal(not a_fails, seen.a_ok)
        assert.is_false(seen.b_in)
        return seen, t_values(open(path))
    end

    it("from another coroutine waits for the owner's transaction and is not rolled back with it",
       function()
        local seen, values = beside_owner(true, function(c)
            return c:executemany("INSERT INTO t (v) VALUES (?)", { { "m1" }, { "m2" } })
        end)
        assert.is_true(seen.b_ok)
        assert.same({ "m1", "m2" }, values)
    end)

    it("from another coroutine, failing, takes none of the owner's committed rows with it", function()
        local seen, values = beside_owner(false, function(c)
            return c:executemany("INSERT INTO t (id, v) VALUES (?, ?)", { { 1, "m1" }, { 100, "dup" } })
        end)
        assert.is_false(seen.b_ok)
        assert.equal("IntegrityError", seen.b_err.kind)
        assert.same({ "owner" }, values)
    end)
end)

-- ---- bank --------------------------------------------------------------------------------

-- A Park-Miller generator: exact with doubles (LuaJIT) and integers (5.3+). rand(n) -> 1..n.
local function prng(seed)
    local x = seed % 2147483646 + 1
    return function(n)
        x = x * 16807 % 2147483647
        return x % n + 1
    end
end

local ACCOUNTS = 10
local START = 1000
local TOTAL = ACCOUNTS * START
local WORKERS = 16
local TRANSFERS = 150 -- per worker
local MODES = { "immediate", "deferred", "exclusive", nil }

-- WORKERS coroutines each make TRANSFERS transfers, each one transaction: read the source's
-- balance, move min(wanted, balance) with two UPDATEs, and log it. Readers watch meanwhile.
local function bank(options)
    local path = new_db()
    local conn = open(path, options)
    conn:executescript([[
        CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0));
        CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, worker INTEGER NOT NULL,
                          seq INTEGER NOT NULL, src INTEGER NOT NULL, dst INTEGER NOT NULL,
                          amount INTEGER NOT NULL, UNIQUE (worker, seq));
        CREATE INDEX log_src ON log (src);
        CREATE INDEX log_dst ON log (dst);
    ]])
    local rows = {}
    for id = 1, ACCOUNTS do
        rows[id] = { id, START }
    end
    conn:executemany("INSERT INTO acct VALUES (?, ?)", rows)

    local obs = { ran = {}, wanted = {}, moved = {}, errors = {}, bad_sums = {}, bad_snapshots = {},
                  log_went_down = 0, sum_reads = 0, snapshot_reads = 0, finished = 0 }
    local SNAPSHOT = [[
        SELECT (SELECT count(*) FROM log),
               (SELECT count(*) FROM acct a
                 WHERE a.bal <> ? + (SELECT coalesce(sum(amount), 0) FROM log WHERE dst = a.id)
                                  - (SELECT coalesce(sum(amount), 0) FROM log WHERE src = a.id))]]
    sqlite.run(function()
        for w = 1, WORKERS do
            obs.ran[w], obs.wanted[w], obs.moved[w] = {}, {}, {}
            sqlite.spawn(function()
                local rand = prng(w * 7919)
                local mode = MODES[w % 4 + 1]
                -- a failing worker is counted as finished too, or the readers would go on for ever
                local ok, err = pcall(function()
                    for k = 1, TRANSFERS do
                        local a = rand(ACCOUNTS)
                        local b = (a + rand(ACCOUNTS - 1) - 1) % ACCOUNTS + 1
                        local want = rand(300)
                        obs.wanted[w][k] = want
                        obs.moved[w][k] = conn:transaction(function(c)
                            obs.ran[w][k] = (obs.ran[w][k] or 0) + 1
                            local bal = scalar(c, "SELECT bal FROM acct WHERE id = ?", a)
                            if k % 4 == 0 then
                                sqlite.sleep(0) -- let the others run between the read and the write
                            end
                            local amount = math.min(want, bal)
                            c:execute("UPDATE acct SET bal = bal - ? WHERE id = ?", amount, a)
                            c:execute("UPDATE acct SET bal = bal + ? WHERE id = ?", amount, b)
                            c:execute("INSERT INTO log (worker, seq, src, dst, amount) "
                                      .. "VALUES (?, ?, ?, ?, ?)", w, k, a, b, amount)
                            return amount
                        end, mode)
                    end
                end)
                if not ok then
                    obs.errors[#obs.errors + 1] = ("worker %d: %s"):format(w, tostring(err))
                end
                obs.finished = obs.finished + 1
            end)
        end
        for _ = 1, 2 do
            sqlite.spawn(function()
                repeat
                    local row = conn:execute("SELECT sum(bal), count(*) FROM acct"):fetchone()
                    obs.sum_reads = obs.sum_reads + 1
                    if row[1] ~= TOTAL or row[2] ~= ACCOUNTS then
                        obs.bad_sums[#obs.bad_sums + 1] = { row[1], row[2] }
                    end
                    sqlite.sleep(0.001) -- keep watching without hogging the CPU
                until obs.finished == WORKERS
            end)
        end
        sqlite.spawn(function()
            local last = 0
            repeat
                local row = conn:execute(SNAPSHOT, START):fetchone()
                obs.snapshot_reads = obs.snapshot_reads + 1
                if row[1] < last then
                    obs.log_went_down = obs.log_went_down + 1
                end
                last = row[1]
                if row[2] ~= 0 then
                    obs.bad_snapshots[#obs.bad_snapshots + 1] = { row[1], row[2] }
                end
                sqlite.sleep(0.002)
            until obs.finished == WORKERS
        end)
    end)

    -- every transfer ran exactly once
    assert.same({}, obs.errors)
    assert.equal(WORKERS, obs.finished)
    for w = 1, WORKERS do
        for k = 1, TRANSFERS do
            assert.equal(1, obs.ran[w][k], ("transfer %d of worker %d ran %s times")
                         :format(k, w, tostring(obs.ran[w][k])))
        end
    end
    assert.same({}, obs.bad_sums)
    assert.same({}, obs.bad_snapshots)
    assert.equal(0, obs.log_went_down)
    assert.is_true(obs.sum_reads >= 2)
    assert.is_true(obs.snapshot_reads >= 1)

    local check = open(path)
    assert.equal(TOTAL, scalar(check, "SELECT sum(bal) FROM acct"))
    assert.equal(WORKERS * TRANSFERS, scalar(check, "SELECT count(*) FROM log"))
    -- Replaying the log in commit order gives each transfer's amount (the balance it read was
    -- the committed one: transfers were serial) and the final balances.
    local bal = {}
    for id = 1, ACCOUNTS do
        bal[id] = START
    end
    local replay_errors = {}
    for row in check:execute("SELECT worker, seq, src, dst, amount FROM log ORDER BY id"):rows() do
        local w, k, src, dst, amount = row[1], row[2], row[3], row[4], row[5]
        local expect = math.min(obs.wanted[w][k], bal[src])
        if amount ~= expect or amount ~= obs.moved[w][k] then
            replay_errors[#replay_errors + 1] = { w, k, amount, expect, obs.moved[w][k] }
        end
        bal[src], bal[dst] = bal[src] - amount, bal[dst] + amount
    end
    assert.same({}, replay_errors)
    local final = {}
    for row in check:execute("SELECT id, bal FROM acct ORDER BY id"):rows() do
        final[row[1]] = row[2]
    end
    assert.same(bal, final)
    assert.equal("ok", scalar(check, "PRAGMA integrity_check"))
    assert.is_false(conn.in_transaction)
end

describe("a bank of transfers in transactions", function()
    it(("%d coroutines x %d transfers keep the total, each runs once, readers never see a "
        .. "partial transfer"):format(WORKERS, TRANSFERS), function()
        bank()
    end)

    it("the same without group commit", function()
        bank({ group_commit = false })
    end)

    it("the same with no readers (everything on the writer)", function()
        bank({ readers = 0 })
    end)
end)
