-- Lifecycle: close, garbage collection and abandoned coroutines never lose acknowledged work,
-- never crash a worker, and leave no thread or file descriptor behind.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local tmpdb = support.tmpdb

-- The pools' threads and the process's descriptors now (support.holdings), and the check that
-- there are no more of them later (support.assert_nothing_left, which says what it counted).
local holdings, assert_nothing_left = support.holdings, support.assert_nothing_left

describe("lifecycle", function()
    local path, cleanup
    before_each(function()
        path, cleanup = tmpdb()
    end)
    after_each(function()
        cleanup()
    end)

    it("close() waits for statements other coroutines submitted before it", function()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x INTEGER)")
        local done = 0
        sqlite.run(function()
            for i = 1, 50 do
                sqlite.spawn(function()
                    conn:execute("INSERT INTO t VALUES (?)", i)
                    done = done + 1
                end)
            end
            sqlite.sleep(0) -- let them submit
            conn:close()
        end)
        assert.is_true(conn.closed)
        local check = sqlite.connect(path)
        assert.equal(done, check:execute("SELECT count(*) FROM t"):fetchone()[1])
        check:close()
    end)

    it("close() waits for the reads other coroutines submitted before it: each gets its whole "
       .. "result", function()
        local conn = sqlite.connect(path, { readers = 2 })
        -- a few ms each: most of them are still queued when close() begins
        local sum = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) "
                    .. "SELECT sum(n), count(*) FROM c"
        local got, submitted, closed_at = {}, 0, nil
        sqlite.run(function()
            for i = 1, 40 do
                sqlite.spawn(function()
                    submitted = submitted + 1 -- the execute below submits before it yields
                    local ok, row = pcall(function()
                        return conn:execute(sum, 20000 + i):fetchone()
                    end)
                    got[i] = ok and row or tostring(row)
                end)
            end
            sqlite.sleep(0) -- let them submit
            closed_at = submitted
            conn:close()
        end)
        assert.equal(40, closed_at)
        local wrong = {}
        for i = 1, 40 do
            local n = 20000 + i
            local row = got[i]
            if type(row) ~= "table" or row[1] ~= n * (n + 1) / 2 or row[2] ~= n then
                wrong[#wrong + 1] = i .. ": " .. (type(row) == "table" and tostring(row[1]) or tostring(row))
            end
        end
        assert.same({}, wrong)
        assert.is_true(conn.closed)
    end)

    it("a read whose completion is dispatched together with the close's can still be fetched",
       function()
        local conn = sqlite.connect(path)
        local row, err
        sqlite.run(function()
            sqlite.spawn(function()
                local ok, r = pcall(function()
                    return conn:execute("SELECT 42"):fetchone()
                end)
                row, err = ok and r, not ok and r
            end)
            sqlite.spawn(conn.close, conn)
            sqlite.spawn(function()
                -- Holds the Lua thread, without yielding, while the read and then the close
                -- complete: one dispatch delivers both, the pool is closed when the read's
                -- coroutine fetches, and its close() has not returned.
                local t = os.clock()
                while os.clock() - t < 0.2 do
                end
            end)
        end)
        assert.is_false(err)
        assert.same({ 42, n = 1 }, row)
        assert.is_true(conn.closed)
    end)

    it("close() rolls back a transaction left open and keeps what was committed", function()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x INTEGER)")
        conn:execute("INSERT INTO t VALUES (1)")
        conn:execute("BEGIN")
        conn:execute("INSERT INTO t VALUES (2)")
        conn:close()
        local check = sqlite.connect(path)
        local rows = check:execute("SELECT x FROM t"):fetchall()
        assert.same({ { 1, n = 1 } }, rows)
        check:close()
    end)

    it("close() with a half-read streamed cursor releases it", function()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x INTEGER, pad TEXT)")
        local i = 0
        conn:executemany("INSERT INTO t VALUES (?, ?)", function()
            i = i + 1
            if i <= 20000 then
                return { i, string.rep("p", 100) }
            end
        end)
        local cur = conn:execute("SELECT * FROM t")
        assert.equal(1, cur:fetchone()[1])
        conn:close()
        assert.has_error(function() cur:fetchone() end)
        local ok, err = pcall(cur.fetchone, cur)
        assert.is_false(ok)
        assert.equal("ConnectionClosedError", err.kind)
    end)

    it("a collected cursor gives its reader back", function()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x INTEGER, pad TEXT)")
        local rows = {}
        for i = 1, 20000 do
            rows[i] = { i, string.rep("p", 100) }
        end
        conn:executemany("INSERT INTO t VALUES (?, ?)", rows)
        local function streaming()
            return support.streaming_readers(conn)
        end
        -- In a function of its own: LuaJIT keeps a dead local's stack slot (and so the
        -- cursor) alive until the slot is reused.
        local function stream_and_forget()
            local cur = conn:execute("SELECT * FROM t")
            cur:fetchone()
            return streaming()
        end
        assert.equal(1, stream_and_forget())
        -- The release travels as a task to that reader, which takes it when it next looks at
        -- its queue: wait for it (bounded), collecting meanwhile.
        local deadline = os.time() + 5
        repeat
            collectgarbage()
            collectgarbage()
            conn:execute("SELECT 1"):fetchall()
        until streaming() == 0 or os.time() > deadline
        assert.equal(0, streaming())
        conn:close()
    end)

    it("an abandoned coroutine's completion is freed and the pool keeps working", function()
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x INTEGER)")
        local ok, err = pcall(sqlite.run, function()
            for i = 1, 20 do
                sqlite.spawn(function()
                    conn:execute("INSERT INTO t VALUES (?)", i)
                    conn:execute("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c " ..
                                 "WHERE n < 200000) SELECT count(*) FROM c")
                end)
            end
            sqlite.sleep(0)
            error("main gives up")
        end)
        assert.is_false(ok)
        assert.matches("main gives up", tostring(err))
        -- the abandoned coroutines' statements still complete on the workers
        sqlite.run(function()
            assert.equal(42, conn:execute("SELECT 42"):fetchone()[1])
            sqlite.sleep(0.05)
            assert.equal(0, sqlite.dispatch())
        end)
        local n = conn:execute("SELECT count(*) FROM t"):fetchone()[1]
        assert.is_true(n >= 0 and n <= 20)
        conn:close()
    end)

    it("a connection collected while its statements run is closed after they finish", function()
        local before = holdings()
        do
            local conn = sqlite.connect(path)
            conn:execute("CREATE TABLE t (x INTEGER)")
            sqlite.run(function()
                for i = 1, 10 do
                    sqlite.spawn(function()
                        conn:execute("INSERT INTO t VALUES (?)", i)
                    end)
                end
            end)
        end
        collectgarbage()
        collectgarbage()
        local check = sqlite.connect(path)
        assert.equal(10, check:execute("SELECT count(*) FROM t"):fetchone()[1])
        check:close()
        assert_nothing_left({ threads = before.threads })
    end)

    -- The pool's connections open one after another: readers opening a new WAL database at
    -- once raced to build its index, and the losers got SQLITE_BUSY_RECOVERY (at once with
    -- busy_timeout = 0), 8 to 33 times in 300 opens.
    it("opening a new file never loses a race against itself, even with busy_timeout = 0", function()
        local failures = {}
        for i = 1, 150 do
            local file = support.temp_path()
            local ok, conn = pcall(sqlite.connect, file, { busy_timeout = 0, readers = 3 })
            if ok then
                ok, conn = pcall(function()
                    conn:execute("CREATE TABLE t (x)")
                    assert(conn:execute("SELECT count(*) FROM t"):fetchone()[1] == 0)
                    return conn
                end)
            end
            if ok then
                conn:close()
            else
                failures[#failures + 1] = i .. ": " .. tostring(conn)
            end
            support.remove_db(file)
        end
        assert.same({}, failures)
    end)

    it("opening and closing pools leaves no thread and no descriptor behind", function()
        local conn = sqlite.connect(path)
        conn:close()
        collectgarbage()
        collectgarbage()
        local before = holdings()
        local files = {}
        for _ = 1, 20 do
            local c = sqlite.connect(path, { readers = 3 })
            c:execute("SELECT 1"):fetchall()
            c:close()
            local m = sqlite.connect(":memory:")
            m:execute("CREATE TABLE x (y)")
            files[#files + 1] = support.memory_file(m)
            m:close()
        end
        -- A leak would add threads and descriptors on every round; a pool or file handle of an
        -- earlier test that the collector closes meanwhile may take some away.
        assert_nothing_left(before)
        local left = {}
        for _, file in ipairs(files) do
            for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do
                if support.exists(file .. suffix) then
                    left[#left + 1] = file .. suffix
                end
            end
        end
        assert.same({}, left, "the memory databases' files left behind")
    end)

    it("a pool whose connect was abandoned midway is closed when collected", function()
        collectgarbage()
        collectgarbage()
        local before = holdings()
        local connecting = false
        local ok, err = pcall(sqlite.run, function()
            sqlite.spawn(function()
                connecting = true
                sqlite.connect(path, { readers = 3 }) -- yields; its coroutine is then dropped
            end)
            sqlite.sleep(0)
            error("gave up")
        end)
        assert.is_false(ok)
        assert.matches("gave up", tostring(err))
        assert.is_true(connecting)
        assert_nothing_left({ threads = before.threads })
        local again = sqlite.connect(path)
        assert.equal(1, again:execute("SELECT 1"):fetchone()[1])
        again:close()
    end)

    it("finished coroutines and their handles can be collected", function()
        local handles = setmetatable({}, { __mode = "k" })
        sqlite.run(function()
            for _ = 1, 100 do
                handles[sqlite.spawn(function() return 1 end)] = true
            end
        end)
        collectgarbage()
        collectgarbage()
        assert.is_nil(next(handles))
    end)

    -- A child process does not have its parent's threads: the completion hub the parent made
    -- (sqlite.fd() is its descriptor) is not the child's, which makes its own on first use.
    -- LuaJIT only: its ffi calls fork().
    it("a child forked after the parent made its hub gets a hub of its own and runs statements",
       function()
        if not jit then -- luacheck: ignore jit
            pending("fork() through LuaJIT's ffi")
            return
        end
        if (os.getenv("LD_PRELOAD") or ""):find("tsan", 1, true) then
            pending("a forked child under TSan")
            return
        end
        local ffi = require "ffi"
        pcall(ffi.cdef, "int fork(void); void _exit(int); int waitpid(int, int *, int);")
        local conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (x INTEGER)")
        sqlite.run(function()
            conn:execute("INSERT INTO t VALUES (1)")
        end)
        local parent_fd = sqlite.fd()
        local pid = ffi.C.fork()
        if pid == 0 then -- the child: nothing of it may return into busted
            local ok, same = pcall(function()
                local fd = sqlite.fd()
                local child = sqlite.connect(path)
                sqlite.run(function()
                    for i = 2, 3 do
                        sqlite.spawn(function()
                            child:execute("INSERT INTO t VALUES (?)", i)
                        end)
                    end
                end)
                child:close()
                return fd == parent_fd
            end)
            ffi.C._exit(ok and not same and 0 or 1)
        end
        assert.is_true(pid > 0)
        local status = ffi.new("int[1]")
        assert.equal(pid, ffi.C.waitpid(pid, status, 0))
        assert.equal(0, status[0]) -- exited with 0: its own hub, its statements done
        assert.equal(6, conn:execute("SELECT sum(x) FROM t"):fetchone()[1])
        conn:close()
    end)

    it("a failed open leaves no thread behind and raises OperationalError", function()
        local before = holdings()
        local ok, err = pcall(sqlite.connect, "/nonexistent-dir/x/y.db")
        assert.is_false(ok)
        assert.equal("OperationalError", err.kind)
        assert.equal(14, err.code) -- SQLITE_CANTOPEN
        assert_nothing_left(before)
    end)
end)
