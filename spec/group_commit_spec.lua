-- Group commit: concurrent autocommit writes (INSERT/UPDATE/DELETE, executemany) committed
-- by the writer as one transaction keep their own results and their own errors, a statement
-- that ends the whole transaction or a failed COMMIT fails only the guilty call, no call
-- returns before the shared COMMIT, and every write runs exactly once; with
-- group_commit = false no batch forms and the results are the same.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local tmpdb = support.tmpdb

local N = 200 -- coroutines writing at once in most tests
local HALF_N = 100

-- Runs fn(i) for i = 1..n, each in a coroutine of its own, all started in one go. Returns,
-- for each i, { ok = true, value = fn's result } or { ok = false, err = its error }.
local function concurrently(_, n, fn)
    local out = {}
    sqlite.run(function()
        for i = 1, n do
            sqlite.spawn(function()
                local ok, v = pcall(fn, i)
                out[i] = ok and { ok = true, value = v } or { ok = false, err = v }
            end)
        end
    end)
    return out
end

-- As concurrently, but the main coroutine holds a transaction open on conn until every
-- coroutine has submitted its first statement (which must be a write): those writes queue on
-- the writer behind the transaction, and when it commits the writer finds all of them
-- waiting, so group commit takes them together for certain.
local function behind_transaction(conn, n, fn)
    local out = {}
    sqlite.run(function()
        conn:execute("BEGIN IMMEDIATE")
        for i = 1, n do
            sqlite.spawn(function()
                local ok, v = pcall(fn, i)
                out[i] = ok and { ok = true, value = v } or { ok = false, err = v }
            end)
        end
        sqlite.sleep(0) -- every spawned coroutine runs up to its first statement and waits
        conn:execute("COMMIT")
    end)
    return out
end

-- How the concurrent writes reach the writer. "as they come": the first runs alone and the
-- rest queue behind its fsync (synchronous = "full"), so batches form but their bounds vary.
-- "queued behind a transaction": all of them form one batch (up to the first statement that
-- breaks it).
local ARRIVALS = {
    { name = "as they come", run = concurrently, queued = false },
    { name = "queued behind a transaction", run = behind_transaction, queued = true },
}

-- The i whose calls failed, in order.
local function failed_calls(out, n)
    local failed = {}
    for i = 1, n do
        assert.is_table(out[i], "coroutine " .. i .. " did not finish")
        if not out[i].ok then
            failed[#failed + 1] = i
        end
    end
    return failed
end

-- Asserts that the calls of every i but those in `except` succeeded with value `want(i)`.
local function assert_values(out, n, want, except)
    local skip = {}
    for _, i in ipairs(except or {}) do
        skip[i] = true
    end
    for i = 1, n do
        if not skip[i] then
            assert.is_true(out[i].ok, "coroutine " .. i .. ": " .. tostring(out[i].err))
            assert.same(want(i), out[i].value, "coroutine " .. i)
        end
    end
end

local column = support.column

-- 1..n without the numbers in `except`.
local function range_without(n, except)
    local skip, out = {}, {}
    for _, i in ipairs(except) do
        skip[i] = true
    end
    for i = 1, n do
        if not skip[i] then
            out[#out + 1] = i
        end
    end
    return out
end

local function writer_stats(conn)
    return conn:stats().writer
end

describe("group commit", function()
    local path, cleanup, conn, other
    before_each(function()
        path, cleanup = tmpdb()
    end)
    after_each(function()
        if other then
            other:close()
            other = nil
        end
        if conn then
            conn:close()
            conn = nil
        end
        cleanup()
    end)

    -- The connection under test: synchronous = "full" makes batches form as writes come.
    local function open(options)
        local opts = { synchronous = "full" }
        for k, v in pairs(options or {}) do
            opts[k] = v
        end
        conn = sqlite.connect(path, opts)
        return conn
    end

    -- Asserts that concurrent writes did form batches: of exactly n statements when they
    -- were queued behind a transaction (nothing broke the batch), else of more than one.
    local function assert_batched(arrival, n)
        local w = writer_stats(conn)
        if arrival.queued then
            assert.equal(1, w.batches)
            assert.equal(n, w.batched)
            assert.equal(n, w.batch_max)
        else
            assert.is_true(w.batch_max > 1, "no batch of more than one statement formed")
            assert.is_true(w.batched > 1)
        end
    end

    it("is on by default: 200 concurrent inserts form batches", function()
        open()
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        local w0 = writer_stats(conn)
        assert.same({ 0, 0, 0 }, { w0.batches, w0.batched, w0.batch_max })
        local out = concurrently(conn, N, function(i)
            return conn:execute("INSERT INTO t (v) VALUES (?)", i).rowcount
        end)
        assert.same({}, failed_calls(out, N))
        assert.equal(N, support.scalar(conn, "SELECT count(*) FROM t"))
        local w = writer_stats(conn)
        assert.is_true(w.batches >= 1)
        assert.is_true(w.batch_max > 1)
        assert.is_true(w.batched >= w.batch_max)
        assert.is_true(w.batched <= N)
    end)

    it("the group_commit option must be a boolean", function()
        for _, bad in ipairs({ "yes", 1, 0, {} }) do
            support.raises("ProgrammingError", sqlite.connect, path, { group_commit = bad })
        end
        conn = sqlite.connect(path, { group_commit = false })
        assert.equal(1, support.scalar(conn, "SELECT 1"))
    end)

    for _, arrival in ipairs(ARRIVALS) do
        describe("with 200 concurrent inserts " .. arrival.name, function()
            it("a duplicate in a UNIQUE column fails its own call alone; 199 rows land", function()
                open()
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
                -- coroutine N inserts the value coroutine N / 2 inserts; writes run in
                -- submission order, so N's call is the one that fails
                local out = arrival.run(conn, N, function(i)
                    return conn:execute("INSERT INTO t (v) VALUES (?)", i == N and HALF_N or i).rowcount
                end)
                assert.same({ N }, failed_calls(out, N))
                local err = out[N].err
                assert.is_true(sqlite.is_error(err), tostring(err))
                assert.equal("IntegrityError", err.kind)
                assert.equal(19, err.code)
                assert.matches("UNIQUE", err.message)
                assert_values(out, N, function() return 1 end, { N })
                assert.same(range_without(N - 1, {}), column(conn, "SELECT v FROM t ORDER BY v"))
                assert_batched(arrival, N)
            end)

            it("a trigger's RAISE(ROLLBACK) fails that call alone; every other row lands", function()
                open()
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
                conn:execute([[CREATE TRIGGER t_no BEFORE INSERT ON t WHEN NEW.v = 123
                               BEGIN SELECT RAISE(ROLLBACK, 'no'); END]])
                local out = arrival.run(conn, N, function(i)
                    return conn:execute("INSERT INTO t (v) VALUES (?)", i).rowcount
                end)
                assert.same({ 123 }, failed_calls(out, N))
                local err = out[123].err
                assert.is_true(sqlite.is_error(err), tostring(err))
                -- RAISE(ROLLBACK) reports SQLITE_CONSTRAINT, which maps to IntegrityError
                assert.equal("IntegrityError", err.kind)
                assert.equal(19, err.code)
                assert.equal("no", err.message)
                assert_values(out, N, function() return 1 end, { 123 })
                -- the statements the ROLLBACK undid ran again, once: each value is there once
                assert.same(range_without(N, { 123 }), column(conn, "SELECT v FROM t ORDER BY v"))
                assert.equal(N - 1, support.scalar(conn, "SELECT count(*) FROM t"))
                -- as one connection running them one by one: the undone batch is not counted
                assert.equal(N - 1, support.scalar(conn, "SELECT total_changes()"))
                assert.equal(N - 1, conn.total_changes)
                assert.is_false(conn.in_transaction)
                assert.equal(1, conn:execute("INSERT INTO t (v) VALUES (?)", 1000).rowcount)
                if not arrival.queued then
                    assert.is_true(writer_stats(conn).batch_max > 1)
                end
            end)

            it("INSERT OR ROLLBACK hitting a conflict fails that call alone; every other row lands",
               function()
                open()
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
                -- coroutine 150 inserts coroutine 75's value
                local out = arrival.run(conn, N, function(i)
                    return conn:execute("INSERT OR ROLLBACK INTO t (v) VALUES (?)",
                                        i == 150 and 75 or i).rowcount
                end)
                assert.same({ 150 }, failed_calls(out, N))
                assert.equal("IntegrityError", out[150].err.kind)
                assert.equal(19, out[150].err.code)
                assert_values(out, N, function() return 1 end, { 150 })
                assert.same(range_without(N, { 150 }), column(conn, "SELECT v FROM t ORDER BY v"))
                assert.same({ N - 1, N - 1, 1, n = 3 }, -- the last to run: coroutine N's insert
                            conn:execute("SELECT total_changes(), last_insert_rowid(), changes()")
                                :fetchone())
            end)

            it("a deferred foreign key broken by one insert fails that call alone at COMMIT",
               function()
                open({ foreign_keys = true })
                conn:execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
                conn:execute([[CREATE TABLE c (id INTEGER PRIMARY KEY,
                               pid INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)]])
                conn:executemany("INSERT INTO p VALUES (?)", { { 1 }, { 2 }, { 3 } })
                local out = arrival.run(conn, N, function(i)
                    return conn:execute("INSERT INTO c (id, pid) VALUES (?, ?)",
                                        i, i == 77 and 999 or i % 3 + 1).rowcount
                end)
                assert.same({ 77 }, failed_calls(out, N))
                local err = out[77].err
                assert.is_true(sqlite.is_error(err), tostring(err))
                assert.equal("IntegrityError", err.kind)
                assert.equal(19, err.code)
                assert.matches("FOREIGN KEY", err.message)
                assert_values(out, N, function() return 1 end, { 77 })
                assert.same(range_without(N, { 77 }), column(conn, "SELECT id FROM c ORDER BY id"))
                assert.same({}, conn:execute("PRAGMA foreign_key_check"):fetchall())
                assert.is_false(conn.in_transaction)
            end)

            it("each call gets its own rowcount, lastrowid and RETURNING rows", function()
                open()
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE, tag TEXT)")
                conn:execute("CREATE TABLE g (id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, n INTEGER)")
                conn:execute("INSERT INTO t (id, v, tag) VALUES (500, -1, 'seed')") -- ids from 501
                local seed = {}
                for i = 1, N do
                    if i % 3 == 2 then -- the groups the updating coroutines change
                        for _ = 1, i % 4 + 1 do
                            seed[#seed + 1] = { i }
                        end
                    end
                end
                conn:executemany("INSERT INTO g (grp, n) VALUES (?, 0)", seed)
                local out = arrival.run(conn, N, function(i)
                    local cur
                    if i % 3 == 0 then
                        cur = conn:execute("INSERT INTO t (v, tag) VALUES (?, ?) RETURNING id, v, tag",
                                           i, "r" .. i)
                    elseif i % 3 == 1 then
                        cur = conn:execute("INSERT INTO t (v, tag) VALUES (?, ?)", i, "p" .. i)
                    else
                        cur = conn:execute("UPDATE g SET n = n + 1 WHERE grp = ?", i)
                    end
                    return { rows = cur:fetchall(), rowcount = cur.rowcount, lastrowid = cur.lastrowid }
                end)
                assert.same({}, failed_calls(out, N))
                local id_of = {}
                for row in conn:execute("SELECT id, v FROM t WHERE v > 0"):rows() do
                    id_of[row[2]] = row[1]
                end
                for i = 1, N do
                    local got = out[i].value
                    if i % 3 == 0 then
                        assert.is_number(id_of[i], "the row of coroutine " .. i)
                        assert.same({ { id_of[i], i, "r" .. i, n = 3 } }, got.rows, "coroutine " .. i)
                        assert.equal(1, got.rowcount, "coroutine " .. i)
                        assert.equal(id_of[i], got.lastrowid, "coroutine " .. i)
                    elseif i % 3 == 1 then
                        assert.is_number(id_of[i], "the row of coroutine " .. i)
                        assert.same({}, got.rows)
                        assert.equal(1, got.rowcount, "coroutine " .. i)
                        assert.equal(id_of[i], got.lastrowid, "coroutine " .. i)
                    else
                        assert.same({}, got.rows)
                        assert.equal(i % 4 + 1, got.rowcount, "coroutine " .. i)
                        assert.is_nil(got.lastrowid, "coroutine " .. i)
                    end
                end
                assert.same({ { 1, n = 1 } }, conn:execute("SELECT DISTINCT n FROM g"):fetchall())
                -- rows were given ids 501, 502, ... in the order they ran
                local inserts = N - math.floor((N + 1) / 3)
                assert.same({ inserts, 501, 500 + inserts, n = 3 },
                            conn:execute("SELECT count(*), min(id), max(id) FROM t WHERE v > 0"):fetchone())
                if arrival.queued then
                    assert.equal(N, writer_stats(conn).batch_max)
                else
                    assert.is_true(writer_stats(conn).batch_max > 1)
                end
            end)

            it("an executemany among them is all or nothing: a bad row fails that call alone",
               function()
                open()
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
                -- every 20th coroutine inserts 4 rows with executemany; coroutine 100's third
                -- row is NULL, which the NOT NULL column refuses
                local out = arrival.run(conn, N, function(i)
                    if i % 20 == 0 then
                        local rows = {}
                        for k = 1, 4 do
                            rows[k] = { (i == 100 and k == 3) and sqlite.null or 1000 * i + k }
                        end
                        return conn:executemany("INSERT INTO t (v) VALUES (?)", rows).rowcount
                    end
                    return conn:execute("INSERT INTO t (v) VALUES (?)", i).rowcount
                end)
                assert.same({ 100 }, failed_calls(out, N))
                assert.equal("IntegrityError", out[100].err.kind)
                assert.matches("NOT NULL", out[100].err.message)
                assert_values(out, N, function(i) return i % 20 == 0 and 4 or 1 end, { 100 })
                assert.equal(0, support.scalar(conn, "SELECT count(*) FROM t WHERE v / 1000 = 100"))
                local want = {}
                for i = 1, N do
                    if i % 20 ~= 0 then
                        want[#want + 1] = i
                    end
                end
                for i = 20, N, 20 do
                    if i ~= 100 then
                        for k = 1, 4 do
                            want[#want + 1] = 1000 * i + k
                        end
                    end
                end
                table.sort(want)
                assert.same(want, column(conn, "SELECT v FROM t ORDER BY v"))
                assert_batched(arrival, N)
            end)

            it("no call returns before its row is committed: another connection sees it at once",
               function()
                open()
                -- rows of 8 KB: the shared COMMIT has pages to write, which takes a while
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE, pad BLOB)")
                other = sqlite.connect(path, { readers = 1 })
                local out = arrival.run(conn, N, function(i)
                    conn:execute("INSERT INTO t (v, pad) VALUES (?, zeroblob(8000))", i)
                    -- right after the call returned, from a connection of its own
                    return support.scalar(other, "SELECT count(*) FROM t WHERE v = ?", i)
                end)
                assert.same({}, failed_calls(out, N))
                assert_values(out, N, function() return 1 end)
                assert.equal(N, support.scalar(other, "SELECT count(*) FROM t"))
                assert_batched(arrival, N)
            end)
        end)
    end

    describe("with group_commit = false", function()
        for _, arrival in ipairs(ARRIVALS) do
            it("inserts " .. arrival.name .. " give the same results and form no batch", function()
                open({ group_commit = false })
                conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
                conn:execute([[CREATE TRIGGER t_no BEFORE INSERT ON t WHEN NEW.v = 123
                               BEGIN SELECT RAISE(ROLLBACK, 'no'); END]])
                local out = arrival.run(conn, N, function(i)
                    local cur = conn:execute("INSERT INTO t (v) VALUES (?)", i == N and HALF_N or i)
                    return { cur.rowcount, cur.lastrowid }
                end)
                assert.same({ 123, N }, failed_calls(out, N))
                assert.equal("IntegrityError", out[123].err.kind)
                assert.equal("no", out[123].err.message)
                assert.equal("IntegrityError", out[N].err.kind)
                assert.matches("UNIQUE", out[N].err.message)
                local id_of = {}
                for row in conn:execute("SELECT id, v FROM t"):rows() do
                    id_of[row[2]] = row[1]
                end
                assert_values(out, N, function(i) return { 1, id_of[i] } end, { 123, N })
                assert.same(range_without(N - 1, { 123 }), column(conn, "SELECT v FROM t ORDER BY v"))
                local w = writer_stats(conn)
                assert.same({ 0, 0, 0 }, { w.batches, w.batched, w.batch_max })
            end)
        end
    end)

    it("a DDL statement queued among plain writes runs alone and ends the batch", function()
        open()
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        -- 20 inserts, a CREATE TABLE, 19 inserts: all queued behind a transaction
        local out = behind_transaction(conn, 40, function(i)
            if i == 21 then
                conn:execute("CREATE TABLE made_by_21 (x INTEGER)")
                return "ddl"
            end
            return conn:execute("INSERT INTO t (v) VALUES (?)", i).rowcount
        end)
        assert.same({}, failed_calls(out, 40))
        assert_values(out, 40, function(i) return i == 21 and "ddl" or 1 end)
        assert.equal(39, support.scalar(conn, "SELECT count(*) FROM t"))
        assert.equal(0, support.scalar(conn, "SELECT count(*) FROM made_by_21"))
        local w = writer_stats(conn)
        assert.equal(2, w.batches)
        assert.equal(39, w.batched)
        assert.equal(20, w.batch_max)
    end)

    -- Alone, INSERT OR FAIL keeps the rows it wrote before the failing one (SQLite's
    -- lang_conflict.html); in a batch it must keep them too, as one connection would.
    for _, gc in ipairs({ true, false }) do
        it("a failing INSERT OR FAIL keeps its earlier rows, in a batch as alone "
           .. "(group_commit = " .. tostring(gc) .. ")", function()
            open({ group_commit = gc })
            conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER UNIQUE)")
            conn:execute("INSERT INTO t (v) VALUES (5)")
            local out = behind_transaction(conn, 10, function(i)
                if i == 4 then
                    return conn:execute("INSERT OR FAIL INTO t (v) VALUES (1000), (5)").rowcount
                end
                return conn:execute("INSERT INTO t (v) VALUES (?)", 100 + i).rowcount
            end)
            assert.same({ 4 }, failed_calls(out, 10))
            assert.equal("IntegrityError", out[4].err.kind)
            assert.equal(1, support.scalar(conn, "SELECT count(*) FROM t WHERE v = 1000"))
            assert.equal(11, support.scalar(conn, "SELECT count(*) FROM t"))
            if gc then
                assert.equal(1, writer_stats(conn).batches)
            end
        end)
    end

    -- Alone, a statement that leaves a deferred foreign key violation fails at its own COMMIT
    -- (foreignkeys.html 4.2); in a batch a later statement must not mend it first.
    for _, gc in ipairs({ true, false }) do
        it("a deferred foreign key violation mended by a later write of the batch still fails "
           .. "its own call (group_commit = " .. tostring(gc) .. ")", function()
            open({ group_commit = gc, foreign_keys = true })
            conn:execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn:execute([[CREATE TABLE child (pid INTEGER REFERENCES parent (id)
                           DEFERRABLE INITIALLY DEFERRED)]])
            conn:execute("CREATE TABLE other (x)")
            local writes = { "INSERT INTO other VALUES (0)", "INSERT INTO child VALUES (5)",
                             "INSERT INTO parent VALUES (5)", "INSERT INTO other VALUES (1)" }
            local out = behind_transaction(conn, #writes, function(i)
                return conn:execute(writes[i]).rowcount
            end)
            assert.same({ 2 }, failed_calls(out, #writes))
            assert.equal("IntegrityError", out[2].err.kind)
            assert.matches("FOREIGN KEY", out[2].err.message)
            assert.equal(0, support.scalar(conn, "SELECT count(*) FROM child"))
            assert.equal(1, support.scalar(conn, "SELECT count(*) FROM parent"))
            assert.equal(2, support.scalar(conn, "SELECT count(*) FROM other"))
        end)
    end

    -- A batch broken by RAISE(ROLLBACK) runs its statements again alone: a trigger of the
    -- first of them reads changes() as one connection would, not as the batch left it.
    it("after a broken batch, a trigger's changes() in the statements run again is its own",
       function()
        open()
        conn:execute("CREATE TABLE a (x)")
        conn:execute("CREATE TABLE log (c)")
        conn:execute("CREATE TABLE t (v INTEGER NOT NULL)")
        conn:execute([[CREATE TRIGGER t_two AFTER INSERT ON t BEGIN
                       INSERT INTO a VALUES (1), (2); INSERT INTO log VALUES (changes()); END]])
        conn:execute([[CREATE TRIGGER t_no BEFORE INSERT ON t WHEN NEW.v = 7
                       BEGIN SELECT RAISE(ROLLBACK, 'no'); END]])
        local out = behind_transaction(conn, 20, function(i)
            return conn:execute("INSERT INTO t VALUES (?)", i).rowcount
        end)
        assert.same({ 7 }, failed_calls(out, 20))
        assert.same({ 2 }, column(conn, "SELECT DISTINCT c FROM log"))
        assert.equal(19, support.scalar(conn, "SELECT count(*) FROM log"))
    end)

    -- A statement's RETURNING rows are written where its parameters leave room in its task;
    -- run again after the batch broke, it binds those parameters again, of every size up to
    -- and past that room, and its rows, text and blob, are its own.
    it("after a broken batch, statements run again with RETURNING bind their own values again",
       function()
        open()
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, tag TEXT, b BLOB)")
        conn:execute([[CREATE TRIGGER t_no BEFORE INSERT ON t WHEN NEW.v = 40
                       BEGIN SELECT RAISE(ROLLBACK, 'no'); END]])
        local function tag(i) return string.rep(string.char(96 + i % 26), i * 5) end
        local function bytes(i) return string.rep("\0\255", i % 7) end
        local out = behind_transaction(conn, 40, function(i)
            local cur = conn:execute("INSERT INTO t (v, tag, b) VALUES (?, ?, ?) " ..
                                     "RETURNING v, tag, b, length(tag)", i, tag(i), sqlite.blob(bytes(i)))
            return cur:fetchall()
        end)
        assert.same({ 40 }, failed_calls(out, 40))
        assert_values(out, 40, function(i)
            return { { i, tag(i), bytes(i), i * 5, n = 4 } }
        end, { 40 })
        assert.equal(39, support.scalar(conn, "SELECT count(*) FROM t " ..
                                              "WHERE tag = printf('%.*c', v * 5, char(96 + v % 26))"))
    end)

    -- A member stopped by its timeout ends the batch's transaction (SQLite rolls it back) and is
    -- not run again; alone it would have left changes() at 0, and the next statement sees that.
    it("after a batch broken by a timed-out member, the next member's changes() is 0", function()
        open()
        conn:execute("CREATE TABLE t (v, c)")
        conn:execute("INSERT INTO t VALUES ('x', 0), ('y', 0), ('z', 0)")
        local slow = [[INSERT INTO t SELECT 'slow', count(*) FROM (WITH RECURSIVE r(i) AS
                       (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 50000000) SELECT i FROM r)]]
        local out = behind_transaction(conn, 3, function(i)
            if i == 2 then
                local cur = conn:cursor()
                cur.timeout = 0.05
                return cur:execute(slow).rowcount
            end
            return conn:execute("INSERT INTO t VALUES (?, changes())", "w" .. i).rowcount
        end)
        assert.same({ 2 }, failed_calls(out, 3))
        assert.equal(9, out[2].err.code) -- SQLITE_INTERRUPT: timed out
        assert.same({ 3, 0 }, column(conn, "SELECT c FROM t WHERE v IN ('w1', 'w3') ORDER BY v"))
    end)

    it("plain writes, DDL and reads from 100 coroutines keep each coroutine's order", function()
        open()
        conn:execute("CREATE TABLE log (id INTEGER PRIMARY KEY, c INTEGER NOT NULL, step INTEGER NOT NULL)")
        local n = 100
        local out = concurrently(conn, n, function(c)
            local own = "own_" .. c
            local seen = {}
            conn:execute("INSERT INTO log (c, step) VALUES (?, 1)", c)
            conn:execute("CREATE TABLE " .. own .. " (x INTEGER NOT NULL)")
            conn:execute("INSERT INTO log (c, step) VALUES (?, 2)", c)
            conn:execute("INSERT INTO " .. own .. " (x) VALUES (?)", c)
            seen[1] = conn:execute("SELECT count(*), sum(x) FROM " .. own):fetchone()
            conn:execute("INSERT INTO log (c, step) VALUES (?, 3)", c)
            seen[2] = support.scalar(conn, "SELECT max(step) FROM log WHERE c = ?", c)
            conn:execute("UPDATE " .. own .. " SET x = x + 1")
            conn:execute("ALTER TABLE " .. own .. " ADD COLUMN y INTEGER DEFAULT 7")
            conn:execute("INSERT INTO log (c, step) VALUES (?, 4)", c)
            seen[3] = conn:execute("SELECT x, y FROM " .. own):fetchone()
            seen[4] = support.scalar(conn, "SELECT count(*) FROM log WHERE c = ?", c)
            return seen
        end)
        assert.same({}, failed_calls(out, n))
        assert_values(out, n, function(c)
            return { { 1, c, n = 2 }, 3, { c + 1, 7, n = 2 }, 4 }
        end)
        for c = 1, n do
            assert.same({ 1, 2, 3, 4 }, column(conn, "SELECT step FROM log WHERE c = ? ORDER BY id", c),
                        "the order of coroutine " .. c .. "'s writes")
        end
        assert.equal(4 * n, support.scalar(conn, "SELECT count(*) FROM log"))
        assert.is_true(writer_stats(conn).batch_max > 1, "no batch of more than one statement formed")
    end)

    it("64 coroutines x 50 inserts and updates: every write runs exactly once", function()
        open({ synchronous = "normal" })
        local C, K, HALF_K = 64, 50, 25
        conn:execute([[CREATE TABLE items (id INTEGER PRIMARY KEY, c INTEGER NOT NULL,
                       k INTEGER NOT NULL, val INTEGER NOT NULL, UNIQUE (c, k))]])
        -- an insert with a negative value ends the whole batch: the ones before it run again
        conn:execute([[CREATE TRIGGER items_neg BEFORE INSERT ON items WHEN NEW.val < 0
                       BEGIN SELECT RAISE(ROLLBACK, 'negative'); END]])
        conn:execute("CREATE TABLE totals (c INTEGER PRIMARY KEY, n INTEGER NOT NULL, s INTEGER NOT NULL)")
        local seed = {}
        for c = 1, C do
            seed[c] = { c }
        end
        conn:executemany("INSERT INTO totals VALUES (?, 0, 0)", seed)
        local out = concurrently(conn, C, function(c)
            local obs = { refused = 0, bad = 0 }
            for k = 1, K do
                if k % 2 == 1 then
                    local val = (c % 8 == 0 and k == 25) and -1 or c * 1000 + k
                    local ok, err = pcall(conn.execute, conn,
                                          "INSERT INTO items (c, k, val) VALUES (?, ?, ?)", c, k, val)
                    if not ok then
                        obs.refused = obs.refused + 1
                        if not (sqlite.is_error(err) and err.message == "negative" and val < 0) then
                            obs.bad = obs.bad + 1
                        end
                    end
                else
                    local cur = conn:execute("UPDATE totals SET n = n + 1, s = s + ? WHERE c = ?", k, c)
                    if cur.rowcount ~= 1 then
                        obs.bad = obs.bad + 1
                    end
                end
                if k % 10 == 0 then
                    sqlite.sleep(0)
                end
            end
            obs.own = support.scalar(conn, "SELECT count(*) FROM items WHERE c = ?", c)
            return obs
        end)
        assert.same({}, failed_calls(out, C))
        local want_rows, want_sum = 0, 0
        for c = 1, C do
            local refused = c % 8 == 0 and 1 or 0
            assert.same({ refused = refused, bad = 0, own = HALF_K - refused }, out[c].value,
                        "coroutine " .. c)
            for k = 1, K, 2 do
                if not (c % 8 == 0 and k == 25) then
                    want_rows, want_sum = want_rows + 1, want_sum + c * 1000 + k
                end
            end
        end
        assert.same({ want_rows, want_rows, want_sum, n = 3 },
                    conn:execute("SELECT count(*), count(DISTINCT id), sum(val) FROM items"):fetchone())
        -- each update added k = 2, 4, ..., 50 once: n = 25 and s = 650 for every coroutine
        assert.same({ { HALF_K, 650, C, n = 3 } },
                    conn:execute("SELECT n, s, count(*) FROM totals GROUP BY n, s"):fetchall())
        assert.same({ { "ok", n = 1 } }, conn:execute("PRAGMA integrity_check"):fetchall())
        assert.is_true(writer_stats(conn).batches > 0)
    end)
end)
