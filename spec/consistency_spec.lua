-- Consistency: a statement sees every write whose call returned before it was issued, from any
-- coroutine, also while other cursors are half-consumed; half-consumed cursors never starve
-- other reads; big results stream; :memory: is one database shared by the whole pool.
local sqlite = require "pasyn_sqlite"
local support = require "support"

-- The statements counted here are the readers' own: the pools run no read on the caller's
-- thread (inline_reads = false), which the readers would not count.
local function readers_only(options)
    options = options or {}
    options.inline_reads = false
    return options
end

local pack, unpack = support.pack, support.unpack
local tmpdb = support.tmpdb

-- Rows in the big table: about 1 MB of results, far more than one chunk.
local BIG = 30000

local function fill_big(conn)
    conn:execute("CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT)")
    conn:execute([[INSERT INTO big (id, pad)
                   WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                   SELECT x, printf('%024d', x) FROM c]], BIG)
end

local function reader_executions(conn)
    return support.readers_sum(conn:stats(), "executed")
end

local streaming_readers = support.streaming_readers
local streaming_after_release = support.wait_no_stream

-- Runs fn under sqlite.run and raises if it has not finished after about `limit` seconds: a
-- guard against a hang, not a timing assertion.
local function within(limit, fn)
    return sqlite.run(function()
        local done = false
        local h = sqlite.spawn(function()
            local r = pack(pcall(fn))
            done = true
            return r
        end)
        local waited = 0
        while not done do
            if waited >= limit then
                error("still waiting after " .. limit .. " s: blocked", 0)
            end
            sqlite.sleep(0.01)
            waited = waited + 0.01
        end
        local r = h:join()
        if not r[1] then
            error(r[2], 0)
        end
        return unpack(r, 2, r.n)
    end)
end

-- Reads a cursor to its end; returns how many rows it gave, and whether their ids ran
-- first_id, first_id + 1, ... without a gap.
local function drain(cur, first_id)
    local n, in_order = 0, true
    for row in cur:rows() do
        if row[1] ~= first_id + n then
            in_order = false
        end
        n = n + 1
    end
    return n, in_order
end

describe("consistency", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = tmpdb()
        conn = sqlite.connect(path, readers_only())
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
    end)
    after_each(function()
        if conn then
            conn:close()
        end
        cleanup()
    end)

    describe("read after write", function()
        it("a coroutine that joined a writer reads its row, 200 times in a row", function()
            local before = reader_executions(conn)
            local seen = sqlite.run(function()
                local seen = {}
                for i = 1, 200 do
                    local writer = sqlite.spawn(function()
                        conn:execute("INSERT INTO t (x) VALUES (?)", i)
                    end)
                    local reader = sqlite.spawn(function()
                        writer:join()
                        return conn:execute("SELECT max(x), count(*) FROM t"):fetchone()
                    end)
                    seen[i] = reader:join()
                end
                return seen
            end)
            for i = 1, 200 do
                assert.same({ i, i, n = 2 }, seen[i])
            end
            -- the reads ran on reader threads, not on the writer that made the rows
            assert.is_true(reader_executions(conn) - before >= 200)
        end)

        it("readers signalled through a shared variable see every write that returned", function()
            local written = 0
            local violations, checks = {}, 0
            sqlite.run(function()
                sqlite.spawn(function()
                    for i = 1, 200 do
                        conn:execute("INSERT INTO t (x) VALUES (?)", i)
                        written = i
                        sqlite.sleep(0)
                    end
                end)
                for _ = 1, 5 do
                    sqlite.spawn(function()
                        local last = 0
                        while last < 200 do
                            local w = written -- every insert up to w has returned
                            if w > last then
                                local n = conn:execute("SELECT count(*) FROM t"):fetchone()[1]
                                checks = checks + 1
                                -- later inserts may land before the read runs: no upper bound
                                if n < w then
                                    violations[#violations + 1] = { written = w, counted = n }
                                end
                                last = w
                            else
                                sqlite.sleep(0)
                            end
                        end
                    end)
                end
            end)
            assert.same({}, violations)
            assert.is_true(checks >= 5)
            assert.equal(200, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("a coroutine's own read sees its own write at once, across many coroutines", function()
            local wrong = 0
            sqlite.run(function()
                for c = 1, 50 do
                    sqlite.spawn(function()
                        for k = 1, 4 do
                            local id = c * 100 + k
                            conn:execute("INSERT INTO t (id, x) VALUES (?, ?)", id, c)
                            local row = conn:execute("SELECT x FROM t WHERE id = ?", id):fetchone()
                            if not row or row[1] ~= c then
                                wrong = wrong + 1
                            end
                        end
                    end)
                end
            end)
            assert.equal(0, wrong)
            assert.equal(200, conn:execute("SELECT count(*) FROM t"):fetchone()[1])
        end)

        it("a write is seen while 20 cursors on a big table are half-consumed, and every "
           .. "cursor still reads all its rows", function()
            fill_big(conn)
            local counts, in_order, new_row, big_count, streams_open = {}, {}, nil, nil, nil
            within(30, function()
                local cursors = {}
                for i = 1, 20 do
                    cursors[i] = conn:execute("SELECT id, pad FROM big ORDER BY id")
                    assert.same({ 1, "000000000000000000000001", n = 2 }, cursors[i]:fetchone())
                end
                streams_open = streaming_readers(conn)
                local writer = sqlite.spawn(function()
                    conn:execute("INSERT INTO big (id, pad) VALUES (?, 'new')", BIG + 1)
                end)
                local reader = sqlite.spawn(function()
                    writer:join()
                    new_row = conn:execute("SELECT id, pad FROM big WHERE id = ?", BIG + 1):fetchone()
                    big_count = conn:execute("SELECT count(*) FROM big"):fetchone()[1]
                end)
                reader:join()
                for i = 1, 20 do
                    local n, ok = drain(cursors[i], 2)
                    counts[i], in_order[i] = n + 1, ok
                end
            end)
            assert.is_true(streams_open >= 1, "no cursor streamed")
            assert.is_true(streams_open <= 2, "every reader holds a stream")
            assert.same({ BIG + 1, "new", n = 2 }, new_row)
            assert.equal(BIG + 1, big_count)
            for i = 1, 20 do
                -- each cursor was issued before the insert: it reads exactly the rows then
                assert.equal(BIG, counts[i], "cursor " .. i)
                assert.is_true(in_order[i], "cursor " .. i)
            end
            assert.equal(0, streaming_readers(conn))
        end)
    end)

    describe("half-consumed cursors", function()
        it("20 of them on a 3-reader pool do not block a new SELECT", function()
            fill_big(conn)
            local cursors = {}
            local count, point, another
            within(30, function()
                for i = 1, 20 do
                    cursors[i] = conn:execute("SELECT id, pad FROM big")
                    assert.equal(1, cursors[i]:fetchone()[1])
                end
                count = conn:execute("SELECT count(*) FROM big"):fetchone()[1]
                point = conn:execute("SELECT pad FROM big WHERE id = 777"):fetchone()[1]
                -- one more big cursor: it must not wait for the others either
                local cur = conn:execute("SELECT id FROM big")
                another = #cur:fetchall()
            end)
            assert.equal(BIG, count)
            assert.equal("000000000000000000000777", point)
            assert.equal(BIG, another)
            for i = 1, 20 do
                cursors[i]:close()
            end
            assert.equal(0, streaming_after_release(conn))
        end)

        it("20 of them on a 3-reader pool do not block writes or other coroutines' reads", function()
            fill_big(conn)
            local results = {}
            within(30, function()
                local cursors = {}
                for i = 1, 20 do
                    cursors[i] = conn:execute("SELECT id FROM big")
                    cursors[i]:fetchone()
                end
                local handles = {}
                for c = 1, 10 do
                    handles[c] = sqlite.spawn(function()
                        conn:execute("INSERT INTO t (id, x) VALUES (?, ?)", c, c * c)
                        return conn:execute("SELECT x FROM t WHERE id = ?", c):fetchone()[1]
                    end)
                end
                for c = 1, 10 do
                    results[c] = handles[c]:join()
                end
                for i = 1, 20 do
                    cursors[i]:close()
                end
            end)
            for c = 1, 10 do
                assert.equal(c * c, results[c])
            end
        end)

        it("a write committed while a cursor is half-consumed is not seen by that cursor", function()
            fill_big(conn)
            local cur = conn:execute("SELECT id FROM big ORDER BY id")
            assert.equal(1, cur:fetchone()[1])
            conn:execute("DELETE FROM big WHERE id > 10")
            assert.equal(10, conn:execute("SELECT count(*) FROM big"):fetchone()[1])
            local n, in_order = drain(cur, 2)
            assert.equal(BIG - 1, n)
            assert.is_true(in_order)
        end)
    end)

    describe("big results", function()
        it("stream: a reader streams while a big cursor is half-consumed, not after it is read", function()
            fill_big(conn)
            assert.equal(0, streaming_readers(conn))
            local cur = conn:execute("SELECT id, pad FROM big ORDER BY id")
            assert.equal(1, cur:fetchone()[1])
            assert.equal(1, streaming_readers(conn))
            local rest = cur:fetchall()
            assert.equal(BIG - 1, #rest)
            assert.same({ BIG, string.format("%024d", BIG), n = 2 }, rest[#rest])
            assert.equal(0, streaming_readers(conn))
            assert.is_nil(cur:fetchone())
        end)

        it("stream: closing a half-consumed big cursor ends its stream", function()
            fill_big(conn)
            local cur = conn:execute("SELECT id, pad FROM big")
            cur:fetchmany(100)
            assert.equal(1, streaming_readers(conn))
            cur:close()
            assert.equal(0, streaming_after_release(conn))
            -- the reader it held serves other statements again
            for _ = 1, 10 do
                assert.equal(BIG, conn:execute("SELECT count(*) FROM big"):fetchone()[1])
            end
        end)

        it("stream: a big result read inside a coroutine streams too", function()
            fill_big(conn)
            local during, after, n = sqlite.run(function()
                local cur = conn:execute("SELECT id, pad FROM big")
                cur:fetchone()
                local during = streaming_readers(conn)
                local count = 1 + #cur:fetchall()
                return during, streaming_readers(conn), count
            end)
            assert.equal(1, during)
            assert.equal(0, after)
            assert.equal(BIG, n)
        end)

        it("a small result does not stream", function()
            fill_big(conn)
            local cur = conn:execute("SELECT id FROM big WHERE id <= 100")
            assert.equal(1, cur:fetchone()[1])
            assert.equal(0, streaming_readers(conn))
            assert.equal(99, #cur:fetchall())
        end)
    end)

    describe(":memory:", function()
        local mem
        after_each(function()
            if mem then
                mem:close()
                mem = nil
            end
        end)

        it("is one database the writer and every reader share", function()
            mem = sqlite.connect(":memory:", readers_only())
            assert.equal(3, #mem:stats().readers)
            mem:execute("CREATE TABLE m (x INTEGER)")
            mem:execute("INSERT INTO m VALUES (1), (2), (3)")
            local before = reader_executions(mem)
            for _ = 1, 30 do
                assert.equal(6, mem:execute("SELECT sum(x) FROM m"):fetchone()[1])
            end
            assert.equal(30, reader_executions(mem) - before)
        end)

        it("shows each write to readers in other coroutines", function()
            mem = sqlite.connect(":memory:")
            mem:execute("CREATE TABLE m (x INTEGER)")
            local seen = sqlite.run(function()
                local seen = {}
                for i = 1, 50 do
                    sqlite.spawn(function()
                        mem:execute("INSERT INTO m VALUES (?)", i)
                    end):join()
                    seen[i] = sqlite.spawn(function()
                        return mem:execute("SELECT count(*) FROM m"):fetchone()[1]
                    end):join()
                end
                return seen
            end)
            for i = 1, 50 do
                assert.equal(i, seen[i])
            end
        end)

        it("is private to its connection and gone at close", function()
            mem = sqlite.connect(":memory:")
            mem:execute("CREATE TABLE m (x INTEGER)")
            local other = sqlite.connect(":memory:")
            local ok, err = pcall(other.execute, other, "SELECT * FROM m")
            assert.is_false(ok)
            assert.equal("no such table: m", err.message)
            other:close()
            mem:close()
            mem = sqlite.connect(":memory:")
            ok, err = pcall(mem.execute, mem, "SELECT * FROM m")
            assert.is_false(ok)
            assert.equal("no such table: m", err.message)
        end)

        it("streams big results and keeps half-consumed cursors from blocking reads", function()
            mem = sqlite.connect(":memory:")
            fill_big(mem)
            local count
            within(30, function()
                local cursors = {}
                for i = 1, 20 do
                    cursors[i] = mem:execute("SELECT id, pad FROM big")
                    cursors[i]:fetchone()
                end
                assert.is_true(streaming_readers(mem) >= 1)
                mem:execute("INSERT INTO big (id, pad) VALUES (?, 'm')", BIG + 1)
                count = mem:execute("SELECT count(*) FROM big"):fetchone()[1]
                for i = 1, 20 do
                    cursors[i]:close()
                end
            end)
            assert.equal(BIG + 1, count)
        end)
    end)
end)
