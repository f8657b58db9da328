-- Locks another process holds (the sqlite3 shell, in a transaction of its own): the host's
-- loop never waits on them, not even for SQL text seen for the first time, which is classified
-- on the submitting thread; and each statement waits about busy_timeout once, counted from its
-- submission, whatever queue or group commit it is in. In WAL mode the other process's
-- BEGIN EXCLUSIVE blocks writes only; in a rollback journal (journal_mode = "delete") it
-- blocks reads too. A statement that gives up fails with OperationalError, code 5
-- (SQLITE_BUSY), "database is locked"; one whose lock goes away in time succeeds.
local uv = require "luv"
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"
local support = require "support"

local now = core.now
local pack = support.pack

-- ---- the other process ---------------------------------------------------------------------

-- The sqlite3 shell on `path`, fed SQL on a pipe, spawned without a shell and without the
-- environment's LD_PRELOAD (a sanitizer runtime that the shell is not built for), under
-- timeout(1): it ends after 60 s whatever happens here. Stopped by its pid (stop).
local Other = {}
Other.__index = Other

-- Runs luv's loop until ready() is true or `seconds` have passed; returns ready().
local function pump(ready, seconds)
    local deadline = now() + seconds
    while not ready() and now() < deadline do
        uv.run("nowait")
        uv.sleep(2)
    end
    return ready()
end

-- Starts the other process and runs `sql` there; returns once it has run.
local function other_process(path, sql)
    local o = setmetatable({ out = "", err = "", exited = false }, Other)
    o.stdin, o.stdout, o.stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
    o.proc, o.pid = uv.spawn("timeout", {
        args = { "60", "sqlite3", "-init", "/dev/null", "-batch", path },
        stdio = { o.stdin, o.stdout, o.stderr },
        env = { "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin") },
    }, function()
        o.exited = true
    end)
    assert(o.proc, "cannot start the sqlite3 shell: " .. tostring(o.pid))
    o.stdout:read_start(function(_, data) o.out = o.out .. (data or "") end)
    o.stderr:read_start(function(_, data) o.err = o.err .. (data or "") end)
    o:run(sql)
    return o
end

-- Sends SQL to the other process (no wait).
function Other:send(sql)
    assert(self.stdin:try_write(sql .. "\n"))
end

-- Runs SQL in the other process and waits until it has run (its marker printed).
function Other:run(sql)
    self.marks = (self.marks or 0) + 1
    local mark = "pasyn-mark-" .. self.marks
    self:send(sql .. "\nSELECT '" .. mark .. "';")
    assert(pump(function() return self.out:find(mark, 1, true) or self.exited end, 20),
           "the sqlite3 shell did not answer")
    assert(self.out:find(mark, 1, true), "the sqlite3 shell ended: " .. self.err)
    assert.are.equal("", self.err)
end

-- Stops the process by its pid (its transaction rolls back, its locks go) and waits for it.
function Other:stop()
    if self.stopped then
        return
    end
    self.stopped = true
    if not self.stdin:is_closing() then
        self.stdin:close()
    end
    if not self.exited then
        uv.kill(self.pid, "sigterm")
    end
    assert(pump(function() return self.exited end, 10), "the sqlite3 shell did not end")
    for _, h in ipairs({ self.stdout, self.stderr, self.proc }) do
        if not h:is_closing() then
            h:close()
        end
    end
    uv.run("nowait") -- the closes complete
end

-- ---- helpers -------------------------------------------------------------------------------

-- Runs each function of `fns` in a coroutine of its own inside sqlite.run, beside a ticker
-- that sleeps 1 ms at a time and records the longest gap between its wake-ups (the host loop's
-- lateness). Returns, for each function, { ok, value or error, seconds from the start until
-- it ended }, and the longest gap in seconds. `alongside` (optional) runs in a coroutine too.
local function run_ticking(fns, alongside)
    local out, gap, done = {}, 0, false
    local start = now()
    sqlite.run(function()
        sqlite.spawn(function()
            local last = now()
            while not done do
                sqlite.sleep(0.001)
                local t = now()
                gap = math.max(gap, t - last)
                last = t
            end
        end)
        if alongside then
            sqlite.spawn(alongside)
        end
        local handles = {}
        for i, fn in ipairs(fns) do
            handles[i] = sqlite.spawn(function()
                local r = pack(pcall(fn))
                out[i] = { ok = r[1], value = r[2], at = now() - start }
            end)
        end
        for _, h in ipairs(handles) do
            h:join()
        end
        done = true
    end)
    return out, gap
end

-- The host's loop was never held up by a wait on the lock, which lasts busy_timeout (1 s in
-- these specs): its longest gap stays far below that. (A few tens of ms are the machine's: it
-- may be busy with other work.)
local function assert_loop_kept_going(gap)
    assert.is_true(gap < 0.25, ("the host's loop stood still for %.0f ms"):format(gap * 1000))
end

local function assert_busy(outcome)
    assert.is_false(outcome.ok, "the statement succeeded")
    local err = outcome.value
    assert.is_true(sqlite.is_error(err), tostring(err))
    assert.are.equal("OperationalError", err.kind, tostring(err))
    assert.are.equal(5, err.code, tostring(err)) -- SQLITE_BUSY
    assert.are.equal("database is locked", err.message)
end

-- A database in `mode` with table w, and a pool on it with `options` (readonly: opened after
-- the file was made). The pool has read w once, so that the route of that read is known.
local function fresh(mode, options)
    local path = support.temp_path()
    local maker = sqlite.connect(path, { journal_mode = mode })
    maker:execute("CREATE TABLE w (x)")
    maker:close()
    options.journal_mode = mode
    local conn = sqlite.connect(path, options)
    support.scalar(conn, "SELECT count(*) FROM w")
    return conn, path
end

-- ---- the specs -----------------------------------------------------------------------------

describe("a lock held by another process", function()
    local conn, path, other

    after_each(function()
        if other then
            other:stop()
        end
        if conn then
            conn:close()
        end
        if path then
            support.remove_db(path)
        end
        conn, path, other = nil, nil, nil
    end)

    -- The other process makes table u, which the pool's connections have not seen yet, and
    -- holds BEGIN EXCLUSIVE.
    local function lock(p)
        other = other_process(p, "CREATE TABLE u (x); BEGIN EXCLUSIVE;")
    end

    for _, case in ipairs({
        { label = "WAL", mode = "wal" },
        { label = "rollback journal", mode = "delete" },
        { label = "rollback journal, read-only pool (reads on the readers)", mode = "delete",
          readonly = true },
    }) do
        local blocks_reads = case.mode ~= "wal"
        local readers_used = case.mode == "wal" or case.readonly -- else all runs on the writer

        describe("(" .. case.label .. ")", function()
            it("a first-seen SELECT does not hold up the host's loop" ..
               (blocks_reads and ", and fails with SQLITE_BUSY after about busy_timeout"
                             or ", and reads at once"), function()
                conn, path = fresh(case.mode, { busy_timeout = 1000, readonly = case.readonly })
                lock(path)
                local out, gap = run_ticking({
                    function() return support.scalar(conn, "SELECT count(*) FROM u") end,
                })
                io.stderr:write(("\n[locks %s] first-seen SELECT: %s after %.3f s, loop gap max %.1f ms\n")
                    :format(case.label, out[1].ok and "ok" or tostring(out[1].value), out[1].at,
                            gap * 1000))
                assert_loop_kept_going(gap)
                if blocks_reads then
                    assert_busy(out[1])
                    assert.is_true(out[1].at > 0.5 and out[1].at < 3,
                                   ("it failed after %.3f s"):format(out[1].at))
                else
                    assert.is_true(out[1].ok, tostring(out[1].value))
                    assert.are.equal(0, out[1].value)
                end
            end)

            it("a first-seen SELECT succeeds once the lock is released" ..
               (readers_used and ", and its route is then learned" or ""), function()
                conn, path = fresh(case.mode, { busy_timeout = 1000, readonly = case.readonly })
                lock(path)
                local out, gap = run_ticking({
                    function() return support.scalar(conn, "SELECT count(*) FROM u") end,
                }, function()
                    sqlite.sleep(0.3)
                    other:send("COMMIT;")
                end)
                assert_loop_kept_going(gap)
                assert.is_true(out[1].ok, tostring(out[1].value))
                assert.are.equal(0, out[1].value)
                assert.is_true(out[1].at < 3, ("it took %.3f s"):format(out[1].at))
                if not readers_used then
                    return
                end
                -- No route was kept from a classification the lock cut short: a read it is,
                -- and it runs as one, on the readers or (this call blocks) on the caller's
                -- own connection.
                local function reads(st)
                    return support.readers_sum(st, "executed") + st.inline.executed
                end
                local before = reads(conn:stats())
                for _ = 1, 3 do
                    assert.are.equal(0, support.scalar(conn, "SELECT count(*) FROM u"))
                end
                assert.is_true(reads(conn:stats()) - before >= 2)
            end)

            if not case.readonly then
                it("a first-seen INSERT does not hold up the host's loop, and fails with " ..
                   "SQLITE_BUSY after about busy_timeout", function()
                    conn, path = fresh(case.mode, { busy_timeout = 1000 })
                    lock(path)
                    local out, gap = run_ticking({
                        function() return conn:execute("INSERT INTO u VALUES (1)").rowcount end,
                    })
                    assert_loop_kept_going(gap)
                    assert_busy(out[1])
                    assert.is_true(out[1].at > 0.5 and out[1].at < 3,
                                   ("it failed after %.3f s"):format(out[1].at))
                end)

                for _, group_commit in ipairs({ true, false }) do
                    local gc = " (group_commit = " .. tostring(group_commit) .. ")"

                    it("8 INSERTs each wait busy_timeout once, from their submission" .. gc, function()
                        conn, path = fresh(case.mode, { busy_timeout = 500, group_commit = group_commit })
                        lock(path)
                        local fns = {}
                        for i = 1, 8 do
                            fns[i] = function() return conn:execute("INSERT INTO w VALUES (?)", { i }) end
                        end
                        local out = run_ticking(fns)
                        local times = {}
                        for i = 1, 8 do
                            assert_busy(out[i])
                            times[i] = ("%.3f"):format(out[i].at)
                        end
                        io.stderr:write(("\n[locks %s%s] 8 INSERTs failed at %s s\n")
                            :format(case.label, gc, table.concat(times, ", ")))
                        for i = 1, 8 do
                            assert.is_true(out[i].at > 0.25 and out[i].at < 1.5,
                                           ("INSERT %d failed after %.3f s"):format(i, out[i].at))
                        end
                    end)

                    it("8 INSERTs all succeed when the lock is released at 300 ms" .. gc, function()
                        conn, path = fresh(case.mode, { busy_timeout = 500, group_commit = group_commit })
                        lock(path)
                        local fns = {}
                        for i = 1, 8 do
                            fns[i] = function()
                                return conn:execute("INSERT INTO w VALUES (?)", { i }).rowcount
                            end
                        end
                        local out = run_ticking(fns, function()
                            sqlite.sleep(0.3)
                            other:send("COMMIT;")
                        end)
                        for i = 1, 8 do
                            assert.is_true(out[i].ok, tostring(out[i].value))
                            assert.are.equal(1, out[i].value)
                        end
                        assert.are.equal(36, support.scalar(conn, "SELECT sum(x) FROM w"))
                        assert.are.equal(8, support.scalar(conn, "SELECT count(*) FROM w"))
                    end)
                end

                it("a statement's timeout ends its wait: it fails as timed out", function()
                    conn, path = fresh(case.mode, { busy_timeout = 5000 })
                    lock(path)
                    local out = run_ticking({
                        function()
                            local cur = conn:cursor()
                            cur.timeout = 0.2
                            return cur:execute("INSERT INTO w VALUES (1)")
                        end,
                    })
                    assert.is_false(out[1].ok)
                    assert.are.equal("OperationalError", out[1].value.kind)
                    assert.are.equal(9, out[1].value.code) -- SQLITE_INTERRUPT
                    assert.are.equal("statement timed out after 0.2 s", out[1].value.message)
                    assert.is_true(out[1].at > 0.1 and out[1].at < 2, ("after %.3f s"):format(out[1].at))
                end)

                it("conn:interrupt() ends a wait: it fails as interrupted", function()
                    conn, path = fresh(case.mode, { busy_timeout = 5000 })
                    lock(path)
                    local out = run_ticking({
                        function() return conn:execute("INSERT INTO w VALUES (1)") end,
                    }, function()
                        sqlite.sleep(0.2)
                        conn:interrupt()
                    end)
                    assert.is_false(out[1].ok)
                    assert.are.equal(9, out[1].value.code, tostring(out[1].value))
                    assert.are.equal("interrupted", out[1].value.message)
                    assert.is_true(out[1].at < 2, ("after %.3f s"):format(out[1].at))
                end)

                it("PRAGMA busy_timeout run through execute answers and sets how long writes wait",
                   function()
                    conn, path = fresh(case.mode, { busy_timeout = 5000 })
                    assert.are.equal(5000, support.scalar(conn, "PRAGMA busy_timeout"))
                    assert.are.equal(200, support.scalar(conn, "PRAGMA busy_timeout = 200"))
                    assert.are.equal(200, support.scalar(conn, "PRAGMA busy_timeout"))
                    lock(path)
                    local out = run_ticking({
                        function() return conn:execute("INSERT INTO w VALUES (1)") end,
                    })
                    assert_busy(out[1])
                    assert.is_true(out[1].at > 0.1 and out[1].at < 1.5, ("after %.3f s"):format(out[1].at))
                end)
            end

            if case.readonly then
                it("12 reads on the readers each wait busy_timeout once, from their submission", function()
                    conn, path = fresh(case.mode, { busy_timeout = 500, readonly = true })
                    lock(path)
                    local fns = {}
                    for i = 1, 12 do
                        fns[i] = function() return support.scalar(conn, "SELECT count(*) FROM w") end
                    end
                    local before = support.readers_sum(conn:stats(), "executed")
                    local out = run_ticking(fns)
                    -- (a reader that must load the schema under the lock hands its read to the
                    -- writer, which fails it at once: the same deadline)
                    assert.is_true(support.readers_sum(conn:stats(), "executed") - before > 0)
                    for i = 1, 12 do
                        assert_busy(out[i])
                        assert.is_true(out[i].at > 0.25 and out[i].at < 1.5,
                                       ("read %d failed after %.3f s"):format(i, out[i].at))
                    end
                end)

                it("a read's timeout ends its wait on the reader: it fails as timed out, and is not "
                   .. "run again on the writer", function()
                    conn, path = fresh(case.mode, { busy_timeout = 5000, readonly = true })
                    local read = "SELECT count(*) FROM w WHERE x > 0"
                    assert.are.equal(0, support.scalar(conn, read)) -- its route: the readers
                    lock(path) -- and the schema changes: the reader's prepare reads it again
                    local on_writer = conn:stats().writer.executed
                    local out = run_ticking({
                        function()
                            local cur = conn:cursor()
                            cur.timeout = 0.2
                            return cur:execute(read):fetchone()
                        end,
                    })
                    assert.is_false(out[1].ok)
                    assert.are.equal(9, out[1].value.code, tostring(out[1].value))
                    assert.are.equal("statement timed out after 0.2 s", out[1].value.message)
                    assert.are.equal(on_writer, conn:stats().writer.executed) -- not run again
                end)
            end
        end)
    end
end)

